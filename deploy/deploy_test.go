package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
)

// root is the repository root, relative to this package.
const root = ".."

// loadProject loads compose.yaml the way `docker compose` does, with an
// empty environment so the defaults in the file are what is tested.
func loadProject(t *testing.T) *types.Project {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "compose.yaml")},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(nil),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	p, err := opts.LoadProject(ctx)
	if err != nil {
		t.Fatalf("load compose.yaml: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return s
}

// serviceEnvNames are the environment variables the service reads: the env
// tags of app/internal/config and the names app/internal/telemetry looks up
// (OTEL_*, PYROSCOPE_*). Parsed from the source, so a renamed variable fails
// here rather than silently doing nothing in the stack.
func serviceEnvNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	add := func(glob string, re *regexp.Regexp) {
		files, err := filepath.Glob(filepath.Join(root, glob))
		if err != nil || len(files) == 0 {
			t.Fatalf("no files match %s: %v", glob, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range re.FindAllSubmatch(src, -1) {
				names[string(m[1])] = true
			}
		}
	}
	add("app/internal/config/config.go", regexp.MustCompile(`env:"([A-Z0-9_]+)"`))
	add("app/internal/telemetry/*.go", regexp.MustCompile(`[gG]etenv\("([A-Z0-9_]+)"\)`))
	for _, must := range []string{"HTTP_ADDR", "ADMIN_ADDR", "ADMIN_TOKEN", "DATABASE_URL", "VALKEY_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "PYROSCOPE_SERVER_ADDRESS"} {
		if !names[must] {
			t.Fatalf("parsing the service's sources found no %s (found %d names): the parser is out of date", must, len(names))
		}
	}
	return names
}

func TestComposeServices(t *testing.T) {
	p := loadProject(t)
	names := p.ServiceNames()
	sort.Strings(names)
	for _, want := range []string{"grafana", "otel-collector", "postgres", "prometheus", "pyroscope", "tempo", "valkey", "warmpath"} {
		if !slices.Contains(names, want) {
			t.Errorf("compose.yaml has no service %s (has %v)", want, names)
		}
	}
	for _, name := range names {
		s := service(t, p, name)
		if hc := s.HealthCheck; hc == nil || hc.Disable || len(hc.Test) < 2 || hc.Interval == nil {
			t.Errorf("%s: needs an enabled healthcheck with a test and an interval, got %+v", name, hc)
		}
		if s.Image == "" || strings.HasSuffix(s.Image, ":latest") || !strings.Contains(s.Image, ":") {
			t.Errorf("%s: image %q must be pinned to a tag", name, s.Image)
		}
		// An image built on an upstream one pins that one too.
		if s.Build != nil {
			if base := s.Build.Args["BASE"]; base != nil && (strings.HasSuffix(*base, ":latest") || !strings.Contains(*base, ":")) {
				t.Errorf("%s: build arg BASE %q must be pinned to a tag", name, *base)
			}
			if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: build: %v", name, err)
			}
		}
		for _, port := range s.Ports {
			if port.HostIP != "127.0.0.1" {
				t.Errorf("%s: port %d published on %q, want 127.0.0.1 only", name, port.Target, port.HostIP)
			}
		}
		for _, v := range s.Volumes {
			switch v.Type {
			case types.VolumeTypeBind:
				// Resolved to an absolute path: it must be in the repository.
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("%s: mounts %s at %s: %v", name, v.Source, v.Target, err)
				}
			case types.VolumeTypeVolume:
				if _, ok := p.Volumes[v.Source]; !ok || v.Source == "" {
					t.Errorf("%s: volume %q at %s is not a named volume of compose.yaml", name, v.Source, v.Target)
				}
			default:
				t.Errorf("%s: %s mount at %s: want bind mounts of repository files or named volumes", name, v.Type, v.Target)
			}
		}
		// A probe added by deploy/probe.Dockerfile must be the one the health check runs.
		if s.Build != nil && strings.HasSuffix(s.Build.Dockerfile, "probe.Dockerfile") && !slices.Contains(s.HealthCheck.Test, "/usr/local/bin/healthcheck") {
			t.Errorf("%s: built with the probe but its healthcheck is %v", name, s.HealthCheck.Test)
		}
	}
	for _, name := range []string{"postgres", "valkey", "prometheus", "grafana", "tempo", "pyroscope"} {
		if len(service(t, p, name).Volumes) == 0 {
			continue
		}
		hasNamed := false
		for _, v := range service(t, p, name).Volumes {
			hasNamed = hasNamed || v.Type == types.VolumeTypeVolume
		}
		if !hasNamed {
			t.Errorf("%s: keeps its data outside a named volume", name)
		}
	}
}

