"""Atomic, resumable training checkpoints with orbax-checkpoint.

A checkpoint holds the train state (params, optimizer state, epoch, PRNG key) and a JSON
description of the network it belongs to. Orbax writes each one to a temporary directory
and renames it when complete, so a run killed mid-write leaves the previous checkpoint
intact; a checkpoint of another network shape is refused before any array is read.
"""

import os
from typing import Any

import jax

Array = jax.Array


class CheckpointMismatchError(ValueError):
    """The checkpoint in a workdir belongs to a different network."""


class Checkpointer:
    """Saves and restores ``{"params", "opt_state", "epoch", "key"}`` under ``directory``.

    Args:
      directory: where the numbered checkpoint folders go (created if missing).
      description: JSON-able description of the network (sizes, activations, ...) that a
        restore must match.
      max_to_keep: how many recent checkpoints to keep.
    """

    def __init__(self, directory: str, description: dict[str, Any], max_to_keep: int = 3):
        import orbax.checkpoint as ocp  # experiments extra: not needed by `import jaxbp`

        self._ocp = ocp
        self.description = description
        self._manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_epoch(self) -> int | None:
        """The epoch of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        """Writes the state for ``epoch`` atomically and waits until it is on disk."""
        ocp = self._ocp
        self._manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(self.description)
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def restore(self, epoch: int, like: dict[str, Any]) -> dict[str, Any]:
        """Restores the state of ``epoch`` into the structure of ``like``.

        Raises:
          CheckpointMismatchError: when the checkpoint was written for another network.
        """
        ocp = self._ocp
        stored = self._manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]
        if stored != self.description:
            diff = {
                k: (stored.get(k), v) for k, v in self.description.items() if stored.get(k) != v
            }
            raise CheckpointMismatchError(
                f"the checkpoint at epoch {epoch} in {self._manager.directory} was written for a "
                f"different network: (checkpoint, now) = {diff}. Use a new --workdir, or the "
                "flags of the run that wrote it."
            )
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        restored = self._manager.restore(
            epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )["state"]
        # Orbax returns optax's NamedTuples as plain containers: rebuild the exact tree.
        return jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(restored))

    def close(self) -> None:
        """Finishes pending writes."""
        self._manager.wait_until_finished()
        self._manager.close()
