package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	vk "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/internal/cli"
	"github.com/warmpath/warmpath/internal/loopback"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports (the kernel exports it as a
// constant to user space whatever its internal HZ).
const clockTicks = 100

// procCPU is a process's user+system CPU time so far, from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	st, err := readStat(pid)
	return st.cpu, err
}

// procTreeCPU is the CPU time of a process and its children so far: its own,
// what its children that ended and were waited for used (cutime+cstime),
// and each live child's own and waited-for time. For a server that forks a
// process per connection (the postmaster), that is the server's whole CPU
// whether its backends still run or have exited between two readings.
func procTreeCPU(pid int) (time.Duration, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	total := st.cpu + st.children
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		child, err := strconv.Atoi(p.Name())
		if err != nil || child == pid {
			continue
		}
		// A process that exits meanwhile is skipped: its time is in the
		// parent's cutime once the parent has waited for it.
		if cs, err := readStat(child); err == nil && cs.ppid == pid {
			total += cs.cpu + cs.children
		}
	}
	return total, nil
}

// stat is what perf reads from /proc/PID/stat.
type stat struct {
	ppid     int
	cpu      time.Duration // utime+stime
	children time.Duration // cutime+cstime: waited-for children
}

func readStat(pid int) (stat, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, fmt.Errorf("cpu of pid %d: %w", pid, err)
	}
	return parseStat(string(raw))
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/PID/stat line.
func parseStatCPU(line string) (time.Duration, error) {
	st, err := parseStat(line)
	return st.cpu, err
}

// parseStat reads ppid (field 4), utime, stime, cutime and cstime (fields
// 14–17) from a /proc/PID/stat line. The command (field 2) is in
// parentheses and may hold spaces, so fields are counted after the last ')'.
func parseStat(line string) (stat, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return stat{}, errors.New("parse /proc/PID/stat: no command field")
	}
	f := strings.Fields(line[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 15 {
		return stat{}, errors.New("parse /proc/PID/stat: too few fields")
	}
	var v [5]int64
	var errs []error
	for k, field := range []int{4, 14, 15, 16, 17} {
		n, err := strconv.ParseInt(f[field-3], 10, 64)
		v[k] = n
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return stat{}, fmt.Errorf("parse /proc/PID/stat: %w", err)
	}
	tick := func(n int64) time.Duration { return time.Duration(n) * time.Second / clockTicks }
	return stat{ppid: int(v[0]), cpu: tick(v[1] + v[2]), children: tick(v[3] + v[4])}, nil
}

// fdCounts counts a process's open file descriptors and, among them, its
// sockets (every TCP connection is one), from /proc/PID/fd.
func fdCounts(pid int) (fds, sockets int, err error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("fds of pid %d: %w", pid, err)
	}
	for _, e := range ents {
		fds++
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			sockets++
		}
	}
	return fds, sockets, nil
}

// valkeyPID finds the process of the Valkey (or Redis) server at rawURL
// when it runs on this machine: first the process holding the listening
// socket of its port (/proc/net/tcp{,6} gives the socket's inode,
// /proc/*/fd the process that has it open), else INFO server's process_id
// (the server's own word, trusted only on loopback and only if that pid
// exists here). how says which way it was found, or why not.
func valkeyPID(ctx context.Context, rawURL string) (pid int, how string) {
	port, why := loopbackPort(rawURL, 6379)
	if port == 0 {
		return 0, "VALKEY_URL: " + why
	}
	if inodes := listeningInodes(port); len(inodes) > 0 {
		if pid := pidOfSocket(inodes); pid > 0 {
			return pid, fmt.Sprintf("listening socket of port %d in /proc/net/tcp → /proc/%d/fd", port, pid)
		}
	}
	if pid := infoPID(ctx, rawURL); pid > 0 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			return pid, "INFO server process_id (loopback server)"
		}
	}
	return 0, "server process not found on this machine"
}

// postgresPID finds the postmaster of the Postgres at rawURL when it runs
// on this machine (the process holding the listening socket of its port),
// or says why not.
func postgresPID(rawURL string) (pid int, how string) {
	return listenerPID("DATABASE_URL", rawURL, 5432, "; CPU of it and its backends")
}

// listenerPID is the process listening on the port of a loopback URL
// (what names the URL in the answer; def: the port when it names none).
func listenerPID(what, rawURL string, def int, suffix string) (int, string) {
	port, why := loopbackPort(rawURL, def)
	if port == 0 {
		return 0, what + ": " + why
	}
	if pid := pidOfSocket(listeningInodes(port)); pid > 0 {
		return pid, fmt.Sprintf("%s: listening socket of port %d in /proc/net/tcp → /proc/%d/fd%s", what, port, pid, suffix)
	}
	return 0, what + ": server process not found on this machine"
}

// loopbackPort is the port of a server URL whose host is a loopback
// address (def when the URL names none), or 0 and why its process cannot be
// measured from here.
func loopbackPort(rawURL string, def int) (port int, why string) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Hostname() == "" {
		return 0, "not parsable, or no host name"
	}
	if !loopback.Host(u.Hostname()) {
		return 0, "remote server (" + u.Hostname() + "): CPU not measurable from here"
	}
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil || port <= 0 {
			return 0, "bad port"
		}
		return port, ""
	}
	return def, ""
}

