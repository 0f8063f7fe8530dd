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
"""

from __future__ import annotations

import csv
import gzip
import os
import struct
from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    """A dataset split three ways: `x_*` are `(n, num_features)`, `y_*` are `(n, num_outputs)`."""

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
_FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt")
_FASHION_NAMES += ("Sneaker", "Bag", "Ankle boot")
DATASETS: tuple[str, ...] = (*_SKLEARN, "xor", *_GENERATED, "npz", "csv", "mnist", "fashion_mnist")

_DEFAULT_NUM_SAMPLES = 1000  # enough to see a decision boundary; trains in seconds on a CPU
_MOONS_NOISE = 0.2  # the moons overlap a little, so 100% accuracy means overfitting
_SPIRAL_NOISE = 0.3  # arms lie pi apart radially, so this keeps them separable but not trivially
_TEACHER_SIZES = (8, 16)  # teacher input width and tanh hidden width
_TEACHER_NOISE = 0.1  # target noise std; sets the best achievable test loss
_MAX_CLASSES = 20  # an integer target with at most this many values is read as class labels
_MIN_STD = 1e-8  # a feature with a smaller std is treated as constant and gets scale 1
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (the MNIST format), gzipped or not.

    Header: two zero bytes, a dtype code, the number of dimensions `ndim`, then `ndim` big-endian
    uint32 sizes; the big-endian data follow.

    Args:
      path: the file; gzip is detected from its content, not its name.

    Returns:
      An array of the stored shape, e.g. `(60000, 28, 28)` uint8 for MNIST training images.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file {path!r} does not exist; check the path.")
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    with (gzip.open if gzipped else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path!r} has magic number {data[:4].hex()!r}; an IDX file starts with 00 00, a "
            f"dtype code in {[hex(c) for c in _IDX_DTYPES]} and ndim. Pass an IDX file (or .gz)."
        )
    ndim, header = data[3], 4 + 4 * data[3]
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    shape = struct.unpack(f">{ndim}I", data[4:header]) if len(data) >= header else None
    if shape is None or len(data) - header != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(
            f"{path!r}: header says shape {shape} of {dtype}, but {len(data) - header} data bytes "
            "follow. The file is truncated or corrupt; fetch it again."
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def batches_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches in an epoch, `num_examples // batch_size`; the remainder is dropped."""
    if not 0 < batch_size <= num_examples:
        raise ValueError(
            f"batch_size must be in [1, num_examples={num_examples}], got {batch_size}; "
            f"use a batch_size of at most {num_examples}."
        )
    return num_examples // batch_size


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
      data_dir: `mnist`/`fashion_mnist`: directory with the four IDX files (optionally `.gz`).
      path: `npz`: arrays `x`, `y` or `x_train`, `y_train`, `x_test`, `y_test`, of shape
        `(n, ...)` and `(n,)`, `(n, k)` or one-hot `(n, C)`. `csv`: header row, numeric features.
        A target of integer or string dtype, one-hot, or integer-valued with at most 20 distinct
        values is read as class labels; anything else is a regression target.
      target_column: `csv`: the name of the target column; every other column is a feature.
      num_samples: `moons`, `spirals`, `teacher`: number of examples (default 1000).
      dtype: float dtype of the returned `x_*` and `y_*`.

    Returns:
      A `Dataset`.

    Examples:
      >>> ds = load_dataset("xor")
      >>> ds.x_train.shape, ds.y_train.shape, ds.task
      ((4, 2), (4, 1), 'classification')
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
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
    return _assemble(name, raw, np.random.default_rng(split_ss), val_fraction, test_fraction, dtype)


def _load_raw(name, rng, num_samples, data_dir, path, target_column) -> _Raw:
    """Dispatches to the loader for `name`."""
    n = _DEFAULT_NUM_SAMPLES if num_samples is None else num_samples
    if name in _SKLEARN:
        bunch = getattr(_sklearn_datasets(), _SKLEARN[name][0])()
        task = _SKLEARN[name][1]
        names = tuple(str(c) for c in bunch.target_names) if task == "classification" else None
        return _Raw(bunch.data, bunch.target, task, names)
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
    paths, missing = [], []
    for file in _IDX_FILES:
        found = [p for p in (file, file + ".gz") if os.path.isfile(os.path.join(data_dir, p))]
        paths.append(os.path.join(data_dir, found[0]) if found else None)
        missing += [] if found else [file]
    if missing:
        where = os.path.abspath(data_dir)
        raise FileNotFoundError(
            f"{name}: missing {', '.join(missing)} (plain or .gz) in {where}. Nothing is "
            "downloaded: download them from the MNIST / Fashion-MNIST distribution and put them "
            f"in {where}."
        )
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or y.max(initial=0) > 9:
            raise ValueError(
                f"{name} {split} files hold images {x.shape} and labels {y.shape}; expected "
                "(n, rows, cols) images and (n,) labels in 0..9. Check the files in data_dir."
            )
    names = _FASHION_NAMES if name == "fashion_mnist" else tuple(str(i) for i in range(10))
    scale = np.float32(1 / 255)  # float32 keeps 60000 x 784 pixels at 188 MB
    test = (x_test * scale, y_test.astype(np.int64))
    return _Raw(x_train * scale, y_train.astype(np.int64), "classification", names, test)


