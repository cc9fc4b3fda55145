// Fails when the committed generated types (generated/schema.d.ts) or the committed
// build (dist/) are not what a fresh `npm run gen` and `npm run build` give:
// regenerates and rebuilds into a temporary directory and compares bytes.
// app/web/client_test.go runs this, so a stale client fails `go test`.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const tmp = mkdtempSync(join(tmpdir(), "warmpath-client-check-"));
const problems = [];
const same = (a, b) => {
  try {
    return readFileSync(a).equals(readFileSync(b));
  } catch {
    return false;
  }
};

try {
  // 1. Types from the OpenAPI document.
  const gen = join(dirname(require.resolve("openapi-typescript/package.json")), "bin", "cli.js");
  execFileSync(process.execPath, [gen, join(root, "..", "openapi.json"), "-o", join(tmp, "schema.d.ts")], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  if (!same(join(tmp, "schema.d.ts"), join(root, "generated", "schema.d.ts"))) {
    problems.push("generated/schema.d.ts differs from the types generated from ../openapi.json: run `npm run gen && npm run build` and commit");
  }

  // 2. The build, from the committed sources.
  const out = join(tmp, "dist");
  execFileSync(process.execPath, [join(root, "scripts", "build.mjs"), out], { stdio: "inherit" });
  const fresh = readdirSync(out).sort();
  let committed = [];
  try {
    committed = readdirSync(join(root, "dist")).sort();
  } catch {}
  for (const f of new Set([...fresh, ...committed])) {
    if (!same(join(out, f), join(root, "dist", f))) {
      problems.push(`dist/${f} differs from a fresh build: run \`npm run build\` and commit dist/`);
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

if (problems.length) {
  for (const p of problems) console.error("check: " + p);
  process.exit(1);
}
console.log("check: generated/schema.d.ts and dist/ are up to date");
