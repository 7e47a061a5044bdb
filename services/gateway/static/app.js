// Interlock Command Center: one page, no build step. Talks to the gateway's HTTP API and follows
// a session's events over Server-Sent Events. Every value from the server is rendered with
// textContent, never as HTML.
"use strict";

const TOKEN_KEY = "interlock.token";
// Signed in with the identity provider: the ID token's expiry (epoch seconds) and how.
const EXPIRES_KEY = "interlock.expires";
const VIA_KEY = "interlock.via";
const RETURN_KEY = "interlock.return";  // where to come back to after the provider's pages
const state = {
  token: "",
  me: null,
  auth: null,         // GET /v1/auth/config: {oidc: {issuer, …} | null, static_tokens}
  whoami: null,       // GET /v1/whoami: {principal, name, roles, via}
  refreshTimer: 0,
  eventTypes: [],
  sessions: [],
  current: "",
  lastId: 0,          // last event id shown for the current session (ids only increase)
  toldSeq: 0,         // the log's last sequence as the server last said (GET /v1/log)
  queue: [],          // events of the current stream not yet shown, in arrival order
  asking: false,      // a GET /v1/log on the wire
  es: null,
  esBackoff: 1000,
  esTimer: 0,
  approvals: new Map(),  // approval_id -> approval (pending)
  inflight: new Set(),   // approval ids with a decision on the wire
  submitted: new Set(),  // approval ids this page decided: never submitted twice
  highlight: "",
  sending: false,
  keys: null,            // GET /v1/approvers: the enrolled keys and registered passkeys (null: not yet read)
};

const $ = (sel) => document.querySelector(sel);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// -- HTTP --------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: `Bearer ${state.token}` } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (err) {
    throw new ApiError(0, "network", "the gateway cannot be reached");
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!resp.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(resp.status, e.code || "http_" + resp.status, e.message || resp.statusText);
  }
  return data;
}

// -- sign-in -----------------------------------------------------------------------------------

function readFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("token")) sessionStorage.setItem(TOKEN_KEY, params.get("token"));
  if (params.get("approval")) state.highlight = params.get("approval");
  const session = params.get("session") || "";
  if (params.get("token")) {  // keep the token out of the address bar and history
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.toString() ? "#" + params : ""));
  }
  return session;
}

// How one signs in here (public): the identity provider's button, the token field, or both.
async function loadAuthConfig() {
  try {
    state.auth = await (await fetch("/v1/auth/config")).json();
  } catch (err) {
    state.auth = { oidc: null, static_tokens: true };
  }
  const oidc = state.auth.oidc;
  $("#help-redirect").textContent = `${location.origin}/v1/auth/callback`;
  if (oidc) {
    let host = oidc.issuer;
    try { host = new URL(oidc.issuer).host; } catch (e) { /* keep the issuer */ }
    $("#login-oidc-button").textContent = `Sign in with ${host}`;
    $("#login-oidc").hidden = false;
    $("#login-or").hidden = !state.auth.static_tokens;
    $("#login-form").hidden = !state.auth.static_tokens;
  }
}

// A new ID token for the provider's refresh cookie (none: not signed in with the provider).
async function refreshIdToken() {
  const resp = await fetch("/v1/auth/refresh", { method: "POST" });
  if (!resp.ok) return false;
  const data = await resp.json();
  state.token = data.id_token;
  sessionStorage.setItem(TOKEN_KEY, data.id_token);
  sessionStorage.setItem(EXPIRES_KEY, String(data.expires_at));
  sessionStorage.setItem(VIA_KEY, "oidc");
  return true;
}

// Refreshes the ID token before it expires (a minute before; a short-lived one at three
// quarters of its life); the event stream is reopened with the new one.
function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  if (sessionStorage.getItem(VIA_KEY) !== "oidc") return;
  const left = Number(sessionStorage.getItem(EXPIRES_KEY) || 0) - Date.now() / 1000;
  const wait = Math.max(2, left > 240 ? left - 60 : left * 0.75);
  state.refreshTimer = setTimeout(async () => {
    let ok = false;
    try { ok = await refreshIdToken(); } catch (e) { ok = false; }
    if (!ok) {
      forget();
      showLogin("Your sign-in has expired: sign in again.");
      return;
    }
    if (state.es) { closeStream(); openStream(); }
    scheduleRefresh();
  }, wait * 1000);
}

function forget() {
  for (const k of [TOKEN_KEY, EXPIRES_KEY, VIA_KEY]) sessionStorage.removeItem(k);
  state.token = "";
}

async function signIn(wantedSession) {
  state.token = sessionStorage.getItem(TOKEN_KEY) || "";
  // A new tab of a browser signed in with the provider: its refresh cookie signs it in.
  if (!state.token && state.auth && state.auth.oidc) {
    try { await refreshIdToken(); } catch (e) { /* not signed in */ }
  }
  if (!state.token) return showLogin("");
  try {
    state.whoami = await api("GET", "/v1/whoami");
    state.me = await api("GET", "/v1/me");
  } catch (err) {
    if (err.status === 401) {
      const oidc = sessionStorage.getItem(VIA_KEY) === "oidc";
      forget();
      return showLogin(oidc ? `Your sign-in was refused: ${err.message}.`
        : "That token is not valid.");
    }
    if (err.status === 403 && state.whoami) {
      $("#logout").hidden = false;
      return showLogin(`Signed in as ${state.whoami.name || state.whoami.principal} ` +
        `(${state.whoami.principal}), who holds no role here: ask an admin to map one of ` +
        "your groups to a role (INTERLOCK_OIDC_ROLES).");
    }
    return showLogin(err.message);
  }
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  const roles = state.me.roles.join(", ");
  // Who is signed in: the readable name, and the principal the log records them as.
  const display = state.whoami.name;
  $("#who").textContent = display ? `${display} (${roles})` : `${state.me.name} (${roles})`;
  $("#who-id").textContent = display ? state.me.name : "";
  $("#who-id").hidden = !display;
  scheduleRefresh();
  $("#chat-input").disabled = !state.me.can_chat;
  $("#send").disabled = !state.me.can_chat;
  $("#new-session").disabled = !state.me.can_chat;
  if (!state.me.can_chat) $("#chat-input").placeholder = "Your role may watch but not chat.";
  await loadEventTypes();
  if (state.me.can_decide) await setUpPasskeys();
  await refreshSessions();
  await loadClusters();
  await refreshApprovals();
  // A session opened meanwhile (New clicked while the lists loaded) is not taken away.
  if (state.current) { /* keep it */ }
  else if (wantedSession) openSession(wantedSession);
  else if (state.sessions.length) openSession(state.sessions[0].session_id);
  document.body.dataset.ready = "1";
  setInterval(refreshApprovals, 5000);
  setInterval(refreshSessions, 10000);
  setInterval(tickExpiry, 1000);
}

function showLogin(message) {
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
}

