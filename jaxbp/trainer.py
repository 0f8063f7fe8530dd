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
  checkpoint, curves and a summary marked ``interrupted``; `RunInterruptedError` carries the
  signal (`jaxbp.stop`).

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

What a run is built from is `jaxbp.recipe`'s, its compiled epoch and evaluations are
`jaxbp.compiled_run`'s, where each member stands is `jaxbp.member_progress`'s, and the files
it leaves are `jaxbp.run_outputs`'s; `jaxbp.trained.restore_trained` reads a trained run back.

Uses the ``experiments`` extra (orbax-checkpoint, tensorboardX, matplotlib, scikit-learn).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import config as config_lib
from jaxbp import config_checks, losses, parallel, run_outputs, train
from jaxbp import workdir as workdir_lib
from jaxbp.compiled_run import CompiledRun
from jaxbp.config import Config, ConfigError
from jaxbp.member_progress import progress_line
from jaxbp.mlp import Params
from jaxbp.recipe import (
    Preprocessing,
    build_model,
    build_optimizer,
    build_schedule,
    describe_run,
    initial_member_state,
    load_data,
    member_hparams,
    member_optimizer,
    network_meta,
)
from jaxbp.run_checkpoints import RunCheckpoints
from jaxbp.stop import RunInterruptedError, stop_signals

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
            return run.train(check_stored())


