"""Tests for jaxbp.losses: each hand-written ∂L/∂ŷ and fused δ^[L] against jax.grad.

Eqs. (1.2)-(1.3) of docs/derivations.md (L = 1/n Σ L_i, so the gradient is the mean of
per-example gradients), eq. (2.1) (ℒ = Σ (s − y)², a sum), eq. (4.3) (∂L/∂ŷ = ŷ − y for
½‖y − ŷ‖²).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import losses
from jaxbp.losses import LOSSES

BATCH, N_OUT = 6, 4
FUSED = {"bce": jax.nn.sigmoid, "softmax_cross_entropy": lambda z: jax.nn.softmax(z, axis=-1)}


def _data(name, rng, batch=BATCH, n_out=N_OUT, soft=False):
    """Logits z, outputs ŷ in the loss's range and targets y in its encoding (float64)."""
    z = rng.normal(size=(batch, n_out)) * 2
    if name == "bce":
        y_hat = 1 / (1 + np.exp(-z))
        y = rng.uniform(size=z.shape) if soft else rng.integers(0, 2, z.shape).astype(float)
    elif name == "softmax_cross_entropy":
        y_hat = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        if soft:
            y = rng.dirichlet(np.ones(n_out), size=batch)
        else:
            y = np.eye(n_out)[rng.integers(0, n_out, batch)]
    else:
        y_hat = z
        y = rng.normal(size=z.shape)
    return jnp.asarray(z), jnp.asarray(y_hat), jnp.asarray(y)


