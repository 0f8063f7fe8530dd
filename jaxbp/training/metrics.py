"""What a model's outputs score on a split: the loss, and accuracy or R².

Contract: plain functions of the outputs and targets of a whole split, ``(n, nL)`` each,
returning scalars; the run layer maps them over members and splits.
"""

import jax
import jax.numpy as jnp

from jaxbp import backprop
from jaxbp.mlp import MLP, Params

Array = jax.Array


def split_metrics(
    model: MLP, loss: str, params: Params, x: Array, y: Array, task: str
) -> dict[str, Array]:
    """Loss and accuracy (classification) or R² (regression) on a whole split.

    Accuracy is argmax agreement for several outputs and ``ŷ > 0.5`` against ``y > 0.5`` for
    one; R² is ``1 − Σ(y − ŷ)² / Σ(y − ȳ)²`` over all outputs.

    Args:
      model, loss, params: the network, its loss name and parameters.
      x: ``(n, n0)``; y: ``(n, nL)``.
      task: ``"classification"`` or ``"regression"``.

    Returns:
      ``{"loss": ..., "accuracy": ...}`` or ``{"loss": ..., "r2": ...}``, scalars.
    """
    value = backprop.loss_value(model, loss, params, x, y)
    y_hat = backprop.apply(model, params, x, backward="autodiff")
    return {"loss": value, **output_metrics(y_hat, y, task)}


def output_metrics(y_hat: Array, y: Array, task: str) -> dict[str, Array]:
    """`split_metrics`'s accuracy or R² from outputs ``ŷ: (n, nL)`` alone (an ensemble's mean)."""
    if task == "regression":
        residual = jnp.sum((y - y_hat) ** 2)
        total = jnp.sum((y - jnp.mean(y, axis=0)) ** 2)
        return {"r2": 1 - residual / total}
    if y.shape[-1] == 1:
        correct = (y_hat[:, 0] > 0.5) == (y[:, 0] > 0.5)
    else:
        correct = jnp.argmax(y_hat, axis=-1) == jnp.argmax(y, axis=-1)
    return {"accuracy": jnp.mean(correct)}
