"""``compare.html``: one self-contained page (inline SVG plots, no script, no network) that
opens offline: the recommendation, the table, quality against latency with the intervals
as error bars, learning curves with bands, importances and confusion matrices.
"""

from __future__ import annotations

import html
import math
from typing import Any

from edgewise.trainer.compare import CandidateResult, CompareReport
from edgewise.trainer.report import cut_at_word, edge_score, headers, table_rows

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
MID = 'text-anchor="middle"'
STYLE = """body{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 12px}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td.reason{text-align:left;white-space:normal}
tr.recommended td{background:#fff4c2;font-weight:600}
section.recommended{border-left:4px solid #e0a800;padding-left:10px}
#recommendation{background:#eef6ee;padding:1em} svg{width:100%;height:auto}
svg text{font-size:12px;font-family:sans-serif}
.wide,.plot{overflow-x:auto}
code,p,h1{overflow-wrap:anywhere}
@media (max-width:640px){body{margin:1em auto;font-size:16px}.plot svg{min-width:700px}}"""
CHAR_PX = 7.0  # a generous width of one 12 px sans-serif character, for label layout
LINE_PX = 14.0


def spread(wanted: list[float], gap: float, low: float, high: float) -> list[float]:
    """Label positions (e.g. y of end labels) at least ``gap`` apart, each as close to its
    wanted position as the others allow, all within [low, high]; order kept."""
    order = sorted(range(len(wanted)), key=wanted.__getitem__)
    placed: list[float] = []
    for k in order:  # push down past the previous label
        y = max(wanted[k], placed[-1] + gap) if placed else max(wanted[k], low)
        placed.append(y)
    overflow = (placed[-1] - high) if placed else 0.0
    if overflow > 0:  # then shift up from the bottom, keeping the gaps
        for i in range(len(placed) - 1, -1, -1):
            limit = high if i == len(placed) - 1 else placed[i + 1] - gap
            placed[i] = min(placed[i], limit)
    out = [0.0] * len(wanted)
    for k, y in zip(order, placed, strict=True):
        out[k] = max(y, low)
    return out


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round ticks (steps of 1, 2 or 5 x 10^k) covering [low, high], about ``count``."""
    if not high > low:
        high = low + 1.0
    raw = (high - low) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = []
    k = 0
    while (v := first + k * step) < high + step * 0.999:
        ticks.append(round(v, 12))
        k += 1
    return ticks


def tick_text(value: float, ticks: list[float]) -> str:
    """A tick's label with as many decimals as the step needs."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{digits}f}"


def log_axis(low: float, high: float) -> tuple[list[float], float, float]:
    """Ticks of a log10 axis covering [low, high] (log10 units), and the axis widened to
    the ticks just outside: powers of ten when four or more fall in, else 1-2-5 per
    decade, else every digit, so that at least three ticks are labelled."""
    span = range(math.floor(low) - 1, math.ceil(high) + 2)
    for mantissas in ((1,), (1, 2, 5), tuple(range(1, 10))):
        values = sorted(10.0**k * m for k in span for m in mantissas)
        below = max(v for v in values if math.log10(v) <= low + 1e-12)
        above = min(v for v in values if math.log10(v) >= high - 1e-12)
        ticks = [v for v in values if below <= v <= above]
        if len(ticks) >= (4 if mantissas == (1,) else 3):
            return ticks, math.log10(below), math.log10(above)
    return ticks, math.log10(below), math.log10(above)


def _free(box: tuple[float, float, float, float], taken: list[tuple[float, ...]]) -> bool:
    x0, y0, x1, y1 = box
    return all(x1 <= a or x0 >= c or y1 <= b or y0 >= d for a, b, c, d in taken)


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    # A viewBox and width 100 %: the chart scales to the page's width, text with it.
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>'
        + "".join(body) + "</svg>"
    )  # fmt: skip


def _clip(metric: str) -> Any:
    """Where a drawn interval ends: a t interval can pass 1.0 accuracy or 0 RMSE; the
    score cannot (compare.json keeps the interval as computed)."""
    high = 1.0 if metric == "accuracy" else math.inf
    return lambda v: min(max(float(v), 0.0), high)


