package pgtest

import (
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestWithSearchPath(t *testing.T) {
	tests := []struct{ base, want string }{
		{"postgres://u@h:5432/db?sslmode=disable", "-c search_path=s1"},
		{"postgresql://u@h/db?options=-c%20statement_timeout%3D5s", "-c statement_timeout=5s -c search_path=s1"},
		{"host=h user=u dbname=db", "-c search_path=s1"},
	}
	for _, tt := range tests {
		got, err := withSearchPath(tt.base, "s1")
		if err != nil {
			t.Fatalf("withSearchPath(%q): %v", tt.base, err)
		}
		cfg, err := pgx.ParseConfig(got)
		if err != nil {
			t.Fatalf("ParseConfig(%q): %v", got, err)
		}
		if o := cfg.RuntimeParams["options"]; o != tt.want {
			t.Errorf("withSearchPath(%q) = %q: options %q, want %q", tt.base, got, o, tt.want)
		}
	}
}
