"""A trained workdir's test metrics again, recomputed from its checkpoint.

* `evaluate_workdir`: the test metrics recomputed from the checkpoint and the data split
  (nothing is trained), with the confusion matrix and per-class precision, recall and F1;
  written to ``W/eval.json``.
* `check_same_data`: refuses data whose task, classes or standardisation differ from those
  the run was trained on.

The run comes from `jaxbp.run.inference.load_trained`, under that module's contract (which
parameters, in which precision). Every run is a member set (M ≥ 1); its evaluation reports
each member's test metrics, their mean (as ``summary.json``; for M = 1 the run's own), and the
ensemble's: the kept members' outputs averaged, as `jaxbp.run.inference` predicts; with
``member`` one member alone is evaluated, as a run of its own. Regression reports the RMSE and
MAE in the targets' units beside R² (`jaxbp.training.output_metrics`).

Uses the ``experiments`` extra (orbax-checkpoint, scikit-learn).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import backprop, losses, training
from jaxbp.data import Dataset
from jaxbp.run import inference, recipe
from jaxbp.run import workdir as workdir_lib

EVAL_FILE = "eval.json"
_STATISTICS = ("x_mean", "x_scale", "y_mean", "y_scale")
_STATISTICS_RTOL = 1e-12  # the same data give the same statistics; a changed row moves them more


class DataChangedError(ValueError):
    """The data loaded now are not the data the run was trained on."""


def evaluate_workdir(workdir: str, member: int | str | None = None) -> dict[str, Any]:
    """The test metrics of a trained workdir, recomputed from its checkpoint; also ``W/eval.json``.

    Loads the run's parameters (`jaxbp.run.inference.load_trained`) and its data split (the
    same split as training, by ``data_seed``), refuses data that differ from the training
    data (`check_same_data`), and evaluates the test split with `jaxbp.training.split_metrics`, as
    the run's ``summary.json`` did. Nothing is trained. For classification the predicted
    class is ``ŷ > 0.5`` for one output unit and ``argmax ŷ`` for several, as in the
    accuracy.

    Args:
      workdir: the workdir of a training run.
      member: None, a member set's ensemble (a single run itself); an index K or
        ``"best"``: that member alone (`jaxbp.run.inference.choose_member`).

    Returns:
      ``test_loss`` and ``test_accuracy`` (classification) or ``test_r2``, ``test_rmse`` and
      ``test_mae`` (regression, the last two in the targets' units), the keys of
      ``summary.json``: the means over the kept members (a single run: its own),
      with ``test_*_std``, ``members`` with each one's, and ``ensemble`` with the averaged
      outputs' metrics (the class report is the ensemble's); ``num_test_examples``;
      ``best_epoch`` (None: the latest state's parameters, or members of several); and for
      classification ``class_names``, ``confusion_matrix`` (a list of rows: row i counts
      the examples of true class i, column j those predicted as class j, both in
      ``class_names`` order) and ``precision``, ``recall`` and ``f1`` (dicts keyed by
      class name; 0 where a class is never predicted or never present); ``members_used``
      (the indices of the members the figures and class report come from) and
      ``predictions_from`` (that in words), and with ``member`` given, ``member_choice``.

    Raises:
      jaxbp.run.inference.NoSuchMemberError: when ``member`` names no member.
      jaxbp.run.inference.NotTrainedError, jaxbp.run.workdir.WorkdirError: see
        `jaxbp.run.inference.load_trained`.
      DataChangedError: when the data differ from those the run was trained on.
      FileNotFoundError, ValueError: when the run's data can no longer be loaded.
    """
    trained, used, source = inference.select_members(inference.load_trained(workdir), member)
    model, loss = trained.model, trained.loss
    task, class_names = trained.preprocessing["task"], trained.preprocessing["class_names"]
    y_scale = trained.preprocessing["y_scale"]
    with jax.enable_x64(trained.config.precision == "float64"):
        dataset = recipe.load_data(trained.config)
        check_same_data(trained.preprocessing, dataset, workdir)

        def evaluate(params, x, y):  # one program: the confusion matrix sees the accuracy's ŷ
            y_hat = backprop.apply(model, params, x, backward="autodiff")
            return training.split_metrics(model, loss, params, x, y, task, y_scale), y_hat

        evaluate = jax.vmap(evaluate, in_axes=(0, None, None))
        metrics, y_hat = jax.jit(evaluate)(trained.params, dataset.x_test, dataset.y_test)
        metrics = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
        y_hat = np.asarray(y_hat)
        result = _member_set_result(trained, metrics, y_hat, dataset.y_test)
        y_hat = y_hat[inference.kept(trained)].mean(axis=0)
    result["num_test_examples"] = len(dataset.x_test)
    result["best_epoch"] = trained.best_epoch
    result["members_used"], result["predictions_from"] = used, source
    if member is not None:
        result["member_choice"] = member
    if task == "classification":
        result.update(_class_report(dataset.y_test, y_hat, class_names))
    workdir_lib.write_atomic(os.path.join(workdir, EVAL_FILE), json.dumps(result, indent=2))
    return result


def _member_set_result(
    trained: inference.TrainedModel,
    metrics: dict[str, np.ndarray],
    y_hat: np.ndarray,
    y: np.ndarray,
) -> dict[str, Any]:
    """A member set's test metrics: the mean over members (and std), each member's, and the
    ensemble's (the kept members' ŷ averaged); the class report is the ensemble's."""
    kept = inference.kept(trained)
    result: dict[str, Any] = {f"test_{k}": float(v[kept].mean()) for k, v in metrics.items()}
    for k, v in metrics.items():
        result[f"test_{k}_mean"] = result[f"test_{k}"]  # as summary.json names them too
        result[f"test_{k}_std"] = float(v[kept].std())
    result["members"] = [
        {**member, **{f"test_{k}": float(v[i]) for k, v in metrics.items()}}
        for i, member in enumerate(trained.members)
    ]
    ensemble = y_hat[kept].mean(axis=0)
    loss_fn = losses.get_loss(trained.loss)
    with jax.enable_x64(trained.config.precision == "float64"):
        ensemble_hat, targets = jnp.asarray(ensemble), jnp.asarray(y)
        pre = trained.preprocessing
        quality = training.output_metrics(ensemble_hat, targets, pre["task"], pre["y_scale"])
        value = loss_fn.value(ensemble_hat, targets)
    result["ensemble"] = {
        "num_members": int(kept.sum()),
        "test_loss": float(value),
        **{f"test_{k}": float(v) for k, v in quality.items()},
    }
    return result


