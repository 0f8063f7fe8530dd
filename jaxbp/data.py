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
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    """A dataset split three ways: `x_*` are `(n, num_features)`, `y_*` are `(n, num_outputs)`.

    `feature_names` names the columns of `x_*`: the csv header's feature columns, scikit-learn's
    `feature_names`, `pixel0`, `pixel1`, ... for MNIST, and `x0`, `x1`, ... otherwise. Pass it to
    `read_features` to read new examples in the same column order.
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
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
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
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SHOWN = 5  # offending lines, rows or names an error lists before "(and N more)"
_SNIFF_BYTES = 4096  # enough of a file's start to tell text from binary
# A loader's own failures on damaged files: zip and gzip errors are not ValueErrors.
_DAMAGED = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (the MNIST format), gzipped or not.

    Header: two zero bytes, a dtype code, the number of dimensions `ndim`, then `ndim` big-endian
    uint32 sizes; the big-endian data follow.

    Args:
      path: the file; gzip is detected from its content, not its name.

    Returns:
      An array of the stored shape, e.g. `(60000, 28, 28)` uint8 for MNIST training images.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: the file is not IDX, or is truncated or corrupt (gzip stream included).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file {path!r} does not exist; check the path.")
    gzipped = _sniff(path) == "gzip"
    try:
        with (gzip.open if gzipped else open)(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(
            f"{path!r} is a damaged gzip file ({_reason(e)}); it is truncated or corrupt: fetch it "
            "again."
        ) from e
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path!r} has magic number {data[:4].hex()!r}; an IDX file starts with 00 00, a "
            f"dtype code in {[hex(c) for c in _IDX_DTYPES]} and ndim. Pass an IDX file (or .gz)."
        )
    ndim, header = data[3], 4 + 4 * data[3]
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    if len(data) < header:
        raise ValueError(
            f"{path!r}: the header promises {ndim} sizes but the file ends after {len(data)} "
            "bytes. The file is truncated or corrupt; fetch it again."
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != math.prod(shape) * dtype.itemsize:
        raise ValueError(
            f"{path!r}: header says shape {shape} of {dtype}, but {len(data) - header} data bytes "
            "follow. The file is truncated or corrupt; fetch it again."
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_features(path: str, feature_names: Sequence[str]) -> np.ndarray:
    """Reads the raw (unstandardised) features of new examples, e.g. to predict their targets.

    Standardise the result as the training data were before feeding a model:
    `(x - ds.x_mean) / ds.x_scale`.

    Args:
      path: an `.npz` with an array `x` of shape `(n, len(feature_names))`, or `(n, ...)` that
        flattens to that width; or a `.csv` whose header row names every one of `feature_names`
        (in any order; other columns, such as the target, are ignored). The kind is told from
        the content (an `.npz` is a zip archive), and from the extension where the content
        cannot tell.
      feature_names: the model's features in its column order, e.g. `Dataset.feature_names`.

    Returns:
      `(n, len(feature_names))` float64, one row per example, columns in `feature_names` order.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: the file is of another kind, damaged, lacks a feature, has the wrong width,
        holds no rows, or holds a cell or value that is not a finite number.

    Examples:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "new.csv")
      >>> with open(path, "w") as f:
      ...     _ = f.write("b,label,a\\n2,cat,1\\n4,dog,3\\n")
      >>> read_features(path, ["a", "b"])
      array([[1., 2.],
             [3., 4.]])
    """
    if isinstance(feature_names, str):
        raise TypeError(
            f"feature_names must be a sequence of names, got the string {feature_names!r}; pass "
            "e.g. dataset.feature_names or [name]."
        )
    names = [str(name) for name in feature_names]
    if not names:
        raise ValueError(
            "feature_names is empty; pass the model's features, dataset.feature_names."
        )
    repeated = _repeated(names)
    if repeated:
        raise ValueError(f"feature_names repeats {repeated}; pass each feature once.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"features file {path!r} does not exist; check the path.")
    kind = _sniff(path)
    extension = os.path.splitext(path)[1].lower()
    if kind == "zip":
        return _read_npz_features(path, names)
    if extension == ".npz":  # named an archive, yet not a zip: damaged or misnamed
        raise ValueError(
            f"{path!r} is {_KINDS[kind]}, not the zip archive an .npz is; save it with "
            "np.savez(path, x=...), or name a csv file .csv."
        )
    if kind != "text" and extension != ".csv":
        raise ValueError(
            f"{path!r} is {_KINDS[kind]}; expected an .npz archive with an array x (save it with "
            "np.savez(path, x=...)) or a csv text file with a header row."
        )
    header, lines, rows = _read_csv(path)
    missing = [name for name in names if name not in header]
    if missing:
        raise ValueError(
            f"{path!r} lacks the feature column(s) {_some(missing)} (its header has "
            f"{_some(header)}); expected a header naming every feature. Add those columns."
        )
    repeated = [name for name in _repeated(header) if name in names]
    if repeated:
        raise ValueError(
            f"{path!r}: the header names {repeated} more than once, so the feature is ambiguous; "
            "keep one column per name."
        )
    if not rows:
        raise ValueError(f"{path!r} has a header but no rows; expected one example per line.")
    body = np.array(rows, dtype=object)
    columns = [_feature_column(path, name, body[:, header.index(name)], lines) for name in names]
    return np.stack(columns, axis=1)


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
    if data_dir is None:
        raise ValueError(
            f"Dataset {name!r} needs data_dir=...; pass the directory of its IDX files."
        )
    paths: list[str] = []
    missing: list[str] = []
    for file in _IDX_FILES:
        found = [p for p in (file, file + ".gz") if os.path.isfile(os.path.join(data_dir, p))]
        paths.append(os.path.join(data_dir, found[0]) if found else "")
        missing += [] if found else [file]
    if missing:
        where = os.path.abspath(data_dir)
        raise FileNotFoundError(
            f"{name}: missing {', '.join(missing)} (plain or .gz) in {where}. Nothing is "
            "downloaded: download them from the MNIST / Fashion-MNIST distribution and put them "
            f"in {where}."
        )
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    fix = f"replace it with the original {name} file"
    pairs = ((x_train, y_train, paths[0], paths[1]), (x_test, y_test, paths[2], paths[3]))
    for x, y, x_path, y_path in pairs:
        if x.ndim != 3:
            raise ValueError(
                f"{x_path!r} holds an array of shape {x.shape}; expected images (n, rows, cols). "
                f"Check the file names in data_dir, or {fix}."
            )
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise ValueError(
                f"{y_path!r} holds {y.dtype} of shape {y.shape}; expected (n,) integer labels "
                f"0..9. Check the file names in data_dir, or {fix}."
            )
        outside = np.flatnonzero((y < 0) | (y > 9))
        if len(outside):
            raise ValueError(
                f"{y_path!r} holds {len(outside)} labels outside 0..9 (e.g. {y[outside[0]]} in "
                f"{_some(outside, 'rows')}); expected class indices 0..9. {fix.capitalize()}."
            )
        if len(x) != len(y):
            raise ValueError(
                f"{x_path!r} holds {len(x)} images but {y_path!r} holds {len(y)} labels; expected "
                f"one label per image. One of them is truncated: {fix}."
            )
        _check_finite(x, repr(x_path), "the image array")
    if x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(
            f"{paths[2]!r} holds {x_test.shape[1:]} images but {paths[0]!r} holds "
            f"{x_train.shape[1:]}; expected one image size. {fix.capitalize()}."
        )
    names = _FASHION_NAMES if name == "fashion_mnist" else tuple(str(i) for i in range(10))
    pixels = tuple(f"pixel{i}" for i in range(math.prod(x_train.shape[1:])))
    scale = np.float32(1 / 255)  # float32 keeps 60000 x 784 pixels at 188 MB
    test = (x_test * scale, y_test.astype(np.int64))
    return _Raw(x_train * scale, y_train.astype(np.int64), "classification", names, test, pixels)


def _load_npz(path: str) -> _Raw:
    def choose(keys: set[str]) -> list[str]:
        wanted = ["x", "y"] if {"x", "y"} <= keys else ["x_train", "y_train", "x_test", "y_test"]
        if not set(wanted) <= keys:
            raise ValueError(
                f"{path!r} holds arrays {sorted(keys)}; expected 'x' and 'y', or 'x_train', "
                "'y_train', 'x_test' and 'y_test'. Save it with np.savez(path, x=..., y=...)."
            )
        return wanted

    arrays = _read_npz(path, choose, fix="save it with np.savez(path, x=..., y=...)")
    keys = list(arrays)
    for x_key, y_key in zip(keys[::2], keys[1::2], strict=True):
        x, y = arrays[x_key], arrays[y_key]
        for key, a in ((x_key, x), (y_key, y)):
            if a.ndim == 0 or len(a) == 0:
                raise ValueError(
                    f"{path!r}: array {key!r} has shape {a.shape}; expected one row per example "
                    "and at least one example. Save the full arrays."
                )
        _check_features(x, repr(path), f"array {x_key!r}")
        _check_target_array(y, repr(path), f"array {y_key!r}")
        if len(x) != len(y):
            raise ValueError(
                f"{path!r}: {x_key} has {len(x)} rows but {y_key} has {len(y)}; make them equal."
            )
    if len(arrays) == 2:
        return _Raw(arrays["x"], *_infer_task(arrays["y"]))
    x_train, y_train, x_test, y_test = arrays.values()
    if _flat(x_test).shape[1] != _flat(x_train).shape[1] or y_test.shape[1:] != y_train.shape[1:]:
        raise ValueError(
            f"{path!r}: x_train {x_train.shape} / y_train {y_train.shape} and x_test "
            f"{x_test.shape} / y_test {y_test.shape} differ past the first axis; expected the same "
            "features and target shape in both. Save matching arrays."
        )
    y, task, names = _infer_task(np.concatenate([y_train, y_test]))  # one label set
    return _Raw(x_train, y[: len(y_train)], task, names, (x_test, y[len(y_train) :]))


def _load_csv(path: str, target_column: str | None) -> _Raw:
    if target_column is None:
        raise ValueError("Dataset 'csv' needs target_column=...; pass the target's column name.")
    header, lines, rows = _read_csv(path)
    repeated = _repeated(header)
    if repeated:
        raise ValueError(
            f"{path!r}: the header names {repeated} more than once; expected distinct column "
            "names. Rename or drop the duplicate columns."
        )
    if target_column not in header:
        raise ValueError(
            f"{path!r}: target_column {target_column!r} is not in the header {header}; pick one "
            "of them."
        )
    if not rows:
        raise ValueError(f"{path!r} has no data rows; expected a header row then the examples.")
    if len(header) < 2:
        raise ValueError(
            f"{path!r} has only the target column {target_column!r}; expected feature columns "
            "beside it. Add the features to the file."
        )
    body = np.array(rows, dtype=object)
    target = header.index(target_column)
    features = [j for j in range(len(header)) if j != target]
    x = np.stack([_feature_column(path, header[j], body[:, j], lines) for j in features], axis=1)
    y = _target_column(path, target_column, body[:, target], lines)
    return _Raw(x, *_infer_task(y), feature_names=tuple(header[j] for j in features))


def _read_csv(path: str) -> tuple[list[str], list[int], list[list[str]]]:
    """Returns (header, line number of each row, rows) with stripped cells; blank lines skipped."""
    kind = _sniff(path)
    if kind != "text":
        fix = (
            "load an .npz archive with load_dataset('npz', path=...)"
            if kind == "zip"
            else "pass a csv text file"
        )
        raise ValueError(
            f"{path!r} is {_KINDS[kind]}; expected a csv text file with a header row: {fix}."
        )
    lines, rows = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: drop a leading BOM
            reader = csv.reader(f)
            for row in reader:
                if row:
                    lines.append(reader.line_num)
                    rows.append([cell.strip() for cell in row])
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path!r} is not UTF-8 text ({_reason(e)}); expected a UTF-8 csv. Save it as UTF-8."
        ) from e
    except csv.Error as e:
        raise ValueError(
            f"{path!r} is not a readable csv ({_reason(e)}); expected comma-separated text. Pass a "
            "csv file."
        ) from e
    if not rows:
        raise ValueError(f"{path!r} is empty; expected a header row then the examples.")
    header = rows[0]
    bad = [line for line, row in zip(lines[1:], rows[1:], strict=True) if len(row) != len(header)]
    if bad:
        raise ValueError(
            f"{path!r}: {_some(bad, 'lines')} do not have {len(header)} cells like the header; "
            "fix those lines (quote cells that hold commas)."
        )
    return header, lines[1:], rows[1:]


def _feature_column(path: str, name: str, cells: np.ndarray, lines: list[int]) -> np.ndarray:
    """Parses a csv feature column to float64, refusing empty, non-numeric or non-finite cells."""
    values, numeric = _parse_floats(cells)
    empty = cells == ""
    if empty.any():
        raise ValueError(
            f"{path!r}: feature column {name!r} has empty cells on "
            f"{_some(_at(lines, empty), 'lines')}; expected a number in every cell. Fill them in "
            "or drop those rows."
        )
    if not numeric.all():
        raise ValueError(
            f"{path!r}: feature column {name!r} is not numeric ({_cells(cells, lines, ~numeric)}); "
            "encode it as numbers or drop it."
        )
    _check_finite_cells(path, f"feature column {name!r}", values, lines)
    return values


def _target_column(path: str, name: str, cells: np.ndarray, lines: list[int]) -> np.ndarray:
    """The target as float64 if every cell is a number, as str if none is; a mix is refused."""
    empty = cells == ""
    if empty.any():
        raise ValueError(
            f"{path!r}: target column {name!r} has empty cells on "
            f"{_some(_at(lines, empty), 'lines')}; expected a target in every row. Fill them in "
            "or drop those rows."
        )
    values, numeric = _parse_floats(cells)
    if not numeric.any():
        return cells.astype(str)  # class names
    if not numeric.all():  # e.g. one "n/a" among floats would otherwise make ~n classes
        raise ValueError(
            f"{path!r}: target column {name!r} is numeric but has non-numeric cells "
            f"({_cells(cells, lines, ~numeric)}); fix or drop those rows (class names must all "
            "be non-numeric)."
        )
    _check_finite_cells(path, f"target column {name!r}", values, lines)
    return values


def _parse_floats(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, parsed): float64 of each str cell (NaN where it is not a number), and a mask."""
    try:
        return np.asarray(cells.tolist(), dtype=np.float64), np.ones(len(cells), bool)
    except ValueError:  # some cell is not a number: find which, one at a time
        values, parsed = np.full(len(cells), np.nan), np.zeros(len(cells), bool)
        for i, cell in enumerate(cells):
            with contextlib.suppress(ValueError):
                values[i], parsed[i] = float(cell), True
        return values, parsed