// TestComposeCollectorWiring: warmpath → collector (OTLP/HTTP) → Tempo
// (OTLP/gRPC), and the collector's health endpoint is what compose probes.
func TestComposeCollectorWiring(t *testing.T) {
	p := loadProject(t)
	c := service(t, p, "otel-collector")
	src := mustMount(t, c, "/etc/otelcol-contrib/config.yaml")
	if !slices.Contains(c.Command, "--config=/etc/otelcol-contrib/config.yaml") {
		t.Errorf("otel-collector command %v does not load the mounted config", c.Command)
	}
	var cfg struct {
		Extensions map[string]endpoint `yaml:"extensions"`
		Receivers  otlpReceivers       `yaml:"receivers"`
		Exporters  map[string]endpoint `yaml:"exporters"`
		Service    struct {
			Extensions []string `yaml:"extensions"`
			Pipelines  map[string]struct {
				Receivers []string `yaml:"receivers"`
				Exporters []string `yaml:"exporters"`
			} `yaml:"pipelines"`
		} `yaml:"service"`
	}
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("parse %s: %v", src, err)
	}
	if got := cfg.Receivers.OTLP.Protocols["http"].Endpoint; got != "0.0.0.0:4318" {
		t.Errorf("collector OTLP/HTTP receiver on %q, want 0.0.0.0:4318", got)
	}
	w := service(t, p, "warmpath")
	if e := w.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]; e == nil || *e != "http://otel-collector:4318" {
		t.Errorf("warmpath OTEL_EXPORTER_OTLP_ENDPOINT %v, want http://otel-collector:4318", e)
	}
	traces, ok := cfg.Service.Pipelines["traces"]
	if !ok || !slices.Contains(traces.Receivers, "otlp") || len(traces.Exporters) != 1 {
		t.Fatalf("collector traces pipeline %+v: want otlp in, one exporter", traces)
	}
	if got := cfg.Exporters[traces.Exporters[0]].Endpoint; got != "tempo:4317" {
		t.Errorf("collector exports traces to %q, want tempo:4317", got)
	}
	var tempoCfg struct {
		Distributor struct {
			Receivers otlpReceivers `yaml:"receivers"`
		} `yaml:"distributor"`
	}
	raw, err = os.ReadFile(mountSource(service(t, p, "tempo"), "/etc/tempo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &tempoCfg); err != nil {
		t.Fatal(err)
	}
	if got := tempoCfg.Distributor.Receivers.OTLP.Protocols["grpc"].Endpoint; !strings.HasSuffix(got, ":4317") {
		t.Errorf("tempo OTLP/gRPC receiver on %q, want :4317", got)
	}
	hc, ok := cfg.Extensions["health_check"]
	if !ok || !slices.Contains(cfg.Service.Extensions, "health_check") {
		t.Fatal("collector: health_check extension missing or not enabled")
	}
	_, port, _ := strings.Cut(hc.Endpoint, ":")
	if want := "http://127.0.0.1:" + port + "/"; !slices.Contains(c.HealthCheck.Test, want) {
		t.Errorf("collector healthcheck %v does not probe the health_check extension at %s", c.HealthCheck.Test, want)
	}
	for dep, svc := range map[string]types.ServiceConfig{"otel-collector": w, "tempo": c} {
		if d, ok := svc.DependsOn[dep]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("depends_on %s: got %+v, want service_healthy", dep, d)
		}
	}
}

