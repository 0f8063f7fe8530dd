"""Data-parallel throughput: training examples per second against the number of devices.

    ./launch.sh scaling                          # CPU: 1, 2 and 4 forced host devices
    ./launch.sh --platform=gpu scaling --devices=1,2,4,8 --noforce_host_devices

Each device count runs in its own subprocess (on CPU, XLA_FLAGS forces that many host
devices before jax is imported) and times whole compiled epochs of the trainer's sharded
step, after a warm-up epoch; the table reports the median epoch.
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

_DEVICES = flags.DEFINE_list("devices", ["1", "2", "4"], "Device counts to compare.")
_DATASET = flags.DEFINE_string("dataset", "digits", "Data set to train on.")
_HIDDEN = flags.DEFINE_list("hidden_sizes", ["128"], "Hidden widths of the network.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Global batch (a multiple of every count).")
_EPOCHS = flags.DEFINE_integer("epochs", 7, "Timed epochs per count (after one warm-up).")
_FORCE = flags.DEFINE_boolean(
    "force_host_devices", True, "CPU: force each count with XLA_FLAGS (off on GPU/TPU)."
)
_WORKER = flags.DEFINE_integer("worker", None, "Internal: time this device count and print.")


def measure(num_devices: int) -> dict:
    """Times epochs of the sharded train step on ``num_devices`` devices."""
    import jax
    import numpy as np

    from jaxbp import data, parallel, train
    from jaxbp.mlp import MLP, init_params

    dataset = data.load_dataset(_DATASET.value)
    hidden = tuple(int(h) for h in _HIDDEN.value)
    model = MLP((dataset.num_features, *hidden, dataset.num_outputs), "tanh", "softmax")
    mesh = parallel.make_mesh(num_devices)
    parallel.check_batch_size(_BATCH.value, mesh)
    optimizer = train.make_optimizer("adam", 1e-3)
    step = train.make_train_step(model, "softmax_cross_entropy", optimizer)
    epoch = train.make_epoch(step, _BATCH.value, shard_batch=parallel.shard_batch(mesh))
    params = init_params(jax.random.PRNGKey(0), model)
    params, opt_state = parallel.replicate((params, optimizer.init(params)), mesh)
    x, y = parallel.put_training_data((dataset.x_train, dataset.y_train), mesh)
    key = jax.random.PRNGKey(0)
    jax.block_until_ready(epoch(params, opt_state, x, y, key, 0))  # compile and warm up
    seconds = []
    for e in range(1, _EPOCHS.value + 1):
        t0 = time.perf_counter()
        jax.block_until_ready(epoch(params, opt_state, x, y, key, e))
        seconds.append(time.perf_counter() - t0)
    steps = len(dataset.x_train) // _BATCH.value
    median = float(np.median(seconds))
    return {
        "devices": num_devices,
        "backend": jax.default_backend(),
        "steps_per_epoch": steps,
        "epoch_ms": 1e3 * median,
        "examples_per_second": steps * _BATCH.value / median,
    }


def main(argv: list[str]) -> int:
    del argv
    if _WORKER.value is not None:
        print(json.dumps(measure(_WORKER.value)))
        return 0
    rows = []
    for count in (int(d) for d in _DEVICES.value):
        env = dict(os.environ)
        if _FORCE.value:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={count}"
        flags_passed = [f for f in sys.argv[1:] if not f.startswith("--worker")]
        result = subprocess.run(
            [sys.executable, "-m", "experiments.scaling", f"--worker={count}", *flags_passed],
            env=env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            print(f"scaling.py: {count} devices failed:\n{result.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    base = rows[0]["examples_per_second"]
    print(
        f"{_DATASET.value}, hidden {','.join(_HIDDEN.value)}, global batch {_BATCH.value}, "
        f"median of {_EPOCHS.value} epochs, backend {rows[0]['backend']}\n"
    )
    print("| devices | epoch ms | examples/s | vs 1st row |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['devices']} | {row['epoch_ms']:.2f} | {row['examples_per_second']:,.0f} "
            f"| {row['examples_per_second'] / base:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
