package valkey

import "time"

// SkewFences shifts the server-clock offset that count fences are computed
// with by d (negative: fences in the past).
func SkewFences(c *Cache, d time.Duration) { c.outcomes.offset.Add(d.Milliseconds()) }

// CountLua is the count script's source (tests send it raw to read its
// reply as it is).
const CountLua = countLua

// ProcessCPU and ServerCPU are the benchmarks' CPU readings (cpu_test.go).
var (
	ProcessCPU = processCPU
	ServerCPU  = serverCPU
)
