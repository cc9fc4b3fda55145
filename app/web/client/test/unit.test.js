// Unit tests of the client against a fake fetch: header parsing, error
// mapping, Idempotency-Key, and warmup() never rejecting.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { createClient, parseRateLimit, parseServerTiming, WarmpathError } from "../dist/index.js";

/**
 * A fake fetch that records each call and answers with respond(call), which
 * returns a Response (or throws, like a network failure).
 */
function fakeFetch(respond) {
  const calls = [];
  const f = async (url, init = {}) => {
    const call = { url, method: init.method ?? "GET", headers: new Headers(init.headers), body: init.body, signal: init.signal };
    calls.push(call);
    return respond(call);
  };
  f.calls = calls;
  return f;
}

const json = (status, body, headers = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });

const queryOK = (headers = {}) =>
  json(200, { missing: ["b"], checked: 2, usage: { used: 1, limit: 10, remaining: 9, resetAt: "2026-12-03T00:00:00Z" } }, headers);

const readyStatus = {
  state: "ready",
  requestedAt: "2026-12-02T08:00:00Z",
  startedAt: "2026-12-02T08:00:00Z",
  finishedAt: "2026-12-02T08:00:00Z",
  durationMs: 3,
  parts: { session: { state: "ready" }, usage: { state: "ready" }, items: { state: "ready" } },
};

/** Resolves to the error a promise rejects with; fails when it resolves. */
async function rejection(p) {
  try {
    await p;
  } catch (e) {
    return e;
  }
  assert.fail("expected a rejection");
}

describe("parseServerTiming", () => {
  it("reads warmpath's phases in ms", () => {
    assert.deepEqual(parseServerTiming("auth;dur=0.982, usage;dur=1.271, query;dur=0.694, db;dur=0.004, total;dur=2.408"), {
      auth: 0.982,
      usage: 1.271,
      query: 0.694,
      db: 0.004,
      total: 2.408,
    });
  });
  it("handles spacing, desc with commas and semicolons, case and order of params", () => {
    assert.deepEqual(parseServerTiming('cache;desc="hit, warm; yes";DUR=1.5 ,  db ; dur = 2 ,total;dur=3.25;desc=x'), {
      cache: 1.5,
      db: 2,
      total: 3.25,
    });
  });
  it("skips metrics without a numeric dur and keeps the first of a repeated name", () => {
    assert.deepEqual(parseServerTiming("miss, a;desc=x, b;dur=abc, c;dur=, d;dur=1, d;dur=2"), { d: 1 });
  });
  it("returns {} for null, empty and garbage", () => {
    assert.deepEqual(parseServerTiming(null), {});
    assert.deepEqual(parseServerTiming(""), {});
    assert.deepEqual(parseServerTiming(';;,,="'), {});
  });
  it("merges several Server-Timing fields (fetch joins them with a comma)", () => {
    const h = new Headers();
    h.append("Server-Timing", "auth;dur=1");
    h.append("Server-Timing", "total;dur=2");
    assert.deepEqual(parseServerTiming(h.get("server-timing")), { auth: 1, total: 2 });
  });
});

describe("parseRateLimit", () => {
  // [what, RateLimit, RateLimit-Policy, the parsed limit]
  const cases = [
    [
      "reads the IETF RateLimit fields",
      '"quota";r=999;t=3600',
      '"quota";q=1000;w=86400',
      { limit: 1000, windowSeconds: 86400, remaining: 999, resetSeconds: 3600 },
    ],
    [
      "uses the policy that RateLimit names",
      '"day";r=5;t=10',
      '"burst";q=10;w=1, "day";q=100;w=86400',
      { limit: 100, windowSeconds: 86400, remaining: 5, resetSeconds: 10 },
    ],
    ["works with RateLimit-Policy only", null, '"quota";q=1;w=2678400', { limit: 1, windowSeconds: 2678400 }],
    ["works with RateLimit only", '"quota";r=0;t=5', null, { remaining: 0, resetSeconds: 5 }],
    ["returns undefined when nothing is said", null, null, undefined],
    ["returns undefined for empty fields", "", "", undefined],
    ["returns undefined for fields without values", '"quota"', "nonsense", undefined],
  ];
  for (const [what, rateLimit, policy, want] of cases) {
    it(what, () => {
      assert.deepEqual(parseRateLimit(rateLimit, policy), want);
    });
  }
});

