"""Data-parallel throughput: training examples per second against the number of devices.

    ./launch.sh scaling                          # CPU: 1, 2 and 4 forced host devices
    ./launch.sh --platform=gpu scaling --devices=1,2,4,8 --noforce_host_devices

Each device count runs in a child process of its own (`experiments.bench.host.run_child`; on
CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``) and times whole compiled
epochs of the trainer's sharded step (its config's network and optimizer,
`jaxbp.config.make_config`) after a warm-up epoch; the table reports the median.
Forced host devices share the machine's cores, so on CPU the table measures the sharded
step's overhead, not a speed-up.
"""

import os
import sys
import time
from typing import Any

from absl import app, flags

from experiments.bench import host

_DEVICES = flags.DEFINE_list("devices", ["1", "2", "4"], "Device counts to compare.")
_DATASET = flags.DEFINE_string("dataset", "digits", "Data set to train on.")
_HIDDEN = flags.DEFINE_list("hidden_sizes", None, "Hidden widths (default: the trainer's).")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Global batch (a multiple of every count).")
_EPOCHS = flags.DEFINE_integer("epochs", 7, "Timed epochs per count (after one warm-up).")
_FORCE = flags.DEFINE_boolean(
    "force_host_devices", True, "CPU: force each count with XLA_FLAGS (off on GPU/TPU)."
)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Times epochs of the trainer's sharded step on ``spec["devices"]`` devices."""
    import jax
    import numpy as np

    from jaxbp import config as config_lib
    from jaxbp import parallel, recipe, train
    from jaxbp.mlp import init_params

    hidden = {"hidden_sizes": tuple(spec["hidden_sizes"])} if spec["hidden_sizes"] else {}
    config = config_lib.make_config(spec["dataset"], batch_size=spec["batch_size"], **hidden)
    dataset = recipe.load_data(config)
    steps = len(dataset.x_train) // config.batch_size
    model = recipe.build_model(config, dataset)
    _, loss = config_lib.resolve_head(config, dataset.task, dataset.num_outputs)
    mesh = parallel.make_mesh(spec["devices"])
    parallel.check_batch_size(config.batch_size, mesh)
    optimizer = recipe.build_optimizer(config, steps)
    step = train.make_train_step(model, loss, optimizer, grad_norm=False)
    epoch = train.make_epoch(step, config.batch_size, shard_batch=parallel.shard_batch(mesh))
    params = init_params(jax.random.PRNGKey(config.seed), model)
    params, opt_state = parallel.replicate((params, optimizer.init(params)), mesh)
    x, y = parallel.put_training_data((dataset.x_train, dataset.y_train), mesh)
    key = jax.random.PRNGKey(0)
    jax.block_until_ready(epoch(params, opt_state, x, y, key, 0))  # compile and warm up
    seconds = []
    for e in range(1, spec["epochs"] + 1):
        start = time.perf_counter()
        jax.block_until_ready(epoch(params, opt_state, x, y, key, e))
        seconds.append(time.perf_counter() - start)
    median = float(np.median(seconds))
    return {
        "devices": spec["devices"],
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "network": "-".join(map(str, model.sizes)),
        "steps_per_epoch": steps,
        "epoch_ms": 1e3 * median,
        "examples_per_second": steps * config.batch_size / median,
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
    for count in (int(d) for d in _DEVICES.value):
        env = (
            {"XLA_FLAGS": f"--xla_force_host_platform_device_count={count}"} if _FORCE.value else {}
        )
        try:
            rows.append(host.run_child("experiments.scaling", {**spec, "devices": count}, env))
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
        f"\n{_DATASET.value} {rows[0]['network']}, the trainer's optimizer, global batch "
        f"{_BATCH.value}, median of {_EPOCHS.value} epochs\n"
    )
    print("| devices | epoch ms | examples/s | vs 1st row |")
    print("|---|---|---|---|")
    base = rows[0]["examples_per_second"]
    for row in rows:
        print(
            f"| {row['devices']} | {row['epoch_ms']:.2f} | {row['examples_per_second']:,.0f} "
            f"| {row['examples_per_second'] / base:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    if host.is_child():
        host.child_main(measure)
    else:
        sys.exit(app.run(main))
