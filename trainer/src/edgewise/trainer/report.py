"""What ``edgewise compare`` decides and prints: the recommendation (ties within noise,
then the fastest or a readable one) and the terminal table. The HTML page is
``edgewise.trainer.report_html``.
"""

from __future__ import annotations

from typing import Any

from edgewise.trainer.compare import CandidateResult, CompareReport
from edgewise.trainer.uncertainty import Interval, paired

NEAR = {"accuracy": 0.01, "rmse": 0.05}  # "as good": within 1 point / within 5 % RMSE
# A readable candidate counts as fast as the fastest within 1.2x or 10 µs of its p50: the
# same model's p50 moves by more than that between runs (logistic regression on
# breast_cancer: 18.3 µs in one session, 12.4 µs in the next), so a 10 vs 12 µs gap must
# not pick a network over a linear model.
READABLE_SLACK, READABLE_SLACK_US = 1.2, 10.0


def edge_score(r: CandidateResult, metric: str) -> float:
    return float(r.quality_edge[metric])


def recommend(
    report: CompareReport,
    max_latency_ms: float | None = None,
    max_size_kb: float | None = None,
    min_accuracy: float | None = None,
) -> dict[str, Any]:
    """Pick a candidate: among those meeting the constraints and near the best quality,
    the fastest (a readable one when it is as fast); the reasons are measured figures."""
    metric = report.primary
    measured = [r for r in report.candidates if not r.skipped]
    report.constraints = {
        "max_latency_ms": max_latency_ms,
        "max_size_kb": max_size_kb,
        "min_accuracy": min_accuracy,
    }
    excluded: dict[str, str] = {}
    ok = []
    for r in measured:
        why = []
        if max_latency_ms is not None and r.latency_us["p50"] / 1000 > max_latency_ms:
            why.append(f"p50 latency {r.latency_us['p50'] / 1000:.3f} ms > {max_latency_ms} ms")
        if max_size_kb is not None and r.size_bytes / 1024 > max_size_kb:
            why.append(f"size {r.size_bytes / 1024:.1f} KB > {max_size_kb} KB")
        if (
            min_accuracy is not None
            and metric == "accuracy"
            and edge_score(r, metric) < min_accuracy
        ):
            why.append(f"accuracy {edge_score(r, metric):.4f} < {min_accuracy}")
        if why:
            excluded[r.name] = "; ".join(why)
        else:
            ok.append(r)
    if not ok:
        report.recommendation = {
            "choice": None,
            "text": "No candidate meets the constraints: "
            + "; ".join(f"{k}: {v}" for k, v in excluded.items()),
            "excluded": excluded,
        }
        return report.recommendation
    higher = metric == "accuracy"
    intervals = {r.name: Interval.from_json(r.interval) for r in ok if r.interval}
    noise = len(intervals) == len(ok) > 1  # every candidate scored on repeated splits
    rank = (lambda r: intervals[r.name].mean) if noise else (lambda r: edge_score(r, metric))
    best = max(ok, key=lambda r: rank(r) if higher else -rank(r))
    b = rank(best)
    ties: dict[str, str] = {}
    if noise:  # tied: the paired difference with the best is within noise
        ties = tie_rules(intervals, best.name)
        near = [r for r in ok if r is best or r.name in ties]
    else:
        near = [
            r for r in ok
            if (b - rank(r) <= NEAR[metric] if higher else rank(r) <= b * (1 + NEAR[metric]))
        ]  # fmt: skip
    fastest = min(near, key=lambda r: r.latency_us["p50"])
    quick = fastest.latency_us["p50"]
    slack = max(READABLE_SLACK * quick, quick + READABLE_SLACK_US)
    readable = [r for r in near if r.readable and r.latency_us["p50"] <= slack]
    choice = readable[0] if readable and not fastest.readable else fastest
    c = rank(choice)
    parts = [f"{choice.name} ({choice.family}, {choice.artifact})"]
    n = intervals[best.name].n if noise else 0
    if choice is best:
        parts.append(f"the best {metric} measured ({_quality(choice, intervals, c)})")
    elif noise:
        parts.append(
            f"tied within noise with the best ({best.name}): {intervals[choice.name].text()} "
            f"vs {intervals[best.name].text()} over {n} seeded splits, {ties[choice.name]}"
        )
    else:
        gap = (b - c) * 100 if higher else (c / b - 1) * 100
        unit = "points" if higher else "% RMSE"
        parts.append(
            f"{metric} {c:.4f}, within {gap:.1f} {unit} of the best ({best.name}, {b:.4f})"
        )
    if choice is not best:
        ratio = best.latency_us["p50"] / max(choice.latency_us["p50"], 1e-9)
        parts.append(f"{ratio:.1f}x lower latency than {best.name}")
    parts.append(f"p50 {choice.latency_us['p50']:.0f} µs per sample on the edge runtime")
    parts.append(f"{choice.size_bytes / 1024:.1f} KB")
    parts.append("readable" if choice.readable else "not inherently readable")
    others = [r.name for r in near if r is not choice]
    fast = (
        f"the fastest (a readable one when within {READABLE_SLACK:g}x or "
        f"{READABLE_SLACK_US:g} µs of its latency)"
    )
    rule = (
        "rule: a candidate is tied with the best when the 95 % interval of their paired "
        "per-split difference contains 0 (where they share fewer than two scored splits: "
        f"when their 95 % intervals overlap); of the tied, {fast}"
        if noise
        else f"rule: within {NEAR[metric]:g} of the best is as good; of those, {fast}"
    )
    report.recommendation = {
        "choice": choice.name,
        "best_quality": best.name,
        "tied": others,
        "tie_rules": ties,
        "rule": rule,
        "text": ": ".join(parts[:2]) + ", " + ", ".join(parts[2:])
        + (f". Tied with it: {', '.join(others)}" if others else "") + f". ({rule})",
        "excluded": excluded,
    }  # fmt: skip
    return report.recommendation


