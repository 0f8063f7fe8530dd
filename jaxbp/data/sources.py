"""The one registry of data sets: where each comes from, what it takes, and how it trains.

`SOURCES` holds one `Source` per data set name, and everything that knows a data set reads
it: `jaxbp.data.load_dataset` (the loader, the arguments it takes and needs),
`jaxbp.run.config` (the training settings that differ from the defaults, ``recipe``) and
`jaxbp.run.config_checks` (the fields a data set takes and needs). A new data set is one
entry here and, where it has no loader yet, one function.

A loader returns a `Raw`: the examples before any split, labels as ints 0..C-1 for
classification. `jaxbp.data.datasets` checks, splits and standardises it.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from jaxbp.data.csv_file import read_csv_data, read_csv_test_data
from jaxbp.data.idx import read_mnist_files
from jaxbp.data.npz_file import read_npz_data
from jaxbp.data.targets import read_targets

DEFAULT_NUM_SAMPLES = 1000  # enough to see a decision boundary; trains in seconds on a CPU
_MOONS_NOISE = 0.2  # the moons overlap a little, so 100% accuracy means overfitting
_SPIRAL_NOISE = 0.3  # arms lie pi apart radially, so this keeps them separable but not trivially
_TEACHER_SIZES = (8, 16)  # teacher input width and tanh hidden width
_TEACHER_NOISE = 0.1  # target noise std; sets the best achievable test loss
FASHION_NAMES: tuple[str, ...] = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat")
FASHION_NAMES += ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class Raw(NamedTuple):
    """A loader's output before splitting: labels are ints 0..C-1 for classification."""

    x: np.ndarray  # (n, ...) features; flattened to (n, num_features) later
    y: np.ndarray  # (n,) int labels, or (n,) / (n, k) float regression targets
    task: str
    class_names: tuple[str, ...] | None = None
    # The source's own (x_test, y_test), if it has one (MNIST, some npz files).
    test: tuple[np.ndarray, np.ndarray] | None = None
    feature_names: tuple[str, ...] | None = None  # None: x0, x1, ... over the flattened x


class Request(NamedTuple):
    """What `jaxbp.data.load_dataset` was asked for, as a loader reads it."""

    name: str
    rng: np.random.Generator  # the generators' draws (the split has its own)
    num_samples: int
    data_dir: str | None
    path: str | None
    target_column: str | None
    task: str  # what a user file's target is: one of jaxbp.data.targets.TASKS
    test_path: str | None  # a csv's own test file


class Source(NamedTuple):
    """One data set.

    Attributes:
      load: ``Request -> Raw``.
      takes: the `jaxbp.data.load_dataset` arguments it uses beyond the name (``path``,
        ``target_column``, ``test_path``, ``data_dir``, ``num_samples``); any other is
        refused.
      needs: those of ``takes`` it cannot do without.
      recipe: the training settings (`jaxbp.run.config.Config` fields) that differ from the
        defaults for it, so that its name alone gives a good run.
      split: False for a set too small to split (xor's 4 points): the whole set is then
        every split.
      per_feature_scale: False to standardise with one mean and std over all features
        (MNIST: per-pixel statistics blow up the rarely-inked border pixels).
      task: the task of a built-in set; None for the user's files, whose target decides
        (`jaxbp.data.targets`).
    """

    load: Callable[[Request], Raw]
    takes: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    recipe: dict[str, Any] = {}
    split: bool = True
    per_feature_scale: bool = True
    task: str | None = None


def _sklearn(loader: str, task: str, **fields: Any) -> Source:
    """scikit-learn's bundled set ``loader`` (e.g. ``load_iris``) as a `Source`."""

    def load(request: Request) -> Raw:
        if request.name == "digits" and (shipped := read_shipped_digits()) is not None:
            return shipped
        bunch = getattr(_sklearn_datasets(), loader)()
        names = tuple(str(c) for c in bunch.target_names) if task == "classification" else None
        features = tuple(str(c) for c in bunch.feature_names) if "feature_names" in bunch else None
        return Raw(bunch.data, bunch.target, task, names, feature_names=features)

    return Source(load, task=task, **fields)


