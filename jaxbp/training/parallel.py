"""Data and member parallelism with JAX's own sharding: a device mesh ``(members, data)``.

Each minibatch is sharded over the ``"data"`` axis, params and optimizer state are
replicated over it, and the jitted step (hand-written backward included) is partitioned by
XLA, which inserts the all-reduce of the gradient. No pmap and no hand-written collectives.
A member set (`jaxbp.training.members`) is also split over the ``"members"`` axis: each device
group trains its own members, with no communication between them. `make_mesh` gives the
member axis as many devices as divide both the member count and the devices (their gcd),
so members spread over the devices when they can and the rest is data parallelism inside
each member. Several hosts join through `jax.distributed.initialize`; each process then
places only its own block of the training rows on its devices (`put_training_data`), and
the member axis stays 1.
"""

import math
import socket
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MEMBER_AXIS = "members"
DATA_AXIS = "data"


def initialize_distributed(
    coordinator_address: str, num_processes: int, process_id: int, *, timeout_seconds: int = 60
) -> None:
    """Joins a multi-process run (call before any other JAX work).

    On CPU the collectives go through gloo, which this JAX ships.

    Args:
      coordinator_address: ``host:port`` of process 0.
      num_processes: processes in the run.
      process_id: this process, ``0 <= process_id < num_processes``.
      timeout_seconds: how long to wait for the coordinator and the other processes.

    Raises:
      ValueError: for a process_id outside the run.
      RuntimeError: when the coordinator does not answer within ``timeout_seconds`` (for
        process 0 the runtime itself gives up after that time).
    """
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id={process_id} must be in [0, num_processes={num_processes}).")
    if process_id != 0:
        # The runtime aborts the whole process when the coordinator never answers, so wait
        # for its port here, where giving up can be a clear error.
        wait_for_coordinator(coordinator_address, timeout_seconds)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address, num_processes, process_id, initialization_timeout=timeout_seconds
    )


def wait_for_coordinator(coordinator_address: str, timeout_seconds: float) -> None:
    """Waits until ``host:port`` accepts a TCP connection.

    Raises:
      ValueError: for an address that is not ``host:port``.
      RuntimeError: when nothing answers within ``timeout_seconds``.
    """
    host, _, port = coordinator_address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"coordinator_address={coordinator_address!r} is not host:port, e.g. 10.0.0.1:1234."
        )
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"no coordinator answered at {coordinator_address} within "
                    f"{timeout_seconds:g} s, so this process could not join the run; start "
                    "process 0 there, or check the address and port."
                ) from None
            time.sleep(0.2)


def make_mesh(num_devices: int | None = None, *, num_members: int = 1) -> Mesh:
    """A ``(members, data)`` mesh over the first ``num_devices`` devices (all when None).

    The ``"members"`` axis gets ``gcd(num_members, num_devices)`` devices (1 across several
    processes), the ``"data"`` axis the rest: 8 members on 4 devices are 2 members a device,
    2 members on 4 devices are 2 devices a member, 3 members on 2 devices are data parallel.

    Raises:
      ValueError: when more devices are asked for than JAX sees, or, across several
        processes, fewer than all of them.
    """
    devices = jax.devices()
    if num_devices is None:
        num_devices = len(devices)
    if not 1 <= num_devices <= len(devices):
        raise ValueError(
            f"num_devices={num_devices}, but JAX sees {len(devices)} device(s) "
            f"({jax.default_backend()}). On CPU, XLA_FLAGS=--xla_force_host_platform_device_count"
            f"={num_devices} (set before jax is imported) makes that many."
        )
    if jax.process_count() > 1 and num_devices != len(devices):
        raise ValueError(
            f"num_devices={num_devices}: a {jax.process_count()}-process run uses all "
            f"{len(devices)} devices; leave num_devices unset."
        )
    if num_members < 1:
        raise ValueError(f"num_members={num_members} must be at least 1.")
    members = math.gcd(num_members, num_devices) if jax.process_count() == 1 else 1
    grid = np.array(devices[:num_devices]).reshape(members, num_devices // members)
    return Mesh(grid, (MEMBER_AXIS, DATA_AXIS))


def default_num_devices(num_members: int = 1) -> int:
    """The devices a run takes when it does not say: all of them, except on CPU.

    CPU devices forced with ``--xla_force_host_platform_device_count`` share the same cores,
    so splitting one network's batch over them only adds work; splitting a member set over
    them runs each device's members on a core of its own, with nothing to communicate. On
    CPU a single run therefore takes one device and a set of M members ``gcd(M, devices)``.
    A run of several processes takes every device.
    """
    count = jax.device_count()
    if jax.process_count() > 1 or jax.default_backend() != "cpu":
        return count
    return math.gcd(num_members, count)


def data_devices(mesh: Mesh) -> int:
    """Devices that share one member's batch (the ``"data"`` axis)."""
    return mesh.shape[DATA_AXIS]


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """The global batch must split evenly over the ``"data"`` axis."""
    n = data_devices(mesh)
    if batch_size % n:
        raise ValueError(
            f"batch_size={batch_size} does not divide over {n} devices: use a "
            f"multiple of {n} (e.g. {n * max(1, batch_size // n)})."
        )


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every leaf of ``tree`` (the same value on every process) on all devices."""
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree
    )


def place_members(tree: Any, mesh: Mesh) -> Any:
    """A member set's ``tree`` (every leaf ``(M, ...)``) split over the ``"members"`` axis.

    Each device holds its group's members, replicated over ``"data"``. Across several
    processes the member axis has one device group, so this is `replicate`.
    """
    if jax.process_count() > 1 or mesh.shape[MEMBER_AXIS] == 1:
        return replicate(tree, mesh)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(MEMBER_AXIS)))


def put_training_data(arrays: tuple[np.ndarray, ...], mesh: Mesh) -> tuple[jax.Array, ...]:
    """The training arrays as global arrays for the epoch's gather.

    One process: replicated on every device (the cheapest gather). Several processes: the
    rows are padded to a multiple of the device count and each process places only its own
    contiguous block; the epoch's permutation never reaches the padding rows, so the run
    matches a single-process one.
    """
    if jax.process_count() == 1:
        return replicate(arrays, mesh)
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    rows = arrays[0].shape[0]
    padded = -(-rows // mesh.size) * mesh.size
    per_process = padded // jax.process_count()
    start = jax.process_index() * per_process
    out = []
    for a in arrays:
        a = np.concatenate([a, np.zeros((padded - rows, *a.shape[1:]), a.dtype)])
        local = a[start : start + per_process]
        out.append(jax.make_array_from_process_local_data(sharding, local, a.shape))
    return tuple(out)


def shard_batch(mesh: Mesh) -> Callable[[Any], Any] | None:
    """``batch -> batch`` constraining the leading axis of each leaf to the ``"data"`` axis.

    Returns None for a ``"data"`` axis of one device, where there is nothing to shard.
    Under a vmap over members with ``spmd_axis_name=MEMBER_AXIS`` the member axis of the
    batch goes to the ``"members"`` axis of the mesh.
    """
    if data_devices(mesh) == 1:
        return None
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return lambda batch: jax.tree.map(
        lambda a: jax.lax.with_sharding_constraint(a, sharding), batch
    )


def to_host(x: jax.Array) -> np.ndarray:
    """A replicated (or single-device) array's value on this host."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(x.addressable_data(0))


def is_primary() -> bool:
    """Whether this process writes logs, metrics and summaries (process 0)."""
    return jax.process_index() == 0
