"""Tests of jaxbp.training: optimisers, the train step, the scan epoch, evaluation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from problems import classification_problem as _problem

import jaxbp
from jaxbp import training


def test_sgd_is_seed_002_descent_with_the_sign_right():
    model, params, x, y = _problem()
    lr = 0.1
    opt = training.make_optimizer("sgd", lr)
    step = jax.jit(training.make_train_step(model, "softmax_cross_entropy", opt))
    new_params, _, metrics = step(params, opt.init(params), (x, y))
    _, grads = jaxbp.loss_and_grad(model, "softmax_cross_entropy", params, x, y)
    expected = jax.tree.map(lambda w, g: w - lr * g, params, grads)  # W ← W − η ∂L/∂W
    chex.assert_trees_all_close(new_params, expected, rtol=1e-6, atol=1e-7)
    after = jaxbp.loss_value(model, "softmax_cross_entropy", new_params, x, y)
    assert float(after) < float(metrics["loss"])


@pytest.mark.parametrize("name", training.OPTIMIZERS)
def test_custom_and_autodiff_steps_agree_for_every_optimizer(name):
    model, params, x, y = _problem()
    opt = training.make_optimizer(name, 1e-2, weight_decay=1e-3)
    results = {}
    for backward in ("custom", "autodiff"):
        step = jax.jit(
            training.make_train_step(model, "softmax_cross_entropy", opt, backward=backward)
        )
        p, s = params, opt.init(params)
        for _ in range(3):
            p, s, metrics = step(p, s, (x, y))
        results[backward] = (p, metrics["loss"])
    chex.assert_trees_all_close(results["custom"], results["autodiff"], rtol=1e-5, atol=1e-6)


def test_scan_epoch_equals_python_loop_of_steps():
    model, params, x, y = _problem()
    opt = training.make_optimizer("momentum", 0.05)
    step = training.make_train_step(model, "softmax_cross_entropy", opt)
    epoch = training.make_epoch(step, batch_size=8)
    key = jax.random.PRNGKey(3)
    p_scan, s_scan, metrics = epoch(params, opt.init(params), x, y, key, 2)
    assert metrics["loss"].shape == (6,)

    order = training.epoch_order(key, 2, x.shape[0], 8)
    p, s = params, opt.init(params)
    jit_step = jax.jit(step)
    losses = []
    for idx in order:
        p, s, m = jit_step(p, s, (x[idx], y[idx]))
        losses.append(m["loss"])
    chex.assert_trees_all_close(p_scan, p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["loss"], np.array(losses), rtol=1e-5)


def test_grad_norm_metric_is_the_gradient_norm_and_can_be_left_out():
    model, params, x, y = _problem()
    opt = training.make_optimizer("adam", 1e-2)
    with_norm = jax.jit(training.make_train_step(model, "softmax_cross_entropy", opt))
    without = jax.jit(
        training.make_train_step(model, "softmax_cross_entropy", opt, grad_norm=False)
    )
    p1, _, m1 = with_norm(params, opt.init(params), (x, y))
    p2, _, m2 = without(params, opt.init(params), (x, y))
    _, grads = jaxbp.loss_and_grad(model, "softmax_cross_entropy", params, x, y)
    expected = np.sqrt(sum(np.sum(np.asarray(g) ** 2) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(m1["grad_norm"], expected, rtol=1e-5)
    assert set(m2) == {"loss"}
    chex.assert_trees_all_equal(p1, p2)


def test_donated_epoch_gives_the_same_state_and_takes_the_old_buffers():
    model, params, x, y = _problem()
    opt = training.make_optimizer("adam", 1e-2)
    step = training.make_train_step(model, "softmax_cross_entropy", opt)
    key = jax.random.key(0)
    expected = training.make_epoch(step, 8)(params, opt.init(params), x, y, key, 1)
    mine = jax.tree.map(jnp.copy, (params, opt.init(params)))
    donated = training.make_epoch(step, 8, donate=True)(*mine, x, y, key, 1)
    chex.assert_trees_all_equal(donated, expected)
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(mine[0]))  # reused for the output


def test_epoch_order_is_a_shuffle_of_whole_batches():
    key = jax.random.key(0)
    order = training.epoch_order(key, 3, 50, 8)
    assert order.shape == (6, 8)
    assert len(set(np.asarray(order).ravel().tolist())) == 48  # no row twice
    assert np.asarray(order).max() < 50
    assert not np.array_equal(order, training.epoch_order(key, 4, 50, 8))
    np.testing.assert_array_equal(order, training.epoch_order(key, 3, 50, 8))
    with pytest.raises(ValueError, match="batch_size 64 does not fit the 50 training examples"):
        training.epoch_order(key, 0, 50, 64)


def test_epoch_is_deterministic_per_key_and_epoch():
    model, params, x, y = _problem()
    opt = training.make_optimizer("adam", 1e-2)
    epoch = training.make_epoch(training.make_train_step(model, "softmax_cross_entropy", opt), 8)
    key = jax.random.PRNGKey(0)
    a = epoch(params, opt.init(params), x, y, key, 1)[2]["loss"]
    b = epoch(params, opt.init(params), x, y, key, 1)[2]["loss"]
    c = epoch(params, opt.init(params), x, y, key, 2)[2]["loss"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)  # another epoch, another shuffle


def test_epoch_drops_the_partial_batch_and_rejects_a_too_large_batch():
    model, params, x, y = _problem(n=20)
    opt = training.make_optimizer("sgd", 0.1)
    step = training.make_train_step(model, "softmax_cross_entropy", opt)
    _, _, metrics = training.make_epoch(step, 6)(
        params, opt.init(params), x, y, jax.random.PRNGKey(0), 0
    )
    assert metrics["loss"].shape == (3,)
    with pytest.raises(ValueError, match="does not fit the 20 training examples"):
        training.make_epoch(step, 32)(params, opt.init(params), x, y, jax.random.PRNGKey(0), 0)


def test_training_lowers_the_loss():
    model, params, x, y = _problem(n=64)
    opt = training.make_optimizer("adam", 1e-2)
    epoch = training.make_epoch(training.make_train_step(model, "softmax_cross_entropy", opt), 16)
    state = (params, opt.init(params))
    first = None
    for e in range(20):
        *state, metrics = epoch(*state, x, y, jax.random.PRNGKey(0), e)
        first = first if first is not None else float(metrics["loss"][0])
    assert float(metrics["loss"][-1]) < 0.5 * first


@pytest.mark.parametrize("schedule", training.SCHEDULES)
def test_schedules(schedule):
    fn = training.make_schedule(0.1, schedule, total_steps=100, warmup_steps=10)
    if schedule == "constant":
        assert float(fn(0)) == pytest.approx(0.1) and float(fn(99)) == pytest.approx(0.1)
    elif schedule == "cosine":
        assert float(fn(0)) == pytest.approx(0.1) and float(fn(100)) == pytest.approx(0.0)
    else:
        assert float(fn(0)) == pytest.approx(0.0)
        assert float(fn(10)) == pytest.approx(0.1)
        assert float(fn(100)) < 1e-6


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_an_injected_rate_is_the_scheduled_optimizer_and_the_state_keeps_the_rate(name):
    with jax.enable_x64(True):
        model, params, x, y = _problem()
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        x = x.astype(jnp.float64)
        schedule = training.make_schedule(0.1, "cosine", total_steps=5)
        plain = training.make_optimizer(name, schedule)
        injected = training.inject_learning_rate(
            lambda lr: training.make_optimizer(name, lr), schedule
        )
        assert float(training.learning_rate_of(injected.init(params))) == float(schedule(0))
        runs = {}
        for label, opt in (("plain", plain), ("injected", injected)):
            step = jax.jit(training.make_train_step(model, "softmax_cross_entropy", opt))
            p, s = params, opt.init(params)
            for _ in range(3):
                p, s, _ = step(p, s, (x, y))
            runs[label] = (p, s)
        chex.assert_trees_all_equal(runs["plain"][0], runs["injected"][0])  # bit for bit
        # The state holds the rate of the last update, step 2's (counting from 0).
        assert float(training.learning_rate_of(runs["injected"][1])) == float(schedule(2))
        assert float(schedule(2)) != float(schedule(3))


def test_bad_optimizer_settings():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        training.make_optimizer("rmsprop", 0.1)
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        training.make_schedule(-0.1)
    with pytest.raises(ValueError, match="unknown schedule"):
        training.make_schedule(0.1, "linear")
    with pytest.raises(ValueError, match="weight_decay"):
        training.make_optimizer("adam", 0.1, weight_decay=-1.0)
    with pytest.raises(ValueError, match="unknown backward"):
        training.make_loss_and_grad(jaxbp.MLP((2, 1)), "mse", "numeric")


def test_weight_decay_is_applied():
    model, params, x, y = _problem()
    plain, decayed = (
        training.make_optimizer("sgd", 0.1),
        training.make_optimizer("sgd", 0.1, weight_decay=0.5),
    )
    step_plain = training.make_train_step(model, "softmax_cross_entropy", plain)
    step_decayed = training.make_train_step(model, "softmax_cross_entropy", decayed)
    p1 = step_plain(params, plain.init(params), (x, y))[0]
    p2 = step_decayed(params, decayed.init(params), (x, y))[0]
    # sgd with L2: the extra step is −η λ W.
    expected = jax.tree.map(lambda a, w: a - 0.1 * 0.5 * w, p1, params)
    chex.assert_trees_all_close(p2, expected, rtol=1e-5, atol=1e-6)


def test_evaluate_accuracy_and_r2():
    model = jaxbp.MLP((2, 2), "identity", "identity", use_bias=False)
    params = [{"W": jnp.eye(2)}]
    x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.2, 0.1]])
    y = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    metrics = training.split_metrics(model, "mse", params, x, y, "classification")
    assert float(metrics["accuracy"]) == pytest.approx(0.75)
    reg = training.split_metrics(model, "mse", params, y, y, "regression")
    assert float(reg["r2"]) == pytest.approx(1.0)
    binary = jaxbp.MLP((1, 1), "identity", "identity", use_bias=False)
    acc = training.split_metrics(
        binary,
        "mse",
        [{"W": jnp.ones((1, 1))}],
        jnp.array([[0.9], [0.1], [0.7]]),
        jnp.array([[1.0], [0.0], [0.0]]),
        "classification",
    )["accuracy"]
    assert float(acc) == pytest.approx(2 / 3)


def test_optax_state_is_what_the_step_carries():
    model, params, x, y = _problem()
    opt = training.make_optimizer("adam", 1e-3)
    _, state, _ = training.make_train_step(model, "softmax_cross_entropy", opt)(
        params, opt.init(params), (x, y)
    )
    assert int(optax.tree_utils.tree_get(state, "count")) == 1


def test_batches_per_epoch_drops_the_remainder_and_refuses_what_does_not_fit():
    assert training.batches_per_epoch(100, 32) == 3
    assert training.batches_per_epoch(64, 64) == 1
    for batch_size in (0, -1, 101):
        with pytest.raises(ValueError, match=f"batch_size {batch_size} does not fit"):
            training.batches_per_epoch(100, batch_size)
