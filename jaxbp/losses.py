"""Losses, each kept beside its hand-written ∂L/∂ŷ.

Contract: every loss is a batch loss over ``y_hat, y: (batch, n_out)``. All but ``"sse"``
are the mean over the batch of a per-example loss, as in seed 000 (L = 1/n Σ L_i,
eqs. 2-4); ``"sse"`` is the plain sum of seed 001 (ℒ = Σ (s − y)²).

Two losses are *fused* with their output activation: binary cross-entropy with a sigmoid
and softmax cross-entropy with a softmax. For them the output δ collapses to
``δ^[L] = (ŷ − y) / n`` and the value is computed from the logits ``z^[L]``, so saturated
units (|z| ~ 1e3) give finite losses and gradients.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


class Loss(NamedTuple):
    """A loss and its hand-written gradient (seed 000 eq. 11, seed 003 Step 1).

    Attributes:
      name: the name used by `loss_and_grad` (e.g. ``"mse"``).
      value: ``(y_hat, y) -> scalar`` from the network's outputs.
      grad: ``(y_hat, y) -> ∂L/∂ŷ``, shape of ``y_hat``; written by hand, no autodiff.
      output_activation: the output activation the loss requires, or None for any.
      value_from_logits: fused losses only: ``(z, y) -> scalar`` from the logits.
      delta_from_output: fused losses only: ``(y_hat, y) -> δ^[L] = (ŷ − y) / n``.
    """

    name: str
    value: Callable[[Array, Array], Array]
    grad: Callable[[Array, Array], Array]
    output_activation: str | None = None
    value_from_logits: Callable[[Array, Array], Array] | None = None
    delta_from_output: Callable[[Array, Array], Array] | None = None


def _batch_size(y: Array) -> int:
    return y.shape[0]


def _mse(y_hat: Array, y: Array) -> Array:
    # seed 000 eq. 2: L = 1/n Σ_i ‖y_i − ŷ_i‖².
    return jnp.sum((y_hat - y) ** 2) / _batch_size(y)


def _mse_grad(y_hat: Array, y: Array) -> Array:
    # seed 000 eq. 11: ∂L_i/∂ŷ_i = 2(ŷ_i − y_i), averaged as in eq. 3.
    return 2 * (y_hat - y) / _batch_size(y)


def _half_mse(y_hat: Array, y: Array) -> Array:
    # seed 003: L = ½‖y − ŷ‖², averaged over the batch.
    return 0.5 * jnp.sum((y_hat - y) ** 2) / _batch_size(y)


def _half_mse_grad(y_hat: Array, y: Array) -> Array:
    # seed 003, Step 1: ∂L/∂ŷ = ŷ − y.
    return (y_hat - y) / _batch_size(y)


def _sse(y_hat: Array, y: Array) -> Array:
    # seed 001: ℒ = r:r with r = s − y, summed, not averaged.
    return jnp.sum((y_hat - y) ** 2)


def _sse_grad(y_hat: Array, y: Array) -> Array:
    # seed 001, second answer: dℒ = 2r:dr, so ∂ℒ/∂s = 2(s − y).
    return 2 * (y_hat - y)


def _bce(y_hat: Array, y: Array) -> Array:
    # −[y log ŷ + (1 − y) log(1 − ŷ)] from probabilities: exact away from saturation only;
    # the training path uses `_bce_from_logits`.
    return -jnp.sum(y * jnp.log(y_hat) + (1 - y) * jnp.log1p(-y_hat)) / _batch_size(y)


def _bce_grad(y_hat: Array, y: Array) -> Array:
    return (y_hat - y) / (y_hat * (1 - y_hat)) / _batch_size(y)


def _bce_from_logits(z: Array, y: Array) -> Array:
    return jnp.sum(optax.sigmoid_binary_cross_entropy(z, y)) / _batch_size(y)


def _cross_entropy(y_hat: Array, y: Array) -> Array:
    return -jnp.sum(y * jnp.log(y_hat)) / _batch_size(y)


def _cross_entropy_grad(y_hat: Array, y: Array) -> Array:
    return -y / y_hat / _batch_size(y)


def _cross_entropy_from_logits(z: Array, y: Array) -> Array:
    return jnp.sum(optax.softmax_cross_entropy(z, y)) / _batch_size(y)


def _bce_delta(y_hat: Array, y: Array) -> Array:
    # σ'(z)·∂L/∂ŷ = ŷ(1 − ŷ)·(ŷ − y)/(ŷ(1 − ŷ)) = ŷ − y: no division by a saturated ŷ(1 − ŷ).
    return (y_hat - y) / _batch_size(y)


def _cross_entropy_delta(s: Array, y: Array) -> Array:
    # s ∘ (ḡ − ⟨ḡ, s⟩) with ḡ = −y/s gives s·Σ_j y_j − y, which is s − y for one-hot or
    # probability targets (rows summing to one).
    return (s * jnp.sum(y, axis=-1, keepdims=True) - y) / _batch_size(y)


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("mse", _mse, _mse_grad),
        Loss("half_mse", _half_mse, _half_mse_grad),
        Loss("sse", _sse, _sse_grad),
        Loss("bce", _bce, _bce_grad, "sigmoid", _bce_from_logits, _bce_delta),
        Loss(
            "softmax_cross_entropy",
            _cross_entropy,
            _cross_entropy_grad,
            "softmax",
            _cross_entropy_from_logits,
            _cross_entropy_delta,
        ),
    )
}


def get_loss(name: str, output_activation: str | None = None) -> Loss:
    """Looks up a loss and checks it fits the network's output activation.

    Args:
      name: one of `LOSSES`.
      output_activation: the network's output activation; when given, a loss that needs a
        particular one (bce: sigmoid; softmax_cross_entropy: softmax) is checked against it.

    Returns:
      The `Loss`.

    Raises:
      ValueError: for an unknown name or a mismatched output activation.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: expected one of {', '.join(LOSSES)}.")
    loss = LOSSES[name]
    needed = loss.output_activation
    if output_activation is not None and needed is not None and output_activation != needed:
        raise ValueError(
            f"loss {name!r} needs output_activation={needed!r}, but the model has "
            f"{output_activation!r}: build the MLP with output_activation={needed!r}."
        )
    return loss
