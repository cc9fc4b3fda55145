// The warmpath demo page. It uses @warmpath/client exactly as an application
// would: sign in, fire warmup() without awaiting it, then query. No build
// step, no framework.
import { createClient } from "/assets/client.js";

const $ = (id) => document.getElementById(id);
const QUERY_URL = new URL("/api/hasNotEngine-ultra-fast", location.href).href;
const PHASES = ["auth", "usage", "query", "other"];
const STEPS = ["queued", "running", "ready"];
const POLL_MS = 150;
const POLL_GIVE_UP_MS = 60000;

// The token lives only in this module's memory, never in localStorage or
// sessionStorage: a bearer token in storage is readable by any script that
// ever runs on this origin and outlives the tab's need for it. The cost is
// signing in again after a reload, which for a demo is one click.
let token;
let client;
let session = 0; // bumped at sign-in and sign-out; stale polls stop
let runs = []; // {n, total, rtt} of each answered query since sign-in

// Warmup polling adds a resource entry every POLL_MS; keep room for them and
// start over when full so query entries are always recorded.
performance.setResourceTimingBufferSize?.(1000);
performance.addEventListener?.("resourcetimingbufferfull", () => performance.clearResourceTimings());

const lines = (s) => s.split("\n").map((l) => l.trim()).filter(Boolean);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fmt = (ms) => (ms == null || !Number.isFinite(ms) ? "–" : ms < 10 ? ms.toFixed(2) : ms.toFixed(1)) + " ms";
const el = (tag, props = {}, ...kids) => {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...kids);
  return e;
};
const setText = (e, s) => {
  if (e.textContent !== s) e.textContent = s; // no repeats for screen readers
};

// --- errors ----------------------------------------------------------------

