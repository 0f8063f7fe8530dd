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
# loss, with and without a bias, then regression losses through curved output activations.
CASES = [
    (act, LOSSES[loss].output_activation, loss, use_bias)
    for act in HIDDEN_ACTIVATIONS
    for loss in sorted(LOSSES)
    for use_bias in (True, False)
] + [
    ("tanh", "sigmoid", "mse", True),
    ("softplus", "softmax", "half_mse", True),
    ("sigmoid", "tanh", "sse", False),
    ("relu", "softmax", "mse", False),
    ("identity", "softplus", "mse", True),
]
IDS = [f"{c[0]}-{c[1]}-{c[2]}-{'bias' if c[3] else 'nobias'}" for c in CASES]


def _problem(case, seed=0, batch=BATCH, dtype="float64", n_out=3):
    # One output width for all: the eager ops of one case are compiled for the next ones.
    hidden, output, loss, use_bias = case
    model = jaxbp.MLP((*SIZES, n_out), hidden, output, use_bias)
    return model, loss, *make_problem(model, loss, batch=batch, seed=seed, dtype=dtype)


def _split_output(model, loss, params, x):
    """The network up to the split point: the logits for the fused losses, else ŷ."""
    if LOSSES[loss].fused:
        return jaxbp.forward_logits(model, params, x)
    return jaxbp.forward_outputs(model, params, x)


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


@functools.partial(jax.jit, static_argnums=(0, 1))
def _hessian_oracles(model, loss, params, x, y):
    """``(B, P)`` per-example and ``(P,)`` batch Hessian diagonals, compiled: eager
    forward-over-reverse compiles op by op, several times slower for a new network."""
    flat, unravel = ravel_pytree(params)
    full = jax.hessian(
        lambda p: jaxbp.loss_value(model, loss, unravel(p), x, y, backward="autodiff")
    )(flat)
    return _example_hessian_diags(model, loss, params, x, y), jnp.diag(full)


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

    hessian_rows, hessian_diag = _hessian_oracles(model, loss, params, x, y)
    assert_grads_close(
        jaxbp.diag_hessian(model, loss, params, x, y, per_example=True),
        _unravel_rows(params, hessian_rows),
        "float64",
    )
    assert_grads_close(
        jaxbp.diag_hessian(model, loss, params, x, y), unravel(hessian_diag), "float64"
    )


