"""``edgewise demo``: the main job in one command, on real parts.

Train on a built-in data set, convert with the parity gate, start an agent process, stream
the held-out rows through MQTT and compare the on-device accuracy with the host's.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from edgewise.converters.host_model import HostModel, save_host_model
from edgewise.converters.sklearn_onnx import export_sklearn
from edgewise.deploy.broker import LocalBroker, reachable, start_local_broker
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.endpoint import Endpoint
from edgewise.edge.link.topics import DEFAULT_PREFIX, Topics
from edgewise.edge.remote.client import send_csv
from edgewise.trainer.datasets import load_builtin
from edgewise.trainer.train import train

TARGET_COLUMN = "target"


def write_heldout_csv(host: HostModel, path: Path) -> Path:
    """The held-out rows with their true label, as a device-side sender would read them."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*host.X_heldout.columns, TARGET_COLUMN])
        for row, label in zip(host.X_heldout.itertuples(index=False), host.y_heldout):
            writer.writerow([*(repr(float(v)) if isinstance(v, float) else v for v in row), label])
    return path


def run(dataset: str, model: str, broker_url: str, device: str, workdir: str | None) -> int:
    """Run the demo; returns the exit status."""
    with ExitStack() as stack:
        root = (
            Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        )
        root.mkdir(parents=True, exist_ok=True)
        name = f"{dataset}-{model}".replace("_", "-")
        print(f"[1/4] training {model} on the {dataset} data set")
        host = train(load_builtin(dataset), model, name)
        save_host_model(root / f"{name}.host", host)
        host_metric = host.meta.metrics.get("accuracy")
        bundle = export_sklearn(host, root / name)
        parity = bundle.manifest.parity
        print(
            f"[2/4] converted to ONNX: {bundle.manifest.model.size_bytes} bytes, parity "
            f"on {parity.rows} held-out rows passed (max diff {parity.max_abs_diff or 0:.2g})"
        )

        address = Endpoint.parse(broker_url)
        if reachable(address.host, address.port):
            url = str(address)
            print(f"[3/4] using the broker at {url}")
        else:
            local: LocalBroker = start_local_broker(root / "broker")
            stack.callback(local.stop)
            url = local.url
            protocols = "MQTT 5 and 3.1.1" if local.kind == "mosquitto" else "MQTT 3.1.1 only"
            print(f"[3/4] no broker at {address}; started {local.kind} ({protocols}) at {url}")

        # Runs after the agent stopped (callbacks run last first): a demo leaves no
        # retained `demo` device on the user's broker.
        stack.callback(_forget_device, url, device)
        log_path = root / "agent.log"
        with log_path.open("wb") as log:
            agent = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edgewise",
                    "agent",
                    "--bundle",
                    str(bundle.path),
                    "--broker",
                    url,
                    "--device",
                    device,
                    "--state-dir",
                    str(root / "state"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        stack.callback(_stop_agent, agent)
        csv_path = write_heldout_csv(host, root / "heldout.csv")
        print(
            f"[4/4] agent started (device {device!r}); "
            f"streaming {len(host.X_heldout)} held-out rows"
        )
        result = send_csv(
            url,
            Topics(DEFAULT_PREFIX, device),
            name,
            csv_path,
            target=TARGET_COLUMN,
            info_timeout=30.0,
        )
        if agent.poll() is not None:
            raise EdgewiseError(f"the agent exited early; see {log_path}")
        for i in sorted(result.predictions)[:3]:
            print(f"  row {i}: {result.predictions[i]['label']}")
        print(f"answered {result.answered}/{result.sent} in {result.seconds:.2f}s")
        if result.accuracy is not None and host_metric is not None:
            print(f"accuracy on device: {result.accuracy:.4f}   on host: {host_metric:.4f}")
        return 0 if result.answered == result.sent and result.accuracy == host_metric else 1


def _stop_agent(agent: subprocess.Popen[bytes]) -> None:
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()


def _forget_device(url: str, device: str) -> None:
    """Clear the retained topics the demo's agent left (status, info, deployment)."""
    from edgewise.edge.remote.fleet_client import FleetLink, clear
    from edgewise.edge.remote.fleet_status import device_topics

    prefix = DEFAULT_PREFIX
    try:
        link = FleetLink(Endpoint.parse(url), prefix, "auto", [f"{prefix}/{device}/#"])
    except EdgewiseError as exc:
        print(f"could not clear the demo's retained topics: {exc}")
        return
    try:
        clear(link, device_topics(link.settle(limit=3.0), prefix, device))
    finally:
        link.close()