describe("requests", () => {
  it("query sends the token, JSON and a fresh Idempotency-Key, and reads meta", async () => {
    const f = fakeFetch(() =>
      queryOK({
        "x-request-id": "abc-1",
        "server-timing": "auth;dur=1, usage;dur=2, query;dur=3, total;dur=7",
        ratelimit: '"quota";r=9;t=100',
        "ratelimit-policy": '"quota";q=10;w=86400',
      }),
    );
    const c = createClient({ baseUrl: "https://api.example.com/", token: "wp_t", fetch: f });
    const r = await c.query(["a", "b"]);
    assert.deepEqual(r.missing, ["b"]);
    assert.equal(r.checked, 2);
    assert.equal(r.usage.remaining, 9);
    assert.equal(r.meta.status, 200);
    assert.equal(r.meta.requestId, "abc-1");
    assert.deepEqual(r.meta.timing, { auth: 1, usage: 2, query: 3, total: 7 });
    assert.deepEqual(r.meta.rateLimit, { limit: 10, windowSeconds: 86400, remaining: 9, resetSeconds: 100 });
    assert.equal(r.meta.replayed, false);

    const [call] = f.calls;
    assert.equal(call.url, "https://api.example.com/api/hasNotEngine-ultra-fast");
    assert.equal(call.method, "POST");
    assert.equal(call.headers.get("authorization"), "Bearer wp_t");
    assert.equal(call.headers.get("content-type"), "application/json");
    assert.deepEqual(JSON.parse(call.body), { items: ["a", "b"] });
    const key = call.headers.get("idempotency-key");
    assert.match(key, /^[0-9a-f-]{32,36}$/);
    assert.equal(r.meta.idempotencyKey, key);

    await c.query(["a"]);
    assert.notEqual(f.calls[1].headers.get("idempotency-key"), key, "a fresh key per call");
  });

  it("sends a given Idempotency-Key, on query and changeItems, and reports a replay", async () => {
    const f = fakeFetch((call) =>
      call.url.endsWith("/api/items") ? json(200, { added: 1, removed: 0, total: 1 }) : queryOK({ "idempotent-replayed": "true" }),
    );
    const c = createClient({ token: "t", fetch: f });
    const r = await c.query(["a"], { idempotencyKey: "key-1" });
    assert.equal(f.calls[0].headers.get("idempotency-key"), "key-1");
    assert.equal(r.meta.replayed, true);
    assert.equal(r.meta.idempotencyKey, "key-1");
    const ch = await c.changeItems({ add: ["x"] }, { idempotencyKey: "key-2" });
    assert.deepEqual([ch.added, ch.removed, ch.total], [1, 0, 1]);
    assert.equal(f.calls[1].url, "/api/items", "same origin by default");
    assert.equal(f.calls[1].headers.get("idempotency-key"), "key-2");
    assert.deepEqual(JSON.parse(f.calls[1].body), { add: ["x"] });
    // changeItems without a key gets a fresh one too.
    await c.changeItems({ remove: ["x"] });
    assert.match(f.calls[2].headers.get("idempotency-key"), /^[0-9a-f-]{32,36}$/);
  });

  it("GET warmupStatus sends no body, no Content-Type and no Idempotency-Key", async () => {
    const f = fakeFetch(() => json(200, { warmupStatus: readyStatus }));
    const s = await createClient({ token: "t", fetch: f }).warmupStatus();
    assert.equal(s.state, "ready");
    const [call] = f.calls;
    assert.equal(call.method, "GET");
    assert.equal(call.body, undefined);
    assert.equal(call.headers.get("content-type"), null);
    assert.equal(call.headers.get("idempotency-key"), null);
  });

  it("a token function is called per request; undefined sends no Authorization", async () => {
    let n = 0;
    const f = fakeFetch(() => queryOK());
    const c = createClient({ token: async () => (n++ ? undefined : "first"), fetch: f });
    await c.query(["a"]);
    await c.query(["a"]);
    assert.equal(f.calls[0].headers.get("authorization"), "Bearer first");
    assert.equal(f.calls[1].headers.get("authorization"), null);
  });

  it("uses the global fetch unbound when none is given", async (t) => {
    const seen = [];
    t.mock.method(globalThis, "fetch", async function (url) {
      seen.push([url, this]);
      return queryOK();
    });
    await createClient({ token: "t" }).query(["a"]);
    assert.equal(seen[0][0], "/api/hasNotEngine-ultra-fast");
    assert.notEqual(seen[0][1]?.constructor?.name, "WarmpathClient");
  });

  it("falls back to crypto.getRandomValues where randomUUID is missing, and to Math.random without Web Crypto", async (t) => {
    const real = globalThis.crypto;
    try {
      Object.defineProperty(globalThis, "crypto", {
        configurable: true,
        value: { getRandomValues: (a) => real.getRandomValues(a) },
      });
    } catch {
      t.skip("globalThis.crypto cannot be replaced here");
      return;
    }
    try {
      const f = fakeFetch(() => queryOK());
      await createClient({ token: "t", fetch: f }).query(["a"]);
      assert.match(f.calls[0].headers.get("idempotency-key"), /^[0-9a-f]{32}$/);
      // Without Web Crypto at all (Node.js 18): still a key, never a throw.
      Object.defineProperty(globalThis, "crypto", { configurable: true, value: undefined });
      await createClient({ token: "t", fetch: f }).query(["a"]);
      assert.match(f.calls[1].headers.get("idempotency-key"), /^[0-9a-f]{32}$/);
      assert.notEqual(f.calls[1].headers.get("idempotency-key"), f.calls[0].headers.get("idempotency-key"));
    } finally {
      Object.defineProperty(globalThis, "crypto", { configurable: true, value: real });
    }
  });
});

