package main

// Reading the admin /metrics endpoint: one parser (expfmt, on the
// OpenMetrics exposition) for every test, exact on label values.

import (
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// metric returns the sum of the samples of family name (a counter or gauge
// value, a histogram's count) whose labels include every given name, value
// pair exactly, from one scrape of the admin /metrics endpoint.
func (in *instance) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	fams, _ := scrape(t, in)
	return sumSamples(series(fams, name, labels...))
}

// exemplar is one exemplar of an OpenMetrics sample line.
type exemplar struct {
	series string            // the sample's name and labels, as written
	labels map[string]string // the exemplar's labels (trace_id, span_id)
}

var (
	exemplarRE = regexp.MustCompile(`^(\S+(?:\{.*?\})?) \S+ # \{(.*?)\} \S+( \S+)?$`)
	labelRE    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
	traceIDRE  = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// scrape fetches /metrics in the OpenMetrics format and decodes it with
// expfmt. expfmt's decoder is the classic text parser, which reads OpenMetrics
// 1.0 except for three things this normalises first: exemplars (returned
// separately), "# UNIT" and "# EOF" lines, and counter families, which
// OpenMetrics names without the "_total" their samples carry.
func scrape(t testing.TB, in *instance) (map[string]*dto.MetricFamily, []exemplar) {
	t.Helper()
	req, err := http.NewRequest("GET", in.admin+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/openmetrics-text")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/openmetrics-text") {
		t.Fatalf("scrape: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if lines[len(lines)-1] != "# EOF" {
		t.Fatalf("OpenMetrics exposition must end with # EOF, ends with %q", lines[len(lines)-1])
	}
	// counterAt reports whether line i is the TYPE line of a counter family
	// named without _total (the HELP line comes right before it). Matched
	// by position: the Go collector exposes a gauge and a counter under
	// the same OpenMetrics family name (go_memstats_alloc_bytes).
	counterAt := func(i int) (string, bool) {
		if i < 0 || i >= len(lines) {
			return "", false
		}
		f := strings.Fields(lines[i])
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" && f[3] == "counter" && !strings.HasSuffix(f[2], "_total") {
			return f[2], true
		}
		return "", false
	}
	var b strings.Builder
	var exemplars []exemplar
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if name, ok := counterAt(i); ok {
			l = strings.Replace(l, name, name+"_total", 1)
		} else if name, ok := counterAt(i + 1); ok && f[0] == "#" && f[1] == "HELP" && f[2] == name {
			l = strings.Replace(l, name, name+"_total", 1)
		}
		switch {
		case strings.HasPrefix(l, "# EOF"), strings.HasPrefix(l, "# UNIT "):
			continue
		case !strings.HasPrefix(l, "#") && strings.HasSuffix(strings.SplitN(f[0], "{", 2)[0], "_created"):
			continue // OpenMetrics-only series; the classic parser has no place for them
		case !strings.HasPrefix(l, "#") && strings.Contains(l, " # {"):
			m := exemplarRE.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("unparsable exemplar line %q", l)
			}
			ex := exemplar{series: m[1], labels: map[string]string{}}
			for _, kv := range labelRE.FindAllStringSubmatch(m[2], -1) {
				ex.labels[kv[1]] = kv[2]
			}
			exemplars = append(exemplars, ex)
			l = l[:strings.Index(l, " # {")]
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	fams := map[string]*dto.MetricFamily{}
	dec := expfmt.NewDecoder(strings.NewReader(b.String()), expfmt.NewFormat(expfmt.TypeOpenMetrics))
	for {
		mf := &dto.MetricFamily{}
		if err := dec.Decode(mf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode /metrics: %v", err)
		}
		fams[mf.GetName()] = mf
	}
	return fams, exemplars
}

// series returns the metrics of family name whose labels include every
// given name=value pair.
func series(fams map[string]*dto.MetricFamily, name string, labels ...string) []*dto.Metric {
	var out []*dto.Metric
	mf := fams[name]
	if mf == nil {
		return nil
	}
	for _, m := range mf.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			ok = ok && have[labels[i]] == labels[i+1]
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

// labelValues returns the values label takes in family name.
func labelValues(fams map[string]*dto.MetricFamily, name, label string) []string {
	var out []string
	for _, m := range series(fams, name) {
		for _, lp := range m.Label {
			if lp.GetName() == label && !slices.Contains(out, lp.GetValue()) {
				out = append(out, lp.GetValue())
			}
		}
	}
	slices.Sort(out)
	return out
}

// sampleValue is the value of a counter, gauge or untyped sample, or the count of
// a histogram.
func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func sumSamples(ms []*dto.Metric) float64 {
	var s float64
	for _, m := range ms {
		s += sampleValue(m)
	}
	return s
}
