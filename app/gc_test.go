package main

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
)

var gogcRE = regexp.MustCompile(`(?m)^go_gc_gogc_percent (\d+)$`)

// TestBinaryGCPercent: the service binary runs with defaultGCPercent when
// GOGC is not set, and with the operator's GOGC when it is (read back from
// the runtime's own gauge on /metrics).
func TestBinaryGCPercent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary: skipped with -short")
	}
	bin := binary(t)
	for _, tt := range []struct {
		name string
		env  []string
		want string
	}{
		{"unset", nil, strconv.Itoa(defaultGCPercent)},
		{"set", []string{"GOGC", "150"}, "150"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := startProc(t, bin, t.TempDir(), binaryEnv(map[string]string{}, tt.env...))
			resp, err := http.Get(p.admin + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			m := gogcRE.FindSubmatch(body)
			if m == nil {
				t.Fatalf("no go_gc_gogc_percent on /metrics (status %d)", resp.StatusCode)
			}
			if got := string(m[1]); got != tt.want {
				t.Errorf("go_gc_gogc_percent = %s, want %s", got, tt.want)
			}
		})
	}
}
