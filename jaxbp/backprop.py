"""The hand-written backward pass: the δ recursion as a `jax.custom_vjp`.

The recursion (eqs. (3.3)-(3.6) and (4.9) of docs/derivations.md, for a batch of rows,
eqs. (0.2)-(0.3))::

    δ^[L] = ḡ ∘ f'(z^[L])                       (softmax: s ∘ (ḡ − ⟨ḡ, s⟩))
    δ^[k] = (δ^[k+1] W^[k+1]) ∘ g'(z^[k])        k = L−1, ..., 1
    ∂/∂W^[k] = δ^[k]ᵀ a^[k−1]      ∂/∂b^[k] = Σ_batch δ^[k]      ∂/∂x = δ^[1] W^[1]

The residuals kept between the forward and backward pass are the activations
``a^[0] = x, a^[1], ..., a^[L]`` and the weights: every g' here is a function of its
output (σ' = σ(1 − σ), tanh' = 1 − a², ...), so no pre-activation is stored.

`loss_and_grad` runs the same recursion from a loss's hand-written ∂L/∂ŷ, with no
``jax.grad`` or ``jax.vjp`` anywhere: the derivation alone.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxbp import activations, forward_mode
from jaxbp import losses as losses_lib
from jaxbp import mlp as mlp_lib
from jaxbp.mlp import MLP, Params

Array = jax.Array

BACKWARDS = ("custom", "autodiff")


class Residuals(NamedTuple):
    """What the backward pass keeps from the forward pass (the a^[k] of eq. (3.1)).

    Attributes:
      weights: ``W^[k]: (n_k, n_{k-1})`` for k = 1..L (needed to send δ back a layer).
      activations: ``a^[0] = x: (batch, n0)``, then ``a^[k]: (batch, n_k)`` up to ŷ = a^[L].
    """

    weights: tuple[Array, ...]
    activations: tuple[Array, ...]


def forward_with_residuals(model: MLP, params: Params, x: Array) -> tuple[Array, Array, Residuals]:
    """Forward pass keeping the residuals of the δ recursion (eq. (4.1), (0.1)).

    Args:
      model: the network.
      params: its parameters (`init_params` layout).
      x: ``(batch, n0)``.

    Returns:
      ``(z_L, y_hat, residuals)``: the output logits ``(batch, nL)``, ``ŷ = f(z^[L])`` and
      the `Residuals` (whose last activation is ŷ).
    """
    forward = mlp_lib.forward_layers(model, params, x)
    weights = tuple(layer["W"] for layer in params)
    # The z^[k] are dropped here: the residuals are the activations and weights only.
    return forward.z[-1], forward.a[-1], Residuals(weights, forward.a)


def layer_deltas(model: MLP, residuals: Residuals, delta: Array) -> tuple[Array, ...]:
    """The δ recursion: every layer's error from ``δ^[L]``.

    ``δ^[k] = (δ^[k+1] W^[k+1]) ∘ g'(z^[k])`` (eqs. (3.5)-(3.6), (4.7); for rows, eq. (0.2)):
    the error of layer k is the next layer's error sent back through its weights. Each row is
    one example's, so the recursion acts on rows alone.

    Args:
      model: the network.
      residuals: from `forward_with_residuals`.
      delta: ``δ^[L] = ∂L/∂z^[L]: (batch, nL)``.

    Returns:
      ``(δ^[1], ..., δ^[L])`` with ``δ^[k]: (batch, n_k)``.
    """
    # Shapes are static: under jit these checks cost nothing at run time.
    chex.assert_equal(len(residuals.weights), model.num_layers)
    chex.assert_equal(len(residuals.activations), model.num_layers + 1)
    chex.assert_equal_shape([delta, residuals.activations[-1]])
    g_prime = activations.ACTIVATIONS[model.activation].derivative_from_output
    assert g_prime is not None, "MLP admits element-wise hidden activations only"
    # The pairs (W^[k+1], a^[k]) for k = 1, ..., L−1: the weights after each hidden layer.
    pairs = zip(residuals.weights[1:], residuals.activations[1:-1], strict=True)
    deltas = [delta]
    for W_next, a_k in reversed(tuple(pairs)):
        # δ^[k] = (δ^[k+1] W^[k+1]) ∘ g'(z^[k]), with g'(z^[k]) read from a^[k] = g(z^[k]).
        delta = (delta @ W_next) * g_prime(a_k)
        deltas.append(delta)
    return tuple(reversed(deltas))


def backward_from_output_delta(
    model: MLP, residuals: Residuals, delta: Array, *, input_grad: bool = True
) -> tuple[Params, Array | None]:
    """The δ recursion down from ``δ^[L]`` (`layer_deltas`), then the gradients
    (`gradients_from_deltas`) and ``∂/∂x``.

    Args:
      model: the network.
      residuals: from `forward_with_residuals`.
      delta: ``δ^[L] = ∂L/∂z^[L]: (batch, nL)``.
      input_grad: whether to form ``∂/∂x`` (one more matmul; None when False).

    Returns:
      ``(grads, x_bar)``: one ``{"W", "b"}`` dict per layer with ``∂/∂W^[k] = δ^[k]ᵀ a^[k−1]``
      and ``∂/∂b^[k] = Σ_batch δ^[k]`` (eqs. (3.4), (4.5), (4.8); for rows, eq. (0.3)), and
      ``∂/∂x = δ^[1] W^[1]``.
    """
    deltas = layer_deltas(model, residuals, delta)
    x_bar = deltas[0] @ residuals.weights[0] if input_grad else None
    return gradients_from_deltas(model, residuals, deltas), x_bar


def gradients_from_deltas(model: MLP, residuals: Residuals, deltas: tuple[Array, ...]) -> Params:
    """``∂/∂W^[k] = δ^[k]ᵀ a^[k−1]`` and ``∂/∂b^[k] = Σ_batch δ^[k]`` from every layer's δ.

    Eqs. (3.4), (4.5) and (4.8), summed over the rows: eq. (0.3).

    Args:
      model: the network.
      residuals: from `forward_with_residuals` (the activations ``a^[k−1]``).
      deltas: ``(δ^[1], ..., δ^[L])`` as from `layer_deltas`.

    Returns:
      One ``{"W", "b"}`` dict per layer, shaped like the params.
    """
    chex.assert_trees_all_equal_shapes(tuple(deltas), residuals.activations[1:])  # δ^[k] ~ a^[k]
    grads = []
    for delta_k, a_prev in zip(deltas, residuals.activations[:-1], strict=True):
        layer = {"W": delta_k.T @ a_prev}
        if model.use_bias:
            layer["b"] = jnp.sum(delta_k, axis=0)
        grads.append(layer)
    return grads


def output_delta(model: MLP, y_hat: Array, g_bar: Array) -> Array:
    """``δ^[L] = ḡ ∘ f'(z^[L])`` (eqs. (3.3), (4.4)), or ``s ∘ (ḡ − ⟨ḡ, s⟩)`` for
    softmax (eq. (0.5))."""
    return model.layer_activations[-1].vjp(y_hat, g_bar)


def _with_custom_backward(
    forward: Callable[[MLP, Params, Array], Array], *, of_logits: bool
) -> Callable[[MLP, Params, Array], Array]:
    """``forward`` as a `jax.custom_vjp` function whose backward is the δ recursion.

    Args:
      forward: the plain network, returning ŷ (``of_logits=False``) or the logits ``z^[L]``.
      of_logits: which of the two ``forward`` returns. The cotangent of ŷ is ``ḡ = ∂L/∂ŷ``,
        which `output_delta` turns into ``δ^[L] = ḡ ∘ f'(z^[L])`` (eqs. (3.3), (4.4)); the
        cotangent of ``z^[L]`` is ``δ^[L] = ∂L/∂z^[L]`` itself: the recursion starts from it.

    Returns:
      ``fn(model, params, x)``, with ``model`` not differentiated.
    """

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def fn(model: MLP, params: Params, x: Array) -> Array:
        return forward(model, params, x)

    def fn_fwd(model: MLP, params: Params, x: Array) -> tuple[Array, Residuals]:
        z_out, y_hat, residuals = forward_with_residuals(model, params, x)
        return (z_out if of_logits else y_hat), residuals

    def fn_bwd(model: MLP, residuals: Residuals, out_bar: Array) -> tuple[Params, Array | None]:
        delta = out_bar if of_logits else output_delta(model, residuals.activations[-1], out_bar)
        return backward_from_output_delta(model, residuals, delta)

    fn.defvjp(fn_fwd, fn_bwd)
    return fn


_apply_custom = _with_custom_backward(mlp_lib.forward_outputs, of_logits=False)
# The fused losses take the logits: their δ^[L] reaches the recursion without passing through
# f'(z^[L]), which a saturated sigmoid or softmax rounds to 0 against an infinite ∂L/∂ŷ.
_logits_custom = _with_custom_backward(mlp_lib.forward_logits, of_logits=True)


def apply(model: MLP, params: Params, x: Array, *, backward: str = "custom") -> Array:
    """The network's output ``ŷ = f(z^[L])`` (eq. (4.1)).

    Names and shapes are checked; values are not (a NaN input gives a NaN output):
    `jaxbp.check_inputs` checks them eagerly.

    Args:
      model: the network.
      params: its parameters (`init_params` layout).
      x: ``(batch, n0)`` rows, or one example ``(n0,)``.
      backward: ``"custom"``: differentiated by the hand-written δ recursion (a
        `jax.custom_vjp`, reverse mode only); ``"autodiff"``: plain jnp code that
        ``jax.grad`` differentiates.

    Returns:
      ``ŷ: (batch, nL)``, or ``(nL,)`` for a single example.

    Examples:
      >>> import jax, jaxbp
      >>> model = jaxbp.MLP((3, 4, 2))
      >>> params = jaxbp.init_params(jax.random.key(0), model)
      >>> jaxbp.apply(model, params, jax.numpy.ones((5, 3))).shape
      (5, 2)
    """
    if backward not in BACKWARDS:
        raise ValueError(f"unknown backward {backward!r}: expected one of {', '.join(BACKWARDS)}.")
    mlp_lib.check_params(model, params)
    mlp_lib.check_input_shape(model, x)
    x = jnp.asarray(x)
    single = x.ndim == 1
    if single:
        x = x[None]
    if backward == "autodiff":
        y_hat = mlp_lib.forward_outputs(model, params, x)
    else:
        y_hat = forward_mode.call_custom(_apply_custom, model, params, x)
    return y_hat[0] if single else y_hat


def check_loss_inputs(
    model: MLP, loss: str, params: Params, x: Array, y: Array
) -> tuple[losses_lib.Loss, Array, Array]:
    """Checks a loss call's arguments before any work; returns ``(Loss, x, y as (batch, nL))``.

    Raises:
      ValueError: for an unknown loss, a loss the output activation does not fit, params
        that do not match the model, ``x``/``y`` of the wrong shape, or an empty batch.
    """
    loss_fn = losses_lib.get_loss(loss, model.output_activation)
    mlp_lib.check_params(model, params)
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(
            f"x has shape {tuple(x.shape)}: loss_and_grad takes a batch (batch, "
            f"{model.sizes[0]}); for one example use x[None]."
        )
    mlp_lib.check_input_shape(model, x)
    if x.shape[0] == 0:
        raise ValueError(
            f"x has shape {tuple(x.shape)}: an empty batch has no loss (its mean is 0/0); "
            "pass at least one example."
        )
    y = mlp_lib.check_targets(model, x, y)
    return loss_fn, x, y


def loss_and_grad(
    model: MLP, loss: str, params: Params, x: Array, y: Array
) -> tuple[Array, Params]:
    """The loss and its gradient by the derivation alone: no ``jax.grad``/``jax.vjp``.

    ∂L/∂ŷ from the loss's hand-written rule (eqs. (1.5), (4.3)), then the δ recursion
    (eqs. (3.3)-(3.6), (4.9)). For ``"bce"`` and ``"softmax_cross_entropy"`` the output δ is
    fused, ``δ^[L] = (ŷ − y)/n`` (eq. (0.6)), and the value is computed from the logits, so
    saturated outputs stay finite.

    Names and shapes are checked; values are not (NaN inputs, targets outside the loss's
    domain): `jaxbp.check_inputs` checks them eagerly.

    Args:
      model: the network.
      loss: a name from `jaxbp.LOSSES`.
      params: the parameters.
      x: ``(batch, n0)``.
      y: ``(batch, nL)`` targets (``(batch,)`` for a single output unit).

    Returns:
      ``(loss_value, grads)`` with ``grads`` shaped like ``params``.

    Examples:
      >>> import jax, jaxbp
      >>> model = jaxbp.MLP((3, 4, 1))
      >>> params = jaxbp.init_params(jax.random.key(0), model)
      >>> value, grads = jaxbp.loss_and_grad(model, "mse", params, jax.numpy.ones((5, 3)),
      ...                                    jax.numpy.zeros((5, 1)))
      >>> grads[0]["W"].shape
      (4, 3)
    """
    loss_fn, x, y = check_loss_inputs(model, loss, params, x, y)
    z_out, y_hat, residuals = forward_with_residuals(model, params, x)
    value = batch_loss(loss_fn, z_out, y_hat, y)
    delta = loss_output_delta(model, loss_fn, y_hat, y)
    grads, _ = backward_from_output_delta(model, residuals, delta, input_grad=False)
    return value, grads


def batch_loss(loss_fn: losses_lib.Loss, z_out: Array, y_hat: Array, y: Array) -> Array:
    """The loss value, from the logits ``z_out`` for the fused losses, else from ``ŷ``."""
    if loss_fn.value_from_logits is not None:
        return loss_fn.value_from_logits(z_out, y)
    return loss_fn.value(y_hat, y)


def loss_output_delta(model: MLP, loss_fn: losses_lib.Loss, y_hat: Array, y: Array) -> Array:
    """``δ^[L]`` of a loss: fused ``(ŷ − y)/n`` for bce and softmax cross-entropy, else
    ``ḡ ∘ f'(z^[L])`` with the loss's hand-written ``ḡ = ∂L/∂ŷ`` (eqs. (3.3), (4.4))."""
    if loss_fn.delta_from_output is not None:
        return loss_fn.delta_from_output(y_hat, y)
    return output_delta(model, y_hat, loss_fn.grad(y_hat, y))


def example_output_deltas(model: MLP, loss_fn: losses_lib.Loss, y_hat: Array, y: Array) -> Array:
    """``δ_i^[L] = ∂L_i/∂z_i^[L]`` row by row: the loss's own output δ on a batch of one.

    For the mean losses this is B times the batch's ``δ^[L]`` (``L = 1/B Σ_i L_i``), for
    ``"sse"`` the same rows (``L = Σ_i L_i``).
    """

    def one(y_hat_i: Array, y_i: Array) -> Array:
        return loss_output_delta(model, loss_fn, y_hat_i[None], y_i[None])[0]

    return jax.vmap(one)(y_hat, y)


def loss_value(
    model: MLP, loss: str, params: Params, x: Array, y: Array, *, backward: str = "autodiff"
) -> Array:
    """The loss as a differentiable function of ``params`` (eq. (1.2); for ``jax.grad``).

    With ``backward="autodiff"`` it is plain jnp code: the oracle that `gradcheck` compares
    against. With ``backward="custom"`` the network is differentiated by the hand-written δ
    recursion (a custom_vjp, as in `apply`), and ``jax.grad`` differentiates only the loss
    itself. Either way the fused losses (bce, softmax cross-entropy) are taken from the logits
    ``z^[L]``, so saturated outputs give finite values and gradients; the others from ŷ.

    Names and shapes are checked; values are not (NaN inputs, targets outside the loss's
    domain): `jaxbp.check_inputs` checks them eagerly.
    """
    if backward not in BACKWARDS:
        raise ValueError(f"unknown backward {backward!r}: expected one of {', '.join(BACKWARDS)}.")
    loss_fn, x, y = check_loss_inputs(model, loss, params, x, y)
    if loss_fn.value_from_logits is not None:
        if backward == "autodiff":
            z_out = mlp_lib.forward_logits(model, params, x)
        else:
            z_out = forward_mode.call_custom(_logits_custom, model, params, x)
        return loss_fn.value_from_logits(z_out, y)
    return loss_fn.value(apply(model, params, x, backward=backward), y)
