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
export declare class WarmpathError extends Error {
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
    constructor(message: string, init: {
        code: string;
        status: number;
        retryAfter?: number;
        requestId?: string;
        idempotencyKey?: string;
        cause?: unknown;
    });
}
/** Creates a client; see {@link WarmpathClient}. */
export declare function createClient(opts: ClientOptions): WarmpathClient;
/**
 * Parses `Server-Timing` (`auth;dur=0.9, usage;dur=1.2, total;dur=2.4`) into
 * `{auth: 0.9, usage: 1.2, total: 2.4}` (ms). Metrics without a numeric `dur`
 * are left out; the first of a repeated name wins. Never throws.
 */
export declare function parseServerTiming(header: string | null): Timing;
/**
 * Parses the IETF RateLimit fields: `RateLimit: "quota";r=999;t=3600` and
 * `RateLimit-Policy: "quota";q=1000;w=86400`. The first policy named in
 * `RateLimit` is used (or the first of `RateLimit-Policy` without it).
 * Returns undefined when neither field says anything. Never throws.
 */
export declare function parseRateLimit(rateLimit: string | null, policy: string | null): RateLimitInfo | undefined;
/**
 * A warmpath client for one user (one token source). Calls never retry on
 * their own; a failed POST can be retried with the same
 * {@link WarmpathError.idempotencyKey}.
 */
export declare class WarmpathClient {
    private readonly base;
    private readonly token;
    private readonly fetcher;
    constructor(opts: ClientOptions);
    /**
     * Asks the server to warm this user (session, usage counter, item set) so
     * the first query is answered from a warm cache: `POST /api/user/warmup`.
     * Call it right after login and do NOT await it. It never rejects: any
     * failure (network, 401, 503 queue full) resolves `undefined`, because a
     * failed warmup only makes the first query slower, never wrong.
     */
    warmup(): Promise<WarmupStatus | undefined>;
    /** The user's warmup status (`GET /api/user/warmup`). Throws {@link WarmpathError}. */
    warmupStatus(): Promise<WarmupStatus>;
    /**
     * For app start with an existing session: reads the warmup status and
     * calls {@link warmup} unless the user is already `ready`, `queued` or
     * `running` (also when the status cannot be read). Never rejects; resolves
     * the latest status known, or `undefined`.
     */
    ensureWarm(): Promise<WarmupStatus | undefined>;
    /**
     * Which of these items (1–1000, 1–256 bytes of UTF-8 each) does the user's
     * set not have? `POST /api/hasNotEngine-ultra-fast`; one unit of quota.
     * Throws {@link WarmpathError} (`quota_exceeded` with `retryAfter`,
     * `invalid_items`, `invalid_token`, …).
     */
    query(items: string[], opts?: CallOptions): Promise<QueryResult>;
    /**
     * Adds and removes items of the user's set (`POST /api/items`, at most 1000
     * of each per call; not metered); the next query sees the change. Throws
     * {@link WarmpathError} (`invalid_items`, `too_many_items`, …).
     */
    changeItems(change: {
        add?: string[];
        remove?: string[];
    }, opts?: CallOptions): Promise<ItemsResult>;
    /**
     * One call: sends it, reads the headers into meta and the body as JSON.
     * `want` names a field a successful body must have. Every failure becomes
     * a WarmpathError.
     */
    private send;
}
export {};
