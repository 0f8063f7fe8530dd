"""absl flags generated from `jaxbp.run.config.Config`: one declaration per hyperparameter.

Each field of the config becomes a flag with the field's type, default, reason and
choices, and the data sets whose defaults differ are listed in its help. Only flags given
on the command line override the data set's defaults (or, for a workdir that holds a run,
that run's stored config). Errors come back in flag words: ``--learning_rate=-1: ...``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any

from absl import flags

from jaxbp.run import config as config_lib
from jaxbp.run.config import Config, ConfigError


def _base_type(name: str) -> tuple[Any, bool]:
    """``(type, optional)`` of a field's annotation, e.g. ``(float, True)`` for ``float | None``."""
    hint = typing.get_type_hints(Config)[name]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return hint, False


def hint_is_sweep(name: str) -> bool:
    """Whether a field is a sweep (a repeatable ``--NAME=field=v1,v2`` flag)."""
    return typing.get_type_hints(Config)[name] == config_lib.Sweep


def _help(name: str) -> str:
    text = config_lib.field_help(name)
    choices = config_lib.field_choices(name)
    if choices:
        text += f" One of: {', '.join(choices)}."
    per_dataset = {
        ds: defaults[name]
        for ds, defaults in config_lib.DATASET_DEFAULTS.items()
        if name in defaults
    }
    if per_dataset:
        text += (
            " Data-set defaults: "
            + ", ".join(f"{ds} {config_lib.format_value(v)}" for ds, v in per_dataset.items())
            + "."
        )
    return text


def define_config_flags() -> dict[str, flags.FlagHolder]:
    """Defines one flag per `Config` field; returns the holders by field name."""
    holders: dict[str, flags.FlagHolder] = {}
    for field in dataclasses.fields(Config):
        name, default = field.name, field.default
        kind, _ = _base_type(name)
        help_text = _help(name)
        if kind is bool:
            holders[name] = flags.DEFINE_boolean(name, default, help_text)
        elif hint_is_sweep(name):
            holders[name] = flags.DEFINE_multi_string(name, [], help_text)
        elif typing.get_origin(kind) is tuple or kind is tuple:
            value = None if default is None else [str(v) for v in default]
            holders[name] = flags.DEFINE_list(name, value, help_text)
        elif kind is int:
            holders[name] = flags.DEFINE_integer(name, default, help_text)
        elif kind is float:
            holders[name] = flags.DEFINE_float(name, default, help_text)
        else:
            holders[name] = flags.DEFINE_string(name, default, help_text)
    return holders


def given_flags(holders: dict[str, flags.FlagHolder]) -> dict[str, Any]:
    """The config fields set on the command line, converted to the field types.

    Raises:
      ConfigError: for a list flag whose items are not integers.
    """
    given: dict[str, Any] = {}
    for name, holder in holders.items():
        if not flags.FLAGS[name].present:
            continue
        value = holder.value
        kind, _ = _base_type(name)
        if hint_is_sweep(name):
            value = config_lib.parse_sweep(value)
        elif (typing.get_origin(kind) is tuple or kind is tuple) and value is not None:
            try:
                value = tuple(int(v) for v in value if v != "")
            except ValueError:
                raise ConfigError(name, ",".join(value), "must be integers, e.g. 64,64.") from None
        given[name] = value
    for name, values in given.get("sweep", ()):
        if name in given:  # the sweep sets it for every member: the single value would be lost
            swept = ",".join(config_lib.format_value(v) for v in values)
            raise ConfigError(
                name,
                given[name],
                f"given together with sweep={name}={swept}, which sets {name} for every "
                f"member: drop one of the two.",
            )
    return given


def config_from_flags(holders: dict[str, flags.FlagHolder], stored: Config | None = None) -> Config:
    """The config of the command line: the given flags over ``stored`` or the defaults.

    ``stored`` is the config of the run a workdir already holds: a resume needs only
    ``--workdir`` (and, to continue, ``--epochs``).
    """
    given = given_flags(holders)
    if stored is not None and given.get("dataset", stored.dataset) == stored.dataset:
        if "hidden_sizes" in given and stored.sizes is not None:
            given.setdefault("sizes", None)
        return dataclasses.replace(stored, **given)
    dataset = given.pop("dataset", holders["dataset"].value)
    return config_lib.make_config(dataset, **given)


def flag_message(error: ConfigError) -> str:
    """A `ConfigError` in flag words: ``--field=value: problem``."""
    value = "" if error.value is None else config_lib.format_value(error.value)
    return f"--{error.field}={value}: {to_flag_words(error.problem)}"


# Not after "=": in sweep=learning_rate=1e-3 only the flag itself takes the dashes.
_FIELD_ASSIGNMENT = re.compile(r"(?<![\w=-])(" + "|".join(config_lib.FIELDS) + r"|allow_changes)=")


def to_flag_words(text: str) -> str:
    """``learning_rate=0.1`` in a library message becomes ``--learning_rate=0.1``."""
    return _FIELD_ASSIGNMENT.sub(r"--\1=", text)
