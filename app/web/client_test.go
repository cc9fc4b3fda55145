package web_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/warmpath/warmpath/app/web"
)

// TestClientBuildIsCurrent runs `npm run check` in client/: it regenerates the
// types from openapi.json and rebuilds the client into a temporary directory,
// and fails when the committed generated/schema.d.ts or dist/ differ. So a change of
// the OpenAPI document or of the client's source that was not rebuilt and
// committed fails here, not in a browser. Without node_modules (npm ci not
// run) it skips on a developer machine and fails in CI.
func TestClientBuildIsCurrent(t *testing.T) {
	dir := filepath.Join("client")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "typescript")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("client/node_modules is missing in CI: run `npm ci` in app/web/client first (%v)", err)
		}
		t.Skip("client/node_modules missing: run `npm ci` in app/web/client to check the client's build")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("node_modules is there but npm is not on PATH: %v", err)
	}
	cmd := exec.Command(npm, "run", "--silent", "check")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm run check: %v\n%s", err, out)
	}
}

// TestClientBundleIsSelfContained: the demo page imports the embedded
// client/dist/index.js as /assets/client.js, an ES module with nothing to
// resolve, so it must not import anything and must export createClient.
func TestClientBundleIsSelfContained(t *testing.T) {
	embedded, err := fs.ReadFile(web.Files, "client/dist/index.js")
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(filepath.Join("client", "dist", "index.js"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(embedded, onDisk) {
		t.Fatal("web.Files holds another client/dist/index.js than the file on disk")
	}
	// Static `import … from`, bare `import "x"`, and dynamic `import(`.
	if m := regexp.MustCompile(`(?m)^\s*import[\s{*"']|\bimport\s*\(|^\s*export\s[^;]*\sfrom\s`).Find(embedded); m != nil {
		t.Fatalf("client/dist/index.js imports something (%q): it must be one self-contained ES module", m)
	}
	if !regexp.MustCompile(`(?m)^export function createClient\(`).Match(embedded) {
		t.Fatal("client/dist/index.js does not export createClient")
	}
	if !regexp.MustCompile(`(?m)^export class WarmpathClient\b`).Match(embedded) {
		t.Fatal("client/dist/index.js does not export WarmpathClient")
	}
}