def _assert_is_jax_grad(actual, value, at, y):
    """``actual`` is ``jax.grad(value)(at, y)``: its shape, float64, and its entries."""
    chex.assert_shape(actual, at.shape)
    assert actual.dtype == jnp.float64
    chex.assert_trees_all_close(actual, jax.grad(value)(at, y), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_hand_grad_matches_jax_grad_of_value(x64, name, soft):
    loss = LOSSES[name]
    _, y_hat, y = _data(name, np.random.default_rng(0), soft=soft)
    _assert_is_jax_grad(loss.grad(y_hat, y), loss.value, y_hat, y)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("name", list(FUSED))
def test_fused_delta_matches_jax_grad_of_value_from_logits(x64, name, soft):
    """δ^[L] = (ŷ − y)/n is ∂L/∂z^[L] of the loss computed from the logits."""
    loss = LOSSES[name]
    z, _, y = _data(name, np.random.default_rng(1), soft=soft)
    _assert_is_jax_grad(loss.delta_from_output(FUSED[name](z), y), loss.value_from_logits, z, y)


@pytest.mark.parametrize("name", list(FUSED))
def test_fused_delta_is_chain_rule_through_the_output_activation(x64, name):
    """The fused δ equals the unfused route ḡ · ∂ŷ/∂z with ḡ = loss.grad (away from saturation)."""
    loss = LOSSES[name]
    z, _, y = _data(name, np.random.default_rng(2))
    y_hat, vjp_fn = jax.vjp(FUSED[name], z)
    (expected,) = vjp_fn(loss.grad(y_hat, y))
    chex.assert_trees_all_close(loss.delta_from_output(y_hat, y), expected, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("name", list(FUSED))
def test_value_from_logits_matches_value_on_outputs(x64, name):
    loss = LOSSES[name]
    z, _, y = _data(name, np.random.default_rng(3), soft=True)
    expected = loss.value(FUSED[name](z), y)
    chex.assert_trees_all_close(loss.value_from_logits(z, y), expected, rtol=1e-12, atol=0.0)


def _hand_routes(model, name, params, x, y):
    """``(value, grads)`` by `loss_and_grad` and by ``jax.grad`` of
    ``loss_value(backward="custom")``: the two routes through the hand-written recursion."""

    def through_custom_vjp(p):
        return jaxbp.loss_value(model, name, p, x, y, backward="custom")

    return [
        jaxbp.loss_and_grad(model, name, params, x, y),
        jax.value_and_grad(through_custom_vjp)(params),
    ]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_saturated_bce_is_finite_via_loss_and_grad(dtype):
    """|z| = 1e3: σ(z) rounds to 1 or 0, yet loss and gradient stay finite and exact.

    One unit, no bias, W = [[1000]], x = [[1], [−1]], y = [[0], [0]]: z = ±1000, so the losses
    are softplus(1000) = 1000 and softplus(−1000) ≈ 0, L = 500; δ = (σ(z) − y)/2 = [1/2, 0] and
    ∂L/∂W = δᵀ x = 1/2.
    """
    with jax.enable_x64(dtype == "float64"):
        model = jaxbp.MLP((1, 1), output_activation="sigmoid", use_bias=False)
        params = [{"W": jnp.array([[1e3]], dtype)}]
        x = jnp.array([[1.0], [-1.0]], dtype)
        y = jnp.zeros((2, 1), dtype)
        # Without the fusion the loss would be log(1 − σ(1000)) = log(0): the test bites.
        assert not np.isfinite(float(LOSSES["bce"].value(jax.nn.sigmoid(x @ params[0]["W"].T), y)))
        for value, grads in _hand_routes(model, "bce", params, x, y):
            assert value.dtype == dtype
            chex.assert_tree_all_finite((value, grads))
            chex.assert_trees_all_close(value, jnp.asarray(500.0, dtype), rtol=1e-6, atol=0.0)
            expected_w = jnp.array([[0.5]], dtype)
            chex.assert_trees_all_close(grads[0]["W"], expected_w, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_saturated_softmax_cross_entropy_is_finite_via_loss_and_grad(dtype):
    """z = [1000, 0, −1000] with the true class last: L = logsumexp(z) − z_3 = 2000.

    δ = s − y = [1, 0, −1] and ∂L/∂W = δᵀ x with x = [1, 0].
    """
    with jax.enable_x64(dtype == "float64"):
        model = jaxbp.MLP((2, 3), output_activation="softmax", use_bias=False)
        params = [{"W": jnp.array([[1e3, 0.0], [0.0, 0.0], [-1e3, 0.0]], dtype)}]
        x = jnp.array([[1.0, 0.0]], dtype)
        y = jnp.array([[0.0, 0.0, 1.0]], dtype)
        expected_w = jnp.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]], dtype)
        for value, grads in _hand_routes(model, "softmax_cross_entropy", params, x, y):
            chex.assert_tree_all_finite((value, grads))
            chex.assert_trees_all_close(value, jnp.asarray(2000.0, dtype), rtol=1e-6, atol=0.0)
            chex.assert_trees_all_close(grads[0]["W"], expected_w, rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("name", list(FUSED))
def test_saturated_fused_losses_match_autodiff_oracle(x64, name):
    """A deeper saturated net: both hand-written routes equal jax.grad of the from-logits
    loss."""
    output = "sigmoid" if name == "bce" else "softmax"
    model = jaxbp.MLP((3, 4, 3), activation="tanh", output_activation=output)
    params = jaxbp.init_params(jax.random.key(0), model, dtype=jnp.float64)
    params[1]["W"] = params[1]["W"] * 1e3
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(5, 3)) * 3)
    _, _, y = _data(name, rng, batch=5, n_out=3)
    z = jaxbp.forward_logits(model, params, x)
    assert float(jnp.max(jnp.abs(z))) > 100  # really saturated
    oracle = jax.grad(jaxbp.loss_value, argnums=2)(model, name, params, x, y)
    oracle_value = jaxbp.loss_value(model, name, params, x, y)
    for value, grads in _hand_routes(model, name, params, x, y):
        chex.assert_tree_all_finite((value, grads))
        chex.assert_trees_all_close(grads, oracle, rtol=1e-10, atol=1e-12)
        chex.assert_trees_all_close(value, oracle_value, rtol=1e-12)


@pytest.mark.parametrize("name", [n for n, loss in LOSSES.items() if loss.reduction == "mean"])
def test_mean_losses_are_the_batch_mean_of_per_example_losses(x64, name):
    """Eq. (1.2): L = 1/n Σ L_i, and so ∂L/∂ŷ_i = (1/n) ∂L_i/∂ŷ_i."""
    loss = LOSSES[name]
    _, y_hat, y = _data(name, np.random.default_rng(5))
    per_example = jnp.stack([loss.value(y_hat[i : i + 1], y[i : i + 1]) for i in range(BATCH)])
    chex.assert_trees_all_close(loss.value(y_hat, y), jnp.mean(per_example), rtol=1e-13)
    per_example_grad = jnp.concatenate(
        [loss.grad(y_hat[i : i + 1], y[i : i + 1]) for i in range(BATCH)]
    )
    chex.assert_trees_all_close(loss.grad(y_hat, y), per_example_grad / BATCH, rtol=1e-13)


