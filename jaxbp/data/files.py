"""Reading .npz and csv data files faithfully, or refusing them with one line.

The contract, stated once: a reader returns arrays exactly as the file holds them, or raises
a one-line `ValueError` (`FileNotFoundError` for a missing file) that names the file, what
was expected and the fix (`jaxbp.data.idx` reads MNIST's IDX files alike). The kind of a
file is told from its first bytes (`jaxbp.data.checks.sniff`), not its name, except where
the content cannot tell; an .npz is read without unpickling; every number must be finite
(`jaxbp.data.checks`).

* `read_features`: the raw features of new examples, in a model's column order;
* `read_column`: one column of a data file as text, e.g. row identifiers.

A data set's own files are read by `jaxbp.data.csv_file` and `jaxbp.data.npz_file`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from jaxbp.data.checks import KINDS, first_few, repeated_names, sniff
from jaxbp.data.csv_file import feature_column, read_csv_rows
from jaxbp.data.npz_file import read_npz, read_npz_features


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
    repeated = repeated_names(names)
    if repeated:
        raise ValueError(f"feature_names repeats {repeated}; pass each feature once.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"features file {path!r} does not exist; check the path.")
    kind = sniff(path)
    extension = os.path.splitext(path)[1].lower()
    if kind == "zip":
        return read_npz_features(path, names)
    if extension == ".npz":  # named an archive, yet not a zip: damaged or misnamed
        raise ValueError(
            f"{path!r} is {KINDS[kind]}, not the zip archive an .npz is; save it with "
            "np.savez(path, x=...), or name a csv file .csv."
        )
    if kind != "text" and extension != ".csv":
        raise ValueError(
            f"{path!r} is {KINDS[kind]}; expected an .npz archive with an array x (save it with "
            "np.savez(path, x=...)) or a csv text file with a header row."
        )
    header, lines, rows = read_csv_rows(path)
    missing = [name for name in names if name not in header]
    if missing:
        raise ValueError(
            f"{path!r} lacks the feature column(s) {first_few(missing)} (its header has "
            f"{first_few(header)}); expected a header naming every feature. Add those columns."
        )
    repeated = [name for name in repeated_names(header) if name in names]
    if repeated:
        raise ValueError(
            f"{path!r}: the header names {repeated} more than once, so the feature is ambiguous; "
            "keep one column per name."
        )
    if not rows:
        raise ValueError(f"{path!r} has a header but no rows; expected one example per line.")
    body = np.array(rows, dtype=object)
    columns = [feature_column(path, name, body[:, header.index(name)], lines) for name in names]
    return np.stack(columns, axis=1)


def read_column(path: str, name: str) -> np.ndarray:
    """One column of a data file as text, as it is written there: e.g. row identifiers.

    Args:
      path: a `.csv` with a header naming ``name``, or an `.npz` with a 1-D array ``name``.
      name: the column (csv) or array (npz).

    Returns:
      ``(n,)`` str, one cell per row, in the file's row order.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: the file lacks the column, names it twice, or the array is not 1-D.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} does not exist; check the path.")
    if sniff(path) == "zip":
        fix = f"save it with np.savez(path, x=..., {name}=...)"

        def choose(keys: set[str]) -> list[str]:
            if name not in keys:
                raise ValueError(f"{path!r} holds arrays {sorted(keys)}, not {name!r}: {fix}.")
            return [name]

        column = read_npz(path, choose, fix)[name]
        if column.ndim != 1:
            raise ValueError(
                f"{path!r}: {name} has shape {column.shape}; expected one value per row (n,)."
            )
        return column.astype(str)
    header, _, rows = read_csv_rows(path)
    if header.count(name) != 1:
        found = "names it more than once" if name in header else f"has {first_few(header)}"
        raise ValueError(
            f"{path!r} has no single column {name!r} (its header {found}); name one column."
        )
    return np.array([row[header.index(name)] for row in rows], dtype=str)
