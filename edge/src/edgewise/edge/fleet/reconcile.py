"""Fleet roll-outs on the device: follow the desired state, fetch, verify, activate.

The agent subscribes to its own desired states and its groups' (``edge.link.fleet_topics``);
paho's thread only hands those messages to this module's thread ("fleet"). For each model
the device's own document wins over its groups' (in config order). When the desired
bundle is not the one serving, the thread fetches it: the retained index first, then the
chunks, each checked and stored as it comes (``edge.fleet.bundle_store``), so a download that a
reconnect or a restart cuts short resumes where it stopped. The whole bundle is then
verified (pack and file hashes, signature by a trusted key, manifest against model file,
the runtime, the self-test) before it serves; a refusal is reported with its reason on
the model's ``deployment`` topic, the old version keeps serving, and the roll-out's id is
not tried again. Remote roll-outs need ``trusted_keys``: a device that trusts no key
ignores them (an unsigned bundle from anyone on the broker is never run).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgewise.edge.core.feature import Feature, Route
from edgewise.edge.core.supervision import serve_inbox
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.fleet.activation import Activation, deployment_doc
from edgewise.edge.fleet.desired_gate import DesiredGate
from edgewise.edge.fleet.fleet_record import FleetRecord
from edgewise.edge.fleet.shadow import Shadows
from edgewise.edge.link.fleet_topics import FleetTopics
from edgewise.edge.link.message import Message
from edgewise.edge.runtime.backends import BackendOptions
from edgewise.edge.runtime.desired import Desired
from edgewise.edge.runtime.transfer import BundleIndex

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from edgewise.edge.core.feature import Host
    from edgewise.edge.runtime.model import ServedModel

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 1.0  # "downloading" documents per model at most this often
# A roll-out that failed for want of disk or memory is not refused for good: it runs again
# this long after (or at once on a new desired state), when space may have been freed.
RETRY_S = 60.0
LEFTOVERS_AFTER_S = 30.0  # after start, chunks no download resumed are removed
RESOURCES = (OSError, MemoryError)  # failures of the device, not of the bundle


@dataclass
class Download:
    """A bundle being fetched for one desired state."""

    want: Desired
    index: BundleIndex | None = None
    have: set[int] = field(default_factory=set)
    reported_at: float = 0.0


class Fleet(Feature):
    """The agent's side of roll-outs; ``run`` is the fleet thread."""

    def __init__(
        self, host: Host, record: FleetRecord, activation: Activation, shadows: Shadows
    ) -> None:
        self.host = host
        self.record = record
        self.activation = activation
        self.shadows = shadows
        config = host.config
        self.topics = FleetTopics(config.prefix)
        self.enabled = record.enabled
        self.store = record.store
        self._options = BackendOptions(config.num_threads, config.providers)
        # Signatures, sequences and downgrades of desired states, with the bundles' keys.
        self.gate = DesiredGate(self.store, record.trusted)
        self._inbox: queue.Queue[Message] = queue.Queue(maxsize=64)
        self._device_docs: dict[str, Desired] = {}
        self._group_docs: dict[str, dict[str, Desired]] = {g: {} for g in config.groups}
        self._downloads: dict[str, Download] = {}  # model -> its download
        self._applied: dict[str, str] = {}  # model -> deployment id handled
        self._warned = False
        self._retry_at: dict[str, float] = {}  # model -> when a resource failure retries
        self._started = time.monotonic()
        self._leftovers_checked = False

    # -- the feature's points -------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        """The desired states of this device and its groups (the device's own only when
        disabled: to say why not); everything under the fleet root routes here (bundles
        are subscribed to while they download)."""
        config = self.host.config
        filters = [self.topics.desired_filter("devices", config.device)]
        if self.enabled:
            filters += [self.topics.desired_filter("groups", g) for g in config.groups]
        return [
            *(Route(f, 1, "wait") for f in filters),
            Route(self.topics.root + "/#", 1, "wait", subscribe=False),
        ]

    def accept(self, msg: Message) -> None:
        """paho thread: hand over, waiting for room (the broker holds the rest meanwhile)."""
        accepting = self.host.accepting
        while accepting.is_set():
            try:
                self._inbox.put(msg, timeout=0.5)
                return
            except queue.Full:
                continue

    def threads(self) -> Sequence[tuple[str, Callable[[threading.Event], None]]]:
        return [("fleet", self.run)]

    def health(self, doc: dict[str, Any]) -> None:
        doc["remote_deploy"] = self.enabled
        doc["refused_desired"] = self.gate.refused

    def run(self, stop: threading.Event) -> None:
        serve_inbox(self._inbox, stop, self._handle, self.host.link.ack, "fleet", idle=self._tick)

    def _tick(self) -> None:
        """Fleet thread, when idle: retry roll-outs that lacked disk or memory; once after
        start, remove chunks that no download resumed."""
        now = time.monotonic()
        for name, due in list(self._retry_at.items()):
            if now >= due:
                del self._retry_at[name]
                log.info("fleet: %s: trying the roll-out again", name)
                self._reconcile(name)
        if not self._leftovers_checked and now - self._started >= LEFTOVERS_AFTER_S:
            self._leftovers_checked = True
            self._prune_leftovers()

    def _prune_leftovers(self) -> None:
        keep = {dl.want.bundle for dl in self._downloads.values() if dl.want.bundle}
        removed = self.store.prune_leftovers(keep)
        if removed:
            log.info("fleet: removed %d leftover download(s): %s", len(removed),
                     ", ".join(removed[:5]))  # fmt: skip

    # -- messages -----------------------------------------------------------------------

    def _handle(self, msg: Message) -> None:
        target = self.topics.parse_desired(msg.topic)
        if target is not None:
            self._on_desired(target.kind, target.name, target.model, msg.payload)
            return
        bundle = self.topics.parse_bundle(msg.topic)
        if bundle is not None:
            self._on_bundle(bundle[0], bundle[1], msg.payload)

    def _on_desired(self, kind: str, name: str, model: str, payload: bytes) -> None:
        config = self.host.config
        if (kind, name) != ("devices", config.device) and (
            kind != "groups" or name not in config.groups
        ):
            return  # not ours (a broker without ACLs, or a stale subscription)
        if not self.enabled:
            if payload and not self._warned:
                self._warned = True
                log.warning("fleet: a roll-out for %s is ignored: remote roll-outs need "
                            "--trusted-key (signed bundles only)", model[:100])  # fmt: skip
                if model in self.host.models:  # never a retained topic for a stranger's name
                    why = "remote roll-outs need trusted keys on the device (--trusted-key)"
                    self.activation.publish(model, deployment_doc("failed", None, why))
            return
        slot = self._device_docs if kind == "devices" else self._group_docs[name]
        if not payload:
            # A cleared desired state changes nothing on the device by itself; a cleared
            # pin (`fleet unpin`) lets the groups' desired state apply.
            if slot.pop(model, None) is not None and kind == "devices":
                self._reconcile(model)
            return
        target = f"{kind}/{name}"
        try:
            want = self.gate.accept(target, model, payload)
        except EdgewiseError as exc:
            # Unsigned, forged, replayed or malformed: it changes nothing, and nothing is
            # published about the model (anyone on the broker could have sent it).
            log.warning("fleet: refused a desired state on %s/%s: %s", target[:100],
                        model[:100], exc)  # fmt: skip
            return
        current = self.host.models.get(model)
        refused = self.gate.downgrade(want, current.version if current is not None else None)
        if refused is not None:
            log.error("fleet: %s: %s", model, refused)
            self.activation.publish(model, self._doc("failed", want, refused))
            return
        slot[model] = want
        self._reconcile(model)

    def _wanted(self, model: str) -> Desired | None:
        if model in self._device_docs:
            return self._device_docs[model]
        for group in self.host.config.groups:
            if model in self._group_docs[group]:
                return self._group_docs[group][model]
        return None

    def _reconcile(self, name: str) -> None:
        want = self._wanted(name)
        if want is None or self._applied.get(name) == want.id or self.store.refused(want.id):
            return
        old = self._downloads.pop(name, None)
        if old is not None and old.want.bundle == want.bundle and want.bundle is not None:
            old.want = want  # a new roll-out of the bundle being fetched: go on fetching
            self._downloads[name] = old
            self._progress(name, force=True)
            return
        if old is not None:
            self._stop_download(old)
            self._prune_leftovers()  # the superseded download's chunks go
        self._retry_at.pop(name, None)
        host = self.host
        current, shadow = host.models.get(name), self.shadows.model(name)
        if want.bundle is None:
            self._applied[name] = want.id
            host.remove(name)
            self.activation.removed(name, current, want.id)
            self.store.record_removed(name)
            return
        serving = current is not None and self.record.sha_of(current) == want.bundle
        if serving and current is not None and want.mode == "active":
            self._applied[name] = want.id
            self.shadows.stop(name)
            doc = deployment_doc("active", current) | {"deployment": want.id}
            self.activation.publish(name, doc)
            return
        if shadow is not None and self.record.sha_of(shadow) == want.bundle:
            self._applied[name] = want.id
            if want.mode == "active":  # promote: the shadow has been checked already
                self.shadows.stop(name)
                self._activate(want, shadow)
            else:
                self.activation.publish(name, self._shadow_doc(shadow, want))
            return
        entry = self.store.find(name, want.bundle)
        if entry is not None:
            self._verify_and_apply(want, Path(entry.path))
            return
        self._downloads[name] = Download(want)
        host.link.subscribe(self.topics.index(want.bundle), 1)
        self._progress(name, force=True)

    # -- downloads ----------------------------------------------------------------------

    def _stop_download(self, dl: Download) -> None:
        assert dl.want.bundle is not None
        self.host.link.unsubscribe(self.topics.index(dl.want.bundle))
        self.host.link.unsubscribe(self.topics.bundle_filter(dl.want.bundle))

    def _progress(self, name: str, force: bool = False) -> None:
        dl = self._downloads[name]
        now = time.monotonic()
        if not force and now - dl.reported_at < PROGRESS_EVERY_S:
            return
        dl.reported_at = now
        total = len(dl.index.chunks) if dl.index else None
        doc = deployment_doc("downloading", self.host.models.get(name))
        doc |= {"deployment": dl.want.id, "target_version": dl.want.version,
                "chunks": total, "received": len(dl.have)}  # fmt: skip
        self.activation.publish(name, doc)

    def _on_bundle(self, sha: str, i: int | None, payload: bytes) -> None:
        for name, dl in list(self._downloads.items()):
            if dl.want.bundle != sha:
                continue
            try:
                if i is None:
                    self._on_index(name, dl, payload)
                elif dl.index is not None and i not in dl.have and payload:
                    # (An empty retained chunk is a chunk being republished: wait for it.)
                    self.store.put_chunk(dl.index, i, payload)
                    dl.have.add(i)
                    self._progress(name)
                if dl.index is not None and len(dl.have) == len(dl.index.chunks):
                    self._finish(name, dl)
            except EdgewiseError as exc:
                self._fail(name, dl.want, str(exc))
            except RESOURCES as exc:
                self._fail(name, dl.want, _resource_reason("storing the download", exc), True)

    def _on_index(self, name: str, dl: Download, payload: bytes) -> None:
        if dl.index is not None or not payload:
            return
        index = BundleIndex.parse(payload)
        if index.sha256 != dl.want.bundle:
            raise EdgewiseError("the index on the bundle's topic names another bundle")
        if index.model != name:
            raise EdgewiseError(f"the bundle holds model {index.model!r}, not {name!r}")
        self.store.check_space(index, self.host.config.max_bundle_bytes)
        dl.index, dl.have = index, self.store.have(index)
        assert dl.want.bundle is not None
        self.host.link.subscribe(self.topics.bundle_filter(dl.want.bundle), 1)
        self._progress(name, force=True)

    def _finish(self, name: str, dl: Download) -> None:
        del self._downloads[name]
        self._stop_download(dl)
        assert dl.index is not None
        self.activation.publish(name, self._doc("verifying", dl.want))
        try:
            path = self.store.install(dl.index)
        except EdgewiseError as exc:
            self._fail(name, dl.want, str(exc))
            return
        except RESOURCES as exc:
            self._fail(name, dl.want, _resource_reason("unpacking the bundle", exc), True)
            return
        self._verify_and_apply(dl.want, path)

    def _fail(self, name: str, want: Desired, reason: str, transient: bool = False) -> None:
        """Report the roll-out failed and clean up after it. The bundle's fault: refused
        for good. ``transient`` (the device lacked disk or memory): tried again after
        ``RETRY_S`` or on the next desired state."""
        dl = self._downloads.pop(name, None)
        if dl is not None:
            self._stop_download(dl)
        if transient:
            self._retry_at[name] = time.monotonic() + RETRY_S
            reason = f"{reason}; trying again in {RETRY_S:.0f} s"
        else:
            self.store.mark_refused(want.id)
            self._applied[name] = want.id
        log.error("fleet: %s v%s failed, the active version keeps serving: %s",
                  name, want.version, reason)  # fmt: skip
        if want.bundle is not None:
            self.store.discard(want.bundle)  # its chunks and staging files go
        self.activation.publish(name, self._doc("failed", want, reason))

    def _doc(self, state: str, want: Desired, reason: str | None = None) -> dict[str, object]:
        doc = deployment_doc(state, self.host.models.get(want.model), reason)
        return doc | {"deployment": want.id, "target_version": want.version}

    # -- activation ---------------------------------------------------------------------

    def _verify_and_apply(self, want: Desired, path: Path) -> None:
        from edgewise.edge.runtime.bundle import load_bundle
        from edgewise.edge.runtime.model import ServedModel
        from edgewise.edge.runtime.selftest import run_selftest
        from edgewise.edge.runtime.signing import verify_bundle

        name = want.model
        try:
            signer = verify_bundle(path, self.record.trusted)
            model = ServedModel.load(load_bundle(path), self._options)
            if model.name != name:
                raise EdgewiseError(f"the bundle holds model {model.name!r}, not {name!r}")
            model.signed_by = signer
            self.activation.publish(name, self._doc("self-test", want))
            model.selftest = run_selftest(model)
        except EdgewiseError as exc:
            self._fail(name, want, str(exc))
            return
        except RESOURCES as exc:
            self._fail(name, want, _resource_reason("loading the bundle", exc), True)
            return
        self._applied[name] = want.id
        if want.mode == "shadow":
            try:
                self.shadows.start(model, want.id)
            except EdgewiseError as exc:
                self._fail(name, want, str(exc))
                return
            self.activation.publish(name, self._shadow_doc(model, want))
            return
        self._activate(want, model)

    def _activate(self, want: Desired, model: ServedModel) -> None:
        self.activation.publish(model.name, self.activation.swap_in(model, want.id))

    def _shadow_doc(self, model: ServedModel, want: Desired) -> dict[str, object]:
        doc = self._doc("shadow", want)
        return doc | {"shadow_version": model.version, "shadow_bundle": want.bundle}


def _resource_reason(step: str, exc: BaseException) -> str:
    """What the device lacked, in one line (a full disk says so by name)."""
    import errno

    if isinstance(exc, MemoryError):
        return f"out of memory while {step}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full while {step} ({exc.strerror})"
    return f"{type(exc).__name__} while {step}: {exc}"
