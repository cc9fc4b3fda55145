package main

// The bad-input corpus (app/testdata/badinput/*.txtar): hostile requests,
// each sent raw over its own connection, each answered with its documented
// 4xx and code, none counted, none changing the item set, and the service
// healthy after each. See app/testdata/badinput/README.md for the format.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/tools/txtar"
)

// badCase is one request of the corpus.
type badCase struct {
	name       string // file:case
	wantStatus int
	wantCode   string
	needs      string // a server feature the case needs ("" for none)
	gzipBody   bool
	text       string // the request template: request line, headers, blank line, body
}

// loadBadInput reads every case of the corpus.
func loadBadInput(t testing.TB) []badCase {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "badinput", "*.txtar"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no corpus files: %v", err)
	}
	var cases []badCase
	for _, p := range paths {
		ar, err := txtar.ParseFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range ar.Files {
			c, err := parseBadCase(strings.TrimSuffix(filepath.Base(p), ".txtar")+":"+f.Name, string(f.Data))
			if err != nil {
				t.Fatalf("%s: %s: %v", p, f.Name, err)
			}
			cases = append(cases, c)
		}
	}
	return cases
}

func parseBadCase(name, data string) (badCase, error) {
	c := badCase{name: name}
	for strings.HasPrefix(data, "# ") {
		line, rest, _ := strings.Cut(data, "\n")
		data = rest
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "# "), ":")
		if !ok {
			return c, fmt.Errorf("meta line %q is not \"# key: value\"", line)
		}
		v = strings.TrimSpace(v)
		switch k {
		case "want":
			st, code, _ := strings.Cut(v, " ")
			n, err := strconv.Atoi(st)
			if err != nil || code == "" {
				return c, fmt.Errorf("want %q is not \"<status> <code>\"", v)
			}
			c.wantStatus, c.wantCode = n, code
		case "needs":
			c.needs = v
		case "body":
			if v != "gzip" {
				return c, fmt.Errorf("body %q: only gzip is known", v)
			}
			c.gzipBody = true
		default:
			return c, fmt.Errorf("unknown meta key %q", k)
		}
	}
	if c.wantStatus < 400 || c.wantStatus > 499 {
		return c, fmt.Errorf("want a 4xx, got %d", c.wantStatus)
	}
	c.text = data
	return c, nil
}

// badInputData is what a case's template can name.
type badInputData struct {
	Token   string // the test user's live token
	Revoked string // a revoked token of the same user
	Expired string // an expired token of the same user
	Unknown string // a well-formed token nobody has
}

var badInputFuncs = template.FuncMap{"repeat": func(n int, s string) string { return strings.Repeat(s, n) }}

// render turns a case into the bytes sent: CRLF line ends in the head, a
// Host and "Connection: close", and Content-Length unless the case frames
// the body itself (Content-Length or Transfer-Encoding).
func (c badCase) render(host string, data badInputData) ([]byte, error) {
	tpl, err := template.New(c.name).Funcs(badInputFuncs).Parse(c.text)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	if err := tpl.Execute(&b, data); err != nil {
		return nil, err
	}
	head, body, _ := strings.Cut(b.String(), "\n\n")
	body = strings.TrimSuffix(body, "\n")
	if c.gzipBody {
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		_, _ = w.Write([]byte(body))
		_ = w.Close()
		body = z.String()
	}
	lines := strings.Split(head, "\n")
	if len(strings.Fields(lines[0])) == 2 {
		lines[0] += " HTTP/1.1"
	}
	framed := false
	for _, l := range lines[1:] {
		k, _, _ := strings.Cut(l, ":")
		if strings.EqualFold(k, "Content-Length") || strings.EqualFold(k, "Transfer-Encoding") {
			framed = true
		}
	}
	lines = append(lines, "Host: "+host, "Connection: close")
	if !framed && (body != "" || strings.HasPrefix(lines[0], "POST") || strings.HasPrefix(lines[0], "PUT")) {
		lines = append(lines, "Content-Length: "+strconv.Itoa(len(body)))
	}
	return []byte(strings.Join(lines, "\r\n") + "\r\n\r\n" + body), nil
}

