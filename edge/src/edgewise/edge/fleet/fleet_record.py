"""What the device remembers of roll-outs, shared by the fleet features.

The active version per model (so a restart serves what a roll-out, a reload or a
probation rollback made active, not the configured bundle), the versions kept on disk
(what ``edgewise rollback`` can go back to) and the roll-outs refused for good, all in
``edge.fleet.bundle_store``. With no trusted key roll-outs are off and nothing is recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.fleet.bundle_store import BundleStore, Entry, pack_sha256

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from edgewise.edge.core.config import AgentConfig
    from edgewise.edge.runtime.backends import BackendOptions
    from edgewise.edge.runtime.model import ServedModel

log = logging.getLogger(__name__)


class FleetRecord:
    """The roll-out record of one device (``{state_dir}/fleet/{device}/``)."""

    def __init__(self, config: AgentConfig, trusted: list[Ed25519PublicKey]) -> None:
        self.device = config.device
        self.enabled = bool(config.trusted_keys)
        self.trusted = trusted  # read once: bundles and desired states check the same keys
        self.store = BundleStore(
            Path(config.state_dir) / "fleet" / config.device, keep=config.keep_versions
        )
        self._shas: dict[str, str] = {}  # bundle dir -> pack sha256 (computed once)

    def restore(self, models: dict[str, ServedModel], options: BackendOptions) -> None:
        """Serve what roll-outs made active before the restart, not the configured bundles."""
        if not self.enabled:
            return
        from edgewise.edge.runtime.loader import load_checked

        for name, entry in self.store.active().items():
            current = models.get(name)
            if entry is None:
                if models.pop(name, None) is not None:
                    self._overridden(name, "stays removed (edgewise undeploy)", current)
                continue
            if current is not None and str(current.bundle.path) == entry.path:
                continue
            try:
                models[name] = load_checked(entry.path, options, self.trusted)
            except EdgewiseError as exc:
                log.error("fleet: %s v%s from %s cannot serve: %s", name, entry.version,
                          entry.path, exc)  # fmt: skip
                continue
            if current is not None:
                self._overridden(name, f"serves v{entry.version} from a roll-out", current)

    def _overridden(self, name: str, what: str, configured: ServedModel | None) -> None:
        """One line when the remembered roll-out state wins over a configured bundle."""
        device = self.device
        given = f"v{configured.version} at {configured.bundle.path}" if configured else "a bundle"
        log.warning(
            "fleet: model %s %s, not %s that --bundle/--config names: roll-outs are "
            "remembered in %s/state.json; `edgewise deploy BUNDLE --device %s` (or "
            "`edgewise rollback --device %s --model %s`) changes it",
            name, what, given, self.store.root, device, device, name,
        )  # fmt: skip

    def sha_of(self, model: ServedModel) -> str:
        path = str(model.bundle.path)
        if path not in self._shas:
            self._shas[path] = pack_sha256(path)
        return self._shas[path]

    def entry(self, model: ServedModel) -> Entry:
        return Entry(self.sha_of(model), model.version, str(model.bundle.path))

    def activated(self, old: ServedModel | None, new: ServedModel) -> None:
        """Record a swap (any: roll-out, reload, probation rollback) so a restart keeps it."""
        if not self.enabled:
            return
        if old is not None and old.name not in self.store.active():
            self.store.record_active(old.name, self.entry(old))  # the configured version
        self.store.record_active(new.name, self.entry(new))

    def manages(self, name: str, configured_path: str) -> bool:
        """Whether a roll-out decides this model's version (a reload leaves it alone)."""
        entry = self.store.active().get(name) if self.enabled else None
        return entry is not None and Path(entry.path) != Path(configured_path)

    def refuse(self, deployment: str) -> None:
        if self.enabled:
            self.store.mark_refused(deployment)

    def history(self, name: str) -> list[dict[str, str]]:
        """Versions on disk to roll back to, newest first (for the deployment document)."""
        if not self.enabled:
            return []
        return [{"version": e.version, "bundle": e.sha256} for e in self.store.history(name)]
