// The edgewise console: the fleet list (updated in place from /events, which sends only
// what changed), a device page (#device=NAME, from /api/device) and the live feed.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const q = token ? "token=" + encodeURIComponent(token) : "";
const api = (path, more) => path + "?" + [q, more].filter(Boolean).join("&");
const $ = id => document.getElementById(id);
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const num = (v, digits = 3) => v === null || v === undefined || !isFinite(v) ? "–" : Math.abs(v) >= 10 ** digits ? Math.round(v).toLocaleString() : String(Number(Number(v).toPrecision(digits)));
const pct = v => v === null || v === undefined ? "–" : (v * 100).toFixed(v < 0.1 ? 1 : 0) + " %";
function dur(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.max(0, s);
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 172800) return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.round((s % 86400) / 3600) + " h";
}
const clock = t => new Date(t * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"});
const KINDS = [["all", "devices"], ["online", "online"], ["offline", "offline"], ["stale", "stale"], ["failing", "failing"], ["drifting", "drifting"], ["rolling_out", "rolling out"]];
const RANK = {failing: 0, offline: 1, stale: 2, drifting: 3, rolling_out: 4, ok: 9};

const devices = new Map();  // name -> {s: summary, el: row element}
let serverSkew = 0, filter = "all", brokerUp = null, order = [];

function matches(s) {
  if (filter !== "all" && !(filter === s.state || s.problems.some(p => p.kind === filter))) return false;
  const text = $("search").value.trim().toLowerCase();
  if (!text) return true;
  return [s.name, ...s.groups, ...Object.keys(s.models)].some(x => String(x).toLowerCase().includes(text));
}
function rowHtml(s) {
  const probs = s.problems.map(p => `<span class="problem ${esc(p.kind)}">${esc(p.text)}</span>`).join("") || '<span class="muted">none</span>';
  const models = Object.entries(s.models).map(([m, e]) => `${esc(m)} <span class="muted">v${esc(e.version ?? "?")}${e.deployment ? " · " + esc(e.deployment) : ""}${e.drift ? " · drift " + esc(e.drift) : ""}</span>`).join("<br>");
  const href = "#device=" + encodeURIComponent(s.name);
  return `<span class="name"><a href="${esc(href)}">${esc(s.name)}</a></span><span class="state ${esc(s.state)}">${esc(s.state)}</span>` +
    `<span class="problems">${probs}</span><span class="rate num">${num(s.rate)}</span><span class="errors num">${pct(s.error_rate)}</span>` +
    `<span class="models">${models || '<span class="muted">no model</span>'}</span><span class="age num muted"></span>` +
    `<span class="figures">${num(s.rate)} req/s · errors ${pct(s.error_rate)}</span>`;
}
function ageText(s) { return dur(Date.now() / 1000 - serverSkew - s.seen) + " ago"; }
function applyUpdate(msg) {
  serverSkew = Date.now() / 1000 - msg.now;
  $("prefix").textContent = msg.prefix + "/";
  for (const name of msg.removed) { const d = devices.get(name); if (d) { d.el.remove(); devices.delete(name); } }
  for (const [name, s] of Object.entries(msg.devices)) {
    let d = devices.get(name);
    if (!d) { d = {el: document.createElement("div")}; d.el.className = "row device"; d.el.setAttribute("role", "listitem"); devices.set(name, d); }
    d.s = s;
    d.el.dataset.device = name; d.el.dataset.state = s.state; d.el.dataset.rank = s.rank;
    d.el.innerHTML = rowHtml(s);
  }
  setBroker(msg.broker.connected);
  if (Object.keys(msg.devices).length || msg.removed.length) { arrange(); summarize(); updateTargets(); }
  feed(msg.events);
  if (current && msg.devices[current]) loadDevice();
}
function arrange() {
  const sorted = [...devices.values()].sort((a, b) => (RANK[a.s.rank] ?? 9) - (RANK[b.s.rank] ?? 9) || (a.s.name < b.s.name ? -1 : 1));
  const names = sorted.map(d => d.s.name);
  const list = $("devices");
  if (names.join("\n") !== order.join("\n") || list.children.length !== names.length) {
    order = names;
    const frag = document.createDocumentFragment();
    for (const d of sorted) frag.appendChild(d.el);
    list.appendChild(frag);  // moves the rows: only when the order changed
  }
  applyFilter();
}
function applyFilter() {
  let shown = 0;
  for (const d of devices.values()) { const ok = matches(d.s); d.el.hidden = !ok; shown += ok; }
  $("shown").textContent = `${shown} of ${devices.size}`;
  ticks();
}
function summarize() {
  const counts = Object.fromEntries(KINDS.map(([k]) => [k, 0]));
  for (const {s} of devices.values()) {
    counts.all++;
    if (s.state in counts) counts[s.state]++;
    for (const k of new Set(s.problems.map(p => p.kind))) if (k !== s.state && k in counts) counts[k]++;
  }
  $("summary").innerHTML = KINDS.map(([k, label]) => `<button type="button" class="${k}" data-kind="${k}" aria-pressed="${filter === k}"><b>${counts[k]}</b>${label}</button>`).join("");
}
function ticks() {  // the "last report" ages of the rows shown, once a second
  for (const d of devices.values()) if (!d.el.hidden) d.el.querySelector(".age").textContent = ageText(d.s);
}
function setBroker(up) {
  if (up === brokerUp) return;
  brokerUp = up;
  const banner = $("banner");
  banner.hidden = up;
  banner.textContent = up ? "" : `The console cannot reach the broker (since ${clock(Date.now() / 1000)}): what it shows is the last known state.`;
  $("conn").textContent = up ? "live" : "broker down";
  $("conn").className = "badge " + (up ? "live" : "down");
}
function feed(events) {
  if (!events.length) return;
  const list = $("feed"), before = list.scrollHeight, top = list.scrollTop;
  for (const e of events) {
    const li = document.createElement("li");
    li.className = e.kind;
    li.textContent = `${clock(e.time)} ${e.device}/${e.model} ${e.id}: ${e.text}`;
    list.insertBefore(li, list.firstChild);
  }
  while (list.children.length > 50) list.lastChild.remove();
  if (top > 0) list.scrollTop = top + list.scrollHeight - before;  // the reader's place stays
}

// -- "Try it": an online device's model, with an example in its input's shape --------
let targets = "";
function example(m) {
  const shape = (m.input && m.input.shape) || [], kind = m.input ? m.input.kind : "tabular";
  if (kind === "text") return '["hello"]';
  const dims = shape.filter(x => x !== null);
  const size = dims.reduce((a, b) => a * b, 1);
  if (dims.length >= 2 && size <= 4096) { const zeros = d => d.length ? Array.from({length: d[0]}, () => zeros(d.slice(1))) : 0; return JSON.stringify([zeros(dims)]); }
  if (dims.length >= 2) return `// ${dims.join("x")} values per instance: use edgewise send`;
  return JSON.stringify([(m.features && m.features.length ? m.features : [0]).map(() => 0)]);
}
function updateTargets() {
  const opts = [];
  for (const d of [...devices.values()].sort((a, b) => (a.s.state === "online" ? 0 : 1) - (b.s.state === "online" ? 0 : 1))) {
    for (const m of Object.keys(d.s.models)) opts.push(`<option value="${esc(d.s.name)}|${esc(m)}">${esc(d.s.name)} / ${esc(m)}${d.s.state === "online" ? "" : " (" + esc(d.s.state) + ")"}</option>`);
  }
  const html = opts.join("");
  if (html === targets) return;
  const keep = $("target").value;
  targets = html;
  $("target").innerHTML = html;
  if (keep && [...$("target").options].some(o => o.value === keep)) $("target").value = keep;
  else fillExample();
}
async function fillExample() {
  const [device, model] = $("target").value.split("|");
  if (!device) return;
  const r = await fetch(api("/api/device", "name=" + encodeURIComponent(device)));
  if (r.ok) { const doc = await r.json(); if (doc.models[model]) $("instances").value = example(doc.models[model]); }
}
$("target").onchange = fillExample;
$("try").onsubmit = async ev => {
  ev.preventDefault();
  const [device, model] = $("target").value.split("|");
  const out = $("answer");
  let instances;
  try { instances = JSON.parse($("instances").value); } catch (e) { out.textContent = "instances: not JSON (" + e.message + ")"; return; }
  out.textContent = "waiting…";
  const r = await fetch(api("/api/try"), {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({device, model, instances})});
  out.textContent = JSON.stringify(await r.json(), null, 1);
};

// -- the device page -----------------------------------------------------------------
let current = null, span = "15m", loading = false, again = false;
function niceMax(v) { if (!(v > 0)) return 1; const p = 10 ** Math.floor(Math.log10(v)); return [1, 2, 5, 10].map(m => m * p).find(m => m >= v); }
function chart(title, points, idx, range, unit, color) {
  const w = 300, h = 120, l = 40, r = 8, t = 8, b = 20;
  const pts = points.filter(p => p[idx] !== null);
  const now = pts.length ? pts[pts.length - 1][idx] : null;
  const top = niceMax(Math.max(0, ...pts.map(p => p[idx])));
  const x = tt => l + (tt - range[0]) / (range[1] - range[0]) * (w - l - r);
  const y = v => h - b - v / top * (h - t - b);
  let svg = `<svg viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}">`;
  for (const v of [0, top / 2, top]) svg += `<line x1="${l}" x2="${w - r}" y1="${y(v)}" y2="${y(v)}" stroke="#e6e8eb"/><text x="${l - 4}" y="${y(v) + 3}" text-anchor="end">${num(v)}</text>`;
  for (let i = 0; i <= 3; i++) { const tt = range[0] + i * (range[1] - range[0]) / 3; svg += `<text x="${x(tt)}" y="${h - 5}" text-anchor="${i === 0 ? "start" : i === 3 ? "end" : "middle"}">${esc(clock(tt).slice(0, span === "15m" ? 8 : 5))}</text>`; }
  if (pts.length) svg += `<polyline fill="none" stroke="${color}" stroke-width="1.6" points="${pts.map(p => `${x(p[0]).toFixed(1)},${y(p[idx]).toFixed(1)}`).join(" ")}"/>`;
  if (pts.length === 1) svg += `<circle cx="${x(pts[0][0])}" cy="${y(pts[0][idx])}" r="2.5" fill="${color}"/>`;
  if (!pts.length) svg += `<text x="${(l + w) / 2}" y="${h / 2}" text-anchor="middle">no data in this range yet</text>`;
  return `<div class="chart"><div class="title"><b>${esc(title)}</b><span class="num">now ${now === null ? "–" : num(now) + " " + esc(unit)}</span></div>${svg}</svg></div>`;
}
function modelHtml(name, m, shadow) {
  const dep = m.deployment || {}, drift = m.drift || {};
  const codes = Object.entries(m.errors || {}).map(([c, n]) => `${esc(c)} ${num(n)}`).join(", ") || "none";
  const th = drift.thresholds || {};
  const psi = Object.entries(drift.features || {}).sort((a, b) => b[1] - a[1]).slice(0, 12).map(([f, v]) => {
    const cls = th.alarm && v >= th.alarm ? "alarm" : th.warn && v >= th.warn ? "warn" : "";
    return `<span>${esc(f)}</span><span><span class="bar ${cls}" style="width:${Math.min(100, v / Math.max(th.alarm || 1, 1e-9) * 50)}%"></span></span><span class="num">${num(v)}</span>`;
  }).join("");
  const series = m.series || [], range = m.range;
  return `<div class="model" data-model="${esc(name)}"><h3>${esc(name)} <span class="muted">v${esc(m.version ?? "?")} · ${esc(m.task ?? "")}</span></h3>` +
    `<div class="facts"><div><b>deployment</b>${esc(dep.state ?? "–")}${dep.reason ? " — " + esc(dep.reason) : ""}</div>` +
    `<div><b>drift</b><span class="drift ${esc(drift.status ?? "")}">${esc(drift.status ?? "not watched")}</span>${drift.largest && drift.largest !== "null" ? " (largest: " + esc(drift.largest) + ")" : ""}</div>` +
    `<div><b>error rate (15 min)</b>${pct(m.error_rate)}</div><div><b>errors by code</b>${codes}</div>` +
    `<div><b>answered</b>${num(m.answered, 6)}</div><div><b>inference p50 / p99</b>${num(m.p50_ms)} / ${num(m.p99_ms)} ms</div>` +
    `<div><b>end-to-end p99</b>${num(m.e2e_p99_ms)} ms</div>` +
    (shadow ? `<div><b>shadow v${esc(shadow.version)}</b>agreement ${pct(shadow.agreement)} of ${num(shadow.compared, 6)}</div>` : "") + `</div>` +
    (psi ? `<div class="psi">${psi}</div>` : "") +
    `<div class="charts">${chart("requests/s", series, 1, range, "/s", "#1565c0")}${chart("errors/s", series, 2, range, "/s", "#b3261e")}${chart("p99 latency", series, 3, range, "ms", "#6a1b9a")}</div></div>`;
}
async function loadDevice() {
  if (loading) { again = true; return; }
  loading = true;
  try {
    const r = await fetch(api("/api/device", `name=${encodeURIComponent(current)}&range=${span}`));
    const doc = r.ok ? await r.json() : null;
    if (doc && current === doc.name) renderDevice(doc);
    else if (!doc) $("detail").innerHTML = `<a class="back" href="#">← fleet</a><p>No device ${esc(current)}.</p>`;
  } finally { loading = false; if (again) { again = false; setTimeout(loadDevice, 1000); } }
}
function renderDevice(doc) {
  const s = doc.summary, h = doc.health || {};
  for (const m of Object.values(doc.models)) m.range = doc.range;
  const selection = window.getSelection().toString();
  const facts = [["last report", ageText(s)], ["uptime", dur(h.uptime_s)], ["groups", (h.groups || []).join(", ") || "–"],
    ["memory (RSS)", h.rss_bytes ? num(h.rss_bytes / 1048576) + " MiB" : "–"], ["CPU", h.cpu_temp_c === null || h.cpu_temp_c === undefined ? "–" : num(h.cpu_temp_c) + " °C"],
    ["outbox", num(h.outbox_depth)], ["reconnects", num(h.reconnects)], ["internal errors", num(h.internal_errors)],
    ["dead letters", num(h.dead_letters)], ["health interval", dur(s.interval_s)]];
  const html = `<a class="back" href="#">← fleet</a><select class="range" id="range" aria-label="time range">${["15m", "1h", "24h"].map(v => `<option${v === span ? " selected" : ""}>${v}</option>`).join("")}</select>` +
    `<h2>${esc(doc.name)}<span class="state ${esc(s.state)}">${esc(s.state)}</span></h2>` +
    `<div>${s.problems.map(p => `<span class="problem ${esc(p.kind)}">${esc(p.text)}</span>`).join("")}</div>` +
    `<div class="facts">${facts.map(([k, v]) => `<div><b>${esc(k)}</b>${esc(v)}</div>`).join("")}</div>` +
    Object.entries(doc.models).map(([n, m]) => modelHtml(n, m, (doc.shadows || {})[n])).join("");
  if (selection && $("detail").contains(window.getSelection().anchorNode)) return;  // the reader is copying: wait
  $("detail").innerHTML = html;
  $("range").onchange = e => { span = e.target.value; loadDevice(); };
}
function route() {
  const m = location.hash.match(/^#device=(.+)$/);
  current = m ? decodeURIComponent(m[1]) : null;
  $("fleet").hidden = !!current; $("detail").hidden = !current;
  if (current) loadDevice();
}
window.addEventListener("hashchange", route);
$("search").oninput = applyFilter;
$("summary").onclick = e => { const b = e.target.closest("button"); if (b) { filter = b.dataset.kind; summarize(); applyFilter(); } };
setInterval(ticks, 1000);

function connect() {
  const es = new EventSource(api("/events"));
  es.onmessage = m => applyUpdate(JSON.parse(m.data));
  es.onerror = () => { brokerUp = null; $("conn").textContent = "reconnecting…"; $("conn").className = "badge down"; devices.clear(); order = []; $("devices").textContent = ""; };
}
route();
connect();
