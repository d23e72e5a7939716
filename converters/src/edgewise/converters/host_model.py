"""The host-side copy of a trained model: what ``edgewise convert`` and retraining read.

A host model directory holds ``model.skops`` (scikit-learn pipeline in skops' safe format,
never a pickle), ``meta.json`` (feature spec, task, labels, metrics, data provenance) and
``heldout.json`` (the held-out rows the parity check runs on). It stays on the host; only
the bundle crosses to the device.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgewise.converters.host_meta import HostFeature, HostMeta
from edgewise.edge.errors import EdgewiseError

MODEL_FILE = "model.skops"
META_FILE = "meta.json"
HELDOUT_FILE = "heldout.json"
# Types a host model may contain; anything else in a .skops file is refused on load.
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


@dataclass
class HostModel:
    """A fitted pipeline with what is needed to convert and check it."""

    pipeline: Any
    meta: HostMeta
    X_heldout: pd.DataFrame
    y_heldout: np.ndarray

    @property
    def task(self) -> str:
        return self.meta.task

    @property
    def layout(self) -> str:
        return str(self.meta.layout)

    @property
    def features(self) -> tuple[HostFeature, ...]:
        return self.meta.features

    def model_input(self, X: pd.DataFrame) -> Any:
        """What the scikit-learn pipeline takes: a matrix (tensor layout) or the frame."""
        return X.to_numpy(dtype=np.float32) if self.layout == "tensor" else X


def json_value(v: Any) -> Any:
    """A value as JSON holds it: NaN as null, numpy scalars as Python ones."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        return json_value(v.item())
    return v


def save_host_model(path: str | Path, model: HostModel) -> Path:
    """Write the host model directory; returns its path."""
    import skops.io as sio

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    sio.dump(model.pipeline, root / MODEL_FILE)
    (root / META_FILE).write_text(model.meta.to_json())
    heldout = {
        "columns": list(model.X_heldout.columns),
        "rows": [[json_value(v) for v in row] for row in model.X_heldout.itertuples(index=False)],
        "target": [json_value(v) for v in model.y_heldout.tolist()],
    }
    (root / HELDOUT_FILE).write_text(json.dumps(heldout) + "\n")
    return root


def load_host_model(path: str | Path) -> HostModel:
    """Read a host model directory (or the model.skops inside it)."""
    import skops.io as sio

    root = Path(path)
    if root.is_file() and root.name == MODEL_FILE:
        root = root.parent
    if not (root / MODEL_FILE).is_file():
        raise EdgewiseError(
            f"{path}: not a host model (no {MODEL_FILE}; `edgewise train` makes one)"
        )
    try:
        meta = HostMeta.from_json((root / META_FILE).read_text(), root)
        heldout = json.loads((root / HELDOUT_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgewiseError(f"{root}: host model files are unreadable ({exc})") from None
    untrusted = sio.get_untrusted_types(file=root / MODEL_FILE)
    foreign = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if foreign:
        raise EdgewiseError(
            f"{root / MODEL_FILE} holds types edgewise does not load: {foreign[:5]}"
        )
    pipeline = sio.load(root / MODEL_FILE, trusted=untrusted)
    X = pd.DataFrame(heldout["rows"], columns=heldout["columns"])
    for f in meta.features:
        col = X[f.name]
        X[f.name] = col.astype(str) if f.dtype == "string" else col.astype(np.float32)
    y = np.asarray(heldout["target"])
    return HostModel(pipeline, meta, X, y)
