"""A training run a researcher can leave running and believe: `train_and_evaluate`.

``train_and_evaluate(config, workdir)`` validates the config, takes the workdir's lock,
loads the data, builds the network the task asks for, trains it with compiled epochs
(`jaxbp.train`), and leaves in the workdir what `jaxbp.workdir` lists: the run record,
metrics, TensorBoard events, curves, the latest and the best-validation checkpoints, and
``summary.json``. Its guarantees:

* **Nothing is mixed.** A workdir that holds a run resumes it only with the same data,
  network and seeds (`jaxbp.workdir.check_resume`); a resumed run ends bit-identical to an
  uninterrupted one, after a Ctrl-C or a kill at any point.
* **Nothing bad is saved.** The loss and the parameters are checked finite after every
  epoch, before any checkpoint; a damaged checkpoint is set aside and the one before it
  used.
* **A stop is clean.** SIGINT and SIGTERM end the run after the current epoch with a
  checkpoint, curves and a summary marked ``interrupted``; `RunInterruptedError` carries the signal.

A config with ``repeats`` or ``sweep`` trains a *member set* (`jaxbp.members`): every
combination of the swept values and the repeat seeds (`jaxbp.config.member_grid`), one
compiled epoch for all of them, one stacked state in each checkpoint (a single run's
checkpoint keeps its unstacked layout). Each member keeps its own best-validation params
and early-stops only when all of them have run out of patience. **A diverging member is
frozen:** when its loss or params stop being finite in an epoch, that epoch is thrown away
for it alone, it keeps the params of the epoch before (finite, so every checkpoint stays
loadable), is marked ``diverged_at_epoch`` in ``summary.json`` and left out of the means,
the std, the sweep table's figures and the ensemble; the others train on unaffected. Only
when every member has diverged does the run stop with `NonFiniteError`. A single run keeps
the stop-at-the-first-NaN rule.

Uses the ``experiments`` extra (orbax-checkpoint, tensorboardX, matplotlib, scikit-learn).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbp import config as config_lib
from jaxbp import data as data_lib
from jaxbp import losses, members, parallel, per_example, run_outputs, train
from jaxbp import workdir as workdir_lib
from jaxbp.config import Config, ConfigError
from jaxbp.gradient_flow import gradient_flow
from jaxbp.mlp import MLP, Params, init_params

Log = Callable[[str], None]

# Rows of the training split that each evaluation's gradient flow (per-layer mean ‖δ_i‖,
# ‖∂L/∂W‖, the noise scale B_simple) is measured on: enough for a stable mean, and few
# enough that it stays a small fraction of an epoch (docs/performance.md).
FLOW_ROWS = 128


class TrainState(NamedTuple):
    """What a checkpoint holds: everything the next epoch needs.

    Attributes:
      params: one ``{"W": (n_k, n_{k-1}), "b": (n_k,)}`` dict per layer.
      opt_state: the optax state of ``params``.
      epoch: epochs completed, an int32 scalar.
      key: the run's raw ``uint32[2]`` PRNG key: ``fold_in(key, 0)`` drew the initial
        params, ``fold_in(key, e)`` orders epoch ``e``.
    """

    params: Params
    opt_state: optax.OptState
    epoch: Any
    key: jax.Array


class NonFiniteError(RuntimeError):
    """The loss or the parameters became NaN or inf; nothing after the last good state is kept."""


class RunInterruptedError(Exception):
    """SIGINT or SIGTERM stopped the run at a clean point; ``summary`` was written."""

    def __init__(self, signum: int, summary: dict[str, Any]):
        self.signum, self.summary = signum, summary
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after epoch {summary['epochs']}"
        )


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
        targets (see `jaxbp.config.resolve_head`).
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
    return train.make_schedule(
        config.learning_rate,
        config.schedule,
        total_steps=config.epochs * steps_per_epoch,
        warmup_steps=config.warmup_epochs * steps_per_epoch,
    )


def build_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """The config's optax optimizer with `build_schedule`'s learning rate."""
    return train.make_optimizer(
        config.optimizer,
        build_schedule(config, steps_per_epoch),
        momentum=config.momentum,
        weight_decay=config.weight_decay,
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
    """One member's optimizer from its swept scalars (`jaxbp.members.make_optimizer`).

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

    @jax.jit  # one program, not one compilation per initializer op
    def draw(keys, hparams):
        params = members.init_member_params(keys, model, jnp.dtype(config.precision))
        init = members.over_members(lambda p, hp: optimizer_of(hp).init(p), len(grid), (0, 0))
        return params, init(params, hparams)

    params, opt_state = draw(keys, member_hparams(config))
    return TrainState(params, opt_state, np.asarray(0, np.int32), keys)