async function loadEventTypes() {
  // Event types come from the spec (generated from schemas/), so new events are shown too.
  const types = new Set(["reset"]);
  try {
    const spec = await fetch("/openapi.json").then((r) => r.json());
    for (const schema of Object.values(spec.components.schemas)) {
      const t = schema.properties && schema.properties.type;
      if (t && Array.isArray(t.enum)) t.enum.forEach((v) => { if (v.includes(".")) types.add(v); });
    }
  } catch (e) { /* fall back to the types the page knows */ }
  ["session.started", "user.message", "assistant.message", "tool.proposed", "tool.classified",
   "tool.refused", "approval.requested", "approval.decided", "approval.granted",
   "approval.denied", "approval.expired", "tool.started", "tool.result", "turn.completed",
   "command.rejected", "session.cancelled", "tool.requested"].forEach((t) => types.add(t));
  state.eventTypes = [...types];
}

// -- sessions ----------------------------------------------------------------------------------

async function refreshSessions() {
  try {
    state.sessions = (await api("GET", "/v1/sessions?limit=200")).sessions;
  } catch (err) { return; }
  const list = $("#sessions");
  list.replaceChildren(...state.sessions.map((s) => el("li", {
    class: s.session_id === state.current ? "current" : "",
    dataset: { sessionId: s.session_id },
    onclick: () => openSession(s.session_id),
  }, s.title || s.session_id, el("small", { text: `${s.started_by} · ${s.started_at.slice(0, 19).replace("T", " ")}` +
    (s.cluster ? ` · cluster ${s.cluster}` : "") }))));
  arrangeGroups();
  showSessionCluster();
}

// The clusters a new session may name (issue 21; GET /v1/clusters). With one cluster (or a
// gateway that does not list them) there is nothing to choose: the choice stays hidden.
async function loadClusters() {
  let listed = [];
  try {
    const r = await api("GET", "/v1/clusters");
    listed = Array.isArray(r) ? r : (r && r.clusters) || [];
  } catch (err) { listed = []; }
  showClusterChoice(listed);
}

function showClusterChoice(listed) {
  const pick = $("#new-cluster");
  const names = listed.map((c) => (typeof c === "string" ? { name: c } : c)).filter((c) => c && c.name);
  pick.replaceChildren(...names.map((c) => el("option", { value: c.name,
    text: `${c.name}${c.default ? " (default)" : ""}${c.connected === false ? " — not connected" : ""}` })));
  const def = names.find((c) => c.default);
  if (def) pick.value = def.name;
  pick.hidden = names.length < 2;
  pick.disabled = !(state.me && state.me.can_chat);
}

function showSessionCluster() {
  const s = state.sessions.find((x) => x.session_id === state.current);
  if (!state.current) return;
  $("#session-title").textContent = `Session ${state.current}` + (s && s.cluster ? ` · cluster ${s.cluster}` : "");
}

async function newSession() {
  const pick = $("#new-cluster");
  const body = !pick.hidden && pick.value ? { cluster: pick.value } : {};
  const created = await api("POST", "/v1/sessions", body);
  await refreshSessions();
  openSession(created.session_id);
  return created.session_id;
}

function openSession(sid) {
  if (state.current === sid && state.es) return;
  closeStream();
  state.current = sid;
  state.lastId = 0;
  state.queue = [];
  $("#timeline").replaceChildren();
  showSessionCluster();
  document.querySelectorAll("#sessions li").forEach((li) =>
    li.classList.toggle("current", li.dataset.sessionId === sid));
  const params = new URLSearchParams(location.hash.slice(1));
  params.set("session", sid);
  history.replaceState(null, "", "#" + params);
  showView("timeline");
  arrangeGroups();
  showSessionPending();
  openStream();
}

// -- the audit view of a session ---------------------------------------------------------------

function showView(which) {
  $("#timeline").hidden = which !== "timeline";
  $("#audit-view").hidden = which !== "audit";
  $("#show-timeline").classList.toggle("current", which === "timeline");
  $("#show-audit").classList.toggle("current", which === "audit");
  if (which === "audit") loadAudit();
}

async function loadAudit() {
  const box = $("#audit-view");
  const sid = state.current;
  if (!sid) { box.replaceChildren(el("p", { class: "muted", text: "No session selected." })); return; }
  box.replaceChildren(el("p", { class: "muted", text: "Checking the session's log…" }));
  let r;
  try {
    r = await api("GET", `/v1/sessions/${encodeURIComponent(sid)}/audit`);
  } catch (err) {
    box.replaceChildren(el("p", { class: "error", text: `No audit: ${err.message}` }));
    return;
  }
  if (sid !== state.current) return;
  const integ = r.integrity || {};
  const ch = integ.chain || {};
  const problems = [
    ...(ch.breaks || []).map((b) => `chain break at #${b.seq}: ${b.problem}`),
    ...(ch.forks || []).map((f) => `fork: ${words(f)}`),
    ...(integ.problems || []).map((p) => `${p.seq ? "at #" + p.seq : "overall"}: ${p.problem}`),
  ];
  const verdict = el("p", { class: "verdict " + (integ.ok ? "intact" : "broken"),
    text: integ.ok
      ? `Integrity: intact — ${ch.checked || 0} events checked, hash chain and signatures hold (head #${ch.head_seq || 0})`
      : `Integrity: BROKEN — ${problems.length} problem(s)` });
  const writes = (r.writes || []).map((w) => el("li", {},
    `${w.tool} ${describeTarget({ ...w.target, cluster: w.target.cluster || w.cluster })} — asked by ${w.requested_by || "?"}; `,
    el("strong", { text: w.decision }),
    (w.approvers || []).length ? ` by ${w.approvers.join(", ")}` : "",
    w.reason ? ` (${w.reason})` : "",
    w.result ? `; result ${w.result}` : "",
    (w.diff || []).length ? el("div", { class: "muted", text: w.diff.join("; ") }) : null));
  box.replaceChildren(...[verdict,
    problems.length ? el("ul", { class: "problems" }, ...problems.map((p) => el("li", { class: "error", text: p }))) : null,
    el("h3", { text: "Decisions" }),
    writes.length ? el("ul", { class: "writes" }, ...writes) : el("p", { class: "muted", text: "No writes in this session." }),
    el("h3", { text: "Timeline" }),
    el("ol", { class: "audit-timeline" }, ...(r.timeline || []).map((e) => el("li", {},
      el("span", { class: "seq", text: `#${e.seq} ${String(e.at || "").slice(11, 19)}` }), e.text)))]
    .filter(Boolean));
}

// -- the live timeline -------------------------------------------------------------------------

function setConn(kind, text) {
  const c = $("#conn");
  c.className = "conn " + kind;
  c.textContent = text;
}

function closeStream() {
  clearTimeout(state.esTimer);
  if (state.es) { state.es.close(); state.es = null; }
}

