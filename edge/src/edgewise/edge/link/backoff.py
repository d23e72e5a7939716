"""Capped exponential back-off with jitter, for reconnects and retries."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Capped exponential back-off with jitter (half fixed, half random)."""

    initial: float = 0.5
    cap: float = 30.0
    attempt: int = 0
    _rng: random.Random = field(default_factory=random.Random)

    def next(self) -> float:
        """Seconds to wait before the next attempt."""
        ceiling = min(self.cap, self.initial * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        self.attempt = 0