func TestComposeWarmpathService(t *testing.T) {
	p := loadProject(t)
	s := service(t, p, "warmpath")

	if s.Build == nil || s.Build.Dockerfile != "deploy/Dockerfile" {
		t.Errorf("warmpath must build from deploy/Dockerfile, got %+v", s.Build)
	}

	known := serviceEnvNames(t)
	for name := range s.Environment {
		if !known[name] {
			t.Errorf("warmpath environment sets %s, which the service does not read (config.go env tags, telemetry getenv)", name)
		}
	}
	env := func(name string) string {
		v := s.Environment[name]
		if v == nil {
			t.Errorf("warmpath environment has no %s", name)
			return ""
		}
		return *v
	}
	wantEnv := map[string]string{
		"HTTP_ADDR":                   ":8080",
		"ADMIN_ADDR":                  "0.0.0.0:9090",
		"DATABASE_URL":                "postgres://postgres:postgres@postgres:5432/warmpath?sslmode=disable",
		"VALKEY_URL":                  "valkey://valkey:6379",
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318",
		"PYROSCOPE_SERVER_ADDRESS":    "http://pyroscope:4040",
	}
	for name, want := range wantEnv {
		if got := env(name); got != want {
			t.Errorf("warmpath %s = %q, want %q", name, got, want)
		}
	}
	// The admin listener is reachable from Prometheus, so it needs a token,
	// and Prometheus must scrape with the same one.
	token := env("ADMIN_TOKEN")
	if token == "" {
		t.Error("warmpath ADMIN_TOKEN is empty; the service refuses to start with a non-loopback ADMIN_ADDR and no token")
	}
	cfg, ok := p.Configs["admin-token"]
	if !ok || cfg.Content != token {
		t.Errorf("configs.admin-token content %q must equal warmpath's ADMIN_TOKEN %q", cfg.Content, token)
	}

	published := map[string]bool{}
	for _, port := range s.Ports {
		published[port.Published+"->"+strconv.Itoa(int(port.Target))] = true
		if port.HostIP != "127.0.0.1" {
			t.Errorf("warmpath port %d published on %q, want loopback only", port.Target, port.HostIP)
		}
	}
	for _, want := range []string{"8080->8080", "9090->9090"} {
		if !published[want] {
			t.Errorf("warmpath does not publish %s (has %v)", want, published)
		}
	}

	if !slices.Contains(s.HealthCheck.Test, "/usr/local/bin/healthcheck") {
		t.Errorf("warmpath healthcheck %v: want the image's /usr/local/bin/healthcheck (distroless has no shell)", s.HealthCheck.Test)
	}
	for dep, cond := range map[string]string{"postgres": types.ServiceConditionHealthy, "valkey": types.ServiceConditionHealthy} {
		if d, ok := s.DependsOn[dep]; !ok || d.Condition != cond {
			t.Errorf("warmpath depends_on %s: got %+v, want condition %s", dep, d, cond)
		}
	}
	if d, ok := service(t, p, "grafana").DependsOn["prometheus"]; !ok || d.Condition != types.ServiceConditionHealthy {
		t.Errorf("grafana depends_on prometheus: got %+v, want service_healthy", d)
	}
}

// mustMount is mountSource, failing the test when nothing is mounted there.
func mustMount(t *testing.T, s types.ServiceConfig, target string) string {
	t.Helper()
	src := mountSource(s, target)
	if src == "" {
		t.Fatalf("%s: nothing mounted at %s", s.Name, target)
	}
	return src
}

