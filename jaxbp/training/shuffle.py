"""Epoch shuffling without a sort: a keyed bijection of ``[0, n)``, O(n) and elementwise.

`jax.random.permutation` sorts n random keys with their indices. On XLA:CPU that key-value sort
is a sizeable share of a compiled epoch of small steps (measured in docs/performance.md). An
epoch's order only needs a permutation that changes with the key and is well mixed, so this
module uses Kensler's hashed permutation (A. Kensler, "Correlated Multi-Jittered Sampling",
Pixar Technical Memo 13-01, 2013, Listing 3): a sequence of steps that are each invertible
modulo ``2^k`` (xor with a key, multiplication by an odd constant, xor with a right shift of
the low k bits) is a bijection of ``[0, 2^k)``; "cycle walking", applying it again to every
value that falls outside ``[0, n)``, turns it into a bijection of ``[0, n)`` (each value
walks along its own cycle until it first lands inside). With ``2^k < 2n`` the walks are
short (about 8 rounds of the loop for n = 1258). The same idea is TensorFlow's
``tf.random.experimental.index_shuffle``.

It is a pseudo-random permutation, not a uniform draw from all n! orders: enough to present
the examples in a fresh, well-mixed order every epoch (`tests/training/test_shuffle.py` checks
that it is a bijection for many n, that it depends on the key, and that every position is reached
uniformly by a chi-square test).
"""

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_U32 = jnp.uint32


def _hash_bijection(i: Array, mask: Array, seed: Array) -> Array:
    """Kensler's ``permute`` body: a bijection of ``[0, mask + 1)`` keyed by ``seed``.

    Every step is invertible modulo ``2^k`` (``mask = 2^k − 1``): xor with a constant,
    multiplication by an odd constant, and ``i ^= (i & mask) >> s``. The constants are the
    paper's.
    """
    i = i ^ seed
    i = i * _U32(0xE170893D)
    i = i ^ (seed >> 16)
    i = i ^ ((i & mask) >> 4)
    i = i ^ (seed >> 8)
    i = i * _U32(0x0929EB3F)
    i = i ^ (seed >> 23)
    i = i ^ ((i & mask) >> 1)
    i = i * (_U32(1) | (seed >> 27))
    i = i * _U32(0x6935FA69)
    i = i ^ ((i & mask) >> 11)
    i = i * _U32(0x74DCB303)
    i = i ^ ((i & mask) >> 2)
    i = i * _U32(0x9E501CC3)
    i = i ^ ((i & mask) >> 2)
    i = i * _U32(0xC860A3DF)
    i = i & mask
    return i ^ (i >> 5)


def _seed_from_key(key: Array) -> Array:
    """One uint32 from a PRNG key's data (typed or raw ``uint32[2]``) by a golden-ratio mix."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    words = key.astype(_U32).reshape(-1)
    seed = words[0]
    for word in words[1:]:
        seed = (seed ^ word) * _U32(0x9E3779B9)
        seed = seed ^ (seed >> 15)
    return seed


def permutation(key: Array, n: int) -> Array:
    """A pseudo-random permutation of ``0, ..., n − 1``, shape ``(n,)`` int32, without a sort.

    Cycle-walks Kensler's hashed bijection of ``[0, 2^k)``, ``2^k ≥ n``, into ``[0, n)``:
    O(n) elementwise work and a short `lax.while_loop`, the same on every backend.

    Args:
      key: a PRNG key (``jax.random.key`` or ``PRNGKey``); another key gives another order.
      n: how many indices, ``1 ≤ n ≤ 2^31 − 1`` (static).

    Returns:
      ``(n,)`` int32: each of ``0, ..., n − 1`` exactly once.

    Examples:
      >>> import jax
      >>> from jaxbp.training import shuffle
      >>> order = shuffle.permutation(jax.random.key(0), 5)
      >>> sorted(order.tolist())
      [0, 1, 2, 3, 4]
    """
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or not 1 <= n < 2**31:
        raise ValueError(f"permutation needs a static int n in [1, 2^31), got {n!r}.")
    n = int(n)
    seed = _seed_from_key(key)
    mask = _U32((1 << max(1, (n - 1).bit_length())) - 1)
    limit = _U32(n)

    def outside(values: Array) -> Array:
        return jnp.any(values >= limit)

    def walk(values: Array) -> Array:
        return jnp.where(values >= limit, _hash_bijection(values, mask, seed), values)

    first = _hash_bijection(jnp.arange(n, dtype=_U32), mask, seed)
    inside = jax.lax.while_loop(outside, walk, first)
    # The paper's last step, a keyed rotation of [0, n): still a bijection.
    return ((inside + seed % limit) % limit).astype(jnp.int32)
