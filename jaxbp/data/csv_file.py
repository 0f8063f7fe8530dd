"""Reading a csv data file faithfully, or refusing it with one line.

The contract, stated once: a reader returns the file's cells exactly as written, parsed to
float64 where a column must be numeric, or raises a one-line `ValueError` that names the
file, the lines at fault, what was expected and the fix (`jaxbp.data.checks`). A csv has a
header row of names, then one example per line; blank lines are skipped.

* `read_csv_data`: a data set's csv: features, the target column and the feature names;
* `read_csv_test_data`: the data set's own test csv, with the training file's columns;
* `read_csv_rows`, `feature_column`: the rows of any csv and one numeric column of them,
  for `jaxbp.data.files` to read new examples' features.
"""

from __future__ import annotations

import contextlib
import csv

import numpy as np

from jaxbp.data.checks import (
    KINDS,
    cells_at,
    check_finite_cells,
    first_few,
    first_line,
    lines_at,
    repeated_names,
    sniff,
)


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
    header, lines, rows = read_csv_rows(path)
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
    x = np.stack([feature_column(path, header[j], body[:, j], lines) for j in features], axis=1)
    y = target_column_values(path, target_column, body[:, target], lines)
    return x, y, tuple(header[j] for j in features)


def read_csv_rows(path: str) -> tuple[list[str], list[int], list[list[str]]]:
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


def feature_column(path: str, name: str, cells: np.ndarray, lines: list[int]) -> np.ndarray:
    """Parses a csv feature column to float64, refusing empty, non-numeric or non-finite cells."""
    values, numeric = parse_floats(cells)
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


def target_column_values(path: str, name: str, cells: np.ndarray, lines: list[int]) -> np.ndarray:
    """The target as float64 if every cell is a number, as str if none is; a mix is refused."""
    empty = cells == ""
    if empty.any():
        raise ValueError(
            f"{path!r}: target column {name!r} has empty cells on "
            f"{first_few(lines_at(lines, empty), 'lines')}; expected a target in every row. "
            "Fill them in or drop those rows."
        )
    values, numeric = parse_floats(cells)
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


def parse_floats(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, parsed): float64 of each str cell (NaN where it is not a number), and a mask."""
    try:
        return np.asarray(cells.tolist(), dtype=np.float64), np.ones(len(cells), bool)
    except ValueError:  # some cell is not a number: find which, one at a time
        values, parsed = np.full(len(cells), np.nan), np.zeros(len(cells), bool)
        for i, cell in enumerate(cells):
            with contextlib.suppress(ValueError):
                values[i], parsed[i] = float(cell), True
        return values, parsed


def read_csv_test_data(
    path: str, target_column: str, feature_names: tuple[str, ...], train_path: str
) -> tuple[np.ndarray, np.ndarray]:
    """A csv data set's own test file: the training file's columns, in any order.

    Args:
      path: the test csv.
      target_column: the target's name, as in the training file.
      feature_names: the training file's features (`read_csv_data`), the column order of
        the returned features.
      train_path: the training csv, for the errors.

    Returns:
      ``(x_test, y_test)``: ``(n_test, len(feature_names))`` float64 in ``feature_names``
      order, and the target, float64 or str as the training file's is.

    Raises:
      ValueError: the header's columns differ from the training file's (named), or the
        target is numbers in one file and class names in the other, or the file cannot be
        read faithfully (`read_csv_data`).
    """
    x, y, names = read_csv_data(path, target_column)
    missing = [name for name in feature_names if name not in names]
    extra = [name for name in names if name not in feature_names]
    if missing or extra:
        differ = [f"lacks {first_few(missing)}"] if missing else []
        differ += [f"adds {first_few(extra)}"] if extra else []
        raise ValueError(
            f"{path!r}: its header {' and '.join(differ)} against the training file "
            f"{train_path!r}; a test file has the training file's columns. Make the headers "
            "the same."
        )
    return x[:, [names.index(name) for name in feature_names]], y
