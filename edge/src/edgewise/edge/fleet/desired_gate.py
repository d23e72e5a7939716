"""Which desired states a device accepts (docs/fleet.md#threat-model).

A document from the broker is applied only when it is signed by a trusted operator key
for its very topic, its sequence is above the last one accepted for that topic and model
(kept in the bundle store's state.json, so across restarts), and it does not go to an
older version than the active one unless it says ``rollback``. Everything else is refused
and counted: anyone on the broker could have sent it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.fleet.bundle_store import BundleStore
from edgewise.edge.runtime.desired import Desired, older

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class DesiredGate:
    """Checks desired states against the trusted keys and the sequences accepted so far."""

    def __init__(self, store: BundleStore, trusted: Sequence[Ed25519PublicKey]) -> None:
        self._store = store
        self._trusted = list(trusted)
        self.refused = 0  # documents refused unsigned, forged, moved, replayed or malformed

    def accept(self, target: str, model: str, payload: bytes) -> Desired:
        """The document on ``{target}/{model}`` (target ``devices/pi-1``), verified and
        its sequence recorded; EdgewiseError (counted) says why it is refused."""
        try:
            want = Desired.parse(payload)
            want.verify(target, self._trusted)
            if want.model != model:
                raise EdgewiseError(
                    f"desired state names model {want.model!r} on the topic of {model!r}"
                )
            self._check_sequence(f"{target}/{model}", want)
        except EdgewiseError:
            self.refused += 1
            raise
        return want

    def _check_sequence(self, key: str, want: Desired) -> None:
        """Refuse a replay: a sequence below the last accepted for this target and model,
        or the same sequence with another roll-out id. A newer one is recorded first."""
        assert want.seq is not None  # verify() requires it
        last = self._store.last_seq(key)
        if last is not None and (
            want.seq < last[0] or (want.seq == last[0] and want.id != last[1])
        ):
            raise EdgewiseError(
                f"sequence {want.seq} is not above the last accepted ({last[0]}): a replay"
            )
        if last is None or want.seq > last[0]:
            self._store.record_seq(key, want.seq, want.id)

    @staticmethod
    def downgrade(want: Desired, active_version: str | None) -> str | None:
        """Why ``want`` may not apply over the active version (None: it may)."""
        if want.bundle is None or active_version is None or want.rollback:
            return None
        if older(want.version, active_version):
            return (
                f"v{want.version} is older than the active v{active_version}; going back "
                "takes a rollback (edgewise rollback)"
            )
        return None
