"""The ``edgewise`` command as a user runs it: help, errors as one line, train -> convert
-> agent -> send/watch over a real broker, mosquitto_pub, and the demo."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.cli import COMMANDS
from edgewise.deploy.broker import LocalBroker
from tests.conftest import ROOT

# Commands run where relative paths (`--out x`, `nope.csv`) land in a scratch directory,
# never in the repository.
WORKDIR = Path(tempfile.mkdtemp(prefix="edgewise-cli-"))


def edgewise(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgewise", *args],
        capture_output=True,
        text=True,
        cwd=WORKDIR,
        timeout=timeout,
    )


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command: str | None) -> None:
    result = edgewise(*([command] if command else []), "--help")
    assert result.returncode == 0 and "usage: edgewise" in result.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mixed_csv: Path) -> Path:
    out = tmp_path_factory.mktemp("cli") / "rooms"
    result = edgewise(
        "train",
        "--csv",
        str(mixed_csv),
        "--target",
        "status",
        "--model",
        "random-forest",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "parity on" in result.stdout and "accuracy" in result.stdout
    return out


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 or lines[0].startswith("usage:"), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


ERROR_CASES = [
    ("train --csv nope.csv --target y --model knn --out x", ["nope.csv: no such file"]),
    ("train --csv {csv} --target colour --model knn --out x", ["no column 'colour'", "status"]),
    (
        "train --csv {csv} --target status --model deep-magic --out x",
        ["unknown model 'deep-magic'", "random-forest", "cnn1d", "autoencoder"],
    ),
    (
        "train --csv {csv} --target status --model naive-bayes --task regression --out x",
        ["target 'status' is not numeric"],
    ),
    ("train --dataset mnist --model knn --out x", ["unknown data set 'mnist'", "vibration"]),
    ("train --csv {csv} --model knn --out x", ["needs --target"]),
    ("train --model knn --out x", ["one of the arguments --dataset --csv --images is required"]),
    ("train --images . --model random-forest --out x", ["images go to cnn2d"]),
    ("train --dataset iris --model cnn1d --out x", ["cnn1d takes window data"]),
    (
        "train --dataset iris --model knn --quantize int8 --out x",
        ["--quantize 'int8': scikit-learn models convert to float onnx"],
    ),
    (
        "train --dataset vibration --model cnn1d --quantize int4 --out x",
        ["--quantize 'int4' is not offered for tflite; use one of none, float16, dynamic, int8"],
    ),
    ("train --dataset digits --model cnn2d --classes 5,x --out x", ["--classes ['x']"]),
    ("train --images nowhere --model cnn2d --out x", ["image folder nowhere: no such directory"]),
    (
        "train --dataset digits --model cnn2d --base nope.keras --out x",
        ["nope.keras: no such Keras model file"],
    ),
    ("convert m.keras --format onnx --quantize float16 --out x", ["not offered for onnx"]),
    ("convert m.keras --calibration-samples 0 --out x", ["use 1 or more"]),
    ("convert nowhere --out x", ["not a host model"]),
    ("agent --bundle nowhere", ["bundle nowhere: no such directory"]),
    ("agent", ["no bundle given"]),
    ("agent --config missing.toml", ["config file missing.toml: no such file"]),
    ("agent --bundle b --broker http://x", ["scheme must be one of mqtt://, mqtts://"]),
    ("send --model m --csv nope.csv --device d", ["nope.csv: no such file"]),
    ("send --model m --npz nope.npz --device d", ["array file nope.npz: no such file"]),
    ("send --model m --npz nope.npz --window 4 --device d", ["--window goes with --csv"]),
]


@pytest.mark.parametrize(("args", "fragments"), ERROR_CASES)
def test_errors_are_one_readable_line(args: str, fragments: list[str], mixed_csv: Path) -> None:
    one_line_error(edgewise(*args.replace("{csv}", str(mixed_csv)).split()), *fragments)


def test_bad_csv_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,b\n\xff\xfe,1\n")
    one_line_error(
        edgewise("train", "--csv", str(bad), "--target", "b", "--model", "knn", "--out", "x")
    )


def test_version() -> None:
    result = edgewise("--version")
    assert result.returncode == 0 and result.stdout.startswith("edgewise 0.")


def test_train_refuses_to_replace_a_bundle_without_force(trained: Path) -> None:
    args = ["train", "--dataset", "iris", "--model", "knn", "--out", str(trained)]
    one_line_error(edgewise(*args), f"{trained} exists; pass --force to replace it")


def test_convert_rewrites_bundle_with_new_version(trained: Path, tmp_path: Path) -> None:
    result = edgewise("convert", f"{trained}.host", "--out", str(tmp_path / "v2"), "--version", "2")
    assert result.returncode == 0, result.stderr
    assert "rooms v2" in result.stdout


@pytest.fixture
def agent_process(broker: LocalBroker, trained: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgewise",
            "agent",
            "--bundle",
            str(trained),
            "--broker",
            broker.url,
            "--device",
            "cli",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    yield proc
    if proc.poll() is None:
        proc.terminate()
    proc.communicate(timeout=20)


def test_send_and_watch_through_agent(
    broker: LocalBroker, agent_process: subprocess.Popen[bytes], mixed_csv: Path, tmp_path: Path
) -> None:
    rows = mixed_csv.read_text().splitlines()[:41]
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgewise",
            "watch",
            "--broker",
            broker.url,
            "--device",
            "cli",
            "--count",
            "5",
            "--timeout",
            "60",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)  # the watcher subscribes before the rows go out
    result = edgewise(
        "send",
        "--broker",
        broker.url,
        "--device",
        "cli",
        "--model",
        "rooms",
        "--csv",
        str(csv_path),
        "--target",
        "status",
        "--batch",
        "4",
        "--timeout",
        "30",
    )
    assert result.returncode == 0, result.stderr
    assert "sent 40 rows, 40 answered" in result.stdout
    accuracy = float(result.stdout.split("labelled rows sent: ")[1].split()[0])
    assert accuracy > 0.8
    out, _ = watcher.communicate(timeout=60)
    assert watcher.returncode == 0
    # A row the agent refuses (beyond float32's range) makes send exit 1, with the count.
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([rows[0], rows[1], rows[1].replace(rows[1].split(",")[0], "1e39", 1)]))
    failed = edgewise(
        "send",
        "--broker",
        broker.url,
        "--device",
        "cli",
        "--model",
        "rooms",
        "--csv",
        str(bad),
        "--target",
        "status",
        "--no-progress",
        "--timeout",
        "30",
    )
    assert failed.returncode == 1 and "errors: bad_value x1" in failed.stdout, failed.stdout
    assert len(out.strip().splitlines()) == 5 and "edgewise/cli/rooms/out" in out


def test_send_without_agent_says_so(broker: LocalBroker, mixed_csv: Path) -> None:
    one_line_error(
        edgewise(
            "send",
            "--broker",
            broker.url,
            "--device",
            "ghost",
            "--model",
            "rooms",
            "--csv",
            str(mixed_csv),
        ),
        "no agent serves model 'rooms' on device 'ghost'",
    )


def test_mosquitto_pub_request_is_answered(
    broker: LocalBroker, agent_process: subprocess.Popen[bytes]
) -> None:
    pub, sub = shutil.which("mosquitto_pub"), shutil.which("mosquitto_sub")
    if not (pub and sub):
        pytest.skip("mosquitto-clients are not installed")
    port = str(broker.port)
    listener = subprocess.Popen(
        [sub, "-p", port, "-t", "edgewise/cli/rooms/out", "-C", "1", "-W", "30"],
        stdout=subprocess.PIPE,
        text=True,
    )
    body = '{"id":"shell","instances":[{"temp c":30,"zone":"attic","humidity":50,"power":100}]}'
    deadline = time.monotonic() + 30
    while listener.poll() is None and time.monotonic() < deadline:
        subprocess.run(
            [pub, "-p", port, "-q", "1", "-t", "edgewise/cli/rooms/in", "-m", body], check=True
        )
        try:
            out, _ = listener.communicate(timeout=1)
            break
        except subprocess.TimeoutExpired:
            continue  # the agent or the listener was not subscribed yet
    assert '"id":"shell"' in out and '"label":"alarm"' in out


def test_agent_exits_zero_on_sigterm(
    agent_process: subprocess.Popen[bytes], broker: LocalBroker
) -> None:
    from tests.mqtt_peer import Peer

    peer = Peer(broker.port)
    peer.subscribe("edgewise/cli/status")
    # A retained "offline" from an earlier agent may come first; wait for this one's "online".
    while peer.expect("/status", timeout=30).payload != b"online":
        pass
    agent_process.terminate()
    assert agent_process.wait(20) == 0
    assert peer.expect("/status").payload == b"offline"
    peer.close()


@pytest.mark.parametrize("run", ["first", "again"])
def test_demo_against_given_broker(broker: LocalBroker, tmp_path: Path, run: str) -> None:
    # Twice on one broker: the first run clears its retained topics, the second starts clean.
    result = edgewise(
        "demo",
        "--broker",
        broker.url,
        "--dataset",
        "wine",
        "--model",
        "logistic-regression",
        "--workdir",
        str(tmp_path),
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"using the broker at {broker.url}" in result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("accuracy on device"))
    device_acc, host_acc = float(line.split()[3]), float(line.split()[-1])
    assert device_acc == host_acc > 0.9
    # It leaves no retained `demo` device behind on the user's broker.
    from tests.mqtt_peer import Peer

    peer = Peer(broker.port)
    try:
        peer.subscribe("edgewise/demo/#")
        with pytest.raises(AssertionError):
            peer.expect("", timeout=1.5)
    finally:
        peer.close()


def test_deep_train_then_convert(tmp_path: Path) -> None:
    """cnn1d on the vibration set to an int8 TFLite bundle, then the host model to ONNX."""
    out = tmp_path / "vib"
    result = edgewise(
        "train",
        "--dataset",
        "vibration",
        "--model",
        "cnn1d",
        "--epochs",
        "3",
        "--quantize",
        "int8",
        "--calibration-samples",
        "50",
        "--max-accuracy-drop",
        "100",
        "--out",
        str(out),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "trained cnn1d" in result.stdout and "TFLITE int8" in result.stdout
    # Native banners (converter, interpreter) stay off the terminal unless --log-level debug.
    noise = ("XNNPACK", "fully_quantize", "inference_type")
    assert not [n for n in noise if n in result.stdout + result.stderr], result.stderr
    host = Path(f"{out}.host")
    assert {p.name for p in host.iterdir()} >= {"model.keras", "history.json", "meta.json"}
    result = edgewise(
        "convert", str(host / "model.keras"), "--format", "onnx", "--out", str(tmp_path / "o")
    )
    assert result.returncode == 0, result.stderr
    assert "ONNX" in result.stdout and "max_abs_diff" in result.stdout


@pytest.mark.slow  # trains a small network
def test_a_keras_command_leaves_stderr_clean(tmp_path: Path) -> None:
    """TensorFlow's import banners (absl's InitializeLog notice, oneDNN) reach fd 2 from
    C++ whatever TF_CPP_MIN_LOG_LEVEL says; the CLI drops them unless --verbose."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    args = ["train", "--dataset", "digits", "--model", "cnn2d", "--epochs", "1"]
    quiet = subprocess.run(
        [sys.executable, "-m", "edgewise", *args, "--out", str(tmp_path / "q")],
        capture_output=True, text=True, cwd=WORKDIR, timeout=300, env=env,
    )  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert "parity on 360 held-out rows" in quiet.stdout
    # An error still reaches stderr through the filter, as one line (the bundle exists).
    bad = subprocess.run(
        [sys.executable, "-m", "edgewise", *args, "--out", str(tmp_path / "q")],
        capture_output=True, text=True, cwd=WORKDIR, timeout=300, env=env,
    )  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "--force" in bad.stderr


