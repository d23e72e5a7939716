"""What ``edgewise send`` publishes: rows of a CSV, windows cut from raw samples, or arrays.

Each source becomes a :class:`SendPlan` once the model's retained ``info`` is known (its
features, and the shape of one instance): how many instances, the request body for any
group of them, and the true label of each when the data has one.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.edge.errors import EdgewiseError

Info = dict[str, Any]


@dataclass(frozen=True)
class SendPlan:
    """Instances to send: ``payload(indices, request_id)`` is the body of one request."""

    count: int
    payload: Callable[[list[int], str], bytes]
    truth: list[str | None]
    unit: str = "row"


PlanBuilder = Callable[[Info], SendPlan]


def read_csv(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file, as strings."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = [r for r in reader if r]
    except FileNotFoundError:
        raise EdgewiseError(f"CSV file {p}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise EdgewiseError(f"CSV file {p} cannot be read: {exc}") from None
    if not header:
        raise EdgewiseError(f"CSV file {p} is empty")
    bad = [i + 2 for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise EdgewiseError(f"CSV file {p}: line {bad[0]} has a different number of fields")
    return header, rows


def cell(text: str, dtype: str | None) -> Any:
    """A CSV cell as the JSON value the model takes ('' is a missing value)."""
    if text == "":
        return None
    if dtype == "string":
        return text
    try:
        return float(text)
    except ValueError:
        if dtype is None:  # no model info: keep text that is not a number
            return text
        raise EdgewiseError(f"value {text!r} is not a number") from None


def _existing(path: str | Path, kind: str) -> Path:
    # Checked when the plan is made, before any connection: a typo is one line at once.
    p = Path(path)
    if not p.is_file():
        raise EdgewiseError(f"{kind} {p}: no such file")
    return p


def _shape(info: Info) -> list[int] | None:
    given = info.get("input") or {}
    shape = given.get("shape") if isinstance(given, dict) else None
    return [int(d) for d in shape] if isinstance(shape, list) else None


def _target(path: str | Path, header: list[str], target: str | None, used: set[str]) -> int | None:
    if target is not None and target not in header:
        raise EdgewiseError(f"CSV file {path} has no column {target!r}")
    if target is None:
        extra = [c for c in header if c not in used]
        target = extra[0] if len(extra) == 1 else None
    return header.index(target) if target is not None else None


def csv_rows(path: str | Path, target: str | None = None) -> PlanBuilder:
    """One instance per CSV row, by the model's feature names; the one other column (or
    ``target``) holds the true label."""
    _existing(path, "CSV file")

    def build(info: Info) -> SendPlan:
        shape = _shape(info)
        if shape is not None and len(shape) > 1:
            raise EdgewiseError(
                f"model {info.get('name')} takes instances of shape {shape} "
                f"({(info.get('input') or {}).get('kind')}): send --csv FILE --window "
                f"{shape[0]} for raw samples, or --npz FILE"
            )
        header, rows = read_csv(path)
        dtypes = {f["name"]: f["dtype"] for f in info["features"]}
        missing = [n for n in dtypes if n not in header]
        if missing:
            raise EdgewiseError(f"CSV file {path} lacks feature column(s) {missing[:5]}")
        t_idx = _target(path, header, target, set(dtypes))
        cols = [(header.index(n), n, d) for n, d in dtypes.items()]

        def payload(idx: list[int], rid: str) -> bytes:
            try:
                instances = [{n: cell(rows[i][c], d) for c, n, d in cols} for i in idx]
            except EdgewiseError as exc:
                raise EdgewiseError(f"row {idx[0] + 2}: {exc}") from None
            return json.dumps({"id": rid, "instances": instances}).encode()

        truth = [(r[t_idx] or None) if t_idx is not None else None for r in rows]
        return SendPlan(len(rows), payload, truth)

    return build


def csv_windows(path: str | Path, window: int, target: str | None = None) -> PlanBuilder:
    """Raw samples (one row per time step, one column per channel) cut into windows of
    ``window`` rows, none spanning two labels; sent as binary tensors."""
    if window < 2:
        raise EdgewiseError(f"--window {window}: use 2 or more rows per window")
    _existing(path, "CSV file")

    def build(info: Info) -> SendPlan:
        import numpy as np

        shape = _shape(info)
        if shape is None or len(shape) != 2:
            raise EdgewiseError(
                f"model {info.get('name')} does not take windows (instance shape {shape}); "
                "send its rows without --window"
            )
        if shape[0] != window:
            raise EdgewiseError(f"--window {window}: model {info.get('name')} takes {shape[0]}")
        header, rows = read_csv(path)
        channels = [f["name"] for f in info["features"]]
        missing = [c for c in channels if c not in header]
        if missing:
            raise EdgewiseError(f"CSV file {path} lacks channel column(s) {missing[:5]}")
        t_idx = _target(path, header, target, {*channels, "timestamp"})
        try:
            values = np.asarray(
                [[float(r[header.index(c)]) for c in channels] for r in rows], np.float32
            )
        except ValueError as exc:
            raise EdgewiseError(
                f"CSV file {path}: a channel value is not a number ({exc})"
            ) from None
        labels = [r[t_idx] for r in rows] if t_idx is not None else [""] * len(rows)
        starts: list[int] = []
        run_start = 0
        for i in range(1, len(rows) + 1):  # runs of one label, each cut into windows
            if i == len(rows) or labels[i] != labels[run_start]:
                starts += range(run_start, i - window + 1, window)
                run_start = i
        if not starts:
            raise EdgewiseError(f"CSV file {path}: fewer than {window} rows of any one label")
        X = np.stack([values[s : s + window] for s in starts])
        return _tensor_plan(X, [labels[s] or None for s in starts], "window")

    return build


def npz_arrays(path: str | Path) -> PlanBuilder:
    """Array ``x`` of an .npz file (batch axis first) and optional labels ``y`` (label
    names, or indices into the model's labels); sent as binary tensors."""
    _existing(path, "array file")

    def build(info: Info) -> SendPlan:
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as data:
                if "x" not in data:
                    raise EdgewiseError(f"{path}: no array 'x' (has {sorted(data.files)})")
                X = np.asarray(data["x"], dtype=np.float32)
                y = data["y"] if "y" in data.files else None
        except FileNotFoundError:
            raise EdgewiseError(f"{path}: no such file") from None
        except (OSError, ValueError) as exc:  # not an .npz, or object arrays (pickles)
            raise EdgewiseError(f"{path} is not an .npz edgewise reads: {exc}") from None
        shape = _shape(info)
        if shape is not None and list(X.shape[1:]) != shape:
            raise EdgewiseError(
                f"{path}: x has instances of shape {list(X.shape[1:])}, "
                f"model {info.get('name')} takes {shape}"
            )
        truth: list[str | None] = [None] * len(X)
        if y is not None:
            if len(y) != len(X):
                raise EdgewiseError(f"{path}: y has {len(y)} labels for {len(X)} instances")
            names = [str(v) for v in info.get("labels") or []]
            by_index = y.dtype.kind in "iu" and names and not all(n.isdigit() for n in names)
            truth = [names[int(v)] if by_index else str(v) for v in y.tolist()]
        return _tensor_plan(X, truth, "instance")

    return build


def _tensor_plan(X: Any, truth: list[str | None], unit: str) -> SendPlan:
    from edgewise.edge.link.payload import encode_tensor_request

    def payload(idx: list[int], rid: str) -> bytes:
        return encode_tensor_request(X[idx[0] : idx[-1] + 1], rid)

    return SendPlan(len(X), payload, truth, unit)
