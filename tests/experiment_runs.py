"""An experiments/ script run as users run it: ``python -m experiments.NAME FLAGS`` in a
subprocess from the repository root (absl flags are global, so each run needs its own
process)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_experiment(name, *flags, timeout=300, env=None):
    """Runs ``experiments.<name>`` to its end and returns the `subprocess.CompletedProcess`.

    Args:
      name: the module under experiments/, e.g. ``"train"``.
      *flags: its command-line words.
      timeout: seconds before `subprocess.TimeoutExpired`.
      env: variables set on top of this process's environment (``PYTHONPATH`` is the root).

    Returns:
      The finished process, with ``stdout`` and ``stderr`` as text.
    """
    return subprocess.run(
        [sys.executable, "-m", f"experiments.{name}", *flags],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