def _scatter(report: CompareReport) -> str:
    """Quality (y) against per-sample latency (x, log scale); circle area ~ size. The dot
    is the edge artifact's score on the held-out split, the bar the 95 % interval over the
    seeded splits with a tick at its mean (the legend says so); the recommended candidate
    is ringed."""
    done = [r for r in report.candidates if not r.skipped]
    w, h, pad, top = 640, 380, 60, 70
    xs = [math.log10(max(r.latency_us["p50"], 0.1)) for r in done]
    ys = [edge_score(r, report.primary) for r in done]
    cap = _clip(report.primary)
    bars = [(cap(r.interval["low"]), cap(r.interval["high"])) if r.interval else None for r in done]
    means = [cap(r.interval["mean"]) if r.interval else None for r in done]
    xticks, x0, x1 = log_axis(min(xs) - 0.05, max(xs) + 0.05)
    spans = ys + [v for b in bars if b for v in b]
    ticks = nice_ticks(min(spans), max(spans))
    y0, y1 = ticks[0], ticks[-1]
    sx = lambda v: pad + (v - x0) / (x1 - x0) * (w - 2 * pad)  # noqa: E731
    sy = lambda v: h - pad - (v - y0) / (y1 - y0) * (h - pad - top)  # noqa: E731
    mid_y = (h + top - pad) / 2
    body = [f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#333"/>',
            f'<line x1="{pad}" y1="{top}" x2="{pad}" y2="{h - pad}" stroke="#333"/>',
            f'<text x="{w / 2}" y="{h - 15}" {MID}>p50 latency per sample, µs (log)</text>',
            f'<text x="15" y="{mid_y}" transform="rotate(-90 15 {mid_y})" '
            f'text-anchor="middle">{report.primary} (edge)</text>']  # fmt: skip
    n = next((r.interval["n"] for r in done if r.interval), None)
    legend = [
        f'<circle cx="{pad + 6}" cy="14" r="5" fill="#555" fill-opacity="0.7"/>'
        f'<text class="legend" x="{pad + 16}" y="18">{report.primary} of the edge artifact '
        "on the held-out split (area ~ artifact size)</text>",
    ]
    if n is not None:
        legend.append(
            f'<line x1="{pad + 6}" y1="30" x2="{pad + 6}" y2="46" stroke="#555" stroke-width="2"/>'
            f'<line x1="{pad + 2}" y1="38" x2="{pad + 10}" y2="38" stroke="#555" '
            f'stroke-width="2"/><text class="legend" x="{pad + 16}" y="42">95 % interval over '
            f"{n} seeded splits, tick at its mean</text>"
        )
    if report.recommendation.get("choice"):
        legend.append(
            f'<circle cx="{w - 150}" cy="38" r="7" fill="none" stroke="#000" stroke-width="2"/>'
            f'<text class="legend" x="{w - 138}" y="42">recommended</text>'
        )
    body += legend
    for v in xticks:
        x = sx(math.log10(v))
        body.append(
            f'<line x1="{x:.1f}" y1="{h - pad}" x2="{x:.1f}" y2="{h - pad + 4}" stroke="#333"/>'
            f'<text class="tick" x="{x:.1f}" y="{h - pad + 17}" {MID}>{v:g}</text>'
        )
    for v in ticks:
        body.append(
            f'<line x1="{pad}" y1="{sy(v):.1f}" x2="{w - pad}" y2="{sy(v):.1f}" stroke="#eee"/>'
            f'<text class="ytick" x="{pad - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">'
            f"{tick_text(v, ticks)}</text>"
        )
    taken: list[tuple[float, ...]] = [(0, 0, w, top - 8)]  # the legend's rows
    labels = []
    chosen = report.recommendation.get("choice")
    for i, (r, x, y, bar, mean) in enumerate(zip(done, xs, ys, bars, means, strict=True)):
        radius = 4 + 3 * math.log10(1 + r.size_bytes / 1024)
        color = PALETTE[i % len(PALETTE)]
        if bar:
            body.append(
                f'<line class="interval" data-name="{r.name}" x1="{sx(x):.1f}" '
                f'y1="{sy(bar[0]):.1f}" x2="{sx(x):.1f}" y2="{sy(bar[1]):.1f}" '
                f'stroke="{color}" stroke-width="2"/>'
            )
            taken.append((sx(x) - 4, sy(bar[1]), sx(x) + 4, sy(bar[0])))
        if mean is not None:
            body.append(
                f'<line class="mean" data-name="{r.name}" x1="{sx(x) - 5:.1f}" '
                f'y1="{sy(mean):.1f}" x2="{sx(x) + 5:.1f}" y2="{sy(mean):.1f}" '
                f'stroke="{color}" stroke-width="2"/>'
            )
        body.append(
            f'<circle class="point" data-name="{r.name}" cx="{sx(x):.1f}" cy="{sy(y):.1f}" '
            f'r="{radius:.1f}" fill="{color}" fill-opacity="0.7"/>'
        )
        if r.name == chosen:
            body.append(
                f'<circle class="recommended" data-name="{r.name}" cx="{sx(x):.1f}" '
                f'cy="{sy(y):.1f}" r="{radius + 4:.1f}" fill="none" stroke="#000" '
                'stroke-width="2"/>'
            )
            radius += 4
        labels.append((r.name, sx(x), sy(y), radius))
        taken.append((sx(x) - radius, sy(y) - radius, sx(x) + radius, sy(y) + radius))
    for name, px, py, radius in labels:
        body.append(_point_label(name, px, py, radius, w, h, taken))
    return _svg(w, h, body, f"{report.primary} vs latency (circle area ~ artifact size)")


