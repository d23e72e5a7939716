"""Bytes on the wire: JSON against binary tensor requests, full against compact answers.

    .venv/bin/python bench/payloads.py

Requests: one window (256 x 3 float32, a vibration window), one 28 x 28 grey image and
one 96 x 96 x 3 colour image (uint8), each as the JSON request a client writes
(``json.dumps``, values as the sensor gives them: floats with 4 decimals, pixels as
integers) and as the binary request (``encode_tensor_request``, docs/mqtt.md). Answers:
a random forest on iris (trained here, run through the agent's own handler) answering
1 and 8 rows, the full answer (label and probabilities per row, model, version, timing)
against ``"answer": "compact"`` (the label per row). Seeded: the figures are the same on
every run. Printed: bytes of each and the compact/binary size as a share of the JSON one.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def requests() -> list[tuple[str, int, int]]:
    """(what, JSON bytes, binary bytes) of one request each."""
    from edgewise.edge.link.payload import encode_tensor_request

    rng = np.random.default_rng(0)
    window = np.round(rng.normal(0, 1, (1, 256, 3)), 4).astype("float32")
    grey = rng.integers(0, 256, (1, 28, 28, 1), dtype=np.uint8)
    colour = rng.integers(0, 256, (1, 96, 96, 3), dtype=np.uint8)
    out = []
    for what, array, values in [
        ("window 256x3 float32", window, np.round(window.astype(float), 4).tolist()),
        ("image 28x28x1 uint8", grey, grey.tolist()),
        ("image 96x96x3 uint8", colour, colour.tolist()),
    ]:
        text = json.dumps({"id": "r1", "instances": values}).encode()
        out.append((what, len(text), len(encode_tensor_request(array, "r1"))))
    return out


def answers() -> list[tuple[str, int, int]]:
    """(what, full bytes, compact bytes) of the agent's answer to one request."""
    from edgewise.converters.sklearn_onnx import export_sklearn
    from edgewise.edge.app import build_agent
    from edgewise.edge.core.config import AgentConfig
    from edgewise.edge.link.message import Message
    from edgewise.edge.testing import MemoryTransport
    from edgewise.trainer.datasets import load_builtin
    from edgewise.trainer.train import train

    work = Path(tempfile.mkdtemp(prefix="edgewise-bench-payloads-"))
    bundle = export_sklearn(train(load_builtin("iris"), "random-forest", "iris-rf"), work / "b")
    config = AgentConfig(bundles=(str(bundle.path),), device="d", state_dir=str(work / "s"))
    agent = build_agent(config, transport=MemoryTransport.factory())
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.8, 5.1, 1.5]]
    out = []
    try:
        for n in (1, 8):
            sizes = []
            for form in ("full", "compact"):
                body = {"id": 1, "instances": (rows * 2)[:n], "answer": form}
                msg = Message("edgewise/d/iris-rf/in", json.dumps(body).encode(), 1, 0.0)
                (answer,) = agent.handle(msg)
                sizes.append(len(answer.payload))
            out.append((f"iris answer, {n} row{'s' if n > 1 else ''}", sizes[0], sizes[1]))
    finally:
        agent.stop(timeout=2)
    return out


def main() -> None:
    print(f"{'request':<26} {'JSON B':>8} {'binary B':>9} {'binary/JSON':>12}")
    for what, text, binary in requests():
        print(f"{what:<26} {text:>8} {binary:>9} {binary / text:>11.1%}")
    print(f"\n{'answer':<26} {'full B':>8} {'compact B':>9} {'compact/full':>12}")
    for what, full, small in answers():
        print(f"{what:<26} {full:>8} {small:>9} {small / full:>11.1%}")


if __name__ == "__main__":
    main()
