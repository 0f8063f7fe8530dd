"""The configuration of a training run: one declaration per hyperparameter.

`Config` declares every setting once, with its default and a one-line reason; the
command line (experiments/train.py) is generated from it, so its help shows every default
and choice. `DATASET_DEFAULTS` holds what differs per data set. `make_config(dataset,
**overrides)` combines the two and `jaxbp.run.config_checks.validate` refuses bad values before
any work.

Each field also carries its *resume rule* (`field_rule`), used when a workdir already
holds a run:

* ``"fixed"``: defines the data, the network or the random stream; a different value is
  a different run, refused on resume (use a new workdir);
* ``"override"``: changes the optimisation from the checkpoint on; refused on resume
  unless named in ``allow_changes``;
* ``"free"``: bookkeeping (epochs to reach, intervals, devices), may change at any time.

Errors are `ConfigError` in the library's own words (``learning_rate=-1.0: ...``); the
command line turns the field name into its flag (``--learning_rate=-1.0: ...``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxbp import activations, backprop, losses, privacy, training
from jaxbp import data as data_lib
from jaxbp.data.targets import MAX_CLASSES

AUTO = "auto"  # output activation and loss follow the task the data define
Sweep = tuple[tuple[str, tuple[float, ...]], ...]  # ((name, (v1, v2, ...)), ...)
# What a sweep may vary: numbers inside the step. Anything else changes shapes or the program.
SWEEPABLE = (
    "learning_rate",
    "weight_decay",
    "momentum",
    "clip_per_example",
    "dp_noise_multiplier",
)
MAX_MEMBERS = 4096  # members share one device's memory; more is a mistake, not a plan
PRECISIONS = ("float32", "float64")
MAX_SEED = 2**32 - 1  # a PRNG seed is a uint32


class ConfigError(ValueError):
    """A setting is invalid; ``field`` names it, ``value`` is what was given."""

    def __init__(self, field: str, value: Any, problem: str):
        self.field, self.value, self.problem = field, value, problem
        super().__init__(f"{field}={format_value(value)}: {problem}")


def format_value(value: Any) -> str:
    """A value as the command line writes it (tuples as ``64,64``, sweeps as ``lr=1,2``)."""
    if isinstance(value, (tuple, list)) and value and all(is_sweep_item(v) for v in value):
        return " ".join(f"{name}={format_value(tuple(values))}" for name, values in value)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def is_sweep_item(item: Any) -> bool:
    """Whether ``item`` is one ``(name, values)`` pair of a sweep."""
    return (
        isinstance(item, (tuple, list))
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], (tuple, list))
    )


def parse_sweep(items: list[str] | tuple[str, ...]) -> Sweep:
    """``["learning_rate=1e-3,3e-3", ...]`` as a sweep, ``(("learning_rate", (1e-3, 3e-3)),)``.

    Raises:
      ConfigError: for an item that is not ``NAME=v1,v2,...`` with numbers.
    """
    sweep = []
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if name in FIELDS and name not in SWEEPABLE:
            refuse_unsweepable(name, item)
        try:
            numbers = tuple(float(v) for v in values.split(",") if v.strip() != "")
        except ValueError:
            numbers = ()
        if not sep or not name or not numbers:
            raise ConfigError(
                "sweep",
                item,
                "expected NAME=v1,v2,... with numbers, e.g. sweep=learning_rate=1e-3,3e-3.",
            )
        sweep.append((name.strip(), numbers))
    return tuple(sweep)


def refuse_unsweepable(name: str, given: Any) -> None:
    """Raises the `ConfigError` of a sweep over ``name``, which changes the program."""
    raise ConfigError(
        "sweep",
        given,
        f"{name} changes the network's shapes or the compiled program, so its members "
        f"cannot share one program; run each {name} as a separate run (one workdir each). "
        f"A sweep varies {', '.join(SWEEPABLE)}.",
    )


def _field(default: Any, help: str, rule: str, choices: tuple[str, ...] | None = None) -> Any:
    return dataclasses.field(
        default=default, metadata={"help": help, "rule": rule, "choices": choices}
    )


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a training run (the workdir is given beside it)."""

    # Data.
    dataset: str = _field(
        "digits", "Data set: 8x8 digits train in seconds on a CPU.", "fixed", data_lib.DATASETS
    )
    data_path: str | None = _field(None, "The .npz or .csv file of dataset npz or csv.", "fixed")
    target_column: str | None = _field(None, "The target column of a csv data set.", "fixed")
    test_path: str | None = _field(
        None,
        "A csv data set's own test file, with the columns of data_path; unset: the test set is "
        "test_fraction of data_path.",
        "fixed",
    )
    task: str = _field(
        AUTO,
        "What the target of an npz or csv is; auto: names, one-hot rows, integer dtypes and "
        f"integers with at most {MAX_CLASSES} distinct values are classes, other numbers "
        f"values (an integer-dtype target with over {MAX_CLASSES} values, most of them "
        "seen once, is refused: say which). Built-in sets have their own.",
        "fixed",
        data_lib.TASKS,
    )
    data_dir: str | None = _field(None, "Folder of the MNIST/Fashion-MNIST IDX files.", "fixed")
    num_samples: int | None = _field(
        None, "Size of a generated set (moons, spirals, teacher); unset: 1000.", "fixed"
    )
    data_seed: int = _field(
        0, "Seeds the train/val/test split (and generated sets): fixed, so runs compare.", "fixed"
    )
    val_fraction: float = _field(
        0.1, "Share of the examples for validation (early stopping, best epoch).", "fixed"
    )
    test_fraction: float = _field(
        0.2,
        "Share of the examples for test; unused where the data bring their own test set "
        "(mnist, fashion_mnist, an npz with x_test, a csv with test_path).",
        "fixed",
    )
    # Model.
    hidden_sizes: tuple[int, ...] = _field(
        (128,), "Hidden widths, e.g. 64,64; empty for no hidden layer.", "fixed"
    )
    sizes: tuple[int, ...] | None = _field(
        None, "All widths n0,...,nL instead of hidden_sizes (checked against the data).", "fixed"
    )
    activation: str = _field(
        "tanh", "Hidden activation g.", "fixed", tuple(activations.HIDDEN_ACTIVATIONS)
    )
    output_activation: str = _field(
        AUTO,
        "Output activation f; auto: softmax for classes, sigmoid for two, identity for values.",
        "fixed",
        (AUTO, *activations.OUTPUT_ACTIVATIONS),
    )
    loss: str = _field(
        AUTO,
        "Loss; auto: the one that fits the output (softmax_cross_entropy, bce or mse).",
        "fixed",
        (AUTO, *losses.LOSSES),
    )
    use_bias: bool = _field(
        True, "Layers with biases b (the L-layer derivation, eqs. (3.x), has none).", "fixed"
    )
    precision: str = _field("float32", "Float dtype of data and parameters.", "fixed", PRECISIONS)
    # Optimisation.
    optimizer: str = _field(
        "adam", "Optimizer; adam needs no tuning here.", "fixed", training.OPTIMIZERS
    )
    learning_rate: float = _field(3e-3, "Peak learning rate η.", "override")
    momentum: float = _field(
        0.9, "β of the momentum and nesterov optimizers, in [0, 1).", "override"
    )
    weight_decay: float = _field(
        0.0, "Weight decay λ >= 0 (decoupled for adam, L2 for the SGD family).", "override"
    )
    schedule: str = _field(
        "cosine", "Learning-rate schedule over the whole run.", "override", training.SCHEDULES
    )
    warmup_epochs: int = _field(0, "Linear warmup epochs of warmup_cosine.", "override")
    batch_size: int = _field(32, "Global minibatch size (a multiple of the devices).", "fixed")
    epochs: int = _field(30, "Epochs to reach; raise it to continue a finished run.", "free")
    seed: int = _field(0, "Seeds the initial parameters and the order of the examples.", "fixed")
    backward: str = _field(
        "custom",
        "custom: the hand-written δ recursion; autodiff: jax.grad.",
        "override",
        backprop.BACKWARDS,
    )
    clip_per_example: float | None = _field(
        None, "Clip each example's gradient to this norm (DP-SGD style); unset: off.", "override"
    )
    # Differential privacy (DP-SGD, jaxbp.dp_sgd): on when a noise multiplier is given or
    # calibrated; clip_per_example is its clip norm C.
    dp_noise_multiplier: float | None = _field(
        None,
        "DP-SGD noise multiplier σ (noise N(0, σ²C²) on the clipped sum, Poisson batches of "
        "rate batch_size/N); unset: no DP unless dp_target_epsilon.",
        "fixed",
    )
    dp_target_epsilon: float | None = _field(
        None,
        "DP-SGD with the smallest σ whose epochs spend at most this ε at dp_delta; unset: "
        "dp_noise_multiplier decides.",
        "fixed",
    )
    dp_delta: float | None = _field(
        None, "δ of DP-SGD's (ε, δ); unset: 1/N_train rounded down to a power of 10.", "fixed"
    )
    dp_accountant: str = _field(
        "rdp",
        "DP-SGD's accountant: rdp (Rényi, the common upper bound) or pld (tighter).",
        "fixed",
        privacy.ACCOUNTANTS,
    )
    # Members: many models in one compiled program (jaxbp.training.members).
    repeats: int = _field(
        1, "Members trained together, seeded seed..seed+repeats-1 (the split stays).", "fixed"
    )
    sweep: Sweep = _field(
        (),
        "NAME=v1,v2,... trains a member per value (repeatable, a grid with repeats); "
        f"NAME is one of {', '.join(SWEEPABLE)}.",
        "fixed",
    )
    # Bookkeeping.
    checkpoint_interval: int = _field(5, "Epochs between checkpoints (and at the end).", "free")
    checkpoint_seconds: float = _field(
        10.0,
        "Seconds at least between two interval checkpoints: a kill loses at most about this "
        "much training, and a short run saves once, at the end. 0: every interval.",
        "free",
    )
    eval_interval: int = _field(1, "Epochs between evaluations (and at the end).", "free")
    early_stopping_patience: int = _field(
        0, "Stop after this many epochs without a better val loss; 0: never.", "free"
    )
    num_devices: int | None = _field(
        None,
        "Devices to train on (members spread over them, data parallel inside a member); unset: "
        "all that JAX sees, except on CPU, where a single run takes one and a member set one "
        "per member group (forced host devices share the cores).",
        "free",
    )

    def __post_init__(self):
        # A stored run's JSON gives lists: the sweep is kept as tuples, comparable and hashable.
        if isinstance(self.sweep, (tuple, list)) and all(is_sweep_item(v) for v in self.sweep):
            sweep = tuple((name, tuple(values)) for name, values in self.sweep)
            object.__setattr__(self, "sweep", sweep)