// mountSource returns the host path mounted at target in s ("" if none).
func mountSource(s types.ServiceConfig, target string) string {
	for _, v := range s.Volumes {
		if v.Target == target {
			return v.Source
		}
	}
	return ""
}

// endpoint is a collector or Tempo component with a listen or target address.
type endpoint struct {
	Endpoint string `yaml:"endpoint"`
}

// otlpReceivers is the `receivers:` block of an OpenTelemetry Collector or
// Tempo config, as far as its OTLP protocols go.
type otlpReceivers struct {
	OTLP struct {
		Protocols map[string]endpoint `yaml:"protocols"`
	} `yaml:"otlp"`
}

// promConfig is the part of prometheus.yml the tests look at.
type promConfig struct {
	RuleFiles     []string       `yaml:"rule_files"`
	ScrapeConfigs []scrapeConfig `yaml:"scrape_configs"`
}

type scrapeConfig struct {
	JobName       string `yaml:"job_name"`
	MetricsPath   string `yaml:"metrics_path"`
	Authorization struct {
		Type            string `yaml:"type"`
		CredentialsFile string `yaml:"credentials_file"`
	} `yaml:"authorization"`
	StaticConfigs []struct {
		Targets []string `yaml:"targets"`
	} `yaml:"static_configs"`
}

func TestComposePrometheusWiring(t *testing.T) {
	p := loadProject(t)
	prom := service(t, p, "prometheus")
	const confDir = "/etc/prometheus"

	confSrc := mustMount(t, prom, confDir+"/prometheus.yml")
	raw, err := os.ReadFile(confSrc)
	if err != nil {
		t.Fatal(err)
	}
	var cfg promConfig
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("parse %s: %v", confSrc, err)
	}

	// Every rule file resolves (relative to the config's directory) to a
	// mount of a file in the repository.
	if len(cfg.RuleFiles) == 0 {
		t.Error("prometheus.yml loads no rule files")
	}
	for _, rf := range cfg.RuleFiles {
		src := mountSource(prom, filepath.Join(confDir, rf))
		if src == "" {
			t.Errorf("rule file %s is not mounted into the prometheus service", rf)
			continue
		}
		if want, _ := filepath.Abs(filepath.Join(root, "dashboards/prometheus/alerts.yml")); src != want {
			t.Errorf("rule file %s comes from %s, want %s", rf, src, want)
		}
	}

	var job *scrapeConfig
	for i := range cfg.ScrapeConfigs {
		if cfg.ScrapeConfigs[i].JobName == "warmpath" {
			job = &cfg.ScrapeConfigs[i]
		}
	}
	if job == nil {
		t.Fatal(`prometheus.yml has no job "warmpath" (alerts.yml's WarmpathDown selects it)`)
	}
	if len(job.StaticConfigs) != 1 || !slices.Equal(job.StaticConfigs[0].Targets, []string{"warmpath:9090"}) {
		t.Errorf("warmpath job targets %+v, want [warmpath:9090] (service name : ADMIN_ADDR port)", job.StaticConfigs)
	}
	if job.MetricsPath != "/metrics" {
		t.Errorf("warmpath job metrics_path %q, want /metrics", job.MetricsPath)
	}
	// The scrape credentials are the admin-token config, mounted where
	// credentials_file points.
	credTarget := filepath.Join(confDir, job.Authorization.CredentialsFile)
	found := false
	for _, c := range prom.Configs {
		if c.Source == "admin-token" && c.Target == credTarget {
			found = true
			if c.Mode == nil || *c.Mode&0o004 == 0 {
				t.Errorf("admin-token config mode %v: Prometheus runs as nobody and must be able to read it", c.Mode)
			}
		}
	}
	if job.Authorization.CredentialsFile == "" || !found {
		t.Errorf("warmpath job credentials_file %q is not the admin-token config (prometheus configs: %+v)", job.Authorization.CredentialsFile, prom.Configs)
	}
}