def test_sse_is_a_sum_not_a_mean(x64):
    """Eq. (2.1): ℒ = Σ (s − y)²; doubling the batch doubles it, while mse stays put."""
    _, y_hat, y = _data("sse", np.random.default_rng(6))
    twice_y_hat, twice_y = jnp.concatenate([y_hat, y_hat]), jnp.concatenate([y, y])
    sse, mse = LOSSES["sse"], LOSSES["mse"]
    chex.assert_trees_all_close(
        sse.value(twice_y_hat, twice_y), 2 * sse.value(y_hat, y), rtol=1e-13
    )
    chex.assert_trees_all_close(mse.value(twice_y_hat, twice_y), mse.value(y_hat, y), rtol=1e-13)
    chex.assert_trees_all_close(sse.value(y_hat, y), BATCH * mse.value(y_hat, y), rtol=1e-13)


def test_loss_values_match_written_out_formulas(x64):
    """The losses of the derivations, written out in numpy."""
    rng = np.random.default_rng(7)
    y_hat, y = rng.normal(size=(BATCH, N_OUT)), rng.normal(size=(BATCH, N_OUT))
    expected = {
        "mse": np.mean(np.sum((y - y_hat) ** 2, axis=1)),  # eq. (1.2)
        "half_mse": np.mean(0.5 * np.sum((y - y_hat) ** 2, axis=1)),  # eq. (4.2)
        "sse": np.sum((y_hat - y) ** 2),  # eq. (2.1)
    }
    for name, value in expected.items():
        actual = LOSSES[name].value(jnp.asarray(y_hat), jnp.asarray(y))
        chex.assert_trees_all_close(actual, jnp.asarray(value), rtol=1e-13, atol=0.0)
    p = rng.uniform(0.05, 0.95, size=(BATCH, N_OUT))
    t = rng.integers(0, 2, size=(BATCH, N_OUT)).astype(float)
    bce = np.mean(np.sum(-(t * np.log(p) + (1 - t) * np.log(1 - p)), axis=1))
    chex.assert_trees_all_close(
        LOSSES["bce"].value(jnp.asarray(p), jnp.asarray(t)), jnp.asarray(bce), rtol=1e-13
    )


def test_loss_table():
    assert set(LOSSES) == {"mse", "half_mse", "sse", "bce", "softmax_cross_entropy"}
    for name, loss in LOSSES.items():
        assert loss.name == name
        assert loss.fused == (name in FUSED)
        assert (loss.delta_from_output is not None) == loss.fused
        assert (loss.value_from_logits is not None) == loss.fused
        assert loss.reduction in losses.REDUCTIONS
    assert [n for n, loss in LOSSES.items() if loss.reduction == "sum"] == ["sse"]
    assert {n: loss.output_activation for n, loss in LOSSES.items()} == {
        "mse": "identity",
        "half_mse": "identity",
        "sse": "identity",
        "bce": "sigmoid",
        "softmax_cross_entropy": "softmax",
    }


@pytest.mark.parametrize("name", list(LOSSES))
def test_reduction_is_how_the_value_combines_examples(x64, name):
    """ "mean": L(batch) = mean of L(example); "sum": the sum (eqs. (1.2), (2.1))."""
    loss = LOSSES[name]
    _, y_hat, y = _data(name, np.random.default_rng(8))
    per_example = jnp.stack([loss.value(y_hat[i : i + 1], y[i : i + 1]) for i in range(BATCH)])
    reduce = {"mean": jnp.mean, "sum": jnp.sum}[loss.reduction]
    chex.assert_trees_all_close(loss.value(y_hat, y), reduce(per_example), rtol=1e-13)