def _load_npz(path: str) -> _Raw:
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        wanted = ["x", "y"] if {"x", "y"} <= keys else ["x_train", "y_train", "x_test", "y_test"]
        if not set(wanted) <= keys:
            raise ValueError(
                f"{path!r} holds arrays {sorted(keys)}; expected 'x' and 'y', or 'x_train', "
                "'y_train', 'x_test' and 'y_test'. Save it with np.savez(path, x=..., y=...)."
            )
        try:
            arrays = [f[k] for k in wanted]
        except ValueError as e:  # raised by allow_pickle=False on object arrays
            raise ValueError(
                f"{path!r} contains an object array, which is not loaded (allow_pickle=False); "
                "save numeric arrays only."
            ) from e
    for x, y in zip(arrays[::2], arrays[1::2], strict=True):
        if len(x) != len(y):
            raise ValueError(f"{path!r}: x has {len(x)} rows but y has {len(y)}; make them equal.")
    if len(arrays) == 2:
        return _Raw(arrays[0], *_infer_task(arrays[1]))
    n_train = len(arrays[1])
    y, task, names = _infer_task(np.concatenate([arrays[1], arrays[3]]))  # one label set
    return _Raw(arrays[0], y[:n_train], task, names, (arrays[2], y[n_train:]))


def _load_csv(path: str, target_column: str | None) -> _Raw:
    if target_column is None:
        raise ValueError("Dataset 'csv' needs target_column=...; pass the target's column name.")
    with open(path, newline="") as f:
        rows = [[cell.strip() for cell in row] for row in csv.reader(f) if row]
    if len(rows) < 2:
        raise ValueError(f"{path!r} has no data rows; expected a header row then the examples.")
    header = rows[0]
    if target_column not in header:
        raise ValueError(f"target_column {target_column!r} is not in {header}; pick one of them.")
    bad = [i + 2 for i, row in enumerate(rows[1:]) if len(row) != len(header)]
    if bad:
        raise ValueError(f"{path!r}: lines {bad} do not have {len(header)} cells like the header.")
    body = np.array(rows[1:], dtype=object)
    target = header.index(target_column)
    features = [j for j in range(len(header)) if j != target]
    x = np.empty((len(body), len(features)))
    for k, j in enumerate(features):
        try:
            x[:, k] = body[:, j].astype(np.float64)
        except ValueError as e:
            raise ValueError(
                f"{path!r}: feature column {header[j]!r} is not numeric; encode it as numbers "
                "or drop it."
            ) from e
    return _Raw(x, *_infer_task(body[:, target]))


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
        return labels, "classification", tuple(classes)
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
    x = raw.x.reshape(len(raw.x), -1).astype(dtype, copy=False)
    labels = raw.y if raw.task == "classification" else None
    if name == "xor":  # 4 points cannot be split: the truth table is every split
        splits = [(x, raw.y)] * 3
    elif raw.test is None:
        idx = _split(labels, len(x), val_fraction, test_fraction, rng)
        splits = [(x[i], raw.y[i]) for i in idx]
    else:  # the source's own test set; validation comes out of its training set
        idx = _split(labels, len(x), val_fraction, 0.0, rng)[:2]
        x_test = raw.test[0].reshape(len(raw.test[0]), -1).astype(dtype, copy=False)
        splits = [(x[i], raw.y[i]) for i in idx] + [(x_test, raw.test[1])]
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

    out = []
    for xs, ys in splits:
        out += [(xs - x_mean.astype(dtype)) / x_scale.astype(dtype), encode(ys)]
    return Dataset(
        name, raw.task, *out, num_classes, raw.class_names, x_mean, x_scale, y_mean, y_scale
    )
