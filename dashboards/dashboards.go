// Package dashboards builds warmpath's Grafana dashboards in Go (with the
// Grafana Foundation SDK) and holds what on-call needs beside them: the
// generated JSON under grafana/, and the Prometheus alert rules and their
// unit tests under prometheus/.
//
// The metric names used here are the contract of DESIGN.md (Telemetry); a
// test keeps every panel expression inside it. Regenerate the JSON with
// `go run ./dashboards/gen` after changing this package.
package dashboards

import (
	"encoding/json"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// GrafanaDir is the directory, relative to this package, that holds the
// generated dashboards; Grafana provisioning in compose.yaml mounts it.
const GrafanaDir = "grafana"

// File is one generated dashboard: its file name inside GrafanaDir and its
// JSON, exactly as committed.
type File struct {
	Name string
	JSON []byte
}

// Generate builds every dashboard and renders each as indented JSON with a
// trailing newline. The output is deterministic, so it can be compared with
// the committed files byte for byte.
func Generate() ([]File, error) {
	builders := []struct {
		name  string
		build func() *dashboard.DashboardBuilder
	}{
		{"warmpath-overview.json", overview},
		{"warmpath-request-phases.json", requestPhases},
		{"warmpath-warmup.json", warmup},
		{"warmpath-usage-sync.json", usageSync},
		{"warmpath-dependencies-runtime.json", dependencies},
	}
	files := make([]File, 0, len(builders))
	for _, b := range builders {
		d, err := b.build().Build()
		if err != nil {
			return nil, fmt.Errorf("build dashboard %s: %w", b.name, err)
		}
		numberPanels(&d)
		js, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("marshal dashboard %s: %w", b.name, err)
		}
		files = append(files, File{Name: b.name, JSON: append(js, '\n')})
	}
	return files, nil
}

// numberPanels gives every panel and row a unique id in layout order: the
// builder leaves them unset (rows at 0), and Grafana keys panel links,
// "view panel" URLs and row collapsing on the id.
func numberPanels(d *dashboard.Dashboard) {
	id := uint32(0)
	for _, p := range d.Panels {
		id++
		switch {
		case p.Panel != nil:
			p.Panel.Id = cog.ToPtr(id)
		case p.RowPanel != nil:
			p.RowPanel.Id = id
		}
	}
}

// ds is the panel datasource: whatever $datasource selects, so the same
// dashboards work against any Prometheus, not only the compose stack's.
var ds = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

// sel is the series selector every panel applies: the instances picked in
// $instance. Grafana expands "All" to the listed values, which come from a
// warmpath-only metric, so go_* and process_* of other jobs stay out.
const sel = `instance=~"$instance"`

// base starts a dashboard with the shared settings and variables.
func base(uid, title, description string) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags([]string{"warmpath"}).
		Editable().
		Refresh("30s").
		Time("now-1h", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").
			Label("Data source").
			Type("prometheus")).
		WithVariable(dashboard.NewQueryVariableBuilder("instance").
			Label("Instance").
			Datasource(ds).
			Query(dashboard.StringOrMap{String: cog.ToPtr("label_values(warmpath_alert_threshold_seconds, instance)")}).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc).
			Multi(true).
			IncludeAll(true).
			Current(dashboard.VariableOption{
				Selected: cog.ToPtr(true),
				Text:     dashboard.StringOrArrayOfString{ArrayOfString: []string{"All"}},
				Value:    dashboard.StringOrArrayOfString{ArrayOfString: []string{"$__all"}},
			})).
		Link(dashboard.NewDashboardLinkBuilder("warmpath").
			Type(dashboard.DashboardLinkTypeDashboards).
			Tags([]string{"warmpath"}).
			AsDropdown(true).
			IncludeVars(true).
			KeepTime(true))
}

// promQuery is a Prometheus query builder.
type promQuery = prometheus.DataqueryBuilder

// q is a Prometheus range query with a legend.
func q(expr, legend string) *promQuery {
	return prometheus.NewDataqueryBuilder().Datasource(ds).Expr(expr).LegendFormat(legend).Range()
}

// panel is what the time series and stat panel builders share.
type panel[P any] interface {
	Title(title string) P
	Description(description string) P
	Datasource(datasource common.DataSourceRef) P
	Unit(unit string) P
	Span(w uint32) P
	Height(h uint32) P
	WithTarget(target cog.Builder[variants.Dataquery]) P
}

