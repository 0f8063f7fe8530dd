"""Every layer's z, a and δ of one forward and backward pass: the derivation's quantities.

Contract: `trace` runs the forward pass of `jaxbp.forward_layers` and the same δ recursion
as the backward pass (`jaxbp.backprop.layer_deltas`, eq. (3.6) of docs/derivations.md) and
returns one `LayerTrace` per layer, so a learner can read off z^[k], a^[k] and δ^[k] and check
``∂L/∂W^[k] = δ^[k]ᵀ a^[k−1]`` against `jaxbp.loss_and_grad`.
"""

from typing import NamedTuple

import jax

from jaxbp import backprop
from jaxbp import mlp as mlp_lib
from jaxbp.mlp import MLP, Params

Array = jax.Array


class LayerTrace(NamedTuple):
    """One layer's values in a forward and backward pass.

    Attributes:
      z: ``z^[k]: (batch, n_k)``, the pre-activation.
      a: ``a^[k] = g(z^[k]): (batch, n_k)``, the activation (``ŷ`` for the last layer).
      delta: ``δ^[k] = ∂L/∂z^[k]: (batch, n_k)``: of the batch loss, or with
        ``per_example=True`` row i is ``δ_i^[k] = ∂L_i/∂z_i^[k]`` of example i's own loss.
    """

    z: Array
    a: Array
    delta: Array


def trace(
    model: MLP, loss: str, params: Params, x: Array, y: Array, *, per_example: bool = False
) -> tuple[LayerTrace, ...]:
    """Every layer's ``z^[k]``, ``a^[k]`` and ``δ^[k]``: the quantities of the derivation.

    The forward pass of `jaxbp.forward_layers`, then the output δ of the loss and the same
    recursion the backward pass runs (`layer_deltas`, eq. (3.6)), so that for every layer
    ``∂L/∂W^[k] = trace[k].delta.T @ a^[k−1]`` (eq. (0.3), with ``a^[0] = x``) is the
    gradient `loss_and_grad` returns.

    The batch δ and the derivations' per-example δ differ by the loss's reduction. A mean
    loss ``L = 1/B Σ_i L_i`` has ``∂L/∂z_i^[k] = δ_i^[k] / B``: row i of the batch δ is
    example i's own δ divided by B (eq. (0.4)); for ``"sse"``, a sum, the rows are
    the per-example δ themselves. ``per_example=True`` returns the ``δ_i^[k]`` of each
    example's own loss ``L_i`` (B times the batch δ for the mean losses), the δ that the
    one-example derivations write.

    Names and shapes are checked; values are not (NaN inputs, targets outside the loss's
    domain): `jaxbp.check_inputs` checks them eagerly.

    Args:
      model: the network.
      loss: a name from `jaxbp.LOSSES`.
      params: the parameters.
      x: ``(batch, n0)``.
      y: ``(batch, nL)`` targets (``(batch,)`` for a single output unit).
      per_example: whether ``delta`` holds each example's own ``δ_i`` (True) or the batch
        loss's ``∂L/∂z^[k]`` (False).

    Returns:
      ``(LayerTrace for layer 1, ..., LayerTrace for layer L)``: ``trace[k - 1]`` is layer k.

    Examples:
      >>> import jax, jaxbp
      >>> model = jaxbp.MLP((3, 4, 2))
      >>> params = jaxbp.init_params(jax.random.key(0), model)
      >>> x, y = jax.numpy.ones((5, 3)), jax.numpy.zeros((5, 2))
      >>> layers = jaxbp.trace(model, "mse", params, x, y)
      >>> [layer.delta.shape for layer in layers]
      [(5, 4), (5, 2)]
      >>> _, grads = jaxbp.loss_and_grad(model, "mse", params, x, y)
      >>> bool(jax.numpy.allclose(grads[1]["W"], layers[1].delta.T @ layers[0].a))
      True
    """
    loss_fn, x, y = backprop.check_loss_inputs(model, loss, params, x, y)
    forward = mlp_lib.forward_layers(model, params, x)
    residuals = backprop.Residuals(tuple(layer["W"] for layer in params), forward.a)
    y_hat = forward.a[-1]
    if per_example:
        delta = backprop.example_output_deltas(model, loss_fn, y_hat, y)
    else:
        delta = backprop.loss_output_delta(model, loss_fn, y_hat, y)
    deltas = backprop.layer_deltas(model, residuals, delta)
    return tuple(
        LayerTrace(z, a, d) for z, a, d in zip(forward.z, forward.a[1:], deltas, strict=True)
    )
