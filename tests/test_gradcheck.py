"""Tests for jaxbp.gradient_check: `gradcheck` passes right gradients and catches wrong ones.

Every entry must satisfy |a − b| ≤ atol + rtol·|b|: rtol 1e-10 (float64) or 1e-5 (float32)
against jax.grad, atol a few ε of the leaf's largest entry; rtol 1e-6 and atol
1e-12·max(1, |L|) against finite differences (float64 only).
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from problems import make_problem

import jaxbp
from jaxbp import activations, losses
from jaxbp.gradient_check import (
    GradCheckReport,
    LeafCheck,
    Tolerance,
    finite_difference_grads,
    gradcheck,
    random_targets,
    relative_error,
    tolerance_ratio,
)

# One set of sizes for all configurations: eager ops compile once per shape, so sharing
# shapes keeps this module fast. Two hidden layers, so δ passes through g' twice.
SIZES = (3, 5, 4, 3)


@pytest.mark.parametrize(
    ("activation", "output", "loss", "use_bias"),
    [
        ("sigmoid", "identity", "mse", True),
        ("tanh", "softmax", "softmax_cross_entropy", True),
        ("softplus", "sigmoid", "bce", False),
        ("relu", "sigmoid", "sse", True),
        ("leaky_relu", "identity", "half_mse", True),
    ],
)
def test_gradcheck_passes_float64(x64, activation, output, loss, use_bias):
    model = jaxbp.MLP(SIZES, activation, output, use_bias)
    params, x, y = make_problem(model, loss, batch=4)
    report = gradcheck(model, loss, params, x, y, fd_entries_per_leaf=8)
    assert report.passed, report.table()
    assert report.dtype == "float64"
    assert report.autodiff_tolerance == Tolerance(rtol=1e-10, atol=8 * np.finfo(np.float64).eps)
    assert report.finite_diff_tolerance == Tolerance(rtol=1e-6, atol=1e-12)
    assert report.max_vs_autodiff <= 1
    assert report.max_vs_finite_diff <= 1
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    assert len(report.rows) == len(leaves)
    for row, (path, leaf) in zip(report.rows, leaves, strict=True):
        assert (row.layer, row.leaf) == (path[0].idx + 1, path[1].key)
        assert row.shape == leaf.shape
        assert row.fd_entries == min(leaf.size, 8)
        assert 0 <= row.fd_skipped <= row.fd_entries
        assert row.fd_skipped < row.fd_entries or row.fd_entries == 0
        assert not math.isnan(row.vs_finite_diff)


@pytest.mark.parametrize(
    ("activation", "output", "loss"),
    [("sigmoid", "sigmoid", "half_mse"), ("relu", "softmax", "softmax_cross_entropy")],
)
def test_gradcheck_passes_float32(activation, output, loss):
    model = jaxbp.MLP(SIZES, activation, output)
    params, x, y = make_problem(model, loss, batch=4, dtype=jnp.float32)
    report = gradcheck(model, loss, params, x, y)
    assert report.passed, report.table()
    assert report.dtype == "float32"
    assert report.autodiff_tolerance == Tolerance(rtol=1e-5, atol=8 * np.finfo(np.float32).eps)
    assert report.max_vs_autodiff <= 1
    # No finite differences in float32: rounding would swamp them.
    assert all(row.fd_entries == 0 and math.isnan(row.vs_finite_diff) for row in report.rows)
    assert math.isnan(report.max_vs_finite_diff)
    assert "skipped" in report.table() and "nan" not in report.table()


# The float32 checks that failed under an element-wise relative error of 1e-5 (entries that
# cancel to near zero keep few digits): (seed, hidden, loss), sizes and batch of
# `./launch.sh gradcheck`.
FLOAT32_CANCELLING = [
    (1, "identity", "softmax_cross_entropy"),
    (3, "leaky_relu", "bce"),
    (2, "tanh", "sse"),
    (1, "softplus", "softmax_cross_entropy"),
]


@pytest.mark.parametrize(("seed", "activation", "loss"), FLOAT32_CANCELLING)
def test_gradcheck_float32_passes_where_entries_cancel(seed, activation, loss):
    # The cases come from XLA:CPU's summation orders; another backend may sum both routes
    # alike, so they run on the CPU wherever the test does.
    with jax.default_device(jax.devices("cpu")[0]):
        model = jaxbp.MLP((5, 8, 6, 3), activation, losses.default_output_activation(loss))
        k_params, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
        params = jaxbp.init_params(k_params, model, dtype=jnp.float32)
        x = jax.random.normal(k_x, (7, 5), jnp.float32)
        y = random_targets(k_y, model, loss, 7, jnp.float32)
        report = gradcheck(model, loss, params, x, y, seed=seed)
        assert report.passed, report.table()
        # The entries that cancel: a pure relative error would fail them.
        _, hand = jaxbp.loss_and_grad(model, loss, params, x, y)
        oracle = jax.grad(jaxbp.loss_value, argnums=2)(model, loss, params, x, y)
        worst = max(
            relative_error(a, b)
            for a, b in zip(jax.tree.leaves(hand), jax.tree.leaves(oracle), strict=True)
        )
        assert worst > 1e-5
        # Without the atol the same check fails: the atol is what lets them pass.
        assert not gradcheck(model, loss, params, x, y, atol=0.0, seed=seed).passed


def test_gradcheck_tolerances_can_be_set():
    model = jaxbp.MLP((3, 4, 2), "tanh", "identity")
    params, x, y = make_problem(model, "mse", batch=4, seed=8, dtype=jnp.float32)
    report = gradcheck(model, "mse", params, x, y, rtol=1e-3, atol=1e-4)
    assert report.autodiff_tolerance == Tolerance(rtol=1e-3, atol=1e-4)
    tight = gradcheck(model, "mse", params, x, y, rtol=0.0, atol=0.0)
    assert tight.max_vs_autodiff >= report.max_vs_autodiff


def test_gradcheck_skips_entries_across_a_relu_kink(x64):
    """A hidden ReLU unit whose pre-activation is 1e-4 on one example: steps of h = 1e-3 on
    its bias cross the kink, so those finite differences are skipped, and the check passes."""
    model = jaxbp.MLP((2, 3, 1), activation="relu")
    params = [
        {"W": jnp.array([[1.0, 0.0], [0.5, -0.5], [-1.0, 1.0]]), "b": jnp.array([1e-4, 0.2, 0.3])},
        {"W": jnp.array([[1.0, -2.0, 0.5]]), "b": jnp.array([0.1])},
    ]
    x = jnp.array([[0.0, 1.0], [1.0, 2.0], [-1.0, 0.5]])  # z_1 = 1e-4 on the first example
    y = jnp.array([[0.3], [-0.2], [1.0]])
    report = gradcheck(model, "mse", params, x, y)
    assert report.passed, report.table()
    b1 = next(r for r in report.rows if (r.layer, r.leaf) == (1, "b"))
    assert b1.fd_skipped >= 1
    assert sum(r.fd_skipped for r in report.rows) >= 1
    # The skipped entry really is invalid: its finite difference straddles the kink.
    fd, valid = finite_difference_grads(model, "mse", params, x, y, jnp.array([6]))
    assert not bool(valid[0])
    _, grads = jaxbp.loss_and_grad(model, "mse", params, x, y)
    assert relative_error(grads[0]["b"][0], fd[0]) > 1e-6


def test_finite_difference_grads_match_jax_grad(x64):
    model = jaxbp.MLP((3, 4, 2), "tanh", "identity")
    params, x, y = make_problem(model, "mse", batch=4, seed=3)
    flat = ravel_pytree(jax.grad(jaxbp.loss_value, argnums=2)(model, "mse", params, x, y))[0]
    indices = jnp.array([0, 5, 11, 12, 15, 20, 25])
    fd, valid = finite_difference_grads(model, "mse", params, x, y, indices)
    chex.assert_shape((fd, valid), (7,))
    assert bool(jnp.all(valid))  # no kinks in a tanh net
    chex.assert_trees_all_close(fd, flat[indices], rtol=1e-8, atol=1e-10)


def _wrong_sigmoid():
    """σ' taken as 1 − a² (tanh's rule from the output), a plausible mix-up."""

    def wrong(a):
        return 1 - a * a

    return activations.Activation("sigmoid", jax.nn.sigmoid, wrong, lambda a, g: g * wrong(a))


def test_gradcheck_catches_a_wrong_activation_derivative(x64, monkeypatch):
    # Sizes used nowhere else, so no cached trace of the wrong rule can leak into other tests.
    model = jaxbp.MLP((5, 7, 3), "sigmoid", "identity")
    params, x, y = make_problem(model, "mse", batch=4, seed=4)
    assert gradcheck(model, "mse", params, x, y, fd_entries_per_leaf=4).passed
    monkeypatch.setitem(activations.ACTIVATIONS, "sigmoid", _wrong_sigmoid())
    report = gradcheck(model, "mse", params, x, y, fd_entries_per_leaf=4)
    assert report.passed is False
    # Ratios to the tolerance: a wrong rule is off by orders of magnitude, not a factor.
    assert report.max_vs_autodiff > 1e6
    assert report.max_vs_finite_diff > 1e3
    first = [r for r in report.rows if r.layer == 1]
    assert all(r.vs_autodiff > 1e6 and r.custom_vjp_vs_autodiff > 1e6 for r in first)
    # The output layer (identity) comes before any σ', so it is still right.
    last = [r for r in report.rows if r.layer == 2]
    assert all(r.vs_autodiff <= 1 for r in last)
    assert "FAIL" in report.table()
    assert "PASS" not in report.table()


def test_gradcheck_catches_the_sign_erratum_of_eq_2_5(x64, monkeypatch):
    """The sign erratum of eq. (2.5), ∂ℒ/∂ŷ = 2(y − ŷ): the sign flip gives relative error 2.

    Only `loss_and_grad` uses the hand-written ∂L/∂ŷ; the custom_vjp path differentiates the
    loss value by jax.grad, so it still agrees with the oracle.
    """
    model = jaxbp.MLP((4, 3, 2), "tanh", "sigmoid")
    params, x, y = make_problem(model, "sse", batch=4, seed=5)
    wrong = losses.LOSSES["sse"]._replace(grad=lambda y_hat, y: 2 * (y - y_hat))
    monkeypatch.setitem(losses.LOSSES, "sse", wrong)
    report = gradcheck(model, "sse", params, x, y, fd_entries_per_leaf=4)
    assert not report.passed
    for row in report.rows:
        # |a − b| = 2|b|: about 2 / rtol times the tolerance on the leaf's larger entries.
        assert row.vs_autodiff > 0.1 * 2 / report.autodiff_tolerance.rtol
        assert row.vs_finite_diff > 0.1 * 2 / report.finite_diff_tolerance.rtol
        assert row.custom_vjp_vs_autodiff <= 1
    _, hand = jaxbp.loss_and_grad(model, "sse", params, x, y)
    oracle = jax.grad(jaxbp.loss_value, argnums=2)(model, "sse", params, x, y)
    for a, b in zip(jax.tree.leaves(hand), jax.tree.leaves(oracle), strict=True):
        assert relative_error(a, b) == pytest.approx(2.0, rel=1e-9)  # exactly −∇


def test_tolerance_ratio_semantics():
    tol = Tolerance(rtol=0.1, atol=0.01)
    assert tolerance_ratio(jnp.zeros(3), jnp.zeros(3), tol, 1.0) == 0.0
    # |a − b| / (atol·scale + rtol·|b|), the worst entry.
    a, b = jnp.array([1.0, 10.5, 0.0]), jnp.array([1.0, 10.0, 0.005])
    assert tolerance_ratio(a, b, tol, 1.0) == pytest.approx(0.5 / (0.01 + 1.0))
    # atol is in units of the scale: near-zero entries are compared absolutely.
    assert tolerance_ratio(jnp.array([0.0]), jnp.array([0.005]), tol, 1.0) == pytest.approx(
        0.005 / (0.01 + 0.0005)
    )
    assert tolerance_ratio(jnp.array([0.0]), jnp.array([0.005]), tol, 10.0) < 0.05
    # A zero bound: equal entries pass, different ones fail by an infinite ratio.
    zero = Tolerance(rtol=0.0, atol=0.0)
    assert tolerance_ratio(jnp.array([2.0]), jnp.array([2.0]), zero, 1.0) == 0.0
    assert tolerance_ratio(jnp.array([2.0]), jnp.array([3.0]), zero, 1.0) == float("inf")
    # NaN or inf never passes; no entries is no error.
    assert tolerance_ratio(jnp.array([jnp.nan]), jnp.array([1.0]), tol, 1.0) == float("inf")
    assert tolerance_ratio(jnp.array([1.0]), jnp.array([jnp.inf]), tol, 1.0) == float("inf")
    assert tolerance_ratio(jnp.zeros((0,)), jnp.zeros((0,)), tol, 1.0) == 0.0


def test_relative_error_does_not_hide_nan():
    error = relative_error(np.array([np.nan, 1.0]), np.array([1.0, 1.0]))
    assert not error <= 1e-5


def test_gradcheck_fails_a_nan_gradient(x64, monkeypatch):
    model = jaxbp.MLP((2, 3, 2), "tanh", "identity")
    params, x, y = make_problem(model, "mse", batch=4, seed=7)
    nan_grad = losses.LOSSES["mse"]._replace(grad=lambda y_hat, y: jnp.full_like(y_hat, jnp.nan))
    monkeypatch.setitem(losses.LOSSES, "mse", nan_grad)
    _, grads = jaxbp.loss_and_grad(model, "mse", params, x, y)
    assert bool(jnp.all(jnp.isnan(grads[0]["W"])))  # the hand-written gradient is all NaN
    report = gradcheck(model, "mse", params, x, y, fd_entries_per_leaf=4)
    assert not report.passed


def test_gradcheck_rejects_non_float_params():
    model = jaxbp.MLP((3, 2))
    params = [{"W": jnp.ones((2, 3), jnp.float16), "b": jnp.zeros(2, jnp.float16)}]
    with pytest.raises(ValueError, match="float32 or float64.*float16"):
        gradcheck(model, "mse", params, jnp.ones((2, 3)), jnp.ones((2, 2)))


def test_relative_error_semantics():
    assert relative_error(jnp.zeros(3), jnp.zeros(3)) == 0.0  # both zero: no error
    assert relative_error(jnp.array([0.0, 2.0]), jnp.array([0.0, 1.0])) == 0.5  # / max(|a|,|b|)
    assert relative_error(jnp.array([1.0]), jnp.array([-1.0])) == 2.0
    assert relative_error(jnp.array([1e-8]), jnp.array([0.0])) == 1.0
    # The floor: a difference of 1e-8 between tiny entries is measured against 1e-6.
    assert relative_error(jnp.array([1e-8]), jnp.array([0.0]), floor=1e-6) == pytest.approx(1e-2)
    # A floor below |a| and |b| changes nothing.
    assert relative_error(jnp.array([3.0]), jnp.array([2.0]), floor=1e-6) == pytest.approx(1 / 3)
    # The maximum over entries, symmetric in its arguments.
    a, b = jnp.array([1.0, 10.0, 4.0]), jnp.array([1.1, 10.0, 2.0])
    assert relative_error(a, b) == pytest.approx(0.5)
    assert relative_error(b, a) == pytest.approx(0.5)
    assert relative_error(jnp.zeros((0,)), jnp.zeros((0,))) == 0.0
    assert isinstance(relative_error(a, b), float)


def test_table_shows_rows_and_verdict(x64):
    model = jaxbp.MLP((3, 4, 2), "tanh", "identity", use_bias=False)
    params, x, y = make_problem(model, "mse", batch=4, seed=6)
    report = gradcheck(model, "mse", params, x, y, fd_entries_per_leaf=4)
    table = report.table()
    assert "PASS (float64)" in table
    assert "FAIL" not in table
    assert "rtol 1e-10" in table and "rtol 1e-06" in table
    body = [line for line in table.splitlines() if line.startswith("| ") and "layer" not in line]
    assert len(body) == 2  # one row per W (no biases)
    assert body[0].startswith("| 1 | W | (4, 3) |")
    assert body[1].startswith("| 2 | W | (2, 4) |")


def test_table_shows_fail_and_skipped():
    row = LeafCheck(1, "W", (2, 3), 2.0, 0.5, float("nan"), 0, 0)
    report = GradCheckReport((row,), "float32", Tolerance(1e-5, 1e-6), Tolerance(1e-6, 1e-12))
    assert not report.passed
    assert "FAIL (float32)" in report.table()
    assert "| 2.0e+00 | 5.0e-01 | skipped | 0 (0) |" in report.table()
    assert report.max_vs_autodiff == 2.0
    ok = report._replace(rows=(row._replace(vs_autodiff=1.0),))
    assert ok.passed
    assert "PASS (float32)" in ok.table()
    fd_bad = report._replace(
        rows=(row._replace(vs_autodiff=0.0, vs_finite_diff=3.0, fd_entries=4),)
    )
    assert not fd_bad.passed
    # Every finite difference skipped (kinks): nothing compared, nothing failed.
    all_skipped = report._replace(rows=(row._replace(vs_autodiff=0.0, fd_entries=4, fd_skipped=4),))
    assert all_skipped.passed
    assert math.isnan(all_skipped.max_vs_finite_diff)


def test_gradcheck_refuses_an_empty_batch():
    """No rows, no gradient: the check must not report PASS having checked nothing."""
    model = jaxbp.MLP((3, 2))
    params, _, _ = make_problem(model, "mse", batch=4, dtype=jnp.float32)
    with pytest.raises(ValueError, match=r"x of shape \(0, 3\).*at least one row"):
        gradcheck(model, "mse", params, jnp.zeros((0, 3)), jnp.zeros((0, 2)))


def test_gradcheck_refuses_targets_the_loss_cannot_fit():
    model = jaxbp.MLP((3, 2), output_activation="sigmoid")
    params, x, _ = make_problem(model, "bce", batch=4, dtype=jnp.float32)
    with pytest.raises(ValueError, match=r"bce targets must lie in \[0, 1\]"):
        gradcheck(model, "bce", params, x, 2 * jnp.ones((4, 2)))


@pytest.mark.parametrize("loss", list(losses.LOSSES))
def test_random_targets_are_targets_the_loss_fits(loss):
    output = losses.default_output_activation(loss)
    model = jaxbp.MLP((3, 4), output_activation=output)
    losses.check_targets(loss, random_targets(jax.random.key(3), model, loss, 20))


def test_random_targets_bce_is_binary():
    model = jaxbp.MLP((3, 4))
    y = random_targets(jax.random.key(0), model, "bce", 50)
    chex.assert_shape(y, (50, 4))
    assert y.dtype == jnp.float32
    values = np.unique(np.asarray(y))
    assert set(values.tolist()) == {0.0, 1.0}


def test_random_targets_softmax_is_one_hot(x64):
    model = jaxbp.MLP((3, 5))
    y = random_targets(jax.random.key(1), model, "softmax_cross_entropy", 40, jnp.float64)
    chex.assert_shape(y, (40, 5))
    assert y.dtype == jnp.float64
    y = np.asarray(y)
    assert set(np.unique(y).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(y.sum(axis=1), np.ones(40))
    assert len(np.unique(y.argmax(axis=1))) > 1  # not all one class


@pytest.mark.parametrize("loss", ["mse", "half_mse", "sse"])
def test_random_targets_regression_is_normal(loss):
    model = jaxbp.MLP((3, 2))
    y = np.asarray(random_targets(jax.random.key(2), model, loss, 500))
    assert y.shape == (500, 2)
    assert len(np.unique(y)) == y.size
    assert abs(y.mean()) < 0.2
    assert 0.8 < y.std() < 1.2