func TestComposeGrafanaWiring(t *testing.T) {
	p := loadProject(t)
	g := service(t, p, "grafana")

	provSrc := mustMount(t, g, "/etc/grafana/provisioning")
	var providers struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	raw, err := os.ReadFile(filepath.Join(provSrc, "dashboards", "warmpath.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &providers); err != nil {
		t.Fatal(err)
	}
	if len(providers.Providers) != 1 {
		t.Fatalf("want one dashboard provider, got %d", len(providers.Providers))
	}
	dashSrc := mountSource(g, providers.Providers[0].Options.Path)
	want, _ := filepath.Abs(filepath.Join(root, "dashboards/grafana"))
	if dashSrc != want {
		t.Errorf("dashboard provider path %s mounts %q, want %s", providers.Providers[0].Options.Path, dashSrc, want)
	}
	home := g.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
	if home == nil || !strings.HasPrefix(*home, providers.Providers[0].Options.Path+"/") {
		t.Errorf("home dashboard %v is not under the provisioned path", home)
	} else if _, err := os.Stat(filepath.Join(dashSrc, strings.TrimPrefix(*home, providers.Providers[0].Options.Path))); err != nil {
		t.Errorf("home dashboard: %v", err)
	}

	var ds struct {
		Datasources []struct {
			UID       string `yaml:"uid"`
			Type      string `yaml:"type"`
			URL       string `yaml:"url"`
			IsDefault bool   `yaml:"isDefault"`
			JSONData  struct {
				ExemplarTraceIDDestinations []struct {
					Name          string `yaml:"name"`
					DatasourceUID string `yaml:"datasourceUid"`
				} `yaml:"exemplarTraceIdDestinations"`
				TracesToProfiles struct {
					DatasourceUID string `yaml:"datasourceUid"`
				} `yaml:"tracesToProfiles"`
			} `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	raw, err = os.ReadFile(filepath.Join(provSrc, "datasources", "datasources.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &ds); err != nil {
		t.Fatal(err)
	}
	var defaultProm bool
	for _, d := range ds.Datasources {
		if d.Type == "prometheus" && d.IsDefault && d.URL == "http://prometheus:9090" {
			defaultProm = true
		}
	}
	if !defaultProm {
		t.Errorf("no default Prometheus data source at http://prometheus:9090 (the dashboards' $datasource defaults to it): %+v", ds.Datasources)
	}
	byType := map[string]string{} // type → uid
	for _, d := range ds.Datasources {
		byType[d.Type] = d.UID
	}
	wantURL := map[string]string{"tempo": "http://tempo:3200", "grafana-pyroscope-datasource": "http://pyroscope:4040"}
	for _, d := range ds.Datasources {
		if w, ok := wantURL[d.Type]; ok && d.URL != w {
			t.Errorf("%s data source at %q, want %s", d.Type, d.URL, w)
		}
		delete(wantURL, d.Type)
		switch d.Type {
		case "prometheus":
			// Exemplars carry trace_id (the OTel exporter): link them to Tempo.
			ok := false
			for _, e := range d.JSONData.ExemplarTraceIDDestinations {
				ok = ok || (e.Name == "trace_id" && e.DatasourceUID == byType["tempo"])
			}
			if !ok {
				t.Errorf("Prometheus data source: no exemplar link trace_id → Tempo (uid %q)", byType["tempo"])
			}
		case "tempo":
			if d.JSONData.TracesToProfiles.DatasourceUID == "" || d.JSONData.TracesToProfiles.DatasourceUID != byType["grafana-pyroscope-datasource"] {
				t.Errorf("Tempo data source: tracesToProfiles %q, want the Pyroscope data source", d.JSONData.TracesToProfiles.DatasourceUID)
			}
		}
	}
	for typ := range wantURL {
		t.Errorf("no %s data source provisioned", typ)
	}
}

// TestPrometheusConfig runs `promtool check config` on prometheus.yml laid
// out as in the container (rules/alerts.yml and admin_token beside it).
func TestPrometheusConfig(t *testing.T) {
	bin, err := exec.LookPath("promtool")
	if err != nil {
		const how = "promtool is not on PATH: install the Debian package `prometheus` " +
			"(apt-get install -y prometheus) or put Prometheus' promtool on PATH"
		if os.Getenv("CI") == "true" {
			t.Fatal(how) // .ci/run installs it
		}
		t.Skip(how)
	}
	dir := t.TempDir()
	copyFile(t, "prometheus/prometheus.yml", filepath.Join(dir, "prometheus.yml"))
	if err := os.Mkdir(filepath.Join(dir, "rules"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(root, "dashboards/prometheus/alerts.yml"), filepath.Join(dir, "rules", "alerts.yml"))
	if err := os.WriteFile(filepath.Join(dir, "admin_token"), []byte("test-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput()
	if err != nil {
		t.Errorf("promtool check config: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "rule") {
		t.Errorf("promtool did not check the rule files:\n%s", out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	raw, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDockerComposeConfig asks the docker CLI to validate compose.yaml too,
// where a docker CLI with the compose plugin is installed (no engine needed).
func TestDockerComposeConfig(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker CLI not on PATH; compose.yaml is still validated by compose-go above")
	}
	if err := exec.Command("docker", "compose", "version").Run(); err != nil {
		t.Skip("docker compose plugin not installed; compose.yaml is still validated by compose-go above")
	}
	cmd := exec.Command("docker", "compose", "-f", "compose.yaml", "config", "--quiet")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "ADMIN_TOKEN=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("docker compose config: %v\n%s", err, out)
	}
}

// The service image builds ./app with the repository's go.mod: every
// directory of the module that ./app's packages come from, and every local
// directory go.mod replaces a module with, must be in the build context
// (un-ignored) and copied into the build stage.
func TestDockerfileCopiesWhatAppBuildsFrom(t *testing.T) {
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	dockerfile, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	ignore, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	local := regexp.MustCompile(`(?m)^replace\s+\S+(?:\s+\S+)?\s+=>\s+\./(\S+)\s*$`)
	dirs := local.FindAllStringSubmatch(string(gomod), -1)
	if len(dirs) == 0 {
		t.Fatal("go.mod has no local replace (miniredis => ./third_party/miniredis expected)")
	}
	copied := regexp.MustCompile(`(?m)^COPY\s+(\S+)\s+\S+\s*$`).FindAllStringSubmatch(string(dockerfile), -1)
	unignored := regexp.MustCompile(`(?m)^!(\S+?)/?\s*$`).FindAllStringSubmatch(string(ignore), -1)
	covers := func(matches [][]string, dir string) bool {
		for _, m := range matches {
			p := strings.TrimSuffix(m[1], "/")
			if dir == p || strings.HasPrefix(dir, p+"/") {
				return true
			}
		}
		return false
	}
	need := map[string]string{} // dir → why
	for _, d := range dirs {
		need[strings.TrimSuffix(d[1], "/")] = "go.mod replaces a module with it"
	}
	out, err := exec.Command("go", "list", "-C", root, "-deps", "-f", "{{if .Module}}{{if .Module.Main}}{{.Dir}}{{end}}{{end}}", "./app").Output()
	if err != nil {
		t.Fatalf("go list -deps ./app: %v", err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(abs, dir)
		if err != nil {
			t.Fatal(err)
		}
		need[filepath.ToSlash(rel)] = "./app imports a package from it"
	}
	for dir, why := range need {
		if !covers(copied, dir) {
			t.Errorf("deploy/Dockerfile does not COPY %s (%s)", dir, why)
		}
		if !covers(unignored, dir) {
			t.Errorf("deploy/Dockerfile.dockerignore does not let %s into the build context (%s)", dir, why)
		}
	}
}
