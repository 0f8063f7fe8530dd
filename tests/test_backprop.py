"""Tests for jaxbp.backprop: the δ recursion (seed 002 §3.1-3.6, seed 003 Summary of
Gradients) against jax.grad of the plain forward pass.

Three routes to the gradient are compared: `loss_and_grad` (the derivation alone),
``jax.grad`` through ``apply(backward="custom")`` (the custom_vjp) and ``jax.grad`` through
``apply(backward="autodiff")`` / `loss_value` (the oracle).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from problems import TOLERANCES, assert_grads_close, make_params, make_problem

import jaxbp
from jaxbp.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from jaxbp.losses import LOSSES

# The losses each output activation can be trained with (bce and softmax cross-entropy
# require their activation; the regression losses go with any).
COMPATIBLE_LOSSES = {
    output: tuple(name for name, loss in LOSSES.items() if loss.fits(output))
    for output in OUTPUT_ACTIVATIONS
}


def loss_through_apply(model, loss, params, x, y, backward):
    """The loss on ŷ = apply(...): differentiating it differentiates `apply`."""
    return LOSSES[loss].value(jaxbp.apply(model, params, x, backward=backward), y)


# --- Property test: every route agrees with autodiff --------------------------------------


@st.composite
def configs(draw):
    depth = draw(st.integers(1, 6))
    sizes = tuple(draw(st.lists(st.integers(1, 32), min_size=depth + 1, max_size=depth + 1)))
    output = draw(st.sampled_from(sorted(COMPATIBLE_LOSSES)))
    if output == "softmax":  # softmax needs two units at least (one is the constant 1)
        sizes = (*sizes[:-1], max(2, sizes[-1]))
    return dict(
        sizes=sizes,
        activation=draw(st.sampled_from(HIDDEN_ACTIVATIONS)),
        output=output,
        loss=draw(st.sampled_from(COMPATIBLE_LOSSES[output])),
        use_bias=draw(st.booleans()),
        batch=draw(st.integers(1, 17)),
        dtype=draw(st.sampled_from(["float32", "float64"])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


# Each example compiles a fresh network; one jit of all four gradients is much cheaper than
# running them eagerly (one XLA compile per op and shape), so the property runs under jit and
# the eager path is covered by the deterministic tests below.
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(config=configs())
def test_hand_gradients_match_autodiff(config):
    dtype = config["dtype"]
    with jax.enable_x64(dtype == "float64"):
        model = jaxbp.MLP(
            config["sizes"], config["activation"], config["output"], config["use_bias"]
        )
        loss = config["loss"]
        params, x, y = make_problem(
            model, loss, batch=config["batch"], seed=config["seed"], dtype=dtype
        )

        @jax.jit
        def routes(params, x, y):
            value, hand = jaxbp.loss_and_grad(model, loss, params, x, y)
            oracle_value, oracle = jax.value_and_grad(jaxbp.loss_value, argnums=2)(
                model, loss, params, x, y
            )
            through_vjp = jax.grad(loss_through_apply, argnums=2)(
                model, loss, params, x, y, "custom"
            )
            autodiff = jax.grad(loss_through_apply, argnums=2)(
                model, loss, params, x, y, "autodiff"
            )
            return value, oracle_value, hand, oracle, through_vjp, autodiff

        value, oracle_value, hand, oracle, through_vjp, autodiff = routes(params, x, y)
        chex.assert_shape(value, ())
        chex.assert_tree_all_finite((hand, through_vjp))
        rtol = TOLERANCES[dtype][0]
        chex.assert_trees_all_close(value, oracle_value, rtol=rtol, atol=0.0)
        assert_grads_close(hand, oracle, dtype)
        assert_grads_close(through_vjp, autodiff, dtype)


# --- The seeds' formulas, written out ------------------------------------------------------


def test_one_layer_gradient_of_seed_000(x64):
    """Seed 000 eqs. 3, 14: ∂L/∂W = 1/n Σ_i 2(ŷ_i − y_i) σ(z_i)(1 − σ(z_i)) x_iᵀ, and ∂L/∂b
    (left to the reader there) is the same without the x_i."""
    model = jaxbp.MLP((4, 1), output_activation="sigmoid")
    params, x, y = make_problem(model, "mse", batch=6, seed=1)
    xn, yn = np.asarray(x), np.asarray(y)[:, 0]
    W, b = np.asarray(params[0]["W"])[0], float(params[0]["b"][0])
    s = 1 / (1 + np.exp(-(xn @ W + b)))
    common = 2 * (s - yn) * s * (1 - s)
    value, grads = jaxbp.loss_and_grad(model, "mse", params, x, y)
    chex.assert_trees_all_close(value, jnp.asarray(np.mean((yn - s) ** 2)), rtol=1e-13)
    chex.assert_trees_all_close(
        grads[0]["W"], jnp.asarray(np.mean(common[:, None] * xn, axis=0)[None]), rtol=1e-12
    )
    chex.assert_trees_all_close(grads[0]["b"], jnp.asarray([np.mean(common)]), rtol=1e-12)


def test_two_layer_summary_of_gradients_of_seed_003(x64):
    """Seed 003, Summary of Gradients, one example, L = ½‖y − ŷ‖², σ hidden, f = tanh."""
    model = jaxbp.MLP((3, 4, 2), activation="sigmoid", output_activation="tanh")
    params, x, y = make_problem(model, "half_mse", batch=1, seed=2)
    W1, b1 = np.asarray(params[0]["W"]), np.asarray(params[0]["b"])
    W2, b2 = np.asarray(params[1]["W"]), np.asarray(params[1]["b"])
    xv, yv = np.asarray(x)[0], np.asarray(y)[0]
    z1 = W1 @ xv + b1
    a1 = 1 / (1 + np.exp(-z1))
    y_hat = np.tanh(W2 @ a1 + b2)
    delta2 = (y_hat - yv) * (1 - y_hat**2)
    delta1 = (W2.T @ delta2) * a1 * (1 - a1)
    expected = [
        {"W": np.outer(delta1, xv), "b": delta1},
        {"W": np.outer(delta2, a1), "b": delta2},
    ]
    _, grads = jaxbp.loss_and_grad(model, "half_mse", params, x, y)
    chex.assert_trees_all_close(grads, jax.tree.map(jnp.asarray, expected), rtol=1e-12, atol=0.0)


# --- The custom_vjp under transformations --------------------------------------------------

MODEL = jaxbp.MLP((4, 6, 5, 3), activation="tanh", output_activation="sigmoid")


def test_input_cotangent_matches_autodiff(x64):
    """∂/∂x = δ^[1] W^[1]: the custom_vjp returns it, not None or zero."""
    params, x, _ = make_problem(MODEL, "mse", batch=5, seed=3)
    g_bar = jnp.asarray(np.random.default_rng(4).normal(size=(5, 3)))

    @functools.partial(jax.jit, static_argnums=0)
    def grad_x(backward, x):
        def f(x):
            return jnp.vdot(jaxbp.apply(MODEL, params, x, backward=backward), g_bar)

        return jax.grad(f)(x)

    custom, autodiff = grad_x("custom", x), grad_x("autodiff", x)
    chex.assert_shape(custom, x.shape)
    assert float(jnp.min(jnp.max(jnp.abs(custom), axis=1))) > 1e-3  # every row non-zero
    chex.assert_trees_all_close(custom, autodiff, rtol=1e-10, atol=1e-14)
    # And for one example (1-D x).
    single = jax.grad(lambda x: jnp.vdot(jaxbp.apply(MODEL, params, x), g_bar[0]))(x[0])
    chex.assert_trees_all_close(single, autodiff[0], rtol=1e-10, atol=1e-14)


def test_input_cotangent_of_a_linear_layer_is_g_bar_times_w(x64):
    """For ŷ = x Wᵀ + b, ∂⟨ŷ, ḡ⟩/∂x = ḡ W exactly."""
    model = jaxbp.MLP((3, 2))
    params, x, _ = make_problem(model, "mse", batch=4, seed=5)
    g_bar = jnp.asarray(np.random.default_rng(6).normal(size=(4, 2)))
    x_bar = jax.grad(lambda x: jnp.vdot(jaxbp.apply(model, params, x), g_bar))(x)
    expected = np.asarray(g_bar) @ np.asarray(params[0]["W"])
    chex.assert_trees_all_close(x_bar, jnp.asarray(expected), rtol=1e-13, atol=0.0)


def test_custom_grad_under_jit(x64):
    params, x, y = make_problem(MODEL, "mse", seed=7)
    jitted = jax.jit(jax.grad(loss_through_apply, argnums=2), static_argnums=(0, 1, 5))
    custom = jitted(MODEL, "mse", params, x, y, "custom")
    autodiff = jax.grad(loss_through_apply, argnums=2)(MODEL, "mse", params, x, y, "autodiff")
    assert_grads_close(custom, autodiff, "float64")


def test_custom_path_under_vmap_over_examples(x64):
    """apply on one example (1-D x) under vmap: outputs and per-example gradients."""
    params, x, y = make_problem(MODEL, "mse", batch=6, seed=8)

    @functools.partial(jax.jit, static_argnums=0)
    def one(backward):
        def loss_one(params, x_i, y_i):
            return jnp.sum((jaxbp.apply(MODEL, params, x_i, backward=backward) - y_i) ** 2)

        return jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, y)

    outputs = jax.vmap(lambda x_i: jaxbp.apply(MODEL, params, x_i))(x)
    chex.assert_shape(outputs, (6, 3))
    chex.assert_trees_all_close(
        outputs, jaxbp.apply(MODEL, params, x, backward="autodiff"), rtol=1e-14, atol=0.0
    )
    custom = one("custom")
    chex.assert_tree_shape_prefix(custom, (6,))
    assert_grads_close(custom, one("autodiff"), "float64")


@pytest.mark.parametrize(
    ("activation", "output", "loss"),
    [
        ("sigmoid", "identity", "mse"),
        ("tanh", "softmax", "softmax_cross_entropy"),
        ("softplus", "sigmoid", "bce"),
    ],
)
def test_hessian_vector_product_reverse_over_reverse(x64, activation, output, loss):
    """jax.grad(v ↦ ⟨∇f(p), v⟩): the custom bwd is itself differentiated by jax.grad."""
    model = jaxbp.MLP((3, 5, 4), activation=activation, output_activation=output)
    params, x, y = make_problem(model, loss, seed=9)
    v = make_params(model, np.random.default_rng(10), "float64")

    def hvp(backward):
        def f(p):
            return loss_through_apply(model, loss, p, x, y, backward)

        def inner(p):
            g = jax.grad(f)(p)
            return sum(
                jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(v), strict=True)
            )

        return jax.grad(inner)(params)

    custom, autodiff = hvp("custom"), hvp("autodiff")
    assert max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(autodiff)) > 1e-3
    assert_grads_close(custom, autodiff, "float64")


def test_hessian_forward_over_reverse_works(x64):
    """jax.hessian is jacfwd(jacrev(f)): forward mode runs over the custom *bwd*, which is
    plain jnp code, so it works on the custom path and agrees with autodiff."""
    model = jaxbp.MLP((2, 3, 2), activation="tanh", output_activation="softmax")
    params, x, y = make_problem(model, "softmax_cross_entropy", seed=11)
    # Under jit: eagerly, jax.hessian compiles hundreds of small ops one by one.
    hessian = jax.jit(jax.hessian(loss_through_apply, argnums=2), static_argnums=(0, 1, 5))
    hessians = [
        hessian(model, "softmax_cross_entropy", params, x, y, backward)
        for backward in ("custom", "autodiff")
    ]
    assert_grads_close(*hessians, "float64")


@pytest.mark.parametrize(
    "transform",
    [
        lambda f, p: jax.jvp(f, (p,), (p,)),
        lambda f, p: jax.jacfwd(f)(p),
    ],
    ids=["jvp", "jacfwd"],
)
def test_forward_mode_raises_with_hint(transform):
    model = jaxbp.MLP((3, 4, 2))
    params, x, _ = make_problem(model, "mse", dtype="float32")

    def f(p):
        return jaxbp.apply(model, p, x)

    with pytest.raises(TypeError, match="backward='autodiff'"):
        transform(f, params)
    # The autodiff path supports forward mode.
    transform(lambda p: jaxbp.apply(model, p, x, backward="autodiff"), params)


def test_forward_mode_through_a_fused_loss_raises_with_hint():
    """loss_value(backward="custom") takes bce and softmax cross-entropy from the logits,
    through a second custom_vjp: forward mode meets the same hint there."""
    model = jaxbp.MLP((3, 4, 2), output_activation="softmax")
    params, x, y = make_problem(model, "softmax_cross_entropy", dtype="float32")

    def f(p):
        return jaxbp.loss_value(model, "softmax_cross_entropy", p, x, y, backward="custom")

    with pytest.raises(TypeError, match="backward='autodiff'"):
        jax.jvp(f, (params,), (params,))


def test_jax_refuses_forward_mode_through_any_custom_vjp_with_a_type_error():
    """What `apply`'s hint relies on: JAX raises a TypeError (whatever its words) when a
    tangent is pushed through a custom_vjp function, here one unrelated to jaxbp."""

    @jax.custom_vjp
    def double(x):
        return 2 * x

    double.defvjp(lambda x: (2 * x, None), lambda _, g: (2 * g,))
    assert float(jax.grad(double)(1.0)) == 2.0  # reverse mode is fine
    with pytest.raises(TypeError):
        jax.jvp(double, (1.0,), (1.0,))


def test_other_type_errors_of_the_custom_path_get_no_hint(monkeypatch):
    """The hint is added only under forward mode: a TypeError raised inside the network
    (here by a broken activation) comes out unchanged."""
    model = jaxbp.MLP((3, 4, 2), activation="softplus")
    params, x, _ = make_problem(model, "mse", dtype="float32")

    def broken(z):
        raise TypeError("broken activation")

    broken_softplus = jaxbp.ACTIVATIONS["softplus"]._replace(fn=broken)
    monkeypatch.setitem(jaxbp.ACTIVATIONS, "softplus", broken_softplus)
    with pytest.raises(TypeError, match="broken activation") as info:
        jaxbp.apply(model, params, x)
    assert "backward='autodiff'" not in str(info.value)


def test_forward_mode_under_jit_still_raises():
    """Under jit the jvp happens after `apply` has returned, so JAX's own TypeError arrives
    without jaxbp's hint; it is still a TypeError about forward mode."""
    model = jaxbp.MLP((3, 4, 2))
    params, x, _ = make_problem(model, "mse", dtype="float32")
    f = jax.jit(lambda p: jaxbp.apply(model, p, x))
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(f, (params,), (params,))


