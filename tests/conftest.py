"""Shared fixtures.

float64 is switched on per test, never for the whole session: other test modules run in the
same pytest process (and xdist worker), so the setting must come back as it was.
`jax.enable_x64` is a context manager that restores the previous value on exit.
"""

import jax
import pytest
from trained_runs import train_on_first_use


@pytest.fixture
def x64():
    """Runs one test with ``jax_enable_x64`` on, restoring the previous setting afterwards."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Trains each run of `trained_runs.RUNS` on first use, once per test module:
    name -> (workdir, config, summary)."""
    return train_on_first_use(tmp_path_factory.mktemp("runs"))
