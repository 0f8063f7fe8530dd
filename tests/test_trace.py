"""Tests for jaxbp.trace: every layer's z, a and δ, checked against the gradient, jax.grad and
finite differences.

δ^[k] = ∂L/∂z^[k] is checked against an oracle that needs no recursion: a zero offset ε^[k] is
added to every z^[k] of the plain forward pass, and ∂L/∂ε^[k] at ε = 0 is ∂L/∂z^[k], taken
by ``jax.grad`` and by central differences.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from problems import make_problem

import jaxbp
from jaxbp.losses import LOSSES

# One network per loss, with the output activation the loss fits.
NETWORKS = {
    name: jaxbp.MLP((4, 6, 5, 3), "tanh", loss.output_activation) for name, loss in LOSSES.items()
}


def loss_with_offsets(model, loss, params, x, y, offsets):
    """The batch loss with ``offsets[k - 1]`` added to z^[k]: its gradient at 0 is every δ^[k]."""
    a = x
    for layer, act, eps in zip(params, model.layer_activations, offsets, strict=True):
        z = a @ layer["W"].T + layer["b"] + eps
        a = act.fn(z)
    loss_fn = LOSSES[loss]
    if loss_fn.value_from_logits is not None:
        return loss_fn.value_from_logits(z, y)
    return loss_fn.value(a, y)


def zero_offsets(model, batch):
    return [jnp.zeros((batch, n), jnp.float64) for n in model.sizes[1:]]


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_weight_gradient_is_delta_transpose_times_previous_activation(loss):
    """∂L/∂W^[k] = δ^[k]ᵀ a^[k−1] and ∂L/∂b^[k] = Σ_batch δ^[k] (eq. (0.3)), exactly."""
    model = NETWORKS[loss]
    params, x, y = make_problem(model, loss, batch=7)
    layers = jaxbp.trace(model, loss, params, x, y)
    _, grads = jaxbp.loss_and_grad(model, loss, params, x, y)
    assert len(layers) == model.num_layers
    a_prev = x
    for k, (layer, grad) in enumerate(zip(layers, grads, strict=True), start=1):
        assert layer.delta.shape == layer.z.shape == layer.a.shape == (7, model.sizes[k])
        np.testing.assert_array_equal(grad["W"], layer.delta.T @ a_prev)
        np.testing.assert_array_equal(grad["b"], jnp.sum(layer.delta, axis=0))
        a_prev = layer.a


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_deltas_match_jax_grad_and_finite_differences(loss):
    """δ^[k] = ∂L/∂z^[k], the forward values are the plain forward pass's."""
    model = NETWORKS[loss]
    params, x, y = make_problem(model, loss, batch=4, seed=1)
    layers = jaxbp.trace(model, loss, params, x, y)
    forward = jaxbp.forward_layers(model, params, x)
    chex.assert_trees_all_close([t.z for t in layers], list(forward.z), rtol=0, atol=0)
    chex.assert_trees_all_close([t.a for t in layers], list(forward.a[1:]), rtol=0, atol=0)

    def f(offsets):
        return loss_with_offsets(model, loss, params, x, y, offsets)

    offsets = zero_offsets(model, len(x))
    oracle = jax.grad(f)(offsets)
    chex.assert_trees_all_close([t.delta for t in layers], oracle, rtol=1e-10, atol=1e-14)
    # Central differences, every entry of every δ.
    h = 1e-5
    for k, eps in enumerate(offsets):
        for index in np.ndindex(*eps.shape):
            up = [e.at[index].add(h) if j == k else e for j, e in enumerate(offsets)]
            down = [e.at[index].add(-h) if j == k else e for j, e in enumerate(offsets)]
            estimate = (f(up) - f(down)) / (2 * h)
            np.testing.assert_allclose(layers[k].delta[index], estimate, rtol=1e-6, atol=1e-10)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_per_example_deltas_are_each_examples_own(loss):
    """Row i of ``per_example=True`` is ∂L_i/∂z_i^[k] of example i alone: B times the batch
    row for the mean losses, the batch row for sse (eq. (0.4))."""
    model = NETWORKS[loss]
    batch = 5
    params, x, y = make_problem(model, loss, batch=batch, seed=2)
    batch_layers = jaxbp.trace(model, loss, params, x, y)
    example_layers = jaxbp.trace(model, loss, params, x, y, per_example=True)
    scale = 1.0 if LOSSES[loss].reduction == "sum" else batch
    for b, e in zip(batch_layers, example_layers, strict=True):
        np.testing.assert_allclose(e.delta, scale * b.delta, rtol=1e-12, atol=1e-15)
    for i in range(batch):

        def f(offsets, i=i):
            return loss_with_offsets(model, loss, params, x[i : i + 1], y[i : i + 1], offsets)

        oracle = jax.grad(f)(zero_offsets(model, 1))
        chex.assert_trees_all_close(
            [t.delta[i : i + 1] for t in example_layers], oracle, rtol=1e-10, atol=1e-14
        )


def test_trace_runs_under_jit_and_checks_its_inputs():
    model = jaxbp.MLP((3, 4, 2))
    params = jaxbp.init_params(jax.random.key(0), model)
    x, y = jnp.ones((5, 3)), jnp.zeros((5, 2))
    jitted = jax.jit(jaxbp.trace, static_argnums=(0, 1), static_argnames="per_example")
    layers = jitted(model, "mse", params, x, y, per_example=True)
    assert [t.delta.shape for t in layers] == [(5, 4), (5, 2)]
    with pytest.raises(ValueError, match="y has shape"):
        jaxbp.trace(model, "mse", params, x, jnp.zeros((5, 3)))
