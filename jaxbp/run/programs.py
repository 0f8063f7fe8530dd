"""The compiled programs of a training run: every member's checked epoch and its metrics.

Three module-level jitted functions, each of a hashable `Spec` (the static part of a run:
its config, network, loss, task, sizes and mesh) and of arrays:

* `train_epoch`: the epoch of every member (`jaxbp.training.members.make_epoch` over
  `member_step`, one program for all M members), *checked*: a member whose loss or params
  stop being finite in it (or whose final params give a non-finite loss) keeps its state of
  the epoch before, and the epoch reports which members stayed finite. It donates its
  params and optimizer state;
* `member_metrics`: the metrics of every member on a split, ``{name: (M,)}``: loss and
  accuracy or R² with RMSE and MAE in the targets' units (`jaxbp.training.split_metrics`),
  and on the training split also ‖∇L‖ and the gradient flow (`jaxbp.gradient_flow`) of
  its first `FLOW_ROWS` rows (on the validation split in a DP-SGD run, whose epoch is
  `jaxbp.dp_sgd.run_private_epoch`);
* `select_best`: the improved members' params taken over their best ones.

`compile_programs` places the data splits on the mesh once (`jaxbp.training.parallel`),
replicated, and the swept values split over the mesh's ``"members"`` axis like the state
(`jaxbp.training.parallel.place_members`); the member vmaps name that axis, so each device
group trains and evaluates its own members. It compiles the three for the state's placement
and returns them as `Programs`, with the seconds that took.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxbp import backprop, dp_sgd, per_example, training
from jaxbp.data import Dataset
from jaxbp.gradient_flow import gradient_flow
from jaxbp.mlp import MLP, Params
from jaxbp.run.config import Config
from jaxbp.run.privacy_plan import PrivacyPlan
from jaxbp.run.recipe import TrainState, member_optimizer
from jaxbp.training import members, parallel

# Rows of the training split that each evaluation's gradient flow (per-layer mean ‖δ_i‖,
# ‖∂L/∂W‖, the noise scale B_simple) is measured on: enough for a stable mean, and few
# enough that it stays a small fraction of an epoch (docs/performance.md).
FLOW_ROWS = 128
SPLITS = ("train", "val", "test")


class Spec(NamedTuple):
    """The static part of a run's programs (hashable: a `jax.jit` static argument)."""

    config: Config
    model: MLP
    loss: str
    task: str
    num_members: int
    num_examples: int  # training rows; the data-parallel placement pads x past them
    steps_per_epoch: int
    mesh: Mesh
    privacy: PrivacyPlan | None = None  # a DP-SGD run's sampling, σ and δ
    # Regression: each target's scale (`jaxbp.data.Dataset.y_scale`), for RMSE and MAE in
    # the targets' units; a tuple, so that the spec stays hashable.
    y_scale: tuple[float, ...] | None = None


def flow_split(spec: Spec) -> str:
    """The split of the evaluation's ‖∇L‖ and gradient flow: the training split, except in a
    DP-SGD run, which looks at training examples only inside its private step."""
    return "train" if spec.privacy is None else "val"


def evaluated_splits(spec: Spec) -> tuple[str, ...]:
    """The splits of every evaluation's records: a DP-SGD run's are the validation split's."""
    return ("train", "val") if spec.privacy is None else ("val",)


def reported_splits(spec: Spec) -> tuple[str, ...]:
    """The splits a run's metrics are ever computed on: a DP-SGD run's leave out the training
    split (`flow_split`)."""
    return SPLITS if spec.privacy is None else ("val", "test")


