"""Tests of jaxbp.run.restore: a trained run's config, network and params read back."""

import pytest

from jaxbp import data as data_lib
from jaxbp.run import config as config_lib
from jaxbp.run import loop
from jaxbp.run.restore import restore_trained


def _train(workdir, **overrides):
    config = config_lib.make_config(
        "iris", checkpoint_interval=1, checkpoint_seconds=0.0, **overrides
    )
    return loop.train_and_evaluate(config, str(workdir), log=lambda _: None)


def test_restore_trained_needs_no_data(tmp_path, monkeypatch):
    _train(tmp_path / "w", epochs=2)

    def no_data(*args, **kwargs):
        raise AssertionError("restore_trained loaded data")

    monkeypatch.setattr(data_lib, "load_dataset", no_data)
    config, model, params, meta = restore_trained(str(tmp_path / "w"))
    assert config.dataset == "iris" and model.sizes == (4, 16, 3)
    assert meta["preprocessing"]["class_names"] == ["setosa", "versicolor", "virginica"]
    assert len(meta["preprocessing"]["x_mean"]) == 4
    assert [p["W"].shape for p in params] == [(1, 16, 4), (1, 3, 16)]  # a set of one member
    with pytest.raises(FileNotFoundError, match="holds no run"):
        restore_trained(str(tmp_path / "empty"))