def _check_finite_cells(path: str, what: str, values: np.ndarray, lines: list[int]) -> None:
    bad = ~np.isfinite(values)
    if bad.any():  # float() parses "nan" and "inf"; a NaN would silently poison the loss
        raise ValueError(
            f"{path!r}: {what} has {bad.sum()} NaN or infinite values, on "
            f"{_some(_at(lines, bad), 'lines')}; expected finite numbers. Remove or impute those "
            "rows."
        )


def _read_npz(path: str, choose, fix: str) -> dict[str, np.ndarray]:
    """The arrays `choose(keys)` names, read from the .npz at `path` without unpickling."""
    kind = _sniff(path)
    if kind != "zip":
        raise ValueError(f"{path!r} is {_KINDS[kind]}; expected an .npz archive: {fix}.")

    def damaged(reason: str) -> ValueError:
        return ValueError(
            f"{path!r} is a damaged .npz archive ({reason}); it is truncated or corrupt: {fix}."
        )

    try:
        archive = np.load(path, allow_pickle=False)
    except _DAMAGED as e:  # numpy's own words would suggest unpickling: never
        raise damaged("not a zip archive" if "pickle" in str(e) else _reason(e)) from e
    if not isinstance(
        archive, np.lib.npyio.NpzFile
    ):  # a .npy gives an ndarray; _sniff ruled it out
        raise ValueError(f"{path!r} is not an .npz archive; expected one: {fix}.")
    with archive:
        keys = choose(set(archive.files))
        arrays = {}
        for key in keys:
            try:
                arrays[key] = archive[key]
            except ValueError as e:
                if "allow_pickle" not in str(e):
                    raise damaged(f"array {key!r}: {_reason(e)}") from e
                raise ValueError(
                    f"{path!r} contains an object array {key!r}, which is not loaded "
                    "(allow_pickle=False); save numeric arrays only."
                ) from e
            except _DAMAGED as e:
                raise damaged(f"array {key!r}: {_reason(e)}") from e
            if not isinstance(arrays[key], np.ndarray):  # a member that is not .npy: raw bytes
                raise damaged(f"member {key!r} is not a .npy array")
    return arrays


