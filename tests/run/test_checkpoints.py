"""Tests of jaxbp.run.checkpoints: failed writes and damaged reads are one line, not orbax's
tracebacks."""

import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxbp.run import checkpoints


def _tree(n_leaves=24, size=8):
    return {f"a{i:02d}": np.full((size,), float(i), np.float32) for i in range(n_leaves)}


class _Unraisable:
    def __init__(self, value):
        self.exc_type, self.exc_value, self.exc_traceback = type(value), value, None
        self.err_msg, self.object = None, None


def test_the_hook_drops_closed_loop_callbacks_and_passes_everything_else():
    seen = []
    hook = checkpoints._drop_closed_loop_callbacks(seen.append)
    hook(_Unraisable(RuntimeError("Event loop is closed")))
    assert seen == []
    other = _Unraisable(RuntimeError("something else"))
    hook(other)
    hook(_Unraisable(ValueError("Event loop is closed")))
    assert len(seen) == 2 and seen[0] is other


def test_orbax_warnings_are_filtered_and_other_loggers_kept():
    checkpoints._quiet_orbax()
    checkpoints._quiet_orbax()  # idempotent: one filter
    absl_logger = logging.getLogger("absl")
    filters = [f for f in absl_logger.filters if isinstance(f, checkpoints._OrbaxLogFilter)]
    assert len(filters) == 1

    def record(path, level):
        return logging.LogRecord("absl", level, path, 1, "msg", None, None)

    orbax_file = os.path.join(os.sep, "site-packages", "orbax", "checkpoint", "future.py")
    assert not filters[0].filter(record(orbax_file, logging.ERROR))
    assert not filters[0].filter(record(orbax_file, logging.WARNING))
    assert filters[0].filter(record(orbax_file, logging.INFO))
    assert filters[0].filter(record(os.path.join(os.sep, "jaxbp", "x.py"), logging.ERROR))


_READ_A_DAMAGED_CHECKPOINT = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from jaxbp.run import checkpoints
    checkpointer = checkpoints.Checkpointer(sys.argv[1])
    tree = {f"a{i:02d}": np.full((8,), float(i), np.float32) for i in range(24)}
    checkpointer.save(1, tree, {"n": 1})
    checkpointer.save(2, tree, {"n": 2})
    os.remove(os.path.join(sys.argv[1], "2", "state", "manifest.ocdbt"))
    epoch, _, meta = checkpointer.restore_newest_readable(tree)
    time.sleep(0.3)  # the stray callbacks, when the race happens, come from other threads
    print("restored", epoch, meta)
    """
)


def _stdout_of_a_clean_run(script, *args):
    """``script``'s stdout, asserting it exited 0 and printed no traceback."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return result.stdout


def test_a_damaged_checkpoint_is_set_aside_without_closed_loop_tracebacks(tmp_path):
    # A subprocess: the tracebacks (not in every run: a race between threads) come through
    # the unraisable-exception hook, which pytest takes over in-process; the hook itself is
    # pinned above.
    stdout = _stdout_of_a_clean_run(_READ_A_DAMAGED_CHECKPOINT, str(tmp_path / "c"))
    assert "checkpoint of epoch 2 is damaged" in stdout
    assert "restored 1 {'n': 1}" in stdout


def test_a_failed_write_is_one_error_naming_the_cause(tmp_path, monkeypatch):
    checkpointer = checkpoints.Checkpointer(str(tmp_path / "c"))
    checkpointer.save(1, _tree(), {})

    def full(*args, **kwargs):
        raise ValueError('RESOURCE_EXHAUSTED: Error writing "x": No space left on device [28]')

    monkeypatch.setattr(checkpointer._manager, "save", full)
    with pytest.raises(checkpoints.CheckpointWriteError) as raised:
        checkpointer.save(2, _tree(), {})
    message = str(raised.value)
    assert "epoch 2" in message and "(No space left on device)" in message
    assert "epochs 1) are intact" in message and "run the same command again" in message
    assert "\n" not in message


_WRITE_BEYOND_A_FILE_SIZE_LIMIT = textwrap.dedent(
    """
    import resource, signal, sys
    import numpy as np
    from jaxbp.run import checkpoints
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    checkpointer = checkpoints.Checkpointer(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (32_000, 32_000))
    try:
        noise = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
        checkpointer.save(1, {"w": noise}, {})
    except checkpoints.CheckpointWriteError as e:
        print(e)
    """
)


def test_a_write_the_os_refuses_prints_no_traceback(tmp_path):
    stdout = _stdout_of_a_clean_run(_WRITE_BEYOND_A_FILE_SIZE_LIMIT, str(tmp_path / "c"))
    assert "(File too large)" in stdout
    assert "no checkpoint had been written before it" in stdout
