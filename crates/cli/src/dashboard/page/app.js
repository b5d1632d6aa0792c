// The dashboard's page: no framework, no network beyond this server. Views by the URL's hash:
//   #/                          overview of every topic and group
//   #/topic/NAME                charts and dead letters of a topic
//   #/topic/NAME/dlq/ID         one dead letter in full
//   #/topic/NAME/group/GROUP    a group's consumers and pending entries
//   #/topic/NAME/message/ID     one entry of the topic
"use strict";

const view = document.getElementById("view");
let config = null;
let timer = null;

// The token, if the server wants one: given once as `?token=`, kept for this tab only.
const given = new URLSearchParams(location.search).get("token");
if (given) {
  sessionStorage.setItem("tributary-token", given);
  history.replaceState(null, "", location.pathname + location.hash);
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const token = sessionStorage.getItem("tributary-token");
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch("/api" + path, { ...options, headers });
  if (response.status === 401) {
    const entered = prompt("This dashboard needs its token:");
    if (entered) {
      sessionStorage.setItem("tributary-token", entered);
      return api(path, options);
    }
  }
  const text = await response.text();
  let body;
  try { body = JSON.parse(text); } catch { body = { error: text || response.status + " " + response.statusText }; }
  if (!response.ok) throw new Error(body.error || response.status + " " + response.statusText);
  return body;
}

function action(path, body) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Tributary-Action": "1" },
    body: JSON.stringify(body || {}),
  });
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

const num = (v) => (v === null || v === undefined ? "–" : typeof v === "number" && !Number.isInteger(v) ? v.toFixed(1) : String(v));

function idle(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return ms + "ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + "s";
  if (ms < 3600000) return Math.floor(ms / 60000) + "m" + String(Math.floor(ms / 1000) % 60).padStart(2, "0") + "s";
  return Math.floor(ms / 3600000) + "h" + String(Math.floor(ms / 60000) % 60).padStart(2, "0") + "m";
}

function topicLink(topic) {
  return el("a", { href: "#/topic/" + encodeURIComponent(topic) }, topic);
}

let flashUntil = 0;

function status(text, isError) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

// What an action did (or why it failed) stays up a while through refreshes.
function flash(text, isError) {
  status(text, isError);
  flashUntil = Date.now() + 8000;
}

// ---- overview ---------------------------------------------------------------------------

const overviewState = { q: "", offset: 0, limit: 100 };

async function overview() {
  const started = performance.now();
  const q = new URLSearchParams({ q: overviewState.q, offset: overviewState.offset, limit: overviewState.limit });
  const data = await api("/overview?" + q);
  if (!data.topics.length && data.offset > 0 && data.total > 0) {
    // The page went away (topics deleted, or a narrower filter): back to the first.
    overviewState.offset = 0;
    return overview();
  }
  const rows = [];
  for (const t of data.topics) {
    const groups = t.groups.length ? t.groups : [null];
    groups.forEach((g, i) => {
      const first = i === 0;
      rows.push(
        el(
          "tr",
          { "data-topic": t.topic, "data-group": g ? g.name : "" },
          el("td", {}, first ? topicLink(t.topic) : ""),
          el("td", {}, g ? g.name : el("span", { class: "muted" }, "no group")),
          el("td", { class: "num" }, first ? num(t.length) : ""),
          el("td", { class: "num" }, first ? num(t.in_per_s) : ""),
          el("td", { class: "num" }, g ? num(g.out_per_s) : ""),
          el("td", { class: "num lag" + (g && g.lag_growing ? " warn" : ""), title: g && g.lag_growing ? "growing over the last minute" : null }, g ? num(g.lag) : ""),
          el("td", { class: "num" }, g ? num(g.pending) : ""),
          el("td", { class: "num" + (g && g.stuck ? " bad" : ""), title: g && g.stuck ? "idle longer than claim_idle: nobody works on it" : null }, g ? idle(g.oldest_pending_idle_ms) : ""),
          el("td", { class: "num consumers", title: g ? "busy (holding entries) / all" : null }, g ? `${g.busy_consumers}/${g.consumers}` : ""),
          el("td", { class: "num dead" + (first && t.dead_letters_growing ? " bad" : ""), title: first && t.dead_letters_growing ? "growing over the last minute" : null }, first ? num(t.dead_letters) : ""),
          el("td", { class: "num" }, first ? num(t.scheduled) : ""),
        ),
      );
    });
  }
  const search = el("input", { type: "search", placeholder: "filter topics", value: overviewState.q });
  search.addEventListener("change", () => { overviewState.q = search.value; overviewState.offset = 0; route(); });
  const last = Math.min(data.offset + data.topics.length, data.total);
  const pager = el("span", { class: "muted" }, data.total ? `topics ${data.offset + 1}–${last} of ${data.total}` : "no topics");
  const prev = el("button", { disabled: data.offset === 0, onclick: () => { overviewState.offset = Math.max(0, overviewState.offset - overviewState.limit); route(); } }, "‹ previous");
  const next = el("button", { disabled: last >= data.total, onclick: () => { overviewState.offset += overviewState.limit; route(); } }, "next ›");
  const heads = ["topic", "group", "length", "in/s", "out/s", "lag", "pending", "oldest pending", "consumers", "dead letters", "scheduled"];
  const table = el("table", { id: "overview" },
    el("thead", {}, el("tr", {}, heads.map((h, i) => el("th", { class: i > 1 ? "num" : "" }, h)))),
    el("tbody", {}, rows));
  view.replaceChildren(el("h1", {}, "Topics"), el("div", { class: "toolbar" }, search, prev, next, pager), table);
  // For the browser test and the curious: how long this view took, request included.
  document.body.dataset.renderMs = String(Math.round(performance.now() - started));
  return data;
}