@dataclasses.dataclass(frozen=True)
class Member:
    """One member of a run's set: its index, seed and swept values (``{name: value}``)."""

    index: int
    seed: int
    values: dict[str, float]


def member_grid(config: Config) -> tuple[Member, ...]:
    """Every combination of the swept values and the repeats, in order.

    The first swept name varies slowest and the repeat fastest: for ``sweep=(("lr", (a, b)),)``
    and ``repeats=2`` the members are ``(a, seed), (a, seed+1), (b, seed), (b, seed+1)``, so
    every swept value is trained on the same seeds.
    """
    grid: list[dict[str, float]] = [{}]
    for name, values in config.sweep:
        grid = [{**point, name: v} for point in grid for v in values]
    return tuple(
        Member(i, config.seed + r, point)
        for i, (point, r) in enumerate((point, r) for point in grid for r in range(config.repeats))
    )


def member_config(config: Config, member: Member) -> Config:
    """The single run a member is: its seed and swept values, no repeats or sweep."""
    changes: dict[str, Any] = {**member.values, "seed": member.seed, "repeats": 1, "sweep": ()}
    return dataclasses.replace(config, **changes)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}


def is_private(config: Config) -> bool:
    """Whether the run is DP-SGD: a noise multiplier given, swept or calibrated."""
    swept = any(name == "dp_noise_multiplier" for name, _ in config.sweep)
    return swept or config.dp_noise_multiplier is not None or config.dp_target_epsilon is not None


