"""Per-call timing of thunks in interleaved rounds, robust to the load of a shared machine."""

import math
import random
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Thunk = Callable[[], Any]
MAX_ROUNDS = 5000


class Timings(NamedTuple):
    samples: dict[str, list[float]]  # name -> the seconds of its call in each round
    rounds: int

    def median(self, name: str | None) -> float:
        """Median seconds a call; NaN for a name that was not timed."""
        return statistics.median(self.samples[name]) if name in self.samples else math.nan

    def ratio(self, numerator: str | None, denominator: str | None) -> float:
        """Median over rounds of the per-round ratio: load that hits a round hits both."""
        if numerator not in self.samples or denominator not in self.samples:
            return math.nan
        pairs = zip(self.samples[numerator], self.samples[denominator], strict=True)
        return statistics.median(a / b for a, b in pairs)


def time_interleaved(
    thunks: dict[str, Thunk], *, min_rounds: int, budget: float, warmup_calls: int = 0
) -> Timings:
    """Times every thunk call by call (to ``block_until_ready``) in rounds, each round calling
    every thunk once, back to back, in a fresh random order.

    One untimed call of each estimates a round: as many rounds as fit in ``budget`` seconds, at
    least ``min_rounds``. ``warmup_calls`` untimed calls precede each timed one, so that it
    follows calls of its own, as the epochs of a training run do.
    """

    def call(name: str) -> float:
        start = time.perf_counter()
        jax.block_until_ready(thunks[name]())
        return time.perf_counter() - start

    per_round = max(sum(map(call, thunks)) * (1 + warmup_calls), 1e-9)
    rounds = int(min(MAX_ROUNDS, max(min_rounds, budget // per_round)))
    samples: dict[str, list[float]] = {name: [] for name in thunks}
    order, rng = list(thunks), random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            for _ in range(warmup_calls):
                jax.block_until_ready(thunks[name]())
            samples[name].append(call(name))
    return Timings(samples, rounds)