def read_shipped_digits() -> Raw | None:
    """scikit-learn's digits, read from the file it ships without importing scikit-learn.

    ``load_digits`` reads this same file (``sklearn/datasets/data/digits.csv.gz``: 1797 rows
    of 64 pixel counts and the label) into the same arrays and names; importing the package
    to call it takes longer than training the default network on it. None when the file is
    not where it should be or not what it should be: then ``load_digits`` is called.
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = next(iter(spec.submodule_search_locations))
    try:
        table = np.loadtxt(os.path.join(folder, "datasets", "data", "digits.csv.gz"), delimiter=",")
    except (OSError, ValueError):
        return None
    if table.shape != (1797, 65):
        return None
    pixels = tuple(f"pixel_{row}_{col}" for row in range(8) for col in range(8))
    labels = tuple(str(k) for k in range(10))
    target = table[:, -1].astype(int)
    return Raw(table[:, :-1], target, "classification", labels, feature_names=pixels)


def _sklearn_datasets():
    try:
        from sklearn import datasets
    except ImportError as e:
        raise ImportError(
            "This dataset needs scikit-learn; install it with `pip install scikit-learn`."
        ) from e
    return datasets


def make_xor(request: Request) -> Raw:
    """The 4-point truth table."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    return Raw(x, np.array([0, 1, 1, 0]), "classification", ("0", "1"))


def make_moons(request: Request) -> Raw:
    """scikit-learn's two interleaved half circles, with noise."""
    seed = int(request.rng.integers(2**31))
    moons = _sklearn_datasets().make_moons
    x, y = moons(request.num_samples, noise=_MOONS_NOISE, random_state=seed)
    return Raw(x, y, "classification", ("0", "1"))


