"""The checks of a `jaxbp.run.config.Config`: `validate` refuses bad settings before any work.

Every refusal is a `ConfigError` naming the field, the value given and what would be right:
a number out of its range, a choice not among the field's choices, a data field that does
not apply to the data set (or one it needs and lacks, or a task it does not have), split
fractions that leave no training data, a network the losses and activations
cannot build, and a sweep or a repeat count that cannot form one compiled member set.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from jaxbp import losses
from jaxbp.data import sources
from jaxbp.run.config import (
    AUTO,
    FIELDS,
    MAX_MEMBERS,
    MAX_SEED,
    SWEEPABLE,
    Config,
    ConfigError,
    field_choices,
    is_private,
    is_sweep_item,
    refuse_unsweepable,
)


def _check_choice(config: Config, name: str) -> None:
    choices = field_choices(name)
    value = getattr(config, name)
    if choices is not None and value not in choices:
        raise ConfigError(name, value, f"expected one of {', '.join(choices)}.")


def _check_int(config: Config, name: str, low: int, high: float = math.inf) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bound = f"in [{low}, {high}]" if high != math.inf else f">= {low}"
        raise ConfigError(name, value, f"must be an integer {bound}.")


def _check_float(
    config: Config,
    name: str,
    low: float,
    *,
    low_open: bool,
    high: float = math.inf,
    high_open: bool = False,
    why: str = "",
) -> None:
    value = getattr(config, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        if high == math.inf:
            interval = f"{'>' if low_open else '>='} {low:g}"
        else:
            interval = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(name, value, f"must be a finite number {interval}{why}.")


def validate(config: Config) -> None:
    """Refuses bad settings before any data or device work, one clear line each.

    Raises:
      ConfigError: naming the field, the value given and what would be right.
    """
    for name in FIELDS:
        _check_choice(config, name)
    _check_float(config, "learning_rate", 0.0, low_open=True, why=": the step size η")
    _check_float(config, "momentum", 0.0, low_open=False, high=1.0, high_open=True)
    _check_float(config, "weight_decay", 0.0, low_open=False)
    _check_float(config, "checkpoint_seconds", 0.0, low_open=False)
    if config.clip_per_example is not None:
        _check_float(
            config,
            "clip_per_example",
            0.0,
            low_open=True,
            why="; it is the largest per-example gradient norm kept (unset: no clipping)",
        )
        if config.backward != "custom":
            raise ConfigError(
                "backward",
                config.backward,
                "clip_per_example scales the rows of the hand-written δ: use backward=custom.",
            )
    for name in ("batch_size", "epochs", "checkpoint_interval", "eval_interval"):
        _check_int(config, name, 1)
    for name in ("warmup_epochs", "early_stopping_patience"):
        _check_int(config, name, 0)
    for name in ("seed", "data_seed"):
        _check_int(config, name, 0, MAX_SEED)
    if config.schedule == "warmup_cosine" and config.warmup_epochs >= config.epochs:
        raise ConfigError(
            "warmup_epochs",
            config.warmup_epochs,
            f"must be below epochs={config.epochs} for the warmup_cosine schedule.",
        )
    if config.warmup_epochs and config.schedule != "warmup_cosine":
        raise ConfigError(
            "warmup_epochs",
            config.warmup_epochs,
            f"applies to schedule=warmup_cosine only, not {config.schedule}.",
        )
    if config.num_devices is not None:
        _check_int(config, "num_devices", 1)
    _check_data_fields(config)
    _check_model_fields(config)
    _check_privacy(config)
    _check_members(config)


def _check_privacy(config: Config) -> None:
    """DP-SGD's settings; the checks that need the data's size are `jaxbp.run.privacy_plan`'s."""
    if config.dp_noise_multiplier is not None:
        _check_float(
            config,
            "dp_noise_multiplier",
            0.0,
            low_open=True,
            why=": the noise's standard deviation over the clip norm (unset: no DP)",
        )
    if config.dp_target_epsilon is not None:
        _check_float(config, "dp_target_epsilon", 0.0, low_open=True, why=": the ε to spend")
        if config.dp_noise_multiplier is not None:
            raise ConfigError(
                "dp_target_epsilon",
                config.dp_target_epsilon,
                f"given together with dp_noise_multiplier={config.dp_noise_multiplier}; give "
                "one of them (the target calibrates the noise multiplier).",
            )
    if not is_private(config):
        given = {
            "dp_delta": config.dp_delta is not None,
            "dp_accountant": config.dp_accountant != "rdp",
        }
        stray = [name for name, is_set in given.items() if is_set]
        if stray:
            raise ConfigError(
                stray[0],
                getattr(config, stray[0]),
                "applies to DP-SGD only; give dp_noise_multiplier or dp_target_epsilon, or "
                "drop it.",
            )
        return
    if config.dp_delta is not None:
        _check_float(
            config, "dp_delta", 0.0, low_open=True, high=1.0, high_open=True, why=" below 1/N"
        )
    if config.clip_per_example is None:
        raise ConfigError(
            "clip_per_example",
            None,
            "is needed by DP-SGD: it is the clip norm C that bounds each example's "
            "gradient; give it, e.g. clip_per_example=1.",
        )


