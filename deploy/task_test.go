package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// ansiRE matches terminal colour escapes.
var ansiRE = regexp.MustCompile("\x1b\\[[0-9;]*m")

// TestStackTasksWithoutEngine runs `task up`, `down` and `logs` where no
// Docker engine answers (this machine has at most the client): each says so
// in one line of its own (Task adds its one status line) and exits non-zero;
// none prints Docker's usage text or claims to have stopped anything.
func TestStackTasksWithoutEngine(t *testing.T) {
	if exec.Command("docker", "info").Run() == nil {
		t.Skip("a Docker engine answers here: the tasks would really start the stack")
	}
	for _, name := range []string{"up", "down", "logs"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "go", "tool", "task", name)
			cmd.Dir = root
			// Task colours its output when CI is set; the check is on the text.
			cmd.Env = append(os.Environ(), "NO_COLOR=1")
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("task %s exited 0 without a Docker engine:\n%s", name, out)
			}
			var lines []string
			plain := ansiRE.ReplaceAllString(string(out), "")
			for _, l := range strings.Split(strings.TrimSpace(plain), "\n") {
				if strings.TrimSpace(l) != "" && !strings.HasPrefix(l, "go: downloading") { // a cold module cache
					lines = append(lines, l)
				}
			}
			text := strings.Join(lines, "\n")
			if !strings.Contains(text, "no Docker engine is reachable") {
				t.Errorf("task %s does not say what is missing:\n%s", name, text)
			}
			if len(lines) > 2 {
				t.Errorf("task %s printed %d lines, want its one line (plus Task's status line):\n%s", name, len(lines), text)
			}
			for _, bad := range []string{"Usage:", "Docker version", "Stopped", "Removed"} {
				if strings.Contains(text, bad) {
					t.Errorf("task %s prints %q:\n%s", name, bad, text)
				}
			}
		})
	}
}