// withBasics sets what every panel has: title, description, the Prometheus
// datasource, unit, size, and its queries (refIds A, B, …).
func withBasics[P panel[P]](p P, title, description, unit string, w, h uint32, targets []*promQuery) P {
	p.Title(title).Description(description).Datasource(ds).Unit(unit).Span(w).Height(h)
	for i, t := range targets {
		p.WithTarget(t.RefId(string(rune('A' + i))))
	}
	return p
}

// ts is a time series panel of the given size with the shared defaults.
func ts(title, description, unit string, w, h uint32, targets ...*promQuery) *timeseries.PanelBuilder {
	p := withBasics(timeseries.NewPanelBuilder(), title, description, unit, w, h, targets).
		LineWidth(1).
		FillOpacity(10).
		ShowPoints(common.VisibilityModeNever).
		Legend(common.NewVizLegendOptionsBuilder().
			DisplayMode(common.LegendDisplayModeTable).
			Placement(common.LegendPlacementBottom).
			ShowLegend(true).
			Calcs([]string{"mean", "max", "lastNotNull"})).
		Tooltip(common.NewVizTooltipOptionsBuilder().
			Mode(common.TooltipDisplayModeMulti).
			Sort(common.SortOrderDescending))
	return p
}

// limitLine styles the series named name as a dashed red reference line
// (an alert threshold drawn next to the measurement it applies to).
func limitLine(p *timeseries.PanelBuilder, name string) *timeseries.PanelBuilder {
	return p.OverrideByName(name, []dashboard.DynamicConfigValue{
		{Id: "color", Value: map[string]any{"mode": "fixed", "fixedColor": "red"}},
		{Id: "custom.lineStyle", Value: map[string]any{"fill": "dash", "dash": []int{10, 10}}},
		{Id: "custom.fillOpacity", Value: 0},
	})
}

// ratio sets a 0–1 axis for panels that show shares.
func ratio(p *timeseries.PanelBuilder) *timeseries.PanelBuilder {
	return p.Min(0).Max(1)
}

// quantile is the q-quantile of a histogram's buckets over the selector
// filter, grouped by le plus by (empty, or ", label, …").
func quantile(q, bucket, filter, by string) string {
	return fmt.Sprintf(`histogram_quantile(%s, sum by (le%s) (rate(%s{%s}[$__rate_interval])))`, q, by, bucket, filter)
}

// instant is a Prometheus instant query (for stat panels) with a legend.
func instant(expr, legend string) *promQuery {
	return prometheus.NewDataqueryBuilder().Datasource(ds).Expr(expr).LegendFormat(legend).Instant()
}

// st is a stat panel: one number per series, coloured green below limit
// and red at or above it (limit nil: no colouring). lowIsBad flips it, for
// shares and budgets where less is worse.
func st(title, description, unit string, w, h uint32, limit *float64, lowIsBad bool, targets ...*promQuery) *stat.PanelBuilder {
	steps := []dashboard.Threshold{{Value: nil, Color: "green"}}
	if limit != nil {
		steps = append(steps, dashboard.Threshold{Value: limit, Color: "red"})
		if lowIsBad {
			steps = []dashboard.Threshold{{Value: nil, Color: "red"}, {Value: limit, Color: "green"}}
		}
	}
	p := withBasics(stat.NewPanelBuilder(), title, description, unit, w, h, targets).
		ColorMode(common.BigValueColorModeBackground).
		GraphMode(common.BigValueGraphModeNone).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Values(false)).
		Thresholds(dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps(steps))
	return p
}

// link is a panel link that opens url (Grafana interpolates variables).
func link(title, url string) cog.Builder[dashboard.DashboardLink] {
	return dashboard.NewDashboardLinkBuilder(title).Type(dashboard.DashboardLinkTypeLink).Url(url).TargetBlank(true)
}

// sumRate is sum by (by) of the per-second rate of a counter over the panel's
// rate interval, with filter ANDed to the instance selector.
func sumRate(metric, filter, by string) string {
	f := sel
	if filter != "" {
		f += ", " + filter
	}
	if by == "" {
		return fmt.Sprintf(`sum(rate(%s{%s}[$__rate_interval]))`, metric, f)
	}
	return fmt.Sprintf(`sum by (%s) (rate(%s{%s}[$__rate_interval]))`, by, metric, f)
}

// orZero makes expr read 0 instead of "No data" while it has no series:
// ungrouped sums fall back to vector(0); grouped ones to zeroes of like
// (an expression grouped by the same labels that always has series), so
// every group shows its own 0 and no label-less stray series appears.
func orZero(expr, like string) string {
	if like == "" {
		return "(" + expr + ") or vector(0)"
	}
	return "(" + expr + ") or (" + like + " * 0)"
}

// f64 returns a pointer to v (threshold values).
func f64(v float64) *float64 { return &v }
