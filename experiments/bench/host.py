"""How a measurement runs: thunks timed in interleaved rounds, the machine it ran on, and the
child processes of measurements on k CPUs or N forced devices.

XLA fixes its thread pool (from the CPUs the process may use) and its CPU devices (from
``XLA_FLAGS``) when its backend starts, so each such measurement runs in a child: `run_child`
starts ``python -m MODULE SPEC`` (SPEC a JSON object) and the module's `child_main` pins itself
to ``spec["cores"]`` CPUs, when given, before JAX starts, then prints its JSON result last.
"""

import contextlib
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax  # importing JAX does not start a backend

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
Thunk = Callable[[], Any]
MAX_ROUNDS = 5000


class Timings(NamedTuple):
    samples: dict[str, list[float]]  # name -> the seconds of its call in each round
    rounds: int

    def median(self, name: str) -> float:
        """Median seconds a call; NaN for a name that was not timed."""
        return statistics.median(self.samples[name]) if name in self.samples else math.nan

    def ms(self, *names: str) -> dict[str, float]:
        """``{NAME_ms: median milliseconds a call}`` for each name."""
        return {f"{name}_ms": 1e3 * self.median(name) for name in names}

    def ratio(self, numerator: str, denominator: str) -> float:
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


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (the platform's name elsewhere)."""
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return platform.processor() or platform.machine()


def describe() -> str:
    """One line: CPU model, cores, memory, OS, Python and jax versions."""
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        memory = f", {int(f.readline().split()[1]) / 2**20:.0f} GiB RAM"
    return (
        f"{cpu_model()}, {os.cpu_count()} cores{memory}; {platform.system()} "
        f"{platform.release()}; python {platform.python_version()}; jax {jax.__version__}"
    )


def run_child(module: str, spec: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    """The JSON result of ``python -m module SPEC``; RuntimeError with its stderr if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", module, json.dumps(spec)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"python -m {module} {spec} (env {env}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def is_child() -> bool:
    """Whether `run_child` started this process (its one argument is a JSON object)."""
    return len(sys.argv) == 2 and sys.argv[1].startswith("{")


def child_main(measure: Callable[[dict[str, Any]], Any]) -> None:
    """The child's side of `run_child`: pin the CPUs, measure, print the JSON result."""
    spec = json.loads(sys.argv[1])
    if "cores" in spec:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: spec["cores"]])
    print(json.dumps(measure(spec)))