function openStream() {
  const sid = state.current;
  if (!sid) return;
  const q = new URLSearchParams({ access_token: state.token, last_event_id: String(state.lastId) });
  const es = new EventSource(`/v1/sessions/${encodeURIComponent(sid)}/events?${q}`);
  state.es = es;
  setConn("reconnecting", "connecting…");
  es.onopen = () => { state.esBackoff = 1000; setConn("live", "live"); };
  es.onerror = () => {
    if (state.es !== es) return;
    setConn("reconnecting", "reconnecting…");
    // The browser retries by itself (with Last-Event-ID); when it gives up, start over from
    // the last id this page has shown.
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      state.es = null;
      state.esTimer = setTimeout(openStream, state.esBackoff);
      state.esBackoff = Math.min(state.esBackoff * 2, 10000);
    }
  };
  for (const type of state.eventTypes) {
    es.addEventListener(type, (msg) => { if (state.es === es) onEvent(type, msg); });
  }
}

function onEvent(type, msg) {
  if (type === "reset") {  // our id is not in this log: the stream restarts from its start
    state.lastId = 0;
    state.toldSeq = 0;  // another log (restored or replaced): what it said of the old is moot
    state.queue = [];
    $("#timeline").replaceChildren();
    return;
  }
  state.queue.push([type, msg, state.es]);
  showQueued();
}

// An event id is the log's stream sequence, so it is never beyond the log's last sequence. An
// id past the last one the server told this page is checked against a fresh answer first; one
// past that too is not an event of the log (a forged frame): it is ignored, and taken neither
// as the last id shown nor as a reason to drop what comes after it.
async function showQueued() {
  while (state.queue.length && !state.asking) {
    const head = state.queue[0];
    const [type, msg, es] = head;
    if (es !== state.es) { state.queue.shift(); continue; }  // from a stream since closed
    const id = Number(msg.lastEventId);
    if (!Number.isSafeInteger(id) || id <= state.lastId) { state.queue.shift(); continue; }
    if (id > state.toldSeq) {
      state.asking = true;
      let told = null;
      try { told = await api("GET", "/v1/log"); } catch (err) { told = null; }
      state.asking = false;
      if (told === null) {  // the gateway is away for a moment: ask again shortly
        setTimeout(showQueued, 1000);
        return;
      }
      state.toldSeq = Math.max(state.toldSeq, Number(told.last_seq) || 0);
      if (state.queue[0] !== head) continue;  // the session changed meanwhile
      if (id > state.toldSeq) { state.queue.shift(); continue; }
    }
    state.queue.shift();
    state.lastId = id;
    let data = {};
    try { data = JSON.parse(msg.data); } catch (e) { data = { raw: msg.data }; }
    appendEvent(id, type, data);
    if (type === "approval.requested") {
      // The card this session just caused: shown, highlighted and scrolled to once it is listed.
      refreshApprovals().then(() => showCard(data.approval_id, false));
    } else if (type.startsWith("approval.") || type === "decision.rejected") refreshApprovals();
  }
}

function describeTarget(t) {
  if (!t) return "";
  const obj = t.name ? `${t.kind || "object"}/${t.name}` : (t.kind || "");
  return [obj, t.namespace && `in ${t.namespace}`, t.cluster && `on cluster ${t.cluster}`].filter(Boolean).join(" ");
}

function fmtValue(v) {
  if (v === null || v === undefined) return "∅";
  return typeof v === "string" ? v : JSON.stringify(v);
}

function fmtArgs(args) {
  // The args that matter, readable: "replicas=3, limits.memory=512Mi" (target fields aside).
  const skip = new Set(["cluster", "kind", "name", "namespace"]);
  const out = [];
  const walk = (prefix, v) => {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      for (const [k, x] of Object.entries(v)) walk(prefix ? `${prefix}.${k}` : k, x);
    } else if (v !== null && v !== undefined && v !== "" && v !== false) {
      out.push(`${prefix}=${typeof v === "string" ? v : JSON.stringify(v)}`);
    }
  };
  for (const [k, v] of Object.entries(args || {})) if (!skip.has(k)) walk(k, v);
  return out.join(", ");
}

// A call as one compact, kubectl-like line: "scale deployment/web --replicas=5 -n shop". The args
// are raw (an MCP client's, not yet checked by the gate): every one is shown, whatever its type.
function callLine(tool, args) {
  if (!args || typeof args !== "object" || Array.isArray(args)) return `${tool} ${JSON.stringify(args)}`;
  const obj = args.kind && args.name ? `${args.kind}/${args.name}` : String(args.name || args.kind || "");
  const flags = [];
  const walk = (prefix, v) => {
    if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) {
      for (const [k, x] of Object.entries(v)) walk(`${prefix}.${k}`, x);
    } else if (v === true) flags.push(`--${prefix}`);
    else if (v !== null && v !== undefined && v !== false && v !== "" &&
             !(typeof v === "object" && Object.keys(v).length === 0)) {
      flags.push(`--${prefix}=${typeof v === "string" ? v : JSON.stringify(v)}`);
    }
  };
  for (const [k, v] of Object.entries(args)) {
    if (!["kind", "name", "namespace", "cluster"].includes(k)) walk(k, v);
  }
  if (args.namespace && !args.all_namespaces) flags.push(`-n ${args.namespace}`);
  if (args.cluster) flags.push(`--context=${args.cluster}`);
  const text = [tool, obj, ...flags].filter(Boolean).join(" ");
  return text.length > 400 ? text.slice(0, 400) + "…" : text;
}

// An MCP client's call: who asked (the token's principal), through which client (as it named
// itself), what; then the requester's why, quotes and expected outcome, if given.
function requestedLine(d) {
  const why = [d.rationale && ` — ${d.rationale}`,
    (d.evidence || []).length && ` — quoting: ${d.evidence.map((e) => `“${e}”`).join(" ")}`,
    d.expected_outcome && ` — expects: ${d.expected_outcome}`].filter(Boolean).join("");
  return [`${d.actor}${d.client ? " via " + d.client : ""} (MCP) asked: `, callLine(d.tool, d.args) + why];
}

