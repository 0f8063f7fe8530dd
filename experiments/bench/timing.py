"""Per-call timing of thunks in interleaved rounds, robust to the load of a shared machine."""

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

Thunk = Callable[[], Any]


class Timings(NamedTuple):
    """Per-call seconds of interleaved rounds.

    Attributes:
      samples: name -> one time per round, in round order.
      rounds: the number of rounds.
    """

    samples: dict[str, list[float]]
    rounds: int

    def median(self, name: str | None) -> float:
        """Median seconds per call; NaN for a name that was not timed."""
        return statistics.median(self.samples[name]) if name in self.samples else math.nan

    def ratio(self, numerator: str | None, denominator: str | None) -> float:
        """Median over rounds of the per-round ratio: load that hits a round hits both."""
        if numerator not in self.samples or denominator not in self.samples:
            return math.nan
        pairs = zip(self.samples[numerator], self.samples[denominator], strict=True)
        return statistics.median(a / b for a, b in pairs)


def time_interleaved(
    thunks: dict[str, Thunk],
    *,
    min_rounds: int,
    budget: float,
    groups: Sequence[Sequence[str]] = (),
    max_rounds: int = 5000,
    warmup_calls: int = 0,
) -> Timings:
    """Times each thunk call by call (to its ``block_until_ready``), in interleaved rounds.

    Each thunk is called once untimed (warm-up, and the estimate of its cost), then once a
    round. A round runs the groups in a random order and the thunks of a group back to back in
    a random order: the variants compared go in one group, so that each round's ratio compares
    calls made under the same load of other processes.

    Args:
      thunks: name -> a call that returns what to block on.
      min_rounds: the fewest rounds.
      budget: seconds of rounds to aim for: cheap thunks get more rounds, up to ``max_rounds``.
      groups: names to run back to back; the other thunks run alone.
      max_rounds: the most rounds.
      warmup_calls: untimed calls right before each timed call of a thunk, so that it follows
        calls of its own, as the epochs of a training run do.
    """
    estimate = {}
    for name, thunk in thunks.items():
        start = time.perf_counter()
        jax.block_until_ready(thunk())
        estimate[name] = time.perf_counter() - start
    per_round = max(sum(estimate.values()) * (1 + warmup_calls), 1e-9)
    rounds = int(min(max_rounds, max(min_rounds, budget // per_round)))
    grouped = [[n for n in group if n in thunks] for group in groups]
    in_groups = [n for group in grouped for n in group]
    if len(in_groups) != len(set(in_groups)):
        raise ValueError(f"a thunk is in two groups: {groups}; list each in one group.")
    grouped = [g for g in grouped if g] + [[n] for n in thunks if n not in in_groups]
    samples: dict[str, list[float]] = {name: [] for name in thunks}
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(grouped)
        for group in grouped:
            rng.shuffle(group)
            for name in group:
                for _ in range(warmup_calls):
                    jax.block_until_ready(thunks[name]())
                start = time.perf_counter()
                jax.block_until_ready(thunks[name]())
                samples[name].append(time.perf_counter() - start)
    return Timings(samples, rounds)
