"""A training run's two checkpoint folders: the latest state and the best-validation params.

`RunCheckpoints` holds, in a workdir,

* ``checkpoints/``: the `TrainState` after an epoch with the run's meta (network,
  preprocessing, and for a member set the epoch each member diverged in);
* ``best/`` (one kept): the best-validation params with a ``best`` record of the epoch and
  val loss each member's best comes from (`jaxbp.member_progress.Progress.unsaved_best`).

The run works on stacked trees, every leaf ``(M, ...)``; a single run's checkpoint keeps
the unstacked layout, so the same folder reads back either way (`to_disk`, `from_disk`).
A resume takes the newest readable checkpoint whose network matches the run's
(`jaxbp.checkpoint.check_same_network`); the best is always saved just before the state,
so a best newer than the state found is not the run's own and is redone.

Uses the ``experiments`` extra (orbax-checkpoint).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxbp import members
from jaxbp.config import ConfigError
from jaxbp.member_progress import Progress
from jaxbp.mlp import Params
from jaxbp.recipe import TrainState

# One compiled program for a whole tree, where leaf-by-leaf indexing outside jit would
# compile one per leaf shape.
_unstack = jax.jit(lambda tree: members.take(tree, 0))
_stack_one = jax.jit(lambda tree: members.stack([tree]))


class RunCheckpoints:
    """The latest and best checkpoints of a run in ``workdir`` (``latest``, ``best``).

    Args:
      workdir: the run's folder.
      meta: what every checkpoint of the run stores: ``network`` and ``preprocessing``.
      num_members: M, the members of the run (1: the unstacked layout on disk).
      log: where the resume and set-aside lines go.
    """

    def __init__(
        self, workdir: str, meta: dict[str, Any], num_members: int, log: Callable[[str], None]
    ):
        from jaxbp.checkpoint import Checkpointer

        self.workdir, self.meta, self.num_members, self.log = workdir, meta, num_members, log
        self.latest = Checkpointer(os.path.join(workdir, "checkpoints"))
        self.best = Checkpointer(os.path.join(workdir, "best"), max_to_keep=1)

    def _check_meta(self, meta: dict[str, Any]) -> None:
        from jaxbp.checkpoint import check_same_network

        check_same_network(meta.get("network", {}), self.meta["network"], self.workdir)

    def to_disk(self, tree: Any) -> Any:
        """A stacked tree as the checkpoint holds it: a single run without the member axis."""
        return _unstack(tree) if self.num_members == 1 else tree

    def from_disk(self, tree: Any) -> Any:
        """A tree read from a checkpoint, stacked (the inverse of `to_disk`)."""
        return _stack_one(tree) if self.num_members == 1 else tree

    def restore(self, initial: TrainState, epochs: int) -> tuple[TrainState, Progress]:
        """The stacked state to start from and the members' progress (best so far, diverged).

        Args:
          initial: the stacked state before epoch 1, the one used when nothing is found.
          epochs: the run's ``epochs``.

        Raises:
          ConfigError: when the checkpoint found has done more than ``epochs`` epochs.
        """
        state = initial
        progress = Progress.new(self.num_members)
        params, opt_state, key = self.to_disk((state.params, state.opt_state, state.key))
        like = TrainState(params, opt_state, state.epoch, key)
        found = self.latest.restore_newest_readable(like, self._check_meta, self.log)
        if found is None:
            return state, progress
        epoch, stored, meta = found
        params, opt_state, key = self.from_disk((stored.params, stored.opt_state, stored.key))
        state = TrainState(params, opt_state, stored.epoch, key)
        if epochs < epoch:
            raise ConfigError(
                "epochs",
                epochs,
                f"is below the {epoch} epochs the workdir's checkpoint has done; give "
                f"epochs >= {epoch}, or a new workdir.",
            )
        self.log(f"resuming from the checkpoint of epoch {epoch} in {self.workdir}")
        if "diverged" in meta:
            progress.diverged_at[:] = meta["diverged"]
        best_found = self.best.restore_newest_readable(
            {"params": like.params}, self._check_meta, self.log
        )
        # The best is saved just before the state, so one newer than the state cannot be
        # the run's own: it is redone.
        if best_found is not None and best_found[0] <= epoch:
            progress.resume_best(
                best_found[0], best_found[2]["best"], self.from_disk(best_found[1]["params"])
            )
        return state, progress

    def save(
        self, epoch: int, params: Params, opt_state: Any, key: Any, progress: Progress
    ) -> None:
        """Writes the best params when they changed (`save_best`), then the state of ``epoch``."""
        self.save_best(progress)
        meta: dict[str, Any] = dict(self.meta)
        if self.num_members > 1:
            meta["diverged"] = list(progress.diverged_at)
        params, opt_state, key = self.to_disk((params, opt_state, key))
        self.latest.save(
            epoch, TrainState(params, opt_state, np.asarray(epoch, np.int32), key), meta
        )

    def save_best(self, progress: Progress) -> None:
        """Writes the best params to best/ when they changed since the last write.

        The checkpoint is numbered by the newest improvement (`Progress.unsaved_best`).
        """
        unsaved = progress.unsaved_best()
        if unsaved is None:
            return
        newest, record = unsaved
        meta: dict[str, Any] = {**self.meta, "best": record}
        if self.num_members > 1:
            meta["diverged"] = list(progress.diverged_at)
        self.best.save(newest, {"params": self.to_disk(progress.best_params)}, meta)
        progress.saved_best = newest