@pytest.mark.parametrize("output", jaxbp.OUTPUT_ACTIVATIONS)
def test_fits_follows_the_fusion(output):
    """A fused loss fits its own output activation alone; the regression losses fit any."""
    for name, loss in LOSSES.items():
        assert loss.fits(output) == (name not in FUSED or output == loss.output_activation)


def test_default_output_activation():
    assert losses.default_output_activation("bce") == "sigmoid"
    assert losses.default_output_activation("softmax_cross_entropy") == "softmax"
    for name in ("mse", "half_mse", "sse"):
        assert losses.default_output_activation(name) == "identity"
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        losses.default_output_activation("hinge")


@pytest.mark.parametrize(
    ("name", "y"),
    [
        ("bce", [[0.0], [1.0], [0.25]]),
        ("bce", np.array([0, 1, 1])),  # integer labels, one output unit
        ("softmax_cross_entropy", np.eye(3)[[0, 2, 1]]),
        ("softmax_cross_entropy", [[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]),
        ("softmax_cross_entropy", np.eye(4, dtype=np.int32)),
        ("softmax_cross_entropy", np.zeros((0, 3))),
        ("mse", [[-3.0, 1e6]]),
        ("sse", [[-3.0]]),
    ],
)
def test_check_targets_accepts_what_the_loss_fits(name, y):
    losses.check_targets(name, np.asarray(y))
    losses.check_targets(name, jnp.asarray(y))  # a device array is copied to the host


def test_check_targets_accepts_float32_probabilities():
    rows = np.random.default_rng(9).dirichlet(np.ones(10), size=1000).astype(np.float32)
    assert np.max(np.abs(rows.sum(axis=1) - 1)) > 0  # rounding really is there
    losses.check_targets("softmax_cross_entropy", rows)


@pytest.mark.parametrize(
    ("name", "y", "pattern"),
    [
        (
            "bce",
            [[0.0], [2.0]],
            r"bce targets must lie in \[0, 1\], got values from 0 to 2.*\(y \+ 1\)",
        ),
        ("bce", [[-1.0], [1.0]], r"from -1 to 1.*0/1 labels"),
        ("softmax_cross_entropy", [[1.5, -0.5]], r"non-negative, got a minimum of -0.5.*one_hot"),
        ("softmax_cross_entropy", [[1.0, 1.0], [0.0, 1.0]], r"rows must sum to 1.*from 1 to 2"),
        (
            "softmax_cross_entropy",
            [[0.0, 0.0]],
            r"rows must sum to 1.*from 0 to 0.*divide each row",
        ),
        ("softmax_cross_entropy", [[0.5, 0.5 + 1e-6]], r"rows must sum to 1"),
        (
            "softmax_cross_entropy",
            [0, 2, 1],
            r"shape \(3,\).*jax.nn.one_hot\(labels, num_classes\)",
        ),
        ("mse", [[0.0], [np.nan]], r"mse targets must be finite, got 1 NaN or infinite"),
        ("bce", [[np.inf]], r"must be finite"),
        ("hinge", [[0.0]], r"unknown loss 'hinge'"),
    ],
)
def test_check_targets_refuses_what_the_loss_cannot_fit(name, y, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        losses.check_targets(name, np.asarray(y, np.float64))
    assert "\n" not in str(info.value)  # one line


def test_get_loss_returns_the_loss():
    assert losses.get_loss("mse") is LOSSES["mse"]
    assert losses.get_loss("mse", "tanh") is LOSSES["mse"]
    assert losses.get_loss("bce", "sigmoid") is LOSSES["bce"]
    assert losses.get_loss("bce") is LOSSES["bce"]  # no activation given: nothing to check


def test_get_loss_unknown_name_lists_the_losses():
    with pytest.raises(ValueError, match="unknown loss 'hinge'") as info:
        losses.get_loss("hinge")
    for name in LOSSES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "name, activation, pattern",
    [
        ("bce", "identity", "output_activation='sigmoid'.*'identity'"),
        ("softmax_cross_entropy", "sigmoid", "output_activation='softmax'.*'sigmoid'"),
    ],
)
def test_get_loss_needs_the_output_activation_it_fits(name, activation, pattern):
    with pytest.raises(ValueError, match=pattern):
        losses.get_loss(name, activation)
