"""A training run a researcher can leave running and believe: `train_and_evaluate`.

``train_and_evaluate(config, workdir)`` validates the config, takes the workdir's lock,
loads the data, builds the network the task asks for, trains it with compiled epochs
(`jaxbp.training`), and leaves in the workdir what `jaxbp.run.workdir` lists: the run record,
metrics, TensorBoard events, curves, the latest and the best-validation checkpoints, and
``summary.json``. Its guarantees:

* **Nothing is mixed.** A workdir that holds a run resumes it only with the same data,
  network and seeds (`jaxbp.run.workdir.check_resume`); a resumed run ends bit-identical to an
  uninterrupted one, after a Ctrl-C or a kill at any point.
* **Nothing bad is saved.** The step losses, the parameters and the loss at the epoch's
  final parameters are checked finite after every epoch, before any checkpoint; a damaged
  checkpoint is set aside and the one before it used.
* **A stop is clean.** SIGINT and SIGTERM end the run after the current epoch with a
  checkpoint, curves and a summary marked ``interrupted``; `RunInterruptedError` carries the
  signal (`jaxbp.run.stop`).

Every run is a *member set* of M ≥ 1 (`jaxbp.training.members`): a single run is M = 1, and
a config with ``repeats`` or ``sweep`` trains every combination of the swept values and the
repeat seeds (`jaxbp.run.config.member_grid`). One compiled epoch trains all of them, and one
state, stacked ``(M, ...)``, is in memory and in each checkpoint. Each member keeps its own
best-validation params and early-stops only when all of them have run out of patience. **A
diverging member is frozen:** when its loss or params stop being finite in an epoch, that
epoch is thrown away for it alone, it keeps the params of the epoch before (finite, so every
checkpoint stays loadable), is marked ``diverged_at_epoch`` in ``summary.json`` and left out
of the means, the std, the sweep table's figures and the ensemble; the others train on
unaffected. When no member is left training (a single run: at its first non-finite loss),
the state they kept, the epoch before's, is checkpointed and the run stops with
`NonFiniteError`, saying what is on disk.

A DP-SGD run (`jaxbp.run.privacy_plan`, `jaxbp.dp_sgd`) records the ε spent at every
evaluation and in ``summary.json``, and nothing computed on training rows outside the private
step (its records are the validation split's).

The loop is `_train`, one screen: restore, then per epoch one compiled program
(`jaxbp.run.programs.train_epoch`), evaluate (`jaxbp.run.programs.member_metrics`), keep
the best, checkpoint (`jaxbp.run.checkpoints`), stop. `jaxbp.run.recipe` builds the run,
`jaxbp.run.progress` tracks each member, `jaxbp.run.summary` and `jaxbp.run.outputs` report.
"""

from __future__ import annotations

import contextlib
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
from jaxbp.run.progress import Progress, diverged_line, progress_line
from jaxbp.run.recipe import (
    Preprocessing,
    build_model,
    describe_run,
    initial_member_state,
    load_data,
    member_hparams,
    member_optimizer,
    network_meta,
    schedule_change,
)
from jaxbp.run.restore import refuse_earlier_layout
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

    The loop is `_train`; its epoch is `jaxbp.run.programs.train_epoch` (run by
    `jaxbp.run.programs.run_epoch`) over the step `jaxbp.run.programs.member_step`.

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
            refuse_earlier_layout(workdir)
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
            params, opt_state, losses, finite = programs.run_epoch(
                compiled, params, opt_state, key, epoch, active
            )
            losses, finite = jax.tree.map(parallel.to_host, (losses, finite))  # the host sync
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            if (active & ~finite).any():  # freezes them; raises when none is left training
                now = (params, opt_state, key)
                run.freeze_diverged(progress, active, losses, finite, epoch, checkpoints, now)
            evaluated = epoch % config.eval_interval == 0 or epoch == config.epochs
            if evaluated:
                run.evaluate(
                    compiled, (params, opt_state), epoch, losses.steps, seconds, progress, writer
                )
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
                bests = set(progress.best_epoch)
                since = bests.pop() if len(bests) == 1 else "each member's best"
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

    def open_outputs(self, start_epoch: int) -> outputs.RunOutputs | None:
        """Records this start in run.json and opens the outputs (process 0 only)."""
        if not parallel.is_primary():
            return None
        with self.phase("setup"):
            self._record_start(start_epoch)
            writer = outputs.RunOutputs(self.workdir, self.dataset.task)
            writer.truncate_after(start_epoch)
        return writer

    def _record_start(self, start_epoch: int) -> None:
        changes = workdir_lib.record_start(
            self.workdir, self.stored, self.config, self.started_at, start_epoch
        )
        if "epochs" in changes and self.config.schedule != "constant":
            old, new = changes["epochs"]
            self.log(schedule_change(self.config, old, new, start_epoch, self.steps_per_epoch))
        for name in sorted(set(changes) - {"epochs"}):
            self.log(f"changed on resume: {name} {changes[name][0]} -> {changes[name][1]}")

    def freeze_diverged(self, progress, active, losses, finite, epoch, checkpoints, state):
        """Freezes the members whose loss or params stopped being finite in ``epoch``; when no
        member is left training, checkpoints the state they kept (``epoch - 1``'s, as an
        interval checkpoint would have) and stops, saying what is on disk.

        Raises:
          NonFiniteError: when every member has diverged.
        """
        newly = active & ~finite
        causes = progress.causes(newly, losses, epoch, self.steps_per_epoch)
        if (active & finite).any():
            for line in progress.mark_diverged(newly, causes, epoch, self.members):
                self.log(line)
            return
        kept = epoch - 1  # the frozen state: every member's params of its last good epoch
        if kept >= 1 and (checkpoints.latest.latest_epoch() or 0) < kept:
            with self.phase("checkpoints"):
                checkpoints.save(kept, *state, progress)
        raise NonFiniteError(
            diverged_line(epoch, causes, self.num_members, checkpoints.on_disk(progress))
        )

    def evaluate(self, compiled, state, epoch, step_losses, seconds, progress: Progress, writer):
        """Every member's metrics after ``epoch`` (``state``: params and optimizer state):
        logged, written, and the improved members' params kept as their best, in memory (a
        copy: the epoch donates its inputs); they are written only with a checkpoint, so a
        run is not paced by a save per improvement."""
        params, opt_state = state
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
                rates=parallel.to_host(training.learning_rate_of(opt_state)),
                seconds=seconds,
                active=progress.active(),
                epsilon=privacy_plan.epsilons(self.accounts(epoch)),
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
