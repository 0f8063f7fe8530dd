"""Tests of jaxbp.dp_sgd (and `jaxbp.per_example.clipped_grad_sum`): the private gradient.

The oracle of the clipped sum is `per_example_grads` (a `vmap` of the loss on one example),
clipped and summed over the sampled rows in float64. The noise is checked by its statistics
(a χ² test of its variance, correlations between leaves and steps), the sampling by the
frequency of inclusion and the spread of the batch sizes, `batch_max` against scipy's
binomial tail.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from problems import make_problem
from scipy import stats

import jaxbp
from jaxbp import dp_sgd, per_example, training

ROWS = 9
# (hidden, output, loss, use_bias, output width): a mean loss with and without bias, the fused
# softmax cross-entropy, and a "sum" loss.
CASES = [
    ("tanh", "identity", "mse", True, 3),
    ("relu", "softmax", "softmax_cross_entropy", True, 4),
    ("sigmoid", "sigmoid", "bce", False, 1),
    ("softplus", "identity", "sse", True, 2),
]
IDS = [c[2] for c in CASES]
MASK = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1], bool)  # rows 1, 4, 6 are padding


def _problem(case, seed=0, dtype="float64"):
    hidden, output, loss, use_bias, n_out = case
    model = jaxbp.MLP((5, 6, n_out), hidden, output, use_bias)
    return model, loss, *make_problem(model, loss, batch=ROWS, seed=seed, dtype=dtype)


def _reference_sum(model, loss, params, x, y, weights, clip_norm):
    """vmap(grad), each clipped to C, weighted and summed; the losses of the rows alone."""
    grads = jaxbp.per_example_grads(model, loss, params, x, y)
    norms = jnp.sqrt(sum(jnp.sum(g.reshape(ROWS, -1) ** 2, axis=1) for g in jax.tree.leaves(grads)))
    factor = weights * jnp.minimum(1.0, clip_norm / norms)
    summed = jax.tree.map(lambda g: jnp.tensordot(factor, g, axes=1), grads)
    losses = jax.vmap(lambda x_i, y_i: jaxbp.loss_value(model, loss, params, x_i[None], y_i[None]))(
        x, y
    )
    return jnp.sum(weights * losses), summed, norms


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_clipped_masked_sum_matches_vmap_grad_clip_sum(x64, case):
    del x64
    model, loss, params, x, y = _problem(case, seed=1)
    norms = per_example.per_example_grad_norms(model, loss, params, x, y)
    clip_norm = float(jnp.median(norms))  # about half the rows are clipped
    for weights in (MASK, np.linspace(0.0, 2.0, ROWS)):
        weights = jnp.asarray(weights, jnp.float64)
        value, grads = per_example.clipped_grad_sum(model, loss, params, x, y, weights, clip_norm)
        expected_value, expected, _ = _reference_sum(model, loss, params, x, y, weights, clip_norm)
        chex.assert_trees_all_close(grads, expected, rtol=1e-10, atol=1e-12)
        chex.assert_trees_all_close(value, expected_value, rtol=1e-12, atol=0)


def test_an_empty_mask_sums_to_exactly_zero(x64):
    del x64
    model, loss, params, x, y = _problem(CASES[1])
    value, grads = per_example.clipped_grad_sum(
        model, loss, params, x, y, jnp.zeros(ROWS, bool), 0.5
    )
    assert float(value) == 0.0
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("case", [CASES[1], CASES[3]], ids=[IDS[1], IDS[3]])
def test_private_gradient_is_the_clipped_sum_plus_the_noise_over_qn(x64, case):
    # The same key draws the same noise whatever the mask, so the difference of a batch's
    # private gradient and an empty batch's is the clipped sum times w: w = 1/(qN) for a mean
    # loss (not 1/realised size), 1 for "sse".
    del x64
    model, loss, params, x, y = _problem(case, seed=2)
    qn, clip_norm, key = 4.5, 0.3, jax.random.key(7)
    kw = {"clip_norm": clip_norm, "noise_multiplier": 1.3, "expected_batch_size": qn}
    mask = jnp.asarray(MASK)
    value, noisy = dp_sgd.private_loss_and_grad(model, loss, params, x, y, mask, key, **kw)
    empty_value, noise = dp_sgd.private_loss_and_grad(
        model, loss, params, x, y, jnp.zeros(ROWS, bool), key, **kw
    )
    loss_sum, expected_sum, _ = _reference_sum(
        model, loss, params, x, y, mask.astype(jnp.float64), clip_norm
    )
    weight = 1.0 if loss == "sse" else 1.0 / qn
    chex.assert_trees_all_close(
        jax.tree.map(jnp.subtract, noisy, noise),
        jax.tree.map(lambda g: weight * g, expected_sum),
        rtol=1e-10,
        atol=1e-12,
    )
    realised = int(MASK.sum())
    chex.assert_trees_all_close(value, loss_sum if loss == "sse" else loss_sum / realised)
    assert float(empty_value) == 0.0
    # The empty batch is pure noise: finite and nowhere zero.
    assert all(np.all(np.isfinite(g)) and np.all(g != 0) for g in jax.tree.leaves(noise))


def test_noise_std_is_sigma_c_by_chi_square(x64):
    # An empty batch has gradient 0, so g̃·qN/(σC) is N(0, 1) per coordinate: the sum of its
    # squares over n coordinates is χ²_n. Bounds at the 1e-6 quantiles of χ²_n (one-sided
    # each); a variance off by 2% at this n (≈ 21000) already fails.
    del x64
    model = jaxbp.MLP((40, 128, 10), "tanh", "softmax")
    params = jaxbp.init_params(jax.random.key(0), model, dtype=jnp.float64)
    x, y = jnp.zeros((4, 40)), jax.nn.one_hot(jnp.zeros(4, int), 10)
    sigma, clip_norm, qn = 1.7, 0.6, 32.0
    grad_fn = dp_sgd.make_private_grad_fn(
        model, "softmax_cross_entropy", clip_norm=clip_norm, noise_multiplier=sigma,
        expected_batch_size=qn,
    )  # fmt: skip
    _, noise = jax.jit(grad_fn)(params, x, y, jnp.zeros(4, bool), jax.random.key(3))
    z = np.concatenate([np.ravel(g) for g in jax.tree.leaves(noise)]) * qn / (sigma * clip_norm)
    n = z.size
    assert stats.chi2.ppf(1e-6, n) < np.sum(z**2) < stats.chi2.isf(1e-6, n)
    assert abs(np.mean(z)) < 5 / np.sqrt(n)


@jax.jit
def _noise_vector(key):
    """The noise `private_loss_and_grad` draws for a one-layer net's W and b, flattened."""
    model = jaxbp.MLP((299, 1), output_activation="identity")
    params = [{"W": jnp.zeros((1, 299)), "b": jnp.zeros(1)}]
    _, noise = dp_sgd.private_loss_and_grad(
        model, "mse", params, jnp.zeros((1, 299)), jnp.zeros((1, 1)), jnp.zeros(1), key,
        clip_norm=1.0, noise_multiplier=1.0, expected_batch_size=1.0,
    )  # fmt: skip
    return jnp.ravel(noise[0]["W"]), noise[0]["b"][0]