// ---- charts -----------------------------------------------------------------------------

const COLOURS = ["#2f5bd3", "#c2410c", "#067647", "#7c3aed", "#b42318", "#0e7490"];

function chart(title, series) {
  const W = 420, H = 150, P = 28;
  const all = series.flatMap((s) => s.points);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  svg.dataset.title = title;
  svg.dataset.points = String(all.length);
  const text = (x, y, s, anchor) => {
    const t = document.createElementNS(svg.namespaceURI, "text");
    t.setAttribute("x", x); t.setAttribute("y", y); t.textContent = s;
    if (anchor) t.setAttribute("text-anchor", anchor);
    svg.append(t);
  };
  text(P, 14, title);
  if (!all.length) { text(W / 2, H / 2, "no data yet", "middle"); return svg; }
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const top = Math.max(1, ...all.map((p) => p[1]));
  const x = (t) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - 2 * P);
  const y = (v) => H - P + 6 - (v / top) * (H - 2 * P);
  text(P - 4, y(top) + 4, num(top), "end");
  text(P - 4, y(0) + 4, "0", "end");
  text(W - P, H - 4, Math.round((t1 - t0) / 1000) + " s", "end");
  series.forEach((s, i) => {
    const line = document.createElementNS(svg.namespaceURI, "polyline");
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", COLOURS[i % COLOURS.length]);
    line.setAttribute("stroke-width", "1.5");
    line.setAttribute("points", s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "));
    svg.append(line);
    text(W - P, 14 + 12 * i, s.name, "end");
    svg.lastChild.setAttribute("fill", COLOURS[i % COLOURS.length]);
  });
  return svg;
}

function groupSeries(points, field) {
  const names = [...new Set(points.flatMap((p) => p.groups.map((g) => g.name)))];
  return names.map((name) => ({
    name,
    points: points.flatMap((p) => {
      const g = p.groups.find((x) => x.name === name);
      return g && g[field] !== null && g[field] !== undefined ? [[p.at_ms, g[field]]] : [];
    }),
  }));
}

// ---- a topic ----------------------------------------------------------------------------

const path = (...parts) => parts.map(encodeURIComponent).join("/");
// A topic in an API path: after `~`, so that `.` and `..` (valid names) stay segments.
const topicSegment = (name) => "~" + encodeURIComponent(name);
const selected = new Set();
// The dead letters shown: of one reason, of one group, or all.
const letterFilter = { reason: "", group: "" };
let letterTopic = null;

