"""A training run as a researcher expects one: data, compiled epochs, logs, checkpoints.

`run(config)` loads a data set, trains an MLP with compiled epochs (`jaxbp.train`), and
leaves in ``config.workdir``: ``metrics.jsonl`` (one line per evaluation), TensorBoard
events, ``curves.png``, ``summary.json`` and orbax checkpoints. Re-running with the same
workdir resumes from the last checkpoint, and ends exactly where a straight run would.
Uses the ``experiments`` extra (orbax-checkpoint, tensorboardX, matplotlib, scikit-learn).
"""

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbp import data as data_lib
from jaxbp import losses, parallel, per_example, run_outputs, train
from jaxbp.mlp import MLP, init_params


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run (the flags of experiments/train.py)."""

    dataset: str = "digits"
    hidden_sizes: tuple[int, ...] = (128,)
    sizes: tuple[int, ...] | None = None  # full (n0, ..., nL); checked against the data
    activation: str = "tanh"
    output_activation: str = "softmax"
    loss: str = "softmax_cross_entropy"
    use_bias: bool = True
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: int = 0
    batch_size: int = 32
    epochs: int = 30
    seed: int = 0
    backward: str = "custom"
    clip_per_example: float | None = None  # C of DP-SGD per-example clipping; None: off
    precision: str = "float32"
    workdir: str = ""
    checkpoint_interval: int = 5
    eval_interval: int = 1
    data_dir: str | None = None
    data_path: str | None = None
    target_column: str | None = None
    num_samples: int | None = None
    num_devices: int | None = None


# Per-data-set defaults: `--dataset=NAME` alone gives a good run (targets in README.md).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {},
    # seed 000's network: one sigmoid unit on the 30 features, MSE.
    "breast_cancer": dict(
        hidden_sizes=(),
        output_activation="sigmoid",
        loss="mse",
        learning_rate=0.05,
        schedule="constant",
        epochs=20,
        optimizer="sgd",
    ),
    "iris": dict(hidden_sizes=(16,), batch_size=8, epochs=60, learning_rate=1e-2),
    "wine": dict(hidden_sizes=(16,), batch_size=8, epochs=40, learning_rate=1e-2),
    "diabetes": dict(
        hidden_sizes=(32,),
        activation="relu",
        output_activation="identity",
        loss="mse",
        learning_rate=3e-3,
        epochs=60,
    ),
    # The classic 2-2-1 sigmoid network on the 4 points of the truth table, full-batch SGD.
    # About 70% of random inits solve it (14 of seeds 0-19); the rest stall on the known
    # plateau at 50-75% accuracy: seed 0 solves it.
    "xor": dict(
        hidden_sizes=(2,),
        activation="sigmoid",
        output_activation="sigmoid",
        loss="bce",
        optimizer="sgd",
        learning_rate=2.0,
        batch_size=4,
        epochs=2000,
        schedule="constant",
        checkpoint_interval=500,
        eval_interval=100,
    ),
    "moons": dict(
        hidden_sizes=(16,),
        output_activation="sigmoid",
        loss="bce",
        epochs=40,
    ),
    "spirals": dict(
        hidden_sizes=(64, 64),
        activation="relu",
        output_activation="sigmoid",
        loss="bce",
        epochs=100,
        checkpoint_interval=20,
        eval_interval=5,
    ),
    "teacher": dict(
        hidden_sizes=(32,),
        output_activation="identity",
        loss="mse",
        learning_rate=1e-2,
    ),
    "mnist": dict(
        hidden_sizes=(256,),
        activation="relu",
        batch_size=128,
        epochs=10,
        learning_rate=1e-3,
    ),
    "fashion_mnist": dict(
        hidden_sizes=(256,),
        activation="relu",
        batch_size=128,
        epochs=10,
        learning_rate=1e-3,
    ),
    "npz": {},
    "csv": {},
}


def make_config(dataset: str, **overrides: Any) -> RunConfig:
    """The config of ``dataset``'s defaults with ``overrides`` (None means "default")."""
    if dataset not in DATASET_DEFAULTS:
        raise ValueError(
            f"unknown dataset {dataset!r}: expected one of {', '.join(DATASET_DEFAULTS)}."
        )
    fields = {"dataset": dataset, **DATASET_DEFAULTS[dataset]}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if not fields.get("workdir"):
        fields["workdir"] = os.path.join("runs", f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    return RunConfig(**fields)


def check_config(config: RunConfig) -> None:
    """Rejects bad settings before any data or device work, with one clear line each."""
    positive = {
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "checkpoint_interval": config.checkpoint_interval,
        "eval_interval": config.eval_interval,
    }
    for name, value in positive.items():
        if not value > 0:
            raise ValueError(f"--{name} must be positive, got {value}.")
    if config.clip_per_example is not None and not config.clip_per_example > 0:
        raise ValueError(
            f"--clip_per_example must be positive, got {config.clip_per_example}: it is the "
            "largest per-example gradient norm kept; leave it unset for no clipping."
        )
    if config.clip_per_example is not None and config.backward != "custom":
        raise ValueError(
            "--clip_per_example scales the rows of the hand-written δ: use --backward=custom."
        )
    if config.warmup_epochs < 0 or config.weight_decay < 0:
        raise ValueError("--warmup_epochs and --weight_decay must be >= 0.")
    for name, allowed in (
        ("optimizer", train.OPTIMIZERS),
        ("schedule", train.SCHEDULES),
        ("backward", ("custom", "autodiff")),
        ("precision", ("float32", "float64")),
    ):
        if getattr(config, name) not in allowed:
            raise ValueError(
                f"--{name}={getattr(config, name)!r} is not one of {', '.join(allowed)}."
            )
    if config.dataset not in data_lib.DATASETS:
        raise ValueError(
            f"unknown dataset {config.dataset!r}: expected one of {', '.join(data_lib.DATASETS)}."
        )
    losses.get_loss(config.loss, config.output_activation)
    # Builds (and so validates) the activations and widths.
    MLP((1, *config.hidden_sizes, 1), config.activation, config.output_activation)


def build_model(config: RunConfig, dataset: data_lib.Dataset) -> MLP:
    """The MLP for the data: ``(num_features, *hidden_sizes, num_outputs)``."""
    sizes = (dataset.num_features, *config.hidden_sizes, dataset.num_outputs)
    if config.sizes is not None:
        if len(config.sizes) < 2 or (config.sizes[0], config.sizes[-1]) != (sizes[0], sizes[-1]):
            raise ValueError(
                f"--sizes={','.join(map(str, config.sizes))} does not match {config.dataset}: "
                f"it has {sizes[0]} features and {sizes[-1]} outputs, so the sizes must start "
                f"with {sizes[0]} and end with {sizes[-1]}."
            )
        sizes = tuple(config.sizes)
    return MLP(sizes, config.activation, config.output_activation, config.use_bias)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


def run(config: RunConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains, evaluates, logs and checkpoints one run (see the module docstring).

    Returns:
      The summary written to ``summary.json``.
    """
    check_config(config)
    # A context, not a global flip: a float64 run leaves the process as it found it.
    with jax.enable_x64(config.precision == "float64"):
        return _run(config, log)


class _Setup(NamedTuple):
    """What a run builds from its config before training."""

    dataset: data_lib.Dataset
    model: MLP
    optimizer: optax.GradientTransformation
    steps_per_epoch: int
    initial_state: dict[str, Any]  # {"params", "opt_state", "epoch", "key"}


def _setup(config: RunConfig) -> _Setup:
    dataset = data_lib.load_dataset(
        config.dataset,
        seed=config.seed,
        data_dir=config.data_dir,
        path=config.data_path,
        target_column=config.target_column,
        num_samples=config.num_samples,
        dtype=np.dtype(config.precision),
    )
    steps_per_epoch = data_lib.batches_per_epoch(len(dataset.x_train), config.batch_size)
    model = build_model(config, dataset)
    schedule = train.make_schedule(
        config.learning_rate,
        config.schedule,
        total_steps=config.epochs * steps_per_epoch,
        warmup_steps=config.warmup_epochs * steps_per_epoch,
    )
    optimizer = train.make_optimizer(
        config.optimizer, schedule, momentum=config.momentum, weight_decay=config.weight_decay
    )
    key = jax.random.PRNGKey(config.seed)  # raw uint32 key: orbax stores it as an array
    params = init_params(jax.random.fold_in(key, 0), model, dtype=jnp.dtype(config.precision))
    state = {"params": params, "opt_state": optimizer.init(params), "epoch": 0, "key": key}
    return _Setup(dataset, model, optimizer, steps_per_epoch, state)


def restore_state(config: RunConfig, epoch: int | None = None) -> dict[str, Any]:
    """The train state saved by the run of ``config`` (its latest checkpoint by default).

    Returns:
      ``{"params", "opt_state", "epoch", "key"}``.
    """
    with jax.enable_x64(config.precision == "float64"):
        setup = _setup(config)
        checkpointer = _checkpointer(config, setup.model)
        epoch = checkpointer.latest_epoch() if epoch is None else epoch
        if epoch is None:
            raise FileNotFoundError(f"no checkpoint in {config.workdir}/checkpoints.")
        state = checkpointer.restore(epoch, setup.initial_state)
        checkpointer.close()
        return state


def _run(config: RunConfig, log: Callable[[str], None]) -> dict[str, Any]:
    mesh = parallel.make_mesh(config.num_devices)
    parallel.check_batch_size(config.batch_size, mesh)
    dataset, model, optimizer, steps_per_epoch, state = _setup(config)
    grad_fn = None
    if config.clip_per_example is not None:  # the δ rows are clipped: hand-written only
        grad_fn = per_example.make_clipped_grad_fn(model, config.loss, config.clip_per_example)
    step = train.make_train_step(
        model,
        config.loss,
        optimizer,
        backward=config.backward,
        grad_fn=grad_fn,
        grad_norm=False,  # the run records the step losses only
    )
    epoch_fn = train.make_epoch(
        step,
        config.batch_size,
        num_examples=len(dataset.x_train),
        shard_batch=parallel.shard_batch(mesh),
        donate=True,  # the loop below keeps only the returned state
    )
    splits = {
        name: parallel.replicate(
            (getattr(dataset, f"x_{name}"), getattr(dataset, f"y_{name}")), mesh
        )
        for name in ("train", "val", "test")
    }
    evaluate_jit = jax.jit(
        lambda params, x, y: train.evaluate(model, config.loss, params, x, y, dataset.task)
    )

    def evaluate(params, split: str) -> dict[str, float]:
        metrics = evaluate_jit(params, *splits[split])
        return {name: float(parallel.to_host(value)) for name, value in metrics.items()}

    primary = parallel.is_primary()  # only process 0 writes logs, metrics and summaries
    log = log if primary else (lambda _: None)
    os.makedirs(config.workdir, exist_ok=True)
    writer = run_outputs.RunOutputs(config.workdir, dataset.task) if primary else None
    checkpointer = _checkpointer(config, model)  # every process takes part in a save
    start_epoch = 0
    latest = checkpointer.latest_epoch()
    if latest is not None:
        state = checkpointer.restore(latest, state)
        start_epoch = int(state["epoch"])
        log(f"resuming from the checkpoint of epoch {start_epoch} in {config.workdir}")
    if writer:
        writer.truncate_after(start_epoch)

    x_train, y_train = parallel.put_training_data((dataset.x_train, dataset.y_train), mesh)
    params, opt_state, key = parallel.replicate(
        (state["params"], state["opt_state"], state["key"]), mesh
    )
    started = time.perf_counter()
    for epoch in range(start_epoch + 1, config.epochs + 1):
        t0 = time.perf_counter()
        new_params, new_opt_state, metrics = epoch_fn(
            params, opt_state, x_train, y_train, key, epoch
        )
        step_losses = parallel.to_host(metrics["loss"])  # the one host sync of the epoch
        seconds = time.perf_counter() - t0
        bad = np.flatnonzero(~np.isfinite(step_losses))
        if bad.size:
            global_step = (epoch - 1) * steps_per_epoch + int(bad[0]) + 1
            raise NonFiniteLossError(
                f"the loss became {step_losses[bad[0]]} at step {global_step} (epoch {epoch}); "
                f"the last good checkpoint (epoch {checkpointer.latest_epoch()}) is kept in "
                f"{config.workdir}. Lower --learning_rate or check the data."
            )
        params, opt_state = new_params, new_opt_state
        if epoch % config.eval_interval == 0 or epoch == config.epochs:
            record = {
                "epoch": epoch,
                "step": epoch * steps_per_epoch,
                "epoch_loss": float(step_losses.mean()),
            }
            for split in ("train", "val"):
                record.update({f"{split}_{k}": v for k, v in evaluate(params, split).items()})
            record["steps_per_second"] = steps_per_epoch / seconds
            if writer:
                writer.write(record)
            log(_progress_line(record, config.epochs, eta=(config.epochs - epoch) * seconds))
        if epoch % config.checkpoint_interval == 0 or epoch == config.epochs:
            checkpointer.save(
                epoch, {"params": params, "opt_state": opt_state, "epoch": epoch, "key": key}
            )
    checkpointer.close()

    summary = {
        **{f"test_{k}": v for k, v in evaluate(params, "test").items()},
        "train_loss": evaluate(params, "train")["loss"],
        "epochs": config.epochs,
        "steps": config.epochs * steps_per_epoch,
        "seconds": time.perf_counter() - started,
        "backward": config.backward,
        "num_devices": mesh.size,
        "num_processes": jax.process_count(),
        "sizes": list(model.sizes),
        "flags": dataclasses.asdict(config),
    }
    if writer:
        writer.finish(summary)
    return summary


def _checkpointer(config: RunConfig, model: MLP):
    from jaxbp.checkpoint import Checkpointer

    description = {
        "sizes": list(model.sizes),
        "activation": model.activation,
        "output_activation": model.output_activation,
        "use_bias": model.use_bias,
        "optimizer": config.optimizer,
        "precision": config.precision,
    }
    return Checkpointer(os.path.join(config.workdir, "checkpoints"), description)


def _progress_line(record: dict[str, float], epochs: int, eta: float) -> str:
    quality = "accuracy" if "val_accuracy" in record else "r2"
    fmt = (lambda v: f"{100 * v:.2f}%") if quality == "accuracy" else (lambda v: f"{v:.4f}")
    return (
        f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}  "
        f"loss {record['epoch_loss']:.4f}  "
        f"train {quality} {fmt(record[f'train_{quality}'])}  "
        f"val {quality} {fmt(record[f'val_{quality}'])}  "
        f"{record['steps_per_second']:,.0f} steps/s  ETA {math.ceil(eta)}s"
    )
