package config

import (
	"encoding/json"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/warmpath/warmpath/app/internal/domain"
)

func getenv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	c, err := Load(getenv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != ":8080" || c.AdminAddr != "127.0.0.1:9090" || c.SyncInterval != time.Second ||
		c.SystemWarmupDelay != 100*time.Millisecond || c.WarmupStrategy != "async" || c.UsageFailureMode != "open" ||
		c.SystemWarmupHotUsers != 1000 || !c.AutoMigrate {
		t.Fatalf("unexpected defaults: %+v", c)
	}
	want := []domain.Plan{
		{Name: "free", Quota: 1000, Period: domain.PeriodDay, MaxItems: 10000},
		{Name: "pro", Quota: 1000000, Period: domain.PeriodMonth, MaxItems: 1000000},
	}
	if d := cmp.Diff(want, c.Plans); d != "" {
		t.Fatalf("plans (-want +got):\n%s", d)
	}
	if c.ThresholdTotal != 3*time.Second || c.ThresholdAuth != 500*time.Millisecond ||
		c.ThresholdDB != time.Second || c.ThresholdUsageCheck != 200*time.Millisecond {
		t.Fatalf("thresholds: %+v", c)
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	cases := []struct{ name, v string }{
		{"HTTP_ADDR", "nope"},
		{"ADMIN_ADDR", "127.0.0.1:99999"},
		{"SYNC_INTERVAL", "-1s"},
		{"SYNC_INTERVAL", "soon"},
		{"SYNC_PACE", "-1"},
		{"DB_TIMEOUT", "0s"},
		{"SYSTEM_WARMUP_DELAY", "-5ms"},
		{"WARMUP_WORKERS", "0"},
		{"WARMUP_QUEUE_SIZE", "many"},
		{"WARMUP_STRATEGY", "eager"},
		{"USAGE_FAILURE_MODE", "maybe"},
		{"LOG_FORMAT", "xml"},
		{"LOG_LEVEL", "loud"},
		{"AUTO_MIGRATE", "perhaps"},
		{"VALKEY_URL", "http://x"},
		{"PLANS", "free:10/week:5"},
		{"PLANS", "free:10/day:5,free:1/day:1"},
	}
	for _, tc := range cases {
		t.Run(tc.name+"="+tc.v, func(t *testing.T) {
			_, err := Load(getenv(map[string]string{tc.name: tc.v}))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want *Error, got %v", err)
			}
			if ce.Var != tc.name {
				t.Fatalf("error names %q, want %q (%v)", ce.Var, tc.name, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("message must be one line: %q", err)
			}
		})
	}
}

func TestSecretsMasked(t *testing.T) {
	c, err := Load(getenv(map[string]string{
		"ADMIN_TOKEN":  "s3cr3t-admin",
		"DATABASE_URL": "postgres://u:hunter2@db:5432/x?sslmode=disable",
		"VALKEY_URL":   "redis://:valpass@cache:6379/0",
	}))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("config", "config", c)
	out := b.String()
	for _, secret := range []string{"s3cr3t-admin", "hunter2", "valpass"} {
		if strings.Contains(out, secret) {
			t.Fatalf("secret %q in %s", secret, out)
		}
	}
	if !strings.Contains(out, "db:5432") || !strings.Contains(out, "cache:6379") {
		t.Fatalf("targets should stay recognisable: %s", out)
	}
}

// TestLogValueNamesEveryVariable: the start-up log has every variable, by
// its name, with its value (here: the defaults).
func TestLogValueNamesEveryVariable(t *testing.T) {
	c, err := Load(getenv(map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8,10.1.0.0/16"}))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("config", "config", c)
	var line struct{ Config map[string]any }
	if err := json.Unmarshal([]byte(b.String()), &line); err != nil {
		t.Fatal(err)
	}
	fields := reflect.VisibleFields(reflect.TypeFor[Config]())
	if len(line.Config) != len(fields) {
		t.Errorf("the log has %d settings, Config %d fields: %v", len(line.Config), len(fields), line.Config)
	}
	for k, want := range map[string]any{
		"HTTP_ADDR": ":8080", "AUTO_MIGRATE": true, "DB_MAX_CONNS": 16.0, "SYNC_PACE": 1.0, "VALKEY_TIMEOUT": 5e8,
		"TRUSTED_PROXIES": "10.0.0.0/8,10.1.0.0/16", "PLANS": "free:1000/day:10000,pro:1000000/month:1000000",
	} {
		if got := line.Config[k]; got != want {
			t.Errorf("%s = %#v in the log, want %#v", k, got, want)
		}
	}
}

func TestAdminNeedsToken(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9090": false, "localhost:9090": false, "[::1]:9090": false,
		":9090": true, "0.0.0.0:9090": true, "10.0.0.5:9090": true,
	} {
		if got := (Config{AdminAddr: addr}).AdminNeedsToken(); got != want {
			t.Errorf("%s: got %v want %v", addr, got, want)
		}
	}
}

func TestAdminTokenRequiredBeyondLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr, token string
		ok          bool
	}{
		{"127.0.0.1:9090", "", true},
		{"0.0.0.0:9090", "", false},
		{":9090", "", false},
		{":9090", "secret", true},
	} {
		_, err := Load(func(k string) string {
			return map[string]string{"ADMIN_ADDR": tc.addr, "ADMIN_TOKEN": tc.token}[k]
		})
		var ce *Error
		switch {
		case tc.ok && err != nil:
			t.Errorf("ADMIN_ADDR=%s ADMIN_TOKEN=%q: %v", tc.addr, tc.token, err)
		case !tc.ok && (!errors.As(err, &ce) || ce.Var != "ADMIN_TOKEN"):
			t.Errorf("ADMIN_ADDR=%s without ADMIN_TOKEN: got %v, want an ADMIN_TOKEN error", tc.addr, err)
		}
	}
}
