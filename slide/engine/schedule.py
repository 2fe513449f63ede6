"""When to rehash (reinsert every neuron with its current weights) and rebuild (new hash functions).

``fixed``
    Rehash every ``rehash_every`` samples and rebuild every ``rebuild_every`` samples, counted
    over the whole run (the reference code: 6,400 and 128,000). A rebuild includes a rehash.
``decay``
    The paper's schedule (section 4.2): the first rehash after ``decay_start`` = N_0 steps
    (batches), then the gap grows exponentially: the t-th gap is N_t = N_0 * exp(decay * t)
    steps (t = 0 is the first, so rehashes fall at steps N_0, N_0 + N_1, N_0 + N_1 + N_2, ...). Rebuilds stay on the fixed ``rebuild_every`` sample interval.

The schedule's state is two numbers (the step of the next decay rehash and how many decay
rehashes happened) kept in the model's state arrays, so a resumed run keeps the same schedule.
"""

from __future__ import annotations

import math

import numpy as np

REHASH, REBUILD = "rehash", "rebuild"


class Schedule:
    """Decide, after each training step, whether the hash tables must be refreshed."""

    def __init__(self, kind: str, rehash_every: int, rebuild_every: int, decay: float = 0.1,
                 decay_start: int = 50):
        self.kind = kind
        self.rehash_every = int(rehash_every)
        self.rebuild_every = int(rebuild_every)
        self.decay = float(decay)
        self.decay_start = int(decay_start)
        self.updates = 0                       # decay rehashes so far (t)
        self.next_step = float(decay_start)    # step of the next decay rehash

    @staticmethod
    def _crossed(before: int, after: int, every: int) -> bool:
        return every > 0 and after // every > before // every

    def after_step(self, step: int, samples_before: int, samples_after: int) -> str | None:
        """``'rebuild'``, ``'rehash'`` or ``None`` after step ``step`` (1-based) trained samples
        ``samples_before`` to ``samples_after``."""
        if self._crossed(samples_before, samples_after, self.rebuild_every):
            if self.kind == "decay":
                self._advance_decay(step)
            return REBUILD
        if self.kind == "fixed":
            return REHASH if self._crossed(samples_before, samples_after, self.rehash_every) else None
        if step >= self.next_step:
            self._advance_decay(step)
            return REHASH
        return None

    def _advance_decay(self, step: int) -> None:
        while self.next_step <= step:
            self.updates += 1
            self.next_step += max(1.0, self.decay_start * math.exp(self.decay * self.updates))

    def gaps(self, n: int) -> list[int]:
        """The first ``n`` decay gaps in steps (for documentation and tests)."""
        return [int(round(self.decay_start * math.exp(self.decay * t))) for t in range(n)]

    def state_arrays(self) -> dict:
        return {"schedule__state": np.array([self.updates, self.next_step], dtype=np.float64)}

    def load_state_arrays(self, arrays: dict) -> None:
        if "schedule__state" in arrays:
            updates, next_step = arrays["schedule__state"]
            self.updates, self.next_step = int(updates), float(next_step)