def network_meta(config: Config, model: MLP, loss: str) -> dict[str, Any]:
    """The JSON description a checkpoint of this run must match (``members`` for a set)."""
    num_members = len(config_lib.member_grid(config))
    extra = {"members": num_members} if num_members > 1 else {}
    return {
        **extra,
        "sizes": list(model.sizes),
        "activation": model.activation,
        "output_activation": model.output_activation,
        "use_bias": model.use_bias,
        "loss": loss,
        "optimizer": config.optimizer,
        "precision": config.precision,
    }


def load_data(config: Config) -> data_lib.Dataset:
    """The config's data set, split by ``data_seed``, in the config's precision."""
    return data_lib.load_dataset(
        config.dataset,
        seed=config.data_seed,
        data_dir=config.data_dir,
        path=config.data_path,
        target_column=config.target_column,
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


def train_and_evaluate(
    config: Config,
    workdir: str,
    *,
    allow_changes: Sequence[str] = (),
    log: Log = print,
) -> dict[str, Any]:
    """Trains, evaluates, logs and checkpoints one run (see the module docstring).

    Args:
      config: the run's settings.
      workdir: its folder; one holding the same run resumes it.
      allow_changes: ``"override"`` fields that may differ from the stored run's.
      log: where progress lines go (only process 0 logs).

    Returns:
      The summary written to ``summary.json``.

    Raises:
      ConfigError, ResumeConflictError, WorkdirError: before any training.
      NonFiniteError: when the loss or parameters stop being finite.
      RunInterruptedError: after a clean stop on SIGINT or SIGTERM.
    """
    config_lib.validate(config)
    workdir_lib.check_layout(workdir)
    primary = parallel.is_primary()
    log = log if primary else (lambda _: None)

    def check_stored() -> dict[str, Any] | None:
        stored = workdir_lib.read_run_record(workdir)
        if stored is not None:
            workdir_lib.check_resume(workdir_lib.config_from_record(stored), config, allow_changes)
        return stored

    check_stored()  # before the data load, so a mismatch costs nothing
    with jax.enable_x64(config.precision == "float64"):
        run = _Run(config, workdir, log)  # data and network: their errors come before any write
        os.makedirs(workdir, exist_ok=True)
        with workdir_lib.locked(workdir) if primary else contextlib.nullcontext():
            return run.train(check_stored())


class _Run:
    """One call of `train_and_evaluate`, split into steps that each do one thing."""

    def __init__(self, config: Config, workdir: str, log: Log):
        self.config, self.workdir, self.log = config, workdir, log
        self.stored: dict[str, Any] | None = None
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.mesh = parallel.make_mesh(config.num_devices)
        if config.batch_size % self.mesh.size:
            raise ConfigError(
                "batch_size",
                config.batch_size,
                f"does not divide over {self.mesh.size} devices; use a multiple of "
                f"{self.mesh.size}.",
            )
        self.dataset = data = load_data(config)
        self.model = build_model(config, self.dataset)
        _, self.loss = config_lib.resolve_head(config, data.task, data.num_outputs)
        for split in ("train", "val", "test"):  # before any work: targets the loss can fit
            try:
                losses.check_targets(self.loss, getattr(data, f"y_{split}"))
            except ValueError as e:
                raise ConfigError("loss", self.loss, f"{split} targets: {e}") from None
        try:
            self.steps_per_epoch = train.batches_per_epoch(len(data.x_train), config.batch_size)
        except ValueError as e:
            raise ConfigError("batch_size", config.batch_size, str(e)) from None
        self.optimizer = build_optimizer(config, self.steps_per_epoch)
        self.optimizer_of = member_optimizer(config, self.steps_per_epoch)
        self.schedule = build_schedule(config, self.steps_per_epoch)
        # Swept peak rates scale this shared shape (`jaxbp.members.make_optimizer`).
        self.unit_schedule = build_schedule(
            dataclasses.replace(config, learning_rate=1.0), self.steps_per_epoch
        )
        self.members = config_lib.member_grid(config)
        self.num_members = len(self.members)
        self.hparams = member_hparams(config)
        self.meta = {
            "network": network_meta(config, self.model, self.loss),
            "preprocessing": Preprocessing.of(self.dataset)._asdict(),
        }
        self.primary = parallel.is_primary()

    # -- setup -----------------------------------------------------------------------------

    def _checkpointers(self):
        from jaxbp.checkpoint import Checkpointer

        latest = Checkpointer(os.path.join(self.workdir, "checkpoints"))
        best = Checkpointer(os.path.join(self.workdir, "best"), max_to_keep=1)
        return latest, best

    def _check_meta(self, meta: dict[str, Any]) -> None:
        from jaxbp.checkpoint import check_same_network

        check_same_network(meta.get("network", {}), self.meta["network"], self.workdir)

    def _to_disk(self, tree: Any) -> Any:
        """A stacked tree as the checkpoint holds it: a single run without the member axis."""
        return members.take(tree, 0) if self.num_members == 1 else tree

    def _from_disk(self, tree: Any) -> Any:
        return members.stack([tree]) if self.num_members == 1 else tree

    def _restore(self, latest, best) -> tuple[TrainState, _Progress]:
        """The stacked state to start from and the members' progress (best so far, diverged)."""
        state = initial_member_state(self.config, self.model, self.optimizer_of)
        progress = _Progress.new(self.num_members)
        like = TrainState(
            self._to_disk(state.params),
            self._to_disk(state.opt_state),
            state.epoch,
            self._to_disk(state.key),
        )
        found = latest.restore_newest_readable(like, self._check_meta, self.log)
        if found is None:
            return state, progress
        epoch, stored, meta = found
        state = TrainState(
            self._from_disk(stored.params),
            self._from_disk(stored.opt_state),
            stored.epoch,
            self._from_disk(stored.key),
        )
        if self.config.epochs < epoch:
            raise ConfigError(
                "epochs",
                self.config.epochs,
                f"is below the {epoch} epochs the workdir's checkpoint has done; give "
                f"epochs >= {epoch}, or a new workdir.",
            )
        self.log(f"resuming from the checkpoint of epoch {epoch} in {self.workdir}")
        if "diverged" in meta:
            progress.diverged_at[:] = meta["diverged"]
        best_found = best.restore_newest_readable(
            {"params": self._to_disk(state.params)}, self._check_meta, self.log
        )
        # The best is saved just before the state, so one newer than the state cannot be
        # the run's own: it is redone.
        if best_found is not None and best_found[0] <= epoch:
            record = best_found[2]["best"]
            bests = record.get("members", [record])
            progress.best_epoch[:] = [b["epoch"] for b in bests]
            progress.best_val[:] = [
                math.inf if b["epoch"] is None else b["val_loss"] for b in bests
            ]
            progress.best_params = self._from_disk(best_found[1]["params"])
            progress.saved_best = best_found[0]
        return state, progress

    def _record_start(self, start_epoch: int) -> None:
        changes = {}
        if self.stored is not None:
            old = workdir_lib.config_from_record(self.stored)
            changes = workdir_lib.config_changes(old, self.config)
        starts = [] if self.stored is None else list(self.stored["starts"])
        starts.append(
            {
                "time": self.started_at,
                "from_epoch": start_epoch,
                "changes": {k: [a, b] for k, (a, b) in changes.items()},
            }
        )
        record = {"config": dataclasses.asdict(self.config), "starts": starts}
        workdir_lib.write_atomic(
            os.path.join(self.workdir, workdir_lib.RUN_RECORD), json.dumps(record, indent=2)
        )
        if "epochs" in changes and self.config.schedule != "constant":
            old_epochs, new_epochs = changes["epochs"]
            step = start_epoch * self.steps_per_epoch
            old_schedule = build_schedule(
                dataclasses.replace(self.config, epochs=old_epochs), self.steps_per_epoch
            )
            self.log(
                f"epochs {old_epochs} -> {new_epochs}: the {self.config.schedule} schedule now "
                f"spans {new_epochs} epochs; the learning rate at epoch {start_epoch + 1} is "
                f"{float(self.schedule(step)):.3g} instead of {float(old_schedule(step)):.3g}."
            )
        for name in sorted(set(changes) - {"epochs"}):
            self.log(f"changed on resume: {name} {changes[name][0]} -> {changes[name][1]}")

    # -- compiled functions ----------------------------------------------------------------

    def _compile(self, state: TrainState) -> float:
        """Compiles the epoch and the evaluations for ``state``'s placement; their seconds."""
        config, model, loss_name = self.config, self.model, self.loss
        optimizer_of, num = self.optimizer_of, self.num_members

        def make_step(hparams: members.Hyperparams) -> train.StepFn:
            clip = hparams.get("clip_per_example", config.clip_per_example)
            grad_fn = None
            if clip is not None:  # the δ rows are clipped: hand-written only

                def grad_fn(params, x, y):
                    return per_example.clipped_loss_and_grad(model, loss_name, params, x, y, clip)

            return train.make_train_step(
                model,
                loss_name,
                optimizer_of(hparams),
                backward=config.backward,
                grad_fn=grad_fn,
                grad_norm=False,  # the evaluation records ‖∇L‖ on the whole training split
            )

        epoch_fn = members.make_epoch(
            make_step,
            config.batch_size,
            num,
            num_examples=len(self.dataset.x_train),
            shard_batch=parallel.shard_batch(self.mesh),
        )

        def checked_epoch(params, opt_state, hparams, x, y, keys, epoch, active):
            """The epoch of every member; a member that is not finite keeps its old state."""
            new_params, new_opt_state, metrics = epoch_fn(
                params, opt_state, hparams, x, y, keys, epoch
            )
            losses = metrics["loss"]  # (M, steps)
            finite = jnp.all(jnp.isfinite(losses), axis=1)
            for leaf in jax.tree.leaves(new_params):
                finite &= jnp.all(jnp.isfinite(leaf.reshape(num, -1)), axis=1)
            keep = active & finite

            def select(new, old):
                return jnp.where(keep.reshape((num,) + (1,) * (new.ndim - 1)), new, old)

            new_params = jax.tree.map(select, new_params, params)
            new_opt_state = jax.tree.map(select, new_opt_state, opt_state)
            return new_params, new_opt_state, losses, finite

        task = self.dataset.task
        loss_and_grad = train.make_loss_and_grad(model, loss_name, "custom")

        flow_rows = min(len(self.dataset.x_train), FLOW_ROWS)

        def evaluate(params, x, y, with_grad_norm):
            def one(params, x, y):
                metrics = train.evaluate(model, loss_name, params, x, y, task)
                if with_grad_norm:  # the training split: ‖∇L‖ and the gradient flow
                    metrics["grad_norm"] = optax.tree.norm(loss_and_grad(params, x, y)[1])
                    if flow_rows >= 2:
                        flow = gradient_flow(model, loss_name, params, x[:flow_rows], y[:flow_rows])
                        metrics.update({f"flow/{k}": v for k, v in flow.items()})
                return metrics

            return members.over_members(one, num, (0, None, None))(params, x, y)

        self.epoch_jit = jax.jit(checked_epoch, donate_argnums=(0, 1))
        self.evaluate_jit = jax.jit(evaluate, static_argnums=3)
        self.select_best = jax.jit(
            lambda improved, params, best: jax.tree.map(
                lambda p, b: jnp.where(improved.reshape((num,) + (1,) * (p.ndim - 1)), p, b),
                params,
                best,
            )
        )
        data = self.dataset
        self.splits = {
            name: parallel.replicate(
                (getattr(data, f"x_{name}"), getattr(data, f"y_{name}")), self.mesh
            )
            for name in ("train", "val", "test")
        }
        self.x_train, self.y_train = parallel.put_training_data(
            (data.x_train, data.y_train), self.mesh
        )
        self.hparams_device = parallel.replicate(self.hparams, self.mesh)
        started = time.perf_counter()
        epoch_args = (
            state.params,
            state.opt_state,
            self.hparams_device,
            self.x_train,
            self.y_train,
            state.key,
            jnp.asarray(1, jnp.int32),
            parallel.replicate(np.ones(num, bool), self.mesh),
        )
        self.epoch_compiled = self.epoch_jit.lower(*epoch_args).compile()
        for name in ("train", "val", "test"):
            self.evaluate_jit(state.params, *self.splits[name], name == "train")
        self.select_best(jnp.ones(num, bool), state.params, state.params)
        return time.perf_counter() - started

    def _evaluate(self, params: Params, split: str) -> dict[str, np.ndarray]:
        """Every member's metrics on a split, ``{name: (M,)}``."""
        metrics = self.evaluate_jit(params, *self.splits[split], split == "train")
        return {k: np.asarray(parallel.to_host(v), np.float64) for k, v in metrics.items()}

    def _rates(self, step: int) -> np.ndarray:
        """Every member's learning rate at ``step``, ``(M,)``."""
        if "learning_rate" not in self.hparams:
            return np.full(self.num_members, float(self.schedule(step)))
        return self.hparams["learning_rate"].astype(np.float64) * float(self.unit_schedule(step))

    # -- the loop --------------------------------------------------------------------------

    def train(self, stored: dict[str, Any] | None) -> dict[str, Any]:
        config, log, num = self.config, self.log, self.num_members
        self.stored = stored
        latest, best = self._checkpointers()
        state, progress = self._restore(latest, best)
        start_epoch = int(state.epoch)
        best.delete_after(start_epoch)  # a best newer than the state is redone, not kept
        log(describe_run(config, self.model, self.loss, self.dataset.task))
        writer = None
        if self.primary:
            self._record_start(start_epoch)
            writer = run_outputs.RunOutputs(self.workdir, self.dataset.task, num)
            writer.truncate_after(start_epoch)
        params, opt_state, key = parallel.replicate(
            (state.params, state.opt_state, state.key), self.mesh
        )
        compile_seconds = self._compile(state._replace(params=params, opt_state=opt_state, key=key))
        if progress.best_params is not None:
            progress.best_params = parallel.replicate(progress.best_params, self.mesh)
        status, epoch, train_seconds = "completed", start_epoch, 0.0
        with _stop_signals() as stop:
            for epoch in range(start_epoch + 1, config.epochs + 1):
                t0 = time.perf_counter()
                active = progress.active()
                new_params, new_opt_state, step_losses, finite = self.epoch_compiled(
                    params,
                    opt_state,
                    self.hparams_device,
                    self.x_train,
                    self.y_train,
                    key,
                    jnp.asarray(epoch, jnp.int32),
                    parallel.replicate(active, self.mesh),
                )
                step_losses = parallel.to_host(step_losses)  # the one host sync of the epoch
                seconds = time.perf_counter() - t0
                train_seconds += seconds
                finite = np.asarray(parallel.to_host(finite))
                if num == 1:
                    self._check_finite(step_losses[0], bool(finite[0]), epoch, latest)
                else:
                    self._mark_diverged(progress, active & ~finite, step_losses, epoch)
                params, opt_state = new_params, new_opt_state
                evaluated = epoch % config.eval_interval == 0 or epoch == config.epochs
                if evaluated:
                    records = self._records(params, epoch, step_losses, seconds, progress)
                    if writer:
                        for record in records:
                            writer.write(record)
                    eta = (config.epochs - epoch) * seconds
                    log(_progress_line(records, config.epochs, eta, progress.active()))
                    val_loss = np.asarray([r["val_loss"] for r in records])
                    improved = progress.active() & (val_loss < progress.best_val)
                    if improved.any():
                        self._keep_best(progress, improved, params, val_loss, epoch)
                patience = config.early_stopping_patience
                early = bool(patience and evaluated and progress.patience_out(epoch, patience))
                stopping = early or stop.signum is not None
                if epoch % config.checkpoint_interval == 0 or epoch == config.epochs or stopping:
                    self._save_best(best, progress)
                    meta: dict[str, Any] = dict(self.meta)
                    if num > 1:
                        meta["diverged"] = list(progress.diverged_at)
                    latest.save(
                        epoch,
                        TrainState(
                            self._to_disk(params),
                            self._to_disk(opt_state),
                            np.asarray(epoch, np.int32),
                            self._to_disk(key),
                        ),
                        meta,
                    )
                if early:
                    status = "early_stopped"
                    since = progress.best_epoch[0] if num == 1 else "each member's best"
                    log(f"early stop: no better val loss for {patience} epochs since {since}")
                    break
                if stop.signum is not None:
                    status = "interrupted"
                    break
        latest.close()
        summary = self._summary(params, progress, epoch, status, train_seconds)
        summary["compile_seconds"] = compile_seconds
        best.close()
        if writer:
            writer.finish(summary, _hparams(config))
        if status == "interrupted":
            assert stop.signum is not None
            raise RunInterruptedError(stop.signum, summary)
        return summary

    def _keep_best(self, progress, improved, params, val_loss, epoch: int) -> None:
        """Keeps the improved members' params as their best, in memory (a copy: the epoch
        donates its inputs); they are written only with a checkpoint (`_save_best`), so a
        run is not paced by a save per improvement."""
        for k in np.flatnonzero(improved):
            progress.best_epoch[k], progress.best_val[k] = epoch, float(val_loss[k])
        if progress.best_params is None:
            progress.best_params = params
        progress.best_params = self.select_best(jnp.asarray(improved), params, progress.best_params)

    def _save_best(self, best, progress) -> None:
        """Writes the best params to best/ when they changed since the last write.

        The checkpoint is numbered by the newest improvement, so it is never newer than the
        state saved right after it.
        """
        newest = max((e for e in progress.best_epoch if e is not None), default=None)
        if newest is None or newest == progress.saved_best:
            return
        if self.num_members == 1:
            record: dict[str, Any] = {"epoch": newest, "val_loss": float(progress.best_val[0])}
        else:
            record = {
                "epoch": newest,
                "members": [
                    {"epoch": e, "val_loss": None if e is None else float(v)}
                    for e, v in zip(progress.best_epoch, progress.best_val, strict=True)
                ],
            }
        meta: dict[str, Any] = {**self.meta, "best": record}
        if self.num_members > 1:
            meta["diverged"] = list(progress.diverged_at)
        best.save(newest, {"params": self._to_disk(progress.best_params)}, meta)
        progress.saved_best = newest

    def _mark_diverged(self, progress, newly: np.ndarray, step_losses: np.ndarray, epoch: int):
        """Freezes the members whose loss or params stopped being finite this epoch."""
        for k in np.flatnonzero(newly):
            progress.diverged_at[k] = epoch
            bad = np.flatnonzero(~np.isfinite(step_losses[k]))
            what = f"loss {step_losses[k][bad[0]]}" if bad.size else "non-finite params"
            self.log(
                f"member {k} ({_member_label(self.members[k])}) diverged in epoch {epoch} "
                f"({what}); it keeps its params of epoch {epoch - 1} and is left out of the "
                "means."
            )
        if not progress.active().any():
            raise NonFiniteError(
                f"every member diverged by epoch {epoch}; the last good checkpoint is kept in "
                f"{self.workdir}. Lower learning_rate or check the data."
            )

    def _check_finite(self, step_losses: np.ndarray, params_finite: bool, epoch: int, latest):
        bad = np.flatnonzero(~np.isfinite(step_losses))
        if not bad.size and params_finite:
            return
        kept = latest.latest_epoch()
        kept_text = (
            f"the last good checkpoint (epoch {kept}) is kept"
            if kept is not None
            else "no checkpoint had been written"
        )
        if bad.size:
            step = (epoch - 1) * self.steps_per_epoch + int(bad[0]) + 1
            what = f"the loss became {step_losses[bad[0]]} at step {step} (epoch {epoch})"
        else:
            what = f"the parameters became non-finite in the last step of epoch {epoch}"
        raise NonFiniteError(
            f"{what}; {kept_text} in {self.workdir}. Lower learning_rate or check the data."
        )

    def _records(
        self, params: Params, epoch: int, step_losses: np.ndarray, seconds: float, progress
    ) -> list[dict[str, Any]]:
        """One metrics record per member (with ``member`` for a set of several).

        A diverged member's record holds its frozen params' metrics and no ``epoch_loss``
        (null: its epoch was thrown away).
        """
        active = progress.active()
        evaluated = {split: self._evaluate(params, split) for split in ("train", "val")}
        rates = self._rates(epoch * self.steps_per_epoch)
        records = []
        for k in range(self.num_members):
            record: dict[str, Any] = {"member": k} if self.num_members > 1 else {}
            record.update(
                {
                    "epoch": epoch,
                    "step": epoch * self.steps_per_epoch,
                    "epoch_loss": float(step_losses[k].mean()) if active[k] else None,
                }
            )
            for split, metrics in evaluated.items():
                record.update({f"{split}_{name}": float(v[k]) for name, v in metrics.items()})
            record["learning_rate"] = float(rates[k])
            record["steps_per_second"] = self.steps_per_epoch / seconds
            records.append(record)
        return records

    def _summary(self, params, progress, epoch, status, train_seconds) -> dict[str, Any]:
        last = self._evaluate(params, "test")
        has_best = np.asarray([e is not None for e in progress.best_epoch])
        best_params = params
        if progress.best_params is not None:
            best_params = self.select_best(jnp.asarray(has_best), progress.best_params, params)
        test = self._evaluate(best_params, "test")
        val = self._evaluate(best_params, "val")
        train_metrics = self._evaluate(best_params, "train")
        kept = progress.active()
        # No evaluation yet: the params now are the ones reported (a diverged member's are
        # those of the epoch before it diverged).
        best_epochs = [
            e if e is not None else (epoch if live else None)
            for e, live in zip(progress.best_epoch, kept, strict=True)
        ]

        def mean(values: np.ndarray) -> float:
            return float(np.mean(values[kept]))

        summary: dict[str, Any] = {
            "status": status,
            **{f"test_{k}": mean(v) for k, v in test.items()},
            **{f"val_{k}": mean(v) for k, v in val.items() if k != "grad_norm"},
            "train_loss": mean(train_metrics["loss"]),
            "best_epoch": best_epochs[0],
            **{f"last_epoch_test_{k}": mean(v) for k, v in last.items()},
        }
        if self.num_members > 1:
            del summary["best_epoch"]  # each member has its own
            for name, values in test.items():
                summary[f"test_{name}_mean"] = mean(values)
                summary[f"test_{name}_std"] = float(np.std(values[kept]))
            summary["num_members"] = self.num_members
            summary["num_diverged"] = int((~kept).sum())
            summary["members"] = [
                {
                    "member": m.index,
                    "seed": m.seed,
                    **m.values,
                    **{f"test_{k}": float(v[m.index]) for k, v in test.items()},
                    **{f"val_{k}": float(v[m.index]) for k, v in val.items()},
                    "best_epoch": best_epochs[m.index],
                    "diverged_at_epoch": progress.diverged_at[m.index],
                }
                for m in self.members
            ]
        summary.update(
            {
                "epochs": epoch,
                "steps": epoch * self.steps_per_epoch,
                "seconds": train_seconds,
                "task": self.dataset.task,
                "sizes": list(self.model.sizes),
                "output_activation": self.model.output_activation,
                "loss": self.loss,
                "backward": self.config.backward,
                "num_devices": self.mesh.size,
                "num_processes": jax.process_count(),
                "config": dataclasses.asdict(self.config),
                **environment(),
                "started_at": self.started_at,
            }
        )
        if status == "interrupted":
            summary["resume_command"] = f"./launch.sh train --workdir={self.workdir}"
        return summary


@dataclasses.dataclass
class _Progress:
    """Where each member stands: best val loss and epoch so far, the epoch it diverged in.

    ``best_params`` holds each member's best params (stacked), None before any evaluation.
    """

    best_epoch: list[int | None]
    best_val: np.ndarray
    diverged_at: list[int | None]
    best_params: Params | None = None
    saved_best: int | None = None  # the epoch of the best params last written to best/

    @classmethod
    def new(cls, num_members: int) -> _Progress:
        return cls([None] * num_members, np.full(num_members, math.inf), [None] * num_members)

    def active(self) -> np.ndarray:
        """``(M,)`` True for the members still training (not diverged)."""
        return np.asarray([e is None for e in self.diverged_at])

    def patience_out(self, epoch: int, patience: int) -> bool:
        """Whether every training member has gone ``patience`` epochs without a better val."""
        return all(
            best is not None and epoch - best >= patience
            for best, live in zip(self.best_epoch, self.active(), strict=True)
            if live
        )


def _member_label(member: config_lib.Member) -> str:
    values = ", ".join(f"{k}={v:g}" for k, v in member.values.items())
    return f"seed {member.seed}" + (f", {values}" if values else "")


def environment() -> dict[str, Any]:
    """Versions, platform, device kind, CPU count and git commit, for the summary."""
    import importlib.metadata

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True,
            text=True,
            timeout=5,
        )
        if result.returncode == 0 and result.stdout.strip():
            commit = result.stdout.strip()
    return {
        "versions": {n: version(n) for n in ("jaxbp", "jax", "jaxlib", "optax", "numpy")},
        "python": platform.python_version(),
        "platform": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "git_commit": commit,
    }


