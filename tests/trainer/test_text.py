"""Text classification end to end: a spam filter made in the test, trained with
``edgewise train --text``, converted to ONNX (string input), served over MQTT from raw text."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.converters.host_model import load_host_model
from edgewise.deploy.broker import LocalBroker
from edgewise.edge.app import build_agent
from edgewise.edge.core.config import AgentConfig
from edgewise.trainer import examples
from tests.edgewise.test_cli import edgewise
from tests.mqtt_peer import Peer


def messages(n: int, seed: int) -> pd.DataFrame:
    return pd.DataFrame(examples.messages(n, seed))


@pytest.fixture(scope="module")
def spam_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text")
    messages(300, seed=0).to_csv(root / "sms.csv", index=False)
    out = root / "spam"
    result = edgewise(
        "train", "--csv", str(root / "sms.csv"), "--target", "label", "--text", "message",
        "--model", "logistic-regression", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def test_manifest_and_accuracy(spam_bundle: Path) -> None:
    manifest = json.loads((spam_bundle / "manifest.json").read_text())
    assert manifest["input"]["kind"] == "text" and manifest["input"]["lowercase"] is True
    assert [f["name"] for f in manifest["input"]["features"]] == ["message"]
    assert manifest["metrics"]["accuracy"] >= 0.95
    assert manifest["parity"]["passed"]


def test_raw_text_over_mqtt_matches_the_host(spam_bundle: Path, broker: LocalBroker) -> None:
    host = load_host_model(str(spam_bundle) + ".host")
    fresh = messages(40, seed=7)  # messages never seen in training
    device = f"tx-{uuid.uuid4().hex[:6]}"
    agent = build_agent(AgentConfig(bundles=(str(spam_bundle),), broker=broker.url, device=device))
    agent.start()
    peer = Peer(broker.port)
    try:
        assert agent.connection.wait_connected(10)
        peer.subscribe(f"edgewise/{device}/+/out", f"edgewise/{device}/+/error")
        texts = fresh["message"].tolist()
        # Bare strings, one-value lists and objects are all raw text instances.
        instances = [texts[0], [texts[1]], {"message": texts[2]}, *texts[3:]]
        peer.request(f"edgewise/{device}/spam/in", {"id": "t", "instances": instances})
        preds = peer.expect_json("/out")["predictions"]
        peer.request(f"edgewise/{device}/spam/in", {"id": "n", "instances": [42]})
        error = peer.expect_json("/error")
    finally:
        peer.close()
        agent.stop(timeout=5)
    lowered = pd.DataFrame({"message": [t.lower() for t in texts]})
    assert [p["label"] for p in preds] == host.pipeline.predict(lowered).tolist()
    np.testing.assert_allclose(
        [[p["probabilities"][c] for c in host.pipeline.classes_] for p in preds],
        host.pipeline.predict_proba(lowered),
        atol=1e-4,
    )
    assert np.mean([p["label"] for p in preds] == fresh["label"].to_numpy()) >= 0.95
    assert error["id"] == "n" and error["code"] == "bad_type"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text", "body"], "--text 'body': no such column"),
        (["--text", "id"], "is a numeric column"),
        (["--text", "message", "--model", "random-forest"], "one text column and one of"),
    ],
)
def test_bad_text_options(tmp_path: Path, args: list[str], message: str) -> None:
    messages(20, seed=1).to_csv(tmp_path / "sms.csv", index=False)
    base = ["train", "--csv", str(tmp_path / "sms.csv"), "--target", "label", "--out", "x"]
    model = [] if "--model" in args else ["--model", "logistic-regression"]
    result = edgewise(*base, *model, *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and message in lines[0], result.stderr