async function topic(name) {
  if (letterTopic !== name) { letterTopic = name; letterFilter.reason = ""; letterFilter.group = ""; }
  const [hist, dlq, over, sched] = await Promise.all([
    api("/topics/" + topicSegment(name) + "/history").catch(() => ({ points: [] })),
    api("/topics/" + topicSegment(name) + "/dead-letters?" + new URLSearchParams({ count: 100, ...letterFilter })),
    api("/overview?" + new URLSearchParams({ q: name, limit: 1000 })),
    api("/topics/" + topicSegment(name) + "/scheduled?count=100"),
  ]);
  const info = over.topics.find((t) => t.topic === name) || { groups: [] };
  const points = hist.points;
  const inRate = { name: "in", points: points.filter((p) => p.in_per_s !== null).map((p) => [p.at_ms, p.in_per_s]) };
  const charts = el("div", { class: "charts" },
    chart("lag", groupSeries(points, "lag")),
    chart("pending", groupSeries(points, "pending")),
    chart("messages/s", [inRate, ...groupSeries(points, "out_per_s").map((s) => ({ ...s, name: s.name + " out" }))]));

  const readOnly = !config.allow_actions;
  const why = readOnly ? "read-only: start the dashboard with --allow-actions" : null;
  const boxes = [];
  const rows = dlq.dead_letters.map((l) => {
    // Ticks outlive the page's refreshes.
    const key = name + "/" + l.id;
    const box = el("input", { type: "checkbox", value: l.id, disabled: readOnly, checked: selected.has(key) });
    box.addEventListener("change", () => (box.checked ? selected.add(key) : selected.delete(key)));
    boxes.push(box);
    return el("tr", { "data-id": l.id },
      el("td", {}, box),
      el("td", {}, el("a", { href: `#/topic/${encodeURIComponent(name)}/dlq/${l.id}` }, l.id)),
      el("td", {}, l.reason), el("td", { class: "num" }, num(l.attempts)), el("td", {}, l.group),
      el("td", {}, l.error), el("td", {}, l.dead_at));
  });
  const done = (what) => (r) => { selected.clear(); flash(what(r)); route(); };
  const failed = (e) => flash(e.message, true);
  const replaySelected = el("button", { id: "replay-selected", disabled: readOnly, title: why, onclick: () => {
    const ids = boxes.filter((b) => b.checked).map((b) => b.value);
    if (ids.length && confirm(`Replay ${ids.length} dead letter(s) onto ${name}?`))
      action(`/topics/${topicSegment(name)}/dead-letters/replay`, { ids }).then(done((r) => `replayed ${r.replayed}`), failed);
  } }, "Replay selected");
  const filtered = letterFilter.reason || letterFilter.group;
  const replayAll = el("button", { id: "replay-all", disabled: readOnly, title: why, onclick: () => {
    const which = filtered ? "every dead letter shown (all pages)" : "every dead letter (malformed ones stay)";
    if (confirm(`Replay ${which} of ${name}?`))
      action(`/topics/${topicSegment(name)}/dead-letters/replay`, { all: true, ...letterFilter }).then(done((r) => `replayed ${r.replayed}`), failed);
  } }, filtered ? "Replay all shown" : "Replay all");
  const choose = (field, options) => {
    const select = el("select", { id: "filter-" + field },
      el("option", { value: "" }, "any " + field), options.map((o) => el("option", { value: o, selected: o === letterFilter[field] }, o)));
    select.addEventListener("change", () => { letterFilter[field] = select.value; route(); });
    return select;
  };
  const reasons = ["rejected", "max_deliveries", "malformed", "expired"];
  const groupNames = info.groups.map((g) => g.name);
  if (letterFilter.group && !groupNames.includes(letterFilter.group)) groupNames.push(letterFilter.group);
  const purge = el("button", { id: "purge", class: "danger", disabled: readOnly, title: why, onclick: () => {
    if (confirm(`Delete every dead letter of ${name}? This cannot be undone.`))
      action(`/topics/${topicSegment(name)}/dead-letters/purge`).then(done((r) => `purged ${r.purged}`), failed);
  } }, "Purge");
  const table = dlq.dead_letters.length
    ? el("table", { id: "dead-letters" },
        el("thead", {}, el("tr", {}, ["", "id", "reason", "attempts", "group", "last error", "dead at"].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows))
    : el("p", { class: "muted" }, "No dead letters.");
  const groups = info.groups.length
    ? el("table", { id: "groups" },
        el("thead", {}, el("tr", {}, ["group", "consumers", "lag", "pending", "oldest pending"].map((h, i) => el("th", { class: i ? "num" : "" }, h)))),
        el("tbody", {}, info.groups.map((g) => el("tr", {},
          el("td", {}, el("a", { href: "#/topic/" + path(name) + "/group/" + encodeURIComponent(g.name) }, g.name)),
          el("td", { class: "num" }, `${g.busy_consumers}/${g.consumers}`), el("td", { class: "num" }, num(g.lag)),
          el("td", { class: "num" }, num(g.pending)),
          el("td", { class: "num" + (g.stuck ? " bad" : "") }, idle(g.oldest_pending_idle_ms))))))
    : el("p", { class: "muted" }, "No groups.");
  const entry = el("input", { type: "search", placeholder: "entry id, e.g. 1795617835928-0", id: "entry-id" });
  entry.addEventListener("change", () => { if (entry.value.trim()) location.hash = "#/topic/" + path(name) + "/message/" + encodeURIComponent(entry.value.trim()); });
  const scheduled = sched.scheduled.length
    ? el("table", { id: "scheduled" },
        el("thead", {}, el("tr", {}, ["id", "due", "payload", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, sched.scheduled.map((s) => el("tr", { "data-id": s.id },
          el("td", {}, s.id), el("td", {}, s.due), el("td", {}, JSON.stringify(s.payload)),
          el("td", {}, el("button", { class: "danger", disabled: readOnly, title: why, onclick: () => {
            if (confirm(`Cancel scheduled message ${s.id}? It will not be delivered.`))
              action(`/topics/${topicSegment(name)}/scheduled/cancel`, { id: s.id }).then(done(() => "cancelled 1"), failed);
          } }, "Cancel"))))))
    : el("p", { class: "muted" }, "No scheduled messages.");
  view.replaceChildren(
    el("h1", {}, el("a", { href: "#/" }, "Topics"), " / ", name),
    charts,
    el("h2", {}, "Groups"),
    groups,
    el("div", { class: "toolbar" }, entry),
    el("h2", {}, `Dead letters (${dlq.dead_letters.length}${dlq.dead_letters.length === 100 ? "+" : ""})`),
    el("div", { class: "toolbar" }, choose("reason", reasons), choose("group", groupNames), replaySelected, replayAll, purge),
    table,
    el("h2", {}, `Scheduled (${sched.scheduled.length}${sched.scheduled.length === 100 ? "+" : ""})`),
    scheduled);
}

// ---- a group, and one entry -------------------------------------------------------------

async function group(name, groupName) {
  const g = await api("/topics/" + topicSegment(name) + "/groups/" + encodeURIComponent(groupName) + "?count=100");
  const consumers = g.consumers.length
    ? el("table", { id: "consumers" },
        el("thead", {}, el("tr", {}, ["consumer", "pending", "idle"].map((h, i) => el("th", { class: i ? "num" : "" }, h)))),
        el("tbody", {}, g.consumers.map((c) => el("tr", {},
          el("td", {}, c.name), el("td", { class: "num" }, num(c.pending)),
          el("td", { class: "num" + (c.pending > 0 && c.idle_ms > config.claim_idle_ms ? " bad" : "") }, idle(c.idle_ms))))))
    : el("p", { class: "muted" }, "No consumers.");
  const pending = g.pending.length
    ? el("table", { id: "pending" },
        el("thead", {}, el("tr", {}, ["entry", "consumer", "idle", "deliveries"].map((h) => el("th", {}, h)))),
        el("tbody", {}, g.pending.map((p) => el("tr", {},
          el("td", {}, el("a", { href: "#/topic/" + path(name) + "/message/" + encodeURIComponent(p.id) }, p.id)),
          el("td", {}, p.consumer),
          el("td", { class: "num" + (p.idle_ms > config.claim_idle_ms ? " bad" : "") }, idle(p.idle_ms)),
          el("td", { class: "num" }, num(p.deliveries))))))
    : el("p", { class: "muted" }, "Nothing pending.");
  view.replaceChildren(
    el("h1", {}, el("a", { href: "#/" }, "Topics"), " / ", topicLink(name), " / group ", groupName),
    el("h2", {}, "Consumers"), consumers,
    el("h2", {}, `Pending entries (oldest ${g.pending.length})`), pending);
}

async function entry(name, id) {
  const m = await api("/topics/" + topicSegment(name) + "/messages/" + encodeURIComponent(id));
  view.replaceChildren(
    el("h1", {}, el("a", { href: "#/" }, "Topics"), " / ", topicLink(name), " / entry ", id),
    el("pre", { id: "message" }, JSON.stringify(m, null, 2)));
}

// ---- a dead letter ----------------------------------------------------------------------

async function deadLetter(name, id) {
  const l = await api(`/topics/${topicSegment(name)}/dead-letters/${encodeURIComponent(id)}`);
  const readOnly = !config.allow_actions;
  const replay = el("button", { id: "replay-one", disabled: readOnly || !l.readable,
    title: readOnly ? "read-only: start the dashboard with --allow-actions" : null, onclick: () => {
      if (confirm(`Replay dead letter ${id} onto ${name}?`))
        action(`/topics/${topicSegment(name)}/dead-letters/replay`, { ids: [id] })
          .then((r) => { flash(`replayed ${r.replayed}`); location.hash = "#/topic/" + encodeURIComponent(name); },
                (e) => flash(e.message, true));
    } }, "Replay");
  const facts = [["reason", l.reason], ["attempts", l.attempts], ["group", l.group], ["consumer", l.consumer],
    ["last error", l.error], ["dead at", l.dead_at], ["original entry", l.original_id],
    ["trace id", l.message ? l.message.trace_id : null]];
  view.replaceChildren(
    el("h1", {}, el("a", { href: "#/" }, "Topics"), " / ", topicLink(name), " / dead letter ", id),
    el("dl", {}, facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "–" : String(v))])),
    el("div", { class: "toolbar" }, replay),
    el("h2", {}, "Message"),
    el("pre", { id: "message" }, l.message ? JSON.stringify(l.message, null, 2) : "unreadable: " + l.unreadable));
}