def _layer_blocks(model, loss, params, x, y):
    """Per example and layer, the exact GGN block of ``[W | b]`` flattened row by row:
    ``(B, P_k, P_k)`` with P_k = n_k (n_{k−1} + 1[bias]), and the Jacobians behind it."""
    jac = jax.jacrev(lambda p: _split_output(model, loss, p, x))(params)
    blocks_h = _loss_hessian_blocks(model, loss, params, x, y)
    out = []
    for layer in jac:
        j = layer["W"]  # (B, V, n_k, n_{k-1})
        if "b" in layer:
            j = jnp.concatenate([j, layer["b"][..., None]], axis=-1)
        j = j.reshape(*j.shape[:2], -1)
        out.append((j, jnp.einsum("iap,iab,ibq->ipq", j, blocks_h, j)))
    return out


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("case", CASES[::7], ids=IDS[::7])
def test_backpropagated_columns_give_each_examples_ggn_across_layers(case):
    """Eq. (5.8): Σ_v (D_iv^[k] ⊗ ā_i)(D_iv^[l] ⊗ ā_i)ᵀ = J_iᵀ H_i J_i, blocks (k, l)."""
    model, loss, params, x, y = _problem(case, seed=7)
    sqrt_ggn = jaxbp.backpropagated_sqrt_ggn(model, loss, params, x, y)
    inputs = jaxbp.layer_inputs(model, sqrt_ggn.residuals)
    factors = [
        jnp.einsum("ivn,im->ivnm", d, a).reshape(*d.shape[:2], -1)
        for d, a in zip(sqrt_ggn.columns, inputs, strict=True)
    ]
    jacobians = [j for j, _ in _layer_blocks(model, loss, params, x, y)]
    blocks_h = _loss_hessian_blocks(model, loss, params, x, y)
    for k in range(model.num_layers):
        for m in range(model.num_layers):
            expected = jnp.einsum("iap,iab,ibq->ipq", jacobians[k], blocks_h, jacobians[m])
            actual = jnp.einsum("ivp,ivq->ipq", factors[k], factors[m])
            np.testing.assert_allclose(
                actual, expected, rtol=1e-10, atol=1e-13 * float(jnp.max(jnp.abs(expected)))
            )


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("case", CASES[1::7], ids=IDS[1::7])
def test_kfac_factors_are_kflr_and_exact_for_one_example_and_equal_rows(case):
    """Eq. (5.11): A_k = (1/B) Σ ā āᵀ; G_k is the exact GGN block of b^[k] (ā's last entry
    is 1) for any batch; kron(G_k, A_k) is the exact block of [W | b] when B = 1 and when
    every row of x is the same."""
    model, loss, params, x, y = _problem(case, seed=8)
    sqrt_ggn = jaxbp.backpropagated_sqrt_ggn(model, loss, params, x, y)
    factors = jaxbp.kfac_factors(model, loss, params, x, y)
    assert len(factors) == model.num_layers
    for (a_k, g_k), a_bar, n_k in zip(
        factors, jaxbp.layer_inputs(model, sqrt_ggn.residuals), model.sizes[1:], strict=True
    ):
        np.testing.assert_allclose(a_k, a_bar.T @ a_bar / BATCH, rtol=1e-12)
        assert g_k.shape == (n_k, n_k)
    if model.use_bias:
        jac = jax.jacrev(lambda p: _split_output(model, loss, p, x))(params)
        blocks_h = _loss_hessian_blocks(model, loss, params, x, y)
        for (_, g_k), layer in zip(factors, jac, strict=True):
            expected = jnp.einsum("iap,iab,ibq->pq", layer["b"], blocks_h, layer["b"])
            np.testing.assert_allclose(g_k, expected, rtol=1e-10, atol=1e-14)
    for x_, y_ in ((x[:1], y[:1]), (jnp.repeat(x[:1], BATCH, 0), y)):
        exact = [jnp.sum(block, axis=0) for _, block in _layer_blocks(model, loss, params, x_, y_)]
        for (a_k, g_k), block in zip(
            jaxbp.kfac_factors(model, loss, params, x_, y_), exact, strict=True
        ):
            np.testing.assert_allclose(
                jnp.kron(g_k, a_k), block, rtol=1e-10, atol=1e-13 * float(jnp.max(block))
            )


@pytest.mark.usefixtures("x64")
def test_kron_is_not_the_block_for_a_batch_of_different_rows():
    model, loss, params, x, y = _problem(("tanh", "softmax", "softmax_cross_entropy", True))
    (a_1, g_1), _, _ = jaxbp.kfac_factors(model, loss, params, x, y)
    block = jnp.sum(_layer_blocks(model, loss, params, x, y)[0][1], axis=0)
    assert float(jnp.max(jnp.abs(jnp.kron(g_1, a_1) - block))) > 1e-3 * float(jnp.max(block))


@pytest.mark.usefixtures("x64")
def test_diag_hessian_is_diag_ggn_for_relu_and_differs_for_tanh():
    relu = _problem(("relu", "identity", "mse", True), seed=9)
    chex_close = functools.partial(assert_grads_close, dtype="float64")
    chex_close(jaxbp.diag_hessian(*relu), jaxbp.diag_ggn(*relu))
    tanh = _problem(("tanh", "identity", "mse", True), seed=9)
    hessian, ggn = jaxbp.diag_hessian(*tanh), jaxbp.diag_ggn(*tanh)
    leaves = zip(jax.tree.leaves(hessian), jax.tree.leaves(ggn), strict=True)
    gap = max(float(jnp.max(jnp.abs(h - g))) for h, g in leaves)
    assert gap > 1e-3
    _, exact = _hessian_oracles(*tanh)
    chex_close(hessian, ravel_pytree(tanh[2])[1](exact))


