package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warmpath/warmpath/internal/ctxtime"
)

// Paths of the service's public API, as DESIGN.md names them.
const (
	pathQuery  = "/api/hasNotEngine-ultra-fast"
	pathItems  = "/api/items"
	pathWarmup = "/api/user/warmup"
	pathLivez  = "/livez"
)

// Client talks to one warmpath deployment over HTTP: the public API at
// Target and the admin API at Admin. It is the only way the perf lab touches
// the service.
type Client struct {
	Target     string // e.g. http://127.0.0.1:8080
	Admin      string // e.g. http://127.0.0.1:9090
	AdminToken string // optional, sent as a bearer token to the admin API
	HTTP       *http.Client
}

// localClientFlags registers --target, --admin and --admin-token with a
// local stack's defaults; the returned func builds the client from them
// once fs is parsed.
func localClientFlags(fs *flag.FlagSet, getenv func(string) string) func() *Client {
	target := fs.String("target", "http://127.0.0.1:8080", "public API base URL")
	admin := fs.String("admin", "http://127.0.0.1:9090", "admin API base URL")
	adminToken := fs.String("admin-token", getenv("ADMIN_TOKEN"), "admin API bearer token (default $ADMIN_TOKEN)")
	return func() *Client { return NewClient(*target, *admin, *adminToken) }
}

// NewClient returns a client with a connection pool sized for provisioning.
func NewClient(target, admin, adminToken string) *Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{
		Target: strings.TrimRight(target, "/"), Admin: strings.TrimRight(admin, "/"), AdminToken: adminToken,
		HTTP: &http.Client{Transport: tr, Timeout: 30 * time.Second},
	}
}

// User is a provisioned user and its bearer token.
type User struct {
	ID    int64  `json:"id"`
	Token string `json:"token"`
}

// WarmupStatus is the part of GET /api/user/warmup the lab reads.
type WarmupStatus struct {
	State      string   `json:"state"`
	DurationMs *float64 `json:"durationMs"`
	Error      string   `json:"error"`
}

// SystemWarmup is the part of GET /admin/warmup the lab reads.
type SystemWarmup struct {
	State    string `json:"state"`
	HotUsers struct {
		Limit    int `json:"limit"`
		Found    int `json:"found"`
		Enqueued int `json:"enqueued"`
		Warm     int `json:"warm"`
		Skipped  int `json:"skipped"`
	} `json:"hotUsers"`
	Queue struct {
		Depth   int `json:"depth"`
		Workers int `json:"workers"`
		Running int `json:"running"`
	} `json:"queue"`
}

// busy reports whether warmup work is still under way: the system warmup
// has not finished, or warmup jobs are queued or running.
func (s SystemWarmup) busy() bool {
	return s.State == "idle" || s.State == "running" || s.Queue.Depth+s.Queue.Running > 0
}

// SyncStatus is GET /admin/sync.
type SyncStatus struct {
	PendingUsers            int64   `json:"pendingUsers"`
	OldestPendingAgeSeconds float64 `json:"oldestPendingAgeSeconds"`
	Triggered               int64   `json:"triggered"`
	LastBatch               *struct {
		Users      int       `json:"users"`
		DurationMs float64   `json:"durationMs"`
		Result     string    `json:"result"`
		At         time.Time `json:"at"`
	} `json:"lastBatch"`
}

// statusError is a non-expected HTTP status with the body's error.
type statusError struct {
	Op   string
	Code int
	Body string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s: HTTP %d: %s", e.Op, e.Code, strings.TrimSpace(e.Body))
}

// do sends a JSON request and decodes a JSON answer into out (when non-nil);
// any status other than want is an error.
func (c *Client) do(ctx context.Context, op, method, url, token string, in, out any, want int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s: encode: %w", op, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%s: read body: %w", op, err)
	}
	if resp.StatusCode != want {
		return &statusError{Op: op, Code: resp.StatusCode, Body: string(raw)}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s: decode: %w", op, err)
		}
	}
	return nil
}

// CreateUser creates a user through POST /admin/users; quota 0 keeps the
// plan's quota.
func (c *Client) CreateUser(ctx context.Context, name, plan string, quota int64) (User, error) {
	in := map[string]any{"name": name, "plan": plan}
	if quota > 0 {
		in["quota"] = quota
	}
	var u User
	err := c.do(ctx, "create user", http.MethodPost, c.Admin+"/admin/users", c.AdminToken, in, &u, http.StatusCreated)
	return u, err
}

