"""Reading .npz and csv data files faithfully, or refusing them with one line.

The contract, stated once: a reader returns arrays exactly as the file holds them, or raises
a one-line `ValueError` (`FileNotFoundError` for a missing file) that names the file, what
was expected and the fix (`jaxbp.data.idx` reads MNIST's IDX files alike). The kind of a
file is told from its first bytes (`jaxbp.data.checks.sniff`), not its name, except where
the content cannot tell; an .npz is read without unpickling; every number must be finite
(`jaxbp.data.checks`).

* `read_npz_data` and `read_csv_data`: a data set's arrays or columns, for `jaxbp.data`
  to infer the task from and split.
* `read_features`: the raw features of new examples, in a model's column order.
"""

from __future__ import annotations

import contextlib
import csv
import os
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np

from jaxbp.data.checks import (
    KINDS,
    cells_at,
    check_features,
    check_finite_cells,
    check_target_array,
    first_few,
    first_line,
    flat,
    lines_at,
    repeated_names,
    sniff,
)

# A loader's own failures on damaged files: zip and gzip errors are not ValueErrors.
_DAMAGED = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


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
        return _read_npz_features(path, names)
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
    header, lines, rows = _read_csv(path)
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
    columns = [_feature_column(path, name, body[:, header.index(name)], lines) for name in names]
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

        column = _read_npz(path, choose, fix)[name]
        if column.ndim != 1:
            raise ValueError(
                f"{path!r}: {name} has shape {column.shape}; expected one value per row (n,)."
            )
        return column.astype(str)
    header, _, rows = _read_csv(path)
    if header.count(name) != 1:
        found = "names it more than once" if name in header else f"has {first_few(header)}"
        raise ValueError(
            f"{path!r} has no single column {name!r} (its header {found}); name one column."
        )
    return np.array([row[header.index(name)] for row in rows], dtype=str)


def _read_csv(path: str) -> tuple[list[str], list[int], list[list[str]]]:
    """Returns (header, line number of each row, rows) with stripped cells; blank lines skipped."""
    kind = sniff(path)
    if kind != "text":
        fix = (
            "load an .npz archive with load_dataset('npz', path=...)"
            if kind == "zip"
            else "pass a csv text file"
        )
        raise ValueError(
            f"{path!r} is {KINDS[kind]}; expected a csv text file with a header row: {fix}."
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
            f"{path!r} is not UTF-8 text ({first_line(e)}); expected a UTF-8 csv. Save it as UTF-8."
        ) from e
    except csv.Error as e:
        raise ValueError(
            f"{path!r} is not a readable csv ({first_line(e)}); expected comma-separated text. "
            "Pass a csv file."
        ) from e
    if not rows:
        raise ValueError(f"{path!r} is empty; expected a header row then the examples.")
    header = rows[0]
    bad = [line for line, row in zip(lines[1:], rows[1:], strict=True) if len(row) != len(header)]
    if bad:
        raise ValueError(
            f"{path!r}: {first_few(bad, 'lines')} do not have {len(header)} cells like the header; "
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
            f"{first_few(lines_at(lines, empty), 'lines')}; expected a number in every cell. "
            "Fill them in or drop those rows."
        )
    if not numeric.all():
        raise ValueError(
            f"{path!r}: feature column {name!r} is not numeric "
            f"({cells_at(cells, lines, ~numeric)}); encode it as numbers or drop it."
        )
    check_finite_cells(path, f"feature column {name!r}", values, lines)
    return values


def _target_column(path: str, name: str, cells: np.ndarray, lines: list[int]) -> np.ndarray:
    """The target as float64 if every cell is a number, as str if none is; a mix is refused."""
    empty = cells == ""
    if empty.any():
        raise ValueError(
            f"{path!r}: target column {name!r} has empty cells on "
            f"{first_few(lines_at(lines, empty), 'lines')}; expected a target in every row. "
            "Fill them in or drop those rows."
        )
    values, numeric = _parse_floats(cells)
    if not numeric.any():
        return cells.astype(str)  # class names
    if not numeric.all():  # e.g. one "n/a" among floats would otherwise make ~n classes
        raise ValueError(
            f"{path!r}: target column {name!r} is numeric but has non-numeric cells "
            f"({cells_at(cells, lines, ~numeric)}); fix or drop those rows (class names must all "
            "be non-numeric)."
        )
    check_finite_cells(path, f"target column {name!r}", values, lines)
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


def _read_npz(path: str, choose, fix: str) -> dict[str, np.ndarray]:
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
    width = flat(x).shape[1]
    if width != len(names):
        hint = f" (one example is shape (1, {len(names)}))" if x.shape == (len(names),) else ""
        raise ValueError(
            f"{path!r}: x has shape {x.shape}, {width} features per row; expected "
            f"{len(names)} ({first_few(names)}){hint}. Save the features the model was trained on."
        )
    check_features(x, repr(path), "x")
    return flat(x).astype(np.float64)


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


def read_csv_data(
    path: str, target_column: str | None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """A data set's csv: features `(n, d)` float64, the target column, the feature names.

    The target is float64 if every cell is a number, str if none is (`target_column`).

    Raises:
      ValueError: `target_column` is None or not in the header, or the file cannot be
        read faithfully (duplicate names, no rows, no features, bad cells).
    """
    if target_column is None:
        raise ValueError("Dataset 'csv' needs target_column=...; pass the target's column name.")
    header, lines, rows = _read_csv(path)
    repeated = repeated_names(header)
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
    return x, y, tuple(header[j] for j in features)
