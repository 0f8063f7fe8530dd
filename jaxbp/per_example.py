"""Per-example gradient norms and per-example clipping from one δ recursion.

The gradient of a dense layer on one example is an outer product (eqs. (1.9), (3.4) of
docs/derivations.md, for a single row i)::

    ∂L_i/∂W^[k] = δ_i^[k] a_i^[k−1]ᵀ        ∂L_i/∂b^[k] = δ_i^[k]

and ``‖u vᵀ‖_F² = Σ_jl u_j² v_l² = ‖u‖² ‖v‖²``, so the norm of example i's whole gradient is::

    ‖∇_θ L_i‖² = Σ_k ‖δ_i^[k]‖² (‖a_i^[k−1]‖² + 1[bias])

Here ``δ_i^[k] = ∂L_i/∂z_i^[k]`` is the error of example i's own loss, the loss on a batch of
one, as in `per_example_grads`. The recursion ``δ^[k] = (δ^[k+1] W^[k+1]) ∘ g'(z^[k])``
acts on each row alone and is linear in ``δ^[L]``, so running it once from the per-example
output errors gives every ``δ_i^[k]`` at the cost of one backward pass without its
weight-gradient matmuls, and without forming the B gradients that `per_example_grads` (a
`vmap`) materialises: the rank-1 trick of BackPACK and Opacus (ghost norms).

Clipping (DP-SGD, Abadi et al. 2016) scales example i's gradient by
``c_i = min(1, C / ‖∇_θ L_i‖)`` before the batch reduction. Since the batch gradient is
``Σ_i w δ_i a_iᵀ`` (w = 1/n for the mean losses, 1 for ``"sse"``), the clipped one is the same
matmuls with the rows of every δ scaled by ``w c_i``::

    ∂̃/∂W^[k] = (w c ∘ δ^[k])ᵀ a^[k−1]        ∂̃/∂b^[k] = (w c)ᵀ δ^[k]

so a clipped step costs the same three matmuls per layer as a plain one.

References:
  Goodfellow, "Efficient per-example gradient computations", arXiv:1510.01799 (2015).
  Abadi et al., "Deep learning with differential privacy", CCS 2016.
  Dangel, Kunstner, Hennig, "BackPACK: Packing more into backprop", ICLR 2020.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxbp import backprop
from jaxbp import losses as losses_lib
from jaxbp.mlp import MLP, Params

Array = jax.Array


def check_clip_norm(clip_norm: float | Array) -> None:
    """Raises ValueError unless a concrete ``clip_norm`` is a positive number (or inf).

    Python and NumPy scalars and concrete 0-d arrays are read; a traced value (under jit)
    cannot be, and passes unchecked.
    """
    try:
        value = float(clip_norm)
    except jax.errors.ConcretizationTypeError:
        return
    except (TypeError, ValueError):
        raise ValueError(
            f"clip_norm must be a positive scalar, got {clip_norm!r}: it is the largest "
            "per-example gradient norm kept (use float('inf') for no clipping)."
        ) from None
    if not value > 0:
        raise ValueError(
            f"clip_norm must be positive, got {value:g}: it is the largest per-example "
            "gradient norm kept (use float('inf') for no clipping)."
        )


def forward_and_example_deltas(
    model: MLP, loss_fn: losses_lib.Loss, params: Params, x: Array, y: Array
) -> tuple[Array, backprop.Residuals, tuple[Array, ...], Array]:
    """The batch loss, the residuals, every ``δ_i^[k]`` and ``‖∇_θ L_i‖: (batch,)``."""
    z_out, y_hat, residuals = backprop.forward_with_residuals(model, params, x)
    value = backprop.batch_loss(loss_fn, z_out, y_hat, y)
    return value, residuals, *_example_deltas_and_norms(model, loss_fn, residuals, y_hat, y)


def _example_deltas_and_norms(
    model: MLP, loss_fn: losses_lib.Loss, residuals: backprop.Residuals, y_hat: Array, y: Array
) -> tuple[tuple[Array, ...], Array]:
    """Every ``δ_i^[k]`` and ``‖∇_θ L_i‖: (batch,)`` from the forward pass's residuals."""
    x = residuals.activations[0]
    deltas = backprop.layer_deltas(
        model, residuals, backprop.example_output_deltas(model, loss_fn, y_hat, y)
    )
    sq_norms = jnp.zeros(x.shape[0], x.dtype)
    for delta, a_prev in zip(deltas, residuals.activations[:-1], strict=True):
        a_sq = jnp.sum(a_prev * a_prev, axis=-1)
        if model.use_bias:
            a_sq = a_sq + 1
        sq_norms = sq_norms + jnp.sum(delta * delta, axis=-1) * a_sq
    return deltas, jnp.sqrt(sq_norms)