// ---- routing ----------------------------------------------------------------------------

async function route() {
  clearTimeout(timer);
  try {
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    if (parts[0] === "topic" && parts[2] === "dlq") await deadLetter(parts[1], parts[3]);
    else if (parts[0] === "topic" && parts[2] === "group") { await group(parts[1], parts[3]); timer = setTimeout(refresh, Math.max(config.interval_ms, 2000)); }
    else if (parts[0] === "topic" && parts[2] === "message") await entry(parts[1], parts[3]);
    else if (parts[0] === "topic") { await topic(parts[1]); timer = setTimeout(refresh, Math.max(config.interval_ms, 2000)); }
    else {
      const data = await overview();
      timer = setTimeout(refresh, Math.max(config.interval_ms, 1000));
      // Figures from a round that failed are not passed off as fresh.
      const at = data.sampled_at_ms ? new Date(data.sampled_at_ms).toLocaleTimeString() : "never";
      if (data.error) { status(`sampling failed: ${data.error} (figures from ${at})`, true); return; }
    }
    if (Date.now() > flashUntil) status("updated " + new Date().toLocaleTimeString());
  } catch (e) {
    status(e.message, true);
    timer = setTimeout(refresh, 5000);
  }
}

function refresh() {
  // Not while someone is choosing dead letters or typing.
  if (document.activeElement && document.activeElement.matches("input")) { timer = setTimeout(refresh, 1000); return; }
  route();
}

(async () => {
  config = await api("/config");
  document.getElementById("namespace").textContent = "namespace " + config.namespace + " on " + config.server;
  const mode = document.getElementById("mode");
  mode.textContent = config.allow_actions ? "actions allowed" : "read-only";
  mode.classList.toggle("actions", config.allow_actions);
  window.addEventListener("hashchange", route);
  route();
})().catch((e) => status(e.message, true));
