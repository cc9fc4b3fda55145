package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	vk "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/internal/loopback"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports (the kernel exports it as a
// constant to user space whatever its internal HZ).
const clockTicks = 100

// procCPU is a process's user+system CPU time so far, from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu of pid %d: %w", pid, err)
	}
	return parseStatCPU(string(raw))
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/PID/stat line. The command (field 2) is in parentheses and may hold
// spaces, so fields are counted after the last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("parse /proc/PID/stat: no command field")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, errors.New("parse /proc/PID/stat: too few fields")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc/PID/stat: %w", err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
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
	u, err := url.Parse(rawURL)
	if err != nil || u.Hostname() == "" {
		return 0, "VALKEY_URL not parsable"
	}
	if !loopback.Host(u.Hostname()) {
		return 0, "remote server (" + u.Hostname() + "): CPU not measurable from here"
	}
	port := 6379
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			return 0, "bad port"
		}
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

// infoPID asks the server for its process_id (INFO server).
func infoPID(ctx context.Context, rawURL string) int {
	opt, err := vk.ParseURL(strings.Replace(rawURL, "valkey://", "redis://", 1))
	if err != nil {
		return 0
	}
	opt.DisableCache = true
	c, err := vk.NewClient(opt)
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
