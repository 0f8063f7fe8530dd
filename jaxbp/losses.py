"""Losses, each kept beside its hand-written ∂L/∂ŷ and the facts that go with it.

Contract: every loss is a batch loss over ``y_hat, y: (batch, n_out)``. Its `Loss.reduction`
says how the per-example losses combine: ``"mean"``, L = 1/n Σ L_i as in eqs. (1.2)-(1.3)
of docs/derivations.md, for all but ``"sse"``, which is the plain ``"sum"`` of eq. (2.1)
(ℒ = Σ (s − y)²).

Two losses are *fused* with their output activation: binary cross-entropy with a sigmoid
and softmax cross-entropy with a softmax. For them the output δ collapses to
``δ^[L] = (ŷ − y) / n`` (eq. (0.6)) and the value is computed from the logits ``z^[L]``, so
saturated units (|z| ~ 1e3) give finite losses and gradients; they need that output
activation. The regression losses fit an identity output and train any other.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array

REDUCTIONS = ("mean", "sum")


class Loss(NamedTuple):
    """A loss, its hand-written gradient and what it fits (eqs. (1.5), (4.3)).

    Attributes:
      name: the name used by `loss_and_grad` (e.g. ``"mse"``).
      value: ``(y_hat, y) -> scalar`` from the network's outputs.
      grad: ``(y_hat, y) -> ∂L/∂ŷ``, shape of ``y_hat``; written by hand, no autodiff.
      reduction: ``"mean"`` (L = 1/n Σ_i L_i, eq. (1.2)) or ``"sum"`` (L = Σ_i L_i).
      output_activation: the output activation the loss fits; a fused loss needs it.
      value_from_logits: fused losses only: ``(z, y) -> scalar`` from the logits.
      delta_from_output: fused losses only: ``(y_hat, y) -> δ^[L] = (ŷ − y) / n``.
    """

    name: str
    value: Callable[[Array, Array], Array]
    grad: Callable[[Array, Array], Array]
    reduction: str
    output_activation: str
    value_from_logits: Callable[[Array, Array], Array] | None = None
    delta_from_output: Callable[[Array, Array], Array] | None = None

    @property
    def fused(self) -> bool:
        """Whether δ^[L] and the value are written through the output activation."""
        return self.delta_from_output is not None

    def fits(self, output_activation: str) -> bool:
        """Whether the loss can train a network with this output activation.

        A fused loss needs its own (its δ^[L] = (ŷ − y)/n holds for it alone); the regression
        losses take any.
        """
        return not self.fused or output_activation == self.output_activation

    def batch_weight(self, batch_size: int) -> float:
        """``w`` in ``L = w Σ_i L_i``: 1/n for a mean (eq. (1.2)), 1 for a sum."""
        return 1.0 if self.reduction == "sum" else 1.0 / batch_size


def _batch_size(y: Array) -> int:
    return y.shape[0]


def _mse(y_hat: Array, y: Array) -> Array:
    # eq. (1.2): L = 1/n Σ_i ‖y_i − ŷ_i‖².
    return jnp.sum((y_hat - y) ** 2) / _batch_size(y)


def _mse_grad(y_hat: Array, y: Array) -> Array:
    # eq. (1.5): ∂L_i/∂ŷ_i = 2(ŷ_i − y_i), averaged as in eq. (1.3).
    return 2 * (y_hat - y) / _batch_size(y)


def _half_mse(y_hat: Array, y: Array) -> Array:
    # eq. (4.2): L = ½‖y − ŷ‖², averaged over the batch.
    return 0.5 * jnp.sum((y_hat - y) ** 2) / _batch_size(y)


def _half_mse_grad(y_hat: Array, y: Array) -> Array:
    # eq. (4.3): ∂L/∂ŷ = ŷ − y.
    return (y_hat - y) / _batch_size(y)


def _sse(y_hat: Array, y: Array) -> Array:
    # eq. (2.1): ℒ = r:r with r = s − y, summed, not averaged.
    return jnp.sum((y_hat - y) ** 2)


def _sse_grad(y_hat: Array, y: Array) -> Array:
    # eq. (2.5): dℒ = 2r:dr, so ∂ℒ/∂s = 2(s − y).
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
        Loss("mse", _mse, _mse_grad, "mean", "identity"),
        Loss("half_mse", _half_mse, _half_mse_grad, "mean", "identity"),
        Loss("sse", _sse, _sse_grad, "sum", "identity"),
        Loss("bce", _bce, _bce_grad, "mean", "sigmoid", _bce_from_logits, _bce_delta),
        Loss(
            "softmax_cross_entropy",
            _cross_entropy,
            _cross_entropy_grad,
            "mean",
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
    if output_activation is not None and not loss.fits(output_activation):
        raise ValueError(
            f"loss {name!r} needs output_activation={loss.output_activation!r}, but the model "
            f"has {output_activation!r}: build the MLP with "
            f"output_activation={loss.output_activation!r}."
        )
    return loss


def default_output_activation(loss_name: str) -> str:
    """The output activation a loss fits: sigmoid for bce, softmax for softmax cross-entropy,
    identity for the regression losses.

    Raises:
      ValueError: for an unknown loss name.
    """
    return get_loss(loss_name).output_activation


def check_targets(loss_name: str, y: np.ndarray | jax.Array) -> None:
    """Refuses targets a loss cannot fit; meant for host arrays, before training.

    No loss fits a NaN or infinite target. bce takes targets in [0, 1] (labels or
    probabilities of the positive class); softmax cross-entropy takes rows of non-negative
    entries summing to one (one-hot labels or class probabilities). The regression losses
    take any finite targets.

    Args:
      loss_name: one of `LOSSES`.
      y: the targets, ``(batch, n_out)`` (``(batch,)`` for one output unit); a device array
        is copied to the host.

    Raises:
      ValueError: naming the targets' problem and its fix.
    """
    loss = get_loss(loss_name)
    y = np.asarray(y)
    if y.size == 0:
        return
    if not np.all(np.isfinite(y)):
        raise ValueError(
            f"{loss_name} targets must be finite, got {np.count_nonzero(~np.isfinite(y))} NaN "
            "or infinite entries: drop or impute those examples before training."
        )
    low, high = float(y.min()), float(y.max())
    if loss.output_activation == "sigmoid" and (low < 0 or high > 1):
        raise ValueError(
            f"{loss_name} targets must lie in [0, 1], got values from {low:g} to {high:g}: use "
            "0/1 labels or probabilities of the positive class (for ±1 labels, (y + 1) / 2)."
        )
    if loss.output_activation == "softmax":
        if y.ndim < 2:
            raise ValueError(
                f"{loss_name} takes one row of class probabilities per example, got y of "
                f"shape {y.shape}: one-hot encode class labels with "
                "jax.nn.one_hot(labels, num_classes)."
            )
        if low < 0:
            raise ValueError(
                f"{loss_name} targets must be non-negative, got a minimum of {low:g}: use "
                "one-hot labels (jax.nn.one_hot(labels, num_classes)) or class probabilities."
            )
        sums = y.sum(axis=-1)
        # Rounding of probabilities computed in y's precision, not a modelling tolerance.
        dtype = y.dtype if np.issubdtype(y.dtype, np.floating) else np.float64
        if np.max(np.abs(sums - 1)) > np.sqrt(np.finfo(dtype).eps):
            raise ValueError(
                f"{loss_name} target rows must sum to 1, got row sums from {sums.min():g} to "
                f"{sums.max():g}: one-hot encode class labels with "
                "jax.nn.one_hot(labels, num_classes), or divide each row by its sum."
            )
