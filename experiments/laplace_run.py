"""The Laplace posterior of a trained workdir: fitting each member, the mixture predictive,
the test metrics and the reliability diagram (what `experiments.laplace`, `experiments.predict
--laplace` and `experiments.laplace_figures` share; no flags here).

`load_run` and `load_split` are the one place that reads the run layer (the checkpoint and
the data split).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import backprop, calibration, laplace
from jaxbp.data import Dataset
from jaxbp.run import inference
from jaxbp.run import workdir as workdir_lib

LAPLACE_FILE = "laplace.json"
RELIABILITY_FILE = "reliability.png"


class Settings(NamedTuple):
    """How the posteriors are fitted: the flags, or those stored in ``W/laplace.json``."""

    structure: str = "kron"
    subset: str = "last_layer"
    tune: str = "val_nll"


def load_run(workdir: str) -> tuple[Any, Dataset]:
    """The trained run and its data split.

    Raises:
      jaxbp.run.inference.NotTrainedError, jaxbp.run.workdir.WorkdirError: no trained run in W.
      jaxbp.run.evaluation.DataChangedError: the data differ from those it was trained on.
    """
    trained = inference.load_trained(workdir)
    return trained, load_split(trained, workdir)


def load_split(trained: Any, workdir: str) -> Dataset:
    """The data split ``trained`` (from `jaxbp.run.inference.load_trained`) was trained on.

    Raises:
      jaxbp.run.evaluation.DataChangedError: the data differ from those it was trained on.
    """
    from jaxbp.run import evaluation, recipe

    with jax.enable_x64(trained.config.precision == "float64"):
        dataset = recipe.load_data(trained.config)
    evaluation.check_same_data(trained.preprocessing, dataset, workdir)
    return dataset


def members(trained: Any) -> list[Any]:
    """The kept members' parameters (one entry for a single run), as float64 arrays."""
    from jaxbp.run import inference

    params = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float64), trained.params)
    kept = np.flatnonzero(inference.kept(trained))
    return [jax.tree.map(lambda leaf, k=k: leaf[k], params) for k in kept]


def check_likelihood(trained: Any) -> str | None:
    """Why the run has no Laplace predictive here, or None."""
    task = trained.preprocessing["task"]
    likelihood = laplace.LIKELIHOODS[trained.loss]
    if task == "classification" and likelihood == "gaussian":
        return (
            f"the run is a classifier trained with {trained.loss}, which is no likelihood of "
            "classes: train it with the loss auto (softmax_cross_entropy or bce)."
        )
    if likelihood == "bernoulli" and trained.model.sizes[-1] != 1:
        return "the run has several sigmoid outputs (multi-label); the command takes one."
    return None


def fit_posteriors(
    trained: Any, dataset: Dataset, settings: Settings, stored: dict[str, Any] | None = None
) -> tuple[list[laplace.Posterior], list[laplace.Posterior]]:
    """One posterior per kept member, tuned as ``settings.tune`` says, and each one tuned the
    other way (for the report). With ``stored`` (a ``laplace.json``), its λ and σ are used."""
    x, y = (jnp.asarray(v, jnp.float64) for v in (dataset.x_train, dataset.y_train))
    chosen, other = [], []
    for k, params in enumerate(members(trained)):
        posterior = laplace.fit(
            trained.model,
            trained.loss,
            params,
            x,
            y,
            structure=settings.structure,
            subset=settings.subset,
        )
        if stored is not None:
            chosen.append(
                posterior.replace(
                    prior_precision=stored["prior_precision"][k],
                    sigma_noise=stored["sigma_noise"][k],
                )
            )
            continue
        by_val = laplace.optimize_prior(
            posterior, method="val_nll", x_val=dataset.x_val, y_val=dataset.y_val
        )
        by_marglik = laplace.optimize_prior(posterior, method="marglik")
        pair = (by_val, by_marglik) if settings.tune == "val_nll" else (by_marglik, by_val)
        chosen.append(pair[0])
        other.append(pair[1])
    return chosen, other


def map_outputs(trained: Any, x: np.ndarray) -> list[np.ndarray]:
    """Each kept member's ŷ at standardised rows ``x``, in float64."""
    x64 = jnp.asarray(x, jnp.float64)
    return [
        np.asarray(backprop.apply(trained.model, params, x64, backward="autodiff"))
        for params in members(trained)
    ]


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """``(n, C)`` class probabilities from softmax outputs, or ``[1 − p, p]`` from one unit."""
    outputs = np.asarray(outputs)
    return np.concatenate([1 - outputs, outputs], axis=1) if outputs.shape[1] == 1 else outputs