describe("errors", () => {
  it("parses the error shape, Retry-After and the request id, and carries the Idempotency-Key", async () => {
    const f = fakeFetch(() =>
      json(
        429,
        { error: { code: "quota_exceeded", message: "quota reached" }, requestId: "rid-9" },
        { "retry-after": "7", "x-request-id": "rid-9" },
      ),
    );
    const e = await rejection(createClient({ token: "t", fetch: f }).query(["a"], { idempotencyKey: "k" }));
    assert.ok(e instanceof WarmpathError);
    assert.ok(e instanceof Error);
    assert.equal(e.name, "WarmpathError");
    assert.equal(e.code, "quota_exceeded");
    assert.equal(e.message, "quota reached");
    assert.equal(e.status, 429);
    assert.equal(e.retryAfter, 7);
    assert.equal(e.requestId, "rid-9");
    assert.equal(e.idempotencyKey, "k");
    assert.equal(f.calls.length, 1, "no automatic retry");
  });

  it("reads Retry-After as an HTTP date and takes requestId from the body", async () => {
    const at = new Date(Date.now() + 30_000).toUTCString();
    const f = fakeFetch(() => json(503, { error: { code: "service_unavailable", message: "m" }, requestId: "body-id" }, { "retry-after": at }));
    const e = await rejection(createClient({ token: "t", fetch: f }).warmupStatus());
    assert.equal(e.code, "service_unavailable");
    assert.equal(e.status, 503);
    assert.ok(e.retryAfter >= 28 && e.retryAfter <= 31, `retryAfter ${e.retryAfter}`);
    assert.equal(e.requestId, "body-id");
    assert.equal(e.idempotencyKey, undefined);
    assert.equal(f.calls.length, 1, "no automatic retry");
  });

  it("a network failure is network_error with status 0", async () => {
    const f = fakeFetch(() => {
      throw new TypeError("fetch failed");
    });
    const e = await rejection(createClient({ token: "t", fetch: f }).changeItems({ add: ["a"] }));
    assert.equal(e.code, "network_error");
    assert.equal(e.status, 0);
    assert.ok(e.cause instanceof TypeError);
    assert.match(e.idempotencyKey, /./, "the key to retry with");
  });

  it("a non-JSON answer is bad_response with the real status", async () => {
    const f = fakeFetch(() => new Response("<html>Bad Gateway</html>", { status: 502, headers: { "content-type": "text/html" } }));
    const e = await rejection(createClient({ token: "t", fetch: f }).query(["a"]));
    assert.equal(e.code, "bad_response");
    assert.equal(e.status, 502);
  });

  it("JSON that is not warmpath's is bad_response, on errors and on success", async () => {
    for (const [status, body] of [
      [500, { message: "proxy says no" }],
      [404, "nope"],
      [200, { unexpected: true }],
      [200, null],
    ]) {
      const f = fakeFetch(() => json(status, body));
      const e = await rejection(createClient({ token: "t", fetch: f }).query(["a"]));
      assert.equal(e.code, "bad_response", JSON.stringify(body));
      assert.equal(e.status, status);
    }
  });

  it("an aborted call is aborted with status 0", async () => {
    const ac = new AbortController();
    const f = fakeFetch(
      (call) =>
        new Promise((_, reject) => {
          call.signal.addEventListener("abort", () => reject(call.signal.reason));
        }),
    );
    const p = createClient({ token: "t", fetch: f }).query(["a"], { signal: ac.signal });
    ac.abort();
    const e = await rejection(p);
    assert.equal(e.code, "aborted");
    assert.equal(e.status, 0);
  });

  it("a token function that throws is token_error and sends nothing", async () => {
    const f = fakeFetch(() => queryOK());
    const e = await rejection(
      createClient({
        token: () => {
          throw new Error("no session");
        },
        fetch: f,
      }).query(["a"]),
    );
    assert.equal(e.code, "token_error");
    assert.equal(f.calls.length, 0);
  });
});

