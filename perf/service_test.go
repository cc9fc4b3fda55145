package main

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"PATH=/bin", "DATABASE_URL=postgres://elsewhere", "HOME=/root"}, map[string]string{"DATABASE_URL": "", "HTTP_ADDR": "127.0.0.1:1"})
	slices.Sort(got)
	want := []string{"DATABASE_URL=", "HOME=/root", "HTTP_ADDR=127.0.0.1:1", "PATH=/bin"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("mergeEnv (-want +got):\n%s", d)
	}
}

func TestServiceLines(t *testing.T) {
	// The lines exactly as app/serve.go prints them.
	m := servingLine.FindStringSubmatch("warmpath: serving http://127.0.0.1:45575 admin http://127.0.0.1:38211 (pid 15167, started in 7.979ms)")
	if m == nil || m[1] != "127.0.0.1:45575" || m[2] != "127.0.0.1:38211" || m[3] != "7.979ms" {
		t.Errorf("serving line parsed as %q", m)
	}
	d := demoLine.FindStringSubmatch("warmpath: demo user bob      plan=pro   id=2 token=wp_1K5P-UiUYlqLiXJe8oc5wxI3J_VMJDo-udmI06Mdpp4")
	if d == nil || d[1] != "bob" || d[2] != "wp_1K5P-UiUYlqLiXJe8oc5wxI3J_VMJDo-udmI06Mdpp4" {
		t.Errorf("demo line parsed as %q", d)
	}
}

func TestBackendEmbedded(t *testing.T) {
	b := &Backend{}
	if b.Name() != "embedded" || b.Persistent() {
		t.Errorf("empty backend is %q (persistent %v), want embedded", b.Name(), b.Persistent())
	}
	iso, err := b.Isolate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Set and empty: the embedded default even when the caller's own
	// environment names real servers.
	if v, ok := iso["DATABASE_URL"]; !ok || v != "" {
		t.Errorf("DATABASE_URL = %q (set %v), want set and empty", v, ok)
	}
	if v, ok := iso["VALKEY_URL"]; !ok || v != "" {
		t.Errorf("VALKEY_URL = %q (set %v), want set and empty", v, ok)
	}
	other, _ := b.Isolate(context.Background())
	if !strings.HasPrefix(iso["VALKEY_PREFIX"], "wpperf") || iso["VALKEY_PREFIX"] == other["VALKEY_PREFIX"] {
		t.Errorf("prefixes %q and %q, want distinct wpperf…", iso["VALKEY_PREFIX"], other["VALKEY_PREFIX"])
	}
	for _, tt := range []struct {
		b    *Backend
		want string
	}{
		{&Backend{DatabaseURL: "x", ValkeyURL: "y"}, "postgres+valkey"},
		{&Backend{DatabaseURL: "x"}, "postgres+embedded-valkey"},
		{&Backend{ValkeyURL: "y"}, "memory+valkey"},
	} {
		if got := tt.b.Name(); got != tt.want {
			t.Errorf("Name() = %q, want %q", got, tt.want)
		}
	}
}
