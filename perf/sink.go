package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// runSink serves an OTLP/HTTP endpoint that accepts and discards what it is
// sent, so the service's batch span exporter does its full work (encode,
// POST) during a telemetry-overhead measurement without a collector:
//
//	go run ./perf sink --addr 127.0.0.1:4318 &
//	OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 go run ./app
func runSink(ctx context.Context, args []string, _ func(string) string, stdout, stderr io.Writer) error {
	ln, err := listenFlag("sink", "127.0.0.1:4318", "listen address (loopback)", args, stderr)
	if ln == nil {
		return err
	}
	var posts, bytes atomic.Int64
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			posts.Add(1)
			bytes.Add(n)
			// An empty body is a valid (empty) Export*ServiceResponse.
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.WriteHeader(http.StatusOK)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	fmt.Fprintf(stdout, "sink: accepting OTLP/HTTP on http://%s\n", ln.Addr())
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("sink: %w", err)
	}
	fmt.Fprintf(stdout, "sink: %d exports, %d bytes\n", posts.Load(), bytes.Load())
	return nil
}
