package main

// Reading the service's log output.

import (
	"encoding/json"
	"strings"
	"testing"
)

// logLines decodes the service's JSON log lines.
func logLines(t *testing.T, in *instance) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(in.stderr.String(), "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

// perfLines returns the [PERF] lines of the JSON log.
func perfLines(lines []map[string]any) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if msg, _ := l["msg"].(string); strings.HasPrefix(msg, "[PERF] ") {
			out = append(out, l)
		}
	}
	return out
}