def _read_npz_features(path: str, names: list[str]) -> np.ndarray:
    fix = "save it with np.savez(path, x=...)"

    def choose(keys: set[str]) -> list[str]:
        if "x" not in keys:
            raise ValueError(
                f"{path!r} holds arrays {sorted(keys)}; expected an array 'x' of features: {fix}."
            )
        return ["x"]

    x = _read_npz(path, choose, fix)["x"]
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(
            f"{path!r}: x has shape {x.shape}; expected (n, {len(names)}) with n >= 1. Save at "
            "least one example."
        )
    width = _flat(x).shape[1]
    if width != len(names):
        hint = f" (one example is shape (1, {len(names)}))" if x.shape == (len(names),) else ""
        raise ValueError(
            f"{path!r}: x has shape {x.shape}, {width} features per row; expected "
            f"{len(names)} ({_some(names)}){hint}. Save the features the model was trained on."
        )
    _check_features(x, repr(path), "x")
    return _flat(x).astype(np.float64)


def _check_raw(raw: _Raw, source: str, fix: str | None) -> None:
    """Refuses a loader's output that cannot be trained on faithfully, whatever its source."""
    pairs = [("x", "y", raw.x, raw.y)]
    pairs += [] if raw.test is None else [("x_test", "y_test", *raw.test)]
    for x_name, y_name, x, y in pairs:
        if len(x) == 0:
            raise ValueError(f"{source}: {x_name} holds no examples; pass data with examples.")
        _check_features(x, source, x_name)
        if raw.task == "regression":
            _check_finite(np.asarray(y), source, y_name)
    if raw.test is not None and _flat(raw.test[0]).shape[1] != _flat(raw.x).shape[1]:
        raise ValueError(
            f"{source}: x_test has {_flat(raw.test[0]).shape[1]} features but x has "
            f"{_flat(raw.x).shape[1]}; expected the same features. Pass matching data."
        )
    if raw.task == "classification" and len(np.unique(raw.y)) < 2:
        label = raw.class_names[int(raw.y[0])] if raw.class_names else str(raw.y[0])
        raise ValueError(
            f"{source}: all {len(raw.y)} training examples have label {label!r}; classification "
            f"needs at least two classes. {fix or 'Check the target, or add other classes'}."
        )