def _check_members(config: Config) -> None:
    """repeats and sweep: a grid of members that differ only in numbers inside the step."""
    _check_int(config, "repeats", 1, MAX_MEMBERS)
    if config.seed + config.repeats - 1 > MAX_SEED:
        raise ConfigError(
            "repeats", config.repeats, f"seeds past {MAX_SEED} from seed={config.seed}."
        )
    sweep = config.sweep
    if not isinstance(sweep, tuple) or not all(is_sweep_item(v) for v in sweep):
        raise ConfigError("sweep", sweep, "expected NAME=v1,v2,... pairs.")
    names = [name for name, _ in sweep]
    for name, values in sweep:
        if name not in FIELDS:
            raise ConfigError("sweep", sweep, f"{name} is not a setting of Config.")
        if name not in SWEEPABLE:
            refuse_unsweepable(name, sweep)
        if names.count(name) > 1:
            raise ConfigError("sweep", sweep, f"{name} is swept twice; give its values once.")
        if not values or len(set(values)) != len(values):
            raise ConfigError("sweep", sweep, f"{name} needs distinct values, at least one.")
        if name == "momentum" and config.optimizer not in ("momentum", "nesterov"):
            raise ConfigError(
                "sweep",
                sweep,
                f"momentum does nothing for optimizer={config.optimizer}; sweep it with "
                "momentum or nesterov.",
            )
        for value in values:
            try:
                changes: dict[str, Any] = {"sweep": (), "repeats": 1, name: value}
                validate(dataclasses.replace(config, **changes))
            except ConfigError as e:
                if e.field != name:
                    raise
                raise ConfigError("sweep", sweep, f"{name}={value:g}: {e.problem}") from None
    num = math.prod(len(v) for _, v in sweep) * config.repeats
    if num > MAX_MEMBERS:
        raise ConfigError(
            "sweep",
            sweep,
            f"makes {num} members with repeats={config.repeats}; at most {MAX_MEMBERS}.",
        )


_FIELD = {"path": "data_path"}  # a load_dataset argument -> its Config field, where they differ


def _field_names(arguments: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_FIELD.get(a, a) for a in arguments)


def _check_data_fields(config: Config) -> None:
    """A data field that does not apply to the data set is an error, never ignored."""
    source = sources.SOURCES[config.dataset]
    for argument in ("path", "target_column", "test_path", "data_dir", "num_samples"):
        name, datasets = _FIELD.get(argument, argument), sources.users_of(argument)
        value = getattr(config, name)
        if value is not None and config.dataset not in datasets:
            raise ConfigError(
                name,
                value,
                f"does not apply to dataset={config.dataset}; it is for "
                f"{' and '.join(datasets)} only. Drop it.",
            )
    for name in _field_names(source.needs):
        if getattr(config, name) is None:
            raise ConfigError(name, None, f"is needed by dataset={config.dataset}; give it.")
    if config.num_samples is not None:
        _check_int(config, "num_samples", 1)
    if config.data_path is not None and not os.path.isfile(config.data_path):
        raise ConfigError("data_path", config.data_path, "no such file; check the path.")
    if config.test_path is not None and not os.path.isfile(config.test_path):
        raise ConfigError("test_path", config.test_path, "no such file; check the path.")
    if config.data_dir is not None and not os.path.isdir(config.data_dir):
        raise ConfigError("data_dir", config.data_dir, "no such folder; check the path.")
    if config.task not in (AUTO, source.task) and source.task is not None:
        raise ConfigError(
            "task",
            config.task,
            f"dataset={config.dataset} is a {source.task} data set; drop it, or train on "
            "your own data with dataset=npz or dataset=csv.",
        )
    for name in ("val_fraction", "test_fraction"):
        _check_float(config, name, 0.0, low_open=True, high=1.0, high_open=True)
    if config.val_fraction + config.test_fraction >= 1.0:
        raise ConfigError(
            "test_fraction",
            config.test_fraction,
            f"with val_fraction={config.val_fraction} it leaves no training data; the two "
            "must sum to less than 1. Make them smaller.",
        )


def _check_model_fields(config: Config) -> None:
    widths = config.hidden_sizes if config.sizes is None else config.sizes
    name = "hidden_sizes" if config.sizes is None else "sizes"
    if not isinstance(widths, tuple) or any(
        isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in widths
    ):
        raise ConfigError(name, widths, "must be positive integers, e.g. 64,64.")
    if config.sizes is not None and len(config.sizes) < 2:
        raise ConfigError("sizes", config.sizes, "needs at least the input and output widths.")
    loss, output = config.loss, config.output_activation
    if AUTO not in (loss, output):
        needed = losses.LOSSES[loss].output_activation
        if not losses.LOSSES[loss].fits(output):
            raise ConfigError(
                "loss",
                loss,
                f"needs output_activation={needed}, not {output}; set both or "
                "leave one of them auto.",
            )
    if output == "softmax" and loss not in (AUTO, "softmax_cross_entropy"):
        raise ConfigError(
            "output_activation",
            output,
            f"softmax pairs with softmax_cross_entropy only, not loss={loss}.",
        )