function summary(type, d) {
  switch (type) {
    case "session.started": {
      const more = [d.title, d.cluster && `on cluster ${d.cluster}`].filter(Boolean).join(" · ");
      return [`Session started by ${d.actor}`, more ? `: ${more}` : ""];
    }
    case "user.message": return [`${d.actor}: `, d.text];
    case "assistant.message": return ["Interlock: ", d.text];
    case "tool.requested": return requestedLine(d);
    case "tool.proposed":
      return [`Proposed ${d.tool} ${describeTarget(d.target)}`, d.rationale ? ` — ${d.rationale}` : ""];
    case "tool.classified": return [`Classified as ${d.access}`, ` (${d.rule})`];
    case "tool.refused": return ["Refused: ", d.reason];
    case "approval.requested":
      if (d.summary || d.title) return ["Approval needed: ", d.summary || d.title];
      return [`Approval needed for ${d.calls.length} call(s): `,
        d.calls.map((c) => `${c.tool} ${describeTarget(c.target)} ` +
          (c.diff || []).map((f) => `${f.path}: ${fmtValue(f.before)} → ${fmtValue(f.after)}`).join(", ")).join("; ")];
    case "approval.decided":
      return [`${d.approver} decided: ${d.decision}`, (d.reason ? ` — ${d.reason}` : (d.args ? " (modified)" : "")) +
        (d.signed && d.signed.key_id ? ` · signed with ${d.signed.authenticator_data ? "passkey" : "key"} ${d.signed.key_id}` : " · not signed")];
    case "approval.granted": return [`Granted by ${d.approver}`, ""];
    case "approval.denied": return [`Denied by ${d.approver}`, d.reason ? `: ${d.reason}` : ""];
    case "approval.expired": return ["Approval expired", ""];
    case "preview.recorded":
      return [d.ok ? "Dry run: " : "Dry run failed: ",
        d.ok ? ((d.diff || []).map((f) => `${f.path}: ${fmtValue(f.before)} → ${fmtValue(f.after)}`).join(", ") || "no field changes")
               + (d.blast_radius && d.blast_radius.summary ? ` — ${d.blast_radius.summary}` : "")
             : d.error];
    case "tool.amended": return [`${d.amended_by} changed the args: `, `${d.tool} ${fmtArgs(d.args)}`];
    case "decision.rejected": return ["Decision rejected: ", d.reason];
    case "tool.verified": return [`${verdictWords(d.outcome)}: `, `${d.check || ""}${d.detail ? " — " + d.detail : ""}`];
    case "step.planned": return stepLine(d);
    case "tool.started": return ["Running…", ""];
    case "tool.result": return [`Result (${d.status})`, ""];
    case "command.rejected": return ["Could not run: ", d.reason];
    case "command.refused": return ["The executor refused: ", d.reason];
    case "turn.completed": return ["Done", d.reason ? ` (${d.reason})` : ""];
    case "session.cancelled": return ["Cancelled", d.reason ? `: ${d.reason}` : ""];
    default: return ["", ""];
  }
}

// Verification outcomes in words; "not_as_approved" means the cluster ended somewhere else.
function verdictWords(outcome) {
  return ({ verified: "Verified", failed: "Verification failed", timed_out: "Not verified in time",
            skipped: "Not verified (nothing to wait for)", not_as_approved: "Not as approved" })[outcome]
    || `Verification: ${String(outcome || "").replaceAll("_", " ")}`;
}

// A model step as one line: what it said and which calls it asked for; the rest on demand.
function stepLine(d) {
  const calls = (d.calls || []).map((c) =>
    `${c.tool}${describeTarget(c.args || {}) ? " " + describeTarget(c.args || {}) : ""}` +
    (c.rejected ? " (declined by the planner)" : ""));
  const said = (d.text || "").replace(/\s+/g, " ").trim();
  const head = `Model step${d.iteration ? " " + d.iteration : ""}: `;
  const parts = [];
  if (calls.length) parts.push(`asks for ${calls.length} call(s): ${calls.join(", ")}`);
  if (said) parts.push(`“${said.length > 140 ? said.slice(0, 140) + "…" : said}”`);
  if (d.stop && d.stop !== "answered") parts.push(`(${d.stop.replaceAll("_", " ")})`);
  return [head, parts.join(" — ") || "(no text, no calls)"];
}

function details(label, data) {
  const { type: _t, session_id: _s, event_id: _e, occurred_at: _o, ...rest } = data;
  return el("details", {}, el("summary", { text: label }),
    el("pre", { text: JSON.stringify(rest, null, 1).slice(0, 20000) }));
}

function appendEvent(id, type, d) {
  const [head, rest] = summary(type, d);
  const bad = type === "tool.verified" && d.outcome !== "verified" && d.outcome !== "skipped";
  const li = el("li", { class: type.replace(".", "-") + (d.status ? " " + d.status : "") + (bad ? " bad" : ""),
                        dataset: { seq: String(id), type } },
    el("span", { class: "seq", text: `#${id}` }),
    el("span", { class: "type", text: type }),
    el("span", { class: "text", text: head + (rest || "") }));
  if (type === "tool.result" && d.output) li.append(el("pre", { text: d.output }));
  if (type === "step.planned") li.append(details("details", d));
  if (type === "approval.requested" && d.approval_id) {
    li.append(" ", el("button", { type: "button", class: "linkish show-card", dataset: { approvalId: d.approval_id },
      text: "show the card", onclick: () => showCard(d.approval_id, true) }));
  }
  if (!head && !rest) li.append(details("event fields", d));
  const tl = $("#timeline");
  const atBottom = tl.scrollTop + tl.clientHeight >= tl.scrollHeight - 20;
  tl.append(li);
  if (atBottom) tl.scrollTop = tl.scrollHeight;
}

// -- chat --------------------------------------------------------------------------------------

// Enter sends; Shift+Enter is a new line (a manifest for `kubectl apply -f -`).
function chatKey(ev) {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $("#chat-form").requestSubmit();
  }
}

async function send(ev) {
  ev.preventDefault();
  const input = $("#chat-input");
  const text = input.value.trim();
  if (!text || state.sending) return;
  state.sending = true;
  $("#send").disabled = true;
  $("#chat-error").textContent = "";
  try {
    const sid = state.current || await newSession();
    await api("POST", `/v1/sessions/${encodeURIComponent(sid)}/messages`, { text });
    input.value = "";
  } catch (err) {
    $("#chat-error").textContent = `Not sent: ${err.message}`;
  } finally {
    state.sending = false;
    $("#send").disabled = !(state.me && state.me.can_chat);
  }
}

// -- approvals ---------------------------------------------------------------------------------

async function refreshApprovals() {
  let list;
  try {
    list = (await api("GET", "/v1/approvals?state=pending")).approvals;
  } catch (err) { return; }
  const pending = new Map(list.map((a) => [a.approval_id, a]));
  state.approvals = pending;
  const box = $("#approvals");
  for (const card of [...box.querySelectorAll(".approval-card")]) {
    const id = card.dataset.approvalId;
    // Cards this page decided stay, showing what happened; others go once decided elsewhere.
    if (!pending.has(id) && !state.inflight.has(id) && !state.submitted.has(id)) card.remove();
  }
  for (const a of list) {
    const existing = box.querySelector(`.approval-card[data-approval-id="${CSS.escape(a.approval_id)}"]`);
    if (existing) updateCard(existing, a);
    else groupFor(a.session_id).querySelector(".cards").append(renderCard(a));
  }
  arrangeGroups();
  $("#approval-count").textContent = String(pending.size);
  showSessionPending();
}

function sessionLabel(sid) {
  const s = state.sessions.find((x) => x.session_id === sid);
  return s && s.title ? `${s.title} (${sid})` : `Session ${sid}`;
}

// Approvals are grouped by the session that caused them; each group links to its session.
function groupFor(sid) {
  const box = $("#approvals");
  let g = box.querySelector(`.approval-group[data-session-id="${CSS.escape(sid)}"]`);
  if (!g) {
    g = el("section", { class: "approval-group", dataset: { sessionId: sid } },
      el("h3", {}, el("span", { class: "group-label", text: sessionLabel(sid) }),
        el("button", { type: "button", class: "linkish open-session", text: "open session",
                       onclick: () => openSession(sid) })),
      el("div", { class: "cards" }));
    box.append(g);
  }
  return g;
}

