"""``edgewise compare`` end to end: real training, conversion and edge measurement; the
report renders, its figures match the JSON, and the exported bundle serves over MQTT."""

from __future__ import annotations

import itertools
import json
import os
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from edgewise.deploy.broker import LocalBroker
from edgewise.edge.app import build_agent
from edgewise.edge.core.config import AgentConfig
from edgewise.trainer.compare import CandidateResult, CompareReport
from edgewise.trainer.report import recommend, table_rows
from tests.edgewise.test_cli import edgewise
from tests.mqtt_peer import Peer

pytestmark = pytest.mark.slow  # trains every compare candidate, networks included


class Page(HTMLParser):
    """Counts tags and classes, and keeps the text of #recommendation and the table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.classes: dict[str, list[str]] = {}
        self.recommendation = ""
        self.cells: list[str] = []
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if a.get("class"):
            self.classes.setdefault(str(a["class"]), []).append(str(a.get("data-name")))
        if tag not in ("meta", "br", "link", "img", "hr"):  # void: no end tag follows
            self._in.append(a.get("id") or tag)

    def handle_endtag(self, tag: str) -> None:
        if self._in:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if "recommendation" in self._in:
            self.recommendation += data
        if self._in and self._in[-1] == "td" and "summary" in self._in:
            self.cells.append(data)


@pytest.fixture(scope="module")
def iris_compare(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    result = edgewise(
        "compare", "--dataset", "iris", "--candidates", "logistic-regression,random-forest,mlp",
        "--epochs", "15", "--report", str(root / "report"),
        "--export", "best", "--out", str(root / "best"), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[3/3] mlp" in result.stderr  # progress
    return root


def test_report_json_has_every_measure(iris_compare: Path) -> None:
    doc = json.loads((iris_compare / "report" / "compare.json").read_text())
    assert doc["task"] == "classification" and doc["primary"] == "accuracy"
    names = [c["name"] for c in doc["candidates"]]
    assert names == ["logistic-regression", "random-forest", "mlp"]
    for c in doc["candidates"]:
        assert not c["skipped"]
        assert 0.5 < c["quality_edge"]["accuracy"] <= 1 and "f1_macro" in c["quality_edge"]
        assert 0 < c["latency_us"]["p50"] <= c["latency_us"]["p99"]
        assert c["size_bytes"] > 0 and c["fit_seconds"] > 0
        assert c["memory_kib"] is not None and c["memory_kib"] > 0  # measured, fresh process
        assert set(c["learning_curve"]) == {"0.1", "0.25", "0.5", "1"}
        assert set(c["importance"]) == set(doc["features"])
        assert sum(map(sum, c["confusion"])) == doc["test_rows"]
        assert Path(c["bundle"], "manifest.json").is_file()
    by = {c["name"]: c for c in doc["candidates"]}
    assert by["logistic-regression"]["readable"] and not by["mlp"]["readable"]
    assert by["mlp"]["artifact"] == "tflite" and by["random-forest"]["artifact"] == "onnx"
    # int8 of the MLP: either measured (and smaller) or refused by the gate with the reason.
    mlp = by["mlp"]
    assert (mlp["size_int8_bytes"] or 0) < mlp["size_bytes"] or "refused" in mlp["int8_note"]
    # Classical parity is exact here: the converted model answers like scikit-learn.
    for name in ("logistic-regression", "random-forest"):
        assert by[name]["quality_edge"]["accuracy"] == by[name]["quality"]["accuracy"]
    assert doc["recommendation"]["choice"] in names


def test_report_html_renders_the_json(iris_compare: Path) -> None:
    doc = json.loads((iris_compare / "report" / "compare.json").read_text())
    page = Page()
    page.feed((iris_compare / "report" / "compare.html").read_text(encoding="utf-8"))
    assert "<script" not in (iris_compare / "report" / "compare.html").read_text()
    assert page.tags.get("svg", 0) >= 2 + len(doc["candidates"])  # scatter, curves, bars
    names = [c["name"] for c in doc["candidates"]]
    assert sorted(page.classes["point"]) == sorted(names)
    assert sorted(page.classes["curve"]) == sorted(names)
    assert len(page.classes["confusion"]) == len(names)
    assert doc["recommendation"]["text"] in " ".join(page.recommendation.split())
    report = CompareReport(
        **{**doc, "candidates": [CandidateResult(**c) for c in doc["candidates"]]}
    )
    assert page.cells == [cell for row in table_rows(report) for cell in row]


def test_exported_best_serves_over_mqtt(iris_compare: Path, broker: LocalBroker) -> None:
    doc = json.loads((iris_compare / "report" / "compare.json").read_text())
    manifest = json.loads((iris_compare / "best" / "manifest.json").read_text())
    assert manifest["name"] == doc["recommendation"]["choice"]
    device = f"cmp-{uuid.uuid4().hex[:6]}"
    agent = build_agent(
        AgentConfig(bundles=(str(iris_compare / "best"),), broker=broker.url, device=device)
    )
    agent.start()
    peer = Peer(broker.port)
    try:
        assert agent.connection.wait_connected(10)
        peer.subscribe(f"edgewise/{device}/+/out")
        peer.request(
            f"edgewise/{device}/{manifest['name']}/in",
            {"id": "c1", "instances": [[5.1, 3.5, 1.4, 0.2]]},
        )
        answer = peer.expect_json("/out")
        assert answer["id"] == "c1" and answer["predictions"][0]["label"] == "setosa"
    finally:
        peer.close()
        agent.stop(timeout=5)


def candidate(
    name: str, acc: float, p50: float, kb: float, readable: bool = False
) -> CandidateResult:
    # Pure recommendation logic: figures made up for the rule, not measured.
    return CandidateResult(
        name, "classical", readable, "onnx", {"accuracy": acc}, {"accuracy": acc},
        latency_us={"p50": p50, "p99": p50 * 2}, size_bytes=int(kb * 1024),
    )  # fmt: skip


def fake_report(*cands: CandidateResult) -> CompareReport:
    return CompareReport("t", "classification", 100, 20, ["a"], [0, 1], "accuracy", list(cands))


@pytest.mark.parametrize(
    ("constraints", "choice", "phrase"),
    [
        ({}, "gbm", "within 0.5 points of the best (cnn, 0.9700), 10.0x lower latency"),
        ({"max_size_kb": 10}, "tree", "the best accuracy measured (0.9500)"),
        ({"max_latency_ms": 0.1}, "gbm", "the best accuracy measured (0.9650)"),
        ({"min_accuracy": 0.969}, "cnn", "the best accuracy measured (0.9700)"),
        ({"max_latency_ms": 0.001}, None, "No candidate meets the constraints"),
    ],
)
def test_recommendation_rule(constraints: dict[str, Any], choice: str | None, phrase: str) -> None:
    report = fake_report(
        candidate("cnn", 0.97, 500.0, 40.0),
        candidate("gbm", 0.965, 50.0, 300.0),
        candidate("tree", 0.95, 20.0, 2.0, readable=True),
    )
    rec = recommend(report, **constraints)
    assert rec["choice"] == choice and phrase in rec["text"]


def test_readable_wins_when_as_fast_and_as_good() -> None:
    report = fake_report(
        candidate("forest", 0.96, 30.0, 70.0), candidate("logreg", 0.958, 33.0, 1.0, True)
    )
    assert recommend(report)["choice"] == "logreg"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "vibration", "--candidates", "mlp"], "unknown candidate(s) ['mlp']"),
        (["--dataset", "iris", "--export", "best"], "--export NAME and --out DIR go together"),
        (["--dataset", "iris", "--candidates", "resnet"], "unknown candidate(s) ['resnet']"),
        (["--dataset", "diabetes", "--candidates", "mlp"], "unknown candidate(s) ['mlp']"),
        (["--csv", "x.csv"], "--csv needs --target"),
        (["--dataset", "iris", "--min-accuracy", "97"], "fraction in 0..1"),
    ],
)
def test_bad_options_are_one_line(args: list[str], message: str) -> None:
    result = edgewise("compare", *args)
    assert result.returncode == 2 or result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_windows_features_vs_cnn(tmp_path: Path) -> None:
    """Sensor windows: window features + a classical model against the raw-window CNN, both
    measured from raw windows through the edge code; importance per channel."""
    from edgewise.trainer.compare_tensors import compare_tensors
    from edgewise.trainer.tensors import load_vibration

    windows = load_vibration(per_class=30, seed=3)
    report = compare_tensors(
        windows, tmp_path, ["logistic-regression", "cnn1d"], sample_rate=2560.0, epochs=6,
        fractions=(0.5, 1.0), repeats=3,
    )  # fmt: skip
    rec = recommend(report)
    by = {r.name: r for r in report.candidates}
    assert set(by) == {"logistic-regression", "cnn1d"} and not any(r.skipped for r in by.values())
    for r in by.values():
        assert set(r.importance) == {"x", "y", "z"}
        assert r.latency_us["p50"] > 0 and r.size_bytes > 0
        assert sum(map(sum, r.confusion or [])) == report.test_rows
        assert set(r.learning_curve) == {"0.5", "1"}
        # Three seeded splits each, the first being the one everything else is measured on.
        assert r.interval is not None and r.interval["n"] == 3, r.interval
        assert r.interval["scores"][0] == r.quality["accuracy"]
        assert r.interval["low"] <= r.interval["mean"] <= r.interval["high"]
    lr = by["logistic-regression"]
    assert set(lr.learning_band) == {"0.5", "1"}
    assert lr.quality_edge["accuracy"] == lr.quality["accuracy"]  # features on device == host
    assert json.loads(Path(lr.bundle, "manifest.json").read_text())["input"]["kind"] == "window"
    assert rec["choice"] in by


def test_time_ordered_windows_get_blocked_splits(tmp_path: Path) -> None:
    """Windows cut from a CSV: the first split is the loader's (last fifth of each run), the
    others hold out earlier blocks, never random rows, so the interval is honest."""
    from edgewise.trainer.compare_tensors import compare_tensors
    from edgewise.trainer.tensors import load_window_csv

    rng = np.random.default_rng(0)
    labels = np.repeat(["idle", "run", "idle", "run"], [300, 300, 200, 200])
    scale = np.where(labels == "run", 2.0, 1.0)
    frame = {"ax": rng.normal(size=len(labels)) * scale, "ay": rng.normal(size=len(labels))}
    pd.DataFrame({**frame, "label": labels}).to_csv(tmp_path / "s.csv", index=False)
    windows = load_window_csv(tmp_path / "s.csv", 20, 10)
    report = compare_tensors(
        windows, tmp_path / "b", ["logistic-regression"], sample_rate=100.0, fractions=(1.0,)
    )
    (lr,) = report.candidates
    assert not lr.skipped, lr.skipped
    assert windows.test_index is not None and report.test_rows == len(windows.test_index)
    assert lr.interval is not None and lr.interval["n"] == 5
    assert lr.interval["scores"][0] == lr.quality["accuracy"]
    assert lr.interval["mean"] > 0.8  # amplitude separates the classes in every block


def test_images_pixels_vs_cnn2d(tmp_path: Path) -> None:
    """Images: classical models on the flattened pixels against cnn2d, each served in its
    own input format; importance per band of image rows."""
    from edgewise.trainer.compare_tensors import compare_tensors
    from edgewise.trainer.tensors import load_digits_images

    images = load_digits_images()
    keep = np.flatnonzero(np.isin(images.y, [0, 1, 7]))
    report = compare_tensors(
        images.subset(keep), tmp_path, ["logistic-regression", "cnn2d"], epochs=4,
        fractions=(1.0,),
    )  # fmt: skip
    by = {r.name: r for r in report.candidates}
    assert not any(r.skipped for r in by.values()), [r.skipped for r in by.values()]
    assert set(by["cnn2d"].importance) == {"rows 0-1", "rows 2-3", "rows 4-5", "rows 6-7"}
    assert by["logistic-regression"].quality_edge == by["logistic-regression"].quality
    shape = json.loads(Path(by["logistic-regression"].bundle, "manifest.json").read_text())
    assert shape["input"]["shape"] == [None, 64]
    assert json.loads(Path(by["cnn2d"].bundle, "manifest.json").read_text())["input"]["kind"] == (
        "image"
    )


def test_table_says_why_int8_is_missing() -> None:
    """Pure logic: a refused int8 twin is 'refused' in the table, with the gate's reason."""
    from edgewise.trainer.compare import CandidateResult, CompareReport
    from edgewise.trainer.report import render_table

    common = {"latency_us": {"p50": 50.0, "p99": 90.0}, "size_bytes": 2048, "fit_seconds": 1.0}
    mlp = CandidateResult(
        "mlp", "deep", False, "tflite", {"accuracy": 0.9}, {"accuracy": 0.9},
        int8_note="int8 refused: tflite quantize int8: accuracy drops 28.95 points", **common,
    )  # fmt: skip
    lr = CandidateResult(
        "logistic-regression", "classical", True, "onnx", {"accuracy": 0.9}, {"accuracy": 0.9},
        **common,
    )  # fmt: skip
    report = CompareReport("t", "classification", 10, 5, ["a"], [0, 1], "accuracy", [lr, mlp])
    text = render_table(report)
    mlp_row = next(line for line in text.splitlines() if line.startswith("mlp "))
    assert "refused" in mlp_row
    assert "mlp: int8 refused: tflite quantize int8: accuracy drops 28.95 points" in text
    assert "logistic-regression:" not in text


