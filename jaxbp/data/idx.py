"""MNIST's IDX files, read faithfully or refused with one line.

An IDX file is two zero bytes, a dtype code, the number of dimensions ``ndim``, ``ndim``
big-endian uint32 sizes, then the big-endian data. `read_idx` reads one, gzipped or not
(told from its content); `read_mnist_files` reads the four files of MNIST or Fashion-MNIST
from a folder and checks they are images and labels 0..9 that belong together. Nothing is
downloaded. Errors are one-line `ValueError`s (`FileNotFoundError` for a missing file) that
name the file and the fix, as in `jaxbp.data.files`.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import numpy as np

from jaxbp.data.checks import check_finite, first_few, first_line, sniff

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


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
    gzipped = sniff(path) == "gzip"
    try:
        with (gzip.open if gzipped else open)(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(
            f"{path!r} is a damaged gzip file ({first_line(e)}); it is truncated or corrupt: "
            "fetch it again."
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


def read_mnist_files(
    name: str, data_dir: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four IDX files of `name` in `data_dir`: (x_train, y_train, x_test, y_test).

    Images are `(n, rows, cols)` as stored, labels `(n,)` integers 0..9, one label per image.

    Raises:
      FileNotFoundError: a file is missing (plain or .gz).
      ValueError: `data_dir` is None, or a file is damaged or not what its name says.
    """
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
                f"{first_few(outside, 'rows')}); expected class indices 0..9. {fix.capitalize()}."
            )
        if len(x) != len(y):
            raise ValueError(
                f"{x_path!r} holds {len(x)} images but {y_path!r} holds {len(y)} labels; expected "
                f"one label per image. One of them is truncated: {fix}."
            )
        check_finite(x, repr(x_path), "the image array")
    if x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(
            f"{paths[2]!r} holds {x_test.shape[1:]} images but {paths[0]!r} holds "
            f"{x_train.shape[1:]}; expected one image size. {fix.capitalize()}."
        )
    return x_train, y_train, x_test, y_test
