// Interlock Command Center: one page, no build step. Talks to the gateway's HTTP API and follows
// a session's events over Server-Sent Events. Every value from the server is rendered with
// textContent, never as HTML.
"use strict";

const TOKEN_KEY = "interlock.token";
const state = {
  token: "",
  me: null,
  eventTypes: [],
  sessions: [],
  current: "",
  lastId: 0,          // last event id shown for the current session (ids only increase)
  es: null,
  esBackoff: 1000,
  esTimer: 0,
  approvals: new Map(),  // approval_id -> approval (pending)
  inflight: new Set(),   // approval ids with a decision on the wire
  submitted: new Set(),  // approval ids this page decided: never submitted twice
  highlight: "",
  sending: false,
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

async function signIn(wantedSession) {
  state.token = sessionStorage.getItem(TOKEN_KEY) || "";
  if (!state.token) return showLogin("");
  try {
    state.me = await api("GET", "/v1/me");
  } catch (err) {
    if (err.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      return showLogin("That token is not valid.");
    }
    return showLogin(err.message);
  }
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  const roles = state.me.roles.join(", ");
  $("#who").textContent = `${state.me.name} (${roles})`;
  $("#chat-input").disabled = !state.me.can_chat;
  $("#send").disabled = !state.me.can_chat;
  $("#new-session").disabled = !state.me.can_chat;
  if (!state.me.can_chat) $("#chat-input").placeholder = "Your role may watch but not chat.";
  await loadEventTypes();
  await refreshSessions();
  await refreshApprovals();
  if (wantedSession) openSession(wantedSession);
  else if (state.sessions.length) openSession(state.sessions[0].session_id);
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
   "command.rejected", "session.cancelled"].forEach((t) => types.add(t));
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
  }, s.title || s.session_id, el("small", { text: `${s.started_by} · ${s.started_at.slice(0, 19).replace("T", " ")}` }))));
}

async function newSession() {
  const created = await api("POST", "/v1/sessions", {});
  await refreshSessions();
  openSession(created.session_id);
  return created.session_id;
}

function openSession(sid) {
  if (state.current === sid && state.es) return;
  closeStream();
  state.current = sid;
  state.lastId = 0;
  $("#timeline").replaceChildren();
  $("#session-title").textContent = `Session ${sid}`;
  document.querySelectorAll("#sessions li").forEach((li) =>
    li.classList.toggle("current", li.dataset.sessionId === sid));
  const params = new URLSearchParams(location.hash.slice(1));
  params.set("session", sid);
  history.replaceState(null, "", "#" + params);
  openStream();
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
    $("#timeline").replaceChildren();
    return;
  }
  const id = Number(msg.lastEventId);
  if (!Number.isFinite(id) || id <= state.lastId) return;  // never show an event twice
  state.lastId = id;
  let data = {};
  try { data = JSON.parse(msg.data); } catch (e) { data = { raw: msg.data }; }
  appendEvent(id, type, data);
  if (type.startsWith("approval.") || type === "decision.rejected") refreshApprovals();
}