def field_rule(name: str) -> str:
    """The resume rule of a field: ``"fixed"``, ``"override"`` or ``"free"``."""
    return FIELDS[name].metadata["rule"]


def field_help(name: str) -> str:
    """The one-line reason of a field."""
    return FIELDS[name].metadata["help"]


def field_choices(name: str) -> tuple[str, ...] | None:
    """The allowed values of a field, or None when it is not a choice."""
    return FIELDS[name].metadata["choices"]


# What differs per data set, so that `--dataset=NAME` alone gives a good run: each data
# set's recipe, declared with it in `jaxbp.data.sources.SOURCES`.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    name: source.recipe for name, source in data_lib.sources.SOURCES.items()
}


def make_config(dataset: str = "digits", **overrides: Any) -> Config:
    """The config of ``dataset``'s defaults with ``overrides`` applied.

    Raises:
      ConfigError: for an unknown data set or field, or ``sizes`` given with
        ``hidden_sizes``.
    """
    if dataset not in DATASET_DEFAULTS:
        raise ConfigError("dataset", dataset, f"unknown; expected one of {', '.join(DATASETS)}.")
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ConfigError(unknown[0], overrides[unknown[0]], "is not a setting of Config.")
    if overrides.get("sizes") is not None and "hidden_sizes" in overrides:
        raise ConfigError(
            "sizes",
            overrides["sizes"],
            "given together with hidden_sizes; give one of them (sizes includes the input and "
            "output widths).",
        )
    fields = {**DATASET_DEFAULTS[dataset], **overrides, "dataset": dataset}
    return Config(**fields)


