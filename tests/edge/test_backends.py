"""The TFLite backend: registry order, dynamic batch, fallbacks when runtimes are missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgewise.edge.runtime.backends import REGISTRY, BackendOptions, LiteRtBackend, load_backend
from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.model import ServedModel
from tests.conftest import ROOT, needs_host

# Runs code with some top-level modules made unimportable, as on a device without them.
BLOCKED = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ImportError(f"No module named {name!r}", name=name)
        return None
BLOCK = set(sys.argv[1].split(","))
sys.meta_path.insert(0, Block())
"""


def test_registry_order_is_explicit() -> None:
    assert [name for name, _ in REGISTRY["tflite"]] == [
        "ai-edge-litert",
        "tflite-runtime",
        "tensorflow.lite",
    ]
    assert [name for name, _ in REGISTRY["onnx"]] == ["onnxruntime"]


@pytest.mark.parametrize("num_threads", [None, 1, 2])
def test_batch_size_changes_between_calls(digits_bundle: Path, num_threads: int | None) -> None:
    bundle = load_bundle(digits_bundle)
    backend = load_backend("tflite", bundle.model_path, BackendOptions(num_threads))
    served = ServedModel(bundle, backend)
    X = np.random.default_rng(0).integers(0, 17, (9, 8, 8, 1)).astype(np.float32)
    whole = [p["label"] for p in served.predict_tensor(X)]
    singles = [served.predict_tensor(X[i : i + 1])[0]["label"] for i in range(len(X))]
    again = [p["label"] for p in served.predict_tensor(X[:4])]
    assert whole == singles and again == whole[:4]


PROBE = """
from edgewise.edge.runtime.bundle import load_bundle
from edgewise.edge.runtime.model import ServedModel
import numpy as np
m = ServedModel.load(load_bundle(sys.argv[2]))
x = np.zeros((2, 8, 8, 1), np.float32)
print(m.backend.name, m.predict_tensor(x)[0]["label"])
"""


def _probe(block: str, bundle: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED + PROBE, block, str(bundle)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


@needs_host
def test_falls_back_to_tensorflow_lite_when_litert_is_missing(digits_bundle: Path) -> None:
    expected = ServedModel.load(load_bundle(digits_bundle)).predict_tensor(
        np.zeros((2, 8, 8, 1), np.float32)
    )[0]["label"]
    out = _probe("ai_edge_litert,tflite_runtime", digits_bundle)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["tensorflow.lite", str(expected)]


@pytest.mark.parametrize(
    ("bundle_name", "block", "expected"),
    [
        (
            "digits",
            "ai_edge_litert,tflite_runtime,tensorflow",
            ["no runtime for tflite models", "ai-edge-litert", "tensorflow.lite"],
        ),
        # A 32-bit Pi (armv7l) has no ONNX Runtime: the line says what to do instead.
        ("iris-rf", "onnxruntime", ["no runtime for onnx models", "pip install onnxruntime"]),
    ],
)
def test_missing_runtime_is_one_clear_line(
    bundle_name: str,
    block: str,
    expected: list[str],
    request: pytest.FixtureRequest,
) -> None:
    fixture = {"digits": "digits_bundle", "iris-rf": "iris_bundle"}[bundle_name]
    bundle = request.getfixturevalue(fixture)
    cli = BLOCKED + "from edgewise.cli import main; sys.exit(main(sys.argv[2:]))"
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            cli,
            block,
            "agent",
            "--bundle",
            str(bundle),
            "--broker",
            "mqtt://127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("edgewise agent: error: ")
    for fragment in expected:
        assert fragment in lines[0]


def test_missing_execution_providers_fall_back_to_cpu(
    iris_bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Jetson provider list on a CPU-only onnxruntime: one warning line, CPU answers."""
    wanted = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    bundle = load_bundle(iris_bundle)
    with caplog.at_level("WARNING", logger="edgewise.edge.runtime.backends"):
        backend = load_backend("onnx", bundle.model_path, BackendOptions(providers=wanted))
    model = ServedModel(bundle, backend)
    assert model.predict([[5.1, 3.5, 1.4, 0.2]])[0]["label"] == "setosa"
    [line] = [r.getMessage() for r in caplog.records if "lacks" in r.getMessage()]
    assert "TensorrtExecutionProvider, CUDAExecutionProvider" in line
    assert line.endswith("running on CPUExecutionProvider")


@needs_host
def test_litert_falls_back_when_xnnpack_refuses_an_int8_graph(tmp_path: Path) -> None:
    """A full-int8 MLP on breast_cancer (features from 0.05 to 4,000 share one input scale)
    is refused by XNNPACK here; the backend then runs it on the builtin kernels."""
    from ai_edge_litert.interpreter import Interpreter

    from edgewise.converters.keras_convert import to_tflite
    from edgewise.trainer.datasets import load_builtin
    from edgewise.trainer.deep import train_deep
    from edgewise.trainer.tensors import from_tabular

    host = train_deep(from_tabular(load_builtin("breast_cancer")), "mlp", "bc", epochs=3)
    path = tmp_path / "bc-int8.tflite"
    path.write_bytes(to_tflite(host.model, host.input_shape, "int8", host.X_calibration[:100]))
    try:
        Interpreter(model_path=str(path)).allocate_tensors()
        pytest.skip("XNNPACK accepts this graph in this ai-edge-litert version")
    except RuntimeError as exc:
        assert "XNNPACK" in str(exc)
    backend = LiteRtBackend(path, BackendOptions())
    [name] = backend.input_names
    x = np.zeros((2, 30), dtype=np.int8)
    [out] = backend.run({name: x}).values()
    assert out.shape == (2, 2) and out.dtype == np.int8


@pytest.mark.slow
def test_int8_probabilities_sum_to_one(vibration_int8_bundle: Path) -> None:
    """Dequantized int8 outputs step by 1/256; answers are renormalized distributions, and
    the label is still the most probable class."""
    from edgewise.edge.runtime.loader import load_models

    # The generator is host code: a device install does not hold it (run on the host).
    vibration = pytest.importorskip("edgewise.trainer.vibration")
    model = next(iter(load_models([str(vibration_int8_bundle)]).values()))
    windows, _ = vibration.generate(per_class=10, seed=7)
    predictions = model.predict_tensor(windows)
    sums = [sum(p["probabilities"].values()) for p in predictions]
    assert np.allclose(sums, 1.0, atol=1e-5), sums
    for p in predictions:
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
