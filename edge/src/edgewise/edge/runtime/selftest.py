"""The bundle's self-test, run on the device before the bundle is served.

The converter stores a few dozen held-out inputs with the answers the bundle gave on the
host (served by this same code); the device runs them through its own runtime. A runtime
that computes differently (another CPU, another build, a corrupted install) shows up here
instead of in the answers. JSON only: nothing in it can run code.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from edgewise.edge.errors import BundleError, RequestError
from edgewise.edge.runtime.manifest import SelfTest
from edgewise.edge.runtime.model import SelfTestReport, ServedModel

DEFAULT_COUNT = 24
MAX_FILE_BYTES = 8 << 20


class SelfTestFailed(BundleError):
    """The device's runtime does not answer the self-test like the host did."""


def document(instances: list[Any], expected: list[dict[str, Any]]) -> bytes:
    """The self-test file's bytes."""
    return (json.dumps({"instances": instances, "expected": expected}) + "\n").encode()


def _close(a: Any, b: Any, tol: float) -> bool:
    return (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and (abs(float(a) - float(b)) <= tol * max(1.0, abs(float(a))))
    )


def _margin(expected: dict[str, Any]) -> float:
    """How far the expected answer is from a tie (a near-tie may flip across runtimes)."""
    probs = expected.get("probabilities")
    if isinstance(probs, dict) and len(probs) > 1:
        top = sorted((float(v) for v in probs.values()), reverse=True)
        return top[0] - top[1]
    distances = expected.get("distances")
    if isinstance(distances, list) and len(distances) > 1:
        low = sorted(float(v) for v in distances)
        return low[1] - low[0]
    return math.inf


def compare(expected: dict[str, Any], got: dict[str, Any], tol: float) -> float | None:
    """The worst difference between two answers, or None when they disagree."""
    worst = 0.0
    for key in ("label", "cluster", "is_anomaly"):
        if key in expected and expected[key] != got.get(key):
            near_tie = _margin(expected) <= 2 * tol
            borderline = key == "is_anomaly"  # a score at the threshold may go either way
            if not (near_tie or borderline):
                return None
    for key in ("value", "score"):
        if key in expected:
            if not _close(expected[key], got.get(key), tol):
                return None
            worst = max(worst, abs(float(expected[key]) - float(got[key])))
    for key in ("probabilities", "distances"):
        if key not in expected:
            continue
        want, have = expected[key], got.get(key)
        pairs: list[tuple[Any, Any]] = (
            [(want[k], have.get(k)) for k in want]
            if isinstance(want, dict) and isinstance(have, dict)
            else list(zip(want, have or []))
        )
        if len(pairs) != len(want) or not all(_close(a, b, tol) for a, b in pairs):
            return None
        worst = max([worst, *(abs(float(a) - float(b)) for a, b in pairs)])
    return worst


def run_selftest(model: ServedModel) -> SelfTestReport | None:
    """Run the bundle's self-test (None when it has none); raise SelfTestFailed on a miss."""
    spec: SelfTest | None = model.bundle.manifest.selftest
    if spec is None:
        return None
    path = model.bundle.path / spec.file
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError("too large")
        doc = json.loads(path.read_bytes())
        instances, expected = doc["instances"], doc["expected"]
        if not (isinstance(instances, list) and isinstance(expected, list)):
            raise ValueError("not lists")
        if len(instances) != len(expected) or len(instances) != spec.count:
            raise ValueError("counts differ")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SelfTestFailed(
            f"bundle {model.name}: self-test file {spec.file} is unusable ({exc})"
        ) from None
    latencies: list[float] = []
    misses: list[int] = []
    worst = 0.0
    for i, (instance, want) in enumerate(zip(instances, expected)):
        started = time.perf_counter()
        try:
            [got] = model.predict([instance])
        except RequestError as exc:
            raise SelfTestFailed(
                f"bundle {model.name}: self-test instance {i} refused: {exc.message}"
            ) from None
        latencies.append((time.perf_counter() - started) * 1000.0)
        diff = compare(want, got, float(spec.tolerance))
        if diff is None:
            misses.append(i)
        else:
            worst = max(worst, diff)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]
    report = SelfTestReport(spec.count, not misses, len(misses), worst, p99)
    if misses:
        raise SelfTestFailed(
            f"bundle {model.name}: self-test failed on this device: {len(misses)} of "
            f"{spec.count} answers differ from the host's beyond {spec.tolerance:g} "
            f"(first: instance {misses[0]}); the runtime computes differently"
        )
    if spec.p99_budget_ms is not None and p99 > spec.p99_budget_ms:
        raise SelfTestFailed(
            f"bundle {model.name}: self-test p99 latency {p99:.3f} ms exceeds the budget of "
            f"{spec.p99_budget_ms:g} ms on this device"
        )
    return report
