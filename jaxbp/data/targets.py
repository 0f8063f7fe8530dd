"""What a user file's target column is: class labels or numbers to regress.

The contract, stated once: `read_targets(y, task, where)` returns the target as class labels
0..C-1 with their names, or as float64 values, following the requested ``task``, or raises a
one-line `ValueError` naming where the target came from, what it holds and the ``task`` that
reads it. ``task`` is one of `TASKS`:

* ``"classification"``: integer values, names or one-hot rows are class labels; a number
  that is not an integer is refused (no silent rounding into classes);
* ``"regression"``: numbers (one-hot rows too) are values; class names are refused;
* ``"auto"``: names and one-hot rows are class labels; numbers are class labels when they
  are of an integer dtype or integer-valued with at most `MAX_CLASSES` distinct values, and
  values otherwise. An integer-dtype target with more than `MAX_CLASSES` distinct values of
  which more than half appear once (prices, counts, identifiers) is refused: most of its
  classes would have one example and no classifier can learn them, yet it is stored as
  integers, so which one was meant is the user's to say.
"""

from __future__ import annotations

import numpy as np

from jaxbp.data.checks import first_few

AUTO = "auto"
TASKS: tuple[str, ...] = (AUTO, "classification", "regression")
MAX_CLASSES = 20  # auto reads integer values as class labels up to this many distinct ones

Targets = tuple[np.ndarray, str, tuple[str, ...] | None]  # (labels or values, task, names)


def read_targets(y: np.ndarray, task: str, where: str) -> Targets:
    """The target ``y`` read as the ``task`` says (see the module docstring).

    Args:
      y: ``(n,)`` numbers or strings, or ``(n, k)`` numbers (one-hot rows or k values).
      task: one of `TASKS`.
      where: the source, for the errors (e.g. the file's name).

    Returns:
      ``(labels, "classification", class_names)`` with int labels 0..C-1 indexing the sorted
      class names, or ``(values, "regression", None)`` with float64 values of ``y``'s shape.

    Raises:
      ValueError: ``task`` is not one of `TASKS`, or the target cannot be read as it says,
        or ``task`` is auto and the target is ambiguous; the message names the fix.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}; pass one of them.")
    if y.ndim == 2 and y.shape[1] > 1:
        return _columns(y, task, where)
    y = y.reshape(len(y))
    try:
        values = y.astype(np.float64)
    except ValueError:  # non-numeric: class names
        classes, labels = np.unique(y.astype(str), return_inverse=True)
        if task == "regression":
            raise ValueError(
                f"{where}: the target holds class names {first_few(classes.tolist())}, not "
                "numbers, so it cannot be regressed; use task=classification (or auto), or "
                "choose a numeric target."
            ) from None
        return labels, "classification", tuple(str(c) for c in classes)
    if task == "regression":
        return values, "regression", None
    classes, labels, counts = np.unique(values, return_inverse=True, return_counts=True)
    integers = bool(np.all(classes == np.round(classes)))
    names = tuple(str(int(c)) for c in classes) if integers else ()
    if task == "classification":
        if not integers:
            fractional = ", ".join(f"{v:g}" for v in classes[classes != np.round(classes)][:3])
            raise ValueError(
                f"{where}: the target has values that are not integers (e.g. {fractional}), "
                "so they are not class labels; use task=regression (or auto), or encode the "
                "classes as integers or names."
            )
        return labels, "classification", names
    if y.dtype.kind in "biu" and len(classes) > MAX_CLASSES:
        once = int((counts == 1).sum())
        if 2 * once > len(classes):
            raise ValueError(
                f"{where}: the integer target has {len(classes)} distinct values and {once} of "
                "them appear only once: as class labels most classes would have one example. "
                "Say what it is: task=regression for numbers (prices, counts), "
                "task=classification for class labels."
            )
    if y.dtype.kind in "biu" or (integers and len(classes) <= MAX_CLASSES):
        return labels, "classification", names
    return values, "regression", None


def _columns(y: np.ndarray, task: str, where: str) -> Targets:
    """A ``(n, k)`` target: one-hot rows are class labels unless the task is regression."""
    one_hot = bool(np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all())
    if task != "regression" and one_hot:
        return y.argmax(axis=1), "classification", tuple(str(c) for c in range(y.shape[1]))
    if task == "classification":
        raise ValueError(
            f"{where}: the target has {y.shape[1]} columns whose rows are not one-hot, so they "
            "are not class labels; use task=regression (or auto), or save one label per row "
            "or one-hot rows."
        )
    return y.astype(np.float64), "regression", None
