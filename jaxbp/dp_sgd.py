"""DP-SGD's private gradient: Poisson-sampled batches of a fixed shape, clipping, noise on the sum.

Contract (eqs. (6.1)-(6.4) of docs/derivations.md): a private step

1. samples its batch by Poisson sampling, each of the N examples in it independently with
   probability q (`poisson_batch`), as a fixed shape of ``B_max`` rows (`batch_max`) and a
   0/1 mask, so that ``jit`` and ``lax.scan`` see one shape whatever the sample's size;
2. clips each sampled example's own gradient to norm C and sums them, padding rows weighted
   0 (`jaxbp.per_example.clipped_grad_sum`, one pass, no per-example gradient formed);
3. adds ``N(0, σ²C²)`` noise to every coordinate of that **sum** and divides by the
   **expected** batch size ``qN``, not the realised one (`private_loss_and_grad`).

Every step draws from its own key, ``fold_in(fold_in(key, epoch), t)``, split into the
sampling key and the noise key, and the noise key is split once per parameter leaf: no key is
used twice (`step_keys`). An epoch is `jaxbp.training.batches_per_epoch` such steps
(``N // batch_size``, about ``1/q``) under one `lax.scan` (`run_private_epoch`), the step being
`jaxbp.training.make_train_step` with ``grad_fn=make_private_grad_fn(...)``. The ε the steps spend
is `jaxbp.privacy`'s.

More than ``B_max`` examples are drawn with probability below `OVERFLOW_PROBABILITY` per step;
then a uniformly random ``B_max`` of them form the batch (truncated Poisson sampling).
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxbp import losses as losses_lib
from jaxbp import per_example, training
from jaxbp.mlp import MLP, Params

Array = jax.Array

# P(more than B_max examples drawn in a step) stays below this: 1e-9 per step keeps a
# batch's rows about six standard deviations above qN (116 rows for q = 64/1437).
OVERFLOW_PROBABILITY = 1e-9


def batch_max(num_examples: int, sampling_rate: float, tail: float = OVERFLOW_PROBABILITY) -> int:
    """``B_max``: the smallest b with ``P(Binomial(N, q) > b) < tail``, and at least 1 (6.1).

    The tail is summed exactly: the binomial pmf at ``k0 = ⌊Nq⌋`` from ``lgamma``, then
    ``p(k+1) = p(k) (N − k)/(k + 1) · q/(1 − q)`` upward until it underflows, and the tail sums
    added from the top down (smallest terms first). ``P(X ≥ ⌊Nq⌋) ≥ 1/2`` (the median is
    ``⌊Nq⌋`` or ``⌈Nq⌉``), so the answer is never below ``k0``.

    Args:
      num_examples: N ≥ 1.
      sampling_rate: q in (0, 1].
      tail: the largest allowed probability of drawing more than b, in (0, 1).

    Returns:
      ``B_max`` (N when q = 1).

    Examples:
      >>> from jaxbp import dp_sgd
      >>> dp_sgd.batch_max(1437, 64 / 1437)
      116
    """
    _check_sampling(num_examples, sampling_rate)
    if not 0 < tail < 1:
        raise ValueError(f"tail must be in (0, 1), got {tail}: a probability of overflow.")
    n, q = int(num_examples), float(sampling_rate)
    if q == 1:
        return n
    k0 = math.floor(n * q)
    log_p = (
        math.lgamma(n + 1)
        - math.lgamma(k0 + 1)
        - math.lgamma(n - k0 + 1)
        + k0 * math.log(q)
        + (n - k0) * math.log1p(-q)
    )
    pmf = [math.exp(log_p)]  # pmf[j] = P(X = k0 + j)
    odds = q / (1 - q)
    while pmf[-1] > 1e-300 and k0 + len(pmf) - 1 < n:
        k = k0 + len(pmf) - 1
        pmf.append(pmf[-1] * (n - k) / (k + 1) * odds)
    above = 0.0  # P(X > k) for the k of the loop
    for j in range(len(pmf) - 1, -1, -1):
        if above + pmf[j] >= tail:  # P(X > k − 1) ≥ tail: b = k is the smallest
            return max(k0 + j, 1)
        above += pmf[j]
    return max(k0 - 1, 1)  # not reached: P(X ≥ k0) ≥ 1/2


def _check_sampling(num_examples: int, sampling_rate: float) -> None:
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"num_examples must be an int >= 1, got {num_examples!r}.")
    if not 0 < sampling_rate <= 1:
        raise ValueError(
            f"sampling_rate must be in (0, 1], got {sampling_rate}: each example's probability "
            "of being in a batch, batch_size / num_examples."
        )


def poisson_batch(
    key: Array, num_examples: int, sampling_rate: float, batch_max: int
) -> tuple[Array, Array]:
    """A Poisson sample of ``[0, N)`` as ``batch_max`` row indices and their mask (eq. (6.1)).

    Example i is in the sample when its uniform 32-bit draw ``u_i < ⌊q 2³²⌋`` (probability
    ``⌊q 2³²⌋ / 2³²``, at most q and within 2.4e-10 of it), independently of the others. The
    rows are the sampled examples in index order, then padding rows (mask False, index 0).
    When more than ``batch_max`` are sampled, which happens with probability below
    `OVERFLOW_PROBABILITY` for `batch_max`'s size, the rows are the ``batch_max`` sampled
    examples of smallest ``u_i``: a uniformly random subset, since the sampled ``u_i`` are
    i.i.d. (truncated Poisson sampling).

    Args:
      key: the step's sampling key.
      num_examples: N (static).
      sampling_rate: q in (0, 1] (static).
      batch_max: the rows of the batch, ``1 ≤ batch_max ≤ N`` (static).

    Returns:
      ``(rows, mask)``: ``(batch_max,)`` int32 indices into ``[0, N)`` and ``(batch_max,)``
      bool, True for the rows in the sample.
    """
    rows, mask = poisson_batches(key[None], num_examples, sampling_rate, batch_max)
    return rows[0], mask[0]


def poisson_batches(
    keys: Array, num_examples: int, sampling_rate: float, batch_max: int
) -> tuple[Array, Array]:
    """`poisson_batch` for each of ``keys: (steps,)``: rows and mask ``(steps, batch_max)``.

    The overflow's random subset (a `lax.top_k`, several times the cost of the rest) is
    computed only when some step overflows (a `lax.cond`; under `vmap` both branches run).
    """
    _check_sampling(num_examples, sampling_rate)
    if not 1 <= batch_max <= num_examples:
        raise ValueError(
            f"batch_max must be in [1, {num_examples}], got {batch_max}: use "
            "dp_sgd.batch_max(num_examples, sampling_rate)."
        )
    bits = jax.vmap(lambda k: jax.random.bits(k, (num_examples,), jnp.uint32))(keys)
    if sampling_rate == 1:
        sampled = jnp.ones(bits.shape, bool)
    else:
        sampled = bits < jnp.uint32(math.floor(sampling_rate * 2**32))
    counts = jnp.sum(sampled, axis=1)

    def in_order() -> Array:
        first = jax.vmap(lambda s: jnp.nonzero(s, size=batch_max, fill_value=0)[0])(sampled)
        return first.astype(jnp.int32)

    def smallest_draws() -> Array:
        # The largest ~u among the sampled (all > 0 when q < 1) are their smallest u.
        priority = jnp.where(sampled, ~bits, jnp.uint32(0))
        return jax.lax.top_k(priority, batch_max)[1]

    rows = jax.lax.cond(jnp.any(counts > batch_max), smallest_draws, in_order)
    return rows, jnp.arange(batch_max) < counts[:, None]


def step_keys(key: Array, epoch_index: int | Array, steps: int) -> tuple[Array, Array]:
    """Each step's sampling and noise key: ``split(fold_in(fold_in(key, epoch), t))``.

    Args:
      key: the run's (or member's) key.
      epoch_index: the epoch (traced or not).
      steps: steps in the epoch.

    Returns:
      ``(sample_keys, noise_keys)``, ``(steps,)`` keys each, all distinct.
    """
    epoch = training.epoch_key(key, epoch_index)

    def one(t: Array) -> tuple[Array, Array]:
        sample_key, noise_key = jax.random.split(jax.random.fold_in(epoch, t))
        return sample_key, noise_key

    return jax.vmap(one)(jnp.arange(steps))


class PoissonSampler(NamedTuple):
    """The sampling of a private epoch.

    Attributes:
      num_examples: N, the training examples.
      sampling_rate: q = batch_size / N.
      batch_max: the rows of every batch (`batch_max`).
      steps_per_epoch: steps in an epoch, ``N // batch_size`` (about 1/q).
    """

    num_examples: int
    sampling_rate: float
    batch_max: int
    steps_per_epoch: int

    @property
    def expected_batch_size(self) -> float:
        """``qN``, what the private gradient divides by (eq. (6.3))."""
        return self.sampling_rate * self.num_examples


def poisson_sampler(
    num_examples: int, batch_size: int, tail: float = OVERFLOW_PROBABILITY
) -> PoissonSampler:
    """The `PoissonSampler` of expected batch size ``batch_size``: q = batch_size / N.

    Raises:
      ValueError: when ``batch_size`` is not in ``[1, num_examples]``.
    """
    steps = training.batches_per_epoch(num_examples, batch_size)
    q = batch_size / num_examples
    return PoissonSampler(num_examples, q, batch_max(num_examples, q, tail), steps)


def epoch_batches(
    sampler: PoissonSampler, key: Array, epoch_index: int | Array
) -> tuple[Array, Array, Array]:
    """An epoch's Poisson batches: rows and mask ``(steps, batch_max)``, noise keys ``(steps,)``."""
    sample_keys, noise_keys = step_keys(key, epoch_index, sampler.steps_per_epoch)
    rows, mask = poisson_batches(
        sample_keys, sampler.num_examples, sampler.sampling_rate, sampler.batch_max
    )
    return rows, mask, noise_keys