def test_native_banners_are_recognised_and_nothing_else() -> None:
    from edgewise.edge.runtime.native_stderr import NATIVE_BANNER

    banners = [
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        b"I0000 00:00:1796446995.183488   28139 port.cc:153] oneDNN custom operations are on.",
        b"W1205 04:55:01.123456 28139 cpu_feature_guard.cc:210] This TensorFlow binary ...",
    ]
    others = [b"edgewise train: error: CSV file x.csv: no such file", b"Traceback (most recent"]
    assert all(NATIVE_BANNER.match(b) for b in banners)
    assert not any(NATIVE_BANNER.match(b) for b in others)


@pytest.fixture(scope="module")
def sms_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgewise.trainer.examples import write_examples

    root = tmp_path_factory.mktemp("examples")
    write_examples(root)
    return root / "sms.csv"


def _warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if " WARNING " in line]


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ([], ["'id' numbers the rows", "'message' looks like free text"]),
        (["--drop", "id"], ["'message' looks like free text"]),
        (["--text", "message"], []),
        (["--drop", "id", "--drop", "message"], []),
    ],
)
def test_training_on_the_wrong_columns_warns(
    sms_csv: Path, tmp_path: Path, flags: list[str], named: list[str]
) -> None:
    """Forgetting --text on sms.csv trained on the row id and 400 one-hot messages,
    accuracy 0.5, in silence: each such column gets one line naming it and the fix."""
    args = ["--csv", str(sms_csv), "--target", "label", "--out", str(tmp_path / "m")]
    model = ["--model", "logistic-regression"]
    if flags == ["--drop", "id", "--drop", "message"]:
        got = edgewise("train", *args, *model, *flags)
        one_line_error(got, "no feature columns")  # nothing left to learn from: says so
        return
    got = edgewise("train", *args, *model, *flags)
    assert got.returncode == 0, got.stderr
    lines = _warnings(got)
    assert len(lines) == len(named)
    for line, fragment in zip(lines, named, strict=True):
        assert fragment in line
    for line in lines:  # each names its fix
        assert "--drop id" in line if "'id'" in line else "--text message" in line


def test_a_failed_gate_leaves_no_host_model_behind(mixed_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "rf"
    args = ["train", "--csv", str(mixed_csv), "--target", "status", "--model", "random-forest"]
    failed = edgewise(*args, "--out", str(out), "--tolerance", "1e-12")
    one_line_error(failed, "differ")
    assert not out.exists() and not Path(f"{out}.host").exists()
    again = edgewise(*args, "--out", str(out))  # the rerun needs no --force
    assert again.returncode == 0, again.stderr


def test_a_password_in_the_broker_url_is_warned_about_and_never_shown() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    got = edgewise("watch", "--broker", f"mqtt://op:s3cr3t-pw@127.0.0.1:{port}", "--timeout", "2")
    assert got.returncode != 0
    assert "holds a password" in got.stderr and "--password-file" in got.stderr
    assert "s3cr3t-pw" not in got.stderr + got.stdout
    clean = edgewise("watch", "--broker", f"mqtt://op@127.0.0.1:{port}", "--timeout", "2")
    assert "holds a password" not in clean.stderr