def mixture(
    posteriors: list[laplace.Posterior], x: np.ndarray
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The members' Laplace predictives, mixed: class probabilities ``(n, C)``, or for
    regression the mixture's mean and variance ``(n, nL)`` each."""
    x64 = jnp.asarray(x, jnp.float64)
    if posteriors[0].gaussian:
        pairs = [tuple(map(np.asarray, p.predictive(x64))) for p in posteriors]
        mean = np.mean([m for m, _ in pairs], axis=0)
        second = np.mean([v + m * m for m, v in pairs], axis=0)
        return mean, second - mean * mean
    return np.mean([class_probabilities(p.predictive(x64)) for p in posteriors], axis=0)


def class_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, NLL and ECE (15 bins) of class probabilities."""
    return {
        "test_accuracy": calibration.accuracy(probabilities, labels),
        "test_nll": calibration.negative_log_likelihood(probabilities, labels),
        "test_ece": calibration.expected_calibration_error(probabilities, labels),
    }


def gaussian_metrics(mean: np.ndarray, var: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """RMSE and mean Gaussian NLL (summed over outputs), in standardised units."""
    nll = 0.5 * np.log(2 * np.pi * var) + (y - mean) ** 2 / (2 * var)
    return {
        "test_rmse": float(np.sqrt(np.mean((y - mean) ** 2))),
        "test_nll": float(np.mean(np.sum(nll, axis=1))),
    }


def evaluate(
    trained: Any, dataset: Dataset, posteriors: list[laplace.Posterior]
) -> tuple[dict[str, Any], Any]:
    """``({"map": ..., "laplace": ...}, (MAP, Laplace) predictions)`` on the test split."""
    outputs = map_outputs(trained, dataset.x_test)
    y = np.asarray(dataset.y_test, np.float64)
    if posteriors[0].gaussian:
        mean = np.mean(outputs, axis=0)
        sigma2 = np.mean([p.sigma_noise**2 for p in posteriors])  # the MAP with the tuned σ
        laplace_mean, laplace_var = mixture(posteriors, dataset.x_test)
        return {
            "map": gaussian_metrics(mean, np.full_like(mean, sigma2), y),
            "laplace": gaussian_metrics(laplace_mean, laplace_var, y),
        }, None
    labels = inference.class_indices(y)
    map_probs = np.mean([class_probabilities(o) for o in outputs], axis=0)
    laplace_probs = mixture(posteriors, dataset.x_test)
    assert isinstance(laplace_probs, np.ndarray)
    result = {
        "map": class_metrics(map_probs, labels),
        "laplace": class_metrics(laplace_probs, labels),
    }
    return result, (map_probs, laplace_probs, labels)


def plot_reliability(path: str, predictions: Any, title: str) -> None:
    """MAP and Laplace reliability diagrams side by side, written atomically to ``path``."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    map_probs, laplace_probs, labels = predictions
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    edges = np.linspace(0, 1, calibration.NUM_BINS + 1)
    for ax, name, probs in zip(axes, ("MAP", "Laplace"), (map_probs, laplace_probs), strict=True):
        bins = calibration.reliability(probs, labels)
        ece = calibration.expected_calibration_error(probs, labels)
        filled = bins.counts > 0
        ax.bar(
            edges[:-1][filled],
            bins.accuracy[filled],
            width=1 / len(bins.counts),
            align="edge",
            edgecolor="black",
            alpha=0.7,
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
        ax.plot(
            bins.confidence[filled],
            bins.accuracy[filled],
            "o",
            color="C3",
            ms=4,
            label="(mean confidence, accuracy)",
        )
        ax.set(
            title=f"{name}: ECE {ece:.4f}",
            xlabel="confidence (top probability)",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("accuracy")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    workdir_lib.write_atomic(path, buffer.getvalue())


def predict_raw(
    workdir: str, trained: Any, x_raw: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The Laplace predictive for raw rows: ``(predictions, probabilities, variances)``.

    The posteriors are those ``W/laplace.json`` describes (its structure, subset and tuned
    λ, σ) when the ``laplace`` command has run, else the defaults (`Settings`) tuned on the
    validation NLL. Classes: the labels of the most probable class and the class
    probabilities; regression: the mean and the predictive variance, in the target's units.
    """
    import json
    import os

    from jaxbp.run import inference

    path = os.path.join(workdir, LAPLACE_FILE)
    stored = None
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
    settings = Settings(*(stored[k] for k in Settings._fields)) if stored else Settings()
    x = inference.standardise(trained, x_raw)
    dataset = load_split(trained, workdir)
    pre = trained.preprocessing
    with jax.enable_x64(True):
        posteriors, _ = fit_posteriors(trained, dataset, settings, stored)
        predicted = mixture(posteriors, x)
    if isinstance(predicted, tuple):
        mean, var = predicted
        scale = np.asarray(pre["y_scale"])
        values, variances = mean * scale + np.asarray(pre["y_mean"]), var * scale**2
        if values.shape[1] == 1:
            return values[:, 0], None, variances[:, 0]
        return values, None, variances
    labels = np.asarray(pre["class_names"])[np.argmax(predicted, axis=1)]
    return labels, predicted, None