def clip_factors(norms: Array, clip_norm: float | Array) -> Array:
    """``c_i = min(1, C / ‖∇_θ L_i‖)`` for ``norms: (batch,)``; a zero norm gets 1, not 0/0."""
    return jnp.where(norms > clip_norm, clip_norm / jnp.where(norms > 0, norms, 1), 1)


def _scaled_row_gradients(
    model: MLP, residuals: backprop.Residuals, deltas: tuple[Array, ...], row_scale: Array
) -> Params:
    """``Σ_i s_i ∇_θ L_i`` as the batch matmuls with row i of every δ scaled by ``s_i``."""
    row_scale = row_scale.astype(residuals.activations[0].dtype)
    scaled = tuple(delta * row_scale[:, None] for delta in deltas)
    return backprop.gradients_from_deltas(model, residuals, scaled)


def per_example_grads(model: MLP, loss: str, params: Params, x: Array, y: Array) -> Params:
    """Per-example gradients ``∂L_i/∂θ``: `jaxbp.loss_and_grad` on each example alone, by `vmap`.

    Eq. (1.3): ∂L/∂W = 1/n Σ_i ∂L_i/∂W, so for the mean losses the mean over the
    leading axis equals the batch gradient (for a ``"sum"`` loss such as ``"sse"``, the sum).
    It forms all B gradients: `per_example_grad_norms` and `clipped_loss_and_grad` need none.

    Names and shapes are checked; values are not (NaN inputs, targets outside the loss's
    domain): `jaxbp.check_inputs` checks them eagerly.

    Args:
      model: the network.
      loss: a name from `jaxbp.LOSSES`.
      params: the parameters.
      x: ``(batch, n0)``.
      y: ``(batch, nL)`` targets (``(batch,)`` for a single output unit).

    Returns:
      A pytree like ``params`` with a leading ``batch`` axis on every leaf.
    """
    _, x, y = backprop.check_loss_inputs(model, loss, params, x, y)

    def one(x_i: Array, y_i: Array) -> Params:
        return backprop.loss_and_grad(model, loss, params, x_i[None], y_i[None])[1]

    return jax.vmap(one)(x, y)


def per_example_grad_norms(model: MLP, loss: str, params: Params, x: Array, y: Array) -> Array:
    """``‖∇_θ L_i‖₂`` for every example, from one δ recursion (eq. (1.9)'s ∂L_i/∂W).

    ``‖∇_θ L_i‖² = Σ_k ‖δ_i^[k]‖² (‖a_i^[k−1]‖² + 1[bias])``: equal to the norms of
    `per_example_grads` (the gradient of the loss on example i alone) without forming
    them; the cost is one forward and one backward pass without the weight-gradient matmuls.

    Names and shapes are checked; values are not (NaN inputs, targets outside the loss's
    domain): `jaxbp.check_inputs` checks them eagerly.

    Args:
      model: the network.
      loss: a name from `jaxbp.LOSSES`.
      params: the parameters.
      x: ``(batch, n0)``.
      y: ``(batch, nL)`` targets (``(batch,)`` for a single output unit).

    Returns:
      ``(batch,)``: the global L2 norm over all layers of each example's gradient.

    Examples:
      >>> import jax, jaxbp
      >>> model = jaxbp.MLP((3, 4, 1))
      >>> params = jaxbp.init_params(jax.random.key(0), model)
      >>> norms = jaxbp.per_example_grad_norms(model, "mse", params, jax.numpy.ones((5, 3)),
      ...                                      jax.numpy.zeros((5, 1)))
      >>> norms.shape
      (5,)
    """
    loss_fn, x, y = backprop.check_loss_inputs(model, loss, params, x, y)
    return forward_and_example_deltas(model, loss_fn, params, x, y)[3]