// AddItems adds items to the user's set through POST /api/items, at most
// 1000 a call.
func (c *Client) AddItems(ctx context.Context, u User, items []string) error {
	for len(items) > 0 {
		n := min(len(items), 1000)
		if err := c.do(ctx, "add items", http.MethodPost, c.Target+pathItems, u.Token, map[string]any{"add": items[:n]}, nil, http.StatusOK); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}

// Query sends one has-not query and expects 200.
func (c *Client) Query(ctx context.Context, u User, items []string) error {
	return c.do(ctx, "query", http.MethodPost, c.Target+pathQuery, u.Token, map[string]any{"items": items}, nil, http.StatusOK)
}

// RequestWarmup sends POST /api/user/warmup and expects 202.
func (c *Client) RequestWarmup(ctx context.Context, u User) (WarmupStatus, error) {
	var out struct {
		WarmupStatus WarmupStatus `json:"warmupStatus"`
	}
	err := c.do(ctx, "request warmup", http.MethodPost, c.Target+pathWarmup, u.Token, nil, &out, http.StatusAccepted)
	return out.WarmupStatus, err
}

// Warmup reads GET /api/user/warmup.
func (c *Client) Warmup(ctx context.Context, u User) (WarmupStatus, error) {
	var out struct {
		WarmupStatus WarmupStatus `json:"warmupStatus"`
	}
	err := c.do(ctx, "warmup status", http.MethodGet, c.Target+pathWarmup, u.Token, nil, &out, http.StatusOK)
	return out.WarmupStatus, err
}

// WarmAndWait requests the user's warmup and polls its status until ready.
// A full queue (503) is retried; a failed warmup is an error.
func (c *Client) WarmAndWait(ctx context.Context, u User) error {
	for {
		st, err := c.RequestWarmup(ctx, u)
		var se *statusError
		if errors.As(err, &se) && se.Code == http.StatusServiceUnavailable {
			if err := ctxtime.Sleep(ctx, 50*time.Millisecond); err != nil {
				return fmt.Errorf("warm user %d: %w", u.ID, err)
			}
			continue
		}
		if err != nil {
			return err
		}
		for st.State != "ready" {
			if st.State == "failed" {
				return fmt.Errorf("warm user %d: warmup failed: %s", u.ID, st.Error)
			}
			if err := ctxtime.Sleep(ctx, 5*time.Millisecond); err != nil {
				return fmt.Errorf("warm user %d: still %s: %w", u.ID, st.State, err)
			}
			if st, err = c.Warmup(ctx, u); err != nil {
				return err
			}
		}
		return nil
	}
}

// SystemWarmup reads GET /admin/warmup.
func (c *Client) SystemWarmup(ctx context.Context) (SystemWarmup, error) {
	var s SystemWarmup
	err := c.do(ctx, "system warmup", http.MethodGet, c.Admin+"/admin/warmup", c.AdminToken, nil, &s, http.StatusOK)
	return s, err
}

// SyncStatus reads GET /admin/sync. A 503 (the store briefly unavailable
// to the status read) is retried a few times: the lab reads the status to
// time a flush, and one refused read is not a failed measurement.
func (c *Client) SyncStatus(ctx context.Context) (SyncStatus, error) {
	var s SyncStatus
	var err error
	for range 5 {
		err = c.do(ctx, "sync status", http.MethodGet, c.Admin+"/admin/sync", c.AdminToken, nil, &s, http.StatusOK)
		var se *statusError
		if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
			return s, err
		}
		if perr := ctxtime.Sleep(ctx, 200*time.Millisecond); perr != nil {
			return s, err
		}
	}
	return s, err
}

// TriggerSync sends POST /admin/sync and expects 202.
func (c *Client) TriggerSync(ctx context.Context) error {
	return c.do(ctx, "trigger sync", http.MethodPost, c.Admin+"/admin/sync", c.AdminToken, nil, nil, http.StatusAccepted)
}

// WaitQuiet polls GET /admin/warmup until no warmup work is left, so a
// measurement does not share the CPU with leftover provisioning warmups.
func (c *Client) WaitQuiet(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		s, err := c.SystemWarmup(ctx)
		if err == nil && !s.busy() {
			return nil
		}
		if err := ctxtime.Sleep(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("wait for warmup queue to drain (depth %d, running %d): %w", s.Queue.Depth, s.Queue.Running, err)
		}
	}
}

// WaitSynced forces a sync and polls GET /admin/sync until nothing is pending.
func (c *Client) WaitSynced(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.TriggerSync(ctx); err != nil {
		return err
	}
	for {
		s, err := c.SyncStatus(ctx)
		if err == nil && s.PendingUsers == 0 {
			return nil
		}
		if err := ctxtime.Sleep(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("wait for usage sync (pending %d): %w", s.PendingUsers, err)
		}
	}
}

// ProvisionSpec says what each provisioned user gets.
type ProvisionSpec struct {
	Prefix string // user names are Prefix-<n>
	Plan   string
	Quota  int64 // 0: the plan's
	Items  int   // items added through POST /api/items
	Query  bool  // send one query (makes the user active and leaves a pending delta)
	Warm   bool  // request warmup and wait until ready
}

// Provision creates n users with the given number of concurrent workers.
func (c *Client) Provision(ctx context.Context, n, workers int, spec ProvisionSpec) ([]User, error) {
	users := make([]User, n)
	items := itemNames(spec.Items)
	err := parallel(ctx, n, workers, func(ctx context.Context, i int) error {
		u, err := c.CreateUser(ctx, spec.Prefix+"-"+strconv.Itoa(i), spec.Plan, spec.Quota)
		if err != nil {
			return err
		}
		if len(items) > 0 {
			if err := c.AddItems(ctx, u, items); err != nil {
				return err
			}
		}
		if spec.Query {
			if err := c.Query(ctx, u, queryItems(i, 4)); err != nil {
				return err
			}
		}
		if spec.Warm {
			if err := c.WarmAndWait(ctx, u); err != nil {
				return err
			}
		}
		users[i] = u
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("provision %d users: %w", n, err)
	}
	return users, nil
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error
// (which cancels the rest).
func parallel(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(min(workers, n), 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// itemNames is a user's item set: item-0 … item-(n-1).
func itemNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "item-" + strconv.Itoa(i)
	}
	return out
}

// queryItems is a query body's items: half present in a user's set (for
// sets of at least k/2 items), half absent, varying with seed.
func queryItems(seed, k int) []string {
	out := make([]string, k)
	for j := range out {
		if j%2 == 0 {
			out[j] = "item-" + strconv.Itoa((seed+j)%64)
		} else {
			out[j] = "absent-" + strconv.Itoa(seed*k+j)
		}
	}
	return out
}
