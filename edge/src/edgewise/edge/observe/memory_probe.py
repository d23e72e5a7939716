"""Peak memory of serving one bundle, measured in a fresh process (``edgewise compare``).

Run as ``python -m edgewise.edge.observe.memory_probe BUNDLE N``: imports the runtimes,
notes the peak RSS, loads the bundle and answers N single-instance requests made from its
own input spec, then prints the growth of the peak RSS in KiB as JSON. Edge code only.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys

import numpy as np

from edgewise.edge.core.health import rss_bytes


def _peak_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _now_kib() -> int:
    return rss_bytes() // 1024


def main(argv: list[str]) -> int:
    import importlib

    from edgewise.edge.runtime.bundle import load_bundle
    from edgewise.edge.runtime.model import ServedModel

    path, n = argv[0], int(argv[1])
    bundle = load_bundle(path)
    # The runtimes' own import is not the model's cost: import them before the baseline.
    for module in ("onnxruntime", "ai_edge_litert.interpreter"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    peak0, now0 = _peak_kib(), _now_kib()
    model = ServedModel.load(bundle)
    shape = model.instance_shape
    rng = np.random.default_rng(0)
    for _ in range(n):
        if shape is not None and len(shape) > 1:
            model.predict_tensor(rng.normal(size=(1, *shape)).astype(np.float32))
        elif all(f.dtype == "float32" for f in model.features):
            model.predict([rng.normal(size=len(model.features)).tolist()])
        else:
            model.predict([["" if f.dtype == "string" else 0.0 for f in model.features]])
    # The high-water mark misses growth below an earlier transient peak (imports); the
    # resident size after serving catches it. The larger of the two is the model's cost.
    growth = max(_peak_kib() - peak0, _now_kib() - now0, 0)
    print(json.dumps({"peak_rss_growth_kib": growth}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