LAYOUT_JS = """() => {
  const inside = (a, b) => a.left >= b.left - 1 && a.right <= b.right + 1
                        && a.top >= b.top - 1 && a.bottom <= b.bottom + 1;
  const overlap = (a, b) => !(a.right <= b.left || a.left >= b.right
                              || a.bottom <= b.top || a.top >= b.bottom);
  const body = document.body.getBoundingClientRect().width;
  return [...document.querySelectorAll("svg")].map((svg) => {
    const box = svg.getBoundingClientRect();
    const texts = [...svg.querySelectorAll("text")].map((t) => [t.textContent,
                                                                t.getBoundingClientRect()]);
    const labels = [...svg.querySelectorAll("text.label")].map((t) => t.getBoundingClientRect());
    const marks = [...svg.querySelectorAll("line.interval, circle.point")]
      .map((m) => m.getBoundingClientRect());
    const clashes = [];
    labels.forEach((a, i) => labels.slice(i + 1).forEach((b) => {
      if (overlap(a, b)) clashes.push(i);
    }));
    labels.forEach((a, i) => marks.forEach((m) => { if (overlap(a, m)) clashes.push(i); }));
    return {title: svg.getAttribute("aria-label"), share: box.width / body,
            outside: texts.filter(([, r]) => !inside(r, box)).map(([t]) => t),
            ticks: svg.querySelectorAll("text.tick").length, clashes: clashes.length,
            yticks: [...svg.querySelectorAll("text.ytick")].map((t) => t.textContent),
            legend: [...svg.querySelectorAll("text.legend")].map((t) => t.textContent),
            text_px: Math.min(...[...svg.querySelectorAll("text")]
                                 .map((t) => parseFloat(getComputedStyle(t).fontSize)
                                             * box.width / svg.viewBox.baseVal.width))};
  });
}"""


