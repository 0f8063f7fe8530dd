"""Tests for jaxbp.gradient_flow against a brute-force computation in float64: per-example
gradients from ``jax.vmap(jax.grad)`` of each example's own loss, per-example δ from
``jax.grad`` with respect to an offset added to every z^[k]."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from problems import make_problem

import jaxbp
from jaxbp.losses import LOSSES


def brute_force(model, loss, params, x, y):
    """The same quantities with every per-example gradient and δ materialised."""
    batch = x.shape[0]

    def example_loss(p, x_i, y_i):
        return jaxbp.loss_value(model, loss, p, x_i[None], y_i[None], backward="autodiff")

    per_example = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))(params, x, y)
    flat = jax.vmap(lambda g: ravel_pytree(g)[0])(per_example)  # (B, P)
    mean = jnp.mean(flat, axis=0)
    trace_sigma = jnp.sum(jnp.var(flat, axis=0, ddof=1))  # Σ_p sample variance of θ_p
    expected = {"noise_scale": trace_sigma / jnp.sum(mean**2)}

    def example_loss_with_offsets(offsets, x_i, y_i):
        a = x_i[None]
        for layer, act, eps in zip(params, model.layer_activations, offsets, strict=True):
            z = a @ layer["W"].T + layer["b"] + eps
            a = act.fn(z)
        loss_fn = LOSSES[loss]
        if loss_fn.value_from_logits is not None:
            return loss_fn.value_from_logits(z, y_i[None])
        return loss_fn.value(a, y_i[None])

    offsets = [jnp.zeros((1, n), x.dtype) for n in model.sizes[1:]]
    deltas = jax.vmap(jax.grad(example_loss_with_offsets), in_axes=(None, 0, 0))(offsets, x, y)
    batch_grads = jax.grad(lambda p: jaxbp.loss_value(model, loss, p, x, y, backward="autodiff"))(
        params
    )
    for k, (delta, grads) in enumerate(zip(deltas, batch_grads, strict=True), start=1):
        expected[f"delta_norm/{k}"] = jnp.mean(jnp.linalg.norm(delta[:, 0], axis=-1))
        expected[f"grad_norm/{k}"] = jnp.linalg.norm(grads["W"])
        layer = jax.vmap(lambda g: ravel_pytree(g)[0])(per_example[k - 1])  # (B, P_k)
        # snr^[k] = ‖ḡ^[k]‖² / Σ_p Var_p^[k], the variance unscaled (ddof=0).
        expected[f"snr/{k}"] = jnp.sum(jnp.mean(layer, axis=0) ** 2) / jnp.sum(
            jnp.var(layer, axis=0)
        )
    assert batch == len(x)
    return expected


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_gradient_flow_matches_brute_force(loss, activation):
    model = jaxbp.MLP((4, 7, 5, 3), activation, LOSSES[loss].output_activation)
    params, x, y = make_problem(model, loss, batch=9, seed=3)
    flow = jax.jit(jaxbp.gradient_flow, static_argnums=(0, 1))(model, loss, params, x, y)
    expected = brute_force(model, loss, params, x, y)
    assert sorted(flow) == sorted(expected)
    chex.assert_trees_all_close(flow, expected, rtol=1e-10, atol=0)
    assert all(v.dtype == jnp.float64 for v in flow.values())


@pytest.mark.usefixtures("x64")
def test_noise_scale_is_zero_when_every_example_has_the_same_gradient():
    model = jaxbp.MLP((3, 4, 1), "tanh")
    params, x, y = make_problem(model, "mse", batch=1, seed=4)
    x, y = jnp.repeat(x, 6, axis=0), jnp.repeat(y, 6, axis=0)
    flow = jaxbp.gradient_flow(model, "mse", params, x, y)
    np.testing.assert_allclose(flow["noise_scale"], 0.0, atol=1e-12)


@pytest.mark.usefixtures("x64")
def test_delta_norms_shrink_by_at_most_a_quarter_times_the_weights_through_sigmoid_layers():
    """Eq. (3.6) with σ' ≤ 1/4: ‖δ_i^[k]‖ ≤ ¼ ‖W^[k+1]‖₂ ‖δ_i^[k+1]‖ for every example,
    so the mean obeys it too."""
    model = jaxbp.MLP((5, 6, 6, 6, 2), "sigmoid")
    params, x, y = make_problem(model, "mse", batch=8, seed=5)
    flow = jaxbp.gradient_flow(model, "mse", params, x, y)
    for k in range(1, model.num_layers):
        spectral = float(jnp.linalg.norm(params[k]["W"], ord=2))
        assert flow[f"delta_norm/{k}"] <= 0.25 * spectral * flow[f"delta_norm/{k + 1}"]


@pytest.mark.usefixtures("x64")
def test_snr_is_infinite_without_variance_and_zero_at_an_exact_fit():
    """Eq. (5.12)'s limits: every example with the same gradient (equal rows) leaves no noise,
    so the ratio is +inf or, where rounding leaves a trace, larger than 1/ε; every example
    fitted exactly (y = ŷ) leaves neither signal nor noise, and the ratio is 0."""
    model = jaxbp.MLP((3, 4, 2), "tanh")
    params, x, y = make_problem(model, "mse", batch=1, seed=6)
    x, y = jnp.repeat(x, 5, axis=0), jnp.repeat(y, 5, axis=0)
    flow = jaxbp.gradient_flow(model, "mse", params, x, y)
    for k in (1, 2):
        assert float(flow[f"snr/{k}"]) > 1e12
    params, x, _ = make_problem(model, "mse", batch=5, seed=7)
    y_hat = jaxbp.apply(model, params, x)
    flow = jaxbp.gradient_flow(model, "mse", params, x, y_hat)
    assert [float(flow[f"snr/{k}"]) for k in (1, 2)] == [0.0, 0.0]


def test_a_batch_of_one_is_refused():
    model = jaxbp.MLP((3, 4, 1))
    params = jaxbp.init_params(jax.random.key(0), model)
    with pytest.raises(ValueError, match="at least 2 examples"):
        jaxbp.gradient_flow(model, "mse", params, jnp.ones((1, 3)), jnp.zeros((1, 1)))


@pytest.mark.usefixtures("x64")
def test_noise_scale_is_inf_at_an_exact_fit():
    """G = 0 and tr(Σ) = 0: the documented value is inf, never the NaN of 0/0."""
    model = jaxbp.MLP((3, 4, 2), "tanh")
    params, x, _ = make_problem(model, "mse", batch=6, seed=6)
    y = jaxbp.apply(model, params, x)  # the targets are the outputs: every gradient is 0
    flow = jaxbp.gradient_flow(model, "mse", params, x, y)
    assert flow["noise_scale"] == np.inf
