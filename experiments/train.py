"""Train an MLP with the hand-written backward pass.

    ./launch.sh train --dataset=digits
    ./launch.sh train --dataset=iris --backward=autodiff --precision=float64
    ./launch.sh train --flagfile=my_run.flags

Flags left unset take the data set's defaults (jaxbp/runner.py, DATASET_DEFAULTS).
"""

import sys

from absl import app, flags, logging

from jaxbp import parallel, runner

_DATASET = flags.DEFINE_string("dataset", "digits", "Data set name (jaxbp.data.DATASETS).")
_HIDDEN = flags.DEFINE_list("hidden_sizes", None, "Hidden widths, e.g. 128 or 64,64.")
_SIZES = flags.DEFINE_list("sizes", None, "All widths n0,...,nL (checked against the data).")
_ACTIVATION = flags.DEFINE_string("activation", None, "Hidden activation g.")
_OUTPUT = flags.DEFINE_string("output_activation", None, "Output activation f.")
_LOSS = flags.DEFINE_string("loss", None, "Loss name (jaxbp.LOSSES).")
_NO_BIAS = flags.DEFINE_boolean("no_bias", False, "Layers without b, as in seed 002.")
_OPTIMIZER = flags.DEFINE_string("optimizer", None, "sgd, momentum, nesterov or adam.")
_LR = flags.DEFINE_float("learning_rate", None, "Peak learning rate η.")
_MOMENTUM = flags.DEFINE_float("momentum", None, "β of momentum and nesterov.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", None, "Weight decay λ (AdamW for adam).")
_SCHEDULE = flags.DEFINE_string("schedule", None, "constant, cosine or warmup_cosine.")
_WARMUP = flags.DEFINE_integer("warmup_epochs", None, "Linear warmup for warmup_cosine.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Global minibatch size.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Epochs to train (a resumed run continues).")
_SEED = flags.DEFINE_integer("seed", None, "Seeds the split, the init and the shuffling.")
_BACKWARD = flags.DEFINE_enum(
    "backward", None, ["custom", "autodiff"], "custom: the δ recursion; autodiff: jax.grad."
)
_CLIP = flags.DEFINE_float(
    "clip_per_example", None, "Clip each example's gradient to this norm (DP-SGD); unset: off."
)
_PRECISION = flags.DEFINE_enum("precision", None, ["float32", "float64"], "Float dtype.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Outputs; reuse one to resume from it.")
_CKPT = flags.DEFINE_integer("checkpoint_interval", None, "Epochs between checkpoints.")
_EVAL = flags.DEFINE_integer("eval_interval", None, "Epochs between evaluations.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder of MNIST/Fashion-MNIST IDX files.")
_DATA_PATH = flags.DEFINE_string("data_path", None, "A .npz or .csv file for npz/csv.")
_TARGET = flags.DEFINE_string("target_column", None, "Target column of a csv file.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", None, "Size of a synthetic data set.")
_NUM_DEVICES = flags.DEFINE_integer("num_devices", None, "Devices for data parallelism.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 in a multi-host run."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, from 0.")


def config_from_flags() -> runner.RunConfig:
    """The RunConfig of the command line; unset flags keep the data set's defaults."""

    def ints(values):
        return None if values is None else tuple(int(v) for v in values)

    return runner.make_config(
        _DATASET.value,
        hidden_sizes=ints(_HIDDEN.value),
        sizes=ints(_SIZES.value),
        activation=_ACTIVATION.value,
        output_activation=_OUTPUT.value,
        loss=_LOSS.value,
        use_bias=False if _NO_BIAS.value else None,
        optimizer=_OPTIMIZER.value,
        learning_rate=_LR.value,
        momentum=_MOMENTUM.value,
        weight_decay=_WEIGHT_DECAY.value,
        schedule=_SCHEDULE.value,
        warmup_epochs=_WARMUP.value,
        batch_size=_BATCH.value,
        epochs=_EPOCHS.value,
        seed=_SEED.value,
        backward=_BACKWARD.value,
        clip_per_example=_CLIP.value,
        precision=_PRECISION.value,
        workdir=_WORKDIR.value,
        checkpoint_interval=_CKPT.value,
        eval_interval=_EVAL.value,
        data_dir=_DATA_DIR.value,
        data_path=_DATA_PATH.value,
        target_column=_TARGET.value,
        num_samples=_NUM_SAMPLES.value,
        num_devices=_NUM_DEVICES.value,
    )


def main(argv: list[str]) -> int:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: flags look like --name=value.")
    try:
        config = config_from_flags()
        runner.check_config(config)
    except ValueError as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    if _COORDINATOR.value or _NUM_PROCESSES.value:
        if None in (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value):
            print(
                "train.py: a multi-host run needs --coordinator_address, --num_processes and "
                "--process_id together.",
                file=sys.stderr,
            )
            return 2
        parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if parallel.is_primary():
        print(
            f"jaxbp train: {config.dataset}, backward={config.backward}, workdir {config.workdir}"
        )
    try:
        summary = runner.run(config)
    except (ValueError, FileNotFoundError, runner.NonFiniteLossError) as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 1
    if not parallel.is_primary():
        return 0
    quality = (
        f"test accuracy {100 * summary['test_accuracy']:.2f}%"
        if "test_accuracy" in summary
        else f"test R² {summary['test_r2']:.4f}"
    )
    print(
        f"\n{quality}, test loss {summary['test_loss']:.4f} after {summary['epochs']} epochs "
        f"({summary['steps']} steps, {summary['seconds']:.1f} s, sizes {summary['sizes']}, "
        f"{summary['num_devices']} device(s)).\nOutputs in {config.workdir}: summary.json, "
        "metrics.jsonl, curves.png, tensorboard/, checkpoints/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