function arrangeGroups() {
  const box = $("#approvals");
  for (const g of [...box.querySelectorAll(".approval-group")]) {
    if (!g.querySelector(".approval-card")) { g.remove(); continue; }
    g.classList.toggle("current", g.dataset.sessionId === state.current);
    g.querySelector(".group-label").textContent =
      (g.dataset.sessionId === state.current ? "This session: " : "") + sessionLabel(g.dataset.sessionId);
  }
  // The open session's cards come first: the card you just caused is the one at the top.
  const cur = state.current && box.querySelector(`.approval-group[data-session-id="${CSS.escape(state.current)}"]`);
  if (cur && box.firstElementChild !== cur) box.prepend(cur);
}

// Session view → its pending cards: a line above the timeline with a link to each.
function showSessionPending() {
  const line = $("#session-pending");
  const mine = [...state.approvals.values()].filter((a) => a.session_id === state.current);
  line.hidden = mine.length === 0;
  line.replaceChildren(`${mine.length} pending approval(s) for this session: `,
    ...mine.map((a, i) => el("button", { type: "button", class: "linkish", dataset: { approvalId: a.approval_id },
      text: (i ? ", " : "") + (a.summary || a.title || a.calls.map((c) => `${c.tool} ${describeTarget(c.target)}`).join(" + ")),
      onclick: () => showCard(a.approval_id, true) })));
}

function showCard(approvalId, smooth) {
  const card = approvalId && $("#approvals").querySelector(
    `.approval-card[data-approval-id="${CSS.escape(approvalId)}"]`);
  if (!card) return;
  for (const c of document.querySelectorAll(".approval-card.highlight")) c.classList.remove("highlight");
  card.classList.add("highlight");
  state.highlight = approvalId;
  card.scrollIntoView({ behavior: smooth ? "smooth" : "auto", block: "start" });
}

function remaining(a) {
  return Math.max(0, Math.floor((Date.parse(a.expires_at) - Date.now()) / 1000));
}

function fmtDuration(s) {
  const m = Math.floor(s / 60);
  return m >= 60 ? `${Math.floor(m / 60)}h ${m % 60}m` : `${m}:${String(s % 60).padStart(2, "0")}`;
}

function tickExpiry() {
  for (const span of document.querySelectorAll(".approval-card .expiry")) {
    const a = state.approvals.get(span.dataset.approvalId);
    if (!a) continue;
    const s = remaining(a);
    span.textContent = s > 0 ? `in ${fmtDuration(s)} (${a.expires_at.slice(11, 19)} UTC)` : "expired";
    span.classList.toggle("soon", s < 120);
  }
}

// Plain words for a list, a flag or a nested object: never JSON on the card.
function words(v) {
  if (v === null || v === undefined || v === "") return "";
  if (Array.isArray(v)) return v.map(words).filter(Boolean).join(", ");
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v === "object") return Object.entries(v).map(([k, x]) => `${k.replaceAll("_", " ")} ${words(x)}`).join(", ");
  return String(v);
}

function listed(items, n = 5) {
  return items.length > n ? `${items.slice(0, n).join(", ")} and ${items.length - n} more` : items.join(", ");
}

function blastText(b) {
  if (!b) return "";
  const parts = [];
  if (b.summary) parts.push(b.summary);
  if (b.replicas_before !== null && b.replicas_before !== undefined)
    parts.push(`replicas ${b.replicas_before} → ${b.replicas_after}`);
  const pods = b.pods_affected || [];
  if (pods.length) parts.push(`${pods.length} pod(s) affected: ${listed(pods)}`);
  const known = {
    same_name_namespaces: (v) => `the same name also exists in ${listed(v)}`,
    mounted_by: (v) => `still mounted by ${listed(v)}`,
    headless: () => "a headless service (DNS discovery)",
    selects: (v) => `routes to ${v.length} pod(s): ${listed(v)}`,
    owners: (v) => `owned by ${listed(v)}`,
    affected_namespaces: (v) => `namespaces affected: ${listed(v)}`,
    deletes_contents: (v) => `deleted with it: ${v.join("; ")}`,
    autoscaler: (v) => `replicas owned by ${v}: a manual scale is undone`,
  };
  for (const [k, v] of Object.entries(b)) {
    if (["summary", "replicas_before", "replicas_after", "pods_affected", "production_like"].includes(k)) continue;
    if (Array.isArray(v) ? !v.length : (v === null || v === undefined || v === "" || v === false || v === 0)) continue;
    parts.push(known[k] ? known[k](v) : `${k.replaceAll("_", " ")}: ${words(v)}`);
  }
  return parts.join("; ") || "this object only";
}

function where(t, context) {
  // The cluster is part of "where", named plainly (issue 21): the one the gate routed the call
  // to, else the context the executor's dry run resolved, else the executor's default one.
  const ns = t.namespace ? `namespace ${t.namespace}` : "cluster-wide (no namespace)";
  return `${ns} on cluster ${t.cluster || context || "(default context)"}`;
}

function diffTable(diff) {
  return el("table", { class: "diff" }, el("tbody", {}, ...diff.map((f) => el("tr", {},
    el("td", { class: "path", text: f.path }), el("td", { class: "before", text: fmtValue(f.before) }),
    el("td", { class: "arrow", text: "→" }), el("td", { class: "after", text: fmtValue(f.after) })))));
}

// Why this principal may not decide, from the request's own policy (the gateway enforces it;
// the page only says so before the click).
function barredReason(a) {
  if (!state.me) return "";
  const me = state.me.name;
  if ((a.forbidden_approvers || []).includes(me))
    return `You may not decide this one: you (${me}) asked for or changed it, and the policy ` +
      "bars the requester from approving it alone. Another approver must decide.";
  if ((a.approvals || []).includes(me))
    return `You have approved; ${a.required_approvals || 1} approvals are required: another approver must add theirs.`;
  return "";
}

