"""Tests for jaxbp.curvature against float64 oracles built by autodiff.

The oracles differentiate `jaxbp.loss_value(..., backward="autodiff")` and the plain forward
pass: per-example gradients by ``vmap(grad)`` of each example's own loss, the GGN as
``Jᵀ H J`` with J = ``jax.jacrev`` of the network up to the split point (logits for the fused
losses, ŷ for the others) and H = ``jax.hessian`` of the loss there, the Hessian by
``jax.hessian`` of the loss. Every hidden activation meets every loss, with and without a
bias, and the regression losses also meet curved output activations (sigmoid, tanh, softmax,
softplus), whose second derivatives the exact Hessian contains.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from problems import assert_grads_close, make_problem

import jaxbp
from jaxbp.activations import HIDDEN_ACTIVATIONS
from jaxbp.losses import LOSSES

BATCH = 4
SIZES = (3, 4, 3)  # two hidden layers: the hidden residuals of eq. (5.9) travel a layer

# (hidden activation, output activation, loss, use_bias): every hidden activation with every
# loss (the bias alternating), then regression losses through curved output activations.
CASES = [
    (act, LOSSES[loss].output_activation, loss, (i + j) % 2 == 0)
    for i, act in enumerate(HIDDEN_ACTIVATIONS)
    for j, loss in enumerate(sorted(LOSSES))
] + [
    ("tanh", "sigmoid", "mse", True),
    ("softplus", "softmax", "half_mse", True),
    ("sigmoid", "tanh", "sse", False),
    ("relu", "softmax", "mse", False),
    ("identity", "softplus", "mse", True),
]
IDS = [f"{c[0]}-{c[1]}-{c[2]}-{'bias' if c[3] else 'nobias'}" for c in CASES]


def _problem(case, seed=0, batch=BATCH, dtype="float64"):
    hidden, output, loss, use_bias = case
    n_out = 1 if loss == "bce" and seed % 2 else 2 if output == "sigmoid" else 3
    model = jaxbp.MLP((*SIZES, n_out), hidden, output, use_bias)
    return model, loss, *make_problem(model, loss, batch=batch, seed=seed, dtype=dtype)


def _split_output(model, loss, params, x):
    """The network up to the split point: the logits for the fused losses, else ŷ."""
    if LOSSES[loss].fused:
        return jaxbp.forward_logits(model, params, x)
    return jaxbp.forward_autodiff(model, params, x)


def _split_loss(loss, f, y):
    loss_fn = LOSSES[loss]
    return loss_fn.value_from_logits(f, y) if loss_fn.fused else loss_fn.value(f, y)


def _example_grads(model, loss, params, x, y):
    """``(B, P)``: ∇ℓ_i of every example's own loss, flattened like `ravel_pytree`."""

    def example_loss(p, x_i, y_i):
        return jaxbp.loss_value(model, loss, p, x_i[None], y_i[None], backward="autodiff")

    grads = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))(params, x, y)
    return jax.vmap(lambda g: ravel_pytree(g)[0])(grads)


def _jacobians(model, loss, params, x):
    """``(B, V, P)``: ∂f_i/∂θ at the split point, flattened like `ravel_pytree`."""
    jac = jax.jacrev(lambda p: _split_output(model, loss, p, x))(params)
    leaves = [j.reshape(*j.shape[:2], -1) for j in jax.tree.leaves(jac)]
    return jnp.concatenate(leaves, axis=-1)


def _loss_hessian_blocks(model, loss, params, x, y):
    """``(B, V, V)``: the batch loss's Hessian block of each example at the split point."""
    f = _split_output(model, loss, params, x)
    hess = jax.hessian(lambda f: _split_loss(loss, f, y))(f)
    idx = jnp.arange(x.shape[0])
    return hess[idx, :, idx, :]


def _example_ggn_diags(model, loss, params, x, y):
    """``(B, P)``: diag(J_iᵀ H_i J_i)."""
    jac = _jacobians(model, loss, params, x)
    blocks = _loss_hessian_blocks(model, loss, params, x, y)
    return jnp.einsum("iap,iab,ibp->ip", jac, blocks, jac)


def _example_hessian_diags(model, loss, params, x, y):
    """``(B, P)``: diag ∇²_θ (w ℓ_i), each example's share of the batch Hessian."""
    flat, unravel = ravel_pytree(params)
    w = LOSSES[loss].batch_weight(x.shape[0])

    def example(x_i, y_i):
        def value(p):
            example_loss = jaxbp.loss_value(
                model, loss, unravel(p), x_i[None], y_i[None], backward="autodiff"
            )
            return w * example_loss

        return jnp.diag(jax.hessian(value)(flat))

    return jax.vmap(example)(x, y)


def _unravel_rows(params, rows):
    """``(B, P)`` to a params-shaped pytree with a leading ``(B,)`` axis."""
    unravel = ravel_pytree(params)[1]
    return jax.vmap(unravel)(rows)


def _sum_rows(tree):
    return jax.tree.map(lambda leaf: jnp.sum(leaf, axis=0), tree)


@functools.cache
def _jitted(name, model, loss, **kwargs):
    return jax.jit(functools.partial(getattr(jaxbp, name), model, loss, **kwargs))


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_function_matches_its_autodiff_oracle(case):
    model, loss, params, x, y = _problem(case, seed=CASES.index(case))
    unravel = ravel_pytree(params)[1]
    grads = _example_grads(model, loss, params, x, y)  # (B, P)
    w = LOSSES[loss].batch_weight(BATCH)

    assert_grads_close(
        jaxbp.sum_grad_squared(model, loss, params, x, y),
        unravel(jnp.sum((w * grads) ** 2, axis=0)),
        "float64",
    )
    # The variance differs from the second moment by ḡ², which cancels: its rounding is ε
    # times the second moment, so that is the scale of the absolute tolerance.
    second = jnp.mean(grads**2, axis=0)
    actual = ravel_pytree(jaxbp.variance(model, loss, params, x, y))[0]
    np.testing.assert_allclose(
        np.asarray(actual), np.var(grads, axis=0), rtol=1e-10, atol=1e-13 * float(jnp.max(second))
    )
    gram = jaxbp.grad_gram(model, loss, params, x, y)
    np.testing.assert_allclose(gram, grads @ grads.T, rtol=1e-10, atol=1e-13 * jnp.max(gram))

    ggn_rows = _example_ggn_diags(model, loss, params, x, y)
    assert_grads_close(
        jaxbp.diag_ggn(model, loss, params, x, y, per_example=True),
        _unravel_rows(params, ggn_rows),
        "float64",
    )
    assert_grads_close(
        jaxbp.diag_ggn(model, loss, params, x, y), unravel(jnp.sum(ggn_rows, axis=0)), "float64"
    )

    hessian_rows = _example_hessian_diags(model, loss, params, x, y)
    assert_grads_close(
        jaxbp.diag_hessian(model, loss, params, x, y, per_example=True),
        _unravel_rows(params, hessian_rows),
        "float64",
    )
    flat, unravel_flat = ravel_pytree(params)
    full_hessian = jax.hessian(
        lambda p: jaxbp.loss_value(model, loss, unravel_flat(p), x, y, backward="autodiff")
    )(flat)
    assert_grads_close(
        jaxbp.diag_hessian(model, loss, params, x, y), unravel(jnp.diag(full_hessian)), "float64"
    )