def member_step(spec: Spec, hparams: members.Hyperparams) -> training.StepFn:
    """One member's train step from its swept scalars (the optimizer's, the clip norm)."""
    model, loss, plan = spec.model, spec.loss, spec.privacy
    clip = hparams.get("clip_per_example", spec.config.clip_per_example)
    grad_fn: Callable[..., tuple[jax.Array, Params]] | None = None
    if plan is not None:  # DP-SGD: clipped, masked rows and noise on the sum (eq. (6.3))
        sigma = hparams.get("dp_noise_multiplier", plan.noise_multiplier)
        assert clip is not None and sigma is not None  # config_checks: DP needs C and σ
        grad_fn = dp_sgd.make_private_grad_fn(
            model,
            loss,
            clip_norm=clip,
            noise_multiplier=sigma,
            expected_batch_size=plan.sampler.expected_batch_size,
        )
    elif clip is not None:  # the δ rows are clipped: hand-written only
        grad_fn = functools.partial(per_example.clipped_loss_and_grad, model, loss, clip_norm=clip)

    return training.make_train_step(
        model,
        loss,
        member_optimizer(spec.config, spec.steps_per_epoch)(hparams),
        backward=spec.config.backward,
        grad_fn=grad_fn,
        grad_norm=False,  # the evaluation records ‖∇L‖ on a whole split (`flow_split`)
    )


class EpochLosses(NamedTuple):
    """An epoch's losses: ``steps: (M, steps)`` at each step's params, ``end: (M,)`` at the
    epoch's final params on the training split's first ``batch_size`` rows (0 in a DP-SGD
    run, which looks at training rows only in its private step)."""

    steps: Any
    end: Any


def _per_member(num: int, keep: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    """``new`` for the members where ``keep: (M,)`` is True, else ``old``."""
    return jnp.where(keep.reshape((num,) + (1,) * (new.ndim - 1)), new, old)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(1, 2))
def train_epoch(spec: Spec, params, opt_state, hparams, x, y, keys, epoch, active):
    """Epoch ``epoch`` of every member, checked: ``(params, opt_state, losses, finite)``.

    ``losses`` are `EpochLosses` and ``finite`` is ``(M,)``, True for the members whose step
    losses, final params and loss at the final params are all finite. Members not
    ``active``, and those not finite, keep their old state. Donates ``params`` and
    ``opt_state``.
    """
    num, shard = spec.num_members, parallel.shard_batch(spec.mesh)
    run_one = None
    if spec.privacy is not None:  # Poisson-sampled batches of rate batch_size / N
        sampler = spec.privacy.sampler

        def run_one(step, *state_data_key_epoch):
            return dp_sgd.run_private_epoch(step, sampler, *state_data_key_epoch, shard_batch=shard)

    epoch_fn = members.make_epoch(
        functools.partial(member_step, spec),
        spec.config.batch_size,
        num,
        num_examples=spec.num_examples,
        shard_batch=shard,
        spmd_axis_name=parallel.MEMBER_AXIS,
        run_one=run_one,
    )
    new_params, new_opt_state, metrics = epoch_fn(params, opt_state, hparams, x, y, keys, epoch)
    losses = metrics["loss"]  # (M, steps)
    # Params can end the epoch finite yet so large (1e38) that their loss overflows: the
    # loss at the final params, on the training split's first batch_size rows, must be
    # finite too (a DP-SGD run looks at training rows only in its private step: params only).
    rows = min(spec.config.batch_size, spec.num_examples)  # x past num_examples is padding
    end_loss = jnp.zeros(num)
    if spec.privacy is None:
        end_loss = members.over_members(
            lambda p: backprop.loss_value(spec.model, spec.loss, p, x[:rows], y[:rows]),
            num,
            (0,),
            spmd_axis_name=parallel.MEMBER_AXIS,
        )(new_params)
    finite = jnp.all(jnp.isfinite(losses), axis=1) & jnp.isfinite(end_loss)
    for leaf in jax.tree.leaves(new_params):
        finite &= jnp.all(jnp.isfinite(leaf.reshape(num, -1)), axis=1)
    keep = functools.partial(_per_member, num, active & finite)
    new_params = jax.tree.map(keep, new_params, params)
    new_opt_state = jax.tree.map(keep, new_opt_state, opt_state)
    return new_params, new_opt_state, EpochLosses(losses, end_loss), finite