def private_loss_and_grad(
    model: MLP,
    loss: str,
    params: Params,
    x: Array,
    y: Array,
    mask: Array,
    key: Array,
    *,
    clip_norm: float | Array,
    noise_multiplier: float | Array,
    expected_batch_size: float,
) -> tuple[Array, Params]:
    """The DP-SGD gradient of a masked batch (eq. (6.3)) and the batch's loss.

    ``g̃ = w (Σ_i m_i c_i ∇_θ L_i + N(0, σ²C² I))`` with ``c_i = min(1, C/‖∇_θ L_i‖)``, the
    noise drawn per leaf from ``split(key, leaves)``, and ``w = 1/(qN)`` for the mean losses
    (1 for a ``"sum"`` loss such as ``"sse"``, as the loss reduces its examples). An all-zero
    mask gives ``w`` times pure noise.

    Args:
      model: the network.
      loss: a name from `jaxbp.LOSSES`.
      params: the parameters.
      x: ``(batch_max, n0)``; y: ``(batch_max, nL)``: the batch's rows, padding included.
      mask: ``(batch_max,)``, 1 (True) for the sampled rows, 0 for padding.
      key: this step's noise key; never reuse one.
      clip_norm: C > 0.
      noise_multiplier: σ > 0, the noise's standard deviation over C.
      expected_batch_size: qN > 0.

    Returns:
      ``(loss, grads)``: the sampled rows' loss (their mean, or sum for a "sum" loss; 0 when
      none; it is not private) and the private gradient, shaped like ``params``.
    """
    _check_private(clip_norm, noise_multiplier, expected_batch_size)
    total, grad_sum = per_example.clipped_grad_sum(model, loss, params, x, y, mask, clip_norm)
    count = jnp.sum(jnp.asarray(mask, total.dtype))
    if losses_lib.LOSSES[loss].reduction == "sum":
        weight, value = 1.0, total
    else:
        weight, value = 1.0 / expected_batch_size, total / jnp.maximum(count, 1)
    noise = noise_like(key, grad_sum, noise_multiplier * clip_norm)
    return value, jax.tree.map(lambda g, z: weight * (g + z), grad_sum, noise)


