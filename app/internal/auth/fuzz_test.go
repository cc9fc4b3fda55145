package auth

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/warmpath/warmpath/app/internal/apperr"
)

// corpusAuthorizations are the Authorization values of the bad-input corpus
// (app/testdata/badinput), unrendered: the fuzz seeds.
func corpusAuthorizations(f *testing.F) []string {
	paths, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "badinput", "*.txtar"))
	if len(paths) == 0 {
		f.Fatal("no bad-input corpus found")
	}
	var out []string
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range txtar.Parse(raw).Files {
			sc := bufio.NewScanner(bytes.NewReader(file.Data))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "Authorization:"); ok {
					out = append(out, v)
				}
			}
		}
	}
	return out
}

// bearerChecks are the token parsers fuzzed, each with the properties it
// must hold for any header. A JWT parser joins with its own check.
var bearerChecks = map[string]func(t *testing.T, header string){
	"opaque": checkOpaqueBearer,
}

// checkOpaqueBearer: ParseBearer never panics; it refuses with
// missing_token or malformed_token only; what it accepts is a well-formed
// warmpath token, found in the header as sent.
func checkOpaqueBearer(t *testing.T, header string) {
	tok, err := ParseBearer(header)
	if err != nil {
		if c := apperr.CodeOf(err); c != apperr.MissingToken && c != apperr.MalformedToken {
			t.Fatalf("ParseBearer(%q): code %s", header, c)
		}
		return
	}
	if !WellFormed(tok) || !strings.HasPrefix(tok, Prefix) || !strings.Contains(header, tok) || strings.ContainsAny(tok, " \t\r\n") {
		t.Fatalf("ParseBearer(%q) accepted %q", header, tok)
	}
	if Hash(tok) != Hash(strings.Clone(tok)) {
		t.Fatal("hash not stable")
	}
}

func FuzzParseBearer(f *testing.F) {
	for _, h := range corpusAuthorizations(f) {
		f.Add(h)
	}
	good, _, _ := NewToken()
	f.Add("Bearer " + good)
	f.Add("bearer  " + good + " ")
	f.Fuzz(func(t *testing.T, header string) {
		for _, check := range bearerChecks {
			check(t, header)
		}
	})
}
