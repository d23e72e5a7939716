"""The composition root: builds an agent from its config and attaches its features.

Everything the agent is made of is decided here, once: which models it serves (the
configured bundles, or what roll-outs made active before a restart), the serving core
(``edge.core.agent``), and each feature with only what it needs, features that need each
other injected (roll-outs get the activation and the shadows; probation reports to the
activation). A feature is attached or not from the config, never switched inside the
core. Attachment order is the order the fixed points are called in (``edge.core.feature``):
probation hears of an answer before the shadows, answer states and drift do.
"""

from __future__ import annotations

import threading

from edgewise.edge.core.agent import Agent
from edgewise.edge.core.config import AgentConfig
from edgewise.edge.core.health import counters_document
from edgewise.edge.core.role import Role, pool_requests
from edgewise.edge.core.supervision import reload_on_sighup, stop_on_signals
from edgewise.edge.fleet.activation import Activation
from edgewise.edge.fleet.fleet_record import FleetRecord
from edgewise.edge.fleet.probation import Probation, Trial
from edgewise.edge.fleet.reconcile import Fleet
from edgewise.edge.fleet.shadow import Shadows
from edgewise.edge.link.transport import TransportFactory
from edgewise.edge.observe.answer_state import AnswerStates
from edgewise.edge.observe.field_data import FieldData
from edgewise.edge.observe.ha_discovery import Discovery
from edgewise.edge.runtime.backends import BackendOptions
from edgewise.edge.runtime.loader import load_models, trusted_public_keys
from edgewise.edge.runtime.model import ServedModel
from edgewise.edge.streams.feature import Streams
from edgewise.edge.workers import Retirement, SupervisorReport, Workers, helper_client_id


def build_agent(
    config: AgentConfig,
    models: dict[str, ServedModel] | None = None,
    transport: TransportFactory | None = None,
) -> Agent:
    """The device's main agent process, every feature attached (not started)."""
    options = BackendOptions(config.num_threads, config.providers)
    if models is None:
        models = load_models(config.bundles, options, config.trusted_keys)
    trusted = trusted_public_keys(config.trusted_keys) if config.trusted_keys else []
    record = FleetRecord(config, trusted)
    record.restore(models, options)  # what roll-outs made active before a restart
    agent = Agent(config, models, transport)
    activation: Activation | None = None

    def verdict(trial: Trial, outcome: str) -> None:
        assert activation is not None  # set below, before any request is served
        activation.verdict(trial, outcome)

    probation = Probation(config, on_verdict=verdict)
    activation = Activation(agent, record, probation)
    shadows = Shadows(agent)
    agent.attach(
        probation,
        shadows,
        AnswerStates(agent),
        FieldData(agent),  # drift and captured samples (docs/drift.md)
        *([Discovery(agent)] if config.ha_discovery else []),  # Home Assistant (opt-in)
        activation,
        Fleet(agent, record, activation, shadows),
        Retirement(config),  # helpers of a larger `workers` leave their subscription
        *([Workers(agent, agent.supervisor.fail)] if config.workers > 1 else []),
        *([Streams(agent)] if config.streams else []),  # the user's sensors (docs/streams.md)
    )
    return agent


def build_helper(config: AgentConfig, index: int, retiring: bool = False) -> Agent:
    """Helper process ``index`` of ``workers`` > 1: it serves requests only; what must be
    single (status, infos, health, roll-outs, discovery, drift, capture) stays with the
    main process. A ``retiring`` helper subscribes to nothing: it answers what the broker
    held for its session, and leaves the shared subscription."""
    drift = config.drift.model_copy(update={"enabled": False})
    config = config.model_copy(
        update={"ha_discovery": False, "capture": None, "drift": drift, "streams": ()}
    )
    plain, shared = config.topics.requests, config.topics.shared_requests
    role = Role(
        client_id=helper_client_id(config.device, index),
        outbox_path=config.helper_outbox_path(index),
        serve=[] if retiring else [(shared, config.qos), *pool_requests(config)],
        unsubscriptions=[plain, shared] if retiring else [plain],
        announce=False,
    )
    options = BackendOptions(config.num_threads, config.providers)
    models = load_models(config.bundles, options, config.trusted_keys)
    trusted = trusted_public_keys(config.trusted_keys) if config.trusted_keys else []
    FleetRecord(config, trusted).restore(models, options)  # the versions the main serves
    agent = Agent(config, models, role=role)
    agent.attach(
        SupervisorReport(
            connected=lambda: agent.connection.connected,
            counters=lambda: counters_document(agent),
            tallies=lambda: {name: agent.tally.snapshot(name) for name in agent.models},
        )
    )
    return agent


def run_agent(config: AgentConfig) -> int:
    """``edgewise agent``: serve until SIGTERM/SIGINT (0) or a thread failure (1); SIGHUP
    reloads the configured bundles."""
    agent = build_agent(config)
    stop_requested = stop_on_signals()
    activation = agent.features.get(Activation)
    reload_on_sighup(activation.reload_requested if activation else threading.Event())
    agent.start()
    return agent.wait(stop_requested)
