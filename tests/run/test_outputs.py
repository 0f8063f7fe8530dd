"""Tests of jaxbp.run.outputs: the files a run leaves in its workdir."""

import json
import os

from jaxbp.run.outputs import RunOutputs


def _record(epoch, task="classification"):
    quality = "accuracy" if task == "classification" else "r2"
    return {
        "epoch": epoch,
        "step": 10 * epoch,
        "train_loss": 1.0 / epoch,
        "val_loss": 1.5 / epoch,
        f"train_{quality}": 0.5 + 0.1 * epoch,
        f"val_{quality}": 0.4 + 0.1 * epoch,
    }


def test_write_truncate_and_finish(tmp_path):
    outputs = RunOutputs(str(tmp_path), "classification")
    for epoch in (1, 2, 3):
        outputs.write(_record(epoch))
    assert [r["epoch"] for r in outputs.records()] == [1, 2, 3]
    outputs.truncate_after(2)  # a resume from the checkpoint of epoch 2
    assert [r["epoch"] for r in outputs.records()] == [1, 2]
    outputs.write(_record(3))
    outputs.finish({"test_accuracy": 0.9})
    with open(tmp_path / "summary.json") as f:
        assert json.load(f) == {"test_accuracy": 0.9}
    with open(tmp_path / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert any(name.startswith("events") for name in os.listdir(tmp_path / "tensorboard"))
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_regression_curves_and_an_empty_start(tmp_path):
    outputs = RunOutputs(str(tmp_path), "regression")
    outputs.truncate_after(0)  # a fresh run: nothing to drop, an empty file
    assert outputs.records() == []
    outputs.write(_record(1, "regression"))
    outputs.finish({"test_r2": 0.5})
    assert os.path.getsize(tmp_path / "curves.png") > 0