function showError(e) {
  const box = $("error");
  const code = e?.code ?? "error";
  let msg = String(e?.message ?? e);
  if (!/[.!?]$/.test(msg)) msg += ".";
  let s = code + (e?.status ? ` (HTTP ${e.status})` : "") + ": " + msg;
  if (e?.retryAfter != null) s += ` Retry after ${e.retryAfter} s.`;
  if (e?.requestId) s += ` Request id: ${e.requestId}`;
  box.textContent = s;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// --- sign-in ---------------------------------------------------------------

// Demo users exist only in embedded mode on a loopback listener; anywhere
// else /demo/users answers 404 and the page just asks for a token.
async function loadDemoUsers() {
  let users;
  try {
    const res = await fetch("/demo/users", { headers: { accept: "application/json" } });
    if (res.status !== 200) return;
    ({ users } = await res.json());
  } catch {
    return;
  }
  if (!Array.isArray(users) || !users.length) return;
  const box = $("demo-users");
  for (const u of users) {
    const b = el("button", { type: "button", className: "demo-user", textContent: `${u.name} (${u.plan})` });
    b.dataset.user = u.name;
    b.addEventListener("click", () => signIn(u.token, u.name));
    box.append(b);
  }
  $("demo").hidden = false;
}

function signIn(tok, who) {
  signOut();
  token = tok;
  client = createClient({ token: () => token });
  const my = ++session;
  // Fire and forget: the first query must never wait for the warmup.
  client.warmup();
  $("who").textContent = who;
  $("session").hidden = false;
  $("token-form").hidden = true;
  $("query-btn").disabled = $("add-btn").disabled = false;
  $("items").focus();
  setText($("warm-status"), "Warmup requested…");
  pollWarmup(my);
}

function signOut() {
  session++;
  token = client = undefined;
  runs = [];
  clearError();
  $("session").hidden = true;
  $("token-form").hidden = false;
  $("query-btn").disabled = $("add-btn").disabled = true;
  $("result").hidden = true;
  $("compare").tBodies[0].replaceChildren();
  $("parts").replaceChildren();
  $("quota").textContent = $("add-status").textContent = "";
  renderWarm(undefined);
}

// --- warmup ----------------------------------------------------------------

async function pollWarmup(my) {
  const t0 = performance.now();
  while (my === session) {
    let s;
    try {
      s = await client.warmupStatus();
    } catch (e) {
      if (my !== session) return;
      // 401: the token is not one (unknown, expired, revoked): back to sign-in.
      if (e.status === 401) {
        signOut();
        $("token").focus();
      }
      showError(e);
      setText($("warm-status"), `Could not read the warmup status (${e.code}).`);
      return;
    }
    if (my !== session) return;
    renderWarm(s);
    if (s.state === "ready" || s.state === "failed") return;
    if (performance.now() - t0 > POLL_GIVE_UP_MS) {
      setText($("warm-status"), `Still ${s.state} after ${POLL_GIVE_UP_MS / 1000} s; stopped watching.`);
      return;
    }
    await sleep(POLL_MS);
  }
}

function renderWarm(s) {
  const state = s?.state;
  $("warm").dataset.state = state ?? "";
  const at = STEPS.indexOf(state);
  for (const li of $("steps").children) {
    const i = STEPS.indexOf(li.dataset.step);
    li.className = state === "failed" && i === STEPS.length - 1 ? "failed" : i < at || state === "ready" ? "done" : i === at ? "current" : "";
    if (i === at) li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
  }
  let msg = "Not signed in.";
  if (state === "ready") msg = `Warm: ready in ${fmt(s.durationMs)}.`;
  else if (state === "failed") msg = `Warmup failed: ${s.error ?? "unknown error"}. Queries still work, only slower.`;
  else if (state) msg = `Warmup ${state}…`;
  setText($("warm-status"), msg);
  const dl = $("parts");
  if (!s?.parts) return dl.replaceChildren();
  const kids = [];
  const names = ["session", "usage", "items"].filter((n) => n in s.parts);
  for (const name of [...names, ...Object.keys(s.parts).filter((n) => !names.includes(n))]) {
    const p = s.parts[name];
    kids.push(el("dt", { textContent: name }), el("dd", { textContent: `${p.state}${p.durationMs != null ? " · " + fmt(p.durationMs) : ""}` }));
  }
  dl.replaceChildren(...kids);
}

// --- query -----------------------------------------------------------------

// The browser's own record of the request: its Server-Timing as the
// PerformanceResourceTiming API exposes it, and the round trip. The entry can
// land a moment after the answer is read, so look for a little while.
async function resourceEntry(url, since) {
  for (let i = 0; i < 20; i++) {
    const all = performance.getEntriesByName(url).filter((e) => e.startTime >= since);
    if (all.length) return all[all.length - 1];
    await sleep(5);
  }
  return undefined;
}

// submittedItems starts the submit of an item form: the items of the field
// with id `field`, one a line, or undefined (and message shown) if none.
function submittedItems(ev, field, message) {
  ev.preventDefault();
  clearError();
  const items = lines($(field).value);
  if (items.length) return items;
  showError({ code: "invalid_items", message });
  return undefined;
}

async function runQuery(ev) {
  const items = submittedItems(ev, "items", "Enter at least one item, one per line.");
  if (!items) return;
  const my = session;
  const since = performance.now() - 1;
  $("query-btn").disabled = true;
  try {
    const r = await client.query(items);
    if (my !== session) return;
    renderAnswer(r, await resourceEntry(QUERY_URL, since));
  } catch (e) {
    if (my === session) showError(e);
  } finally {
    if (my === session) $("query-btn").disabled = false;
  }
}

function renderAnswer(r, entry) {
  let timing = {};
  let source = "Server-Timing header (parsed by the client)";
  if (entry?.serverTiming?.length) {
    for (const m of entry.serverTiming) timing[m.name] ??= m.duration;
    source = "PerformanceResourceTiming.serverTiming";
  } else {
    timing = r.meta.timing;
  }
  const total = timing.total ?? 0;
  const known = (timing.auth ?? 0) + (timing.usage ?? 0) + (timing.query ?? 0);
  const parts = { auth: timing.auth ?? 0, usage: timing.usage ?? 0, query: timing.query ?? 0, other: Math.max(0, total - known) };

  const n = runs.length + 1;
  const rtt = entry?.duration;
  runs.push({ n, total, rtt });

  $("result").hidden = false;
  setText($("summary"), `${r.missing.length} of ${r.checked} missing${r.meta.replayed ? " (replayed)" : ""}. Request id ${r.meta.requestId ?? "–"}.`);
  $("missing").replaceChildren(...r.missing.map((m) => el("li", { textContent: m })));
  if (!r.missing.length) $("missing").append(el("li", { className: "none", textContent: "Nothing missing: you have all of them." }));

  const bar = $("bar");
  Object.assign(bar.dataset, { total, known, source: entry?.serverTiming?.length ? "resource" : "header" }, parts);
  bar.setAttribute("aria-label", "Time breakdown: " + PHASES.map((p) => `${p} ${fmt(parts[p])}`).join(", ") + `, total ${fmt(total)}`);
  bar.replaceChildren(
    ...PHASES.filter((p) => parts[p] > 0).map((p) => {
      const seg = el("span", { className: "seg " + p, title: `${p} ${fmt(parts[p])}` });
      seg.style.width = (total > 0 ? (100 * parts[p]) / total : 0) + "%";
      return seg;
    }),
  );
  $("legend").replaceChildren(
    ...PHASES.map((p) => el("li", {}, el("span", { className: "swatch " + p }), `${p} ${fmt(parts[p])}`)),
    el("li", { className: "total" }, `total ${fmt(total)}`),
  );
  setText($("timing-src"), `Read from ${source}. "other" is the rest of the server's total (routing, JSON, writing the answer).`);

  const rl = r.meta.rateLimit;
  const remaining = rl?.remaining ?? r.usage.remaining;
  const limit = rl?.limit ?? r.usage.limit;
  const reset = rl?.resetSeconds != null ? `, resets in ${humanSeconds(rl.resetSeconds)}` : "";
  $("quota").textContent = `Quota: ${remaining} of ${limit} left${reset}.`;
  $("quota").dataset.remaining = remaining;

  renderCompare();
}

function humanSeconds(s) {
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} days`;
}

const median = (xs) => {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return v.length ? (v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2) : undefined;
};

function renderCompare() {
  const row = (label, total, rtt, cls = "") => el("tr", { className: cls }, el("th", { scope: "row", textContent: label }), el("td", { textContent: fmt(total) }), el("td", { textContent: fmt(rtt) }));
  const [first, ...rest] = runs;
  const rows = [row("#1 first after sign-in", first.total, first.rtt, "cold")];
  // The latest five of the following queries, then their median.
  for (const r of rest.slice(-5)) rows.push(row(`#${r.n}`, r.total, r.rtt));
  if (rest.length > 1) {
    rows.push(row(`median of #2–#${runs.length}`, median(rest.map((r) => r.total)), median(rest.map((r) => r.rtt)), "warm"));
  }
  $("compare").tBodies[0].replaceChildren(...rows);
}

// --- add items -------------------------------------------------------------

async function addItems(ev) {
  const add = submittedItems(ev, "add", "Enter at least one item to add, one per line.");
  if (!add) return;
  const my = session;
  $("add-btn").disabled = true;
  try {
    const r = await client.changeItems({ add });
    if (my !== session) return;
    $("add-status").textContent = `Added ${r.added} new; your set has ${r.total} items.`;
    $("add").value = "";
  } catch (e) {
    if (my === session) showError(e);
  } finally {
    if (my === session) $("add-btn").disabled = false;
  }
}

// --- wiring ----------------------------------------------------------------

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = $("token").value.trim();
  $("token").value = "";
  if (t) signIn(t, "a pasted token");
});
$("signout").addEventListener("click", () => {
  signOut();
  $("token").focus();
});
$("query-form").addEventListener("submit", runQuery);
$("add-form").addEventListener("submit", addItems);
for (const id of ["items", "add"]) {
  $(id).addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      e.target.form.requestSubmit();
    }
  });
}
loadDemoUsers().finally(() => (document.body.dataset.ready = "1"));
