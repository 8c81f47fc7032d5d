/// The live page at `/`: one self-contained HTML file (no CDN: run machines have no internet)
/// whose script polls `/api/status` every second and draws the curves as SVG itself.
enum LivePage {
    static let html = Array(text.utf8)

    static let text = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>csptrain run</title>
<style>
  :root { --fg: #1d2330; --muted: #647087; --line: #d9dee8; --accent: #2463eb; --accent2: #d9480f; --goal: #2f9e44; --bad: #c92a2a; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: #f6f7fa; }
  header { padding: 14px 22px; background: #fff; border-bottom: 1px solid var(--line); display: flex; flex-wrap: wrap; gap: 8px 28px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0 12px 0 0; }
  .kv { color: var(--muted); } .kv b { color: var(--fg); font-weight: 600; }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 16px; padding: 16px 22px; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
  section h2 { font-size: 14px; margin: 0 0 8px; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); }
  th { color: var(--muted); font-weight: 500; }
  td.num, th.num { text-align: right; }
  .state-joined { color: var(--goal); } .state-gone { color: var(--bad); }
  svg text { font-size: 11px; fill: var(--muted); }
  .progress { height: 6px; width: 220px; background: var(--line); border-radius: 3px; overflow: hidden; display: inline-block; vertical-align: middle; }
  .progress > div { height: 100%; background: var(--accent); }
  #error { color: var(--bad); }
  .empty { color: var(--muted); font-style: italic; }
</style>
</head>
<body>
<header>
  <h1>csptrain</h1>
  <span class="kv">run <b id="run-id">–</b></span>
  <span class="kv">phase <b id="phase">–</b></span>
  <span class="kv">step <b id="step">0</b> / <b id="total">–</b> <span class="progress"><div id="progress" style="width:0"></div></span></span>
  <span class="kv">ETA <b id="eta">–</b></span>
  <span class="kv">loss <b id="loss">–</b></span>
  <span class="kv">examples/s <b id="eps">–</b></span>
  <span class="kv">valid WER <b id="wer">–</b></span>
  <span class="kv">method <b id="method">–</b></span>
  <span id="error"></span>
</header>
<main>
  <section><h2>Training loss against step</h2><svg id="loss-chart" width="100%" viewBox="0 0 460 240" role="img" aria-label="loss against step"></svg></section>
  <section><h2>Validation WER against step</h2><svg id="wer-chart" width="100%" viewBox="0 0 460 240" role="img" aria-label="validation WER against step"></svg></section>
  <section><h2>Workers</h2>
    <table id="workers"><thead><tr><th>name</th><th>host</th><th>state</th><th class="num">micro-batches</th><th class="num">micro-batch time</th><th class="num">last heard</th><th class="num">refused</th></tr></thead><tbody></tbody></table>
  </section>
  <section><h2>Sparsity per layer</h2><svg id="sparsity-chart" width="100%" viewBox="0 0 460 240" role="img" aria-label="sparsity per layer"></svg></section>
  <section><h2>Support updates <span class="kv" id="support-step"></span></h2>
    <table id="support"><thead><tr><th>layer</th><th class="num">sparsity</th><th class="num">overlap with top-k</th><th class="num">recovery error</th></tr></thead><tbody></tbody></table>
  </section>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = token ? { Authorization: "Bearer " + token } : {};
const NS = "http://www.w3.org/2000/svg";
const $ = id => document.getElementById(id);
const pct = v => v == null ? "–" : (100 * v).toFixed(2) + "%";
const secs = s => s == null ? "–" : s < 1 ? (1000 * s).toFixed(0) + " ms" : s < 120 ? s.toFixed(1) + " s" : s < 7200 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h";

function el(tag, attrs, parent, text) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text != null) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function ticks(lo, hi, n) {
  const span = hi - lo || 1, raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => span / s <= n) || 10 * mag;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * span; t += step) out.push(+t.toPrecision(12));
  return out;
}
// A line chart: series [{name, color, points: [[x, y]]}], goal lines [{y, label}], axis labels.
function lineChart(svg, series, opts) {
  svg.textContent = "";
  const W = 460, H = 240, L = 56, R = 12, T = 12, B = 36;
  const all = series.flatMap(s => s.points);
  if (!all.length) { el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, svg, opts.empty || "no data yet"); return; }
  let x0 = Math.min(...all.map(p => p[0])), x1 = Math.max(...all.map(p => p[0]));
  if (opts.xMax != null) x1 = Math.max(x1, opts.xMax);
  let ys = all.map(p => p[1]).concat((opts.goals || []).map(g => g.y));
  let y0 = opts.yMin != null ? opts.yMin : Math.min(...ys), y1 = Math.max(...ys);
  if (y1 === y0) { y1 = y0 + 1; }
  const pad = (y1 - y0) * 0.05; y1 += pad; if (opts.yMin == null) y0 -= pad;
  if (x1 === x0) x1 = x0 + 1;
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R), sy = y => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  for (const t of ticks(y0, y1, 5)) {
    el("line", { x1: L, x2: W - R, y1: sy(t), y2: sy(t), stroke: "#eef0f4" }, svg);
    el("text", { x: L - 6, y: sy(t) + 4, "text-anchor": "end" }, svg, opts.yFormat ? opts.yFormat(t) : t);
  }
  const xFormat = t => Math.abs(t) >= 10000 ? (t / 1000) + "k" : t;
  for (const t of ticks(x0, x1, 6)) el("text", { x: sx(t), y: H - B + 16, "text-anchor": "middle" }, svg, xFormat(t));
  el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#9aa3b5" }, svg);
  el("line", { x1: L, x2: L, y1: T, y2: H - B, stroke: "#9aa3b5" }, svg);
  el("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, svg, opts.xLabel);
  el("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(T + H - B) / 2})` }, svg, opts.yLabel);
  for (const g of opts.goals || []) {
    el("line", { x1: L, x2: W - R, y1: sy(g.y), y2: sy(g.y), stroke: "var(--goal)", "stroke-dasharray": "5 4", class: "goal" }, svg);
    el("text", { x: W - R - 2, y: sy(g.y) - 4, "text-anchor": "end", style: "fill: var(--goal)" }, svg, g.label);
  }
  let legendX = L + 8;
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => (i ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1)).join(" ");
    el("path", { d, fill: "none", stroke: s.color, "stroke-width": 1.6, class: "curve", "data-series": s.name }, svg);
    if (s.dots) for (const p of s.points) el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: s.color }, svg);
    if (series.length > 1) { el("text", { x: legendX, y: T + 10, style: `fill: ${s.color}` }, svg, s.name); legendX += 10 + 7 * s.name.length; }
  }
}
function barChart(svg, layers, goal) {
  svg.textContent = "";
  const W = 460, H = 240, L = 120, R = 48, T = 8, B = 34;
  if (!layers.length) { el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, svg, "no prunable layers"); return; }
  const rowH = Math.min(24, (H - T - B) / layers.length), sx = v => L + v * (W - L - R);
  layers.forEach((l, i) => {
    const y = T + i * rowH;
    el("text", { x: L - 6, y: y + rowH * 0.7, "text-anchor": "end" }, svg, l.name.length > 18 ? "…" + l.name.slice(-17) : l.name);
    el("rect", { x: L, y: y + 2, width: Math.max(0, sx(l.sparsity) - L), height: rowH - 4, fill: "var(--accent)", class: "bar" }, svg);
    el("text", { x: sx(l.sparsity) + 4, y: y + rowH * 0.7 }, svg, pct(l.sparsity));
  });
  for (const t of [0, 0.25, 0.5, 0.75, 1]) el("text", { x: sx(t), y: H - B + 14, "text-anchor": "middle" }, svg, (100 * t) + "%");
  el("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, svg, "fraction of the layer's weights that are zero");
  if (goal != null) {
    el("line", { x1: sx(goal), x2: sx(goal), y1: T, y2: H - B, stroke: "var(--goal)", "stroke-dasharray": "5 4" }, svg);
    el("text", { x: sx(goal) + 3, y: H - B - 4, style: "fill: var(--goal)" }, svg, "target " + pct(goal));
  }
}
function render(s) {
  const r = s.run;
  $("run-id").textContent = r.id; $("phase").textContent = r.status ? r.phase + " (" + r.status + ")" : r.phase;
  $("step").textContent = r.step; $("total").textContent = r.total_steps;
  $("progress").style.width = (100 * Math.min(1, r.step / Math.max(1, r.total_steps))) + "%";
  $("eta").textContent = r.phase === "finished" ? "done" : secs(r.eta_seconds);
  $("loss").textContent = r.loss == null ? "–" : r.loss.toFixed(4);
  $("eps").textContent = r.examples_per_second == null ? "–" : r.examples_per_second.toFixed(0);
  $("wer").textContent = r.valid_wer == null ? "–" : pct(r.valid_wer) + (r.valid_wer_channel == null ? "" : " (channel " + pct(r.valid_wer_channel) + ")")
    + (r.valid_wer_seen == null ? "" : "; training voices " + pct(r.valid_wer_seen));
  $("method").textContent = r.method;
  const pts = s.points;
  lineChart($("loss-chart"), [{ name: "loss", color: "var(--accent)", points: pts.filter(p => p.loss != null).map(p => [p.step, p.loss]) }],
            { xLabel: "step", yLabel: "loss (nats per example)", yMin: 0 });
  lineChart($("wer-chart"), [
      { name: "valid", color: "var(--accent)", dots: true, points: pts.filter(p => p.valid_wer != null).map(p => [p.step, p.valid_wer]) },
      { name: "valid_channel", color: "var(--accent2)", dots: true, points: pts.filter(p => p.valid_wer_channel != null).map(p => [p.step, p.valid_wer_channel]) },
      { name: "valid_seen (training voices)", color: "var(--muted)", dots: true, points: pts.filter(p => p.valid_wer_seen != null).map(p => [p.step, p.valid_wer_seen]) }],
    { xLabel: "step", yLabel: "word error rate", yMin: 0, yFormat: t => (100 * t).toFixed(0) + "%",
      goals: r.goal_wer != null ? [{ y: r.goal_wer, label: "goal " + pct(r.goal_wer) }] : [],
      empty: "no validation yet (coordinator.eval_every_steps and data.valid)" });
  barChart($("sparsity-chart"), s.layers, r.goal_sparsity);
  const wb = $("workers").tBodies[0]; wb.textContent = "";
  for (const w of s.workers) {
    const tr = wb.insertRow();
    const refused = Object.entries(w.refused).map(([k, v]) => k + " " + v).join(", ") || "0";
    [w.name, w.host, w.state, w.micro_batches, secs(w.step_seconds), secs(w.last_heard_seconds_ago) + " ago", refused].forEach((v, i) => {
      const td = tr.insertCell(); td.textContent = v; if (i >= 3) td.className = "num";
      if (i === 2) td.className = w.state === "joined" ? "state-joined" : "state-gone";
    });
  }
  if (!s.workers.length) { const td = wb.insertRow().insertCell(); td.colSpan = 7; td.className = "empty"; td.textContent = "no worker has joined yet"; }
  const sb = $("support").tBodies[0]; sb.textContent = "";
  $("support-step").textContent = s.support_update_step == null ? "(none yet)" : "(last at step " + s.support_update_step + ")";
  for (const l of s.layers) {
    const tr = sb.insertRow();
    [l.name, pct(l.sparsity), l.overlap_with_top_k == null ? "–" : pct(l.overlap_with_top_k), l.recovery_error == null ? "–" : l.recovery_error.toFixed(3)]
      .forEach((v, i) => { const td = tr.insertCell(); td.textContent = v; if (i) td.className = "num"; });
  }
}
async function poll() {
  try {
    const res = await fetch("api/status", { headers, cache: "no-store" });
    if (res.status === 401) { $("error").textContent = "needs the token: open this page as …/#token=<the token>"; return; }
    if (!res.ok) throw new Error(res.status + " " + res.statusText);
    render(await res.json()); $("error").textContent = "";
  } catch (e) { $("error").textContent = "cannot reach the coordinator (" + e.message + "): the run may be over"; }
  finally { setTimeout(poll, 1000); }
}
poll();
</script>
</body>
</html>
"""#
}
