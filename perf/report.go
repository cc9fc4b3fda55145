package main

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is verify.json (schema in DESIGN.md, "Perf lab").
type Report struct {
	Version   int       `json:"version"`
	StartedAt time.Time `json:"startedAt"`
	Backend   string    `json:"backend"`
	Items     []Item    `json:"items"`
}

// Item is one checklist entry.
type Item struct {
	ID       string `json:"id"`
	Title    string `json:"title"`
	Pass     bool   `json:"pass"`
	Measured Value  `json:"measured"`
	Limit    Value  `json:"limit"`
	// Target is our own tighter goal beside the original limit: reported,
	// never failing verify (Pass follows Limit only).
	Target  Target         `json:"target"`
	Details map[string]any `json:"details"`
	// Charts go to verify.html only.
	Charts []Chart `json:"-"`
}

// MarshalJSON writes nil details as {}: the schema wants an object.
func (it Item) MarshalJSON() ([]byte, error) {
	type plain Item
	if it.Details == nil {
		it.Details = map[string]any{}
	}
	return json.Marshal(plain(it))
}

// Value is a number with its unit.
type Value struct {
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Target is our own goal for an item: a figure with its unit and whether the
// measurement met it.
type Target struct {
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Met   bool    `json:"met"`
}

// String prints the target and whether it was met: "5 ms (met)".
func (t Target) String() string {
	if t.Unit == "" {
		return "-"
	}
	res := "not met"
	if t.Met {
		res = "met"
	}
	return fmt.Sprintf("%s %s (%s)", trimFloat(t.Value), t.Unit, res)
}

// Passed reports whether every item passed.
func (r Report) Passed() bool {
	for _, it := range r.Items {
		if !it.Pass {
			return false
		}
	}
	return len(r.Items) > 0
}

// WriteTable prints the checklist as a table.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ITEM\tRESULT\tMEASURED\tLIMIT\tTARGET\tTITLE")
	for _, it := range r.Items {
		res := "PASS"
		if !it.Pass {
			res = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", it.ID, res, it.Measured, it.Limit, it.Target, it.Title)
	}
	return tw.Flush()
}

func (v Value) String() string {
	return fmt.Sprintf("%s %s", trimFloat(v.Value), v.Unit)
}

// trimFloat prints a figure with at most three decimals and no trailing zeros.
func trimFloat(f float64) string {
	s := fmt.Sprintf("%.3f", f)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		return "0"
	}
	return s
}

// WriteFiles writes verify.json and verify.html into dir.
func (r Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode verify.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "verify.json"), append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("write verify.json: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, "verify.html"))
	if err != nil {
		return fmt.Errorf("write verify.html: %w", err)
	}
	if err := r.WriteHTML(f); err != nil {
		f.Close()
		return fmt.Errorf("write verify.html: %w", err)
	}
	return f.Close()
}

// Chart is a line chart: each series a polyline over shared axes. Categories,
// when set, label the x positions 0..n-1 instead of a numeric axis.
type Chart struct {
	Title      string
	XLabel     string
	YLabel     string
	Categories []string
	Series     []ChartSeries
	Markers    []Marker  // vertical lines (x in data units)
	Lines      []HMarker // horizontal lines (y in data units), e.g. limits
	// LogY draws the y axis in powers of ten: latency percentiles span
	// sub-millisecond medians to tails a hundred times larger.
	LogY bool
}

// ChartSeries is one named polyline.
type ChartSeries struct {
	Name   string
	Points [][2]float64
}

// Marker is a labelled vertical line.
type Marker struct {
	X     float64
	Label string
}

// HMarker is a labelled horizontal line.
type HMarker struct {
	Y     float64
	Label string
}

// percentileCategories are the x positions of percentile charts.
var percentileCategories = []string{"p50", "p75", "p90", "p95", "p99", "p99.9", "max"}

// percentileSeries is a run's latency percentiles as a chart series.
func percentileSeries(name string, samples []Sample) ChartSeries {
	lat := durations(samples)
	s := ChartSeries{Name: name}
	for i, p := range []float64{50, 75, 90, 95, 99, 99.9, 100} {
		s.Points = append(s.Points, [2]float64{float64(i), ms(Percentile(lat, p))})
	}
	return s
}

