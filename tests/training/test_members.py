"""Tests of jaxbp.training.members: a member set under vmap against single runs, the per-member
optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import training
from jaxbp.mlp import MLP, init_params
from jaxbp.training import members

MODEL = MLP((6, 16, 3), "tanh", "softmax")
LOSS = "softmax_cross_entropy"
BATCH, EPOCHS, STEPS_PER_EPOCH = 16, 3, 160 // 16


def _data(dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 6)).astype(dtype)
    labels = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    return jnp.asarray(x), jnp.asarray(np.eye(3, dtype=dtype)[labels])


def _unit(schedule):
    return training.make_schedule(1.0, schedule, total_steps=EPOCHS * STEPS_PER_EPOCH)


def _assert_same_updates(ours, theirs, params, grads, steps):
    """Both optimizers from their initial states, ``steps`` updates on ``grads``: every
    update the same to the bit."""
    state_a, state_b = ours.init(params), theirs.init(params)
    for _ in range(steps):
        upd_a, state_a = ours.update(grads, state_a, params)
        upd_b, state_b = theirs.update(grads, state_b, params)
        for a, b in zip(jax.tree.leaves(upd_a), jax.tree.leaves(upd_b), strict=True):
            np.testing.assert_array_equal(a, b)


def _single_run(seed, dtype, learning_rate=1e-2, schedule="cosine", weight_decay=0.0):
    """The pre-members path: one run, the optimizer of `jaxbp.training.make_optimizer`."""
    x, y = _data(dtype)
    optimizer = training.make_optimizer(
        "adam",
        training.make_schedule(learning_rate, schedule, total_steps=EPOCHS * STEPS_PER_EPOCH),
        weight_decay=weight_decay,
    )
    key = jax.random.PRNGKey(seed)
    params = init_params(jax.random.fold_in(key, 0), MODEL, dtype=dtype)
    opt_state = optimizer.init(params)
    epoch = training.make_epoch(training.make_train_step(MODEL, LOSS, optimizer), BATCH)
    losses = []
    for e in range(1, EPOCHS + 1):
        params, opt_state, metrics = epoch(params, opt_state, x, y, key, e)
        losses.append(metrics["loss"])
    return params, jnp.stack(losses)


def _member_run(seeds, dtype, hparams=None, make_optimizer=None):
    x, y = _data(dtype)
    keys = members.member_keys(seeds)
    params = members.init_member_params(keys, MODEL, dtype)
    hparams = {} if hparams is None else hparams
    optimizer_of = make_optimizer or (
        lambda hp: training.make_optimizer(
            "adam", training.make_schedule(1e-2, "cosine", total_steps=EPOCHS * STEPS_PER_EPOCH)
        )
    )
    num = len(seeds)
    opt_state = members.over_members(lambda p, hp: optimizer_of(hp).init(p), num, (0, 0))(
        params, hparams
    )
    epoch = jax.jit(
        members.make_epoch(
            lambda hp: training.make_train_step(MODEL, LOSS, optimizer_of(hp)), BATCH, num
        )
    )
    losses = []
    for e in range(1, EPOCHS + 1):
        params, opt_state, metrics = epoch(params, opt_state, hparams, x, y, keys, e)
        losses.append(metrics["loss"])
    return params, jnp.stack(losses, axis=1)  # (M, epochs, steps)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-12)])
def test_member_k_of_repeats_is_the_single_run_of_seed_s_plus_k(dtype, rtol, request):
    if dtype == np.float64:
        request.getfixturevalue("x64")
    seed, num = 5, 3
    params, losses = _member_run([seed + k for k in range(num)], dtype)
    assert params[0]["W"].shape == (num, 16, 6)
    for k in range(num):
        single_params, single_losses = _single_run(seed + k, dtype)
        np.testing.assert_allclose(losses[k], single_losses, rtol=rtol, atol=0)
        for a, b in zip(
            jax.tree.leaves(members.take(params, k)), jax.tree.leaves(single_params), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=rtol * 10, atol=rtol)
    assert not np.allclose(losses[0], losses[1])  # the members are different runs


def test_one_member_is_bit_for_bit_the_single_run():
    params, losses = _member_run([7], np.float32)
    single_params, single_losses = _single_run(7, np.float32)
    np.testing.assert_array_equal(losses[0], single_losses)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(single_params), strict=True):
        np.testing.assert_array_equal(a[0], b)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_peak_rate_times_unit_schedule_is_optaxs_scheduled_optimizer(schedule):
    rates = jnp.asarray([3e-3, 1e-2, 3e-2], jnp.float32)

    def optimizer_of(hp):
        return members.make_optimizer("adam", hp["learning_rate"], _unit(schedule))

    params, losses = _member_run([1, 1, 1], np.float32, {"learning_rate": rates}, optimizer_of)
    for k, rate in enumerate([3e-3, 1e-2, 3e-2]):
        single_params, single_losses = _single_run(1, np.float32, rate, schedule)
        np.testing.assert_allclose(losses[k], single_losses, rtol=1e-5, atol=0)
        for a, b in zip(
            jax.tree.leaves(members.take(params, k)), jax.tree.leaves(single_params), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_per_member_optimizer_for_one_member_is_bitwise_optaxs():
    """Unbatched, η·u(t) is optax's own scheduled optimizer to the bit (cosine, adamw)."""
    params = init_params(jax.random.PRNGKey(0), MODEL)
    grads = jax.tree.map(lambda p: jnp.cos(p) * 0.1, params)
    ours = members.make_optimizer(
        "adam", jnp.float32(1e-2), _unit("cosine"), weight_decay=jnp.float32(1e-3), decay=True
    )
    theirs = training.make_optimizer(
        "adam",
        training.make_schedule(1e-2, "cosine", total_steps=EPOCHS * STEPS_PER_EPOCH),
        weight_decay=1e-3,
    )
    _assert_same_updates(ours, theirs, params, grads, steps=5)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov"])
def test_sgd_family_with_zero_decay_in_a_decaying_set_changes_no_bit(name):
    params = init_params(jax.random.PRNGKey(0), MODEL)
    grads = jax.tree.map(lambda p: jnp.sin(p), params)
    unit = _unit("constant")
    ours = members.make_optimizer(name, 0.1, unit, momentum=0.8, weight_decay=0.0, decay=True)
    theirs = training.make_optimizer(name, training.make_schedule(0.1), momentum=0.8)
    _assert_same_updates(ours, theirs, params, grads, steps=3)


def test_over_members_maps_stacked_and_shares_unmapped_arguments():
    fn = members.over_members(lambda a, b: a * b, 3, (0, None))
    np.testing.assert_array_equal(fn(jnp.arange(3.0), 2.0), [0.0, 2.0, 4.0])
    single = members.over_members(lambda a, b: a * b, 1, (0, None))
    assert single(jnp.asarray([3.0]), 2.0).shape == (1,)
    with pytest.raises(ValueError, match="num_members"):
        members.over_members(lambda a: a, 0, (0,))
