"""A training run a researcher can leave running and believe: `train_and_evaluate`.

``train_and_evaluate(config, workdir)`` validates the config, takes the workdir's lock,
loads the data, builds the network the task asks for, trains it with compiled epochs
(`jaxbp.training`), and leaves in the workdir what `jaxbp.run.workdir` lists: the run record,
metrics, TensorBoard events, curves, the latest and the best-validation checkpoints, and
``summary.json``. Its guarantees:

* **Nothing is mixed.** A workdir that holds a run resumes it only with the same data,
  network and seeds (`jaxbp.run.workdir.check_resume`); a resumed run ends bit-identical to an
  uninterrupted one, after a Ctrl-C or a kill at any point.
* **Nothing bad is saved.** The loss and the parameters are checked finite after every
  epoch, before any checkpoint; a damaged checkpoint is set aside and the one before it
  used.
* **A stop is clean.** SIGINT and SIGTERM end the run after the current epoch with a
  checkpoint, curves and a summary marked ``interrupted``; `RunInterruptedError` carries the
  signal (`jaxbp.run.stop`).

A config with ``repeats`` or ``sweep`` trains a *member set* (`jaxbp.training.members`): every
combination of the swept values and the repeat seeds (`jaxbp.run.config.member_grid`), one
compiled epoch for all of them, one stacked state in each checkpoint (a single run's
checkpoint keeps its unstacked layout). Each member keeps its own best-validation params
and early-stops only when all of them have run out of patience. **A diverging member is
frozen:** when its loss or params stop being finite in an epoch, that epoch is thrown away
for it alone, it keeps the params of the epoch before (finite, so every checkpoint stays
loadable), is marked ``diverged_at_epoch`` in ``summary.json`` and left out of the means,
the std, the sweep table's figures and the ensemble; the others train on unaffected. Only
when every member has diverged does the run stop with `NonFiniteError` (a single run: at
its first NaN).

A DP-SGD run (`jaxbp.run.privacy_plan`) trains with Poisson-sampled private epochs
(`jaxbp.dp_sgd`), records the ε spent at every evaluation and in ``summary.json``, and reports
nothing computed on training rows outside the private step (its records are the validation
split's).

The loop is `_train`, one screen: restore, then per epoch one compiled program
(`jaxbp.run.programs.train_epoch`), evaluate (`jaxbp.run.programs.member_metrics`), keep
the best, checkpoint (`jaxbp.run.checkpoints`), stop. What a run is built from is
`jaxbp.run.recipe`'s, where each member stands is `jaxbp.run.progress`'s, what it reports is
`jaxbp.run.summary`'s and the files it leaves are `jaxbp.run.outputs`'s;
`jaxbp.run.restore.restore_trained` reads a trained run back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from jaxbp import losses, training
from jaxbp.data import split_record
from jaxbp.run import config as config_lib
from jaxbp.run import config_checks, outputs, privacy_plan, programs, summary
from jaxbp.run import workdir as workdir_lib
from jaxbp.run.checkpoints import RunCheckpoints
from jaxbp.run.config import Config, ConfigError
from jaxbp.run.progress import Progress, progress_line
from jaxbp.run.recipe import (
    Preprocessing,
    build_model,
    build_schedule,
    describe_run,
    initial_member_state,
    load_data,
    member_hparams,
    member_optimizer,
    network_meta,
)
from jaxbp.run.stop import RunInterruptedError, stop_signals
from jaxbp.training import parallel

Log = Callable[[str], None]
PHASES = ("data", "setup", "compile", "training", "evaluation", "checkpoints", "outputs")


class NonFiniteError(RuntimeError):
    """The loss or the parameters became NaN or inf; nothing after the last good state is kept."""


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
    config_checks.validate(config)
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
            run.stored = check_stored()
            return _train(run)


def _train(run: _Run) -> dict[str, Any]:
    """The loop: restore, then per epoch train, evaluate, keep the best, checkpoint, stop."""
    config, log, phase = run.config, run.log, run.phase
    with phase("setup"):
        checkpoints = RunCheckpoints(run.workdir, run.meta, run.num_members, log)
        initial = initial_member_state(config, run.model, run.optimizer_of)
    with phase("checkpoints"):
        state, progress = checkpoints.restore(initial, config.epochs)
    start = int(state.epoch)
    checkpoints.best.delete_after(start)  # a best newer than the state is redone, not kept
    log(describe_run(config, run.model, run.loss, run.dataset.task))
    writer = run.open_outputs(start)
    params, opt_state, key = parallel.place_members(
        (state.params, state.opt_state, state.key), run.mesh
    )
    placed = state._replace(params=params, opt_state=opt_state, key=key)
    compiled = programs.compile_programs(run.spec, run.dataset, run.hparams, placed)
    if progress.best_params is not None:
        progress.best_params = parallel.place_members(progress.best_params, run.mesh)
    status, epoch, train_seconds = "completed", start, 0.0
    saved_at = time.monotonic()  # an interval checkpoint waits checkpoint_seconds after this
    with stop_signals() as stop:
        for epoch in range(start + 1, config.epochs + 1):
            t0 = time.perf_counter()
            active = progress.active()
            params, opt_state, step_losses, finite = programs.run_epoch(
                compiled, params, opt_state, key, epoch, active
            )
            step_losses = parallel.to_host(step_losses)  # the one host sync of the epoch
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            run.check_finite(
                progress, active, step_losses, parallel.to_host(finite), epoch, checkpoints
            )
            evaluated = epoch % config.eval_interval == 0 or epoch == config.epochs
            if evaluated:
                run.evaluate(compiled, params, epoch, step_losses, seconds, progress, writer)
            patience = config.early_stopping_patience
            early = bool(patience and evaluated and progress.patience_out(epoch, patience))
            stopping = early or stop.signum is not None
            due = time.monotonic() - saved_at >= config.checkpoint_seconds
            interval = epoch % config.checkpoint_interval == 0 and due
            if interval or epoch == config.epochs or stopping:
                with phase("checkpoints"):
                    checkpoints.save(epoch, params, opt_state, key, progress)
                saved_at = time.monotonic()
            if early:
                status = "early_stopped"
                since = progress.best_epoch[0] if run.num_members == 1 else "each member's best"
                log(f"early stop: no better val loss for {patience} epochs since {since}")
                break
            if stop.signum is not None:
                status = "interrupted"
                break
    with phase("checkpoints"):
        checkpoints.latest.close()
    with phase("evaluation"):
        result = run.summarize(compiled, params, progress, epoch, status, train_seconds)
    with phase("checkpoints"):
        checkpoints.best.close()
    run.phase_seconds.update(compile=compiled.seconds, training=train_seconds)
    result["phase_seconds"] = run.phase_seconds  # finish() adds its own "outputs"
    if writer:
        writer.finish(result, outputs.tensorboard_hparams(config))
    if status == "interrupted":
        assert stop.signum is not None
        raise RunInterruptedError(stop.signum, result)
    return result


class _Run:
    """What one call of `train_and_evaluate` is built from, and the steps of its loop."""

    def __init__(self, config: Config, workdir: str, log: Log):
        self.config, self.workdir, self.log = config, workdir, log
        self.stored: dict[str, Any] | None = None
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        # Where the run's wall time goes, in summary.json (`phase_seconds`): the parts a
        # short run is made of besides its epochs.
        self.phase_seconds = dict.fromkeys(PHASES, 0.0)
        self.members = config_lib.member_grid(config)
        self.num_members = len(self.members)
        num_devices = config.num_devices or parallel.default_num_devices(self.num_members)
        self.mesh = parallel.make_mesh(num_devices, num_members=self.num_members)
        data_devices = parallel.data_devices(self.mesh)
        if config.batch_size % data_devices:
            raise ConfigError(
                "batch_size",
                config.batch_size,
                f"does not divide over {data_devices} devices; use a multiple of {data_devices}.",
            )
        with self.phase("data"):
            self.dataset = data = load_data(config)
        self.model = build_model(config, self.dataset)
        _, self.loss = config_lib.resolve_head(config, data.task, data.num_outputs)
        for split in programs.SPLITS:  # before any work: targets the loss can fit
            try:
                losses.check_targets(self.loss, getattr(data, f"y_{split}"))
            except ValueError as e:
                raise ConfigError("loss", self.loss, f"{split} targets: {e}") from None
        try:
            self.steps_per_epoch = training.batches_per_epoch(len(data.x_train), config.batch_size)
        except ValueError as e:
            raise ConfigError("batch_size", config.batch_size, str(e)) from None
        self.optimizer_of = member_optimizer(config, self.steps_per_epoch)
        self.hparams = member_hparams(config)
        self.privacy = privacy_plan.plan_privacy(config, len(data.x_train), data_devices)
        if self.privacy is not None:
            self.noise = privacy_plan.member_noise(self.privacy, self.members)
        self.rates = self._epoch_rates()
        self.spec = programs.Spec(
            config,
            self.model,
            self.loss,
            data.task,
            self.num_members,
            len(data.x_train),
            self.steps_per_epoch,
            self.mesh,
            self.privacy,
            y_scale=None if data.y_scale is None else tuple(map(float, data.y_scale)),
        )
        self.meta = {
            "network": network_meta(config, self.model, self.loss),
            "preprocessing": Preprocessing.of(self.dataset)._asdict(),
        }

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Adds the wall seconds of the ``with`` body to ``phase_seconds[name]``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phase_seconds[name] += time.perf_counter() - started

    def _epoch_rates(self) -> np.ndarray:
        """Every member's learning rate after each epoch, ``(epochs + 1, M)``, in one program
        (called op by op, a schedule would compile a handful of scalar programs)."""
        config = self.config
        ends = np.arange(config.epochs + 1) * self.steps_per_epoch
        if "learning_rate" not in self.hparams:
            schedule = build_schedule(config, self.steps_per_epoch)
            rates = np.asarray(jax.jit(jax.vmap(schedule))(ends), np.float64)
            return np.repeat(rates[:, None], self.num_members, axis=1)
        # Swept peak rates scale the shared unit schedule (`jaxbp.training.members`).
        unit = build_schedule(dataclasses.replace(config, learning_rate=1.0), self.steps_per_epoch)
        unit_rates = np.asarray(jax.jit(jax.vmap(unit))(ends), np.float64)
        return unit_rates[:, None] * self.hparams["learning_rate"].astype(np.float64)

    def open_outputs(self, start_epoch: int) -> outputs.RunOutputs | None:
        """Records this start in run.json and opens the outputs (process 0 only)."""
        if not parallel.is_primary():
            return None
        with self.phase("setup"):
            self._record_start(start_epoch)
            writer = outputs.RunOutputs(self.workdir, self.dataset.task, self.num_members)
            writer.truncate_after(start_epoch)
        return writer

    def _record_start(self, start_epoch: int) -> None:
        changes = workdir_lib.record_start(
            self.workdir, self.stored, self.config, self.started_at, start_epoch
        )
        if "epochs" in changes and self.config.schedule != "constant":
            old_epochs, new_epochs = changes["epochs"]
            step = start_epoch * self.steps_per_epoch
            old, new = (
                build_schedule(dataclasses.replace(self.config, epochs=e), self.steps_per_epoch)
                for e in (old_epochs, new_epochs)
            )
            self.log(
                f"epochs {old_epochs} -> {new_epochs}: the {self.config.schedule} schedule now "
                f"spans {new_epochs} epochs; the learning rate at epoch {start_epoch + 1} is "
                f"{float(new(step)):.3g} instead of {float(old(step)):.3g}."
            )
        for name in sorted(set(changes) - {"epochs"}):
            self.log(f"changed on resume: {name} {changes[name][0]} -> {changes[name][1]}")

    def check_finite(self, progress, active, step_losses, finite, epoch: int, checkpoints):
        """A single run stops at its first non-finite loss or params; in a set, the members
        whose loss or params stopped being finite this epoch are frozen, and the run stops
        only when every member has."""
        finite = np.asarray(finite)
        if self.num_members > 1:
            for line in progress.mark_diverged(active & ~finite, step_losses, epoch, self.members):
                self.log(line)
            if not progress.active().any():
                raise NonFiniteError(
                    f"every member diverged by epoch {epoch}; the last good checkpoint is kept "
                    f"in {self.workdir}. Lower learning_rate or check the data."
                )
            return
        bad = np.flatnonzero(~np.isfinite(step_losses[0]))
        if not bad.size and bool(finite[0]):
            return
        kept = checkpoints.latest.latest_epoch()
        kept_text = (
            f"the last good checkpoint (epoch {kept}) is kept"
            if kept is not None
            else "no checkpoint had been written"
        )
        if bad.size:
            step = (epoch - 1) * self.steps_per_epoch + int(bad[0]) + 1
            what = f"the loss became {step_losses[0][bad[0]]} at step {step} (epoch {epoch})"
        else:
            what = f"the parameters became non-finite in the last step of epoch {epoch}"
        raise NonFiniteError(
            f"{what}; {kept_text} in {self.workdir}. Lower learning_rate or check the data."
        )

    def evaluate(self, compiled, params, epoch, step_losses, seconds, progress: Progress, writer):
        """Every member's metrics after ``epoch``: logged, written, and the improved members'
        params kept as their best, in memory (a copy: the epoch donates its inputs); they are
        written only with a checkpoint, so a run is not paced by a save per improvement."""
        with self.phase("evaluation"):
            metrics = {
                split: programs.metrics_of(compiled, params, split)
                for split in programs.evaluated_splits(self.spec)
            }
            records = summary.epoch_records(
                metrics,
                epoch=epoch,
                steps_per_epoch=self.steps_per_epoch,
                # A DP-SGD run's step losses are its sampled rows' loss without noise: kept
                # out of the records, which stay private.
                step_losses=None if self.privacy else step_losses,
                rates=self.rates[epoch],
                seconds=seconds,
                active=progress.active(),
                epsilon=self.epsilons(epoch),
            )
        if writer:
            with self.phase("outputs"):
                writer.write(*records)
        eta = (self.config.epochs - epoch) * seconds
        self.log(progress_line(records, self.config.epochs, eta, progress.active()))
        val_loss = np.asarray([r["val_loss"] for r in records])
        improved = progress.improved(val_loss)
        if improved.any():
            progress.note_best(improved, val_loss, epoch)
            if progress.best_params is None:
                progress.best_params = params
            progress.best_params = programs.select_best(
                self.num_members, np.asarray(improved), params, progress.best_params
            )

    def accounts(self, epoch: int) -> list[Any] | None:
        """Each member's `jaxbp.privacy.PrivacyAccount` after ``epoch`` epochs (None: no DP)."""
        if self.privacy is None or epoch < 1:
            return None
        steps = epoch * self.steps_per_epoch
        return privacy_plan.member_accounts(self.privacy, self.noise, steps)

    def epsilons(self, epoch: int) -> np.ndarray | None:
        """Each member's ε after ``epoch`` epochs, ``(M,)`` (None: no DP)."""
        accounts = self.accounts(epoch)
        return None if accounts is None else np.asarray([a.epsilon for a in accounts])

    def summarize(self, compiled, params, progress, epoch, status, train_seconds) -> dict[str, Any]:
        """The run's summary: the best-validation params' metrics, and the run's facts."""
        last_test = programs.metrics_of(compiled, params, "test")
        best_params = params
        if progress.best_params is not None:
            has_best = np.asarray([e is not None for e in progress.best_epoch])
            best_params = programs.select_best(
                self.num_members, has_best, progress.best_params, params
            )
        best = {
            split: programs.metrics_of(compiled, best_params, split)
            for split in programs.reported_splits(self.spec)
        }
        facts = {
            "epochs": epoch,
            "steps": epoch * self.steps_per_epoch,
            "seconds": train_seconds,
            "task": self.dataset.task,
            "splits": split_record(
                self.dataset, self.config.val_fraction, self.config.test_fraction
            ),
            "sizes": list(self.model.sizes),
            "output_activation": self.model.output_activation,
            "loss": self.loss,
            "backward": self.config.backward,
            "num_devices": self.mesh.size,
            "mesh": dict(self.mesh.shape),
        }
        result = summary.run_summary(
            best=best,
            last_test=last_test,
            progress=progress,
            members=self.members,
            epoch=epoch,
            status=status,
            run_facts=facts,
            config=self.config,
            accounts=self.accounts(epoch),
        )
        result["started_at"] = self.started_at
        if status == "interrupted":
            result["resume_command"] = f"./launch.sh train --workdir={self.workdir}"
        result["compile_seconds"] = compiled.seconds
        return result
