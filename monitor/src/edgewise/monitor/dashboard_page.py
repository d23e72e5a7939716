# ruff: noqa: E501 - the page is HTML and script, kept as written
"""The dashboard's one page: HTML, CSS and script inline, charts drawn as SVG (offline)."""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgewise fleet</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2733}
header{background:#1d2733;color:#fff;padding:10px 18px;display:flex;gap:16px;align-items:baseline}
header h1{font-size:18px;margin:0} #conn{font-size:12px;opacity:.8}
main{display:grid;grid-template-columns:2fr 1fr;gap:14px;padding:14px}
section{background:#fff;border-radius:8px;padding:10px 14px;box-shadow:0 1px 2px #0002}
h2{font-size:14px;margin:4px 0 8px;text-transform:uppercase;letter-spacing:.04em;color:#566}
table{border-collapse:collapse;width:100%} td,th{padding:4px 6px;text-align:left;border-bottom:1px solid #eee;font-size:13px}
.online{color:#0a7d32;font-weight:600}.offline{color:#b3261e;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:10px}.chart{border:1px solid #eee;border-radius:6px;padding:6px}
.chart b{font-size:12px} svg{display:block}
#feed{list-style:none;margin:0;padding:0;max-height:420px;overflow:auto;font:12px ui-monospace,monospace}
#feed li{padding:2px 0;border-bottom:1px solid #f0f0f0}.error{color:#b3261e}.anomaly{color:#9a4d00;font-weight:700}
form{display:grid;gap:6px} textarea{font:12px ui-monospace,monospace;height:60px}
#answer{font:12px ui-monospace,monospace;white-space:pre-wrap;max-height:160px;overflow:auto}
</style></head><body>
<header><h1>edgewise fleet</h1><span id="prefix"></span><span id="conn">connecting…</span></header>
<main>
<div>
<section><h2>Devices</h2><table id="devices"><thead><tr><th>device</th><th>status</th>
<th>groups</th><th>uptime</th><th>CPU °C</th><th>RSS MB</th><th>outbox</th><th>models</th></tr></thead>
<tbody></tbody></table></section>
<section><h2>Throughput and p99 latency (recent health reports)</h2><div class="charts" id="charts"></div></section>
</div>
<div>
<section><h2>Try it</h2><form id="try"><select id="target"></select>
<textarea id="instances">[[5.1, 3.5, 1.4, 0.2]]</textarea><button type="submit">Send</button></form>
<div id="answer"></div></section>
<section><h2>Live answers and errors</h2><ul id="feed"></ul></section>
</div>
</main>
<script>
const token = new URLSearchParams(location.search).get("token");
const q = token ? "?token=" + encodeURIComponent(token) : "";
const esc = s => String(s).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const fmt = (v, d) => v === null || v === undefined ? "–" : Number(v).toFixed(d);
function spark(points, color) {
  const w = 220, h = 50;
  if (!points || points.length < 2) return `<svg width="${w}" height="${h}"><text x="4" y="28" font-size="11" fill="#999">waiting for data</text></svg>`;
  const xs = points.map(p => p[0]), ys = points.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y1 = Math.max(...ys) || 1;
  const path = points.map(p => `${(4 + (p[0] - x0) / ((x1 - x0) || 1) * (w - 8)).toFixed(1)},${(h - 4 - p[1] / y1 * (h - 14)).toFixed(1)}`).join(" ");
  return `<svg width="${w}" height="${h}"><polyline fill="none" stroke="${color}" stroke-width="1.5" points="${path}"/><text x="4" y="10" font-size="10" fill="#666">max ${fmt(y1, 2)}</text></svg>`;
}
let targets = "";
function render(s) {
  document.getElementById("prefix").textContent = s.prefix + "/";
  const rows = [], charts = [], opts = [];
  for (const [name, d] of Object.entries(s.devices).sort()) {
    const h = d.health || {};
    const models = Object.entries(d.models).map(([m, e]) => {
      opts.push(`<option value="${esc(name)}|${esc(m)}">${esc(name)} / ${esc(m)}</option>`);
      charts.push(`<div class="chart"><b>${esc(name)} / ${esc(m)}</b><div>req/s</div>${spark(e.throughput, "#1565c0")}<div>p99 ms</div>${spark(e.p99_ms, "#c62828")}</div>`);
      return `${esc(m)} v${esc(e.version || "?")}${e.deployment ? " (" + esc(e.deployment) + ")" : ""}`;
    }).join("<br>");
    rows.push(`<tr data-device="${esc(name)}"><td>${esc(name)}</td><td class="${esc(d.status)}">${esc(d.status)}</td>` +
      `<td>${esc((h.groups || []).join(", "))}</td><td>${fmt(h.uptime_s, 0)} s</td><td>${fmt(h.cpu_temp_c, 1)}</td>` +
      `<td>${h.rss_bytes ? fmt(h.rss_bytes / 1048576, 1) : "–"}</td><td>${fmt(h.outbox_depth, 0)}</td><td>${models}</td></tr>`);
  }
  document.querySelector("#devices tbody").innerHTML = rows.join("");
  document.getElementById("charts").innerHTML = charts.join("");
  const o = opts.join("");
  if (o !== targets) { targets = o; document.getElementById("target").innerHTML = o; }
  document.getElementById("feed").innerHTML = s.events.slice().reverse().map(e =>
    `<li class="${esc(e.kind)}">${new Date(e.time * 1000).toLocaleTimeString()} ${esc(e.device)}/${esc(e.model)} ${esc(e.id)}: ${esc(e.text)}</li>`).join("");
}
function connect() {
  const es = new EventSource("/events" + q);
  es.onopen = () => document.getElementById("conn").textContent = "live";
  es.onmessage = m => render(JSON.parse(m.data));
  es.onerror = () => { document.getElementById("conn").textContent = "reconnecting…"; };
}
document.getElementById("try").onsubmit = async ev => {
  ev.preventDefault();
  const [device, model] = document.getElementById("target").value.split("|");
  const out = document.getElementById("answer");
  let instances;
  try { instances = JSON.parse(document.getElementById("instances").value); }
  catch (e) { out.textContent = "instances: not JSON (" + e.message + ")"; return; }
  out.textContent = "waiting…";
  const r = await fetch("/api/try" + q, {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({device, model, instances})});
  out.textContent = JSON.stringify(await r.json(), null, 1);
};
connect();
</script></body></html>
"""