function renderCard(a) {
  const card = el("article", { class: "approval-card", dataset: { approvalId: a.approval_id, sessionId: a.session_id || "" } });
  if (a.approval_id === state.highlight) card.classList.add("highlight");
  const title = a.summary || a.title || a.calls.map((c) => `${c.tool} ${describeTarget(c.target)}`).join(" + ");
  card.append(el("h3", { text: `Approve: ${title}` }));
  // Risk flags first: they are what the human must not miss, above the model's rationale.
  const prodLike = a.calls.some((c) => c.blast_radius && c.blast_radius.production_like);
  if ((a.risk_flags && a.risk_flags.length) || prodLike)
    card.append(el("div", { class: "flags" },
      prodLike ? el("span", { class: "flag prod", text: "production" }) : null,
      ...(a.risk_flags || []).map((f) => el("span", { class: "flag", text: f }))));
  a.calls.forEach((c, i) => {
    const t = c.target || {};
    if (a.calls.length > 1)
      card.append(el("p", { class: "call-head", text: `${i + 1} of ${a.calls.length}: ${c.tool} ${describeTarget(t)}` }));
    const dl = el("dl", {},
      el("dt", { text: "What" }), el("dd", { text: `${c.tool} ${describeTarget(t)}${fmtArgs(c.args) ? " — " + fmtArgs(c.args) : ""}` }),
      el("dt", { text: "Where" }), el("dd", { class: "where", text: where(t, c.context) }),
      el("dt", { text: "Blast radius" }), el("dd", { class: "blast", text: blastText(c.blast_radius) }));
    card.append(dl);
    if ((c.diff || []).length) card.append(diffTable(c.diff));
    else card.append(el("p", { class: "muted", text: c.preview_error ? `No preview: ${c.preview_error}`
      : c.tool === "delete" ? `Deletes ${describeTarget(t)}: the object is gone, not changed (see blast radius).`
      : "No field changes previewed." }));
  });
  const gathered = a.gathered_evidence || [];
  const quoted = a.evidence || [];
  const info = el("dl", {},
    el("dt", { text: "Why" }), el("dd", { text: a.rationale || "(no rationale given)" }),
    gathered.length ? el("dt", { text: "Facts" }) : null,
    gathered.length ? el("dd", { class: "gathered" }, el("span", { class: "gathered-by", text: "gathered by Interlock" }),
      el("ul", {}, ...gathered.map((e) => el("li", { text: words(e) })))) : null,
    quoted.length ? el("dt", { text: "Evidence" }) : null,
    quoted.length ? el("dd", { class: "quoted" }, el("span", { class: "muted", text: "quoted by the requester" }),
      el("ul", {}, ...quoted.map((e) => el("li", { text: words(e) })))) : null,
    el("dt", { text: "Expected" }), el("dd", { text: a.expected_outcome || "(not stated)" }),
    el("dt", { text: "Requested by" }), el("dd", { text: (a.requested_by || a.actor || "") +
      (a.requested_via ? ` via ${a.requested_via}` : "") }),
    el("dt", { text: "Expires" }), el("dd", {}, el("span", { class: "expiry", dataset: { approvalId: a.approval_id } })),
    el("dt", { text: "Approvals" }), el("dd", { class: "count", text: `${(a.approvals || []).length} of ${a.required_approvals || 1}` }),
    el("dt", { class: "signed-label", text: "Signed" }), el("dd", { class: "signed" }));
  card.append(info);
  showSigned(card, a);
  const policy = [...(a.policy || [])];
  if ((a.forbidden_approvers || []).length)
    policy.push(`may not approve: ${a.forbidden_approvers.join(", ")} (asked for or changed it)`);
  if (policy.length)
    card.append(el("p", { class: "muted policy", text: "Policy: " + policy.join("; ") }));
  if (a.history && a.history.length)
    card.append(el("div", { class: "history" }, el("strong", { text: "Recent changes to this target" }),
      el("ul", {}, ...a.history.map((h) => el("li", { text: words(h) })))));

  const status = el("p", { class: "card-status", role: "status" });
  const canDecide = state.me && state.me.can_decide;
  const actions = el("div", { class: "actions" });
  const approve = el("button", { type: "button", class: "approve", text: "Approve" });
  const deny = el("button", { type: "button", class: "deny", text: "Deny…" });
  const modify = el("button", { type: "button", text: "Modify…" });
  actions.append(approve, deny, modify);
  const denyBox = el("div", { class: "deny-box", hidden: "" },
    el("input", { type: "text", class: "deny-reason", placeholder: "Why deny? (required)" }),
    el("button", { type: "button", class: "deny confirm-deny", text: "Deny with this reason" }));
  const modifyBox = el("div", { class: "modify-box", hidden: "" },
    el("label", { text: "Args to approve instead (a new proposal: new dry run, new approval)" }),
    el("textarea", { class: "modify-args" }),
    el("button", { type: "button", class: "approve confirm-modify", text: "Approve modified" }));
  modifyBox.querySelector("textarea").value = JSON.stringify(a.calls.length === 1 ? a.calls[0].args : {}, null, 2);
  if (a.calls.length !== 1) modify.disabled = true;
  // A modification is a new proposal that names its modifier: where the policy bars the
  // requester, the modifier is barred from approving the new card too.
  const me = state.me ? state.me.name : "you";
  modifyBox.prepend(el("p", { class: "modify-note", text: `The new request will name you (${me}) as its modifier in the policy line` +
    ((a.policy || []).length || (a.forbidden_approvers || []).length
      ? "; like the requester, you then may not approve it: another approver must." : ".") }));
  const barred = el("p", { class: "barred", role: "note", hidden: "" });
  card.append(actions, barred, denyBox, modifyBox, status);
  if (!canDecide) {
    for (const b of card.querySelectorAll("button")) b.disabled = true;
    status.textContent = "You may view this approval; an approver must decide.";
  } else applyBar(card, a);

  approve.addEventListener("click", () => decide(card, a, { decision: "approve" }));
  deny.addEventListener("click", () => { denyBox.hidden = !denyBox.hidden; modifyBox.hidden = true; });
  modify.addEventListener("click", () => { modifyBox.hidden = !modifyBox.hidden; denyBox.hidden = true; });
  denyBox.querySelector("button").addEventListener("click", () => {
    const reason = denyBox.querySelector("input").value.trim();
    if (!reason) { status.textContent = "A denial needs a reason."; return; }
    decide(card, a, { decision: "deny", reason });
  });
  modifyBox.querySelector("button").addEventListener("click", () => {
    let args;
    try { args = JSON.parse(modifyBox.querySelector("textarea").value); } catch (e) {
      status.textContent = `The args are not valid JSON: ${e.message}`; return;
    }
    if (!args || typeof args !== "object" || Array.isArray(args)) {
      status.textContent = "The args must be a JSON object."; return;
    }
    decide(card, a, { decision: "approve", args });
  });
  if (state.submitted.has(a.approval_id)) lockCard(card, "Decision sent.");
  setTimeout(tickExpiry, 0);
  return card;
}

// Who signed the decisions that count so far, with which key (the gate's rejections are not
// among them: they count for nothing).
function showSigned(card, a) {
  const dd = card.querySelector("dd.signed");
  if (!dd) return;
  const signed = a.signatures || [];
  dd.hidden = card.querySelector("dt.signed-label").hidden = signed.length === 0;
  dd.replaceChildren(el("ul", {}, ...signed.map((x) => el("li", {
    text: `${x.approver} ${x.decision === "deny" ? "denied" : "approved"} · ` +
      (x.key_id ? `${x.kind || "key"} ${x.key_id}` : "not signed") }))));
}

function updateCard(card, a) {
  const count = card.querySelector(".count");
  if (count) count.textContent = `${(a.approvals || []).length} of ${a.required_approvals || 1}`;
  showSigned(card, a);
  if (state.me && state.me.can_decide && !state.inflight.has(a.approval_id) && !state.submitted.has(a.approval_id))
    applyBar(card, a);
}

function applyBar(card, a) {
  const why = barredReason(a);
  const barred = card.querySelector(".barred");
  barred.hidden = !why;
  barred.textContent = why;
  for (const b of card.querySelectorAll(".actions button, .deny-box button, .modify-box button")) {
    if (why) b.title = why; else b.removeAttribute("title");
    b.disabled = Boolean(why) || (b.textContent === "Modify…" && a.calls.length !== 1);
  }
}

