"""Tests of jaxbp.run.config: the declarations, the data sets' defaults and the task-aware head."""

import dataclasses

import pytest

from jaxbp.run import config as config_lib
from jaxbp.run.config import ConfigError


def test_every_field_has_a_reason_and_a_resume_rule():
    for field in dataclasses.fields(config_lib.Config):
        assert config_lib.field_help(field.name).strip(), field.name
        assert config_lib.field_rule(field.name) in ("fixed", "override", "free"), field.name


def test_make_config_refuses_unknown_names_and_sizes_with_hidden_sizes():
    with pytest.raises(ConfigError, match="unknown; expected one of"):
        config_lib.make_config("imagenet")
    with pytest.raises(ConfigError, match="not a setting"):
        config_lib.make_config("iris", learning_rat=0.1)
    with pytest.raises(ConfigError, match="given together with hidden_sizes"):
        config_lib.make_config("iris", sizes=(4, 8, 3), hidden_sizes=(8,))


@pytest.mark.parametrize(
    "task, outputs, overrides, expected",
    [
        ("classification", 10, {}, ("softmax", "softmax_cross_entropy")),
        ("classification", 1, {}, ("sigmoid", "bce")),
        ("regression", 1, {}, ("identity", "mse")),
        ("regression", 3, {}, ("identity", "mse")),
        ("classification", 1, dict(loss="mse"), ("identity", "mse")),
        ("classification", 1, dict(output_activation="sigmoid", loss="mse"), ("sigmoid", "mse")),
        ("classification", 3, dict(loss="bce"), ("sigmoid", "bce")),
        ("regression", 1, dict(loss="half_mse"), ("identity", "half_mse")),
        ("classification", 1, dict(output_activation="sigmoid"), ("sigmoid", "bce")),
    ],
)
def test_the_head_follows_the_task(task, outputs, overrides, expected):
    config = config_lib.make_config("digits", **overrides)
    assert config_lib.resolve_head(config, task, outputs) == expected


@pytest.mark.parametrize(
    "task, outputs, overrides, message",
    [
        ("classification", 1, dict(output_activation="softmax"), "softmax over one output unit"),
        ("classification", 1, dict(loss="softmax_cross_entropy"), "softmax over one output"),
        ("regression", 1, dict(loss="bce"), "fits class targets"),
        ("regression", 1, dict(output_activation="sigmoid", loss="bce"), "fits class targets"),
    ],
)
def test_a_head_that_cannot_fit_the_targets_is_refused(task, outputs, overrides, message):
    config = config_lib.make_config("digits", **overrides)
    with pytest.raises(ConfigError, match=message):
        config_lib.resolve_head(config, task, outputs)
