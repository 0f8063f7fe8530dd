"""Tests of jaxbp.run.config_checks: every bad setting refused in one line naming the fix."""

import math

import pytest

from jaxbp.run import config as config_lib
from jaxbp.run import config_checks
from jaxbp.run.config import ConfigError


def test_dataset_defaults_name_real_fields_and_validate():
    for dataset, defaults in config_lib.DATASET_DEFAULTS.items():
        assert set(defaults) <= set(config_lib.FIELDS), dataset
        needs = {"npz": "data_path", "csv": "data_path", "mnist": "data_dir"}
        if dataset in needs or dataset == "fashion_mnist":
            continue
        config_checks.validate(config_lib.make_config(dataset))


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        (dict(learning_rate=math.inf), "learning_rate", "finite number > 0"),
        (dict(learning_rate=-0.1), "learning_rate", "finite number > 0"),
        (dict(momentum=-5.0), "momentum", r"in \[0, 1\)"),
        (dict(momentum=1.0), "momentum", r"in \[0, 1\)"),
        (dict(weight_decay=math.nan), "weight_decay", "finite number >= 0"),
        (dict(clip_per_example=0.0), "clip_per_example", "largest per-example gradient norm"),
        (dict(clip_per_example=1.0, backward="autodiff"), "backward", "use backward=custom"),
        (dict(seed=2**70), "seed", r"integer in \[0, 4294967295\]"),
        (dict(data_seed=-1), "data_seed", r"integer in \[0, 4294967295\]"),
        (dict(batch_size=0), "batch_size", "integer >= 1"),
        (dict(epochs=0), "epochs", "integer >= 1"),
        (dict(optimizer="lbfgs"), "optimizer", "expected one of sgd, momentum"),
        (dict(activation="softmax"), "activation", "expected one of"),
        (dict(activation="swish"), "activation", "expected one of"),
        (dict(loss="hinge"), "loss", "expected one of"),
        (dict(target_column="price"), "target_column", "does not apply to dataset=iris"),
        (dict(data_path="x.npz"), "data_path", "does not apply to dataset=iris"),
        (dict(num_samples=10), "num_samples", "does not apply to dataset=iris"),
        (dict(hidden_sizes=(0,)), "hidden_sizes", "positive integers"),
        (dict(loss="bce", output_activation="identity"), "loss", "needs output_activation=sigmoid"),
        (dict(warmup_epochs=3), "warmup_epochs", "schedule=warmup_cosine only"),
        (dict(schedule="warmup_cosine", warmup_epochs=60), "warmup_epochs", "below epochs=60"),
        (dict(num_devices=0), "num_devices", "integer >= 1"),
        (dict(dp_noise_multiplier=0.0, clip_per_example=1.0), "dp_noise_multiplier", "> 0"),
        (dict(dp_target_epsilon=-1.0, clip_per_example=1.0), "dp_target_epsilon", "> 0"),
        (
            dict(dp_noise_multiplier=1.0, dp_target_epsilon=8.0, clip_per_example=1.0),
            "dp_target_epsilon",
            "given together with dp_noise_multiplier=1.0",
        ),
        (dict(dp_target_epsilon=8.0), "clip_per_example", "is needed by DP-SGD"),
        (dict(dp_noise_multiplier=1.0, clip_per_example=0.0), "clip_per_example", "largest"),
        (
            dict(dp_noise_multiplier=1.0, clip_per_example=1.0, backward="autodiff"),
            "backward",
            "use backward=custom",
        ),
        (dict(dp_delta=1e-5), "dp_delta", "applies to DP-SGD only"),
        (dict(dp_accountant="pld"), "dp_accountant", "applies to DP-SGD only"),
        (dict(dp_noise_multiplier=1.0, clip_per_example=1.0, dp_delta=1.0), "dp_delta", "below"),
        (dict(dp_accountant="moments"), "dp_accountant", "expected one of rdp, pld"),
        (dict(task="numbers"), "task", "expected one of auto, classification, regression"),
        (dict(task="regression"), "task", "dataset=iris is a classification data set"),
        (dict(val_fraction=0.0), "val_fraction", r"in \(0, 1\)"),
        (dict(val_fraction=1.0), "val_fraction", r"in \(0, 1\)"),
        (dict(test_fraction=math.nan), "test_fraction", r"in \(0, 1\)"),
        (dict(val_fraction=0.5, test_fraction=0.5), "test_fraction", "leaves no training data"),
        (dict(test_path="t.csv"), "test_path", "does not apply to dataset=iris; it is for csv"),
    ],
)
def test_bad_values_name_the_field_and_the_fix(overrides, field, message):
    config = config_lib.make_config("iris", **overrides)
    with pytest.raises(ConfigError, match=message) as info:
        config_checks.validate(config)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}=")


def test_a_data_set_that_needs_a_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="is needed by dataset=csv") as info:
        config_checks.validate(config_lib.make_config("csv"))
    assert info.value.field == "data_path"
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="is needed by dataset=csv") as info:
        config_checks.validate(config_lib.make_config("csv", data_path=str(path)))
    assert info.value.field == "target_column"
    with pytest.raises(ConfigError, match="no such file"):
        config_checks.validate(config_lib.make_config("npz", data_path=str(tmp_path / "missing")))


def test_a_csv_test_file_must_exist_and_a_data_sets_own_task_is_accepted(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n")
    config = config_lib.make_config(
        "csv", data_path=str(path), target_column="b", test_path=str(tmp_path / "missing.csv")
    )
    with pytest.raises(ConfigError, match="no such file") as info:
        config_checks.validate(config)
    assert info.value.field == "test_path"
    config_checks.validate(config_lib.make_config("iris", task="classification"))
    config_checks.validate(config_lib.make_config("diabetes", task="regression"))
    config_checks.validate(
        config_lib.make_config("csv", data_path=str(path), target_column="b", task="regression")
    )