def test_keys_are_never_reused_across_steps_leaves_or_epochs():
    steps = 30
    keys = [k for epoch in (0, 1, 2) for k in dp_sgd.step_keys(jax.random.key(5), epoch, steps)]
    data = np.concatenate([np.asarray(jax.random.key_data(k)) for k in keys])
    assert len({tuple(row) for row in data}) == 3 * 2 * steps  # sampling and noise, all distinct
    # Consecutive steps' noises (and the epochs') are uncorrelated; so are two leaves' of one
    # step (the bias against the first weight). |r| < 5/√n fails a fair draw with p ≈ 6e-7.
    noise_keys = dp_sgd.step_keys(jax.random.key(5), 0, steps)[1]
    w, biases = (np.asarray(a) for a in jax.vmap(_noise_vector)(noise_keys))
    r = np.corrcoef(w[:8])[np.triu_indices(8, 1)]
    assert np.all(np.abs(r) < 5 / np.sqrt(w.shape[1]))
    firsts = w[:, 0]
    assert not np.allclose(biases, firsts)
    assert abs(np.corrcoef(biases, firsts)[0, 1]) < 5 / np.sqrt(steps)


def test_poisson_inclusion_frequency_and_independence():
    # 4000 steps over N = 150 at q = 0.05: each example's inclusion is Bernoulli(q), so the
    # overall frequency is within 4 standard errors of q, and the batch sizes are
    # Binomial(N, q): their variance N q (1 − q) within 6 standard errors (a correlated
    # sampler, e.g. one drawing fixed-size batches, has variance 0).
    n, q, steps = 150, 0.05, 4000
    b = dp_sgd.batch_max(n, q)
    keys = jax.random.split(jax.random.key(11), steps)
    rows, mask = jax.jit(jax.vmap(lambda k: dp_sgd.poisson_batch(k, n, q, b)))(keys)
    rows, mask = np.asarray(rows), np.asarray(mask)
    counts = np.zeros(n)
    for r, m in zip(rows, mask, strict=True):
        assert len(set(r[m].tolist())) == m.sum()  # distinct sampled rows
        np.add.at(counts, r[m], 1)
    freq = counts.sum() / (steps * n)
    assert abs(freq - q) < 4 * np.sqrt(q * (1 - q) / (steps * n))
    sizes = mask.sum(axis=1)
    var, expected_var = sizes.var(ddof=1), n * q * (1 - q)
    assert abs(var - expected_var) < 6 * expected_var * np.sqrt(2 / (steps - 1))
    # Each example is reached about equally: χ² over the N counts at its 1e-6 quantile.
    chi2 = np.sum((counts - steps * q) ** 2 / (steps * q * (1 - q)))
    assert chi2 < stats.chi2.isf(1e-6, n)