function describeTarget(t) {
  if (!t) return "";
  const obj = t.name ? `${t.kind || "object"}/${t.name}` : (t.kind || "");
  return [obj, t.namespace && `in ${t.namespace}`, t.cluster && `on ${t.cluster}`].filter(Boolean).join(" ");
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

function summary(type, d) {
  switch (type) {
    case "session.started": return [`Session started by ${d.actor}`, d.title || ""];
    case "user.message": return [`${d.actor}: `, d.text];
    case "assistant.message": return ["Interlock: ", d.text];
    case "tool.proposed":
      return [`Proposed ${d.tool} ${describeTarget(d.target)}`, d.rationale ? ` — ${d.rationale}` : ""];
    case "tool.classified": return [`Classified as ${d.access}`, ` (${d.rule})`];
    case "tool.refused": return ["Refused: ", d.reason];
    case "approval.requested":
      return [`Approval needed for ${d.calls.length} call(s): `,
        d.calls.map((c) => `${c.tool} ${describeTarget(c.target)} ` +
          (c.diff || []).map((f) => `${f.path}: ${fmtValue(f.before)} → ${fmtValue(f.after)}`).join(", ")).join("; ")];
    case "approval.decided":
      return [`${d.approver} decided: ${d.decision}`, d.reason ? ` — ${d.reason}` : (d.args ? " (modified)" : "")];
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
    case "tool.verified": return [`Verification (${d.outcome}): `, `${d.check || ""}${d.detail ? " — " + d.detail : ""}`];
    case "tool.started": return ["Running…", ""];
    case "tool.result": return [`Result (${d.status})`, ""];
    case "command.rejected": return ["Could not run: ", d.reason];
    case "command.refused": return ["The executor refused: ", d.reason];
    case "turn.completed": return ["Done", d.reason ? ` (${d.reason})` : ""];
    case "session.cancelled": return ["Cancelled", d.reason ? `: ${d.reason}` : ""];
    default: return ["", ""];
  }
}

function appendEvent(id, type, d) {
  const [head, rest] = summary(type, d);
  const li = el("li", { class: type.replace(".", "-") + (d.status ? " " + d.status : ""),
                        dataset: { seq: String(id), type } },
    el("span", { class: "seq", text: `#${id}` }),
    el("span", { class: "type", text: type }),
    el("span", { class: "text", text: head + (rest || "") }));
  if (type === "tool.result" && d.output) li.append(el("pre", { text: d.output }));
  if (!head && !rest) {
    const { type: _t, session_id: _s, event_id: _e, occurred_at: _o, ...restData } = d;
    li.append(el("pre", { text: JSON.stringify(restData, null, 1).slice(0, 2000) }));
  }
  const tl = $("#timeline");
  const atBottom = tl.scrollTop + tl.clientHeight >= tl.scrollHeight - 20;
  tl.append(li);
  if (atBottom) tl.scrollTop = tl.scrollHeight;
}

// -- chat --------------------------------------------------------------------------------------

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
  for (const card of [...box.children]) {
    const id = card.dataset.approvalId;
    // Cards this page decided stay, showing what happened; others go once decided elsewhere.
    if (!pending.has(id) && !state.inflight.has(id) && !state.submitted.has(id)) card.remove();
  }
  for (const a of list) {
    const existing = box.querySelector(`[data-approval-id="${CSS.escape(a.approval_id)}"]`);
    if (existing) updateCard(existing, a);
    else box.append(renderCard(a));
  }
  $("#approval-count").textContent = String(pending.size);
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

function blastText(b) {
  if (!b) return "";
  const parts = [];
  if (b.summary) parts.push(b.summary);
  if (b.replicas_before !== null && b.replicas_before !== undefined)
    parts.push(`replicas ${b.replicas_before} → ${b.replicas_after}`);
  if (b.pods_affected && b.pods_affected.length) parts.push(`${b.pods_affected.length} pod(s) affected`);
  for (const [k, v] of Object.entries(b)) {
    if (["summary", "replicas_before", "replicas_after", "pods_affected", "production_like"].includes(k)) continue;
    if (Array.isArray(v) ? v.length : (v && v !== "")) parts.push(`${k.replaceAll("_", " ")}: ${fmtValue(v)}`);
  }
  return parts.join("; ") || "this object only";
}

function renderCard(a) {
  const card = el("article", { class: "approval-card", dataset: { approvalId: a.approval_id } });
  if (a.approval_id === state.highlight) card.classList.add("highlight");
  const title = a.calls.map((c) => `${c.tool} ${describeTarget(c.target)}`).join(" + ");
  card.append(el("h3", { text: `Approve: ${title}` }));
  for (const c of a.calls) {
    const t = c.target || {};
    const prod = c.blast_radius && c.blast_radius.production_like;
    const dl = el("dl", {},
      el("dt", { text: "What" }), el("dd", { text: `${c.tool} ${describeTarget(t)}${fmtArgs(c.args) ? " — " + fmtArgs(c.args) : ""}` }),
      el("dt", { text: "Where" }), el("dd", {},
        `${t.namespace || "(cluster-wide)"}${t.cluster ? " on " + t.cluster : ""} `,
        prod ? el("span", { class: "flag prod", text: "production" }) : null),
      el("dt", { text: "Blast radius" }), el("dd", { class: "blast", text: blastText(c.blast_radius) }));
    card.append(dl);
    const rows = (c.diff || []).map((f) => el("tr", {},
      el("td", { text: f.path }), el("td", { class: "before", text: fmtValue(f.before) }),
      el("td", { text: "→" }), el("td", { class: "after", text: fmtValue(f.after) })));
    if (rows.length) card.append(el("table", { class: "diff" }, el("tbody", {}, ...rows)));
    else card.append(el("p", { class: "muted", text: c.preview_error ? `No preview: ${c.preview_error}` : "No field changes previewed." }));
  }
  const info = el("dl", {},
    el("dt", { text: "Why" }), el("dd", { text: a.rationale || "(no rationale given)" }),
    a.evidence && a.evidence.length ? el("dt", { text: "Evidence" }) : null,
    a.evidence && a.evidence.length ? el("dd", {}, el("ul", {}, ...a.evidence.map((e) => el("li", { text: e })))) : null,
    el("dt", { text: "Expected" }), el("dd", { text: a.expected_outcome || "(not stated)" }),
    el("dt", { text: "Requested by" }), el("dd", { text: a.requested_by || a.actor || "" }),
    el("dt", { text: "Expires" }), el("dd", {}, el("span", { class: "expiry", dataset: { approvalId: a.approval_id } })),
    el("dt", { text: "Approvals" }), el("dd", { class: "count", text: `${(a.approvals || []).length} of ${a.required_approvals || 1}` }));
  card.append(info);
  if (a.policy && a.policy.length)
    card.append(el("p", { class: "muted policy", text: "Policy: " + a.policy.join("; ") }));
  if (a.history && a.history.length)
    card.append(el("div", { class: "history" }, el("strong", { text: "Recent changes to this target" }),
      el("ul", {}, ...a.history.map((h) => el("li", { text: h })))));
  if (a.risk_flags && a.risk_flags.length)
    card.append(el("div", { class: "flags" }, ...a.risk_flags.map((f) => el("span", { class: "flag", text: f }))));

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
  card.append(actions, denyBox, modifyBox, status);
  if (!canDecide) {
    for (const b of card.querySelectorAll("button")) b.disabled = true;
    status.textContent = "You may view this approval; an approver must decide.";
  }

  approve.addEventListener("click", () => decide(card, { decision: "approve" }));
  deny.addEventListener("click", () => { denyBox.hidden = !denyBox.hidden; modifyBox.hidden = true; });
  modify.addEventListener("click", () => { modifyBox.hidden = !modifyBox.hidden; denyBox.hidden = true; });
  denyBox.querySelector("button").addEventListener("click", () => {
    const reason = denyBox.querySelector("input").value.trim();
    if (!reason) { status.textContent = "A denial needs a reason."; return; }
    decide(card, { decision: "deny", reason });
  });
  modifyBox.querySelector("button").addEventListener("click", () => {
    let args;
    try { args = JSON.parse(modifyBox.querySelector("textarea").value); } catch (e) {
      status.textContent = `The args are not valid JSON: ${e.message}`; return;
    }
    if (!args || typeof args !== "object" || Array.isArray(args)) {
      status.textContent = "The args must be a JSON object."; return;
    }
    decide(card, { decision: "approve", args });
  });
  if (state.submitted.has(a.approval_id)) lockCard(card, "Decision sent.");
  setTimeout(tickExpiry, 0);
  return card;
}

function updateCard(card, a) {
  const count = card.querySelector(".count");
  if (count) count.textContent = `${(a.approvals || []).length} of ${a.required_approvals || 1}`;
}

function lockCard(card, text, ok = true) {
  for (const b of card.querySelectorAll("button")) b.disabled = true;
  const s = card.querySelector(".card-status");
  s.textContent = text;
  s.classList.toggle("ok", ok);
}

async function decide(card, body) {
  const id = card.dataset.approvalId;
  // One decision per approval from this page, whatever is clicked how often.
  if (state.inflight.has(id) || state.submitted.has(id)) return;
  state.inflight.add(id);
  lockCard(card, "Sending…");
  try {
    const res = await api("POST", `/v1/approvals/${encodeURIComponent(id)}/decision`, body);
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

// -- start -------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const wanted = readFragment();
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#login-token").value.trim());
    signIn(wanted);
  });
  $("#logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.hash = "";
    location.reload();
  });
  $("#chat-form").addEventListener("submit", send);
  $("#new-session").addEventListener("click", () => newSession().catch((err) => {
    $("#chat-error").textContent = err.message;
  }));
  signIn(wanted);
});
