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
The files are read and checked by `jaxbp.data.csv_file`, `jaxbp.data.npz_file`,
`jaxbp.data.idx` (MNIST's IDX files) and `jaxbp.data.checks`; this module loads, infers the
task, splits and standardises.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxbp.data.checks import check_features, check_finite, flat
from jaxbp.data.sources import DATASETS, DEFAULT_NUM_SAMPLES, SOURCES, Raw, Request, users_of
from jaxbp.data.targets import AUTO, TASKS

_NEEDED = {  # a needed argument that is missing -> the fix the error names
    "path": "pass the {name} file to load.",
    "target_column": "pass the name of the column to predict.",
    "data_dir": "pass the directory of its IDX files.",
}


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
    # Where x_test comes from: "split" (test_fraction of the examples), "own" (the data's
    # own test set: MNIST's, an npz's x_test, a csv's test_path) or "all" (xor's 4 points).
    test_source: str = "split"

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def num_outputs(self) -> int:
        return self.y_train.shape[1]


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
    test_path: str | None = None,
    task: str = AUTO,
    num_samples: int | None = None,
    dtype: type | np.dtype = np.float32,
) -> Dataset:
    """Loads, splits, standardises and encodes a dataset.

    `xor` is the 4-point truth table used as train, validation and test alike (4 points cannot be
    split). `mnist`, `fashion_mnist`, an `npz` with `x_test`/`y_test` and a `csv` with a
    `test_path` keep their own test set; validation is then `val_fraction` of their training
    set and `test_fraction` is unused (`Dataset.test_source` says which).
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
        0/1). `csv`: header row of distinct names, numeric features. A csv target column is
        numeric if every cell is a number, class names if no cell is; a mix is refused. What
        the target is follows `task`.
      target_column: `csv` only: the name of the target column; every other column is a feature.
      test_path: `csv` only: the data's own test csv, with the columns of `path` (in any
        order); validation then comes from `path` alone.
      task: `npz`/`csv`: what the target is (`jaxbp.data.targets`): "auto" reads names,
        one-hot rows, integer dtypes and integer values with at most 20 distinct ones as
        class labels and other numbers as values, and refuses an integer-dtype target with
        more than 20 distinct values of which most appear once; "classification" and
        "regression" say it. A built-in set has its own task; another one is refused.
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
    source = SOURCES.get(name)
    if source is None:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    given = {
        "path": path,
        "target_column": target_column,
        "test_path": test_path,
        "data_dir": data_dir,
    }
    for arg, given_value in given.items():
        if given_value is not None and arg not in source.takes:
            users = users_of(arg)
            raise ValueError(
                f"{arg}={given_value!r} was given for {name!r}, but only {' and '.join(users)} "
                f"use {arg}; drop it for {name!r}."
            )
    for arg in source.needs:
        if given[arg] is None:
            fix = _NEEDED[arg].format(name=name)
            raise ValueError(f"Dataset {name!r} needs {arg}=...; {fix}")
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}; pass one of them.")
    if source.task not in (None, task) and task != AUTO:
        raise ValueError(
            f"task={task} was given for {name!r}, a {source.task} data set; drop it, or load "
            "your own data with 'npz' or 'csv'."
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
    generated = "num_samples" in source.takes
    if num_samples is not None and (not generated or num_samples < 1):
        raise ValueError(
            f"num_samples={num_samples} was given for {name!r}; it sets the size of the generated "
            f"sets {users_of('num_samples')} and must be >= 1. Drop it for other datasets."
        )
    gen_ss, split_ss = np.random.SeedSequence(seed).spawn(2)
    n = DEFAULT_NUM_SAMPLES if num_samples is None else num_samples
    rng = np.random.default_rng(gen_ss)
    raw = source.load(Request(name, rng, n, data_dir, path, target_column, task, test_path))
    where = repr(path) if path is not None else f"dataset {name!r}"
    _check_raw(raw, where, fix="use num_samples >= 2" if generated else None)
    return _assemble(name, raw, np.random.default_rng(split_ss), val_fraction, test_fraction, dtype)


def split_record(dataset: Dataset, val_fraction: float, test_fraction: float) -> dict:
    """How ``dataset`` was split, as JSON: the sizes, the fractions used, and the test's source.

    Args:
      dataset: a `load_dataset` result.
      val_fraction, test_fraction: the fractions it was loaded with.

    Returns:
      ``{"train": n, "val": n, "test": n, "val_fraction": f, "test_fraction": f,
      "test_source": s}``: a fraction is None where it was unused (``test_fraction`` for the
      data's own test set, both for xor's whole set); ``test_source`` as in `Dataset`.
    """
    split = dataset.test_source != "all"
    return {
        "train": len(dataset.x_train),
        "val": len(dataset.x_val),
        "test": len(dataset.x_test),
        "val_fraction": val_fraction if split else None,
        "test_fraction": test_fraction if dataset.test_source == "split" else None,
        "test_source": dataset.test_source,
    }


def _check_raw(raw: Raw, source: str, fix: str | None) -> None:
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
    name: str, raw: Raw, rng: np.random.Generator, val_fraction: float, test_fraction: float, dtype
) -> Dataset:
    """Splits `raw`, standardises x (and regression y) with train statistics, encodes targets."""
    source = SOURCES[name]
    x = flat(raw.x).astype(dtype, copy=False)
    labels = raw.y if raw.task == "classification" else None
    splits: list[tuple[np.ndarray, np.ndarray]]
    test_source = "split"
    if not source.split:  # too few points to split (xor's 4): the whole set is every split
        splits, test_source = [(x, raw.y)] * 3, "all"
    elif raw.test is None:
        splits = [
            (x[i], raw.y[i]) for i in _split(labels, len(x), val_fraction, test_fraction, rng)
        ]
    else:
        test_source = "own"  # the source's own test set; validation from its training set
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
    x_mean, x_scale = _standardiser(splits[0][0], per_feature=source.per_feature_scale)
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
        test_source,
    )
