"""Datasets as standardised numpy arrays, split into train / validation / test.

The contract, stated once: every loader returns a `Dataset` whose `x_*` are `(n, num_features)`
and whose `y_*` are `(n, num_outputs)`, both of the requested float dtype. Inputs are
standardised with statistics of the training split only. Targets are encoded as

* multiclass classification: one-hot, `(n, num_classes)`;
* binary classification: `(n, 1)` with values in {0, 1} (for a sigmoid output);
* regression: `(n, num_targets)`, standardised with training statistics (`y_mean`, `y_scale`).

Splits are a deterministic function of `seed`; classification splits are stratified. Nothing is
ever downloaded: scikit-learn's bundled sets ship inside the package, the synthetic sets are
generated here, and MNIST / Fashion-MNIST are read from IDX files you provide.

What cannot be read faithfully is refused before any split is made, with a one-line `ValueError`
(`FileNotFoundError` for a missing file) that names the file, what was expected and the fix: the
wrong kind of file, a truncated or corrupt file, NaN or ±inf anywhere, complex or non-numeric
features, labels out of range, a target column that is only partly numeric, duplicate column
names, a single class, and arguments the chosen data set does not use. Nothing is unpickled.
The files are read and checked by `jaxbp.data.files` (npz, csv, new examples' features),
`jaxbp.data.idx` (MNIST's IDX files) and `jaxbp.data.checks`; this module loads, infers the
task, splits and standardises.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import NamedTuple

import numpy as np

from jaxbp.data.checks import check_features, check_finite, flat
from jaxbp.data.files import read_csv_data, read_npz_data
from jaxbp.data.idx import read_mnist_files


class Dataset(NamedTuple):
    """A dataset split three ways: `x_*` are `(n, num_features)`, `y_*` are `(n, num_outputs)`.

    `feature_names` names the columns of `x_*`: the csv header's feature columns, scikit-learn's
    `feature_names`, `pixel0`, `pixel1`, ... for MNIST, and `x0`, `x1`, ... otherwise. Pass it to
    `jaxbp.data.files.read_features` to read new examples in the same column order.
    """

    name: str
    task: str  # "classification" or "regression"
    x_train: np.ndarray  # (n_train, num_features), standardised with train statistics
    y_train: np.ndarray  # (n_train, num_outputs), encoded as in the module docstring
    x_val: np.ndarray  # (n_val, num_features)
    y_val: np.ndarray  # (n_val, num_outputs)
    x_test: np.ndarray  # (n_test, num_features)
    y_test: np.ndarray  # (n_test, num_outputs)
    num_classes: int | None  # classification only
    class_names: tuple[str, ...] | None  # classification only; index i names label i
    x_mean: np.ndarray  # (num_features,) float64; raw x = x * x_scale + x_mean
    x_scale: np.ndarray  # (num_features,) float64, 1 for constant features
    y_mean: np.ndarray | None  # (num_outputs,) float64, regression only
    y_scale: np.ndarray | None  # (num_outputs,) float64, regression only
    feature_names: tuple[str, ...]  # (num_features,) names of the columns of x_*

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def num_outputs(self) -> int:
        return self.y_train.shape[1]


class _Raw(NamedTuple):
    """A loader's output before splitting: labels are ints 0..C-1 for classification."""

    x: np.ndarray  # (n, ...) features; flattened to (n, num_features) later
    y: np.ndarray  # (n,) int labels, or (n,) / (n, k) float regression targets
    task: str
    class_names: tuple[str, ...] | None = None
    # The source's own (x_test, y_test), if it has one (MNIST, some npz files).
    test: tuple[np.ndarray, np.ndarray] | None = None
    feature_names: tuple[str, ...] | None = None  # None: x0, x1, ... over the flattened x