def test_overflow_keeps_a_random_subset_of_batch_max():
    # q = 0.5 of 40 into 6 rows overflows every step: the rows are 6 distinct sampled
    # examples, and over many steps every example is kept about equally often.
    n, b, steps = 40, 6, 3000
    keys = jax.random.split(jax.random.key(2), steps)
    rows, mask = jax.jit(jax.vmap(lambda k: dp_sgd.poisson_batch(k, n, 0.5, b)))(keys)
    assert bool(jnp.all(mask))
    counts = np.bincount(np.asarray(rows).ravel(), minlength=n)
    expected = steps * b / n
    assert np.sum((counts - expected) ** 2 / expected) < stats.chi2.isf(1e-6, n - 1)


def test_the_rows_are_the_sampled_examples_with_or_without_overflow():
    # Inclusion is u_i < ⌊q 2³²⌋ for the 32-bit draws of the step's key. Steps of 30 examples
    # at q = 0.3 into 12 rows: some overflow. Together (some step overflows: the top_k branch)
    # and alone (a step that does not: the nonzero branch), a step that fits has exactly its
    # sampled examples under the mask, and one that overflows 12 of them.
    n, q, b = 30, 0.3, 12
    keys = jax.random.split(jax.random.key(8), 40)
    bits = np.asarray(jax.vmap(lambda k: jax.random.bits(k, (n,)))(keys))
    sampled = [set(np.flatnonzero(u < np.floor(q * 2**32)).tolist()) for u in bits]
    assert any(len(s) > b for s in sampled) and any(len(s) <= b for s in sampled)
    rows, mask = (np.asarray(a) for a in dp_sgd.poisson_batches(keys, n, q, b))
    alone = jax.jit(lambda k: dp_sgd.poisson_batch(k, n, q, b))
    for step, expected in enumerate(sampled):
        chosen = set(rows[step][mask[step]].tolist())
        if len(expected) <= b:
            assert chosen == expected
            alone_rows, alone_mask = (np.asarray(a) for a in alone(keys[step]))
            assert set(alone_rows[alone_mask].tolist()) == expected
        else:
            assert len(chosen) == b and chosen <= expected


@pytest.mark.parametrize(
    ("n", "q"), [(1437, 64 / 1437), (60000, 256 / 60000), (50, 0.5), (1000, 1e-3), (20000, 0.3)]
)
def test_batch_max_is_the_smallest_with_tail_below_1e_9(n, q):
    b = dp_sgd.batch_max(n, q)
    assert stats.binom.sf(b, n, q) < 1e-9 <= stats.binom.sf(b - 1, n, q)


def test_batch_max_edges():
    assert dp_sgd.batch_max(30, 1.0) == 30
    assert dp_sgd.batch_max(10, 1e-12) == 1  # P(any drawn) < 1e-9: one row, always padding
    assert dp_sgd.batch_max(1437, 64 / 1437, tail=1e-15) > dp_sgd.batch_max(1437, 64 / 1437)


