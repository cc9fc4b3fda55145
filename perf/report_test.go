package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// readReport reads dir/verify.json, fails the test unless it matches the
// schema, and decodes it.
func readReport(t *testing.T, dir string) Report {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "verify.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := validateReport(t, raw); err != nil {
		t.Fatalf("verify.json does not match the schema: %v\n%s", err, raw)
	}
	var rep Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// validateReport checks raw verify.json against testdata/verify.schema.json.
func validateReport(t *testing.T, raw []byte) error {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "verify.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("schema: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("verify.schema.json", doc); err != nil {
		t.Fatalf("schema: %v", err)
	}
	sch, err := c.Compile("verify.schema.json")
	if err != nil {
		t.Fatalf("schema: %v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}

func sampleReport() Report {
	samples := []Sample{{At: 0, Latency: time.Millisecond, Code: 200}, {At: time.Second, Latency: 3 * time.Millisecond, Code: 200}}
	return Report{
		Version: 1, StartedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Backend: "embedded",
		Items: []Item{
			{ID: idStartup, Title: "Startup <fast>", Pass: true, Measured: Value{12.3456, "ms"}, Limit: Value{100, "ms"}, Target: Target{50, "ms", true},
				Details: map[string]any{"note": "</pre><script>alert(1)</script>"},
				Charts: []Chart{{Title: "a & b", XLabel: "percentile", YLabel: "ms", Categories: percentileCategories, LogY: true,
					Series: []ChartSeries{percentileSeries("run <1>", samples)}, Lines: []HMarker{{Y: 2, Label: "target"}}}}},
			{ID: idSync, Title: "Sync", Pass: false, Measured: Value{9, "ms"}, Limit: Value{7.5, "ms"}, Target: Target{1.25, "× p99 without", false},
				Charts: []Chart{{Title: "over time", XLabel: "s", YLabel: "ms", Series: []ChartSeries{timeSeries("p99", samples, time.Second)}, Markers: []Marker{{X: 0.5, Label: "sync"}}}}},
		},
	}
}

func TestReportPassed(t *testing.T) {
	r := sampleReport()
	if r.Passed() {
		t.Error("a report with a failed item passed")
	}
	r.Items[1].Pass = true
	if !r.Passed() {
		t.Error("a report with every item passing did not pass")
	}
	if (Report{}).Passed() {
		t.Error("an empty report passed")
	}
}

func TestReportTable(t *testing.T) {
	var b strings.Builder
	if err := sampleReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"ITEM                 RESULT  MEASURED   LIMIT   TARGET",
		"startup_nonblocking  PASS    12.346 ms  100 ms  50 ms (met)",
		"sync_nonblocking     FAIL    9 ms       7.5 ms  1.25 × p99 without (not met)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestReportFiles(t *testing.T) {
	dir := t.TempDir()
	r := sampleReport()
	if err := r.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	back := readReport(t, dir)
	// Nil details are written as {} (the schema wants an object).
	if back.Items[1].Details == nil {
		t.Error("nil details written as null")
	}
	checkHTML(t, filepath.Join(dir, "verify.html"))
}

// checkHTML asserts verify.html is self-contained: inline SVG charts that
// parse as XML, no scripts, nothing loaded from elsewhere, text escaped.
func checkHTML(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := string(raw)
	if strings.Contains(strings.ToLower(page), "<script") {
		t.Error("verify.html has a script element")
	}
	for _, ext := range []string{`src="http`, `href="http`, "@import", "url(http"} {
		if strings.Contains(page, ext) {
			t.Errorf("verify.html loads something external: %q", ext)
		}
	}
	n := strings.Count(page, "<svg ")
	if n == 0 {
		t.Fatal("verify.html has no SVG chart")
	}
	rest := page
	for range n {
		i := strings.Index(rest, "<svg ")
		j := strings.Index(rest[i:], "</svg>")
		if j < 0 {
			t.Fatal("unterminated svg")
		}
		if err := wellFormed(rest[i : i+j+len("</svg>")]); err != nil {
			t.Errorf("chart is not well-formed XML: %v", err)
		}
		rest = rest[i+j:]
	}
}

func wellFormed(s string) error {
	d := xml.NewDecoder(strings.NewReader(s))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func TestSchemaRejects(t *testing.T) {
	good, err := json.Marshal(sampleReport())
	if err != nil {
		t.Fatal(err)
	}
	if err := validateReport(t, good); err != nil {
		t.Fatalf("a good report fails the schema: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(m map[string]any)
	}{
		{"unknown top-level field", func(m map[string]any) { m["extra"] = 1 }},
		{"wrong version", func(m map[string]any) { m["version"] = 2 }},
		{"startedAt not a date-time", func(m map[string]any) { m["startedAt"] = "yesterday" }},
		{"missing backend", func(m map[string]any) { delete(m, "backend") }},
		{"unknown item id", func(m map[string]any) { item(m)["id"] = "made_up" }},
		{"pass not a boolean", func(m map[string]any) { item(m)["pass"] = "yes" }},
		{"measured without unit", func(m map[string]any) { delete(item(m)["measured"].(map[string]any), "unit") }},
		{"limit value a string", func(m map[string]any) { item(m)["limit"].(map[string]any)["value"] = "100" }},
		{"details missing", func(m map[string]any) { delete(item(m), "details") }},
		{"target missing", func(m map[string]any) { delete(item(m), "target") }},
		{"target without met", func(m map[string]any) { delete(item(m)["target"].(map[string]any), "met") }},
		{"target met not a boolean", func(m map[string]any) { item(m)["target"].(map[string]any)["met"] = "yes" }},
		{"no items", func(m map[string]any) { m["items"] = []any{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(good, &m); err != nil {
				t.Fatal(err)
			}
			tt.mutate(m)
			raw, _ := json.Marshal(m)
			if err := validateReport(t, raw); err == nil {
				t.Errorf("schema accepted %s", raw)
			}
		})
	}
}

// TestReportTargetBesideLimit pins the JSON shape of DESIGN.md: every item
// has "target" {value, unit, met} beside "limit" {value, unit}, "pass"
// follows the limit only, and the HTML table has both columns.
func TestReportTargetBesideLimit(t *testing.T) {
	r := sampleReport()
	// A target missed does not fail an item; a limit passed passes it.
	r.Items[0].Target.Met = false
	r.Items[1].Pass = true
	if !r.Passed() {
		t.Error("a missed target failed the report")
	}
	raw, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Items []map[string]json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{"details", "id", "limit", "measured", "pass", "target", "title"}
	for _, it := range got.Items {
		var keys []string
		for k := range it {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if d := cmp.Diff(wantKeys, keys); d != "" {
			t.Errorf("item keys (-want +got):\n%s", d)
		}
	}
	if d := cmp.Diff(`{"value":50,"unit":"ms","met":false}`, string(got.Items[0]["target"])); d != "" {
		t.Errorf("target (-want +got):\n%s", d)
	}
	if d := cmp.Diff(`{"value":100,"unit":"ms"}`, string(got.Items[0]["limit"])); d != "" {
		t.Errorf("limit (-want +got):\n%s", d)
	}
	if err := validateReport(t, raw); err != nil {
		t.Errorf("schema: %v", err)
	}
	var b strings.Builder
	if err := r.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<th>limit</th><th>target</th>", "<td>100 ms</td><td><span class=\"miss\">50 ms (not met)</span></td>", "target <span class=\"miss\">50 ms (not met)</span>"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("verify.html lacks %q", want)
		}
	}
}

func item(m map[string]any) map[string]any { return m["items"].([]any)[0].(map[string]any) }

func TestNiceCeil(t *testing.T) {
	for in, want := range map[float64]float64{0: 1, -3: 1, 0.7: 1, 1: 1, 1.2: 2, 3: 5, 7: 10, 45: 50, 101: 200, 0.013: 0.02} {
		if got := niceCeil(in); got < want*0.999999 || got > want*1.000001 {
			t.Errorf("niceCeil(%v) = %v, want %v", in, got, want)
		}
	}
}

func TestLogBounds(t *testing.T) {
	lo, hi := logBounds([]ChartSeries{{Points: [][2]float64{{0, 0.3}, {1, 0}, {2, 42}}}}, []HMarker{{Y: 5}})
	if lo != -1 || hi != 2 {
		t.Errorf("logBounds = %v..%v, want -1..2 (0.1 ms to 100 ms)", lo, hi)
	}
	if lo, hi := logBounds(nil, nil); lo != 0 || hi != 1 {
		t.Errorf("logBounds of nothing = %v..%v, want 0..1", lo, hi)
	}
}

func TestDownsample(t *testing.T) {
	pts := make([][2]float64, 1000)
	for i := range pts {
		pts[i] = [2]float64{float64(i), 1}
	}
	got := downsample(pts, 10)
	if len(got) != 10 || got[0][0] != 0 || got[9][0] != 999 {
		t.Errorf("downsample kept %d points from %v to %v, want 10 from 0 to 999", len(got), got[0], got[len(got)-1])
	}
	if len(downsample(pts[:5], 10)) != 5 {
		t.Error("downsample changed a short series")
	}
}
