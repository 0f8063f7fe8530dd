"""Whole epochs under `lax.scan`: the step over the shuffled minibatches of an epoch.

Contract: an epoch is one `jax.lax.scan` of a train step (`jaxbp.training.step`) over
minibatches of a permutation drawn from ``fold_in(key, epoch)``, the last partial batch
dropped, so a run is a deterministic function of its seed, a resumed run needs no shuffling
state, and small networks are not dominated by Python dispatch.
"""

import functools
from collections.abc import Callable

import jax
import optax

from jaxbp.mlp import Params
from jaxbp.training import shuffle
from jaxbp.training.step import Batch, StepFn

Array = jax.Array


def epoch_key(key: Array, epoch: int | Array) -> Array:
    """The shuffling key of an epoch: ``fold_in(key, epoch)``, so resuming needs no state."""
    return jax.random.fold_in(key, epoch)


def batches_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches in an epoch, ``num_examples // batch_size``; the remainder is dropped.

    Raises:
      ValueError: when ``batch_size`` is not in ``[1, num_examples]``.
    """
    if not 0 < batch_size <= num_examples:
        raise ValueError(
            f"batch_size {batch_size} does not fit the {num_examples} training examples: "
            f"use a batch size from 1 to {num_examples}."
        )
    return num_examples // batch_size


def epoch_order(key: Array, epoch: int | Array, num_examples: int, batch_size: int) -> Array:
    """The minibatches of an epoch: ``(num_examples // batch_size, batch_size)`` row indices.

    A `jaxbp.training.shuffle.permutation` of the rows drawn from ``epoch_key(key, epoch)``,
    the last partial batch dropped.

    Raises:
      ValueError: when ``batch_size`` does not fit ``num_examples`` (`batches_per_epoch`).
    """
    num_batches = batches_per_epoch(num_examples, batch_size)
    order = shuffle.permutation(epoch_key(key, epoch), num_examples)
    return order[: num_batches * batch_size].reshape(num_batches, batch_size)


def make_epoch(
    step: StepFn,
    batch_size: int,
    *,
    num_examples: int | None = None,
    shard_batch: Callable[[Batch], Batch] | None = None,
    donate: bool = False,
) -> Callable[..., tuple[Params, optax.OptState, dict]]:
    """One epoch as a single `jax.lax.scan` over shuffled minibatches (jitted).

    The returned ``epoch(params, opt_state, x, y, key, epoch_index)`` visits the examples in
    the order `epoch_order` draws from ``fold_in(key, epoch_index)``, dropping the last partial
    batch, and scans ``step`` over the ``n // batch_size`` batches; metrics come back stacked,
    shape ``(steps,)`` each.

    Args:
      step: from `make_train_step`.
      batch_size: rows per step.
      num_examples: rows of ``x`` that are examples (default all; the data-parallel
        placement pads ``x`` past them).
      shard_batch: optional ``batch -> batch`` applied to every minibatch (the data-parallel
        sharding constraint of `jaxbp.training.parallel`).
      donate: donate the ``params`` and ``opt_state`` buffers to the epoch, which writes the
        new ones into them (`jax.jit`'s ``donate_argnums``): the caller must use only the
        returned state afterwards, as a training loop does. Saves an allocation per leaf.
    """

    epoch = functools.partial(
        run_epoch, step, batch_size, num_examples=num_examples, shard_batch=shard_batch
    )
    return jax.jit(epoch, donate_argnums=(0, 1) if donate else ())


def run_epoch(
    step: StepFn,
    batch_size: int,
    params: Params,
    opt_state: optax.OptState,
    x: Array,
    y: Array,
    key: Array,
    epoch_index: int | Array,
    *,
    num_examples: int | None = None,
    shard_batch: Callable[[Batch], Batch] | None = None,
) -> tuple[Params, optax.OptState, dict]:
    """The body of `make_epoch`'s epoch, not jitted: for callers that wrap it (`jax.vmap`).

    Args: as `make_epoch`'s epoch and `make_epoch`.

    Returns:
      ``(params, opt_state, metrics)``, the metrics stacked ``(steps,)`` each.
    """
    n = x.shape[0] if num_examples is None else num_examples
    order = epoch_order(key, epoch_index, n, batch_size)
    return scan_steps(step, params, opt_state, x, y, (order,), shard_batch=shard_batch)


def scan_steps(
    step: StepFn,
    params: Params,
    opt_state: optax.OptState,
    x: Array,
    y: Array,
    batches: tuple,
    *,
    shard_batch: Callable[[Batch], Batch] | None = None,
) -> tuple[Params, optax.OptState, dict]:
    """``step`` scanned over an epoch's minibatches (`jax.lax.scan`), not jitted.

    Args:
      step: from `make_train_step`.
      params, opt_state: the state the epoch starts from.
      x, y: the training split.
      batches: ``(rows, *extra)``, each with a leading ``steps`` axis: step t takes the batch
        ``(x[rows[t]], y[rows[t]], *extra[t])`` (extra: e.g. `jaxbp.dp_sgd`'s mask and key).
      shard_batch: optional ``batch -> batch`` applied to each ``(x[rows[t]], y[rows[t]])``.

    Returns:
      ``(params, opt_state, metrics)``, the metrics stacked ``(steps,)`` each.
    """

    def body(carry, per_step):
        rows, *extra = per_step
        batch = (x[rows], y[rows])
        if shard_batch is not None:
            batch = shard_batch(batch)
        params, opt_state, metrics = step(*carry, (*batch, *extra))
        return (params, opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), batches)
    return params, opt_state, metrics