# --- Residuals -------------------------------------------------------------------------------


def test_forward_with_residuals_keeps_weights_and_activations_only(x64):
    """Every g' is read from its output, so only a^[0..L] and W^[1..L] are kept (no z^[k])."""
    params, x, _ = make_problem(MODEL, "mse", batch=5, seed=14)
    z_out, y_hat, residuals = jaxbp.forward_with_residuals(MODEL, params, x)
    assert isinstance(residuals, jaxbp.Residuals)
    assert jaxbp.Residuals._fields == ("weights", "activations")
    assert len(residuals.weights) == MODEL.num_layers
    assert len(residuals.activations) == MODEL.num_layers + 1
    for W, layer in zip(residuals.weights, params, strict=True):
        assert W is layer["W"]
    for a, n in zip(residuals.activations, MODEL.sizes, strict=True):
        chex.assert_shape(a, (5, n))
    # The activations are post-activations, computed here independently in numpy.
    a = np.asarray(x)
    expected = [a]
    for k, layer in enumerate(params):
        z = a @ np.asarray(layer["W"]).T + np.asarray(layer["b"])
        a = np.tanh(z) if k < MODEL.num_layers - 1 else 1 / (1 + np.exp(-z))
        expected.append(a)
    chex.assert_trees_all_close(
        residuals.activations, tuple(map(jnp.asarray, expected)), rtol=1e-12, atol=1e-15
    )
    chex.assert_trees_all_close(z_out, jnp.asarray(z), rtol=1e-12, atol=1e-15)
    assert y_hat is residuals.activations[-1]


