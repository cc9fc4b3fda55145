/**
 * @warmpath/client — the browser and Node.js client of warmpath's public API.
 *
 * One dependency-free ES module on top of `fetch`. Usage in short:
 *
 * ```ts
 * const client = createClient({ token: () => session.token });
 * // right after login, WITHOUT await: warming never blocks or breaks the app
 * void client.warmup();
 * const { missing } = await client.query(["https://example.com/a"]);
 * ```
 *
 * Types of the bodies come from the OpenAPI document (`../openapi.json`)
 * through `openapi-typescript`; see `generated/schema.d.ts`.
 *
 * @module
 */
import type { components } from "../generated/schema.js";

type Schemas = components["schemas"];

/** A user's usage for the current period, as every metered answer reports it. */
export type Usage = Schemas["Usage"];
/** The caller's warmup: overall state, timestamps and one entry per part. */
export type WarmupStatus = Schemas["WarmupStatus"];
/** `idle`, `queued`, `running`, `ready` or `failed`. */
export type WarmupState = Schemas["WarmupState"];
/** One part of a warmup (`session`, `usage` or `items`). */
export type WarmupPart = Schemas["WarmupPart"];

/**
 * The bearer token, or a function that returns it (called before every
 * request, so a refreshed token is picked up): a warmpath `wp_` token, or,
 * when the server has JWT sign-in on (`AUTH_JWKS_URL`), the application's
 * own session JWT (e.g. `() => session.accessToken`). `undefined` sends no
 * `Authorization` header; the server then answers 401 `missing_token`.
 */
export type TokenSource = string | (() => string | undefined | Promise<string | undefined>);

/** Options of {@link createClient}. */
export interface ClientOptions {
  /** Origin (and optional path prefix) of warmpath, e.g. `https://api.example.com`. `""` (the default) = same origin. */
  baseUrl?: string;
  /** The user's token; see {@link TokenSource}. */
  token: TokenSource;
  /** The fetch to use (default: the global `fetch`), e.g. for tests or instrumentation. */
  fetch?: typeof fetch;
}

/** Phase durations in milliseconds from `Server-Timing`: `auth`, `usage`, `query`, `db`, `total` (only those present). */
export interface Timing {
  [phase: string]: number;
}

/** The IETF RateLimit fields of a metered answer (draft-ietf-httpapi-ratelimit-headers). */
export interface RateLimitInfo {
  /** Quota of the period (`RateLimit-Policy` `q`). */
  limit?: number;
  /** Length of the period in seconds (`RateLimit-Policy` `w`). */
  windowSeconds?: number;
  /** Queries left in the period (`RateLimit` `r`). */
  remaining?: number;
  /** Seconds until the quota resets (`RateLimit` `t`). */
  resetSeconds?: number;
}

/** What the response headers said, beside the body. */
export interface ResponseMeta {
  /** The HTTP status. */
  status: number;
  /** `X-Request-Id`: quote it in bug reports; it is in the server's logs and traces. */
  requestId?: string;
  /** Where the time went on the server, in ms. */
  timing: Timing;
  /** Present on metered answers. */
  rateLimit?: RateLimitInfo;
  /** True when the server answered a repeat of an earlier call with the same `Idempotency-Key` (`Idempotent-Replayed: true`). */
  replayed: boolean;
  /** The `Idempotency-Key` sent with this call. */
  idempotencyKey?: string;
}

/** The answer of {@link WarmpathClient.query}. */
export interface QueryResult {
  /** The items the user's set does not have, in request order, each once. */
  missing: string[];
  /** How many items were checked. */
  checked: number;
  /** Usage after this query. */
  usage: Usage;
  meta: ResponseMeta;
}

/** The answer of {@link WarmpathClient.changeItems}. */
export interface ItemsResult {
  added: number;
  removed: number;
  /** Size of the set after the change. */
  total: number;
  meta: ResponseMeta;
}