def test_private_epoch_steps_on_the_sampled_batches_and_vmaps_over_members(x64):
    # A vmap of the jitted epoch over two keys (two members) equals, for each key, the step
    # applied one by one to that key's `epoch_batches`.
    del x64
    model, loss, params, x, y = _problem(CASES[1], seed=3)
    x, y = jnp.tile(x, (4, 1)), jnp.tile(y, (4, 1))  # N = 36
    sampler = dp_sgd.poisson_sampler(36, 6)
    optimizer = optax.sgd(0.1)
    grad_fn = dp_sgd.make_private_grad_fn(
        model, loss, clip_norm=0.5, noise_multiplier=1.1,
        expected_batch_size=sampler.expected_batch_size,
    )  # fmt: skip
    step = training.make_train_step(model, loss, optimizer, grad_fn=grad_fn)
    epoch = dp_sgd.make_private_epoch(step, sampler)
    state = (params, optimizer.init(params))
    keys = jax.random.split(jax.random.key(4), 2)
    members = jax.jit(jax.vmap(epoch, in_axes=(None, None, None, None, 0, None)))
    out_params, _, metrics = members(*state, x, y, keys, 3)
    assert metrics["loss"].shape == (2, sampler.steps_per_epoch)
    step_jit = jax.jit(step)
    batches_jit = jax.jit(lambda k: dp_sgd.epoch_batches(sampler, k, 3))
    for member, key in enumerate(keys):
        rows, mask, noise_keys = batches_jit(key)
        p, o = state
        for t in range(sampler.steps_per_epoch):
            p, o, _ = step_jit(p, o, (x[rows[t]], y[rows[t]], mask[t], noise_keys[t]))
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, m=member: a[m], out_params), p, rtol=1e-10, atol=1e-12
        )


def test_bad_input_is_refused_by_name():
    model, loss, params, x, y = _problem(CASES[0], dtype="float32")
    good = {"clip_norm": 1.0, "noise_multiplier": 1.0, "expected_batch_size": 4.0}
    for name, bad, message in [
        ("clip_norm", 0.0, "clip_norm must be positive"),
        ("noise_multiplier", 0.0, "noise_multiplier must be positive"),
        ("noise_multiplier", -1.0, "noise_multiplier must be positive"),
        ("expected_batch_size", 0.0, "expected_batch_size must be positive"),
    ]:
        with pytest.raises(ValueError, match=message):
            dp_sgd.make_private_grad_fn(model, loss, **{**good, name: bad})
        with pytest.raises(ValueError, match=message):
            dp_sgd.private_loss_and_grad(
                model, loss, params, x, y, jnp.ones(ROWS), jax.random.key(0),
                **{**good, name: bad},
            )  # fmt: skip
    with pytest.raises(ValueError, match="row_weights has shape"):
        per_example.clipped_grad_sum(model, loss, params, x, y, jnp.ones(ROWS - 1), 1.0)
    with pytest.raises(ValueError, match="sampling_rate must be in"):
        dp_sgd.batch_max(100, 0.0)
    with pytest.raises(ValueError, match="sampling_rate must be in"):
        dp_sgd.poisson_batch(jax.random.key(0), 100, 1.5, 10)
    with pytest.raises(ValueError, match="num_examples must be an int"):
        dp_sgd.batch_max(0, 0.1)
    with pytest.raises(ValueError, match="batch_max must be in"):
        dp_sgd.poisson_batch(jax.random.key(0), 100, 0.1, 101)
    with pytest.raises(ValueError, match="batch_size 200 does not fit"):
        dp_sgd.poisson_sampler(100, 200)
    with pytest.raises(ValueError, match="tail must be in"):
        dp_sgd.batch_max(100, 0.1, tail=0.0)


def test_a_traced_noise_multiplier_scales_the_noise(x64):
    # A sweep vmaps members over σ: a traced σ passes the checks, and with one key the
    # empty batch's noise is linear in σ.
    del x64
    model, loss, params, x, y = _problem(CASES[0])

    def noise(sigma):
        return dp_sgd.private_loss_and_grad(
            model, loss, params, x, y, jnp.zeros(ROWS), jax.random.key(1),
            clip_norm=0.5, noise_multiplier=sigma, expected_batch_size=3.0,
        )[1]  # fmt: skip

    both = jax.jit(jax.vmap(noise))(jnp.array([1.0, 2.5]))
    chex.assert_trees_all_close(
        jax.tree.map(lambda a: a[1], both), jax.tree.map(lambda a: 2.5 * a[0], both), rtol=1e-12
    )
    assert all(np.all(np.asarray(a[0]) != 0) for a in jax.tree.leaves(both))