def test_custom_vjp_saves_only_the_residuals(x64):
    """What jax.vjp holds on to for the custom path: the weights and activations, nothing else
    (an autodiff vjp would also keep the pre-activations)."""
    params, x, _ = make_problem(MODEL, "mse", batch=5, seed=15)
    _, vjp_fn = jax.vjp(lambda p: jaxbp.apply(MODEL, p, x), params)
    saved = sorted(tuple(leaf.shape) for leaf in jax.tree.leaves(vjp_fn))
    _, _, residuals = jaxbp.forward_with_residuals(MODEL, params, x)
    assert saved == sorted(tuple(leaf.shape) for leaf in jax.tree.leaves(residuals))


class LossAndGradVariantsTest(chex.TestCase):
    """loss_and_grad with and without jit (rlax style), both against the autodiff oracle."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_loss_and_grad(self):
        model = jaxbp.MLP((4, 5, 3), activation="relu", output_activation="softmax")
        with jax.enable_x64(True):
            params, x, y = make_problem(model, "softmax_cross_entropy", seed=16)
            fn = self.variant(jaxbp.loss_and_grad, static_argnums=(0, 1))
            value, grads = fn(model, "softmax_cross_entropy", params, x, y)
            oracle = jax.value_and_grad(jaxbp.loss_value, argnums=2)
            oracle_value, oracle_grads = oracle(model, "softmax_cross_entropy", params, x, y)
            chex.assert_trees_all_close(value, oracle_value, rtol=1e-12, atol=0.0)
            assert_grads_close(grads, oracle_grads, "float64")


# --- Bad input -------------------------------------------------------------------------------

SMALL = jaxbp.MLP((3, 4, 2))


@pytest.fixture
def small_problem():
    return make_problem(SMALL, "mse", batch=5, seed=17, dtype="float32")


def test_apply_single_example_shape(small_problem):
    params, x, _ = small_problem
    single = jaxbp.apply(SMALL, params, x[2])
    chex.assert_shape(single, (2,))
    chex.assert_trees_all_close(single, jaxbp.apply(SMALL, params, x)[2], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("entry", ["apply", "loss_and_grad", "per_example_grads", "loss_value"])
def test_wrong_feature_count(small_problem, entry):
    params, _, y = small_problem
    x = jnp.ones((5, 4))
    with pytest.raises(ValueError, match=r"x has shape \(5, 4\).*\(batch, 3\)"):
        if entry == "apply":
            jaxbp.apply(SMALL, params, x)
        else:
            getattr(jaxbp, entry)(SMALL, "mse", params, x, y)


@pytest.mark.parametrize(
    "entry",
    ["loss_and_grad", "loss_value", "per_example_grads", "per_example_grad_norms"],
)
def test_empty_batch_is_refused(small_problem, entry):
    params, _, _ = small_problem
    with pytest.raises(ValueError, match=r"x has shape \(0, 3\): an empty batch.*at least one"):
        getattr(jaxbp, entry)(SMALL, "mse", params, jnp.zeros((0, 3)), jnp.zeros((0, 2)))


def test_apply_rejects_3d_x(small_problem):
    params, _, _ = small_problem
    with pytest.raises(ValueError, match=r"x has shape \(2, 5, 3\)"):
        jaxbp.apply(SMALL, params, jnp.ones((2, 5, 3)))


def test_loss_and_grad_rejects_1d_x(small_problem):
    params, x, y = small_problem
    with pytest.raises(ValueError, match=r"x has shape \(3,\).*takes a batch.*x\[None\]"):
        jaxbp.loss_and_grad(SMALL, "mse", params, x[0], y[0])


@pytest.mark.parametrize(
    ("y_shape", "pattern"),
    [
        ((5, 3), r"y has shape \(5, 3\).*need \(5, 2\)"),
        ((4, 2), r"y has shape \(4, 2\).*need \(5, 2\)"),
        ((5,), r"y has shape \(5,\).*need \(5, 2\).*one_hot"),
        ((5, 2, 1), r"y has shape \(5, 2, 1\)"),
    ],
)
def test_wrong_target_shape(small_problem, y_shape, pattern):
    params, x, _ = small_problem
    with pytest.raises(ValueError, match=pattern):
        jaxbp.loss_and_grad(SMALL, "mse", params, x, jnp.zeros(y_shape))


def _transpose_first_w(params):
    return [{**params[0], "W": params[0]["W"].T}, params[1]]


@pytest.mark.parametrize(
    ("corrupt", "pattern"),
    [
        (_transpose_first_w, r"layer 1 W has shape \(3, 4\).*need \(4, 3\)"),
        (
            lambda p: [p[0], {"W": p[1]["W"]}],
            r"layer 2 params must have keys \['W', 'b'\].*got \['W'\]",
        ),
        (lambda p: [{**p[0], "b": jnp.zeros(5)}, p[1]], r"layer 1 b has shape \(5,\).*need \(4,\)"),
        (lambda p: p[:1], "list of 2 layer dicts.*got 1.*init_params"),
        (lambda p: [*p, p[1]], "list of 2 layer dicts.*got 3"),
        (lambda p: {"layers": p}, "list of 2 layer dicts.*got dict"),
    ],
    ids=["transposed_W", "missing_b", "wrong_b", "too_few_layers", "too_many_layers", "dict"],
)
@pytest.mark.parametrize("entry", ["apply", "loss_and_grad"])
def test_wrong_params(small_problem, corrupt, pattern, entry):
    params, x, y = small_problem
    bad = corrupt(params)
    with pytest.raises(ValueError, match=pattern):
        if entry == "apply":
            jaxbp.apply(SMALL, bad, x)
        else:
            jaxbp.loss_and_grad(SMALL, "mse", bad, x, y)


def test_bias_given_to_a_model_without_bias(small_problem):
    params, x, y = small_problem
    model = jaxbp.MLP((3, 4, 2), use_bias=False)
    with pytest.raises(ValueError, match=r"layer 1 params must have keys \['W'\].*use_bias=False"):
        jaxbp.loss_and_grad(model, "mse", params, x, y)


def test_unknown_backward(small_problem):
    params, x, y = small_problem
    with pytest.raises(ValueError, match="unknown backward 'numeric'.*custom, autodiff"):
        jaxbp.apply(SMALL, params, x, backward="numeric")
    with pytest.raises(ValueError, match="unknown backward 'numeric'"):
        jaxbp.loss_value(SMALL, "mse", params, x, y, backward="numeric")


@pytest.mark.parametrize("entry", ["loss_and_grad", "per_example_grads", "loss_value"])
def test_unknown_loss(small_problem, entry):
    params, x, y = small_problem
    with pytest.raises(ValueError, match="unknown loss 'hinge'.*mse"):
        getattr(jaxbp, entry)(SMALL, "hinge", params, x, y)


def test_bce_without_sigmoid_output(small_problem):
    params, x, y = small_problem
    with pytest.raises(ValueError, match="'bce' needs output_activation='sigmoid'.*'identity'"):
        jaxbp.loss_and_grad(SMALL, "bce", params, x, y)


def test_flat_target_with_wrong_batch_reports_the_given_shape():
    model = jaxbp.MLP((3, 1))
    params, x, _ = make_problem(model, "mse", batch=5, dtype="float32")
    with pytest.raises(ValueError, match=r"y has shape \(4,\)"):
        jaxbp.loss_and_grad(model, "mse", params, x, jnp.zeros(4))


def test_single_output_unit_accepts_flat_targets(x64):
    model = jaxbp.MLP((3, 4, 1), output_activation="sigmoid")
    params, x, y = make_problem(model, "bce", batch=6, seed=18)
    flat_value, flat = jaxbp.loss_and_grad(model, "bce", params, x, y[:, 0])
    value, grads = jaxbp.loss_and_grad(model, "bce", params, x, y)
    oracle = jax.grad(jaxbp.loss_value, argnums=2)(model, "bce", params, x, y)
    assert_grads_close(grads, oracle, "float64")
    chex.assert_trees_all_close((flat_value, flat), (value, grads), rtol=1e-15, atol=0.0)
    per_example = jaxbp.per_example_grads(model, "bce", params, x, y[:, 0])
    chex.assert_tree_shape_prefix(per_example, (6,))


# --- The pieces of the recursion ------------------------------------------------------------


def test_backward_from_output_delta_input_grad_flag(x64):
    params, x, _ = make_problem(MODEL, "mse", seed=19)
    _, _, residuals = jaxbp.forward_with_residuals(MODEL, params, x)
    delta = jnp.asarray(np.random.default_rng(20).normal(size=(5, 3)))
    grads, x_bar = jaxbp.backward_from_output_delta(MODEL, residuals, delta)
    grads_no_x, none = jaxbp.backward_from_output_delta(MODEL, residuals, delta, input_grad=False)
    assert none is None
    chex.assert_shape(x_bar, x.shape)
    chex.assert_trees_all_close(grads_no_x, grads, rtol=1e-15, atol=0.0)
    # δ^[L] = ∂L/∂z^[L]: the oracle differentiates ⟨z^[L], δ⟩ through the plain forward.
    oracle = jax.grad(
        lambda p, x: jnp.vdot(jaxbp.forward_logits(MODEL, p, x), delta), argnums=(0, 1)
    )(params, x)
    assert_grads_close((grads, x_bar), oracle, "float64")


def test_recursion_pieces_check_the_shapes_they_are_given(x64):
    params, x, _ = make_problem(MODEL, "mse", seed=22)
    _, _, residuals = jaxbp.forward_with_residuals(MODEL, params, x)
    with pytest.raises(AssertionError):  # δ^[L] must be shaped like ŷ = a^[L]: (5, 3)
        jaxbp.layer_deltas(MODEL, residuals, jnp.ones((5, 2)))
    with pytest.raises(AssertionError):  # residuals of another network
        jaxbp.layer_deltas(jaxbp.MLP((4, 5, 3)), residuals, jnp.ones((5, 3)))
    deltas = jaxbp.layer_deltas(MODEL, residuals, jnp.ones((5, 3)))
    with pytest.raises(AssertionError):  # δ^[k] must be shaped like a^[k]
        jaxbp.gradients_from_deltas(MODEL, residuals, (deltas[0].T, *deltas[1:]))


def test_output_delta_softmax_matches_jax_vjp(x64):
    model = jaxbp.MLP((3, 4), output_activation="softmax")
    rng = np.random.default_rng(21)
    z, g_bar = jnp.asarray(rng.normal(size=(5, 4))), jnp.asarray(rng.normal(size=(5, 4)))
    y_hat, vjp_fn = jax.vjp(lambda z: jax.nn.softmax(z, axis=-1), z)
    chex.assert_trees_all_close(
        jaxbp.output_delta(model, y_hat, g_bar), vjp_fn(g_bar)[0], rtol=1e-12, atol=1e-15
    )