def _hparams(config: Config) -> dict[str, Any]:
    """The config as TensorBoard hparams (scalars and strings only)."""
    out = {}
    for k, v in dataclasses.asdict(config).items():
        if isinstance(v, (tuple, list)):
            v = config_lib.format_value(tuple(v))
        out[k] = "" if v is None else v
    return out


class _StopRequest:
    signum: int | None = None


@contextlib.contextmanager
def _stop_signals() -> Iterator[_StopRequest]:
    """SIGINT and SIGTERM ask the loop to stop after the epoch; a second one stops now."""
    request = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        if request.signum is not None:
            raise KeyboardInterrupt
        request.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _progress_line(
    records: list[dict[str, float]], epochs: int, eta: float, active: np.ndarray
) -> str:
    """One member's progress, or the mean (± std) over the members still training."""
    quality = "accuracy" if "val_accuracy" in records[0] else "r2"
    fmt = (lambda v: f"{100 * v:.2f}%") if quality == "accuracy" else (lambda v: f"{v:.4f}")
    live = [r for r, a in zip(records, active, strict=True) if a]

    def value(name: str) -> str:
        values = np.asarray([r[name] for r in live], np.float64)
        text = fmt(values.mean()) if name != "epoch_loss" else f"{values.mean():.4f}"
        if len(records) > 1:
            spread = fmt(values.std()) if name != "epoch_loss" else f"{values.std():.4f}"
            text += f" ± {spread}"
        return text

    members_text = ""
    if len(records) > 1:
        diverged = len(records) - len(live)
        members_text = f"  {len(records)} members" + (
            f" ({diverged} diverged, left out)" if diverged else ""
        )
    record = records[0]
    return (
        f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}  "
        f"loss {value('epoch_loss')}  "
        f"train {quality} {value(f'train_{quality}')}  "
        f"val {quality} {value(f'val_{quality}')}{members_text}  "
        f"{record['steps_per_second']:,.0f} steps/s  ETA {math.ceil(eta)}s"
    )


