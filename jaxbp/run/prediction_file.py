"""Predictions as a csv file: the output `./launch.sh predict` writes.

Contract: `write_predictions` writes one row per example, atomically (a new file renamed
over the path, `jaxbp.run.workdir.write_atomic`), with the columns its docstring lists;
nothing is written when the arrays do not fit together.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from jaxbp.run import workdir as workdir_lib


def write_predictions(
    path: str,
    predictions: np.ndarray,
    probabilities: np.ndarray | None = None,
    class_names: list[str] | None = None,
    member_predictions: list[np.ndarray] | None = None,
    variances: np.ndarray | None = None,
    ids: tuple[str, np.ndarray] | None = None,
) -> None:
    """Writes predictions as a csv file, atomically (a new file renamed over ``path``).

    Columns: ``prediction`` (``prediction_0``, ``prediction_1``, ... for several regression
    targets), then one ``probability_<class>`` per class when ``probabilities`` are given,
    then ``member_0``, ``member_1``, ... with each member's prediction when
    ``member_predictions`` are given (a member set: ``prediction`` is then the ensemble's),
    then ``variance`` (``variance_0``, ...) when predictive ``variances``, shaped like
    ``predictions``, are given (a Laplace posterior's, for regression). With
    ``ids = (name, values)`` a first column ``name`` carries each row's identifier.
    Numbers are written in full (shortest round-trip digits of their dtype).

    Args:
      path: the csv file; its folder must exist.
      predictions: ``(n,)`` labels or values, or ``(n, k)`` values.
      probabilities: ``(n, num_classes)``, or None.
      class_names: the ``num_classes`` names that head the probability columns.

    Raises:
      FileNotFoundError: when the folder of ``path`` does not exist.
      ValueError: when ``path`` is a folder, or the arrays do not fit together.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"the folder {folder} of {path} does not exist; create it or write elsewhere."
        )
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; give the path of the csv file to write.")
    predictions = np.asarray(predictions)
    if predictions.ndim not in (1, 2):
        raise ValueError(
            f"predictions have shape {predictions.shape}; expected (n,) or (n, num_targets)."
        )
    n = len(predictions)
    columns = [predictions] if predictions.ndim == 1 else list(predictions.T)
    header = (
        ["prediction"]
        if predictions.ndim == 1
        else [f"prediction_{i}" for i in range(predictions.shape[1])]
    )
    prediction_header = list(header)
    if probabilities is not None:
        probabilities = np.asarray(probabilities)
        if class_names is None or probabilities.shape != (n, len(class_names)):
            given = None if class_names is None else len(class_names)
            raise ValueError(
                f"probabilities have shape {probabilities.shape}, but {n} predictions and "
                f"{given} class names need ({n}, {given}); pass the class_names of the "
                "probability columns."
            )
        columns += list(probabilities.T)
        header += [f"probability_{c}" for c in class_names]
    for k, member in enumerate(member_predictions or ()):
        member = np.asarray(member)
        if member.shape != predictions.shape or member.ndim != 1:
            raise ValueError(
                f"member {k}'s predictions have shape {member.shape}; expected ({n},), one "
                "label or value per row like the ensemble's."
            )
        columns.append(member)
        header.append(f"member_{k}")
    if variances is not None:
        variances = np.asarray(variances)
        if variances.shape != predictions.shape:
            raise ValueError(
                f"variances have shape {variances.shape}; expected {predictions.shape}, one per "
                "predicted value."
            )
        columns += [variances] if variances.ndim == 1 else list(variances.T)
        header += [h.replace("prediction", "variance") for h in prediction_header]
    if ids is not None:
        name, values = ids[0], np.asarray(ids[1])
        if values.shape != (n,):
            raise ValueError(
                f"the identifiers {name!r} have shape {values.shape}; expected ({n},), one per row."
            )
        columns.insert(0, values)
        header.insert(0, name)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(zip(*(map(str, column) for column in columns), strict=True))
    workdir_lib.write_atomic(path, text.getvalue())