def tie_rules(intervals: dict[str, Interval], best: str) -> dict[str, str]:
    """The candidates tied with ``best``, each with the rule that decided it: the paired
    per-split difference's 95 % interval contains 0 (the splits are shared, so their noise
    is too), or, below two shared splits, their intervals overlap."""
    out: dict[str, str] = {}
    for name, got in intervals.items():
        if name == best:
            continue
        diff = paired(intervals[best], got)
        if diff is not None:
            if diff.low <= 0 <= diff.high:
                out[name] = (
                    f"paired difference ({best} - {name}) {diff.text()} over {diff.n} "
                    "splits contains 0"
                )
        elif got.overlaps(intervals[best]):
            out[name] = "95 % intervals overlap (fewer than two shared splits)"
    return out


def _quality(r: CandidateResult, intervals: dict[str, Interval], value: float) -> str:
    got = intervals.get(r.name)
    return f"{got.text()} over {got.n} seeded splits" if got else f"{value:.4f}"


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table_rows(report: CompareReport) -> list[list[str]]:
    """The comparison as strings; the terminal table and the HTML table share them."""
    m = report.primary
    rows = []
    for r in report.candidates:
        if r.skipped:
            rows.append([r.name, r.family, "skipped: " + r.skipped] + [""] * 9)
            continue
        rows.append([
            r.name, r.family, r.artifact,
            _fmt(r.quality.get(m)), _fmt(r.quality_edge.get(m)),
            Interval.from_json(r.interval).text() if r.interval else "-",
            "refused" if r.int8_note else _fmt(r.quality_int8.get(m) if r.quality_int8 else None),
            f"{r.latency_us['p50']:.1f}", f"{r.size_bytes / 1024:.1f}",
            "-" if r.size_int8_bytes is None else f"{r.size_int8_bytes / 1024:.1f}",
            "-" if r.memory_kib is None else f"{r.memory_kib / 1024:.1f}",
            f"{r.fit_seconds:.2f}",
        ])  # fmt: skip
    return rows


def headers(report: CompareReport) -> list[str]:
    m = report.primary
    return ["candidate", "family", "artifact", f"{m} host", f"{m} edge",
            f"{m} mean ± 95 % (splits)", f"{m} int8",
            "p50 µs", "KB", "KB int8", "mem MiB", "fit s"]  # fmt: skip


def render_table(report: CompareReport) -> str:
    """A plain-text table for the terminal, the recommendation above it."""
    head = headers(report)
    rows = [[row[0], row[1], cut_at_word(row[2], 60), *row[3:]] for row in table_rows(report)]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = [report.recommendation.get("text", ""), ""]
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    # Why a candidate was excluded or an int8 twin is missing belongs next to the table,
    # not only in compare.json and the HTML.
    excluded = report.recommendation.get("excluded") or {}
    notes = [f"{name}: excluded by the constraints: {why}" for name, why in excluded.items()]
    notes += [f"{r.name}: {r.int8_note}" for r in report.candidates if r.int8_note]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def cut_at_word(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, marked with …"""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"


# -- HTML ---------------------------------------------------------------------------------