def restore_trained(workdir: str) -> tuple[Config, MLP, Params, dict[str, Any]]:
    """The config, network, best parameters and checkpoint meta of a trained workdir.

    Reads the run record and the newest best-validation checkpoint (the newest train
    state's params when no evaluation was made). Loads no data and writes nothing. A
    damaged checkpoint is an error here, not skipped: the params asked for are those the
    summary describes.

    Raises:
      FileNotFoundError: when the workdir holds no run or no checkpoint.
      Exception: what orbax raises for a checkpoint that cannot be read.
    """
    from jaxbp.checkpoint import Checkpointer

    record = workdir_lib.read_run_record(workdir)
    if record is None:
        raise FileNotFoundError(
            f"{workdir} holds no run ({workdir_lib.RUN_RECORD} is missing); give the workdir "
            "of a training run."
        )
    config = workdir_lib.config_from_record(record)
    for folder, is_state in (("best", False), ("checkpoints", True)):
        path = os.path.join(workdir, folder)
        if not os.path.isdir(path):
            continue
        checkpointer = Checkpointer(path)
        try:
            epochs = checkpointer.epochs()
            if not epochs:
                continue
            with jax.enable_x64(config.precision == "float64"):
                model, params, meta = _read_params(checkpointer, epochs[-1], config, is_state)
            return config, model, params, meta
        finally:
            checkpointer.close()
    raise FileNotFoundError(f"{workdir} holds no checkpoint; train it first.")


def _read_params(checkpointer, epoch: int, config: Config, is_state: bool):
    """``(model, params, meta)`` of one checkpoint, its template built from its meta."""
    meta = checkpointer.read_meta(epoch)
    network = meta["network"]
    model = MLP(
        tuple(network["sizes"]),
        network["activation"],
        network["output_activation"],
        network["use_bias"],
    )
    like_params = init_params(jax.random.PRNGKey(0), model, dtype=jnp.dtype(config.precision))
    num_members = network.get("members", 1)
    if num_members > 1:  # a member set's checkpoint holds the stacked state
        like_params = members.stack([like_params] * num_members)
    if is_state and num_members > 1:
        like = initial_member_state(config, model, member_optimizer(config, 1))
        params = checkpointer.restore(epoch, like).params
    elif is_state:
        like = initial_state(config, model, build_optimizer(config, 1))._replace(params=like_params)
        params = checkpointer.restore(epoch, like).params
    else:
        params = checkpointer.restore(epoch, {"params": like_params})["params"]
    return model, params, meta
