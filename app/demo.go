package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/warmpath/warmpath/app/internal/auth"
	"github.com/warmpath/warmpath/app/internal/httpapi"
	"github.com/warmpath/warmpath/app/internal/store"
)

// defaultDemoUsers are the embedded default's demo users. They are compiled
// in, so `go run ./app` from any directory creates the same users with the
// same items; DEMO_USERS_FILE replaces them.
//
//go:embed demo_users.json
var defaultDemoUsers []byte

// demoUser is one entry of the demo users file.
type demoUser struct {
	Name  string   `json:"name"`
	Plan  string   `json:"plan"`
	Items []string `json:"items"`
}

// loadDemoUsers reads DEMO_USERS_FILE, or the embedded default when it is
// empty. A file that is named but unreadable is an error, not silently
// replaced: the demo would then answer differently from what its file says.
func loadDemoUsers(file string) ([]demoUser, error) {
	raw := defaultDemoUsers
	if file != "" {
		var err error
		if raw, err = os.ReadFile(file); err != nil {
			return nil, fmt.Errorf("DEMO_USERS_FILE: %w", err)
		}
	}
	var users []demoUser
	if err := json.Unmarshal(raw, &users); err != nil {
		return nil, fmt.Errorf("demo users %q: %w", file, err)
	}
	return users, nil
}

// demo is what createDemoUsers made: the users (tokens included, for
// GET /demo/users and the start-up output) and one item of the first user,
// for a curl that answers the same on every machine.
type demo struct {
	users     []httpapi.DemoUser
	firstItem string
}

// createDemoUsers provisions the demo users of the embedded default and
// prints one line per user with its token (a format the perf lab and tests
// read), so a frontend developer can call the API at once.
func createDemoUsers(ctx context.Context, file string, st store.Store, stdout io.Writer) (demo, error) {
	var d demo
	users, err := loadDemoUsers(file)
	if err != nil {
		return d, err
	}
	for i, du := range users {
		u, err := st.CreateUser(ctx, du.Name, du.Plan, nil)
		if err != nil {
			return d, fmt.Errorf("demo user %s: %w", du.Name, err)
		}
		text, hash, err := auth.NewToken()
		if err != nil {
			return d, err
		}
		if _, err := st.CreateToken(ctx, u.ID, hash, nil); err != nil {
			return d, fmt.Errorf("demo token %s: %w", du.Name, err)
		}
		if len(du.Items) > 0 {
			if _, err := st.UpdateItems(ctx, u.ID, du.Items, nil, 1<<40); err != nil {
				return d, fmt.Errorf("demo items %s: %w", du.Name, err)
			}
			if i == 0 {
				d.firstItem = du.Items[0]
			}
		}
		fmt.Fprintf(stdout, "warmpath: demo user %-8s plan=%-5s id=%d token=%s\n", du.Name, du.Plan, u.ID, text)
		d.users = append(d.users, httpapi.DemoUser{ID: u.ID, Name: du.Name, Plan: du.Plan, Token: text})
	}
	return d, nil
}

// printNext tells a newcomer what to do once the listeners are up: the demo
// page, one request that works as printed, and where the admin API is. It is
// the last thing start-up prints, so the tokens are at hand.
func printNext(w io.Writer, pub, adm net.Addr, d demo, embedded, demoListed bool) {
	base, admin := browsable(pub), browsable(adm)
	var b strings.Builder
	b.WriteString("\nwarmpath is up. Next:\n")
	fmt.Fprintf(&b, "  demo page   %s/\n", base)
	if len(d.users) > 0 && !demoListed {
		b.WriteString("              (paste a token below; it lists the demo users when HTTP_ADDR is a loopback address, e.g. 127.0.0.1:8080)\n")
	}
	if len(d.users) > 0 {
		u := d.users[0]
		items := []string{"an-item-you-do-not-have"}
		if d.firstItem != "" {
			items = []string{d.firstItem, "an-item-you-do-not-have"}
		}
		body, _ := json.Marshal(map[string][]string{"items": items})
		fmt.Fprintf(&b, "  try it      curl -s -X POST %s/api/hasNotEngine-ultra-fast -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '%s'\n", base, u.Token, body)
		for _, u := range d.users {
			fmt.Fprintf(&b, "  token       %-8s %s\n", u.Name, u.Token)
		}
	} else {
		fmt.Fprintf(&b, "  a user      curl -s -X POST %s/admin/users -H 'Content-Type: application/json' -d '{\"name\":\"me\",\"plan\":\"free\"}'\n", admin)
	}
	fmt.Fprintf(&b, "  API         %s/openapi.json\n", base)
	fmt.Fprintf(&b, "  admin       %s/admin/warmup   %s/metrics   %s/debug/pprof/\n", admin, admin, admin)
	if embedded {
		b.WriteString("  (embedded default: nothing is persisted; set DATABASE_URL and VALKEY_URL for real use)\n")
	}
	_, _ = io.WriteString(w, b.String())
}

// browsable is a listener's address as a URL a browser on this machine can
// open: a wildcard host becomes localhost.
func browsable(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "http://" + a.String()
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	} else if ip != nil && ip.To4() == nil {
		host = "[" + host + "]"
	}
	if _, err := strconv.Atoi(port); err != nil {
		return "http://" + a.String()
	}
	return "http://" + host + ":" + port
}
