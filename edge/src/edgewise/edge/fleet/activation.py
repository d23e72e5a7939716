"""New versions while serving: reload the configured bundles without a restart.

On SIGHUP (``systemctl reload``) the agent loads every configured bundle again beside the
running ones: signature (with trusted keys), hashes, runtime, self-test. A bundle that
changed and passed replaces the active version from the next request on (requests already
taken finish on the old one); one that fails is refused with its reason and the active
version keeps serving. Each model's outcome is a retained document on
``{prefix}/{device}/{model}/deployment``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgewise.edge.core.feature import Feature
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.fleet.probation import Probation, Trial
from edgewise.edge.runtime.backends import BackendOptions
from edgewise.edge.runtime.loader import load_checked, trusted_public_keys
from edgewise.edge.runtime.model import ServedModel

if TYPE_CHECKING:
    from edgewise.edge.core.feature import Host
    from edgewise.edge.fleet.fleet_record import FleetRecord

log = logging.getLogger(__name__)


def deployment_doc(
    state: str, model: ServedModel | None, reason: str | None = None, previous: str | None = None
) -> dict[str, Any]:
    """The retained deployment state of one model."""
    doc: dict[str, Any] = {
        "state": state,
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if model is not None:
        doc |= {"version": model.version, "sha256": model.bundle.sha256}
    if previous is not None:
        doc["previous"] = previous
    if reason is not None:
        doc["reason"] = reason[:500]
    return doc


def _name_of(path: str) -> str:
    # The model a refused bundle was meant to be: its manifest's name if readable.
    try:
        name = json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))["name"]
        return name if isinstance(name, str) else Path(path).name
    except (OSError, ValueError, KeyError, TypeError):
        return Path(path).name


class Activation(Feature):
    """Versions swapped in and out, and what each model's ``deployment`` topic says of it.

    Roll-outs (``edge.fleet.reconcile``), reloads and probation's verdicts go through here. It
    publishes each served model's state at start, records every swap (``FleetRecord``),
    reloads the configured bundles when ``reload_requested`` is set (SIGHUP), and acts on
    probation's verdicts: a pass is announced, a failure swaps the old version back."""

    def __init__(self, host: Host, record: FleetRecord, probation: Probation) -> None:
        self._host = host
        self._record = record
        self._probation = probation
        self.reload_requested = threading.Event()  # set by SIGHUP (edge.core.supervision)

    # -- the feature's points -------------------------------------------------------------

    def started(self) -> None:
        for name, model in list(self._host.models.items()):
            self.publish(name, deployment_doc("active", model))

    def swapped(self, old: ServedModel | None, new: ServedModel | None) -> None:
        if new is not None:
            self._record.activated(old, new)  # a restart keeps this version

    def threads(self) -> Sequence[tuple[str, Callable[[threading.Event], None]]]:
        return [("reload", self._watch)]

    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(0.5):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                try:
                    self.reload()
                except Exception:  # a reload never stops serving: the old versions stay
                    log.exception("reload failed; the active versions keep serving")

    # -- deployment documents -------------------------------------------------------------

    def publish(self, name: str, doc: dict[str, Any], retain: bool = True) -> None:
        """Retained, QoS 1; a model name that is no topic level is not published."""
        if not name or "/" in name or "+" in name or "#" in name:
            return
        if doc.get("state") in ("active", "rolled_back", "failed"):
            # The versions kept on disk: what `edgewise rollback` can go back to.
            doc = {"history": self._record.history(name)} | doc
        topic = self._host.topics.model(name, "deployment")
        self._host.link.publish(topic, json.dumps(doc).encode(), qos=1, retain=retain)

    def removed(self, name: str, model: ServedModel | None, deployment: str) -> None:
        """After ``Host.remove``: say so to those watching, and clear the retained state."""
        gone = deployment_doc("removed", model) | {"deployment": deployment}
        self.publish(name, gone, retain=False)  # seen by those watching now
        self._host.link.publish(self._host.topics.model(name, "deployment"), b"", 1, True)

    # -- swaps ------------------------------------------------------------------------------

    def swap_in(self, model: ServedModel, deployment: str | None = None) -> dict[str, Any]:
        """Make ``model`` the active version (probation when it replaces one); its doc."""
        host = self._host
        current = host.models.get(model.name)
        previous = current.version if current is not None else None
        baseline = self._probation.baseline(current) if current is not None else None
        host.activate(model)
        log.info("%s v%s active (was %s)", model.name, model.version, previous)
        doc = deployment_doc("active", model, previous=previous)
        if deployment is not None:
            doc["deployment"] = deployment
        if current is not None and host.config.probation_requests > 0:
            self._probation.start(model, current, baseline, deployment)
            doc["probation"] = f"{host.config.probation_requests} requests"
        return doc

    def verdict(self, trial: Trial, verdict: str) -> None:
        """Probation is over: '' passed, else the reason the old version comes back."""
        model = trial.model
        tag = {"deployment": trial.deployment} if trial.deployment else {}
        if verdict == "":
            log.info("%s v%s passed probation (%d requests)", model.name, model.version, trial.seen)
            doc = deployment_doc("active", model, previous=trial.previous.version)
            self.publish(model.name, doc | {"probation": "passed"} | tag)
            return
        log.error("%s v%s rolled back to v%s: %s", model.name, model.version,
                  trial.previous.version, verdict)  # fmt: skip
        self._host.activate(trial.previous)
        if trial.deployment:
            self._record.refuse(trial.deployment)  # not tried again after a restart
        doc = deployment_doc("rolled_back", trial.previous, reason=verdict)
        self.publish(model.name, doc | {"refused_version": model.version} | tag)

    def reload(self) -> dict[str, str]:
        """Load the configured bundles again; activate the changed ones that pass every
        check. Returns model name -> outcome (``active``, ``unchanged`` or ``failed: ...``)."""
        config = self._host.config
        options = BackendOptions(config.num_threads, config.providers)
        outcomes: dict[str, str] = {}
        try:
            trusted = trusted_public_keys(config.trusted_keys)
        except EdgewiseError as exc:
            log.error("reload refused: %s", exc)
            return {"*": f"failed: {exc}"}
        for path in config.bundles:
            try:
                model = load_checked(path, options, trusted)
            except EdgewiseError as exc:
                name = _name_of(path)
                log.error("reload: %s refused, the active version keeps serving: %s", name, exc)
                failed = deployment_doc("failed", self._host.models.get(name), str(exc))
                self.publish(name, failed)
                outcomes[name] = f"failed: {exc}"
                continue
            current = self._host.models.get(model.name)
            if self._record.manages(model.name, path):
                outcomes[model.name] = "managed by fleet roll-outs (edgewise deploy)"
                continue
            if (
                current is not None
                and current.bundle.sha256 == model.bundle.sha256
                and (current.version == model.version)
            ):
                outcomes[model.name] = "unchanged"
                continue
            self.publish(model.name, self.swap_in(model))
            outcomes[model.name] = "active"
        return outcomes