def noise_like(key: Array, tree: Params, std: float | Array) -> Params:
    """``N(0, std²)`` noise shaped like ``tree``, leaf j drawn from ``split(key, leaves)[j]``."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noise = [
        std * jax.random.normal(k, g.shape, g.dtype) for g, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(treedef, noise)


def _check_private(
    clip_norm: float | Array, noise_multiplier: float | Array, expected_batch_size: float
) -> None:
    """Refuses Python numbers out of range; traced ones (a member's swept σ) are the caller's."""
    per_example.check_clip_norm(clip_norm)
    if isinstance(noise_multiplier, int | float) and not 0 < noise_multiplier < math.inf:
        raise ValueError(
            f"noise_multiplier must be positive and finite, got {noise_multiplier}: with no "
            "noise the step is not private (use jaxbp.per_example.make_clipped_grad_fn)."
        )
    if isinstance(expected_batch_size, int | float) and not expected_batch_size > 0:
        raise ValueError(
            f"expected_batch_size must be positive, got {expected_batch_size}: it is qN, "
            "the sampling rate times the training examples."
        )


def make_private_grad_fn(
    model: MLP,
    loss: str,
    *,
    clip_norm: float | Array,
    noise_multiplier: float | Array,
    expected_batch_size: float,
) -> Callable[[Params, Array, Array, Array, Array], tuple[Array, Params]]:
    """``(params, x, y, mask, key) -> (loss, private grads)`` for `make_train_step`'s ``grad_fn``.

    `jaxbp.training.make_train_step(..., grad_fn=make_private_grad_fn(...))` takes batches
    ``(x, y, mask, key)`` (those of `run_private_epoch`); arguments as `private_loss_and_grad`.
    """
    losses_lib.get_loss(loss, model.output_activation)  # refuse a bad loss before any work
    _check_private(clip_norm, noise_multiplier, expected_batch_size)

    def grad_fn(params: Params, x: Array, y: Array, mask: Array, key: Array):
        return private_loss_and_grad(
            model,
            loss,
            params,
            x,
            y,
            mask,
            key,
            clip_norm=clip_norm,
            noise_multiplier=noise_multiplier,
            expected_batch_size=expected_batch_size,
        )

    return grad_fn


def run_private_epoch(
    step: training.StepFn,
    sampler: PoissonSampler,
    params: Params,
    opt_state: optax.OptState,
    x: Array,
    y: Array,
    key: Array,
    epoch_index: int | Array,
    *,
    shard_batch: Callable[[training.Batch], training.Batch] | None = None,
) -> tuple[Params, optax.OptState, dict]:
    """A private epoch, not jitted: ``sampler.steps_per_epoch`` Poisson-sampled steps.

    `jaxbp.training.run_epoch` with the shuffled minibatches replaced by `epoch_batches`: step t
    takes ``(x[rows_t], y[rows_t], mask_t, noise_key_t)``, so ``step`` must come from
    `jaxbp.training.make_train_step` with ``grad_fn=make_private_grad_fn(...)``. Only the first
    ``sampler.num_examples`` rows of ``x`` are ever sampled (padding past them is not).

    Returns:
      ``(params, opt_state, metrics)``, the metrics stacked ``(steps,)`` each.
    """
    if x.shape[0] < sampler.num_examples:
        raise ValueError(
            f"x has {x.shape[0]} rows but the sampler draws from {sampler.num_examples}: "
            "build it with poisson_sampler(len(x_train), batch_size)."
        )
    batches = epoch_batches(sampler, key, epoch_index)
    return training.scan_steps(step, params, opt_state, x, y, batches, shard_batch=shard_batch)


def make_private_epoch(
    step: training.StepFn, sampler: PoissonSampler, *, donate: bool = False
) -> Callable[..., tuple[Params, optax.OptState, dict]]:
    """`run_private_epoch` jitted: ``epoch(params, opt_state, x, y, key, epoch_index)``.

    ``donate`` as `jaxbp.training.make_epoch`'s.
    """

    def epoch(params, opt_state, x, y, key, epoch_index):
        return run_private_epoch(step, sampler, params, opt_state, x, y, key, epoch_index)

    return jax.jit(epoch, donate_argnums=(0, 1) if donate else ())
