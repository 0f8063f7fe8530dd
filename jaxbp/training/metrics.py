"""What a model's outputs score on a split: the loss, and accuracy or R² (and for
regression, given the targets' scales, the RMSE and MAE in the targets' own units).

Contract: plain functions of the outputs and targets of a whole split, ``(n, nL)`` each,
returning scalars; the run layer maps them over members and splits.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxbp import backprop
from jaxbp.mlp import MLP, Params

Array = jax.Array


def split_metrics(
    model: MLP,
    loss: str,
    params: Params,
    x: Array,
    y: Array,
    task: str,
    y_scale: Sequence[float] | None = None,
) -> dict[str, Array]:
    """Loss and accuracy (classification) or R² (regression) on a whole split.

    Accuracy is argmax agreement for several outputs and ``ŷ > 0.5`` against ``y > 0.5`` for
    one; R² is ``1 − Σ(y − ŷ)² / Σ(y − ȳ)²`` over all outputs.

    Args:
      model, loss, params: the network, its loss name and parameters.
      x: ``(n, n0)``; y: ``(n, nL)``.
      task: ``"classification"`` or ``"regression"``.
      y_scale: ``(nL,)``, regression only: the scale each standardised target was divided
        by (`jaxbp.data.Dataset.y_scale`); with it the metrics add ``rmse`` and ``mae`` in
        the targets' units (`output_metrics`).

    Returns:
      ``{"loss": ..., "accuracy": ...}`` or ``{"loss": ..., "r2": ...}`` (with ``rmse`` and
      ``mae`` given ``y_scale``), scalars.
    """
    value = backprop.loss_value(model, loss, params, x, y)
    y_hat = backprop.apply(model, params, x, backward="autodiff")
    return {"loss": value, **output_metrics(y_hat, y, task, y_scale)}


def output_metrics(
    y_hat: Array, y: Array, task: str, y_scale: Sequence[float] | None = None
) -> dict[str, Array]:
    """`split_metrics`'s metrics from outputs ``ŷ: (n, nL)`` alone (an ensemble's mean).

    For regression with ``y_scale: (nL,)`` the errors are put back in the targets' units,
    e_ij = (ŷ_ij − y_ij) · y_scale_j (the standardisation's mean cancels), and averaged
    over every row *and* output: ``rmse = √(1/(n·nL) Σ_ij e_ij²)`` and ``mae = 1/(n·nL)
    Σ_ij |e_ij|``. For one target they are the usual RMSE and MAE; for several they pool
    the outputs' errors, each in its own unit, so outputs of larger units weigh more.
    """
    if task == "regression":
        residual = jnp.sum((y - y_hat) ** 2)
        total = jnp.sum((y - jnp.mean(y, axis=0)) ** 2)
        metrics = {"r2": 1 - residual / total}
        if y_scale is not None:
            error = (y_hat - y) * jnp.asarray(y_scale, y_hat.dtype)
            metrics["rmse"] = jnp.sqrt(jnp.mean(error**2))
            metrics["mae"] = jnp.mean(jnp.abs(error))
        return metrics
    if y.shape[-1] == 1:
        correct = (y_hat[:, 0] > 0.5) == (y[:, 0] > 0.5)
    else:
        correct = jnp.argmax(y_hat, axis=-1) == jnp.argmax(y, axis=-1)
    return {"accuracy": jnp.mean(correct)}
