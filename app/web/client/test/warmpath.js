// Starts a real warmpath for the integration tests: builds the binary from
// the repository once, runs it on the embedded default (in-memory store and
// in-process Valkey; no DATABASE_URL/VALKEY_URL), and offers the admin API
// (users, metrics) the tests provision through.
import { spawn, execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

/** The origin the test server allows through CORS (a page on another origin). */
export const corsOrigin = "http://app.example.test";

/** The repository root: app/web/client/test → four levels up. */
export const repoRoot = fileURLToPath(new URL("../../../../", import.meta.url));

/**
 * Builds ./app (or uses the binary named by WARMPATH_BIN) and starts it on
 * free loopback ports. Resolves when /readyz answers 200. Call stop() at the
 * end.
 */
export async function startWarmpath() {
  const dir = await mkdtemp(join(tmpdir(), "warmpath-client-test-"));
  let bin = process.env.WARMPATH_BIN;
  if (!bin) {
    bin = join(dir, "warmpath");
    try {
      await promisify(execFile)("go", ["build", "-o", bin, "./app"], { cwd: repoRoot, maxBuffer: 16 << 20 });
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  const env = {
    ...process.env,
    HTTP_ADDR: "127.0.0.1:0",
    ADMIN_ADDR: "127.0.0.1:0",
    LOG_LEVEL: "warn",
    SYSTEM_WARMUP_DELAY: "10ms",
    CORS_ORIGINS: corsOrigin,
  };
  delete env.DATABASE_URL; // CI sets these for the Go tests; these tests use the embedded default
  delete env.VALKEY_URL;
  const proc = spawn(bin, [], { env, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  proc.stderr.setEncoding("utf8").on("data", (d) => {
    stderr = (stderr + d).slice(-20_000);
  });
  const exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));

  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(t);
    }
    await rm(dir, { recursive: true, force: true });
  };

  try {
    const [http, admin] = await new Promise((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error("warmpath printed no serving line within 30s")), 30_000);
      proc.stdout.setEncoding("utf8").on("data", (d) => {
        out += d;
        const m = /serving http:\/\/(\S+) admin http:\/\/(\S+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve([m[1], m[2]]);
        }
      });
      exited.then(({ code, signal }) => reject(new Error(`warmpath exited (${code ?? signal}) before serving:\n${stderr}`)));
    });
    const w = { baseUrl: `http://${http}`, adminUrl: `http://${admin}`, stop, stderr: () => stderr };
    const deadline = Date.now() + 30_000;
    for (;;) {
      const ok = await fetch(`${w.baseUrl}/readyz`).then((r) => r.status == 200, () => false);
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`/readyz not 200 within 30s:\n${stderr}`);
      await sleep(50);
    }
    return w;
  } catch (e) {
    await stop();
    throw e;
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** POST /admin/users; resolves {id, token}. */
export async function createUser(w, body) {
  const res = await fetch(`${w.adminUrl}/admin/users`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (res.status != 201) throw new Error(`POST /admin/users ${JSON.stringify(body)}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/**
 * The sum of the samples of a Prometheus counter whose labels include all of
 * want (0 when none exist yet), read from the admin listener's /metrics.
 */
export async function metric(w, name, want) {
  const res = await fetch(`${w.adminUrl}/metrics`);
  if (res.status != 200) throw new Error(`GET /metrics: ${res.status}`);
  let sum = 0;
  for (const line of (await res.text()).split("\n")) {
    // name{labels} value [timestamp] [# exemplar]
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*?)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] != name) continue;
    const labels = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(want).every(([k, v]) => labels[k] === v)) sum += Number(m[3]);
  }
  return sum;
}