// A decision that could not be signed: the buttons work again and the card says why (and, where
// it helps, the CLI command that can decide instead).
function unlockCard(card, a, text, command) {
  const s = card.querySelector(".card-status");
  s.replaceChildren(text, ...(command ? [" ", el("code", { text: command })] : []));
  s.classList.remove("ok");
  s.classList.add("error");
  for (const b of card.querySelectorAll("button")) b.disabled = false;
  applyBar(card, state.approvals.get(a.approval_id) || a);
}

function lockCard(card, text, ok = true) {
  for (const b of card.querySelectorAll("button")) b.disabled = true;
  const s = card.querySelector(".card-status");
  s.textContent = text;
  s.classList.toggle("ok", ok);
  s.classList.remove("error");
}

async function decide(card, a, body) {
  const id = card.dataset.approvalId;
  // One decision per approval from this page, whatever is clicked how often.
  if (state.inflight.has(id) || state.submitted.has(id)) return;
  state.inflight.add(id);
  lockCard(card, "Sign with your passkey…");
  try {
    if (body.args !== undefined) {
      // A secret value typed into Modify is sealed first: what is signed (and recorded) is its
      // reference, never the value.
      const sealed = await api("POST", `/v1/approvals/${encodeURIComponent(id)}/edits`, { args: body.args });
      body = { ...body, args: sealed.edits };
    }
    let signature;
    try {
      signature = await signDecision(a, body);
    } catch (err) {
      // Nothing was sent: the card stays as it was, with why it could not be signed.
      unlockCard(card, a, err instanceof CannotSign ? err.message : `Not signed: ${err.message}`, err.command);
      return;
    }
    lockCard(card, "Sending…");
    const res = await api("POST", `/v1/approvals/${encodeURIComponent(id)}/decision`, { ...body, signature });
    state.submitted.add(id);
    const what = body.decision === "deny" ? "Denied" : (res.modified ? "Approved with changes" : "Approved");
    lockCard(card, `${what} — ${res.approvals || 0} of ${res.required_approvals || 1} approvals; the gate takes it from here.`);
  } catch (err) {
    if (err.status === 0) {
      // Unknown whether it was stored: look before allowing another click.
      lockCard(card, "The gateway did not answer; checking…", false);
      await refreshApprovals();
      if (state.approvals.has(id) && !(state.approvals.get(id).approvals || []).includes(state.me.name)) {
        for (const b of card.querySelectorAll("button")) b.disabled = false;
        card.querySelector(".card-status").textContent = "Not recorded; try again.";
      }
    } else {
      // 403/409/410 are final for this page; a 400 (e.g. bad modified args) may be corrected.
      const final = [403, 409, 410].includes(err.status);
      if (final) state.submitted.add(id);
      lockCard(card, `Refused (${err.status}): ${err.message}`, false);
      if (!final) for (const b of card.querySelectorAll("button")) b.disabled = false;
    }
  } finally {
    state.inflight.delete(id);
  }
}

// -- passkeys: registering one, and signing decisions with it ---------------------------------

