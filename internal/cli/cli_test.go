package cli

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	tests := []struct {
		err  error
		code int
		out  string
	}{
		{nil, 0, ""},
		{errors.New("boom"), 1, "cmd: boom\n"},
		{Usage(errors.New("bad flag")), 2, "cmd: bad flag\n"},
		{fmt.Errorf("wrapped: %w", &ExitError{Code: 3, Err: errors.New("x")}), 3, "cmd: wrapped: x\n"},
	}
	for _, tt := range tests {
		var out strings.Builder
		if code := report("cmd", tt.err, &out); code != tt.code || out.String() != tt.out {
			t.Errorf("report(%v) = %d %q, want %d %q", tt.err, code, out.String(), tt.code, tt.out)
		}
	}
}
