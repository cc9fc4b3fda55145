package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestLoginCountsStoreReads drives `perf login` against a fake service whose
// odd users' first warmup reads the store: the report counts those, and
// every warmup carries the token the admin API just returned.
func TestLoginCountsStoreReads(t *testing.T) {
	var made atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/users", func(w http.ResponseWriter, r *http.Request) {
		id := made.Add(1)
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "token": fmt.Sprintf("tok-%d", id)})
	})
	var warmed atomic.Int64
	mux.HandleFunc("POST "+pathWarmup, func(w http.ResponseWriter, r *http.Request) {
		var id int64
		if _, err := fmt.Sscanf(r.Header.Get("Authorization"), "Bearer tok-%d", &id); err != nil || id != made.Load() {
			http.Error(w, "not the token just made", http.StatusUnauthorized)
			return
		}
		warmed.Add(1)
		timing := "auth;dur=0.1, total;dur=0.3"
		if id%2 == 1 {
			timing = "auth;dur=0.4, db;dur=0.3, total;dur=0.6"
		}
		w.Header().Set("Server-Timing", timing)
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"warmupStatus":{"state":"queued"}}`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	var out, errOut strings.Builder
	err := run(context.Background(), []string{"perf", "login", "--target", srv.URL, "--admin", srv.URL, "--runs", "5"},
		func(string) string { return "" }, &out, &errOut)
	if err != nil {
		t.Fatalf("login: %v\n%s", err, errOut.String())
	}
	if warmed.Load() != 5 {
		t.Fatalf("%d warmups, want 5", warmed.Load())
	}
	if !strings.Contains(out.String(), "login: 5 users:") || !strings.Contains(out.String(), "3 of 5 read the store") {
		t.Fatalf("report %q: want 5 users, 3 of 5 reading the store", out.String())
	}
}

// TestLoginFailsOnRefusedWarmup: a warmup answered with anything but 202 is
// an error, not a sample.
func TestLoginFailsOnRefusedWarmup(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/users", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":1,"token":"t"}`))
	})
	mux.HandleFunc("POST "+pathWarmup, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":{"code":"unavailable"}}`, http.StatusServiceUnavailable)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	var out, errOut strings.Builder
	err := run(context.Background(), []string{"perf", "login", "--target", srv.URL, "--admin", srv.URL, "--runs", "2"},
		func(string) string { return "" }, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("login against a refusing service: err = %v, want the 503", err)
	}
}

func TestHasMetric(t *testing.T) {
	for _, c := range []struct {
		header, metric string
		want           bool
	}{
		{"auth;dur=0.1, db;dur=0.2, total;dur=1", "db", true},
		{"auth;dur=0.1, total;dur=1", "db", false},
		{"dbx;dur=1, total;dur=1", "db", false},
		{"db", "db", true},
		{"", "db", false},
	} {
		if got := hasMetric(c.header, c.metric); got != c.want {
			t.Errorf("hasMetric(%q, %q) = %v, want %v", c.header, c.metric, got, c.want)
		}
	}
}
