// Integration tests of the built client (dist/) against a real warmpath,
// built from this repository and started on the embedded default.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";

import { createClient, WarmpathError } from "../dist/index.js";
import { corsOrigin, createUser, metric, sleep, startWarmpath } from "./warmpath.js";

/** @type {Awaited<ReturnType<typeof startWarmpath>>} */
let w;

before(
  async () => {
    w = await startWarmpath();
  },
  { timeout: 600_000 }, // the first `go build` of a clean checkout takes minutes on 2 cores
);

after(async () => {
  await w?.stop();
});

/** A new user of plan pro (or as given) and a client for it. */
async function newClient(extra = {}) {
  const u = await createUser(w, { name: "client-test", plan: "pro", ...extra });
  return { user: u, client: createClient({ baseUrl: w.baseUrl, token: u.token }) };
}

/** Polls warmupStatus until the state is ready; fails on failed or after 30 s. */
async function waitReady(client) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const s = await client.warmupStatus();
    if (s.state == "ready") return s;
    assert.notEqual(s.state, "failed", `warmup failed: ${JSON.stringify(s)}`);
    assert.ok(Date.now() < deadline, `warmup not ready within 30s: ${JSON.stringify(s)}`);
    await sleep(20);
  }
}

/** Rejection of p, asserted to be a WarmpathError. */
async function warmpathError(p) {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof WarmpathError, `not a WarmpathError: ${e}`);
    return e;
  }
  assert.fail("expected a WarmpathError");
}

const itemsHits = () => metric(w, "warmpath_cache_requests_total", { cache: "items", result: "hit" });
const itemsMisses = () => metric(w, "warmpath_cache_requests_total", { cache: "items", result: "miss" });