// listeningInodes returns the inodes of the sockets listening on port.
func listeningInodes(port int) map[string]bool {
	out := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Scan() // header
		for sc.Scan() {
			if inode, ok := listenInode(sc.Text(), port); ok {
				out[inode] = true
			}
		}
		fh.Close()
	}
	return out
}

// listenInode parses one /proc/net/tcp line: "sl local rem st … inode": the
// local address is hex "ADDR:PORT", state 0A is LISTEN, inode is field 10.
func listenInode(line string, port int) (string, bool) {
	f := strings.Fields(line)
	if len(f) < 10 || f[3] != "0A" {
		return "", false
	}
	_, hexPort, ok := strings.Cut(f[1], ":")
	if !ok {
		return "", false
	}
	p, err := strconv.ParseInt(hexPort, 16, 32)
	if err != nil || int(p) != port || f[9] == "0" {
		return "", false
	}
	return f[9], true
}

// pidOfSocket scans /proc/*/fd for a descriptor on one of the inodes.
func pidOfSocket(inodes map[string]bool) int {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join("/proc", p.Name(), "fd")
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join(dir, fd.Name()))
			if err == nil && strings.HasPrefix(l, "socket:[") && inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] {
				return pid
			}
		}
	}
	return 0
}

// newValkeyClient connects to the Valkey (or Redis) server at rawURL
// (valkey:// or redis://) without client-side caching. A URL that does not
// parse is a usage error.
func newValkeyClient(rawURL string) (vk.Client, error) {
	opt, err := vk.ParseURL(strings.Replace(rawURL, "valkey://", "redis://", 1))
	if err != nil {
		return nil, cli.Usage(err)
	}
	opt.DisableCache = true
	return vk.NewClient(opt)
}

// infoPID asks the server for its process_id (INFO server).
func infoPID(ctx context.Context, rawURL string) int {
	c, err := newValkeyClient(rawURL)
	if err != nil {
		return 0
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := c.Do(ctx, c.B().Info().Section("server").Build()).ToString()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ := strconv.Atoi(v)
			return pid
		}
	}
	return 0
}

// loadAvg is /proc/loadavg's 1-minute figure (-1 when unreadable): the
// report says how busy the machine was when an item ran.
func loadAvg() float64 {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// procSet reads the CPU time of a named set of processes (the service,
// Valkey, Postgres) around a run; the ones not running here are left out,
// with the reason in notes.
type procSet struct {
	names []string
	reads []func() (time.Duration, error)
	notes map[string]string
}

// syncProcesses is the set a sync costs CPU in: the service (pid, 0 when
// unknown), the Valkey at valkeyURL and the Postgres at databaseURL. An
// empty URL is the embedded default's in-process server or store, whose
// CPU is in the service's figure.
func syncProcesses(ctx context.Context, pid int, pidHow, valkeyURL, databaseURL string) *procSet {
	p := &procSet{notes: map[string]string{}}
	add := func(name string, pid int, how string, read func(int) (time.Duration, error)) {
		p.notes[name] = how
		if pid > 0 {
			p.names = append(p.names, name)
			p.reads = append(p.reads, func() (time.Duration, error) { return read(pid) })
		}
	}
	add("service", pid, pidHow, procCPU)
	if valkeyURL == "" {
		p.notes["valkey"] = "in-process (embedded default): in the service's figure"
	} else {
		vpid, how := valkeyPID(ctx, valkeyURL)
		add("valkey", vpid, how, procCPU)
	}
	if databaseURL == "" {
		p.notes["postgres"] = "none (in-memory store, embedded default): in the service's figure"
	} else {
		ppid, how := postgresPID(databaseURL)
		add("postgres", ppid, how, procTreeCPU)
	}
	return p
}

// targetPID is the process listening on a loopback target URL's port.
func targetPID(target string) (int, string) {
	return listenerPID("target", target, 80, "")
}

// read is every process's CPU so far (-1 where it could not be read).
func (p *procSet) read() []time.Duration {
	out := make([]time.Duration, len(p.reads))
	for i, r := range p.reads {
		d, err := r()
		if err != nil {
			d = -1
		}
		out[i] = d
	}
	return out
}

// since is the CPU each process used since start (-1: unreadable).
func (p *procSet) since(start []time.Duration) []time.Duration {
	now := p.read()
	for i := range now {
		if now[i] < 0 || start[i] < 0 {
			now[i] = -1
		} else {
			now[i] -= start[i]
		}
	}
	return now
}

// around runs f and returns the CPU each process used meanwhile.
func (p *procSet) around(f func()) []time.Duration {
	start := p.read()
	f()
	return p.since(start)
}

// perUser is, per process, (with - without) ÷ users in microseconds,
// rounded to 0.1; a process unreadable in either run is left out.
func (p *procSet) perUser(with, without []time.Duration, users int64) map[string]float64 {
	if users <= 0 || len(with) != len(p.names) || len(without) != len(p.names) {
		return nil
	}
	out := map[string]float64{}
	for i, name := range p.names {
		if with[i] < 0 || without[i] < 0 {
			continue
		}
		us := float64((with[i] - without[i]).Microseconds()) / float64(users)
		out[name] = math.Round(us*10) / 10
	}
	return out
}
