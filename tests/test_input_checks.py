"""Tests for jaxbp.check_inputs: the eager check of the values that the jittable functions
leave unchecked (non-finite inputs and params, targets outside the loss's domain, the clip)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp


def _problem(loss="mse", output="identity", n_out=2):
    model = jaxbp.MLP((3, 4, n_out), "tanh", output)
    params = jaxbp.init_params(jax.random.key(0), model)
    x = jax.random.normal(jax.random.key(1), (5, 3))
    if loss == "softmax_cross_entropy":
        y = jax.nn.one_hot(jnp.arange(5) % n_out, n_out)
    else:
        y = jnp.full((5, n_out), 0.5)
    return model, params, x, y


@pytest.mark.parametrize(
    ("loss", "output", "n_out"),
    [("mse", "identity", 2), ("bce", "sigmoid", 1), ("softmax_cross_entropy", "softmax", 3)],
)
def test_valid_batches_pass(loss, output, n_out):
    model, params, x, y = _problem(loss, output, n_out)
    assert jaxbp.check_inputs(model, loss, params, x, y, clip_norm=1.0) is None


def test_a_non_finite_feature_is_refused_with_its_row_and_column():
    model, params, x, y = _problem()
    x = x.at[3, 2].set(jnp.nan)
    with pytest.raises(ValueError, match=r"x has 1 NaN or infinite entries .*row 3, column 2"):
        jaxbp.check_inputs(model, "mse", params, x, y)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_a_feature_that_overflows_float32_is_refused():
    """1e39 is finite in float64 but inf once the computation's float32 holds it."""
    model, params, x, y = _problem()
    x = np.asarray(x, np.float64)
    x[1, 0] = 1e39
    with pytest.raises(ValueError, match=r"float32 \(first at row 1, column 0\)"):
        jaxbp.check_inputs(model, "mse", params, x, y)


def test_non_finite_params_are_refused_by_layer():
    model, params, x, y = _problem()
    params[1]["b"] = params[1]["b"].at[0].set(jnp.inf)
    with pytest.raises(ValueError, match="params layer 2 b has 1 NaN or infinite"):
        jaxbp.check_inputs(model, "mse", params, x, y)


@pytest.mark.parametrize(
    ("loss", "output", "n_out", "y", "message"),
    [
        ("bce", "sigmoid", 1, [[0.0], [1.0], [2.0], [0.0], [1.0]], r"must lie in \[0, 1\]"),
        ("mse", "identity", 1, [[0.0], [np.nan], [2.0], [0.0], [1.0]], "must be finite"),
        (
            "softmax_cross_entropy",
            "softmax",
            2,
            [[1.5, -0.5]] + [[1.0, 0.0]] * 4,
            "must be non-negative",
        ),
        (
            "softmax_cross_entropy",
            "softmax",
            2,
            [[0.5, 0.4]] + [[1.0, 0.0]] * 4,
            "rows must sum to 1",
        ),
    ],
    ids=["bce-range", "mse-nan", "ce-negative", "ce-not-normalised"],
)
def test_targets_outside_the_loss_domain_are_refused(loss, output, n_out, y, message):
    model, params, x, _ = _problem(loss, output, n_out)
    with pytest.raises(ValueError, match=message):
        jaxbp.check_inputs(model, loss, params, x, jnp.asarray(y))


@pytest.mark.parametrize("clip_norm", [0.0, -1.0, np.float32(-2.0), jnp.array(0.0)])
def test_a_clip_norm_that_is_not_positive_is_refused(clip_norm):
    model, params, x, y = _problem()
    with pytest.raises(ValueError, match="clip_norm must be positive"):
        jaxbp.check_inputs(model, "mse", params, x, y, clip_norm=clip_norm)


def test_shapes_are_checked_as_loss_and_grad_checks_them():
    model, params, x, y = _problem()
    with pytest.raises(ValueError, match="y has shape"):
        jaxbp.check_inputs(model, "mse", params, x, y[:, :1])


def test_traced_values_are_refused_with_the_fix():
    model, params, x, y = _problem()
    with pytest.raises(ValueError, match="call it outside jax.jit"):
        jax.jit(lambda x: jaxbp.check_inputs(model, "mse", params, x, y))(x)


def test_the_jittable_functions_leave_values_unchecked():
    """The documented rule: a NaN input is not an error in loss_and_grad, it is a NaN loss."""
    model, params, x, y = _problem()
    value, _ = jaxbp.loss_and_grad(model, "mse", params, x.at[0, 0].set(jnp.nan), y)
    assert np.isnan(value)
