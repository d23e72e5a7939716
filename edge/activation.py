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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.model import ServedModel, load_checked, trusted_public_keys
from edgewise.edge.probation import MIN_BASELINE

if TYPE_CHECKING:
    from edgewise.edge.agent import Agent

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


def publish_deployment(agent: Agent, name: str, doc: dict[str, Any], retain: bool = True) -> None:
    """Retained, QoS 1; a model name that is no topic level is not published."""
    if not name or "/" in name or "+" in name or "#" in name:
        return
    if doc.get("state") in ("active", "rolled_back", "failed"):
        # The versions kept on disk: what `edgewise rollback` can go back to.
        doc = {"history": agent.fleet.history(name)} | doc
    topic = agent.topics.model(name, "deployment")
    agent.connection.publish(topic, json.dumps(doc).encode(), qos=1, retain=retain)


def _name_of(path: str) -> str:
    # The model a refused bundle was meant to be: its manifest's name if readable.
    try:
        name = json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))["name"]
        return name if isinstance(name, str) else Path(path).name
    except (OSError, ValueError, KeyError, TypeError):
        return Path(path).name


def swap_in(agent: Agent, model: ServedModel, deployment: str | None = None) -> dict[str, Any]:
    """Make ``model`` the active version (probation when it replaces one); its doc."""
    current = agent.models.get(model.name)
    previous = current.version if current is not None else None
    baseline = agent.inference_ms[model.name].summary() if current is not None else {}
    agent.activate(model)
    log.info("%s v%s active (was %s)", model.name, model.version, previous)
    doc = deployment_doc("active", model, previous=previous)
    if deployment is not None:
        doc["deployment"] = deployment
    if current is not None and agent.config.probation_requests > 0:
        enough = int(baseline.get("n") or 0) >= MIN_BASELINE
        p99 = baseline.get("p99_ms")
        agent.probation.start(model, current, float(p99) if enough and p99 else None, deployment)
        doc["probation"] = f"{agent.config.probation_requests} requests"
    return doc


def reload_bundles(agent: Agent) -> dict[str, str]:
    """Load the configured bundles again; activate the changed ones that pass every check.

    Returns model name -> outcome (``active``, ``unchanged`` or ``failed: reason``).
    """
    outcomes: dict[str, str] = {}
    try:
        trusted = trusted_public_keys(agent.config.trusted_keys)
    except EdgewiseError as exc:
        log.error("reload refused: %s", exc)
        return {"*": f"failed: {exc}"}
    for path in agent.config.bundles:
        try:
            model = load_checked(path, agent.backend_options, trusted)
        except EdgewiseError as exc:
            name = _name_of(path)
            log.error("reload: %s refused, the active version keeps serving: %s", name, exc)
            publish_deployment(
                agent, name, deployment_doc("failed", agent.models.get(name), str(exc))
            )
            outcomes[name] = f"failed: {exc}"
            continue
        current = agent.models.get(model.name)
        if agent.fleet.manages(model.name, path):
            outcomes[model.name] = "managed by fleet roll-outs (edgewise deploy)"
            continue
        if (
            current is not None
            and current.bundle.sha256 == model.bundle.sha256
            and (current.version == model.version)
        ):
            outcomes[model.name] = "unchanged"
            continue
        publish_deployment(agent, model.name, swap_in(agent, model))
        outcomes[model.name] = "active"
    return outcomes