// The bytes WebAuthn takes and gives, as the base64url text the API speaks (no padding).
function b64url(buf) {
  let bin = "";
  for (const b of new Uint8Array(buf)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function unb64url(text) {
  const b64 = String(text).replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
}

class CannotSign extends Error {
  constructor(message, command) { super(message); this.command = command || ""; }
}

// Why this page cannot use passkeys at all ("" when it can).
function passkeysUnavailable() {
  if (!window.PublicKeyCredential || !navigator.credentials || !window.isSecureContext || !crypto.subtle)
    return "This browser cannot use passkeys here (they need HTTPS, or http://localhost).";
  if (/^[0-9.]+$/.test(location.hostname) || location.hostname.includes(":"))
    return `Passkeys belong to a host name, not an IP address: open the Command Center at ` +
      `${location.protocol}//localhost${location.port ? ":" + location.port : ""}/ (or its DNS name).`;
  return "";
}

async function loadKeys() {
  try {
    state.keys = await api("GET", "/v1/approvers");
  } catch (err) {
    state.keys = state.keys || null;
  }
  showPasskeys();
  return state.keys;
}

// This principal's passkeys that can sign: enrolled, not revoked.
function myPasskeys() {
  const me = state.me && state.me.name;
  return ((state.keys && state.keys.approvers) || []).filter((k) =>
    k.principal === me && k.kind === "passkey" && !k.revoked && k.credential_id);
}

function showPasskeys() {
  const box = $("#passkeys");
  if (!box || !state.me || !state.me.can_decide) return;
  box.hidden = false;
  const me = state.me.name;
  const keys = (state.keys && state.keys.approvers) || [];
  const enrolledIds = new Set(keys.map((k) => k.key_id));
  const mine = keys.filter((k) => k.principal === me);
  const waiting = ((state.keys && state.keys.registered) || []).filter((r) =>
    r.principal === me && !enrolledIds.has(r.credential && r.credential.key_id));
  const usable = mine.filter((k) => !k.revoked);
  const passkeys = usable.filter((k) => k.kind === "passkey");
  $("#passkeys-summary").textContent = passkeys.length
    ? `Signing as ${me} with ${passkeys.length} passkey(s)`
    : `No passkey enrolled for ${me}: register one to approve here`;
  box.classList.toggle("none", passkeys.length === 0);
  if (!passkeys.length && !box.dataset.touched) box.open = true;
  $("#passkey-list").replaceChildren(
    ...mine.map((k) => el("li", { class: k.revoked ? "revoked" : "", dataset: { keyId: k.key_id } },
      el("code", { text: k.key_id }), ` ${k.kind}${k.label ? " · " + k.label : ""} · `,
      k.revoked ? "revoked" : `enrolled${k.enrolled_by ? " by " + k.enrolled_by : ""}`)),
    ...waiting.map((r) => el("li", { class: "waiting", dataset: { keyId: r.credential.key_id } },
      el("code", { text: r.credential.key_id }), ` passkey${r.credential.label ? " · " + r.credential.label : ""}` +
        " · waiting for an admin: ", el("code", { text: `interlock keys enroll --request ${r.request_id}` }))));
  const why = passkeysUnavailable();
  $("#passkey-register").disabled = Boolean(why);
  if (why) $("#passkey-result").replaceChildren(el("p", { class: "error", text: why }));
  showSlackHelp();
}

// The Slack help beside the passkeys: whether this person's Slack user is linked (a key of kind
// slack, "slack:TEAM/USER"), and the admin's command that links it.
function showSlackHelp() {
  const box = $("#slack-help");
  if (!box || !state.me || !state.me.can_decide) return;
  box.hidden = false;
  const me = state.me.name;
  const linked = ((state.keys && state.keys.approvers) || []).filter((k) =>
    k.principal === me && k.kind === "slack" && !k.revoked);
  $("#slack-status").replaceChildren(linked.length
    ? el("span", {}, `${me} is linked to Slack user `,
        ...linked.map((k) => el("code", { text: k.key_id.replace(/^slack:/, "") })))
    : el("span", { class: "muted", text: `No Slack user is linked to ${me} yet.` }));
  $("#slack-enrol").textContent = `interlock keys enroll ${me} --slack TEAM_ID/USER_ID`;
}

async function setUpPasskeys() {
  $("#passkeys").addEventListener("toggle", () => { $("#passkeys").dataset.touched = "1"; });
  $("#passkey-register").addEventListener("click", registerPasskey);
  await loadKeys();
  setInterval(loadKeys, 30000);
}

async function registerPasskey() {
  const out = $("#passkey-result");
  const button = $("#passkey-register");
  const why = passkeysUnavailable();
  if (why) { out.replaceChildren(el("p", { class: "error", text: why })); return; }
  button.disabled = true;
  out.replaceChildren(el("p", { class: "muted", text: "Follow your browser to create the passkey…" }));
  try {
    const opts = await api("POST", "/v1/passkeys/challenge", {});
    // Enrolled or waiting for an admin: either way this device need not make another.
    const mine = [...((state.keys && state.keys.approvers) || []),
                  ...((state.keys && state.keys.registered) || []).map((r) => ({ ...r.credential, principal: r.principal }))]
      .filter((k) => k.principal === state.me.name && k.kind === "passkey" && k.credential_id);
    let cred;
    try {
      cred = await navigator.credentials.create({ publicKey: {
        challenge: unb64url(opts.challenge),
        rp: opts.rp,
        user: { ...opts.user, id: unb64url(opts.user.id) },
        pubKeyCredParams: opts.pubKeyCredParams,
        timeout: opts.timeout,
        attestation: "none",
        authenticatorSelection: opts.authenticatorSelection,
        // One passkey per person and authenticator: one already enrolled here is not made twice.
        excludeCredentials: mine.map((k) => ({ type: "public-key", id: unb64url(k.credential_id) })),
      } });
    } catch (err) {
      const text = err.name === "InvalidStateError"
        ? "This device already holds one of your passkeys (see the list above)."
        : `No passkey was created (${err.name === "NotAllowedError" ? "cancelled, or no authenticator answered" : err.message}).`;
      out.replaceChildren(el("p", { class: "error", text }));
      return;
    }
    if (!cred) { out.replaceChildren(el("p", { class: "error", text: "No passkey was created." })); return; }
    const registration = {
      id: cred.id, rawId: b64url(cred.rawId), type: cred.type,
      response: { clientDataJSON: b64url(cred.response.clientDataJSON),
                  attestationObject: b64url(cred.response.attestationObject) },
    };
    if (cred.authenticatorAttachment) registration.authenticatorAttachment = cred.authenticatorAttachment;
    const res = await api("POST", "/v1/passkeys", {
      nonce: opts.nonce, registration, label: $("#passkey-label").value.trim() });
    $("#passkey-label").value = "";
    out.replaceChildren(el("div", { class: "registered", dataset: { keyId: res.key_id, requestId: res.request_id } },
      el("p", {}, "Registered your passkey ", el("code", { class: "fingerprint", text: res.key_id }), "."),
      el("p", { text: "It signs once an admin enrols it; they check this fingerprint with you and run:" }),
      el("code", { class: "enrol-command", text: res.enrol })));
    await loadKeys();
  } catch (err) {
    out.replaceChildren(el("p", { class: "error", text: `Not registered: ${err.message}` }));
  } finally {
    button.disabled = Boolean(passkeysUnavailable());
  }
}

// The decision statement this principal signs (docs/architecture.md, "Decisions signed by
// people"): exactly what the card shows and what is sent.
function decisionStatement(a, body) {
  return JSON.stringify({
    interlock: "decision/v1",
    approval_id: a.approval_id,
    session_id: a.session_id,
    approver: state.me.name,
    decision: body.decision,
    reason: body.reason || "",
    call_hashes: a.calls.map((c) => c.call_hash),
    expires_at: a.expires_at,
    edits: body.args === undefined ? null : body.args,
  });
}

function cliCommand(a, body) {
  return body.decision === "deny" ? `interlock deny ${a.approval_id} --reason "…"` : `interlock approve ${a.approval_id}`;
}

// One touch: the authenticator signs the SHA-256 of the statement as its WebAuthn challenge.
async function signDecision(a, body) {
  const me = state.me.name;
  const command = cliCommand(a, body);
  const why = passkeysUnavailable();
  if (why) throw new CannotSign(`${why} Or decide with`, command);
  let all = myPasskeys();
  if (!all.length) { await loadKeys(); all = myPasskeys(); }
  if (!all.length)
    throw new CannotSign(`No passkey is enrolled for ${me}: register one (Your passkeys, above) and ` +
      "have an admin enrol it, or decide with", command);
  // A passkey signs only for the host it was registered on.
  const keys = all.filter((k) => !k.rp_id || k.rp_id === location.hostname);
  if (!keys.length)
    throw new CannotSign(`Your passkeys were registered at ${[...new Set(all.map((k) => k.rp_id))].join(", ")}, ` +
      `not ${location.hostname}: open the Command Center there, register one here, or decide with`, command);
  const statement = decisionStatement(a, body);
  const challenge = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(statement));
  let assertion;
  try {
    assertion = await navigator.credentials.get({ publicKey: {
      challenge,
      rpId: location.hostname,
      allowCredentials: keys.map((k) => ({ type: "public-key", id: unb64url(k.credential_id) })),
      userVerification: "preferred",
      timeout: 60000,
    } });
  } catch (err) {
    assertion = null;
  }
  const key = assertion && keys.find((k) => b64url(unb64url(k.credential_id)) === b64url(assertion.rawId));
  if (!assertion || !key)
    throw new CannotSign(`No passkey on this device can sign for ${me} (none answered, or it was cancelled): ` +
      "nothing was sent. Register one here, or decide with", command);
  const r = assertion.response;
  return {
    statement,
    key_id: key.key_id,
    signature: b64url(r.signature),
    authenticator_data: b64url(r.authenticatorData),
    client_data_json: b64url(r.clientDataJSON),
    credential_id: b64url(assertion.rawId),
  };
}

// -- start -------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  const wanted = readFragment();
  await loadAuthConfig();
  $("#login-oidc-button").addEventListener("click", () => {
    sessionStorage.setItem(RETURN_KEY, location.hash);
  });
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    forget();
    sessionStorage.setItem(TOKEN_KEY, $("#login-token").value.trim());
    signIn(wanted);
  });
  $("#logout").addEventListener("click", async () => {
    const oidc = sessionStorage.getItem(VIA_KEY) === "oidc";
    forget();
    if (oidc) {  // the refresh cookie goes too (and is revoked at the provider)
      try { await fetch("/v1/auth/logout", { method: "POST" }); } catch (e) { /* gone anyway */ }
    }
    location.hash = "";
    location.reload();
  });
  $("#chat-form").addEventListener("submit", send);
  $("#chat-input").addEventListener("keydown", chatKey);
  $("#show-timeline").addEventListener("click", () => showView("timeline"));
  $("#show-audit").addEventListener("click", () => showView("audit"));
  $("#new-session").addEventListener("click", () => newSession().catch((err) => {
    $("#chat-error").textContent = err.message;
  }));
  signIn(wanted);
});