def clipped_loss_and_grad(
    model: MLP, loss: str, params: Params, x: Array, y: Array, clip_norm: float | Array
) -> tuple[Array, Params]:
    """The loss and the per-example-clipped gradient (eq. (1.3) with each ∂L_i/∂W clipped).

    Example i's gradient is scaled by ``c_i = min(1, C / ‖∇_θ L_i‖)`` and the scaled gradients
    are reduced as the loss reduces its examples (the mean; the sum for ``"sse"``), so with
    ``C = inf`` this is `jaxbp.loss_and_grad`. No per-example gradient is formed: the rows of
    each δ are scaled by ``w c_i`` before the weight-gradient matmuls (module docstring).

    Names and shapes are checked; values are not (NaN inputs, targets outside the loss's
    domain): `jaxbp.check_inputs` checks them eagerly.

    Args:
      model: the network.
      loss: a name from `jaxbp.LOSSES`.
      params: the parameters.
      x: ``(batch, n0)``.
      y: ``(batch, nL)`` targets (``(batch,)`` for a single output unit).
      clip_norm: C > 0, the largest per-example gradient norm kept.

    Returns:
      ``(loss_value, grads)``: the unclipped batch loss and the clipped gradient, shaped like
      ``params``.

    Examples:
      >>> import jax, jaxbp
      >>> model = jaxbp.MLP((3, 4, 1))
      >>> params = jaxbp.init_params(jax.random.key(0), model)
      >>> value, grads = jaxbp.clipped_loss_and_grad(
      ...     model, "mse", params, jax.numpy.ones((5, 3)), jax.numpy.zeros((5, 1)), 1.0)
      >>> grads[0]["W"].shape
      (4, 3)
    """
    check_clip_norm(clip_norm)
    loss_fn, x, y = backprop.check_loss_inputs(model, loss, params, x, y)
    value, residuals, deltas, norms = forward_and_example_deltas(model, loss_fn, params, x, y)
    row_scale = loss_fn.batch_weight(x.shape[0]) * clip_factors(norms, clip_norm)
    return value, _scaled_row_gradients(model, residuals, deltas, row_scale)


def clipped_grad_sum(
    model: MLP,
    loss: str,
    params: Params,
    x: Array,
    y: Array,
    row_weights: Array,
    clip_norm: float | Array,
) -> tuple[Array, Params]:
    """``Σ_i m_i L_i`` and ``Σ_i m_i c_i ∇_θ L_i``: clipped per-example gradients, summed (6.2).

    The sum of DP-SGD (eq. (6.2) of docs/derivations.md): example i's own gradient (the loss
    on a batch of one, as `per_example_grads`) clipped by ``c_i = min(1, C / ‖∇_θ L_i‖)`` and
    weighted by ``m_i``, in the same one pass as `clipped_loss_and_grad`. With ``m_i ∈ {0, 1}``
    a row of weight 0 is padding: it contributes exactly zero, so a batch of fixed shape
    holds a sample of any size up to its rows, and one of all zeros gives zero.

    Args:
      model: the network.
      loss: a name from `jaxbp.LOSSES`.
      params: the parameters.
      x: ``(batch, n0)``.
      y: ``(batch, nL)`` targets (``(batch,)`` for a single output unit).
      row_weights: ``m: (batch,)``, e.g. a 0/1 mask of the rows that are in the sample.
      clip_norm: C > 0, the largest per-example gradient norm kept.

    Returns:
      ``(Σ_i m_i L_i, grads)``: the weighted sum of the examples' own (unclipped) losses and
      the weighted sum of their clipped gradients, shaped like ``params``.
    """
    check_clip_norm(clip_norm)
    loss_fn, x, y = backprop.check_loss_inputs(model, loss, params, x, y)
    if jnp.shape(row_weights) != (x.shape[0],):
        raise ValueError(
            f"row_weights has shape {jnp.shape(row_weights)}, expected ({x.shape[0]},): one "
            "weight per row of x (0 for a padding row)."
        )
    z_out, y_hat, residuals = backprop.forward_with_residuals(model, params, x)
    deltas, norms = _example_deltas_and_norms(model, loss_fn, residuals, y_hat, y)
    weights = jnp.asarray(row_weights, x.dtype)

    def example_loss(z_i: Array, y_hat_i: Array, y_i: Array) -> Array:
        return backprop.batch_loss(loss_fn, z_i[None], y_hat_i[None], y_i[None])

    value = jnp.sum(weights * jax.vmap(example_loss)(z_out, y_hat, y))
    row_scale = weights * clip_factors(norms, clip_norm)
    return value, _scaled_row_gradients(model, residuals, deltas, row_scale)


def make_clipped_grad_fn(
    model: MLP, loss: str, clip_norm: float
) -> Callable[[Params, Array, Array], tuple[Array, Params]]:
    """``(params, x, y) -> (loss, clipped grads)`` for a train step's ``grad_fn``
    (`jaxbp.training.make_train_step`).

    Any optax optimiser then takes the clipped gradient as it takes a plain one. This is not
    DP-SGD: noise added to this mean (``optax.add_noise``) is not calibrated to the sum the
    privacy analysis assumes, and the batches are not Poisson samples; `jaxbp.dp_sgd` is.
    """
    check_clip_norm(clip_norm)

    def grad_fn(params: Params, x: Array, y: Array) -> tuple[Array, Params]:
        return clipped_loss_and_grad(model, loss, params, x, y, clip_norm)

    return grad_fn
