"""Many models trained in one compiled program: a leading member axis under `jax.vmap`.

Contract: a *member set* of M stacks M members' pytrees leaf by leaf, so every leaf of the
parameters, the optimizer state and the keys has a leading axis of M (``W^[k]: (M, n_k,
n_{k-1})``, raw keys ``(M, 2)``). A function written for one member is lifted to the set by
`over_members`: `jax.vmap` over that axis with the data shared (``in_axes=None``). For
M = 1 the axis is squeezed and the function runs unbatched, so a single run is the very
program it was before members existed. The gradient under the vmap is the hand-written δ
recursion (``backward="custom"``): its rules batch like any jax function.

Per-member hyperparameters (learning rate, weight decay, momentum, clip norm) are ``(M,)``
arrays passed beside the state, a dict ``{name: (M,)}`` of the swept ones only; each
member's optimizer is built inside the mapped function from its own scalars
(`make_optimizer`), so the optimizer state has one structure for every value. The schedule's
shape is shared: member k's rate at step t is ``η_k · u(t)``, with ``u`` the unit schedule
(peak 1), which is what optax's scheduled optimizer computes for ``η_k`` alone.

Member k of ``repeats`` from seed s is seeded ``s + k`` (`member_keys`), so it is the single
run of seed ``s + k`` (to float rounding: a batched matmul may sum in another order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxbp import training
from jaxbp.mlp import MLP, Params, init_params

Array = jax.Array
Hyperparams = dict[str, Array]  # swept name -> (M,) values, one per member


def over_members(
    fn: Callable,
    num_members: int,
    in_axes: Sequence[int | None],
    *,
    spmd_axis_name: str | None = None,
) -> Callable:
    """``fn`` of one member lifted to a set of ``num_members`` (`jax.vmap` over axis 0).

    Args:
      fn: a function of one member's arguments.
      num_members: M ≥ 1.
      in_axes: per positional argument, 0 (stacked over members) or None (shared).
      spmd_axis_name: a mesh axis that the member axis is split over
        (`jaxbp.training.parallel.MEMBER_AXIS`); sharding constraints inside ``fn`` then keep it.

    Returns:
      The lifted function; every output gets the leading member axis. For M = 1 the mapped
      arguments are squeezed and ``fn`` runs unbatched (the same program as a single run).
    """
    if num_members < 1:
        raise ValueError(f"num_members must be >= 1, got {num_members}.")
    if num_members > 1:
        return jax.vmap(fn, in_axes=tuple(in_axes), spmd_axis_name=spmd_axis_name)

    def single(*args):
        args = [
            a if axis is None else jax.tree.map(lambda leaf: leaf[0], a)
            for a, axis in zip(args, in_axes, strict=True)
        ]
        return jax.tree.map(lambda leaf: jnp.expand_dims(leaf, 0), fn(*args))

    return single


def stack(trees: Sequence[Any]) -> Any:
    """Members' trees (same structure) stacked leaf by leaf along a new axis 0."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def take(tree: Any, k: int) -> Any:
    """Member ``k``'s tree out of a stacked set."""
    return jax.tree.map(lambda leaf: leaf[k], tree)


def member_keys(seeds: Sequence[int]) -> Array:
    """The raw ``uint32[2]`` keys ``PRNGKey(seed)`` of the members, stacked ``(M, 2)``."""
    return jnp.stack([jax.random.PRNGKey(s) for s in seeds])


def init_member_params(keys: Array, model: MLP, dtype: Any = jnp.float32) -> Params:
    """Each member's initial params from ``fold_in(key_k, 0)``, stacked ``(M, ...)``.

    Member k's params are those a single run with key ``keys[k]`` draws (the PRNG maps
    elementwise, so the vmap changes no bit).
    """

    def one(key):
        return init_params(jax.random.fold_in(key, 0), model, dtype=dtype)

    return over_members(one, keys.shape[0], (0,))(keys)


def make_optimizer(
    name: str,
    learning_rate: float | Array,
    unit_schedule: optax.Schedule,
    *,
    momentum: float | Array = 0.9,
    weight_decay: float | Array = 0.0,
    decay: bool = False,
) -> optax.GradientTransformation:
    """`jaxbp.training.make_optimizer` with numbers that may be traced (one member's scalars).

    The rate at step t is ``learning_rate · unit_schedule(t)``, injected into the state
    (`jaxbp.training.inject_learning_rate`); for ``unit_schedule = make_schedule(1.0, s)`` and
    schedule ``s`` constant or cosine this is bit for bit optax's optimizer with
    ``make_schedule(learning_rate, s)`` (warmup_cosine: to rounding).

    Args:
      name: one of `jaxbp.training.OPTIMIZERS`.
      learning_rate: the peak η (a scalar, traced or not).
      unit_schedule: the schedule's shape, peak 1.
      momentum: β of momentum and nesterov.
      weight_decay: λ ≥ 0.
      decay: whether the chain applies weight decay at all; fixed for the whole set (a
        member with λ = 0 in a decaying set adds ``0 · W``, which changes no bit).
    """

    def rate(count):
        return learning_rate * unit_schedule(count)

    def make(rate_now):
        return training.make_optimizer(
            name, rate_now, momentum=momentum, weight_decay=weight_decay, decay=decay
        )

    return training.inject_learning_rate(make, rate)


def make_epoch(
    make_step: Callable[[Hyperparams], training.StepFn],
    batch_size: int,
    num_members: int,
    *,
    num_examples: int | None = None,
    shard_batch: Callable[[training.Batch], training.Batch] | None = None,
    spmd_axis_name: str | None = None,
    run_one: Callable[..., tuple[Params, optax.OptState, dict]] | None = None,
) -> Callable[..., tuple[Params, optax.OptState, dict]]:
    """One epoch of every member as one program (not jitted: the caller jits it).

    The returned ``epoch(params, opt_state, hparams, x, y, keys, epoch_index)`` runs
    `jaxbp.training.run_epoch` for each member with the step ``make_step(member's hparams)``
    and the order drawn from ``fold_in(keys[k], epoch_index)``; ``x`` and ``y`` are shared.

    Args:
      make_step: one member's hyperparameters (scalars) -> its train step.
      batch_size: rows per step.
      num_members: M.
      num_examples, shard_batch: as `jaxbp.training.make_epoch`.
      spmd_axis_name: as `over_members`: the mesh axis the members are split over.
      run_one: one member's epoch ``(step, params, opt_state, x, y, key, epoch_index)``
        instead of `jaxbp.training.run_epoch` over shuffled minibatches (``batch_size``,
        ``num_examples`` and ``shard_batch`` are then its own business): e.g.
        `jaxbp.dp_sgd.run_private_epoch` bound to its sampler.

    Returns:
      The epoch; its params and optimizer state are stacked ``(M, ...)`` and its metrics
      ``(M, steps)`` each.
    """

    def one(params, opt_state, hparams, *data_key_epoch):
        if run_one is not None:
            return run_one(make_step(hparams), params, opt_state, *data_key_epoch)
        return training.run_epoch(
            make_step(hparams),
            batch_size,
            params,
            opt_state,
            *data_key_epoch,
            num_examples=num_examples,
            shard_batch=shard_batch,
        )

    return over_members(
        one, num_members, (0, 0, 0, None, None, 0, None), spmd_axis_name=spmd_axis_name
    )
