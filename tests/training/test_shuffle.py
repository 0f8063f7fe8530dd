"""Tests of jaxbp.training.shuffle: a keyed bijection of [0, n), deterministic and well mixed."""

import jax
import numpy as np
import pytest

from jaxbp.training import shuffle


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 9, 31, 32, 33, 100, 1000, 1258, 4096, 4097, 60000])
def test_is_a_permutation(n):
    order = np.asarray(shuffle.permutation(jax.random.key(n), n))
    assert order.dtype == np.int32
    assert order.shape == (n,)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))


def test_is_deterministic_and_depends_on_the_key():
    a = shuffle.permutation(jax.random.key(0), 500)
    np.testing.assert_array_equal(a, shuffle.permutation(jax.random.key(0), 500))
    np.testing.assert_array_equal(a, shuffle.permutation(jax.random.PRNGKey(0), 500))
    orders = {tuple(np.asarray(shuffle.permutation(jax.random.key(k), 500))) for k in range(20)}
    assert len(orders) == 20
    assert tuple(range(500)) not in orders


def test_works_under_jit_and_vmap():
    keys = jax.random.split(jax.random.key(0), 4)
    batched = jax.jit(jax.vmap(lambda k: shuffle.permutation(k, 37)))(keys)
    for key, row in zip(keys, batched, strict=True):
        np.testing.assert_array_equal(row, shuffle.permutation(key, 37))


def test_every_element_reaches_every_position_uniformly():
    # Over 4000 keys, where does each of a few elements land? 16 bins, chi-square with 15
    # degrees of freedom: its 99.99% quantile is 44.3, so a fair shuffle fails with p < 1e-4
    # per element. A shuffle that left elements near their start, or favoured some positions
    # (a weak hash, a broken walk), gives thousands.
    n, draws, bins = 1258, 4000, 16
    orders = np.asarray(
        jax.jit(jax.vmap(lambda k: shuffle.permutation(k, n)))(
            jax.random.split(jax.random.key(7), draws)
        )
    )
    positions = np.argsort(orders, axis=1)  # positions[d, e] = where element e went
    expected = draws / bins
    for element in (0, 1, n // 2, n - 2, n - 1):
        counts = np.histogram(positions[:, element], bins, (0, n))[0]
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 44.3, (element, chi2, counts)
    # Neighbours are not carried together: the gap between elements 0 and 1 is spread out.
    gaps = np.abs(positions[:, 0] - positions[:, 1])
    assert np.mean(gaps) == pytest.approx(n / 3, rel=0.05)


def test_takes_a_numpy_integer():
    np.testing.assert_array_equal(
        shuffle.permutation(jax.random.key(1), np.int64(40)),
        shuffle.permutation(jax.random.key(1), 40),
    )


@pytest.mark.parametrize("n", [0, -3, 2**31, 2.0, True])
def test_rejects_a_bad_n(n):
    with pytest.raises(ValueError, match="static int n"):
        shuffle.permutation(jax.random.key(0), n)
