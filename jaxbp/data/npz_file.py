"""Reading a data set's .npz faithfully, without unpickling, or refusing it with one line.

The contract, stated once: a reader returns the arrays exactly as the archive holds them, or
raises a one-line `ValueError` naming the file, what was expected and the fix. The archive
is told from its first bytes (`jaxbp.data.checks.sniff`), read with ``allow_pickle=False``,
and a damaged one (truncated, a bad checksum, a member that is no array) is refused as such.

* `read_npz_data`: a data set's arrays, ``x``, ``y`` or ``x_train``, ``y_train``, ``x_test``,
  ``y_test``, checked for numeric finite features and readable targets;
* `read_npz`, `read_npz_features`: the arrays of any archive, and new examples' features,
  for `jaxbp.data.files`.
"""

from __future__ import annotations

import zipfile
import zlib

import numpy as np

from jaxbp.data.checks import (
    KINDS,
    check_features,
    check_target_array,
    first_few,
    first_line,
    flat,
    sniff,
)

# A loader's own failures on damaged files: zip and gzip errors are not ValueErrors.
_DAMAGED = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def read_npz_data(path: str) -> dict[str, np.ndarray]:
    """The arrays of a data set's .npz: `x`, `y`, or `x_train`, `y_train`, `x_test`, `y_test`.

    Each pair has one row per example, numeric finite features and readable targets
    (`check_features`, `check_target_array`); a train/test pair agrees past the first axis.

    Raises:
      ValueError: the file is not such an archive, is damaged, or holds other arrays.
    """

    def choose(keys: set[str]) -> list[str]:
        wanted = ["x", "y"] if {"x", "y"} <= keys else ["x_train", "y_train", "x_test", "y_test"]
        if not set(wanted) <= keys:
            raise ValueError(
                f"{path!r} holds arrays {sorted(keys)}; expected 'x' and 'y', or 'x_train', "
                "'y_train', 'x_test' and 'y_test'. Save it with np.savez(path, x=..., y=...)."
            )
        return wanted

    arrays = read_npz(path, choose, fix="save it with np.savez(path, x=..., y=...)")
    keys = list(arrays)
    for x_key, y_key in zip(keys[::2], keys[1::2], strict=True):
        x, y = arrays[x_key], arrays[y_key]
        for key, a in ((x_key, x), (y_key, y)):
            if a.ndim == 0 or len(a) == 0:
                raise ValueError(
                    f"{path!r}: array {key!r} has shape {a.shape}; expected one row per example "
                    "and at least one example. Save the full arrays."
                )
        check_features(x, repr(path), f"array {x_key!r}")
        check_target_array(y, repr(path), f"array {y_key!r}")
        if len(x) != len(y):
            raise ValueError(
                f"{path!r}: {x_key} has {len(x)} rows but {y_key} has {len(y)}; make them equal."
            )
    if len(arrays) == 4:
        x_train, y_train, x_test, y_test = arrays.values()
        if flat(x_test).shape[1] != flat(x_train).shape[1] or y_test.shape[1:] != y_train.shape[1:]:
            raise ValueError(
                f"{path!r}: x_train {x_train.shape} / y_train {y_train.shape} and x_test "
                f"{x_test.shape} / y_test {y_test.shape} differ past the first axis; expected the "
                "same features and target shape in both. Save matching arrays."
            )
    return arrays


def read_npz(path: str, choose, fix: str) -> dict[str, np.ndarray]:
    """The arrays `choose(keys)` names, read from the .npz at `path` without unpickling."""
    kind = sniff(path)
    if kind != "zip":
        raise ValueError(f"{path!r} is {KINDS[kind]}; expected an .npz archive: {fix}.")

    def damaged(why: str) -> ValueError:
        return ValueError(
            f"{path!r} is a damaged .npz archive ({why}); it is truncated or corrupt: {fix}."
        )

    try:
        archive = np.load(path, allow_pickle=False)
    except _DAMAGED as e:  # numpy's own words would suggest unpickling: never
        raise damaged("not a zip archive" if "pickle" in str(e) else first_line(e)) from e
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a .npy gives an ndarray; sniff ruled it out
        raise ValueError(f"{path!r} is not an .npz archive; expected one: {fix}.")
    with archive:
        keys = choose(set(archive.files))
        arrays = {}
        for key in keys:
            try:
                arrays[key] = archive[key]
            except ValueError as e:
                if "allow_pickle" not in str(e):
                    raise damaged(f"array {key!r}: {first_line(e)}") from e
                raise ValueError(
                    f"{path!r} contains an object array {key!r}, which is not loaded "
                    "(allow_pickle=False); save numeric arrays only."
                ) from e
            except _DAMAGED as e:
                raise damaged(f"array {key!r}: {first_line(e)}") from e
            if not isinstance(arrays[key], np.ndarray):  # a member that is not .npy: raw bytes
                raise damaged(f"member {key!r} is not a .npy array")
    return arrays


def read_npz_features(path: str, names: list[str]) -> np.ndarray:
    fix = "save it with np.savez(path, x=...)"

    def choose(keys: set[str]) -> list[str]:
        if "x" not in keys:
            raise ValueError(
                f"{path!r} holds arrays {sorted(keys)}; expected an array 'x' of features: {fix}."
            )
        return ["x"]

    x = read_npz(path, choose, fix)["x"]
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(
            f"{path!r}: x has shape {x.shape}; expected (n, {len(names)}) with n >= 1. Save at "
            "least one example."
        )
    width = flat(x).shape[1]
    if width != len(names):
        hint = f" (one example is shape (1, {len(names)}))" if x.shape == (len(names),) else ""
        raise ValueError(
            f"{path!r}: x has shape {x.shape}, {width} features per row; expected "
            f"{len(names)} ({first_few(names)}){hint}. Save the features the model was trained on."
        )
    check_features(x, repr(path), "x")
    return flat(x).astype(np.float64)
