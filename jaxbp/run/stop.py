"""A clean stop on SIGINT or SIGTERM: the run ends after the current epoch.

`stop_signals` installs the handlers for the length of a training loop and gives a
`StopRequest` the loop reads after each epoch: the first signal sets its ``signum`` (the loop
then writes a checkpoint, curves and a summary marked ``interrupted`` and raises
`RunInterruptedError`), a second one raises `KeyboardInterrupt` at once. Off the main
thread, where Python sets no signal handlers, the request is never set.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class RunInterruptedError(Exception):
    """SIGINT or SIGTERM stopped the run at a clean point; ``summary`` was written."""

    def __init__(self, signum: int, summary: dict[str, Any]):
        self.signum, self.summary = signum, summary
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after epoch {summary['epochs']}"
        )


class StopRequest:
    """The signal that asked the run to stop (``signum``), None while none has."""

    signum: int | None = None


@contextlib.contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """SIGINT and SIGTERM ask the loop to stop after the epoch; a second one stops now."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        if request.signum is not None:
            raise KeyboardInterrupt
        request.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