/** Per-call options of the POST calls. */
export interface CallOptions {
  /** Reuse the key of a failed call (`error.idempotencyKey`) to retry it safely; default: a fresh key per call. */
  idempotencyKey?: string;
  /** Abort the call; it then rejects with code `aborted`. */
  signal?: AbortSignal;
}

/**
 * Every failure of a call. Switch on {@link WarmpathError.code}: the server's
 * snake_case code (`quota_exceeded`, `invalid_token`, `invalid_items`, …), or
 * one of the client's own: `network_error` (no answer; status 0),
 * `bad_response` (an answer that is not warmpath's JSON; the real status),
 * `aborted` (the signal fired; status 0), `token_error` (the token function
 * threw; status 0).
 */
export class WarmpathError extends Error {
  /** Stable snake_case code. */
  code: string;
  /** HTTP status; 0 when there was no answer. */
  status: number;
  /** Seconds to wait before retrying, from `Retry-After` (429, 503, 409). */
  retryAfter?: number;
  /** The request id, for bug reports. */
  requestId?: string;
  /** The `Idempotency-Key` of the failed call: pass it again to retry without being counted twice. */
  idempotencyKey?: string;

  constructor(
    message: string,
    init: { code: string; status: number; retryAfter?: number; requestId?: string; idempotencyKey?: string; cause?: unknown },
  ) {
    super(message, { cause: init.cause });
    this.name = "WarmpathError";
    this.code = init.code;
    this.status = init.status;
    this.retryAfter = init.retryAfter;
    this.requestId = init.requestId;
    this.idempotencyKey = init.idempotencyKey;
  }
}

/** Creates a client; see {@link WarmpathClient}. */
export function createClient(opts: ClientOptions): WarmpathClient {
  return new WarmpathClient(opts);
}

// Parsing of the structured header fields -------------------------------

/** A quoted string or a token. */
const VALUE = `"(?:[^"\\\\]|\\\\.)*"|[^\\s,;"]*`;
/** One list member: a name, then `;key=value` parameters; up to the next comma. */
const MEMBER = new RegExp(`("(?:[^"\\\\]|\\\\.)*"|[^\\s,;"=]+)((?:\\s*;\\s*[^\\s,;="]+(?:\\s*=\\s*(?:${VALUE}))?)*)`, "g");
const PARAM = new RegExp(`;\\s*([^\\s,;="]+)(?:\\s*=\\s*(${VALUE}))?`, "g");

/** Removes the quotes and backslash escapes of a quoted string; tokens pass unchanged. */
const unquote = (s: string): string => (s[0] == '"' ? s.slice(1, -1).replace(/\\(.)/g, "$1") : s);

/**
 * Splits a list-valued header (`a;k=1;j="x, y", b;k=2`) into [name, params]
 * pairs. Quoted strings may hold commas and semicolons; members that do not
 * parse are skipped.
 */
function members(header: string | null): [string, Record<string, string>][] {
  const out: [string, Record<string, string>][] = [];
  for (const m of (header ?? "").matchAll(MEMBER)) {
    const params: Record<string, string> = {};
    for (const p of m[2]!.matchAll(PARAM)) params[p[1]!.toLowerCase()] ??= unquote(p[2] ?? "");
    out.push([unquote(m[1]!), params]);
  }
  return out;
}