DATASETS = data_lib.DATASETS


def resolve_head(config: Config, task: str, num_outputs: int) -> tuple[str, str]:
    """The output activation and loss of a run, ``auto`` resolved from the task.

    Several classes: softmax + softmax_cross_entropy; two classes (one {0, 1} column):
    sigmoid + bce; regression: identity + mse. A loss or output given explicitly decides
    the other where it must (bce needs sigmoid, softmax_cross_entropy needs softmax).

    Raises:
      ConfigError: when the pair cannot fit the targets (softmax over one unit, bce or
        softmax_cross_entropy on regression targets).
    """
    loss, output = config.loss, config.output_activation
    if output == AUTO:
        if loss != AUTO:
            output = losses.default_output_activation(loss)
        elif task == "regression":
            output = "identity"
        else:
            output = "softmax" if num_outputs > 1 else "sigmoid"
    if loss == AUTO:
        if output == "softmax":
            loss = "softmax_cross_entropy"
        elif output == "sigmoid" and task == "classification":
            loss = "bce"
        else:
            loss = "mse"
    if output == "softmax" and num_outputs == 1:
        raise ConfigError(
            "output_activation",
            output,
            "a softmax over one output unit is always 1 and learns nothing; the data have "
            "two classes, so use sigmoid (with bce or mse), or leave it auto.",
        )
    if task == "regression" and loss in ("bce", "softmax_cross_entropy"):
        raise ConfigError(
            "loss",
            loss,
            f"fits class targets, but dataset={config.dataset} is a regression; use mse, "
            "half_mse or sse, or leave it auto.",
        )
    return output, loss