def test_report_reads_at_a_glance_in_chromium(iris_compare: Path) -> None:
    """Opened in headless Chromium: every label inside its chart, no two point or curve
    labels on top of each other, tick labels on the learning curves' x axis, charts as
    wide as the page; the screenshot is kept in .artifacts/ (or $EDGEWISE_ARTIFACTS)."""
    import shutil

    from playwright.sync_api import sync_playwright

    from tests.conftest import ROOT

    page_file = iris_compare / "report" / "compare.html"
    artifacts = Path(os.environ.get("EDGEWISE_ARTIFACTS", ROOT / ".artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(page_file.as_uri())
            charts = page.evaluate(LAYOUT_JS)
            page.screenshot(path=str(artifacts / "compare.png"), full_page=True)
            text = page.inner_text("body")
            recommended = page.locator("tr.recommended td").first.inner_text()
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.goto(page_file.as_uri())
            on_phone = phone.evaluate(LAYOUT_JS)
            scroll = phone.evaluate("document.documentElement.scrollWidth - innerWidth")
            phone.screenshot(path=str(artifacts / "compare-390.png"), full_page=True)
        finally:
            browser.close()
    assert len(charts) >= 4  # scatter, learning curves, an importance chart per candidate
    for chart in charts:
        assert chart["outside"] == [], chart
        assert chart["clashes"] == 0, chart
    scatter, curves = charts[0], charts[1]
    assert scatter["share"] > 0.9 and curves["share"] > 0.9  # not a third of the page
    assert curves["ticks"] == 5 and scatter["ticks"] >= 3  # a log axis with enough ticks
    for chart in (scatter, curves):  # round ticks: equal steps of 1, 2 or 5 x 10^k
        values = [float(v) for v in chart["yticks"]]
        steps = {round(b - a, 9) for a, b in itertools.pairwise(values)}
        assert len(steps) == 1, chart["yticks"]
        mantissa = f"{steps.pop():e}".split("e")[0]
        assert float(mantissa) in (1.0, 2.0, 5.0), chart["yticks"]
    # The dot and the bar say what they are; the recommended candidate stands out.
    assert any("held-out split" in t for t in scatter["legend"])
    assert any("95 % interval" in t for t in scatter["legend"])
    assert "recommended" in scatter["legend"] and recommended
    assert "Permutation importance" in text
    # On a phone: nothing wider than the screen, chart text still readable.
    assert scroll <= 0, f"{scroll} px of horizontal scroll at 390 px"
    assert all(c["text_px"] >= 10 for c in on_phone), [c["text_px"] for c in on_phone]
    assert (artifacts / "compare.png").stat().st_size > 10_000


def test_long_reasons_are_cut_at_a_word() -> None:
    from edgewise.trainer.report import cut_at_word
    from edgewise.trainer.report_html import spread

    reason = "mlp takes numbers and categories; rooms.csv has free text 'note'"
    assert cut_at_word(reason, 30) == "mlp takes numbers and…"
    assert spread([100.0, 101.0, 102.0, 10.0], 14, 12, 300) == [100.0, 114.0, 128.0, 12.0]
    assert spread([295.0, 296.0], 14, 12, 300) == [286.0, 300.0]