// timeSeries is a run's per-window p99 over time as a chart series.
func timeSeries(name string, samples []Sample, w time.Duration) ChartSeries {
	s := ChartSeries{Name: name}
	for _, win := range Windows(samples, w) {
		s.Points = append(s.Points, [2]float64{win.StartS, win.P99Ms})
	}
	return s
}

// palette colours series in order.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}

const (
	chartW, chartH                 = 640, 300
	padL, padR, padT, padB float64 = 60, 20, 30, 50
	plotW                          = chartW - padL - padR
	plotH                          = chartH - padT - padB
	maxPointsPerSeries             = 400
)

// SVG renders the chart as a self-contained inline SVG element.
func (c Chart) SVG() template.HTML {
	var b strings.Builder
	esc := template.HTMLEscapeString
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`, chartW, chartH, chartW, chartH, esc(c.Title))
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14" text-anchor="middle" font-weight="bold">%s</text>`, chartW/2, esc(c.Title))

	xmin, xmax, ymax := math.Inf(1), math.Inf(-1), 0.0
	for _, s := range c.Series {
		for _, p := range s.Points {
			xmin, xmax, ymax = math.Min(xmin, p[0]), math.Max(xmax, p[0]), math.Max(ymax, p[1])
		}
	}
	for _, l := range c.Lines {
		ymax = math.Max(ymax, l.Y)
	}
	if len(c.Categories) > 0 {
		xmin, xmax = 0, float64(len(c.Categories)-1)
	}
	if math.IsInf(xmin, 0) || xmax <= xmin {
		xmin, xmax = 0, math.Max(xmax, 1)
	}
	ymax = niceCeil(ymax)
	x := func(v float64) float64 { return padL + (v-xmin)/(xmax-xmin)*plotW }
	y := func(v float64) float64 { return padT + plotH - v/ymax*plotH }
	yticks := []float64{0, ymax / 4, ymax / 2, 3 * ymax / 4, ymax}
	if c.LogY {
		lo, hi := logBounds(c.Series, c.Lines)
		y = func(v float64) float64 {
			v = math.Max(v, math.Pow(10, lo))
			return padT + plotH - (math.Log10(v)-lo)/(hi-lo)*plotH
		}
		yticks = yticks[:0]
		for e := lo; e <= hi; e++ {
			yticks = append(yticks, math.Pow(10, e))
		}
	}

	// Axes, grid and ticks.
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="#fafafa" stroke="#999"/>`, padL, padT, plotW, plotH)
	for _, v := range yticks {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, padL, y(v), padL+plotW, y(v))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="end">%s</text>`, padL-4, y(v)+4, trimFloat(v))
	}
	if len(c.Categories) > 0 {
		for i, cat := range c.Categories {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>`, x(float64(i)), padT+plotH+16, esc(cat))
		}
	} else {
		for i := 0; i <= 5; i++ {
			v := xmin + (xmax-xmin)*float64(i)/5
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>`, x(v), padT+plotH+16, trimFloat(v))
		}
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="12" text-anchor="middle">%s</text>`, padL+plotW/2, chartH-6, esc(c.XLabel))
	fmt.Fprintf(&b, `<text x="14" y="%.1f" font-size="12" text-anchor="middle" transform="rotate(-90 14 %.1f)">%s</text>`, padT+plotH/2, padT+plotH/2, esc(c.YLabel))

	for _, l := range c.Lines {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#c00" stroke-dasharray="6 4"/>`, padL, y(l.Y), padL+plotW, y(l.Y))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="end" fill="#c00">%s</text>`, padL+plotW-4, y(l.Y)-4, esc(l.Label))
	}
	for _, m := range c.Markers {
		if m.X < xmin || m.X > xmax {
			continue
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#555" stroke-dasharray="3 3"/>`, x(m.X), padT, x(m.X), padT+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" fill="#555">%s</text>`, x(m.X)+4, padT+12, esc(m.Label))
	}
	for i, s := range c.Series {
		col := palette[i%len(palette)]
		pts := downsample(s.Points, maxPointsPerSeries)
		var coords []string
		for _, p := range pts {
			coords = append(coords, fmt.Sprintf("%.1f,%.1f", x(p[0]), y(p[1])))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, col, strings.Join(coords, " "))
		for _, p := range pts {
			if len(pts) <= 20 {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s: %s</title></circle>`, x(p[0]), y(p[1]), col, esc(s.Name), trimFloat(p[1]))
			}
		}
		// Legend.
		lx, ly := padL+8, padT+14+float64(i)*15
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="10" height="10" fill="%s"/><text x="%.1f" y="%.1f" font-size="11">%s</text>`, lx, ly-9, col, lx+14, ly, esc(s.Name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // built from escaped parts above
}

// logBounds is the decades a log axis spans: from the smallest positive
// value down to a power of ten, to the largest up to one.
func logBounds(series []ChartSeries, lines []HMarker) (lo, hi float64) {
	minV, maxV := math.Inf(1), 0.0
	for _, s := range series {
		for _, p := range s.Points {
			if p[1] > 0 {
				minV, maxV = math.Min(minV, p[1]), math.Max(maxV, p[1])
			}
		}
	}
	for _, l := range lines {
		if l.Y > 0 {
			minV, maxV = math.Min(minV, l.Y), math.Max(maxV, l.Y)
		}
	}
	if math.IsInf(minV, 1) {
		return 0, 1
	}
	lo, hi = math.Floor(math.Log10(minV)), math.Ceil(math.Log10(maxV))
	if hi <= lo {
		hi = lo + 1
	}
	return lo, hi
}

// downsample keeps at most n points, evenly spaced, always with the last.
func downsample(pts [][2]float64, n int) [][2]float64 {
	if len(pts) <= n || n < 2 {
		return pts
	}
	out := make([][2]float64, 0, n)
	step := float64(len(pts)-1) / float64(n-1)
	for i := range n {
		out = append(out, pts[int(math.Round(float64(i)*step))])
	}
	return out
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (for axis tops).
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

var htmlTemplate = template.Must(template.New("verify").Funcs(template.FuncMap{
	"json": func(v any) string {
		b, _ := json.MarshalIndent(v, "", "  ")
		return string(b)
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>warmpath verify — {{.StartedAt.Format "2006-01-02 15:04:05Z07:00"}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}
.pass{color:#080;font-weight:bold}.fail{color:#c00;font-weight:bold}.met{color:#080}.miss{color:#b60;font-weight:bold}
section{border-top:1px solid #ccc;margin-top:2em;padding-top:1em}
.charts{display:flex;flex-wrap:wrap;gap:1em}
details pre{background:#f6f6f6;padding:1em;overflow:auto;max-height:30em}
</style></head><body>
<h1>warmpath verify</h1>
<p>Started {{.StartedAt.Format "2006-01-02 15:04:05Z07:00"}} · backend <b>{{.Backend}}</b> · {{if .Passed}}<span class="pass">all items pass</span>{{else}}<span class="fail">some items fail</span>{{end}}</p>
<p>Limit: the original checklist's, decides PASS/FAIL. Target: our own tighter goal, reported only.</p>
<table><tr><th>item</th><th>result</th><th>measured</th><th>limit</th><th>target</th><th>title</th></tr>
{{range .Items}}<tr><td><a href="#{{.ID}}">{{.ID}}</a></td><td>{{if .Pass}}<span class="pass">PASS</span>{{else}}<span class="fail">FAIL</span>{{end}}</td><td>{{.Measured}}</td><td>{{.Limit}}</td><td>{{template "target" .Target}}</td><td>{{.Title}}</td></tr>
{{end}}</table>
{{range .Items}}<section id="{{.ID}}"><h2>{{.ID}}: {{.Title}}</h2>
<p>{{if .Pass}}<span class="pass">PASS</span>{{else}}<span class="fail">FAIL</span>{{end}} — measured {{.Measured}}, limit {{.Limit}}, target {{template "target" .Target}}</p>
<div class="charts">{{range .Charts}}{{.SVG}}{{end}}</div>
<details><summary>details</summary><pre>{{json .Details}}</pre></details>
</section>
{{end}}</body></html>
{{define "target"}}{{if not .Unit}}-{{else if .Met}}<span class="met">{{.}}</span>{{else}}<span class="miss">{{.}}</span>{{end}}{{end}}`))

// WriteHTML renders the report as one self-contained page: inline CSS and
// inline SVG charts, no scripts.
func (r Report) WriteHTML(w io.Writer) error {
	return htmlTemplate.Execute(w, r)
}