describe("warmup", () => {
  it("resolves the status of a 202", async () => {
    const f = fakeFetch(() => json(202, { warmupStatus: { ...readyStatus, state: "queued" } }));
    const s = await createClient({ token: "t", fetch: f }).warmup();
    assert.equal(s.state, "queued");
    assert.equal(f.calls[0].method, "POST");
    assert.equal(f.calls[0].url, "/api/user/warmup");
  });

  it("never rejects: network failure, 401, 503 queue full, bad JSON, throwing token, throwing fetch", async () => {
    const failing = [
      fakeFetch(() => Promise.reject(new TypeError("fetch failed"))),
      fakeFetch(() => json(401, { error: { code: "invalid_token", message: "m" }, requestId: "r" })),
      fakeFetch(() => json(503, { error: { code: "warmup_queue_full", message: "m" }, requestId: "r" }, { "retry-after": "1" })),
      fakeFetch(() => new Response("oops", { status: 200 })),
      () => {
        throw new Error("synchronous throw");
      },
    ];
    for (const f of failing) {
      assert.equal(await createClient({ token: "t", fetch: f }).warmup(), undefined);
    }
    const badToken = createClient({ token: () => Promise.reject(new Error("x")), fetch: fakeFetch(() => json(202, {})) });
    assert.equal(await badToken.warmup(), undefined);
  });

  it("ensureWarm does not warm a user that is ready, queued or running", async () => {
    for (const state of ["ready", "queued", "running"]) {
      const f = fakeFetch(() => json(200, { warmupStatus: { ...readyStatus, state } }));
      const s = await createClient({ token: "t", fetch: f }).ensureWarm();
      assert.equal(s.state, state);
      assert.deepEqual(
        f.calls.map((c) => c.method),
        ["GET"],
      );
    }
  });

  it("ensureWarm warms an idle or failed user, and when the status cannot be read", async () => {
    for (const get of [
      () => json(200, { warmupStatus: { ...readyStatus, state: "idle" } }),
      () => json(200, { warmupStatus: { ...readyStatus, state: "failed" } }),
      () => json(503, { error: { code: "service_unavailable", message: "m" }, requestId: "r" }),
    ]) {
      const f = fakeFetch((call) => (call.method == "GET" ? get() : json(202, { warmupStatus: { ...readyStatus, state: "queued" } })));
      const s = await createClient({ token: "t", fetch: f }).ensureWarm();
      assert.equal(s.state, "queued");
      assert.deepEqual(
        f.calls.map((c) => c.method),
        ["GET", "POST"],
      );
    }
  });

  it("ensureWarm never rejects", async () => {
    const f = fakeFetch(() => Promise.reject(new TypeError("down")));
    assert.equal(await createClient({ token: "t", fetch: f }).ensureWarm(), undefined);
  });
});
