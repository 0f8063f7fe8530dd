"""What a training run is built from: its data, network, optimizer and first state.

The contract, stated once: every function here is a pure function of a `jaxbp.run.config.Config`
(and the data set or network it gives), so `jaxbp.run.loop`, `jaxbp.run.evaluation` and the
experiment scripts build the same run from the same config:

* `load_data`: the config's data set, split by ``data_seed``, in the config's precision,
  and `Preprocessing`, how its raw rows become network inputs (stored with each checkpoint);
* `build_model`: the MLP ``(num_features, *hidden_sizes, num_outputs)`` with the task's head;
* `build_schedule`, `build_optimizer`: the learning-rate schedule and the optax optimizer
  (the rate injected into its state), and `schedule_change`, a resume's word on a new length;
* `initial_member_state`: the run's `TrainState` before epoch 1, every member's stacked
  ``(M, ...)`` (M ≥ 1: a single run is a set of one; `jaxbp.training.members`), member k's
  params from ``fold_in(PRNGKey(seed_k), 0)``, with `member_optimizer` and `member_hparams`,
  each member's optimizer and swept values; `initial_state`, one model's, unstacked, for
  scripts that train one model by hand;
* `network_meta` and `describe_run`: the JSON a checkpoint must match, and the run's first
  log line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbp import data as data_lib
from jaxbp import training
from jaxbp.mlp import MLP, Params, init_params
from jaxbp.run import config as config_lib
from jaxbp.run.config import Config, ConfigError
from jaxbp.training import members


class TrainState(NamedTuple):
    """What a checkpoint holds: everything the next epoch needs.

    A run's state is stacked: every leaf of ``params``, ``opt_state`` and ``key`` has a
    leading member axis of M ≥ 1 (`initial_member_state`); the shapes below are one member's.

    Attributes:
      params: one ``{"W": (n_k, n_{k-1}), "b": (n_k,)}`` dict per layer.
      opt_state: the optax state of ``params``, with the learning rate of its last update
        (`jaxbp.training.learning_rate_of`).
      epoch: epochs completed, an int32 scalar (shared by the members).
      key: the raw ``uint32[2]`` PRNG key: ``fold_in(key, 0)`` drew the initial params,
        ``fold_in(key, e)`` orders epoch ``e``.
    """

    params: Params
    opt_state: optax.OptState
    epoch: Any
    key: jax.Array


class Preprocessing(NamedTuple):
    """How raw rows become network inputs and outputs become labels or values (JSON-able)."""

    task: str
    feature_names: list[str]
    class_names: list[str] | None
    x_mean: list[float]
    x_scale: list[float]
    y_mean: list[float] | None
    y_scale: list[float] | None

    @classmethod
    def of(cls, dataset: data_lib.Dataset) -> Preprocessing:
        """The preprocessing of a loaded data set."""

        def floats(a: np.ndarray | None) -> list[float] | None:
            return None if a is None else [float(v) for v in np.ravel(a)]

        return cls(
            dataset.task,
            [str(n) for n in dataset.feature_names],
            None if dataset.class_names is None else [str(c) for c in dataset.class_names],
            floats(dataset.x_mean) or [],
            floats(dataset.x_scale) or [],
            floats(dataset.y_mean),
            floats(dataset.y_scale),
        )


def build_model(config: Config, dataset: data_lib.Dataset) -> MLP:
    """The MLP for the data: ``(num_features, *hidden_sizes, num_outputs)``, task-aware head.

    Raises:
      ConfigError: when ``sizes`` does not fit the data, or the output/loss cannot fit the
        targets (see `jaxbp.run.config.resolve_head`).
    """
    output, _ = config_lib.resolve_head(config, dataset.task, dataset.num_outputs)
    sizes = (dataset.num_features, *config.hidden_sizes, dataset.num_outputs)
    if config.sizes is not None:
        if (config.sizes[0], config.sizes[-1]) != (sizes[0], sizes[-1]):
            raise ConfigError(
                "sizes",
                config.sizes,
                f"does not fit dataset={config.dataset}: it has {sizes[0]} features and "
                f"{sizes[-1]} outputs, so the sizes must start with {sizes[0]} and end with "
                f"{sizes[-1]}.",
            )
        sizes = tuple(config.sizes)
    return MLP(sizes, config.activation, output, config.use_bias)


def build_schedule(config: Config, steps_per_epoch: int) -> optax.Schedule:
    """The config's learning-rate schedule, laid over ``epochs * steps_per_epoch`` steps."""
    return training.make_schedule(
        config.learning_rate,
        config.schedule,
        total_steps=config.epochs * steps_per_epoch,
        warmup_steps=config.warmup_epochs * steps_per_epoch,
    )


def build_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """The config's optax optimizer with `build_schedule`'s learning rate, injected into its
    state (`jaxbp.training.learning_rate_of` reads the rate of the last step)."""

    def make(learning_rate):
        return training.make_optimizer(
            config.optimizer,
            learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )

    return training.inject_learning_rate(make, build_schedule(config, steps_per_epoch))


def schedule_change(
    config: Config, old_epochs: int, new_epochs: int, start_epoch: int, steps_per_epoch: int
) -> str:
    """The line that says how a resume's new ``epochs`` moves a schedule that spans them."""
    step = start_epoch * steps_per_epoch
    old, new = (
        build_schedule(dataclasses.replace(config, epochs=e), steps_per_epoch)
        for e in (old_epochs, new_epochs)
    )
    return (
        f"epochs {old_epochs} -> {new_epochs}: the {config.schedule} schedule now spans "
        f"{new_epochs} epochs; the learning rate at epoch {start_epoch + 1} is "
        f"{float(new(step)):.3g} instead of {float(old(step)):.3g}."
    )


