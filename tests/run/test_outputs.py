"""Tests of jaxbp.run.outputs: the files a run leaves in its workdir."""

import json
import os
import sys

import numpy as np
import pytest

from jaxbp.run.outputs import RunOutputs, curves_figure, plot_curves


def _record(epoch, task="classification"):
    quality = "accuracy" if task == "classification" else "r2"
    return {
        "member": 0,
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
    summary = {"test_accuracy": 0.9, "members": [{"member": 0}]}
    outputs.finish(summary)
    with open(tmp_path / "summary.json") as f:
        assert json.load(f) == summary
    assert not os.path.exists(tmp_path / "sweep.md")  # a run of one member has no sweep
    with open(tmp_path / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert any(name.startswith("events") for name in os.listdir(tmp_path / "tensorboard"))
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def _tensorboard_scalars(folder):
    """Every scalar of the event files in ``folder``: ``{(tag, step): value}`` (their TFRecord
    framing read by hand: a uint64 length, its CRC, the event, the event's CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        at = 0
        while at < len(data):
            length = int.from_bytes(data[at : at + 8], "little")
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars[value.tag, event.step] = value.simple_value
    return scalars


def test_tensorboard_gets_every_scalar_of_a_member_set(tmp_path):
    outputs = RunOutputs(str(tmp_path), "classification")
    records = {
        e: [{**_record(e), "member": m, "val_loss": m + 1.5 / e} for m in (0, 1)] for e in (1, 2)
    }
    records[2][1]["epoch_loss"] = None  # not logged
    for epoch in (1, 2):
        outputs.write(*records[epoch])
    outputs._tensorboard.close()
    expected = {
        (f"{name}/member_{r['member']:03d}", r["step"]): np.float32(value)
        for rs in records.values()
        for r in rs
        for name, value in r.items()
        if name not in ("epoch", "step", "member") and value is not None
    }
    assert _tensorboard_scalars(tmp_path / "tensorboard") == expected
    assert outputs.records() == [r for rs in records.values() for r in rs]


def _png_width(path):
    with open(path, "rb") as f:
        header = f.read(24)
    return int.from_bytes(header[16:20], "big")  # the IHDR chunk's width


@pytest.mark.parametrize("member_set", [False, True])
def test_curves_get_a_panel_of_the_gradient_snr_when_the_records_have_it(tmp_path, member_set):
    records = []
    for epoch in (1, 2, 3):
        for member in (0, 1) if member_set else (None,):
            record = {**_record(epoch), "train_flow/snr/1": 0.5 * epoch, "train_flow/snr/2": 2.0}
            if member is None:
                del record["member"]
            records.append(record)
    records[-1]["train_flow/snr/2"] = float("inf")  # no variance: drawn as a gap
    labels = {0: "lr=0.1", 1: "lr=0.01"} if member_set else None
    plot_curves(records, "classification", str(tmp_path / "snr.png"), labels)
    plot_curves([_record(1)], "classification", str(tmp_path / "plain.png"))
    # Three panels of 5 inches at 100 dpi where the SNR is logged, two without it.
    assert (_png_width(tmp_path / "snr.png"), _png_width(tmp_path / "plain.png")) == (1500, 1000)


def test_regression_curves_and_an_empty_start(tmp_path):
    outputs = RunOutputs(str(tmp_path), "regression")
    outputs.truncate_after(0)  # a fresh run: nothing to drop, an empty file
    assert outputs.records() == []
    outputs.write(_record(1, "regression"))
    outputs.finish({"test_r2": 0.5, "members": [{"member": 0}]})
    assert os.path.getsize(tmp_path / "curves.png") > 0


def _flow_record(epoch, member=None):
    record = {**_record(epoch), "epoch_loss": 1.2 / epoch}
    for k in (1, 2):
        record.update(
            {
                f"train_flow/delta_norm/{k}": 0.1 * k / epoch,
                f"train_flow/grad_norm/{k}": 0.2 * k / epoch,
                f"train_flow/snr/{k}": 0.5 * k,
            }
        )
    record["train_flow/noise_scale"] = 30.0 * epoch if epoch < 3 else float("inf")  # exact fit
    return record if member is None else {**record, "member": member}


def _close(fig):
    import matplotlib.pyplot as plt  # after curves_figure chose the Agg backend

    plt.close(fig)


def _legend(ax):
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


@pytest.mark.parametrize("member_set", [False, True])
def test_curves_draw_the_gradient_flow_and_name_the_train_loss(member_set):
    members = (0, 1) if member_set else (None,)
    records = [_flow_record(epoch, m) for epoch in (1, 2, 3) for m in members]
    labels = {0: "lr=0.1", 1: "lr=0.01"} if member_set else None
    fig = curves_figure(records, "classification", labels)
    try:
        titles = [ax.get_title() for ax in fig.axes]
        assert titles == [
            "loss",
            "accuracy",
            "gradient SNR (train)",
            "mean ‖δ_i‖ per layer (train)",
            "‖∂L/∂W‖ per layer (train)",
            "gradient noise scale (train)",
        ]
        ax_loss, _, _, ax_delta, ax_grad, ax_noise = fig.axes
        assert all(ax.get_yscale() == "log" for ax in (ax_delta, ax_grad, ax_noise))
        suffix = " lr=0.1" if member_set else ""
        assert f"layer 1{suffix}" in _legend(ax_delta) and f"layer 2{suffix}" in _legend(ax_grad)
        # The mean over a label's members: both members record the same, so the same values.
        np.testing.assert_allclose(ax_delta.lines[0].get_ydata(), [0.1, 0.05, 0.1 / 3])
        assert np.isnan(ax_noise.lines[0].get_ydata()[-1])  # inf (an exact fit): a gap
        # The train curve is the end-of-epoch params' loss, the console's the epoch mean.
        assert f"train (end of epoch){suffix}" in _legend(ax_loss)
        if not member_set:
            assert "train (epoch-mean loss)" in _legend(ax_loss)
            np.testing.assert_allclose(ax_loss.lines[-1].get_ydata(), [1.2, 0.6, 0.4])
    finally:
        _close(fig)


def test_a_dp_run_without_train_flow_gets_no_flow_panel():
    # A DP-SGD run's records: the validation split only, the flow measured on it.
    records = [
        {
            "epoch": e,
            "step": 10 * e,
            "val_loss": 1.0 / e,
            "val_accuracy": 0.5,
            "val_flow/delta_norm/1": 0.3,
            "privacy/epsilon": 0.5 * e,
        }
        for e in (1, 2)
    ]
    fig = curves_figure(records, "classification")
    try:
        assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
        assert _legend(fig.axes[0]) == ["val"]
    finally:
        _close(fig)


def test_the_first_write_starts_loading_matplotlib_once(tmp_path):
    from jaxbp.run import outputs as outputs_lib

    writer = RunOutputs(str(tmp_path), "classification")
    writer.write(_record(1))
    started = outputs_lib._plotting
    assert started is not None
    writer.write(_record(2))
    assert outputs_lib._plotting is started  # one thread per process
    started.join(timeout=60)
    assert not started.is_alive() and "matplotlib.pyplot" in sys.modules
    writer.finish({"test_accuracy": 0.9, "members": [{"member": 0}]})
    assert os.path.getsize(tmp_path / "curves.png") > 0