_SKLEARN = {  # name -> (sklearn.datasets loader, task); all ship with scikit-learn
    "digits": ("load_digits", "classification"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "iris": ("load_iris", "classification"),
    "wine": ("load_wine", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}
_GENERATED = ("moons", "spirals", "teacher")  # the sets that take num_samples
_FASHION_NAMES: tuple[str, ...] = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat")
_FASHION_NAMES += ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DATASETS: tuple[str, ...] = (*_SKLEARN, "xor", *_GENERATED, "npz", "csv", "mnist", "fashion_mnist")
_USED_BY = {  # load_dataset argument -> the data sets it applies to; the rest refuse it
    "path": ("npz", "csv"),
    "target_column": ("csv",),
    "data_dir": ("mnist", "fashion_mnist"),
}

_DEFAULT_NUM_SAMPLES = 1000  # enough to see a decision boundary; trains in seconds on a CPU
_MOONS_NOISE = 0.2  # the moons overlap a little, so 100% accuracy means overfitting
_SPIRAL_NOISE = 0.3  # arms lie pi apart radially, so this keeps them separable but not trivially
_TEACHER_SIZES = (8, 16)  # teacher input width and tanh hidden width
_TEACHER_NOISE = 0.1  # target noise std; sets the best achievable test loss
_MAX_CLASSES = 20  # an integer target with at most this many values is read as class labels
_MIN_STD = 1e-8  # a feature with a smaller std is treated as constant and gets scale 1


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    data_dir: str | None = None,
    path: str | None = None,
    target_column: str | None = None,
    num_samples: int | None = None,
    dtype: type | np.dtype = np.float32,
) -> Dataset:
    """Loads, splits, standardises and encodes a dataset.

    `xor` is the 4-point truth table used as train, validation and test alike (4 points cannot be
    split). `mnist`, `fashion_mnist` and an `npz` with `x_test`/`y_test` keep their own test set;
    validation is then `val_fraction` of their training set and `test_fraction` is unused.
    MNIST pixels are scaled to [0, 1] and standardised with one mean/std over all pixels, since
    per-pixel statistics blow up the rarely-inked border pixels.

    Args:
      name: one of `DATASETS`.
      seed: seeds the split and the synthetic generators (`moons`, `spirals`, `teacher`; the
        teacher network is fixed by `seed` alone, whatever `num_samples`).
      val_fraction: share of examples for validation, in (0, 1).
      test_fraction: share of examples for test, in (0, 1); `val_fraction + test_fraction < 1`.
      data_dir: `mnist`/`fashion_mnist` only: directory with the four IDX files (optionally
        `.gz`); labels must be integers 0..9.
      path: `npz`/`csv` only. `npz`: arrays `x`, `y` or `x_train`, `y_train`, `x_test`, `y_test`,
        of shape `(n, ...)` and `(n,)`, `(n, k)` or one-hot `(n, C)`; x real numbers (bool is
        0/1). `csv`: header row of distinct names, numeric features. A target of integer or
        string dtype, one-hot, or integer-valued with at most 20 distinct values is read as class
        labels; anything else is a regression target. A csv target column is numeric if every
        cell is a number, class names if no cell is; a mix is refused.
      target_column: `csv` only: the name of the target column; every other column is a feature.
      num_samples: `moons`, `spirals`, `teacher` only: number of examples (default 1000).
      dtype: float dtype of the returned `x_*` and `y_*`.

    Returns:
      A `Dataset`.

    Raises:
      FileNotFoundError: a file or IDX file is missing.
      ValueError: an argument is out of range or does not apply to `name`, or the data cannot be
        read faithfully (see the module docstring); the message names the file and the fix.

    Examples:
      >>> ds = load_dataset("xor")
      >>> ds.x_train.shape, ds.y_train.shape, ds.task, ds.feature_names
      ((4, 2), (4, 1), 'classification', ('x0', 'x1'))
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    given = {"path": path, "target_column": target_column, "data_dir": data_dir}
    for arg, users in _USED_BY.items():
        if given[arg] is not None and name not in users:
            raise ValueError(
                f"{arg}={given[arg]!r} was given for {name!r}, but only {' and '.join(users)} "
                f"use {arg}; drop it for {name!r}."
            )
    for arg, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{arg} must be in (0, 1), got {value}; pass e.g. 0.1.")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 to leave training data, got "
            f"{val_fraction} + {test_fraction}; make them smaller."
        )
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise ValueError(f"dtype must be a float dtype, got {dtype}; pass e.g. np.float32.")
    if num_samples is not None and (name not in _GENERATED or num_samples < 1):
        raise ValueError(
            f"num_samples={num_samples} was given for {name!r}; it sets the size of the generated "
            f"sets {_GENERATED} and must be >= 1. Drop it for other datasets."
        )
    gen_ss, split_ss = np.random.SeedSequence(seed).spawn(2)
    raw = _load_raw(name, np.random.default_rng(gen_ss), num_samples, data_dir, path, target_column)
    source = repr(path) if path is not None else f"dataset {name!r}"
    _check_raw(raw, source, fix="use num_samples >= 2" if name in _GENERATED else None)
    return _assemble(name, raw, np.random.default_rng(split_ss), val_fraction, test_fraction, dtype)


def _load_raw(name, rng, num_samples, data_dir, path, target_column) -> _Raw:
    """Dispatches to the loader for `name`."""
    n = _DEFAULT_NUM_SAMPLES if num_samples is None else num_samples
    if name == "digits" and (shipped := _read_shipped_digits()) is not None:
        return shipped
    if name in _SKLEARN:
        bunch = getattr(_sklearn_datasets(), _SKLEARN[name][0])()
        task = _SKLEARN[name][1]
        names = tuple(str(c) for c in bunch.target_names) if task == "classification" else None
        features = tuple(str(c) for c in bunch.feature_names) if "feature_names" in bunch else None
        return _Raw(bunch.data, bunch.target, task, names, feature_names=features)
    if name == "xor":
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
        return _Raw(x, np.array([0, 1, 1, 0]), "classification", ("0", "1"))
    if name == "moons":
        seed = int(rng.integers(2**31))
        x, y = _sklearn_datasets().make_moons(n, noise=_MOONS_NOISE, random_state=seed)
        return _Raw(x, y, "classification", ("0", "1"))
    if name == "spirals":
        return _make_spirals(n, rng)
    if name == "teacher":
        return _make_teacher(n, rng)
    if name in ("mnist", "fashion_mnist"):
        return _load_mnist(name, data_dir)
    if path is None:
        raise ValueError(f"Dataset {name!r} needs path=...; pass the {name} file to load.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name} file {path!r} does not exist; check the path.")
    return _load_npz(path) if name == "npz" else _load_csv(path, target_column)


def _read_shipped_digits() -> _Raw | None:
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
    return _Raw(table[:, :-1], target, "classification", labels, feature_names=pixels)


def _sklearn_datasets():
    try:
        from sklearn import datasets
    except ImportError as e:
        raise ImportError(
            "This dataset needs scikit-learn; install it with `pip install scikit-learn`."
        ) from e
    return datasets


def _make_spirals(n: int, rng: np.random.Generator) -> _Raw:
    """Two interleaved 1.5-turn spirals; arm 1 is arm 0 rotated by pi."""
    y = np.arange(n) % 2
    t = np.sqrt(rng.uniform(size=n)) * 3 * np.pi  # sqrt: points evenly spaced along the arm
    angle = t + np.pi * y
    x = t[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return _Raw(x + _SPIRAL_NOISE * rng.standard_normal((n, 2)), y, "classification", ("0", "1"))


def _make_teacher(n: int, rng: np.random.Generator) -> _Raw:
    """y = tanh(x W1 + b1) W2 + b2 + noise, with the teacher drawn before the data."""
    n_in, n_hidden = _TEACHER_SIZES
    W1 = rng.standard_normal((n_in, n_hidden)) / np.sqrt(n_in)
    b1 = 0.1 * rng.standard_normal(n_hidden)
    W2 = rng.standard_normal((n_hidden, 1)) / np.sqrt(n_hidden)
    b2 = 0.1 * rng.standard_normal(1)
    x = rng.standard_normal((n, n_in))
    y = np.tanh(x @ W1 + b1) @ W2 + b2 + _TEACHER_NOISE * rng.standard_normal((n, 1))
    return _Raw(x, y, "regression")


def _load_mnist(name: str, data_dir: str | None) -> _Raw:
    x_train, y_train, x_test, y_test = read_mnist_files(name, data_dir)
    names = _FASHION_NAMES if name == "fashion_mnist" else tuple(str(i) for i in range(10))
    pixels = tuple(f"pixel{i}" for i in range(math.prod(x_train.shape[1:])))
    scale = np.float32(1 / 255)  # float32 keeps 60000 x 784 pixels at 188 MB
    test = (x_test * scale, y_test.astype(np.int64))
    return _Raw(x_train * scale, y_train.astype(np.int64), "classification", names, test, pixels)


def _load_npz(path: str) -> _Raw:
    arrays = read_npz_data(path)
    if len(arrays) == 2:
        return _Raw(arrays["x"], *_infer_task(arrays["y"]))
    x_train, y_train, x_test, y_test = arrays.values()
    y, task, names = _infer_task(np.concatenate([y_train, y_test]))  # one label set
    return _Raw(x_train, y[: len(y_train)], task, names, (x_test, y[len(y_train) :]))


def _load_csv(path: str, target_column: str | None) -> _Raw:
    x, y, features = read_csv_data(path, target_column)
    return _Raw(x, *_infer_task(y), feature_names=features)


def _check_raw(raw: _Raw, source: str, fix: str | None) -> None:
    """Refuses a loader's output that cannot be trained on faithfully, whatever its source."""
    pairs = [("x", "y", raw.x, raw.y)]
    pairs += [] if raw.test is None else [("x_test", "y_test", *raw.test)]
    for x_name, y_name, x, y in pairs:
        if len(x) == 0:
            raise ValueError(f"{source}: {x_name} holds no examples; pass data with examples.")
        check_features(x, source, x_name)
        if raw.task == "regression":
            check_finite(np.asarray(y), source, y_name)
    if raw.test is not None and flat(raw.test[0]).shape[1] != flat(raw.x).shape[1]:
        raise ValueError(
            f"{source}: x_test has {flat(raw.test[0]).shape[1]} features but x has "
            f"{flat(raw.x).shape[1]}; expected the same features. Pass matching data."
        )
    if raw.task == "classification" and len(np.unique(raw.y)) < 2:
        label = raw.class_names[int(raw.y[0])] if raw.class_names else str(raw.y[0])
        raise ValueError(
            f"{source}: all {len(raw.y)} training examples have label {label!r}; classification "
            f"needs at least two classes. {fix or 'Check the target, or add other classes'}."
        )


def _infer_task(y: np.ndarray) -> tuple[np.ndarray, str, tuple[str, ...] | None]:
    """Returns (labels or targets, task, class_names); see load_dataset's `target_column`."""
    if y.ndim == 2 and y.shape[1] > 1:
        if np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():  # one-hot
            return y.argmax(axis=1), "classification", tuple(str(c) for c in range(y.shape[1]))
        return y.astype(np.float64), "regression", None
    y = y.reshape(len(y))
    try:
        values = y.astype(np.float64)
    except ValueError:  # non-numeric: class names
        classes, labels = np.unique(y.astype(str), return_inverse=True)
        return labels, "classification", tuple(str(c) for c in classes)
    classes, labels = np.unique(values, return_inverse=True)
    few_integers = np.all(classes == np.round(classes)) and len(classes) <= _MAX_CLASSES
    if y.dtype.kind in "biu" or few_integers:
        return labels, "classification", tuple(str(int(c)) for c in classes)
    return values, "regression", None


def _split(
    labels: np.ndarray | None, n: int, val_fraction: float, test_fraction: float, rng
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays (train, val, test); stratified by `labels` when given."""
    groups = (
        [np.arange(n)]
        if labels is None
        else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    )
    sizes = np.array([len(g) for g in groups])
    n_test = _apportion(round(test_fraction * n), sizes)
    n_val = np.minimum(_apportion(round(val_fraction * n), sizes), sizes - n_test)
    parts: tuple[list, list, list] = ([], [], [])
    for group, t, v in zip(groups, n_test, n_val, strict=True):
        group = rng.permutation(group)
        parts[0].append(group[t + v :])
        parts[1].append(group[t : t + v])
        parts[2].append(group[:t])
    return tuple(rng.permutation(np.concatenate(p)) for p in parts)


def _apportion(total: int, sizes: np.ndarray) -> np.ndarray:
    """Splits `total` over groups in proportion to `sizes` (largest remainders get the rest)."""
    quota = total * sizes / sizes.sum()
    counts = np.floor(quota).astype(int)
    counts[np.argsort(counts - quota, kind="stable")[: total - counts.sum()]] += 1
    return counts


def _standardiser(x: np.ndarray, per_feature: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of `x: (n, d)`, each (d,) float64; constant features get scale 1."""
    axis = 0 if per_feature else None
    mean = np.broadcast_to(x.mean(axis=axis, dtype=np.float64), x.shape[1:])
    std = np.broadcast_to(x.std(axis=axis, dtype=np.float64), x.shape[1:])
    return mean.copy(), np.where(std > _MIN_STD, std, 1.0)


def _assemble(
    name: str, raw: _Raw, rng: np.random.Generator, val_fraction: float, test_fraction: float, dtype
) -> Dataset:
    """Splits `raw`, standardises x (and regression y) with train statistics, encodes targets."""
    x = flat(raw.x).astype(dtype, copy=False)
    labels = raw.y if raw.task == "classification" else None
    splits: list[tuple[np.ndarray, np.ndarray]]
    if name == "xor":  # 4 points cannot be split: the truth table is every split
        splits = [(x, raw.y)] * 3
    elif raw.test is None:
        splits = [
            (x[i], raw.y[i]) for i in _split(labels, len(x), val_fraction, test_fraction, rng)
        ]
    else:  # the source's own test set; validation comes out of its training set
        train_val = _split(labels, len(x), val_fraction, 0.0, rng)[:2]
        x_test = flat(raw.test[0]).astype(dtype, copy=False)
        splits = [(x[i], raw.y[i]) for i in train_val] + [(x_test, raw.test[1])]
    for (xs, _), split in zip(splits, ("train", "validation", "test"), strict=True):
        if len(xs) == 0:
            raise ValueError(
                f"{name}: the {split} split is empty ({len(x)} examples, val_fraction="
                f"{val_fraction}, test_fraction={test_fraction}); use more data or larger "
                "fractions."
            )
    x_mean, x_scale = _standardiser(splits[0][0], per_feature=not name.endswith("mnist"))
    y_mean = y_scale = num_classes = None
    if raw.task == "classification":
        assert raw.class_names is not None  # every classification loader names its classes
        num_classes = len(raw.class_names)
        codes = (
            np.eye(num_classes, dtype=dtype)[:, 1:]
            if num_classes == 2
            else np.eye(num_classes, dtype=dtype)
        )
    else:
        y_train = splits[0][1].reshape(len(splits[0][1]), -1)
        y_mean, y_scale = _standardiser(y_train, per_feature=True)

    def encode(y: np.ndarray) -> np.ndarray:
        if raw.task == "classification":
            return codes[y]  # one-hot rows, or the {0, 1} column for binary
        return ((y.reshape(len(y), -1) - y_mean) / y_scale).astype(dtype)

    def standardise(xs: np.ndarray) -> np.ndarray:
        return (xs - x_mean.astype(dtype)) / x_scale.astype(dtype)

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = splits
    features = raw.feature_names or tuple(f"x{i}" for i in range(x.shape[1]))
    if len(features) != x.shape[1]:  # a loader's bug, not the user's
        raise AssertionError(f"{name}: {len(features)} feature names for {x.shape[1]} features")
    return Dataset(
        name,
        raw.task,
        standardise(x_train),
        encode(y_train),
        standardise(x_val),
        encode(y_val),
        standardise(x_test),
        encode(y_test),
        num_classes,
        raw.class_names,
        x_mean,
        x_scale,
        y_mean,
        y_scale,
        features,
    )
