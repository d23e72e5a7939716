"""Deep-learning inputs: windows cut from a raw-sample CSV, image folders, tabular rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.edge.errors import EdgewiseError
from edgewise.trainer.datasets import load_builtin, load_csv, load_text_csv
from edgewise.trainer.tensors import from_tabular, load_image_folder, load_window_csv


def _samples_csv(path: Path, runs: list[tuple[str, int]], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    labels = [label for label, n in runs for _ in range(n)]
    n = len(labels)
    df = pd.DataFrame(
        {
            "timestamp": np.arange(n) * 0.01,
            "ax": rng.normal(size=n),
            "ay": rng.normal(size=n),
            "label": labels,
        }
    )
    # Shuffled rows: the loader must order them by time.
    df.sample(frac=1, random_state=seed).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("window", "stride"), [(10, 5), (10, 10), (8, 3)])
def test_windows_stay_inside_one_label_and_held_out_does_not_overlap(
    tmp_path: Path, window: int, stride: int
) -> None:
    path = _samples_csv(tmp_path / "s.csv", [("idle", 100), ("run", 60), ("idle", 47)])
    data = load_window_csv(path, window, stride, test_size=0.25)
    assert data.X.shape[1:] == (window, 2) and data.channels == ["ax", "ay"]
    raw = pd.read_csv(path).sort_values("timestamp")
    values = raw[["ax", "ay"]].to_numpy(np.float32)
    labels = raw["label"].to_numpy()
    starts = []
    for x, label in zip(data.X, data.y):
        # Find where each window came from: it must be one label all along.
        s = int(np.flatnonzero((values[:, 0] == x[0, 0]) & (values[:, 1] == x[0, 1]))[0])
        assert set(labels[s : s + window]) == {label}
        starts.append(s)
    assert data.starts is not None and data.starts.tolist() == starts
    assert data.runs is not None and data.runs.tolist() == sorted(data.runs.tolist())
    assert len(np.unique(data.runs)) == 3  # idle, run, idle: three runs, two labels
    assert data.test_index is not None and len(data.test_index) > 0
    test = set(data.test_index.tolist())
    spans = [(s, s + window, i in test) for i, s in enumerate(starts)]
    for a_lo, a_hi, a_test in spans:
        for b_lo, b_hi, b_test in spans:
            if a_test and not b_test:
                assert a_hi <= b_lo or b_hi <= a_lo, "a training window overlaps a held-out one"


@pytest.mark.parametrize(
    ("runs", "window", "stride", "message"),
    [
        ([("a", 5), ("b", 5)], 10, 5, "no run of one label"),
        ([("a", 50)], 1, 1, "use window >= 2"),
        ([("a", 50)], 10, 0, "use window >= 2, stride >= 1"),
    ],
)
def test_window_csv_errors(
    tmp_path: Path, runs: list[tuple[str, int]], window: int, stride: int, message: str
) -> None:
    path = _samples_csv(tmp_path / "s.csv", runs)
    with pytest.raises(EdgewiseError, match=message):
        load_window_csv(path, window, stride)


def _image_folder(root: Path, per_class: int = 3) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, level in (("dark", 30), ("light", 220)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(level, 10, (20, 24, 3)), 0, 255).astype(np.uint8)
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels).save(root / label / f"{i}{suffix}")
    return root


@pytest.mark.parametrize(("grayscale", "channels"), [(False, 3), (True, 1)])
def test_image_folder(tmp_path: Path, grayscale: bool, channels: int) -> None:
    data = load_image_folder(_image_folder(tmp_path / "imgs"), size=16, grayscale=grayscale)
    assert data.X.shape == (6, 16, 16, channels) and data.kind == "image"
    assert sorted(set(data.y)) == ["dark", "light"]
    assert data.X[data.y == "dark"].mean() < 60 < 190 < data.X[data.y == "light"].mean()
    assert data.value_scale == pytest.approx(1 / 255)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(EdgewiseError, match="no such directory"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(EdgewiseError, match="one subfolder per class"):
        load_image_folder(tmp_path / "one")
    root = _image_folder(tmp_path / "bad")
    (root / "dark" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(EdgewiseError, match=r"broken\.png: cannot be read"):
        load_image_folder(root)


def test_tabular_takes_numbers_and_categories_not_text(mixed_csv: Path, tmp_path: Path) -> None:
    assert from_tabular(load_builtin("iris")).X.shape == (150, 4)
    mixed = load_csv(mixed_csv, "status")
    tensors = from_tabular(mixed)
    assert tensors.X.dtype == object and tensors.X.shape == mixed.X.shape
    assert tensors.categorical == tuple(map(str, mixed.categorical))
    sms = tmp_path / "sms.csv"
    sms.write_text(
        "message,label\n" + "".join(f"free words number {i},{i % 2}\n" for i in range(20))
    )
    with pytest.raises(EdgewiseError, match="free text 'message'"):
        from_tabular(load_text_csv(sms, "label", "message"))
    with pytest.raises(EdgewiseError, match="classification"):
        from_tabular(load_builtin("diabetes"))