def initial_state(
    config: Config, model: MLP, optimizer: optax.GradientTransformation
) -> TrainState:
    """The state before epoch 1: params from ``fold_in(key, 0)`` of ``PRNGKey(seed)``."""
    key = jax.random.PRNGKey(config.seed)  # raw uint32 key: orbax stores it as an array

    @jax.jit  # one program, not one compilation per initializer op
    def draw(key):
        params = init_params(jax.random.fold_in(key, 0), model, dtype=jnp.dtype(config.precision))
        return params, optimizer.init(params)

    params, opt_state = draw(key)
    return TrainState(params, opt_state, np.asarray(0, np.int32), key)


def member_optimizer(
    config: Config, steps_per_epoch: int
) -> Callable[[members.Hyperparams], optax.GradientTransformation]:
    """One member's optimizer from its swept scalars (`jaxbp.training.members.make_optimizer`).

    Without a swept optimizer number every member gets `build_optimizer`'s optimizer, the
    single run's; with one, member k's rate is ``η_k · u(t)`` over the shared unit schedule.
    """
    swept = {name for name, _ in config.sweep}
    if not swept & {"learning_rate", "weight_decay", "momentum"}:
        optimizer = build_optimizer(config, steps_per_epoch)
        return lambda hparams: optimizer
    unit = build_schedule(dataclasses.replace(config, learning_rate=1.0), steps_per_epoch)
    decay = config.weight_decay > 0 or "weight_decay" in swept

    def of(hparams: members.Hyperparams) -> optax.GradientTransformation:
        return members.make_optimizer(
            config.optimizer,
            hparams.get("learning_rate", config.learning_rate),
            unit,
            momentum=hparams.get("momentum", config.momentum),
            weight_decay=hparams.get("weight_decay", config.weight_decay),
            decay=decay,
        )

    return of


def member_hparams(config: Config) -> dict[str, np.ndarray]:
    """The swept values of every member, ``{name: (M,)}`` in the run's precision."""
    grid = config_lib.member_grid(config)
    dtype = np.dtype(config.precision)
    return {name: np.asarray([m.values[name] for m in grid], dtype) for name, _ in config.sweep}


_RUN_ONCE_OPTIONS: dict[str, str | bool] = {"xla_backend_optimization_level": "0"}


def initial_member_state(
    config: Config,
    model: MLP,
    optimizer_of: Callable[[members.Hyperparams], optax.GradientTransformation],
) -> TrainState:
    """The stacked state of every member before epoch 1 (member k: `initial_state` of its seed).

    Every leaf has a leading member axis of M (keys ``(M, 2)``); the epoch is a scalar.
    """
    grid = config_lib.member_grid(config)
    keys = members.member_keys([m.seed for m in grid])

    def draw(keys, hparams):  # one program, not one compilation per initializer op
        params = members.init_member_params(keys, model, jnp.dtype(config.precision))
        init = members.over_members(lambda p, hp: optimizer_of(hp).init(p), len(grid), (0, 0))
        return params, init(params, hparams)

    hparams = member_hparams(config)
    # It runs once, so XLA's cheapest optimisation level: half the compile, the same bits.
    compiled = jax.jit(draw).lower(keys, hparams).compile(compiler_options=_RUN_ONCE_OPTIONS)
    params, opt_state = compiled(keys, hparams)
    return TrainState(params, opt_state, np.asarray(0, np.int32), keys)


def network_meta(config: Config, model: MLP, loss: str) -> dict[str, Any]:
    """The JSON description a checkpoint of this run must match (``members``: M ≥ 1)."""
    return {
        "members": len(config_lib.member_grid(config)),
        "sizes": list(model.sizes),
        "activation": model.activation,
        "output_activation": model.output_activation,
        "use_bias": model.use_bias,
        "loss": loss,
        "optimizer": config.optimizer,
        "precision": config.precision,
    }


def load_data(config: Config) -> data_lib.Dataset:
    """The config's data set, split by ``data_seed`` and the fractions, in its precision."""
    return data_lib.load_dataset(
        config.dataset,
        seed=config.data_seed,
        data_dir=config.data_dir,
        path=config.data_path,
        target_column=config.target_column,
        test_path=config.test_path,
        task=config.task,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        num_samples=config.num_samples,
        dtype=np.dtype(config.precision),
    )


def describe_run(config: Config, model: MLP, loss: str, task: str) -> str:
    """The first line of a run: task, sizes, activations, loss and optimizer."""
    return (
        f"{config.dataset}: {task}, sizes {'-'.join(map(str, model.sizes))}, "
        f"{model.activation} hidden, {model.output_activation} output, loss {loss}, "
        f"{config.optimizer} lr {config.learning_rate:g} ({config.schedule}), "
        f"batch {config.batch_size}, {config.epochs} epochs, backward {config.backward}"
        + _describe_members(config)
    )


def _describe_members(config: Config) -> str:
    """``; 6 members: sweep learning_rate=0.001,0.003 x repeats 3`` for a set, else nothing."""
    num = len(config_lib.member_grid(config))
    if num == 1:
        return ""
    parts = [f"sweep {config_lib.format_value(config.sweep)}"] if config.sweep else []
    parts += [f"seeds {config.seed}..{config.seed + config.repeats - 1}"]
    return f"; {num} members: {' x '.join(parts)} (swept values replace the ones above)"