// sendRaw writes raw to host on a fresh connection and reads one answer.
func sendRaw(host string, raw []byte) (*http.Response, []byte, error) {
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	// The server may answer (413) and close before it has read everything:
	// write concurrently, and ignore a write cut short.
	go func() { _, _ = conn.Write(raw) }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func TestBadInputCorpus(t *testing.T) {
	cases := loadBadInput(t)
	if len(cases) < 100 {
		t.Fatalf("the corpus has %d cases, want at least 100", len(cases))
	}
	env := backendEnv(t)
	env["AUTH_FAILURE_RATE"] = "0" // the corpus sends many bad tokens from one address; the limit has its own test
	in := start(t, env)
	host := strings.TrimPrefix(in.base, "http://")

	u := in.newUser(t, "free", ptr[int64](100000))
	if r := in.items(t, u.token, []string{"keep"}, nil); r.status != 200 {
		t.Fatalf("items: %d %s", r.status, r.raw)
	}
	expired, revoked := in.deadTokens(t, u)
	data := badInputData{Token: u.token, Revoked: revoked, Expired: expired,
		Unknown: "wp_" + strings.Repeat("Q", 43)}
	features := map[string]string{"idempotency-key-validation": idempotencyKeyValidated(t, in)}

	used := 0.0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if why := features[c.needs]; c.needs != "" && why != "" {
				t.Skip(why)
			}
			raw, err := c.render(host, data)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			resp, body, err := sendRaw(host, raw)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			var got struct {
				Error     struct{ Code, Message string }
				RequestID string `json:"requestId"`
			}
			_ = json.Unmarshal(body, &got)
			if resp.StatusCode != c.wantStatus || got.Error.Code != c.wantCode {
				t.Fatalf("got %d %q, want %d %q: %s", resp.StatusCode, got.Error.Code, c.wantStatus, c.wantCode, tail(string(body), 300))
			}
			if got.Error.Message == "" || got.RequestID == "" || resp.Header.Get("X-Request-Id") != got.RequestID {
				t.Fatalf("error without message or request id: %v %s", resp.Header, body)
			}
			if req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw))); err == nil {
				req.URL = &url.URL{Scheme: "http", Host: host, Path: req.URL.Path}
				resp.Body = io.NopCloser(bytes.NewReader(body))
				if err := validateAPI(req, resp, body); err != nil {
					t.Errorf("answer not as openapi.json documents: %v", err)
				}
			}

			// Nothing counted, nothing changed, still healthy.
			used++
			r := in.query(t, u.token, "keep", "z")
			if r.status != 200 {
				t.Fatalf("a valid query after the case: %d %s", r.status, r.raw)
			}
			if got := r.body["usage"].(map[string]any)["used"]; got != used {
				t.Fatalf("usage after the case is %v, want %v: the bad request was counted", got, used)
			}
			if d := cmp.Diff([]any{"z"}, r.body["missing"]); d != "" {
				t.Fatalf("the item set changed (-want +got):\n%s", d)
			}
			if r := call(t, "GET", in.base+"/readyz", "", nil); r.status != 200 {
				t.Fatalf("/readyz after the case: %d %s", r.status, r.raw)
			}
		})
	}
}

// idempotencyKeyValidated probes whether the server refuses a bad
// Idempotency-Key yet: "" if it does, else why the cases that need it skip.
// The probe is a separate user's query, so a server that ignores the header
// counts it against nobody the corpus checks.
func idempotencyKeyValidated(t *testing.T, in *instance) string {
	t.Helper()
	p := in.newUser(t, "free", nil)
	r := call(t, "POST", in.base+queryRoute, p.token, map[string]any{"items": []string{"a"}}, "Idempotency-Key", strings.Repeat("k", 256))
	if r.status == 400 && r.errCode() == "invalid_idempotency_key" {
		return ""
	}
	return fmt.Sprintf("the server does not validate Idempotency-Key yet (a 256-character key got %d %q, want 400 invalid_idempotency_key)", r.status, r.errCode())
}
