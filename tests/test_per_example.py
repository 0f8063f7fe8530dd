"""Tests for jaxbp.per_example: per-example gradients, and their norms and clipping from one δ
recursion.

`per_example_grads` (a `vmap` of the loss on a batch of one) is checked against the batch
gradient and the gradient of each example alone; it is then the oracle: its norms
must equal ``‖∇_θ L_i‖² = Σ_k ‖δ_i^[k]‖² (‖a_i^[k−1]‖² + 1[bias])``, and clipping each of its
gradients to C then reducing as the loss does must equal `clipped_loss_and_grad`.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from problems import assert_grads_close, make_problem

import jaxbp
from jaxbp import per_example, training

BATCH = 7

# (hidden activation, output activation, loss, use_bias, output width)
CASES = [
    ("tanh", "identity", "mse", True, 3),
    ("sigmoid", "identity", "half_mse", True, 3),
    ("relu", "softmax", "softmax_cross_entropy", True, 4),
    ("leaky_relu", "sigmoid", "bce", True, 1),
    ("softplus", "identity", "sse", True, 2),
    ("tanh", "tanh", "mse", False, 3),
    ("sigmoid", "softmax", "softmax_cross_entropy", False, 4),
    ("identity", "sigmoid", "mse", True, 1),
]
IDS = [f"{c[0]}-{c[1]}-{c[2]}-{'bias' if c[3] else 'nobias'}" for c in CASES]


def _problem(case, dtype, seed=0, sizes=(5, 6, 4)):
    hidden, output, loss, use_bias, n_out = case
    model = jaxbp.MLP((*sizes, n_out), hidden, output, use_bias)
    return model, loss, *make_problem(model, loss, batch=BATCH, seed=seed, dtype=dtype)


@pytest.mark.parametrize(
    ("output", "loss", "use_bias"),
    [
        ("identity", "mse", True),
        ("sigmoid", "sse", False),
        ("sigmoid", "bce", True),
        ("softmax", "softmax_cross_entropy", False),
    ],
)
def test_per_example_grads(x64, output, loss, use_bias):
    """Eq. (1.3): the batch gradient is the mean of per-example ones (sum for sse)."""
    del x64
    model = jaxbp.MLP((3, 4, 3), activation="tanh", output_activation=output, use_bias=use_bias)
    batch = 5
    params, x, y = make_problem(model, loss, batch=batch, seed=12)
    per_example = jaxbp.per_example_grads(model, loss, params, x, y)
    chex.assert_tree_shape_prefix(per_example, (batch,))
    chex.assert_trees_all_equal_structs(per_example, params)
    for rows, leaf in zip(jax.tree.leaves(per_example), jax.tree.leaves(params), strict=True):
        chex.assert_shape(rows, (batch, *leaf.shape))
    reduce = {"mean": jnp.mean, "sum": jnp.sum}[jaxbp.LOSSES[loss].reduction]
    _, batch_grads = jaxbp.loss_and_grad(model, loss, params, x, y)
    assert_grads_close(
        jax.tree.map(lambda g: reduce(g, axis=0), per_example), batch_grads, "float64"
    )
    for i in (0, batch - 1):
        _, single = jaxbp.loss_and_grad(model, loss, params, x[i : i + 1], y[i : i + 1])
        assert_grads_close(jax.tree.map(lambda g, i=i: g[i], per_example), single, "float64")


def test_per_example_grads_differ_between_examples(x64):
    del x64
    model = jaxbp.MLP((4, 6, 5, 3), activation="tanh", output_activation="sigmoid")
    params, x, y = make_problem(model, "mse", batch=3, seed=13)
    rows = jaxbp.per_example_grads(model, "mse", params, x, y)[0]["W"]
    assert float(jnp.max(jnp.abs(rows[0] - rows[1]))) > 1e-3


def _reference_norms(model, loss, params, x, y):
    grads = jaxbp.per_example_grads(model, loss, params, x, y)
    squares = [jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for g in jax.tree.leaves(grads)]
    return jnp.sqrt(sum(squares)), grads


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_norms_match_per_example_grads_float32(case):
    model, loss, params, x, y = _problem(case, jnp.float32)
    norms = per_example.per_example_grad_norms(model, loss, params, x, y)
    expected, _ = _reference_norms(model, loss, params, x, y)
    assert norms.shape == (BATCH,)
    assert norms.dtype == jnp.float32
    chex.assert_trees_all_close(norms, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_norms_match_per_example_grads_float64(x64, case):
    del x64
    model, loss, params, x, y = _problem(case, jnp.float64, seed=1)
    norms = per_example.per_example_grad_norms(model, loss, params, x, y)
    expected, _ = _reference_norms(model, loss, params, x, y)
    chex.assert_trees_all_close(norms, expected, rtol=1e-12, atol=0)


def test_norms_of_a_single_layer_network_are_rank_one(x64):
    # One layer, no hidden activation: ∂L_i/∂W = δ_i x_iᵀ with δ_i = 2(ŷ_i − y_i) for sse, so
    # ‖∂L_i/∂W‖² + ‖∂L_i/∂b‖² = ‖δ_i‖²(‖x_i‖² + 1), written out here without the library.
    del x64
    model = jaxbp.MLP((3, 2), output_activation="identity")
    params = [{"W": jnp.array([[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]]), "b": jnp.array([0.1, -0.2])}]
    x = jnp.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 2.0]])
    y = jnp.array([[0.0, 1.0], [2.0, -1.0]])
    residual = x @ params[0]["W"].T + params[0]["b"] - y
    delta = 2 * residual
    expected = np.sqrt(np.sum(delta**2, axis=1) * (np.sum(x**2, axis=1) + 1))
    norms = per_example.per_example_grad_norms(model, "sse", params, x, y)
    chex.assert_trees_all_close(norms, jnp.asarray(expected), rtol=1e-12, atol=0)


def test_norms_for_a_mean_loss_are_those_of_one_example_alone(x64):
    # The mean loss's batch δ rows carry 1/n; the per-example norm must not.
    del x64
    model, loss, params, x, y = _problem(CASES[0], jnp.float64)
    norms = per_example.per_example_grad_norms(model, loss, params, x, y)
    for i in (0, 3):
        _, grads_i = jaxbp.loss_and_grad(model, loss, params, x[i : i + 1], y[i : i + 1])
        norm_i = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads_i)))
        chex.assert_trees_all_close(norms[i], norm_i, rtol=1e-12, atol=0)


def _clip_reference(model, loss, params, x, y, clip_norm):
    norms, grads = _reference_norms(model, loss, params, x, y)
    factor = jnp.minimum(1.0, clip_norm / norms)
    clipped = jax.tree.map(lambda g: g * factor.reshape((-1,) + (1,) * (g.ndim - 1)), grads)
    reduce = jnp.sum if loss == "sse" else jnp.mean
    return jax.tree.map(lambda g: reduce(g, axis=0), clipped), norms


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_clipped_grad_matches_vmap_clip_then_reduce(x64, case):
    del x64
    model, loss, params, x, y = _problem(case, jnp.float64, seed=2)
    norms = per_example.per_example_grad_norms(model, loss, params, x, y)
    clip_norm = float(jnp.median(norms))  # about half the examples are clipped
    expected, _ = _clip_reference(model, loss, params, x, y, clip_norm)
    value, grads = per_example.clipped_loss_and_grad(model, loss, params, x, y, clip_norm)
    chex.assert_trees_all_close(grads, expected, rtol=1e-10, atol=1e-13)
    expected_value, _ = jaxbp.loss_and_grad(model, loss, params, x, y)
    chex.assert_trees_all_close(value, expected_value, rtol=1e-12, atol=0)


def test_clipped_grad_float32_matches_reference():
    model, loss, params, x, y = _problem(CASES[2], jnp.float32, seed=3)
    expected, _ = _clip_reference(model, loss, params, x, y, 0.1)
    _, grads = per_example.clipped_loss_and_grad(model, loss, params, x, y, 0.1)
    chex.assert_trees_all_close(grads, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[4]], ids=[IDS[0], IDS[2], IDS[4]])
def test_clipping_at_infinity_is_the_plain_gradient(x64, case):
    del x64
    model, loss, params, x, y = _problem(case, jnp.float64, seed=4)
    _, grads = per_example.clipped_loss_and_grad(model, loss, params, x, y, float("inf"))
    _, expected = jaxbp.loss_and_grad(model, loss, params, x, y)
    chex.assert_trees_all_close(grads, expected, rtol=1e-12, atol=1e-15)


def test_clipped_per_example_norms_are_at_most_c(x64):
    # Each example's contribution to the clipped mean has norm ≤ C/n, so the whole is ≤ C.
    del x64
    model, loss, params, x, y = _problem(CASES[1], jnp.float64, seed=5)
    clip_norm = 1e-3
    _, grads = per_example.clipped_loss_and_grad(model, loss, params, x, y, clip_norm)
    total = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
    assert float(total) <= clip_norm * (1 + 1e-12)


def test_zero_gradient_example_is_not_nan(x64):
    # y = ŷ for example 0 gives δ_0 = 0 and ‖g_0‖ = 0: its factor must be 1, not 0/0.
    del x64
    model, loss, params, x, y = _problem(CASES[0], jnp.float64, seed=6)
    _, y_hat, _ = jaxbp.forward_with_residuals(model, params, x)
    y = y.at[0].set(y_hat[0])
    norms = per_example.per_example_grad_norms(model, loss, params, x, y)
    assert float(norms[0]) == 0.0
    _, grads = per_example.clipped_loss_and_grad(model, loss, params, x, y, 0.5)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    expected, _ = _clip_reference(model, loss, params, x[1:], y[1:], 0.5)
    # With example 0 contributing nothing, the mean over 7 is 6/7 of the mean over the rest.
    chex.assert_trees_all_close(
        grads, jax.tree.map(lambda g: g * 6 / 7, expected), rtol=1e-10, atol=1e-14
    )


def test_norms_and_clipping_under_jit():
    model, loss, params, x, y = _problem(CASES[2], jnp.float32)
    norms = jax.jit(lambda p: per_example.per_example_grad_norms(model, loss, p, x, y))(params)
    chex.assert_trees_all_close(
        norms, per_example.per_example_grad_norms(model, loss, params, x, y), rtol=1e-6
    )
    step = jax.jit(lambda p, c: per_example.clipped_loss_and_grad(model, loss, p, x, y, c))
    _, traced = step(params, 0.2)
    _, eager = per_example.clipped_loss_and_grad(model, loss, params, x, y, 0.2)
    chex.assert_trees_all_close(traced, eager, rtol=1e-5, atol=1e-7)


def test_layer_deltas_are_the_gradients_at_every_pre_activation(x64):
    # δ^[k] = ∂⟨δ^[L], z^[L]⟩/∂z^[k]: autodiff through a forward that adds ε_k to each z^[k].
    del x64
    model, _, params, x, _ = _problem(CASES[0], jnp.float64)
    _, _, residuals = jaxbp.forward_with_residuals(model, params, x)
    delta_out = jax.random.normal(jax.random.key(7), (BATCH, model.sizes[-1]), jnp.float64)

    def output_dot(eps):
        a = x
        for k, (layer, act) in enumerate(zip(params, model.layer_activations, strict=True)):
            z = a @ layer["W"].T + layer["b"] + eps[k]
            if k == model.num_layers - 1:
                return jnp.sum(delta_out * z)
            a = act.fn(z)

    zeros = [jnp.zeros((BATCH, n), jnp.float64) for n in model.sizes[1:]]
    expected = jax.grad(output_dot)(zeros)
    deltas = jaxbp.layer_deltas(model, residuals, delta_out)
    assert [d.shape for d in deltas] == [(BATCH, n) for n in model.sizes[1:]]
    chex.assert_trees_all_close(list(deltas), expected, rtol=1e-12, atol=1e-15)


def test_make_clipped_grad_fn_plugs_into_the_trainer(x64):
    del x64
    model, loss, params, x, y = _problem(CASES[2], jnp.float64)
    grad_fn = per_example.make_clipped_grad_fn(model, loss, 0.3)
    optimizer = optax.sgd(0.1)
    step = training.make_train_step(model, loss, optimizer, grad_fn=grad_fn)
    new_params, _, metrics = jax.jit(step)(params, optimizer.init(params), (x, y))
    expected, _ = _clip_reference(model, loss, params, x, y, 0.3)
    chex.assert_trees_all_close(
        new_params,
        jax.tree.map(lambda p, g: p - 0.1 * g, params, expected),
        rtol=1e-10,
        atol=1e-13,
    )
    assert np.isfinite(float(metrics["loss"]))


@pytest.mark.parametrize(
    "clip_norm", [0.0, -1.0, np.float32(-1.0), np.float64(0.0), jnp.array(-2.0)]
)
def test_clip_norm_must_be_positive(clip_norm):
    model, loss, params, x, y = _problem(CASES[0], jnp.float32)
    with pytest.raises(ValueError, match="clip_norm must be positive"):
        per_example.clipped_loss_and_grad(model, loss, params, x, y, clip_norm)
    with pytest.raises(ValueError, match="clip_norm must be positive"):
        per_example.make_clipped_grad_fn(model, loss, clip_norm)


def test_shape_errors_are_reported():
    model, loss, params, x, y = _problem(CASES[0], jnp.float32)
    with pytest.raises(ValueError, match="x has shape"):
        per_example.per_example_grad_norms(model, loss, params, x[0], y)
    with pytest.raises(ValueError, match="y has shape"):
        per_example.per_example_grad_norms(model, loss, params, x, y[:3])
