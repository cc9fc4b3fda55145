// Command gen writes warmpath's Grafana dashboards to dashboards/grafana.
// Run it from the repository root after changing package dashboards:
//
//	go run ./dashboards/gen
//
// A test in package dashboards fails while the committed files differ from
// what this writes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/warmpath/warmpath/dashboards"
)

func main() {
	out := flag.String("out", filepath.Join("dashboards", dashboards.GrafanaDir), "directory to write the dashboards to")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

// run writes every dashboard into dir and removes JSON files there that no
// longer correspond to a dashboard, so a rename leaves nothing stale behind.
func run(dir string) error {
	files, err := dashboards.Generate()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	keep := map[string]bool{}
	for _, f := range files {
		keep[f.Name] = true
		if err := os.WriteFile(filepath.Join(dir, f.Name), f.JSON, 0o644); err != nil {
			return fmt.Errorf("write dashboard: %w", err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".json") && !keep[e.Name()] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("remove stale dashboard: %w", err)
			}
		}
	}
	fmt.Printf("wrote %d dashboards to %s\n", len(files), dir)
	return nil
}