/** A number, or undefined when the text is not a finite one. */
function num(s: string | undefined): number | undefined {
  const n = s == null || s.trim() == "" ? NaN : Number(s);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * Parses `Server-Timing` (`auth;dur=0.9, usage;dur=1.2, total;dur=2.4`) into
 * `{auth: 0.9, usage: 1.2, total: 2.4}` (ms). Metrics without a numeric `dur`
 * are left out; the first of a repeated name wins. Never throws.
 */
export function parseServerTiming(header: string | null): Timing {
  const timing: Timing = {};
  for (const [name, params] of members(header)) {
    const dur = num(params["dur"]);
    if (dur !== undefined && !(name in timing)) timing[name] = dur;
  }
  return timing;
}

/**
 * Parses the IETF RateLimit fields: `RateLimit: "quota";r=999;t=3600` and
 * `RateLimit-Policy: "quota";q=1000;w=86400`. The first policy named in
 * `RateLimit` is used (or the first of `RateLimit-Policy` without it).
 * Returns undefined when neither field says anything. Never throws.
 */
export function parseRateLimit(rateLimit: string | null, policy: string | null): RateLimitInfo | undefined {
  const rl = members(rateLimit)[0];
  const policies = members(policy);
  const pol = (rl ? policies.find(([name]) => name == rl[0]) : policies[0])?.[1] ?? {};
  const info: RateLimitInfo = {};
  const set = (key: keyof RateLimitInfo, v: string | undefined) => {
    const n = num(v);
    if (n !== undefined) info[key] = n;
  };
  set("limit", pol["q"]);
  set("windowSeconds", pol["w"]);
  set("remaining", rl?.[1]["r"]);
  set("resetSeconds", rl?.[1]["t"]);
  return Object.keys(info).length ? info : undefined;
}

/** `Retry-After` in seconds: delay-seconds or an HTTP date (rounded up, never negative). */
function parseRetryAfter(v: string | null): number | undefined {
  if (v == null) return undefined;
  if (/^\s*\d+\s*$/.test(v)) return Number(v);
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/**
 * A fresh Idempotency-Key: a UUID, or else 128 random bits in hex from
 * crypto.getRandomValues (browsers leave randomUUID out of insecure
 * contexts, e.g. plain http on a LAN address), or, without Web Crypto at
 * all (Node.js 18), from Math.random: a key only has to be unique per user.
 */
function newKey(): string {
  const c = globalThis.crypto;
  if (typeof c?.randomUUID == "function") return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c?.getRandomValues) c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.random() * 256;
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// The client ------------------------------------------------------------

/**
 * A warmpath client for one user (one token source). Calls never retry on
 * their own; a failed POST can be retried with the same
 * {@link WarmpathError.idempotencyKey}.
 */
export class WarmpathClient {
  private readonly base: string;
  private readonly token: TokenSource;
  private readonly fetcher: typeof fetch;

  constructor(opts: ClientOptions) {
    this.base = (opts.baseUrl ?? "").replace(/\/+$/, "");
    this.token = opts.token;
    // Kept unbound and called as a plain function: a browser's fetch throws
    // "Illegal invocation" when called as a method of another object.
    this.fetcher = opts.fetch ?? ((input, init) => fetch(input, init));
  }

  /**
   * Asks the server to warm this user (session, usage counter, item set) so
   * the first query is answered from a warm cache: `POST /api/user/warmup`.
   * Call it right after login and do NOT await it. It never rejects: any
   * failure (network, 401, 503 queue full) resolves `undefined`, because a
   * failed warmup only makes the first query slower, never wrong.
   */
  async warmup(): Promise<WarmupStatus | undefined> {
    try {
      return (await this.send<Schemas["WarmupResponse"]>("POST", "/api/user/warmup", "warmupStatus")).body.warmupStatus;
    } catch {
      return undefined;
    }
  }

  /** The user's warmup status (`GET /api/user/warmup`). Throws {@link WarmpathError}. */
  async warmupStatus(): Promise<WarmupStatus> {
    return (await this.send<Schemas["WarmupResponse"]>("GET", "/api/user/warmup", "warmupStatus")).body.warmupStatus;
  }

  /**
   * For app start with an existing session: reads the warmup status and
   * calls {@link warmup} unless the user is already `ready`, `queued` or
   * `running` (also when the status cannot be read). Never rejects; resolves
   * the latest status known, or `undefined`.
   */
  async ensureWarm(): Promise<WarmupStatus | undefined> {
    try {
      const s = await this.warmupStatus();
      if (s.state == "ready" || s.state == "queued" || s.state == "running") return s;
    } catch {
      // Unknown: warming again is harmless (the server deduplicates).
    }
    return this.warmup();
  }

  /**
   * Which of these items (1–1000, 1–256 bytes of UTF-8 each) does the user's
   * set not have? `POST /api/hasNotEngine-ultra-fast`; one unit of quota.
   * Throws {@link WarmpathError} (`quota_exceeded` with `retryAfter`,
   * `invalid_items`, `invalid_token`, …).
   */
  async query(items: string[], opts?: CallOptions): Promise<QueryResult> {
    const { body, meta } = await this.send<Schemas["QueryResponse"]>("POST", "/api/hasNotEngine-ultra-fast", "missing", { items }, opts);
    return { missing: body.missing, checked: body.checked, usage: body.usage, meta };
  }

  /**
   * Adds and removes items of the user's set (`POST /api/items`, at most 1000
   * of each per call; not metered); the next query sees the change. Throws
   * {@link WarmpathError} (`invalid_items`, `too_many_items`, …).
   */
  async changeItems(change: { add?: string[]; remove?: string[] }, opts?: CallOptions): Promise<ItemsResult> {
    const { body, meta } = await this.send<Schemas["ItemsResponse"]>(
      "POST",
      "/api/items",
      "total",
      { add: change.add, remove: change.remove },
      opts,
    );
    return { added: body.added, removed: body.removed, total: body.total, meta };
  }

  /**
   * One call: sends it, reads the headers into meta and the body as JSON.
   * `want` names a field a successful body must have. Every failure becomes
   * a WarmpathError.
   */
  private async send<T>(
    method: string,
    path: string,
    want: string,
    body?: object,
    opts?: CallOptions,
  ): Promise<{ body: T; meta: ResponseMeta }> {
    // Only the metered query and item changes honour Idempotency-Key.
    const idempotencyKey = body ? (opts?.idempotencyKey ?? newKey()) : undefined;
    const fail = (code: string, message: string, status = 0, cause?: unknown, res?: Response, requestId?: string) =>
      new WarmpathError(message, {
        code,
        status,
        cause,
        idempotencyKey,
        requestId: requestId ?? res?.headers.get("x-request-id") ?? undefined,
        retryAfter: parseRetryAfter(res?.headers.get("retry-after") ?? null),
      });

    const headers: Record<string, string> = { accept: "application/json" };
    try {
      const t = typeof this.token == "function" ? await this.token() : this.token;
      if (t) headers["authorization"] = "Bearer " + t;
    } catch (e) {
      throw fail("token_error", "the token source failed", 0, e);
    }
    if (body) headers["content-type"] = "application/json";
    if (idempotencyKey) headers["idempotency-key"] = idempotencyKey;

    const fetcher = this.fetcher;
    let res: Response;
    let text: string;
    try {
      res = await fetcher(this.base + path, {
        method,
        headers,
        body: body && JSON.stringify(body),
        signal: opts?.signal,
      });
      text = await res.text();
    } catch (e) {
      if (opts?.signal?.aborted) throw fail("aborted", "the call was aborted", 0, e);
      throw fail("network_error", `${method} ${path}: no answer (${e instanceof Error ? e.message : e})`, 0, e);
    }

    let data: any;
    try {
      data = JSON.parse(text);
    } catch (e) {
      throw fail("bad_response", `${method} ${path}: answer ${res.status} is not JSON`, res.status, e, res);
    }
    if (!res.ok) {
      const err = data?.error;
      if (typeof err?.code != "string") {
        throw fail("bad_response", `${method} ${path}: answer ${res.status} is not a warmpath error`, res.status, undefined, res);
      }
      throw fail(err.code, String(err.message ?? err.code), res.status, undefined, res, data.requestId);
    }
    if (data?.[want] == null) {
      throw fail("bad_response", `${method} ${path}: answer ${res.status} has no "${want}"`, res.status, undefined, res);
    }

    const h = res.headers;
    const meta: ResponseMeta = {
      status: res.status,
      requestId: h.get("x-request-id") ?? undefined,
      timing: parseServerTiming(h.get("server-timing")),
      rateLimit: parseRateLimit(h.get("ratelimit"), h.get("ratelimit-policy")),
      replayed: h.get("idempotent-replayed") == "true",
      idempotencyKey,
    };
    return { body: data as T, meta };
  }
}