def _check_features(x: np.ndarray, where: str, what: str) -> None:
    """Refuses features that are not real numbers (bool is fine, as 0/1) or not finite."""
    if x.dtype.kind == "c":  # casting to float would silently drop the imaginary part
        raise ValueError(
            f"{where}: {what} is complex ({x.dtype}); expected real numbers. Save the real and "
            "imaginary parts as separate features (np.real, np.imag)."
        )
    if x.dtype.kind not in "biuf":
        raise ValueError(
            f"{where}: {what} has dtype {x.dtype}; expected numbers (bool, int or float). Encode "
            "it as numbers before saving."
        )
    _check_finite(x, where, what)


def _check_target_array(y: np.ndarray, where: str, what: str) -> None:
    """Refuses targets other than (n,) labels, names or values, or (n, k) numbers, all finite."""
    if y.dtype.kind == "c":
        _check_features(y, where, what)  # refuses complex numbers with the same words as for x
    if (
        y.ndim > 2
        or y.dtype.kind not in "biufUS"
        or (y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in "US")
    ):
        raise ValueError(
            f"{where}: {what} is {y.dtype} of shape {y.shape}; expected (n,) labels, class names "
            "or real targets, or (n, k) real targets or one-hot rows. Save such an array."
        )
    _check_finite(y, where, what)


