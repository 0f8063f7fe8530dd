"""Tiny runs trained for the tests of jaxbp.run.inference and jaxbp.run.evaluation (a few
epochs each), and the class indices of their targets. The ``trained`` fixture of conftest.py
serves them."""

import numpy as np

from jaxbp.run import config as config_lib
from jaxbp.run import loop

RUNS = {  # name -> make_config arguments: three tasks, a float64 run and a member set
    "iris": ("iris", {"epochs": 3}),  # three classes, softmax
    "moons": ("moons", {"epochs": 3, "num_samples": 200}),  # two classes, one sigmoid unit
    "diabetes": ("diabetes", {"epochs": 3}),  # regression, one target
    "iris64": ("iris", {"epochs": 3, "precision": "float64"}),
    "iris_pair": ("iris", {"epochs": 3, "repeats": 2}),  # a member set of two seeds
}


def train_on_first_use(root):
    """``get(name) -> (workdir, config, summary)``, training the run of `RUNS` under ``root``
    the first time it is asked for."""
    done = {}

    def get(name):
        if name not in done:
            dataset, overrides = RUNS[name]
            config = config_lib.make_config(dataset, **overrides)
            workdir = str(root / name)
            summary = loop.train_and_evaluate(config, workdir, log=lambda _: None)
            done[name] = workdir, config, summary
        return done[name]

    return get


def true_indices(y):
    """Class indices of ``(n, 1)`` targets (``> 0.5``) or one-hot ``(n, C)`` ones (argmax)."""
    return (y[:, 0] > 0.5).astype(int) if y.shape[1] == 1 else np.argmax(y, axis=1)