def _point_label(
    name: str, px: float, py: float, radius: float, w: int, h: int, taken: list[tuple[float, ...]]
) -> str:
    """A point's label right (or left) of it, moved up or down until it overlaps nothing."""
    width = CHAR_PX * len(name)
    for dy in (0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5):
        y = py + 4 + dy * LINE_PX
        for right in (True, False):
            x0 = px + radius + 3 if right else px - radius - 3 - width
            box = (x0, y - 11, x0 + width, y + 3)
            if x0 >= 2 and x0 + width <= w - 2 and 12 <= y <= h - 2 and _free(box, taken):
                taken.append(box)
                return f'<text class="label" x="{x0:.1f}" y="{y:.1f}">{html.escape(name)}</text>'
    x0 = min(px + radius + 3, w - 2 - width)
    taken.append((x0, py - 7, x0 + width, py + 7))
    return f'<text class="label" x="{x0:.1f}" y="{py + 4:.1f}">{html.escape(name)}</text>'


def _curves(report: CompareReport) -> str:
    done = [r for r in report.candidates if not r.skipped and r.learning_curve]
    w, h, pad = 760, 320, 60
    right = 200  # room for the end labels
    values = [v for r in done for v in r.learning_curve.values() if v is not None]
    cap = _clip(report.primary)
    values += [cap(v) for r in done for band in r.learning_band.values() for v in band]
    if not values:
        return ""
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.05, high + 0.05
    yticks = nice_ticks(low, high)
    y0, y1 = yticks[0], yticks[-1]
    sx = lambda f: pad + f * (w - pad - right)  # noqa: E731
    sy = lambda v: h - pad - (v - y0) / (y1 - y0) * (h - 2 * pad)  # noqa: E731
    body = [
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - right}" y2="{h - pad}" stroke="#333"/>',
        f'<text x="{(w - right + pad) / 2}" y="{h - 15}" {MID}>fraction of the training set</text>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        body.append(
            f'<line x1="{sx(tick):.1f}" y1="{h - pad}" x2="{sx(tick):.1f}" y2="{h - pad + 4}" '
            'stroke="#333"/>'
            f'<text class="tick" x="{sx(tick):.1f}" y="{h - pad + 17}" {MID}>{tick:g}</text>'
        )
    ends: list[tuple[str, str, float, float]] = []
    for v in yticks:
        body.append(
            f'<line x1="{pad}" y1="{sy(v):.1f}" x2="{w - right}" y2="{sy(v):.1f}" stroke="#eee"/>'
            f'<text class="ytick" x="{pad - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">'
            f"{tick_text(v, yticks)}</text>"
        )
    for i, r in enumerate(done):
        pts = [(float(f), v) for f, v in r.learning_curve.items() if v is not None]
        color = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{sx(f):.1f},{sy(v):.1f}" for f, v in pts)
        if r.learning_band:  # 95 % interval over the seeded splits, as a shaded band
            edge = sorted((float(f), cap(lo), cap(hi)) for f, (lo, hi) in r.learning_band.items())
            ring = [f"{sx(f):.1f},{sy(hi):.1f}" for f, _, hi in edge]
            ring += [f"{sx(f):.1f},{sy(lo):.1f}" for f, lo, _ in reversed(edge)]
            # Light fill and dashed edges in the curve's colour: overlapping bands stay
            # told apart by their edges.
            body.append(
                f'<polygon class="band" data-name="{r.name}" points="{" ".join(ring)}" '
                f'fill="{color}" fill-opacity="0.08" stroke="{color}" stroke-opacity="0.8" '
                f'stroke-width="1" stroke-dasharray="{3 + 2 * (i % 3)} 3"/>'
            )
        body.append(
            f'<polyline class="curve" data-name="{r.name}" points="{path}" fill="none" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        if pts:
            f, v = pts[-1]
            ends.append((r.name, color, sx(f) + 6, sy(v) + 4))
    # End labels in the right margin, moved apart so that none overlaps another.
    ys = spread([y for *_, y in ends], LINE_PX, 12, h - pad)
    for (name, color, x, _), y in zip(ends, ys, strict=True):
        body.append(
            f'<text class="label" x="{x:.1f}" y="{y:.1f}" fill="{color}">{html.escape(name)}</text>'
        )
    return _svg(w, h, body, f"learning curves ({report.primary} on the test split)")


def _bars(r: CandidateResult, top: int = 8) -> str:
    items = list(r.importance.items())[:top]
    if not items:
        return ""
    w, row = 560, 22
    h = row * len(items) + 10
    peak = max(max(v for _, v in items), 1e-9)
    body = []
    for i, (name, v) in enumerate(items):
        length = max(0.0, v) / peak * 200
        body.append(f'<text x="0" y="{i * row + 15}">{html.escape(cut_at_word(name, 30))}</text>')
        body.append(
            f'<rect class="bar" x="220" y="{i * row + 4}" width="{length:.1f}" height="14" '
            'fill="#1f77b4"/>'
        )
        body.append(f'<text x="{226 + length:.1f}" y="{i * row + 15}">{v:.4f}</text>')
    return _svg(w, h, body, f"{r.name}: permutation importance")


def _importance(r: CandidateResult, metric: str) -> str:
    chart = _bars(r)
    if not chart:
        return ""
    return (
        f"<h4>Permutation importance</h4><p>How much {html.escape(metric)} drops when one "
        "feature's values are shuffled on the held-out rows (larger: the model leans on it "
        f"more).</p><div class='plot'>{chart}</div>"
    )


def _confusion_table(r: CandidateResult, labels: list[Any]) -> str:
    if not r.confusion:
        return ""
    peak = max(max(row) for row in r.confusion) or 1
    head = "".join(f"<th>{html.escape(str(lab))}</th>" for lab in labels)
    body = []
    for lab, row in zip(labels, r.confusion, strict=True):
        cells = "".join(
            f'<td style="background:rgba(31,119,180,{v / peak:.2f})">{v}</td>' for v in row
        )
        body.append(f"<tr><th>{html.escape(str(lab))}</th>{cells}</tr>")
    return (
        f'<table class="confusion"><tr><th>true \\ predicted</th>{head}</tr>{"".join(body)}</table>'
    )


def render_html(report: CompareReport) -> str:
    """One self-contained page: recommendation first, then table, plots, details."""
    rows = table_rows(report)
    table = (
        "<table id='summary'><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in headers(report))
        + "</tr>"
    )
    chosen = report.recommendation.get("choice")
    for row in rows:
        mark = ' class="recommended"' if row and row[0] == chosen else ""
        cells = [
            f'<td class="reason" colspan="10">{html.escape(c)}</td>'
            if c.startswith("skipped: ")
            else f"<td>{html.escape(c)}</td>"
            for c in row
            if c or not row[2].startswith("skipped: ")
        ]
        table += f"<tr{mark}>" + "".join(cells) + "</tr>"
    table += "</table>"
    details = []
    for r in report.candidates:
        if r.skipped:
            continue
        note = f"<p>{html.escape(r.int8_note)}</p>" if r.int8_note else ""
        best = r.name == chosen
        details.append(
            f"<section{' class=recommended' if best else ''}><h3>{html.escape(r.name)}"
            f"{' (recommended)' if best else ''}</h3>"
            f"<p>{'inherently readable' if r.readable else 'not inherently readable'}; "
            f"bundle <code>{html.escape(r.bundle)}</code></p>{note}"
            f"{_importance(r, report.primary)}"
            f"<div class='wide'>{_confusion_table(r, report.labels or [])}</div></section>"
        )
    constraints = ", ".join(f"{k} {v}" for k, v in report.constraints.items() if v is not None)
    rec = report.recommendation
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgewise compare: {html.escape(report.source)}</title>
<style>{STYLE}</style></head><body>
<h1>Classical ML or deep learning on {html.escape(report.source)}?</h1>
<div id="recommendation"><strong>Recommendation.</strong> {html.escape(rec.get("text", ""))}
<br>Constraints: {html.escape(constraints or "none")}.</div>
<p>{report.task}, {report.rows} rows, {report.test_rows} held out (the same seeded split
for every candidate).
Quality "edge" is the converted artifact run through the device's own code; latency is one
sample per call through that code on this machine.</p>
<h2>Summary</h2><div class="wide">{table}</div>
<p>The recommended candidate is highlighted in the table, ringed in the chart and marked
below.</p>
<h2>Quality vs latency vs size</h2><div class="plot">{_scatter(report)}</div>
<h2>Learning curves</h2><div class="plot">{_curves(report)}</div>
<h2>Candidates</h2>{"".join(details)}
</body></html>
"""
