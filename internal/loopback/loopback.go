// Package loopback finds loopback addresses to start servers on: the perf
// lab's services and the tests' binaries and Prometheus.
package loopback

import (
	"fmt"
	"net"
)

// FreeAddr returns a loopback address (host:port) whose port was free a
// moment ago. Another process may take it before the caller listens: use it
// only for a process that must be told its address before it starts.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Host reports whether host (a name or an IP, without a port) is this
// machine's loopback: "localhost" or an address in 127.0.0.0/8 or ::1.
func Host(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
