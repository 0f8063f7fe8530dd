"""The machine, and the child processes of measurements on k CPUs or N forced devices.

XLA fixes its thread pool (from the CPUs the process may use) and its CPU devices (from
``XLA_FLAGS``) when its backend starts, so each such measurement runs in a child: `run_child`
starts ``python -m MODULE SPEC`` (SPEC a JSON object) and the module's `child_main` pins itself
to ``spec["cores"]`` CPUs, when given, before JAX starts, then prints its JSON result last.
"""

import contextlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import jax  # importing JAX does not start a backend

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (the platform's name elsewhere)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
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
