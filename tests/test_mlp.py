"""Tests for jaxbp.mlp: the model description, its parameters and the plain forward pass.

Eq. (4.1) of docs/derivations.md: z^[k] = W^[k] a^[k−1] + b^[k], a^[k] = g(z^[k]), here for a
batch of rows, with W^[k]: (n_k, n_{k−1}).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import mlp
from jaxbp.activations import HIDDEN_ACTIVATIONS
from jaxbp.mlp import INIT_SCHEMES, MLP


@pytest.mark.parametrize("sizes", [(), (5,), [7]])
def test_mlp_needs_two_sizes(sizes):
    with pytest.raises(ValueError, match="at least 2 sizes"):
        MLP(sizes)


@pytest.mark.parametrize("sizes", [(3, 0, 2), (3, -4), (0, 1)])
def test_mlp_sizes_must_be_positive(sizes):
    with pytest.raises(ValueError, match=r"positive.*" + str(min(sizes))):
        MLP(sizes)


@pytest.mark.parametrize("sizes", [None, 3, ("a", 2)])
def test_mlp_sizes_must_be_a_sequence_of_ints(sizes):
    with pytest.raises(ValueError, match="sequence of positive ints"):
        MLP(sizes)


@pytest.mark.parametrize("sizes", [(True, True), (3, np.True_, 2)], ids=["bool", "numpy-bool"])
def test_mlp_refuses_bool_sizes(sizes):
    """bool is an int subclass: (True, True) must not become a 1-1 network."""
    with pytest.raises(ValueError, match="sequence of positive ints"):
        MLP(sizes)


@pytest.mark.parametrize("sizes", [(3, 2.5), "32"], ids=["float", "str"])
def test_mlp_rejects_non_integer_sizes(sizes):
    with pytest.raises(ValueError, match="positive ints"):
        MLP(sizes)


def test_mlp_unknown_hidden_activation_lists_allowed():
    with pytest.raises(ValueError, match="'swish'") as info:
        MLP((3, 2), activation="swish")
    for name in HIDDEN_ACTIVATIONS:
        assert name in str(info.value)


def test_mlp_unknown_output_activation_lists_allowed():
    with pytest.raises(ValueError, match="'gelu'.*softmax"):
        MLP((3, 2), output_activation="gelu")


def test_mlp_softmax_is_not_a_hidden_activation():
    with pytest.raises(ValueError, match="'softmax'") as info:
        MLP((3, 4, 2), activation="softmax")
    message = str(info.value)
    assert "sigmoid" in message  # the allowed hidden activations are named
    assert "softmax" not in message.split("hidden activations are")[1]  # ... softmax is not
    assert "output activation only" in message
    MLP((3, 4, 2), output_activation="softmax")  # as the output it is fine


@pytest.mark.parametrize("sizes", [(4, 5, 1), (3, 1)])
def test_mlp_refuses_softmax_over_one_unit(sizes):
    """softmax of one logit is the constant 1: no gradient reaches the weights."""
    with pytest.raises(ValueError, match=r"one output unit is the constant 1.*'sigmoid'.*'bce'"):
        MLP(sizes, output_activation="softmax")
    MLP(sizes, output_activation="sigmoid")  # the fix
    MLP((*sizes[:-1], 2), output_activation="softmax")  # two classes are fine


def test_mlp_normalises_sizes_and_is_hashable():
    a, b = MLP([3, 4, 2], "tanh"), MLP((np.int64(3), 4, 2), "tanh")
    assert a.sizes == (3, 4, 2)
    assert isinstance(a.sizes, tuple)
    assert a == b
    assert hash(a) == hash(b)
    assert a != MLP((3, 4, 2), "tanh", use_bias=False)
    assert len({a, b, MLP((3, 4, 2))}) == 2
    with pytest.raises(AttributeError):
        a.sizes = (1, 2)


def test_mlp_is_a_jit_static_argument():
    """Equal models share one trace; a different model traces again."""
    traces = []

    @functools.partial(jax.jit, static_argnums=0)
    def forward(model, params, x):
        traces.append(model)  # runs only while tracing
        return jaxbp.apply(model, params, x)

    model = MLP((3, 4, 2))
    params = jaxbp.init_params(jax.random.key(0), model)
    x = jnp.ones((5, 3))
    out1 = forward(model, params, x)
    out2 = forward(MLP([3, 4, 2]), params, x)
    assert len(traces) == 1
    chex.assert_shape((out1, out2), (5, 2))
    chex.assert_trees_all_close(out1, jaxbp.apply(model, params, x, backward="autodiff"), rtol=1e-6)
    forward(MLP((3, 4, 2), "tanh"), params, x)
    assert len(traces) == 2


def test_num_layers_and_layer_activations():
    model = MLP((5, 8, 7, 3), activation="relu", output_activation="softmax")
    assert model.num_layers == 3
    assert [a.name for a in model.layer_activations] == ["relu", "relu", "softmax"]
    assert [a.name for a in MLP((2, 1), "tanh").layer_activations] == ["identity"]


@pytest.mark.parametrize("use_bias", [True, False])
def test_init_params_shapes(use_bias):
    model = MLP((3, 5, 4, 2), use_bias=use_bias)
    params = jaxbp.init_params(jax.random.key(0), model)
    assert isinstance(params, list)
    assert len(params) == 3
    expected = [(5, 3), (4, 5), (2, 4)]
    for layer, w_shape in zip(params, expected, strict=True):
        assert set(layer) == ({"W", "b"} if use_bias else {"W"})
        chex.assert_shape(layer["W"], w_shape)
        if use_bias:
            chex.assert_shape(layer["b"], w_shape[:1])
            chex.assert_trees_all_equal(layer["b"], jnp.zeros(w_shape[:1]))
    assert model.param_shapes() == [
        {k: v for k, v in {"W": w, "b": w[:1]}.items() if use_bias or k == "W"} for w in expected
    ]


def test_init_params_layers_use_different_keys():
    model = MLP((8, 8, 8, 8))
    params = jaxbp.init_params(jax.random.key(0), model)
    w = [np.asarray(layer["W"]) for layer in params]
    assert not np.allclose(w[0], w[1])
    assert not np.allclose(w[1], w[2])
    other = jaxbp.init_params(jax.random.key(1), model)
    assert not np.allclose(w[0], np.asarray(other[0]["W"]))


def test_init_params_dtype(x64):
    model = MLP((3, 4, 2))
    params = jaxbp.init_params(jax.random.key(0), model, dtype=jnp.float64)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(params))
    default = jaxbp.init_params(jax.random.key(0), model)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(default))


@pytest.mark.parametrize(
    ("activation", "scheme"),
    [
        ("relu", "he_normal"),
        ("leaky_relu", "he_normal"),
        ("sigmoid", "glorot_uniform"),
        ("tanh", "glorot_uniform"),
        ("softplus", "glorot_uniform"),
        ("identity", "glorot_uniform"),
    ],
)
def test_auto_scheme_is_he_for_relu_family_and_glorot_otherwise(activation, scheme):
    model = MLP((6, 5, 4), activation=activation)
    assert mlp.default_init_scheme(model) == scheme
    key = jax.random.key(3)
    auto = jaxbp.init_params(key, model)
    explicit = jaxbp.init_params(key, model, scheme=scheme)
    chex.assert_trees_all_equal(auto, explicit)


# Var(W) of each scheme for W: (n_out, n_in), fan_in = n_in, fan_out = n_out.
def _expected_variance(scheme, n_in, n_out):
    return {
        "glorot_uniform": 2 / (n_in + n_out),
        "glorot_normal": 2 / (n_in + n_out),
        "he_uniform": 2 / n_in,
        "he_normal": 2 / n_in,
        "lecun_normal": 1 / n_in,
    }[scheme]


@pytest.mark.parametrize("scheme", list(INIT_SCHEMES))
def test_init_variance(scheme):
    """A wide, non-square layer: 200 x 1000 = 2e5 draws put the sample variance within ~0.3%
    (1 std) of the truth, so 5% is generous yet separates the schemes (He vs Glorot differ by
    20% here) and catches swapped fan axes (a factor 5)."""
    n_in, n_out = 1000, 200
    model = MLP((n_in, n_out))
    W = np.asarray(jaxbp.init_params(jax.random.key(0), model, scheme=scheme)[0]["W"])
    assert W.shape == (n_out, n_in)
    expected = _expected_variance(scheme, n_in, n_out)
    assert abs(W.var() / expected - 1) < 0.05, (scheme, W.var(), expected)
    assert abs(W.mean()) < 5 * np.sqrt(expected / W.size)
    if scheme.endswith("uniform"):
        limit = np.sqrt(3 * expected)
        assert np.abs(W).max() <= limit
        assert np.abs(W).max() > 0.99 * limit


def test_init_unknown_scheme():
    with pytest.raises(ValueError, match="unknown init scheme 'orthogonal'.*auto.*he_normal"):
        jaxbp.init_params(jax.random.key(0), MLP((3, 2)), scheme="orthogonal")


def _numpy_forward(model, params, x):
    """Eq. (4.1), the forward pass, in numpy, layer by layer."""
    fns = {
        "identity": lambda z: z,
        "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
        "tanh": np.tanh,
        "relu": lambda z: np.maximum(z, 0),
        "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
        "softplus": lambda z: np.log1p(np.exp(z)),
        "softmax": lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True),
    }
    a = np.asarray(x)
    names = [model.activation] * (model.num_layers - 1) + [model.output_activation]
    zs, acts = [], [a]
    for layer, name in zip(params, names, strict=True):
        z = a @ np.asarray(layer["W"]).T + (np.asarray(layer["b"]) if "b" in layer else 0.0)
        a = fns[name](z)
        zs.append(z)
        acts.append(a)
    return zs, acts


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize(
    ("activation", "output"),
    [("sigmoid", "identity"), ("tanh", "softmax"), ("relu", "sigmoid"), ("softplus", "tanh")],
)
def test_forward_matches_numpy(x64, activation, output, use_bias):
    model = MLP((4, 6, 5, 3), activation=activation, output_activation=output, use_bias=use_bias)
    rng = np.random.default_rng(0)
    params = [
        {k: jnp.asarray(rng.normal(size=s)) for k, s in shapes.items()}
        for shapes in model.param_shapes()
    ]
    x = rng.normal(size=(7, 4))
    zs_ref, acts_ref = _numpy_forward(model, params, x)
    z = mlp.forward_logits(model, params, jnp.asarray(x))
    y_hat = mlp.forward_outputs(model, params, jnp.asarray(x))
    chex.assert_shape((z, y_hat), (7, 3))
    chex.assert_trees_all_close(z, jnp.asarray(zs_ref[-1]), rtol=1e-12, atol=1e-14)
    chex.assert_trees_all_close(y_hat, jnp.asarray(acts_ref[-1]), rtol=1e-12, atol=1e-14)
    # Every layer's z^[k] and a^[k], from the one loop the others read.
    forward = mlp.forward_layers(model, params, jnp.asarray(x))
    assert isinstance(forward, mlp.Forward)
    assert [z.shape for z in forward.z] == [(7, n) for n in model.sizes[1:]]
    assert [a.shape for a in forward.a] == [(7, n) for n in model.sizes]
    chex.assert_trees_all_close(
        forward, mlp.Forward(tuple(zs_ref), tuple(acts_ref)), rtol=1e-12, atol=1e-14
    )
