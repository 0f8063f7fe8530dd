"""Atomic, resumable checkpoints with orbax-checkpoint.

A checkpoint holds a pytree of arrays (the train state, or the best parameters) and a JSON
``meta`` block that describes it: the network, the optimizer and the preprocessing that
`jaxbp.inference` needs to use the parameters without the training data. Orbax writes each
one to a temporary folder and renames it when complete, so a run killed mid-write leaves
the previous checkpoint intact. A checkpoint that cannot be read (damaged by hand, an
emptied folder, a full disk) is moved to ``<directory>-damaged/`` and the next older one
is used, so one bad write never ends a run's ability to resume.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


class CheckpointMismatchError(ValueError):
    """The checkpoint belongs to a different network."""


class Checkpointer:
    """Saves and restores ``(tree, meta)`` checkpoints numbered by epoch under ``directory``.

    Args:
      directory: where the numbered checkpoint folders go (created if missing).
      max_to_keep: how many recent checkpoints to keep.
    """

    def __init__(self, directory: str, max_to_keep: int = 3):
        import orbax.checkpoint as ocp  # experiments extra: not needed by `import jaxbp`

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
        """Writes ``tree`` and ``meta`` for ``epoch`` atomically and waits until on disk."""
        ocp = self._ocp
        self._manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._manager.wait_until_finished()

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
        first_line = (str(error).strip().splitlines() or [""])[0][:160]
        log(
            f"checkpoint of epoch {epoch} is damaged ({type(error).__name__}: {first_line}); "
            f"moved to {target}, trying the one before it."
        )
        self._manager.reload()

    def close(self) -> None:
        """Finishes pending writes."""
        self._manager.wait_until_finished()
        self._manager.close()


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