class _Run:
    """One call of `train_and_evaluate`, split into steps that each do one thing."""

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
        with self._phase("data"):
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
        self.hparams = member_hparams(config)
        # Both schedules at the end of every epoch, in one program (called op by op, each
        # schedule would compile a handful of scalar programs).
        ends = np.arange(config.epochs + 1) * self.steps_per_epoch
        rates = jax.jit(jax.vmap(lambda t: (self.schedule(t), self.unit_schedule(t))))(ends)
        self.epoch_rates, self.epoch_unit_rates = (np.asarray(r, np.float64) for r in rates)
        self.meta = {
            "network": network_meta(config, self.model, self.loss),
            "preprocessing": Preprocessing.of(self.dataset)._asdict(),
        }
        self.primary = parallel.is_primary()

    # -- setup -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """Adds the wall seconds of the ``with`` body to ``phase_seconds[name]``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phase_seconds[name] += time.perf_counter() - started

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

    def _rates(self, epoch: int) -> np.ndarray:
        """Every member's learning rate after ``epoch``, ``(M,)``."""
        if "learning_rate" not in self.hparams:
            return np.full(self.num_members, self.epoch_rates[epoch])
        return self.hparams["learning_rate"].astype(np.float64) * self.epoch_unit_rates[epoch]

    # -- the loop --------------------------------------------------------------------------

    def train(self, stored: dict[str, Any] | None) -> dict[str, Any]:
        config, log, num = self.config, self.log, self.num_members
        self.stored = stored
        with self._phase("setup"):
            checkpoints = RunCheckpoints(self.workdir, self.meta, num, log)
            initial = initial_member_state(config, self.model, self.optimizer_of)
        with self._phase("checkpoints"):
            state, progress = checkpoints.restore(initial, config.epochs)
        start_epoch = int(state.epoch)
        checkpoints.best.delete_after(
            start_epoch
        )  # a best newer than the state is redone, not kept
        log(describe_run(config, self.model, self.loss, self.dataset.task))
        writer = None
        with self._phase("setup"):
            if self.primary:
                self._record_start(start_epoch)
                writer = run_outputs.RunOutputs(self.workdir, self.dataset.task, num)
                writer.truncate_after(start_epoch)
            params, opt_state, key = parallel.place_members(
                (state.params, state.opt_state, state.key), self.mesh
            )
        compiled = self.compiled = CompiledRun(
            config,
            self.model,
            self.loss,
            self.dataset,
            self.mesh,
            self.optimizer_of,
            self.hparams,
            num,
            state._replace(params=params, opt_state=opt_state, key=key),
        )
        if progress.best_params is not None:
            progress.best_params = parallel.place_members(progress.best_params, self.mesh)
        status, epoch, train_seconds = "completed", start_epoch, 0.0
        with stop_signals() as stop:
            for epoch in range(start_epoch + 1, config.epochs + 1):
                t0 = time.perf_counter()
                active = progress.active()
                new_params, new_opt_state, step_losses, finite = compiled.epoch(
                    params, opt_state, key, epoch, active
                )
                step_losses = parallel.to_host(step_losses)  # the one host sync of the epoch
                seconds = time.perf_counter() - t0
                train_seconds += seconds
                finite = np.asarray(parallel.to_host(finite))
                if num == 1:
                    self._check_finite(step_losses[0], bool(finite[0]), epoch, checkpoints)
                else:
                    self._mark_diverged(progress, active & ~finite, step_losses, epoch)
                params, opt_state = new_params, new_opt_state
                evaluated = epoch % config.eval_interval == 0 or epoch == config.epochs
                if evaluated:
                    with self._phase("evaluation"):
                        records = self._records(params, epoch, step_losses, seconds, progress)
                    if writer:
                        with self._phase("outputs"):
                            for record in records:
                                writer.write(record)
                    eta = (config.epochs - epoch) * seconds
                    log(progress_line(records, config.epochs, eta, progress.active()))
                    val_loss = np.asarray([r["val_loss"] for r in records])
                    improved = progress.improved(val_loss)
                    if improved.any():
                        self._keep_best(progress, improved, params, val_loss, epoch)
                patience = config.early_stopping_patience
                early = bool(patience and evaluated and progress.patience_out(epoch, patience))
                stopping = early or stop.signum is not None
                if epoch % config.checkpoint_interval == 0 or epoch == config.epochs or stopping:
                    with self._phase("checkpoints"):
                        checkpoints.save(epoch, params, opt_state, key, progress)
                if early:
                    status = "early_stopped"
                    since = progress.best_epoch[0] if num == 1 else "each member's best"
                    log(f"early stop: no better val loss for {patience} epochs since {since}")
                    break
                if stop.signum is not None:
                    status = "interrupted"
                    break
        with self._phase("checkpoints"):
            checkpoints.latest.close()
        with self._phase("evaluation"):
            summary = self._summary(params, progress, epoch, status, train_seconds)
        summary["compile_seconds"] = compiled.seconds
        with self._phase("checkpoints"):
            checkpoints.best.close()
        self.phase_seconds.update(compile=compiled.seconds, training=train_seconds)
        summary["phase_seconds"] = self.phase_seconds  # finish() adds its own "outputs"
        if writer:
            writer.finish(summary, run_outputs.tensorboard_hparams(config))
        if status == "interrupted":
            assert stop.signum is not None
            raise RunInterruptedError(stop.signum, summary)
        return summary

    def _keep_best(self, progress, improved, params, val_loss, epoch: int) -> None:
        """Keeps the improved members' params as their best, in memory (a copy: the epoch
        donates its inputs); they are written only with a checkpoint
        (`RunCheckpoints.save_best`), so a run is not paced by a save per improvement."""
        progress.note_best(improved, val_loss, epoch)
        if progress.best_params is None:
            progress.best_params = params
        progress.best_params = self.compiled.select_best(
            jnp.asarray(improved), params, progress.best_params
        )

    def _mark_diverged(self, progress, newly: np.ndarray, step_losses: np.ndarray, epoch: int):
        """Freezes the members whose loss or params stopped being finite this epoch."""
        for line in progress.mark_diverged(newly, step_losses, epoch, self.members):
            self.log(line)
        if not progress.active().any():
            raise NonFiniteError(
                f"every member diverged by epoch {epoch}; the last good checkpoint is kept in "
                f"{self.workdir}. Lower learning_rate or check the data."
            )

    def _check_finite(self, step_losses: np.ndarray, params_finite: bool, epoch: int, checkpoints):
        bad = np.flatnonzero(~np.isfinite(step_losses))
        if not bad.size and params_finite:
            return
        kept = checkpoints.latest.latest_epoch()
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
        evaluated = {split: self.compiled.evaluate(params, split) for split in ("train", "val")}
        rates = self._rates(epoch)
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
        last = self.compiled.evaluate(params, "test")
        has_best = np.asarray([e is not None for e in progress.best_epoch])
        best_params = params
        if progress.best_params is not None:
            best_params = self.compiled.select_best(
                jnp.asarray(has_best), progress.best_params, params
            )
        test = self.compiled.evaluate(best_params, "test")
        val = self.compiled.evaluate(best_params, "val")
        train_metrics = self.compiled.evaluate(best_params, "train")
        kept = progress.active()
        best_epochs = progress.best_epochs(epoch)

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
            summary["members"] = progress.member_summaries(self.members, test, val, epoch)
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
                "mesh": dict(self.mesh.shape),
                "num_processes": jax.process_count(),
                "config": dataclasses.asdict(self.config),
                **run_outputs.environment(),
                "started_at": self.started_at,
            }
        )
        if status == "interrupted":
            summary["resume_command"] = f"./launch.sh train --workdir={self.workdir}"
        return summary