def make_spirals(request: Request) -> Raw:
    """Two interleaved 1.5-turn spirals; arm 1 is arm 0 rotated by pi."""
    n, rng = request.num_samples, request.rng
    y = np.arange(n) % 2
    t = np.sqrt(rng.uniform(size=n)) * 3 * np.pi  # sqrt: points evenly spaced along the arm
    angle = t + np.pi * y
    x = t[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return Raw(x + _SPIRAL_NOISE * rng.standard_normal((n, 2)), y, "classification", ("0", "1"))


def make_teacher(request: Request) -> Raw:
    """y = tanh(x W1 + b1) W2 + b2 + noise, with the teacher drawn before the data."""
    n, rng = request.num_samples, request.rng
    n_in, n_hidden = _TEACHER_SIZES
    W1 = rng.standard_normal((n_in, n_hidden)) / np.sqrt(n_in)
    b1 = 0.1 * rng.standard_normal(n_hidden)
    W2 = rng.standard_normal((n_hidden, 1)) / np.sqrt(n_hidden)
    b2 = 0.1 * rng.standard_normal(1)
    x = rng.standard_normal((n, n_in))
    y = np.tanh(x @ W1 + b1) @ W2 + b2 + _TEACHER_NOISE * rng.standard_normal((n, 1))
    return Raw(x, y, "regression")


def load_mnist(request: Request) -> Raw:
    """MNIST or Fashion-MNIST from the IDX files in ``data_dir``, pixels scaled to [0, 1]."""
    x_train, y_train, x_test, y_test = read_mnist_files(request.name, request.data_dir)
    fashion = request.name == "fashion_mnist"
    names = FASHION_NAMES if fashion else tuple(str(i) for i in range(10))
    pixels = tuple(f"pixel{i}" for i in range(math.prod(x_train.shape[1:])))
    scale = np.float32(1 / 255)  # float32 keeps 60000 x 784 pixels at 188 MB
    test = (x_test * scale, y_test.astype(np.int64))
    return Raw(x_train * scale, y_train.astype(np.int64), "classification", names, test, pixels)


def _user_file(request: Request) -> str:
    path = request.path
    assert path is not None  # a needed argument: load_dataset refuses its absence first
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{request.name} file {path!r} does not exist; check the path.")
    return path


def load_npz(request: Request) -> Raw:
    """The user's npz: ``x``, ``y`` or ``x_train``, ``y_train``, ``x_test``, ``y_test``."""
    path = _user_file(request)
    arrays = read_npz_data(path)
    if len(arrays) == 2:
        return Raw(arrays["x"], *read_targets(arrays["y"], request.task, repr(path)))
    x_train, y_train, x_test, y_test = arrays.values()
    return Raw(x_train, *_train_and_test(y_train, y_test, request.task, path, x_test))


def load_csv(request: Request) -> Raw:
    """The user's csv: a header row, numeric features and the ``target_column``; and its
    own test csv, ``test_path``, with the same columns."""
    path = _user_file(request)
    x, y, features = read_csv_data(path, request.target_column)
    if request.test_path is None:
        return Raw(x, *read_targets(y, request.task, repr(path)), feature_names=features)
    assert request.target_column is not None  # read_csv_data refused its absence
    test_path = _user_file(request._replace(path=request.test_path))
    x_test, y_test = read_csv_test_data(test_path, request.target_column, features, path)
    if (y.dtype.kind == "U") != (y_test.dtype.kind == "U"):
        kinds = ("class names", "numbers") if y.dtype.kind == "U" else ("numbers", "class names")
        raise ValueError(
            f"{test_path!r}: target column {request.target_column!r} holds {kinds[1]}, but in "
            f"the training file {path!r} it holds {kinds[0]}; make them the same kind."
        )
    return Raw(x, *_train_and_test(y, y_test, request.task, path, x_test), features)


def _train_and_test(
    y_train: np.ndarray, y_test: np.ndarray, task: str, path: str, x_test: np.ndarray
) -> tuple[np.ndarray, str, tuple[str, ...] | None, tuple[np.ndarray, np.ndarray]]:
    """(y_train, task, class_names, (x_test, y_test)), both targets read as one label set."""
    y, task, names = read_targets(np.concatenate([y_train, y_test]), task, repr(path))
    return y[: len(y_train)], task, names, (x_test, y[len(y_train) :])


def _generated(make: Callable[[Request], Raw], task: str, **recipe: Any) -> Source:
    return Source(make, takes=("num_samples",), recipe=recipe, task=task)


_IDX: dict[str, Any] = dict(
    takes=("data_dir",), needs=("data_dir",), per_feature_scale=False, task="classification"
)
_MNIST_RECIPE = dict(
    hidden_sizes=(256,), activation="relu", batch_size=128, epochs=10, learning_rate=1e-3
)
SOURCES: dict[str, Source] = {
    "digits": _sklearn("load_digits", "classification"),
    # The network of eqs. (1.1)-(1.9): one sigmoid unit on the 30 features, MSE, plain SGD.
    "breast_cancer": _sklearn(
        "load_breast_cancer",
        "classification",
        recipe=dict(
            hidden_sizes=(),
            output_activation="sigmoid",
            loss="mse",
            learning_rate=0.05,
            schedule="constant",
            epochs=20,
            optimizer="sgd",
        ),
    ),
    "iris": _sklearn(
        "load_iris",
        "classification",
        recipe=dict(hidden_sizes=(16,), batch_size=8, epochs=60, learning_rate=1e-2),
    ),
    "wine": _sklearn(
        "load_wine",
        "classification",
        recipe=dict(hidden_sizes=(16,), batch_size=8, epochs=40, learning_rate=1e-2),
    ),
    "diabetes": _sklearn(
        "load_diabetes",
        "regression",
        recipe=dict(hidden_sizes=(32,), activation="relu", epochs=60),
    ),
    # The classic 2-2-1 sigmoid network on the 4 points of the truth table, full-batch SGD.
    # About 70% of random inits solve it; the rest stall on the known plateau at 50-75%
    # accuracy: seed 0 solves it.
    "xor": Source(
        make_xor,
        split=False,
        task="classification",
        recipe=dict(
            hidden_sizes=(2,),
            activation="sigmoid",
            optimizer="sgd",
            learning_rate=2.0,
            batch_size=4,
            epochs=2000,
            schedule="constant",
            checkpoint_interval=500,
            eval_interval=100,
        ),
    ),
    "moons": _generated(make_moons, "classification", hidden_sizes=(16,), epochs=40),
    "spirals": _generated(
        make_spirals,
        "classification",
        hidden_sizes=(64, 64),
        activation="relu",
        epochs=100,
        checkpoint_interval=20,
        eval_interval=5,
    ),
    "teacher": _generated(make_teacher, "regression", hidden_sizes=(32,), learning_rate=1e-2),
    # A user's table is often a few hundred rows: 30 epochs of them are too few steps.
    "npz": Source(load_npz, ("path",), ("path",), dict(epochs=100)),
    "csv": Source(
        load_csv,
        ("path", "target_column", "test_path"),
        ("path", "target_column"),
        dict(epochs=100),
    ),
    "mnist": Source(load_mnist, **_IDX, recipe=_MNIST_RECIPE),
    "fashion_mnist": Source(load_mnist, **_IDX, recipe=_MNIST_RECIPE),
}
DATASETS: tuple[str, ...] = tuple(SOURCES)


def users_of(argument: str) -> tuple[str, ...]:
    """The data sets that take ``argument``, in `DATASETS` order."""
    return tuple(name for name, source in SOURCES.items() if argument in source.takes)
