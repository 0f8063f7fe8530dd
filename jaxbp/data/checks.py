"""Checks on data read from files, and the words their one-line errors use.

The contract, stated once: a check returns nothing for data that can be trained on
faithfully and raises a one-line `ValueError` otherwise, naming where the data came from,
what was wrong (the first few rows, lines or cells, `first_few`), what was expected and the
fix. Refused: features that are complex or not numbers, targets of any other shape or
dtype, and NaN or ±inf anywhere (a NaN in any row poisons the loss without an error).
`sniff` tells a file's kind from its first bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

_SHOWN = 5  # offending lines, rows or names an error lists before "(and N more)"
_SNIFF_BYTES = 4096  # enough of a file's start to tell text from binary


# Data are read in float64 and trained in float32: a larger magnitude becomes inf there.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_finite_cells(path: str, what: str, values: np.ndarray, lines: list[int]) -> None:
    """Refuses NaN or ±inf among a csv column's `values`, or values that overflow float32,
    naming their `lines`."""
    bad = ~np.isfinite(values)
    if bad.any():  # float() parses "nan" and "inf"; a NaN would silently poison the loss
        raise ValueError(
            f"{path!r}: {what} has {bad.sum()} NaN or infinite values, on "
            f"{first_few(lines_at(lines, bad), 'lines')}; expected finite numbers. Remove or "
            "impute those rows."
        )
    huge = np.abs(values) > FLOAT32_MAX
    if huge.any():
        raise ValueError(
            f"{path!r}: {what} has {huge.sum()} values beyond float32's range "
            f"(±{FLOAT32_MAX:.3g}), on {first_few(lines_at(lines, huge), 'lines')}; they would "
            "become infinite in training. Rescale the column (e.g. to other units or its log)."
        )


def check_features(x: np.ndarray, where: str, what: str) -> None:
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
    check_finite(x, where, what)


def check_target_array(y: np.ndarray, where: str, what: str) -> None:
    """Refuses targets other than (n,) labels, names or values, or (n, k) numbers, all finite."""
    if y.dtype.kind == "c":
        check_features(y, where, what)  # refuses complex numbers with the same words as for x
    if (
        y.ndim > 2
        or y.dtype.kind not in "biufUS"
        or (y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in "US")
    ):
        raise ValueError(
            f"{where}: {what} is {y.dtype} of shape {y.shape}; expected (n,) labels, class names "
            "or real targets, or (n, k) real targets or one-hot rows. Save such an array."
        )
    check_finite(y, where, what)


def check_finite(a: np.ndarray, where: str, what: str) -> None:
    """Refuses NaN or ±inf in a float array `a: (n, ...)`, naming the rows that hold them."""
    if a.dtype.kind != "f":  # integers and bools are always finite
        return
    bad = ~np.isfinite(flat(a))
    if bad.any():  # NaN in any row gives a NaN loss, even in validation, without an error
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{where}: {what} has {bad.sum()} NaN or infinite values, in {first_few(rows, 'rows')} "
            "(counting from 0); expected finite numbers. Remove or impute those rows."
        )
    huge = np.abs(flat(a)) > FLOAT32_MAX
    if huge.any():
        rows, columns = np.nonzero(huge)
        raise ValueError(
            f"{where}: {what} has {huge.sum()} values beyond float32's range "
            f"(±{FLOAT32_MAX:.3g}), first in row {rows[0]}, column {columns[0]} (counting from "
            "0); they would become infinite in training. Rescale those columns."
        )


def flat(a: np.ndarray) -> np.ndarray:
    """`a: (n, ...)` as `(n, prod(...))`; reshape(n, -1) fails when n is 0."""
    return a.reshape(len(a), math.prod(a.shape[1:]))


def repeated_names(names: Sequence[str]) -> list[str]:
    """The names that occur more than once, sorted."""
    return sorted({name for name in names if names.count(name) > 1})


def lines_at(lines: list[int], mask: np.ndarray) -> list[int]:
    """The `lines` where `mask` is True."""
    return [line for line, hit in zip(lines, mask, strict=True) if hit]


def first_few(items: Sequence | np.ndarray, unit: str | None = None) -> str:
    """The first few of `items` for an error message, e.g. "lines 3, 8 (and 4 more)"."""
    shown = ", ".join(repr(i) if isinstance(i, str) else str(int(i)) for i in items[:_SHOWN])
    more = f" (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    if unit is None:
        return f"[{shown}{more}]"
    return f"{unit if len(items) > 1 else unit[:-1]} {shown}{more}"


def cells_at(cells: np.ndarray, lines: list[int], mask: np.ndarray) -> str:
    """The first few cells under `mask` with their lines, e.g. "'n/a' on line 7, '?' on line 9"."""
    hits = np.flatnonzero(mask)
    shown = ", ".join(f"{cells[i]!r} on line {lines[i]}" for i in hits[:_SHOWN])
    return shown + (f" (and {len(hits) - _SHOWN} more)" if len(hits) > _SHOWN else "")


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (or its type), to quote in a one-line error."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


KINDS = {  # sniff's answer -> how an error describes the file
    "zip": "a zip archive (an .npz?)",
    "npy": "a .npy file of one array",
    "gzip": "gzip-compressed",
    "text": "text (a csv?)",
    "empty": "empty",
    "binary": "binary data of no known kind",
}


def sniff(path: str | os.PathLike) -> str:
    """The kind of file its first bytes show: one of the keys of `KINDS`."""
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