def check_same_data(preprocessing: dict[str, Any], dataset: Dataset, workdir: str) -> None:
    """Refuses data whose task, classes or standardisation differ from the stored ones.

    The statistics come from the training split, so a change confined to validation or test
    rows that leaves the classes as they were goes unnoticed.

    Raises:
      DataChangedError: naming what differs, stored against now.
    """
    now = recipe.Preprocessing.of(dataset)._asdict()
    differ = [k for k in ("task", "class_names") if preprocessing.get(k) != now[k]]
    differ += [k for k in _STATISTICS if not _same_numbers(preprocessing.get(k), now[k])]
    if differ:
        stored = {k: inference.brief(preprocessing.get(k)) for k in differ}
        loaded = {k: inference.brief(now[k]) for k in differ}
        raise DataChangedError(
            f"the {dataset.name} data loaded now are not those the run in {workdir} was "
            f"trained on: {', '.join(differ)} differ (checkpoint {stored}, now {loaded}). "
            "Restore the data the run was trained on, or train a new run on these."
        )


def _class_report(y: np.ndarray, y_hat: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Confusion matrix (rows true, columns predicted) and per-class P/R/F1 with scikit-learn."""
    from sklearn import metrics  # experiments extra

    true, predicted = inference.class_indices(y), inference.class_indices(y_hat)
    labels = np.arange(len(class_names))
    matrix = metrics.confusion_matrix(true, predicted, labels=labels)
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        true, predicted, labels=labels, average=None, zero_division=0
    )

    def by_class(values: np.ndarray) -> dict[str, float]:
        return {str(c): float(v) for c, v in zip(class_names, values, strict=True)}

    return {
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
        "precision": by_class(precision),
        "recall": by_class(recall),
        "f1": by_class(f1),
    }


def _same_numbers(a: list[float] | None, b: list[float] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and np.allclose(a, b, rtol=_STATISTICS_RTOL, atol=0.0)