describe("against a real warmpath", () => {
  it("changeItems adds and removes, and query answers the missing items with usage, timing and rateLimit", async () => {
    const { client } = await newClient();
    const ch = await client.changeItems({ add: ["https://example.com/a", "https://example.com/b", "https://example.com/c"] });
    assert.deepEqual([ch.added, ch.removed, ch.total], [3, 0, 3]);
    assert.equal(ch.meta.status, 200);
    assert.match(ch.meta.requestId, /./);
    assert.match(ch.meta.idempotencyKey, /./);
    const ch2 = await client.changeItems({ add: ["https://example.com/d"], remove: ["https://example.com/b", "https://example.com/nope"] });
    assert.deepEqual([ch2.added, ch2.removed, ch2.total], [1, 1, 3]);

    const r = await client.query(["https://example.com/a", "https://example.com/b", "https://example.com/new", "https://example.com/new"]);
    assert.deepEqual(r.missing, ["https://example.com/b", "https://example.com/new"]);
    assert.equal(r.checked, 4);
    assert.equal(r.usage.used, 1);
    assert.equal(r.usage.limit, 1_000_000);
    assert.equal(r.usage.remaining, 999_999);
    assert.ok(!Number.isNaN(Date.parse(r.usage.resetAt)), r.usage.resetAt);

    const { meta } = r;
    assert.equal(meta.status, 200);
    assert.match(meta.requestId, /./);
    assert.equal(meta.replayed, false);
    for (const phase of ["auth", "usage", "query", "total"]) {
      assert.equal(typeof meta.timing[phase], "number", `Server-Timing has ${phase}: ${JSON.stringify(meta.timing)}`);
    }
    for (const [phase, ms] of Object.entries(meta.timing)) {
      assert.ok(ms >= 0 && ms <= meta.timing.total, `${phase} ${ms} ms within total ${meta.timing.total} ms`);
    }
    assert.equal(meta.rateLimit?.limit, 1_000_000);
    assert.equal(meta.rateLimit?.remaining, 999_999);
    assert.ok(meta.rateLimit.windowSeconds > 0, JSON.stringify(meta.rateLimit));
    assert.ok(meta.rateLimit.resetSeconds >= 0 && meta.rateLimit.resetSeconds <= meta.rateLimit.windowSeconds, JSON.stringify(meta.rateLimit));
  });

  it("warmup() resolves a status, and never rejects with a bad token or an unreachable baseUrl", async () => {
    const { client } = await newClient();
    const s = await client.warmup();
    assert.ok(["queued", "running", "ready"].includes(s?.state), JSON.stringify(s));
    assert.ok(s.parts.items && s.parts.usage && s.parts.session);

    const badToken = createClient({ baseUrl: w.baseUrl, token: "wp_not-a-real-token-at-all-0000000000000000" });
    assert.equal(await badToken.warmup(), undefined);
    const noToken = createClient({ baseUrl: w.baseUrl, token: () => undefined });
    assert.equal(await noToken.warmup(), undefined);
    // Port 1 on loopback: nothing listens, the connection is refused.
    const unreachable = createClient({ baseUrl: "http://127.0.0.1:1", token: "wp_x" });
    assert.equal(await unreachable.warmup(), undefined);
    assert.equal(await unreachable.ensureWarm(), undefined);
    const e = await warmpathError(unreachable.query(["a"]));
    assert.equal(e.code, "network_error");
    assert.equal(e.status, 0);
  });

  it("ensureWarm warms a cold user, and does not POST again once it is ready", async () => {
    const u = await createUser(w, { name: "ensure", plan: "pro" });
    const methods = [];
    const client = createClient({
      baseUrl: w.baseUrl,
      token: u.token,
      fetch: (url, init) => {
        methods.push(init?.method ?? "GET");
        return fetch(url, init);
      },
    });
    const first = await client.ensureWarm();
    assert.deepEqual(methods, ["GET", "POST"], "idle user: status, then warmup");
    assert.ok(["queued", "running", "ready"].includes(first?.state), JSON.stringify(first));
    await waitReady(client);
    methods.length = 0;
    const again = await client.ensureWarm();
    assert.equal(again?.state, "ready");
    assert.deepEqual(methods, ["GET"], "a ready user is not warmed again");
  });

  it("errors: 401 with its code, 400 invalid_items, 429 quota_exceeded with retryAfter", async () => {
    const unknown = createClient({ baseUrl: w.baseUrl, token: "wp_not-a-real-token-at-all-0000000000000000" });
    let e = await warmpathError(unknown.query(["a"]));
    assert.equal(e.status, 401);
    assert.equal(e.code, "invalid_token");
    assert.match(e.requestId, /./);
    e = await warmpathError(createClient({ baseUrl: w.baseUrl, token: () => undefined }).warmupStatus());
    assert.equal(e.status, 401);
    assert.equal(e.code, "missing_token");

    const { client } = await newClient();
    e = await warmpathError(client.query([]));
    assert.equal(e.status, 400);
    assert.equal(e.code, "invalid_items");
    e = await warmpathError(client.changeItems({ add: ["x".repeat(257)] }));
    assert.equal(e.status, 400);
    assert.equal(e.code, "invalid_items");

    const limited = await newClient({ quota: 1 });
    const ok = await limited.client.query(["a"]);
    assert.equal(ok.usage.remaining, 0);
    e = await warmpathError(limited.client.query(["a"], { idempotencyKey: "retry-me-1" }));
    assert.equal(e.status, 429);
    assert.equal(e.code, "quota_exceeded");
    assert.ok(Number.isInteger(e.retryAfter) && e.retryAfter > 0, `retryAfter ${e.retryAfter}`);
    assert.equal(e.idempotencyKey, "retry-me-1");
    assert.match(e.requestId, /./);
  });

  it("the first query after warmup() on a cold user with 10,000 items is answered warm", async () => {
    const chunk = (prefix, n) => Array.from({ length: n }, (_, i) => `https://example.com/${prefix}/${i}`);

    // Control: items written through the API do not warm the cache (the
    // engine mirrors a change only into a set that is already cached), so a
    // user that was not warmed is answered from the store: a miss.
    const control = await newClient();
    await control.client.changeItems({ add: chunk("control", 1000) });
    let [hits, misses] = [await itemsHits(), await itemsMisses()];
    await control.client.query(["https://example.com/control/1", "https://example.com/control/new"]);
    assert.equal(await itemsMisses(), misses + 1, "the control user's first query is a cache miss: changeItems did not warm it");
    assert.equal(await itemsHits(), hits, "the control user's first query is not a hit");

    // The user under test: cold, 10,000 items in chunks of 1,000.
    const { client } = await newClient();
    const all = chunk("warm", 10_000);
    for (let i = 0; i < all.length; i += 1000) {
      const r = await client.changeItems({ add: all.slice(i, i + 1000) });
      assert.equal(r.total, i + 1000);
    }
    const before = await client.warmupStatus();
    assert.equal(before.state, "idle", "the user is cold before warmup()");

    // Login: fire the warmup without awaiting it, as an app does…
    const fired = client.warmup();
    // …then (in this test) wait until it is ready.
    assert.ok((await fired) !== undefined, "warmup accepted");
    const ready = await waitReady(client);
    assert.equal(ready.parts.items.state, "ready", JSON.stringify(ready));

    [hits, misses] = [await itemsHits(), await itemsMisses()];
    const firstQueries = await metric(w, "warmpath_first_query_total", { warmup: "ready" });
    const r = await client.query(["https://example.com/warm/0", "https://example.com/warm/9999", "https://example.com/warm/new"]);
    assert.deepEqual(r.missing, ["https://example.com/warm/new"]);
    assert.equal(await itemsHits(), hits + 1, "the first query is a cache hit");
    assert.equal(await itemsMisses(), misses, "the first query is not a cache miss");
    assert.equal(
      await metric(w, "warmpath_first_query_total", { warmup: "ready" }),
      firstQueries + 1,
      'counted as the first query after a login warmup, with warmup="ready"',
    );
  });

  it("the server serves this build at /assets/client.js, importable as an ES module on its own", async () => {
    const res = await fetch(`${w.baseUrl}/assets/client.js`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /javascript/);
    const served = Buffer.from(await res.arrayBuffer());
    const built = await readFile(new URL("../dist/index.js", import.meta.url));
    assert.ok(served.equals(built), "/assets/client.js is dist/index.js (rebuild the binary after npm run build)");
    // A data: URL module can import nothing relative: it loads only if self-contained.
    const mod = await import(`data:text/javascript;base64,${served.toString("base64")}`);
    assert.equal(typeof mod.createClient, "function");
  });

  it("CORS lets a page on another origin send what the client sends and read what it reads", async () => {
    const pre = await fetch(`${w.baseUrl}/api/hasNotEngine-ultra-fast`, {
      method: "OPTIONS",
      headers: {
        origin: corsOrigin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,idempotency-key",
      },
    });
    assert.ok(pre.status >= 200 && pre.status < 300, `preflight ${pre.status}`);
    assert.equal(pre.headers.get("access-control-allow-origin"), corsOrigin);
    const allowed = (pre.headers.get("access-control-allow-headers") ?? "").toLowerCase();
    for (const h of ["authorization", "content-type", "idempotency-key"]) assert.ok(allowed.includes(h), `preflight allows ${h}: ${allowed}`);

    const { user } = await newClient();
    const res = await fetch(`${w.baseUrl}/api/hasNotEngine-ultra-fast`, {
      method: "POST",
      headers: { origin: corsOrigin, authorization: `Bearer ${user.token}`, "content-type": "application/json" },
      body: JSON.stringify({ items: ["a"] }),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("access-control-allow-origin"), corsOrigin);
    assert.equal(res.headers.get("timing-allow-origin"), corsOrigin);
    const exposed = (res.headers.get("access-control-expose-headers") ?? "").toLowerCase();
    for (const h of ["server-timing", "ratelimit", "ratelimit-policy", "retry-after", "x-request-id", "idempotent-replayed"]) {
      assert.ok(exposed.split(/\s*,\s*/).includes(h), `exposes ${h}: ${exposed}`);
    }
  });

  it("a retry with the same Idempotency-Key is replayed and not counted again (once the server implements it)", async (t) => {
    const { client } = await newClient();
    const first = await client.query(["a", "b"]);
    const again = await client.query(["a", "b"], { idempotencyKey: first.meta.idempotencyKey });
    if (!again.meta.replayed) {
      // DESIGN.md's Idempotency section; the server does not answer
      // Idempotent-Replayed yet. Reported as TODO rather than failing.
      t.todo("the server does not replay Idempotency-Key repeats yet");
      return;
    }
    assert.equal(again.usage.used, first.usage.used, "a replay is not counted");
    assert.deepEqual(again.missing, first.missing);
  });
});