MC_KEYS = 2000


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize(
    ("case", "mc_samples", "n_out"),
    [
        (("tanh", "softmax", "softmax_cross_entropy", True), 1, 3),
        (("sigmoid", "sigmoid", "bce", False), 1, 1),
        (("softplus", "sigmoid", "mse", True), 1, 3),
        (("relu", "identity", "half_mse", True), 2, 3),
    ],
    ids=lambda c: c[2] if isinstance(c, tuple) else str(c),
)
def test_monte_carlo_estimates_are_unbiased(case, mc_samples, n_out):
    """Eq. (5.10): over 2,000 keys, the mean of the sampled diagonal GGN and of the sampled
    G_k lies within 4 standard errors of the exact values, entry by entry."""
    model, loss, params, x, y = _problem(case, seed=10, batch=3, n_out=n_out)
    keys = jax.random.split(jax.random.key(11), MC_KEYS)
    columns = jaxbp.backpropagated_sqrt_ggn(
        model, loss, params, x, y, mc_samples=mc_samples, key=keys[0]
    ).columns
    assert [d.shape for d in columns] == [(3, mc_samples, n) for n in model.sizes[1:]]

    def sampled(key):
        kwargs = dict(mc_samples=mc_samples, key=key)
        diag = jaxbp.diag_ggn(model, loss, params, x, y, **kwargs)
        factors = jaxbp.kfac_factors(model, loss, params, x, y, **kwargs)
        return diag, [g for _, g in factors]

    draws = jax.jit(jax.vmap(sampled))(keys)
    exact = (
        jaxbp.diag_ggn(model, loss, params, x, y),
        [g for _, g in jaxbp.kfac_factors(model, loss, params, x, y)],
    )
    for draw, value in zip(jax.tree.leaves(draws), jax.tree.leaves(exact), strict=True):
        mean, sem = jnp.mean(draw, axis=0), jnp.std(draw, axis=0) / np.sqrt(MC_KEYS)
        assert bool(jnp.all(jnp.abs(mean - value) <= 4 * sem + 1e-12 * jnp.abs(value))), jnp.max(
            jnp.abs(mean - value) / sem
        )
        assert float(jnp.max(sem)) > 0  # the draws do vary: not the exact value returned


FUNCTIONS = (
    "sum_grad_squared",
    "variance",
    "grad_gram",
    "diag_ggn",
    "diag_hessian",
    "kfac_factors",
)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_float32_under_jit_matches_float64(name):
    case = ("tanh", "softmax", "softmax_cross_entropy", True)
    model, loss, params, x, y = _problem(case, seed=12, dtype="float32")
    actual = _jitted(name, model, loss)(params, x, y)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(actual))
    with jax.enable_x64(True):
        model, loss, params, x, y = _problem(case, seed=12, dtype="float64")
        expected = jax.tree.map(np.asarray, getattr(jaxbp, name)(model, loss, params, x, y))
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, e, rtol=2e-4, atol=1e-6 * np.max(np.abs(e)))


@pytest.mark.parametrize("name", FUNCTIONS + ("backpropagated_sqrt_ggn",))
def test_bad_input_is_refused_as_loss_and_grad_refuses_it(name):
    model, loss, params, x, y = _problem(("tanh", "identity", "mse", True), dtype="float32")
    fn = getattr(jaxbp, name)
    for args, message in [
        ((model, "nll", params, x, y), "unknown loss"),
        ((model, "bce", params, x, y), "needs output_activation='sigmoid'"),
        ((model, loss, params[:1], x, y), "params must be a list of 3"),
        ((model, loss, params, x[0], y), "x has shape"),
        ((model, loss, params, x[:, :2], y), "x has shape"),
        ((model, loss, params, x[:0], y[:0]), "empty batch"),
        ((model, loss, params, x, y[:2]), "y has shape"),
    ]:
        with pytest.raises(ValueError, match=message):
            jaxbp.loss_and_grad(*args)
        with pytest.raises(ValueError, match=message):
            fn(*args)


@pytest.mark.parametrize("name", ("diag_ggn", "kfac_factors", "backpropagated_sqrt_ggn"))
def test_sampling_arguments_are_checked(name):
    model, loss, params, x, y = _problem(("tanh", "identity", "mse", True), dtype="float32")
    fn = functools.partial(getattr(jaxbp, name), model, loss, params, x, y)
    with pytest.raises(ValueError, match="needs a PRNG key: pass key="):
        fn(mc_samples=3)
    with pytest.raises(ValueError, match="key is given but mc_samples=0"):
        fn(key=jax.random.key(0))
    with pytest.raises(ValueError, match="mc_samples must be >= 0"):
        fn(mc_samples=-1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="non-negative int"):
        fn(mc_samples=1.5, key=jax.random.key(0))
