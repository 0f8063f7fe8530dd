"""Tests for jaxbp.activations: each hand-written derivative against jax.grad.

Eq. (4.4) of docs/derivations.md: an element-wise activation has a diagonal Jacobian, so its
vjp is ḡ ∘ g'(z); eqs. (1.6), (2.3): σ' = σ − σ², a function of the output alone. The oracle
is ``jax.grad`` of ``fn``, taken element by element with ``jax.vmap``.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import activations
from jaxbp.activations import ACTIVATIONS, HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS

ELEMENTWISE = [name for name, act in ACTIVATIONS.items() if act.elementwise]

# A grid across the saturating range plus the kink (0 and its neighbours) and far tails.
Z_GRID = np.concatenate(
    [np.linspace(-40.0, 40.0, 321), [0.0, 1e-12, -1e-12, -200.0, 200.0, -1e3, 1e3]]
)


def _grad_oracle(act, z):
    """g'(z) by jax.grad of the forward function, one element at a time."""
    return jax.vmap(jax.grad(act.fn))(z)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_from_output_matches_jax_grad_float64(x64, name):
    act = ACTIVATIONS[name]
    z = jnp.asarray(Z_GRID, jnp.float64)
    expected = _grad_oracle(act, z)
    actual = act.derivative_from_output(act.fn(z))
    assert actual.dtype == jnp.float64
    chex.assert_shape(actual, z.shape)
    # atol = a few ulps of 1: g' recovered from the output rounds like the output does, e.g.
    # tanh' = 1 − a² loses the last bits of sech²(z) where a² is close to 1.
    chex.assert_trees_all_close(actual, expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_from_output_matches_jax_grad_float32(name):
    act = ACTIVATIONS[name]
    z = jnp.linspace(-8.0, 8.0, 161, dtype=jnp.float32)
    expected = _grad_oracle(act, z)
    actual = act.derivative_from_output(act.fn(z))
    assert actual.dtype == jnp.float32
    chex.assert_trees_all_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_vjp_is_cotangent_times_derivative(x64, name):
    """vjp(a, ḡ) equals jax.vjp of fn (the diagonal Jacobian, eq. (4.4))."""
    act = ACTIVATIONS[name]
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(6, 5)) * 3)
    g_bar = jnp.asarray(rng.normal(size=(6, 5)))
    a, vjp_fn = jax.vjp(act.fn, z)
    (expected,) = vjp_fn(g_bar)
    chex.assert_trees_all_close(act.vjp(a, g_bar), expected, rtol=1e-13, atol=1e-15)


def test_softplus_derivative_in_the_far_tails(x64):
    """softplus' = σ(z) = 1 − e^{−a}; expm1 keeps it accurate where a ≈ e^z is tiny.

    The naive ``1 - exp(-a)`` returns 0 at z = −700 (a ≈ 1e-304), a relative error of 1.
    """
    act = ACTIVATIONS["softplus"]
    z = jnp.array([-1e3, -745.0, -700.0, -100.0, -40.0, -1e-3, 1e-3, 40.0, 100.0, 1e3])
    expected = _grad_oracle(act, z)
    actual = act.derivative_from_output(act.fn(z))
    chex.assert_trees_all_close(actual, expected, rtol=1e-13, atol=0.0)
    # The checks above are only meaningful if the tails really are extreme.
    assert 0 < float(expected[2]) < 1e-300
    assert float(expected[-1]) == 1.0


@pytest.mark.parametrize("shape", [(7,), (4, 5), (2, 3, 6)])
def test_softmax_vjp_matches_jax_vjp(x64, shape):
    act = ACTIVATIONS["softmax"]
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=shape) * 4)
    g_bar = jnp.asarray(rng.normal(size=shape))
    s, vjp_fn = jax.vjp(lambda z: jax.nn.softmax(z, axis=-1), z)
    (expected,) = vjp_fn(g_bar)
    chex.assert_trees_all_close(act.fn(z), s, rtol=1e-14, atol=0.0)
    actual = act.vjp(act.fn(z), g_bar)
    chex.assert_shape(actual, shape)
    chex.assert_trees_all_close(actual, expected, rtol=1e-12, atol=1e-15)


def test_softmax_vjp_at_saturated_logits(x64):
    act = ACTIVATIONS["softmax"]
    z = jnp.array([[1e3, 0.0, -1e3], [-1e3, 1e3, 999.0]])
    g_bar = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1]])
    _, vjp_fn = jax.vjp(lambda z: jax.nn.softmax(z, axis=-1), z)
    (expected,) = vjp_fn(g_bar)
    actual = act.vjp(act.fn(z), g_bar)
    assert bool(jnp.all(jnp.isfinite(actual)))
    chex.assert_trees_all_close(actual, expected, rtol=1e-12, atol=1e-15)


def test_softmax_vjp_is_not_elementwise(x64):
    """The coupling term −s⟨ḡ, s⟩ matters: ḡ on one unit moves δ of every unit."""
    act = ACTIVATIONS["softmax"]
    s = act.fn(jnp.array([0.5, -1.0, 2.0]))
    delta = act.vjp(s, jnp.array([1.0, 0.0, 0.0]))
    assert bool(jnp.all(delta[1:] != 0))
    chex.assert_trees_all_close(jnp.sum(delta), jnp.zeros(()), rtol=0.0, atol=1e-15)


def test_activation_table():
    assert set(HIDDEN_ACTIVATIONS) == set(ELEMENTWISE)
    assert "softmax" not in HIDDEN_ACTIVATIONS
    assert "softmax" in OUTPUT_ACTIVATIONS
    assert set(OUTPUT_ACTIVATIONS) == set(ACTIVATIONS)
    softmax = ACTIVATIONS["softmax"]
    assert softmax.derivative_from_output is None
    assert not softmax.elementwise
    for name, act in ACTIVATIONS.items():
        assert act.name == name


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_has_kink_marks_exactly_the_derivative_jumps(x64, name):
    """has_kink (used by gradcheck to skip finite differences) is True iff g' jumps at 0."""
    act = ACTIVATIONS[name]
    z = jnp.array([-1e-9, 1e-9])
    left, right = act.derivative_from_output(act.fn(z))
    jumps = abs(float(right) - float(left)) > 1e-3
    assert act.has_kink == jumps


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_fn_preserves_shape_and_dtype(name):
    z = jnp.ones((3, 4), jnp.float32)
    a = ACTIVATIONS[name].fn(z)
    chex.assert_shape(a, (3, 4))
    assert a.dtype == jnp.float32


def test_get_activation_returns_the_named_activation():
    assert activations.get_activation("tanh") is ACTIVATIONS["tanh"]
    hidden = activations.get_activation("relu", allowed=HIDDEN_ACTIVATIONS)
    assert hidden is ACTIVATIONS["relu"]


def test_get_activation_unknown_name_lists_allowed_values():
    with pytest.raises(ValueError, match="'swish'") as info:
        activations.get_activation("swish")
    for name in OUTPUT_ACTIVATIONS:
        assert name in str(info.value)


def test_get_activation_softmax_not_allowed_as_hidden():
    with pytest.raises(ValueError, match="'softmax'") as info:
        activations.get_activation("softmax", allowed=HIDDEN_ACTIVATIONS)
    message = str(info.value)
    for name in HIDDEN_ACTIVATIONS:
        assert name in message
    # The error says where softmax belongs, and it is not among the allowed hidden ones.
    assert "output_activation='softmax'" in message
    assert "softmax" not in message.split("hidden activations are")[1]
