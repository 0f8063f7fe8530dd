"""Atomic, resumable checkpoints with orbax-checkpoint, and a run's two checkpoint folders.

A checkpoint holds a pytree of arrays (the train state, or the best parameters) and a JSON
``meta`` block that describes it: the network, the optimizer and the preprocessing that
`jaxbp.run.inference` needs to use the parameters without the training data. Orbax writes each
one to a temporary folder and renames it when complete, so a run killed mid-write leaves
the previous checkpoint intact. A checkpoint that cannot be read (damaged by hand, an
emptied folder, a full disk) is moved to ``<directory>-damaged/`` and the next older one
is used, so one bad write never ends a run's ability to resume (`Checkpointer`).

`RunCheckpoints` holds, in a workdir,

* ``checkpoints/``: the `TrainState` after an epoch with the run's meta (network,
  preprocessing, the epoch each member diverged in);
* ``best/`` (one kept): the best-validation params with a ``best`` record of the epoch and
  val loss each member's best comes from (`jaxbp.run.progress.Progress.unsaved_best`).

Every tree is stacked, every leaf ``(M, ...)`` with M ≥ 1 (a single run is a member set of
one), and its optimizer state carries the learning rate (`jaxbp.training.inject_learning_rate`);
the meta's ``layout`` says so (`jaxbp.run.restore.LAYOUT`). A workdir of an earlier layout
(a single run's unstacked state, an optimizer state without the rate) is refused for
resuming (`jaxbp.run.restore.refuse_earlier_layout`); `jaxbp.run.restore` still reads its
params. A resume takes the newest readable checkpoint whose network matches the run's
(`check_same_network`); the best is always saved just before the state, so a best newer
than the state found is not the run's own and is redone.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxbp.mlp import Params
from jaxbp.run.config import ConfigError
from jaxbp.run.progress import Progress
from jaxbp.run.recipe import TrainState
from jaxbp.run.restore import LAYOUT, EarlierLayoutError, earlier_layout_message


class CheckpointMismatchError(ValueError):
    """The checkpoint belongs to a different network."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a file-size limit, a read-only folder);
    the checkpoints written before it are intact."""


def _first_line(error: BaseException, limit: int = 160) -> str:
    return (str(error).strip().splitlines() or [""])[0][:limit]


class _OrbaxLogFilter(logging.Filter):
    """Drops orbax's own warning and error lines (with their tracebacks): every failure they
    accompany is reported by `Checkpointer` as one line that names the cause."""

    def filter(self, record: logging.LogRecord) -> bool:
        orbax_file = f"{os.sep}orbax{os.sep}" in record.pathname
        return not (orbax_file and record.levelno >= logging.WARNING)


def _drop_closed_loop_callbacks(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """An unraisable-exception hook that ignores ``RuntimeError: Event loop is closed``.

    When orbax fails to read one array of a damaged checkpoint, it closes its event loop
    while tensorstore still completes the other reads; their callbacks then raise into the
    closed loop, outside any caller, and Python would print each as a traceback although
    the failure itself is already handled (the checkpoint is set aside).
    """

    def hook(unraisable: Any) -> None:
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(unraisable)

    hook.drops_closed_loop_callbacks = True  # type: ignore[attr-defined]
    return hook


def _quiet_orbax() -> None:
    """Installs, once per process, the two filters above."""
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _OrbaxLogFilter) for f in absl_logger.filters):
        absl_logger.addFilter(_OrbaxLogFilter())
    if not getattr(sys.unraisablehook, "drops_closed_loop_callbacks", False):
        sys.unraisablehook = _drop_closed_loop_callbacks(sys.unraisablehook)


class Checkpointer:
    """Saves and restores ``(tree, meta)`` checkpoints numbered by epoch under ``directory``.

    Args:
      directory: where the numbered checkpoint folders go (created if missing).
      max_to_keep: how many recent checkpoints to keep.
    """

    def __init__(self, directory: str, max_to_keep: int = 3):
        import orbax.checkpoint as ocp  # experiments extra: not needed by `import jaxbp`

        _quiet_orbax()
        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def epochs(self) -> list[int]:
        """The epochs of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_epoch(self) -> int | None:
        """The epoch of the newest complete checkpoint, or None."""
        epochs = self.epochs()
        return epochs[-1] if epochs else None

    def delete_after(self, epoch: int) -> None:
        """Deletes the checkpoints of epochs after ``epoch`` (a resumed run redoes them)."""
        for later in self.epochs():
            if later > epoch:
                self._manager.delete(later)

    def save(self, epoch: int, tree: Any, meta: dict[str, Any]) -> None:
        """Writes ``tree`` and ``meta`` for ``epoch`` atomically and waits until on disk.

        Raises:
          CheckpointWriteError: when the write fails; the older checkpoints are intact.
        """
        ocp = self._ocp
        try:
            self._manager.save(
                epoch,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
            self._manager.wait_until_finished()
        except Exception as e:  # orbax wraps the OS error in its own types
            kept = [e for e in self.epochs() if e != epoch]
            before = (
                f"the checkpoints before it (epochs {', '.join(map(str, kept))}) are intact"
                if kept
                else "no checkpoint had been written before it"
            )
            raise CheckpointWriteError(
                f"the checkpoint of epoch {epoch} could not be written to {self.directory} "
                f"({_why_not_written(e)}); {before}. Free disk space or fix the folder, then "
                "run the same command again to resume."
            ) from e

    def read_meta(self, epoch: int) -> dict[str, Any]:
        """The JSON ``meta`` block of ``epoch``'s checkpoint."""
        ocp = self._ocp
        return self._manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

    def restore(self, epoch: int, like: Any) -> Any:
        """The tree of ``epoch``'s checkpoint, in the structure of ``like``."""
        ocp = self._ocp
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        restored = self._manager.restore(
            epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )["state"]
        # Orbax returns optax's NamedTuples as plain containers: rebuild the exact tree.
        return jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(restored))

    def restore_params(self, epoch: int) -> Any:
        """The ``params`` of ``epoch``'s checkpoint (a state's or best's), read as stored,
        without a template of the rest (so an earlier layout's read back too)."""
        ocp = self._ocp
        stored = self._manager.restore(
            epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore())
        )["state"]
        return stored["params"]

    def restore_newest_readable(
        self,
        like: Any,
        check_meta: Callable[[dict[str, Any]], None] | None = None,
        log: Callable[[str], None] = print,
    ) -> tuple[int, Any, dict[str, Any]] | None:
        """The newest checkpoint that reads back whole: ``(epoch, tree, meta)``, or None.

        A checkpoint that fails to read is moved aside to ``<directory>-damaged/`` and
        named in one line through ``log``; the next older one is tried.

        Args:
          like: a tree of the stored structure, shapes and dtypes.
          check_meta: called on the meta first; its exception (e.g.
            `CheckpointMismatchError`) propagates, since it is no damage but a refusal.
          log: where the one-line notes go.
        """
        for epoch in reversed(self.epochs()):
            try:
                meta = self.read_meta(epoch)
            except Exception as e:  # any failure to read is damage; the cause is named
                self._set_aside(epoch, e, log)
                continue
            if check_meta is not None:
                check_meta(meta)
            try:
                tree = self.restore(epoch, like)
                if any(not _all_finite(leaf) for leaf in jax.tree.leaves(tree)):
                    raise ValueError("it holds non-finite values")
            except Exception as e:  # any failure to read is damage; the cause is named
                self._set_aside(epoch, e, log)
                continue
            return epoch, tree, meta
        return None

    def _set_aside(self, epoch: int, error: Exception, log: Callable[[str], None]) -> None:
        damaged = self.directory + "-damaged"
        os.makedirs(damaged, exist_ok=True)
        target = os.path.join(damaged, f"{epoch}-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(os.path.join(self.directory, str(epoch)), target)
        log(
            f"checkpoint of epoch {epoch} is damaged ({type(error).__name__}: "
            f"{_first_line(error)}); "
            f"moved to {target}, trying the one before it."
        )
        self._manager.reload()

    def close(self) -> None:
        """Finishes pending writes."""
        self._manager.wait_until_finished()
        self._manager.close()


def _why_not_written(error: BaseException) -> str:
    """The OS's reason when orbax's message carries one (``No space left on device``)."""
    text = str(error)
    for reason in (
        "No space left on device",
        "File too large",
        "Permission denied",
        "Read-only file system",
        "Disk quota exceeded",
    ):
        if reason in text:
            return reason
    return f"{type(error).__name__}: {_first_line(error)}"


def _all_finite(leaf: Any) -> bool:
    array = np.asarray(leaf)
    return not np.issubdtype(array.dtype, np.inexact) or bool(np.isfinite(array).all())


def check_same_network(stored: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """Raises `CheckpointMismatchError` unless the stored network description is expected's."""
    if stored != expected:
        diff = {k: (stored.get(k), v) for k, v in expected.items() if stored.get(k) != v}
        raise CheckpointMismatchError(
            f"the checkpoint in {where} was written for a different network: "
            f"(checkpoint, now) = {diff}. Use a new workdir, or the settings of the run "
            "that wrote it."
        )


class RunCheckpoints:
    """The latest and best checkpoints of a run in ``workdir`` (``latest``, ``best``).

    Args:
      workdir: the run's folder.
      meta: what every checkpoint of the run stores: ``network`` and ``preprocessing``.
      num_members: M ≥ 1, the members of the run.
      log: where the resume and set-aside lines go.
    """

    def __init__(
        self, workdir: str, meta: dict[str, Any], num_members: int, log: Callable[[str], None]
    ):
        self.workdir, self.num_members, self.log = workdir, num_members, log
        self.meta = {**meta, "layout": LAYOUT}
        self.latest = Checkpointer(os.path.join(workdir, "checkpoints"))
        self.best = Checkpointer(os.path.join(workdir, "best"), max_to_keep=1)

    def _check_meta(self, meta: dict[str, Any]) -> None:
        if meta.get("layout") != LAYOUT:
            raise EarlierLayoutError(earlier_layout_message(self.workdir))
        check_same_network(meta.get("network", {}), self.meta["network"], self.workdir)

    def restore(self, initial: TrainState, epochs: int) -> tuple[TrainState, Progress]:
        """The stacked state to start from and the members' progress (best so far, diverged).

        Args:
          initial: the stacked state before epoch 1, the one used when nothing is found.
          epochs: the run's ``epochs``.

        Raises:
          ConfigError: when the checkpoint found has done more than ``epochs`` epochs.
          EarlierLayoutError: when it is of an earlier layout.
        """
        progress = Progress.new(self.num_members)
        found = self.latest.restore_newest_readable(initial, self._check_meta, self.log)
        if found is None:
            return initial, progress
        epoch, state, meta = found
        if epochs < epoch:
            raise ConfigError(
                "epochs",
                epochs,
                f"is below the {epoch} epochs the workdir's checkpoint has done; give "
                f"epochs >= {epoch}, or a new workdir.",
            )
        self.log(f"resuming from the checkpoint of epoch {epoch} in {self.workdir}")
        progress.diverged_at[:] = meta["diverged"]
        best_found = self.best.restore_newest_readable(
            {"params": initial.params}, self._check_meta, self.log
        )
        # The best is saved just before the state, so one newer than the state cannot be
        # the run's own: it is redone.
        if best_found is not None and best_found[0] <= epoch:
            progress.resume_best(best_found[0], best_found[2]["best"], best_found[1]["params"])
        return state, progress

    def save(
        self, epoch: int, params: Params, opt_state: Any, key: Any, progress: Progress
    ) -> None:
        """Writes the best params when they changed (`save_best`), then the state of ``epoch``."""
        self.save_best(progress)
        meta = {**self.meta, "diverged": list(progress.diverged_at)}
        self.latest.save(
            epoch, TrainState(params, opt_state, np.asarray(epoch, np.int32), key), meta
        )

    def on_disk(self, progress: Progress) -> str:
        """What the workdir holds now, in words: the state's epoch and the best's."""
        latest = self.latest.latest_epoch()
        state = (
            "no checkpoint was written (nothing finite to keep)"
            if latest is None
            else f"checkpoints/ holds the state of epoch {latest}"
        )
        best = (
            "best/ holds nothing (no evaluation)"
            if progress.saved_best is None
            else f"best/ the best-validation params as of epoch {progress.saved_best}"
        )
        return f"in {self.workdir}, {state}; {best}"

    def save_best(self, progress: Progress) -> None:
        """Writes the best params to best/ when they changed since the last write.

        The checkpoint is numbered by the newest improvement (`Progress.unsaved_best`).
        """
        unsaved = progress.unsaved_best()
        if unsaved is None:
            return
        newest, record = unsaved
        meta = {**self.meta, "best": record, "diverged": list(progress.diverged_at)}
        self.best.save(newest, {"params": progress.best_params}, meta)
        progress.saved_best = newest