def _check_finite(a: np.ndarray, where: str, what: str) -> None:
    if a.dtype.kind != "f":  # integers and bools are always finite
        return
    bad = ~np.isfinite(_flat(a))
    if bad.any():  # NaN in any row gives a NaN loss, even in validation, without an error
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{where}: {what} has {bad.sum()} NaN or infinite values, in {_some(rows, 'rows')} "
            "(counting from 0); expected finite numbers. Remove or impute those rows."
        )


_KINDS = {  # _sniff's answer -> how an error describes the file
    "zip": "a zip archive (an .npz?)",
    "npy": "a .npy file of one array",
    "gzip": "gzip-compressed",
    "text": "text (a csv?)",
    "empty": "empty",
    "binary": "binary data of no known kind",
}


def _sniff(path: str | os.PathLike) -> str:
    """The kind of file its first bytes show: one of the keys of `_KINDS`."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head:
        return "empty"
    if head.startswith(b"PK"):  # every .npz is a zip archive
        return "zip"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if any(byte < 9 or 13 < byte < 27 for byte in head):  # control bytes: not text
        return "binary"
    return "text"  # perhaps not UTF-8: reading it as such says so, with the offending byte


def _flat(a: np.ndarray) -> np.ndarray:
    """`a: (n, ...)` as `(n, prod(...))`; reshape(n, -1) fails when n is 0."""
    return a.reshape(len(a), math.prod(a.shape[1:]))


def _repeated(names: Sequence[str]) -> list[str]:
    return sorted({name for name in names if names.count(name) > 1})


def _at(lines: list[int], mask: np.ndarray) -> list[int]:
    return [line for line, hit in zip(lines, mask, strict=True) if hit]


def _some(items: Sequence | np.ndarray, unit: str | None = None) -> str:
    """The first few of `items` for an error message, e.g. "lines 3, 8 (and 4 more)"."""
    shown = ", ".join(repr(i) if isinstance(i, str) else str(int(i)) for i in items[:_SHOWN])
    more = f" (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    if unit is None:
        return f"[{shown}{more}]"
    return f"{unit if len(items) > 1 else unit[:-1]} {shown}{more}"


def _cells(cells: np.ndarray, lines: list[int], mask: np.ndarray) -> str:
    """The first few cells under `mask` with their lines, e.g. "'n/a' on line 7, '?' on line 9"."""
    hits = np.flatnonzero(mask)
    shown = ", ".join(f"{cells[i]!r} on line {lines[i]}" for i in hits[:_SHOWN])
    return shown + (f" (and {len(hits) - _SHOWN} more)" if len(hits) > _SHOWN else "")


def _reason(e: BaseException) -> str:
    """The first line of an exception's message (or its type), to quote in a one-line error."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


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
    x = _flat(raw.x).astype(dtype, copy=False)
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
        x_test = _flat(raw.test[0]).astype(dtype, copy=False)
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
