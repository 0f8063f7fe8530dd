"""Data parallelism with JAX's own sharding: a 1-D device mesh with axis ``"data"``.

Each minibatch is sharded over the mesh, params and optimizer state are replicated, and
the jitted step (hand-written backward included) is partitioned by XLA, which inserts the
all-reduce of the gradient. No pmap and no hand-written collectives.
"""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all of them when None).

    Raises:
      ValueError: when more devices are asked for than JAX sees.
    """
    devices = jax.devices()
    if num_devices is None:
        num_devices = len(devices)
    if not 1 <= num_devices <= len(devices):
        raise ValueError(
            f"--num_devices={num_devices}, but JAX sees {len(devices)} device(s) "
            f"({jax.default_backend()}). On CPU, XLA_FLAGS=--xla_force_host_platform_device_count"
            f"={num_devices} (set before jax is imported) makes that many."
        )
    return Mesh(np.array(devices[:num_devices]), (DATA_AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """The global batch must split evenly over the mesh."""
    if batch_size % mesh.size:
        raise ValueError(
            f"--batch_size={batch_size} does not divide over {mesh.size} devices: use a "
            f"multiple of {mesh.size} (e.g. {mesh.size * max(1, batch_size // mesh.size)})."
        )


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every leaf of ``tree`` on all devices of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(mesh: Mesh) -> Callable[[Any], Any] | None:
    """``batch -> batch`` constraining the leading axis of each leaf to the ``"data"`` axis.

    Returns None for a single device, where there is nothing to shard.
    """
    if mesh.size == 1:
        return None
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return lambda batch: jax.tree.map(
        lambda a: jax.lax.with_sharding_constraint(a, sharding), batch
    )
