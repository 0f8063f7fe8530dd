"""Tests of jaxbp.run.stop: SIGINT and SIGTERM ask for a stop after the epoch; a second
stops now."""

import os
import signal
import threading

import pytest

from jaxbp.run.stop import RunInterruptedError, stop_signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_sets_the_request_and_a_second_one_stops_now(signum):
    before = signal.getsignal(signum)
    with stop_signals() as stop:
        assert stop.signum is None
        os.kill(os.getpid(), signum)
        assert stop.signum == signum
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signum)
    assert signal.getsignal(signum) is before


def test_off_the_main_thread_no_handler_is_set():
    seen = []

    def run():
        with stop_signals() as stop:
            seen.append((stop.signum, signal.getsignal(signal.SIGTERM)))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [(None, before)]


def test_run_interrupted_error_names_the_signal_and_the_epoch():
    error = RunInterruptedError(signal.SIGTERM, {"epochs": 3})
    assert str(error) == "stopped by SIGTERM after epoch 3"
    assert error.signum == signal.SIGTERM and error.summary == {"epochs": 3}
