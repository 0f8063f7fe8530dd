"""Data-parallel throughput: training examples per second against the number of devices.

    ./launch.sh scaling                          # CPU: 1, 2 and 4 forced host devices
    ./launch.sh --platform=gpu scaling --devices=1,2,4,8 --noforce_host_devices

Each device count is a child process (`experiments.bench.host.run_child`; with
``--force_host_devices``, the default, N CPU devices: ``JAX_PLATFORMS=cpu`` and
``XLA_FLAGS=--xla_force_host_platform_device_count=N``) that times compiled epochs of the
run's run (`experiments.bench.digits.run_training`) with the sharded step of
`jaxbp.training.parallel`, after a warm-up epoch; the table reports the median.
"""

import os
import sys
from typing import Any

import jax
import numpy as np
from absl import app, flags

from experiments.bench import host
from experiments.bench.digits import run_training
from experiments.bench.host import time_interleaved
from jaxbp import training
from jaxbp.training import parallel

_DEVICES = flags.DEFINE_list("devices", ["1", "2", "4"], "Device counts to compare.")
_DATASET = flags.DEFINE_string("dataset", "digits", "Data set to train on.")
_HIDDEN = flags.DEFINE_list("hidden_sizes", None, "Hidden widths (default: the run's).")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Global batch (a multiple of every count).")
_EPOCHS = flags.DEFINE_integer("epochs", 7, "Timed epochs per count (after one warm-up).")
_FORCE = flags.DEFINE_boolean(
    "force_host_devices",
    True,
    "Force each count of CPU devices with XLA_FLAGS (off: the machine's own devices, e.g. GPUs).",
)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Times epochs of the run's sharded step on ``spec["devices"]`` devices."""
    hidden = {"hidden_sizes": tuple(spec["hidden_sizes"])} if spec["hidden_sizes"] else {}
    t = run_training(spec["dataset"], batch_size=spec["batch_size"], **hidden)
    batch_size, steps = t.config.batch_size, len(t.x) // t.config.batch_size
    mesh = parallel.make_mesh(spec["devices"])
    parallel.check_batch_size(batch_size, mesh)
    step = training.make_train_step(t.model, t.loss, t.optimizer, grad_norm=False)
    epoch = training.make_epoch(step, batch_size, shard_batch=parallel.shard_batch(mesh))
    state = parallel.replicate((t.params, t.optimizer.init(t.params)), mesh)
    x, y = parallel.put_training_data((np.asarray(t.x), np.asarray(t.y)), mesh)
    key = jax.random.key(0)
    run = {"epoch": lambda: epoch(*state, x, y, key, 0)}  # the first call compiles, untimed
    seconds = time_interleaved(run, min_rounds=spec["epochs"], budget=0).median("epoch")
    return {
        "devices": spec["devices"],
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "network": "-".join(map(str, t.model.sizes)),
        "epoch_ms": 1e3 * seconds,
        "examples_per_second": steps * batch_size / seconds,
    }


def main(argv: list[str]) -> int:
    del argv
    spec = {
        "dataset": _DATASET.value,
        "hidden_sizes": [int(h) for h in _HIDDEN.value or []],
        "batch_size": _BATCH.value,
        "epochs": _EPOCHS.value,
    }
    rows = []
    for count in map(int, _DEVICES.value):
        # Forced host devices are CPU devices, also on a machine with an accelerator.
        env = {
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}",
            "JAX_PLATFORMS": "cpu",
        }
        try:
            rows.append(
                host.run_child(
                    "experiments.scaling", {**spec, "devices": count}, env if _FORCE.value else {}
                )
            )
        except RuntimeError as e:
            print(f"scaling.py: {count} devices failed: {e}", file=sys.stderr)
            return 1
    print(f"Machine: {host.describe()}")
    print(f"Devices: {rows[0]['backend']} backend, device kind {rows[0]['device_kind']}")
    if _FORCE.value and rows[0]["backend"] == "cpu":
        print(
            "Forced CPU devices (--xla_force_host_platform_device_count) share the same "
            f"{len(os.sched_getaffinity(0))} cores: this table measures the sharded step's "
            "overhead, not a speed-up."
        )
    print(
        f"\n{_DATASET.value} {rows[0]['network']}, the run's optimizer, global batch "
        f"{_BATCH.value}, median of {_EPOCHS.value} epochs\n"
    )
    print("| devices | epoch ms | examples/s | vs 1st row |\n|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['devices']} | {row['epoch_ms']:.2f} | {row['examples_per_second']:,.0f} "
            f"| {row['examples_per_second'] / rows[0]['examples_per_second']:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    if host.is_child():
        host.child_main(measure)
    else:
        sys.exit(app.run(main))
