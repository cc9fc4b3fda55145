package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()

	if err := probe(srv.URL+"/readyz", time.Second); err != nil {
		t.Errorf("probe of a 200: %v, want nil", err)
	}
	if err := probe(srv.URL+"/down", time.Second); err == nil {
		t.Error("probe of a 503: nil error, want one")
	}
	srv.Close()
	if err := probe(srv.URL+"/readyz", time.Second); err == nil {
		t.Error("probe of a closed server: nil error, want one")
	}
}