@functools.partial(jax.jit, static_argnums=(0, 4))
def member_metrics(spec: Spec, params: Params, x, y, with_grad_norm: bool) -> dict[str, Any]:
    """Every member's metrics on the split ``(x, y)``, ``{name: (M,)}``; on `flow_split`
    (``with_grad_norm``) also ‖∇L‖ and the gradient flow of its first `FLOW_ROWS` rows."""
    model, loss = spec.model, spec.loss
    loss_and_grad = training.make_loss_and_grad(model, loss, "custom")
    flow_rows = min(x.shape[0], FLOW_ROWS)

    def one(params, x, y):
        metrics = training.split_metrics(model, loss, params, x, y, spec.task, spec.y_scale)
        if with_grad_norm:  # ‖∇L‖ and the gradient flow
            metrics["grad_norm"] = optax.tree.norm(loss_and_grad(params, x, y)[1])
            if flow_rows >= 2:
                flow = gradient_flow(model, loss, params, x[:flow_rows], y[:flow_rows])
                metrics.update({f"flow/{k}": v for k, v in flow.items()})
        return metrics

    over = members.over_members(
        one, spec.num_members, (0, None, None), spmd_axis_name=parallel.MEMBER_AXIS
    )
    return over(params, x, y)


@functools.partial(jax.jit, static_argnums=0)
def select_best(num_members: int, improved, params: Params, best: Params) -> Params:
    """The params of the ``improved: (M,)`` members over the ``best`` of the others."""
    return jax.tree.map(functools.partial(_per_member, num_members, improved), params, best)


class Programs(NamedTuple):
    """A run's programs compiled for its state's placement, and their placed inputs."""

    spec: Spec
    epoch: Any  # `train_epoch` compiled: (params, opt_state, hparams, x, y, keys, epoch, active)
    hparams: dict[str, jax.Array]  # every member's swept values, placed
    train_rows: tuple[jax.Array, jax.Array]  # the training split, placed for the epoch
    splits: dict[str, tuple[jax.Array, jax.Array]]  # every split, replicated
    seconds: float  # compiling


def compile_programs(
    spec: Spec, dataset: Dataset, hparams: dict[str, np.ndarray], state: TrainState
) -> Programs:
    """Places the data and swept values on ``spec.mesh`` and compiles the run's programs."""
    mesh = spec.mesh
    splits = {
        name: parallel.replicate(
            (getattr(dataset, f"x_{name}"), getattr(dataset, f"y_{name}")), mesh
        )
        for name in SPLITS
    }
    x_train, y_train = parallel.put_training_data((dataset.x_train, dataset.y_train), mesh)
    train_rows = (x_train, y_train)
    placed_hparams = parallel.place_members(hparams, mesh)
    started = time.perf_counter()
    everyone = parallel.place_members(np.ones(spec.num_members, bool), mesh)
    epoch = train_epoch.lower(
        spec,
        state.params,
        state.opt_state,
        placed_hparams,
        *train_rows,
        state.key,
        np.int32(1),
        everyone,
    ).compile()
    for name in reported_splits(spec):  # the calls fill the jit caches
        member_metrics(spec, state.params, *splits[name], name == flow_split(spec))
    # With a host mask, as the loop passes it (a placed one would be another program).
    select_best(spec.num_members, np.ones(spec.num_members, bool), state.params, state.params)
    seconds = time.perf_counter() - started
    return Programs(spec, epoch, placed_hparams, train_rows, splits, seconds)


def run_epoch(
    programs: Programs, params: Params, opt_state: Any, key: jax.Array, epoch: int, active
) -> tuple[Params, Any, Any, Any]:
    """`train_epoch` of the compiled ``programs``; ``active: (M,)`` bools on the host."""
    return programs.epoch(
        params,
        opt_state,
        programs.hparams,
        *programs.train_rows,
        key,
        np.int32(epoch),  # a host scalar: no program of its own to convert it
        parallel.place_members(active, programs.spec.mesh),
    )


def metrics_of(programs: Programs, params: Params, split: str) -> dict[str, np.ndarray]:
    """Every member's metrics on a split, ``{name: (M,)}`` float64 on the host."""
    spec = programs.spec
    metrics = member_metrics(spec, params, *programs.splits[split], split == flow_split(spec))
    return {k: np.asarray(parallel.to_host(v), np.float64) for k, v in metrics.items()}
