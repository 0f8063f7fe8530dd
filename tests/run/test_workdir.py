"""Tests of jaxbp.run.workdir: layout checks, the lock, symlink-safe writes, resume rules."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jaxbp.run import config as config_lib
from jaxbp.run import workdir as workdir_lib


def test_a_symlink_or_a_file_in_the_way_is_refused(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_text("keep me")
    work = tmp_path / "w"
    work.mkdir()
    os.symlink(outside, work / "curves.png")
    with pytest.raises(workdir_lib.WorkdirError, match="curves.png is a symlink"):
        workdir_lib.check_layout(str(work))
    os.unlink(work / "curves.png")
    (work / "checkpoints").write_text("not a folder")
    with pytest.raises(workdir_lib.WorkdirError, match="checkpoints is a file"):
        workdir_lib.check_layout(str(work))
    with pytest.raises(workdir_lib.WorkdirError, match="is a file, not a folder"):
        workdir_lib.check_layout(str(outside))


def test_write_atomic_replaces_a_symlink_instead_of_following_it(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("keep me")
    link = tmp_path / "summary.json"
    os.symlink(outside, link)
    workdir_lib.write_atomic(str(link), "new")
    assert outside.read_text() == "keep me"
    assert not os.path.islink(link) and link.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["outside.json", "summary.json"]  # no temp left


def test_append_lines_refuses_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("keep me\n")
    os.symlink(outside, tmp_path / "metrics.jsonl")
    with pytest.raises(OSError):
        workdir_lib.append_lines(str(tmp_path / "metrics.jsonl"), ["{}"])
    assert outside.read_text() == "keep me\n"


_HOLD_LOCK = """
import sys, time
from jaxbp.run import workdir
with workdir.locked(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_the_lock_refuses_a_second_run_and_does_not_outlive_a_killed_one(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(workdir_lib.WorkdirError, match=f"in use by a live run .*{holder.pid}"),
            workdir_lib.locked(str(tmp_path)),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 10
    while True:  # the OS drops the lock of a killed process
        try:
            with workdir_lib.locked(str(tmp_path)):
                break
        except workdir_lib.WorkdirError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def _config(**overrides):
    return config_lib.make_config("moons", **overrides)


@pytest.mark.parametrize(
    "change",
    [
        dict(dataset="spirals"),
        dict(loss="mse"),
        dict(seed=1),
        dict(data_seed=1),
        dict(batch_size=16),
        dict(hidden_sizes=(8,)),
        dict(precision="float64"),
        dict(task="regression"),
        dict(val_fraction=0.2),
        dict(test_fraction=0.3),
    ],
)
def test_a_fixed_setting_never_changes_on_resume(change):
    stored = _config()
    new = config_lib.make_config(change["dataset"]) if "dataset" in change else _config(**change)
    name = next(iter(change))
    with pytest.raises(workdir_lib.ResumeConflictError, match=f"{name} .* -> ") as info:
        workdir_lib.check_resume(stored, new, allow_changes=(name,))
    assert "Use a new workdir" in str(info.value)


def test_an_optimisation_setting_changes_only_when_allowed():
    stored, new = _config(), _config(learning_rate=0.1, weight_decay=1e-4)
    with pytest.raises(workdir_lib.ResumeConflictError, match="learning_rate 0.003 -> 0.1") as e:
        workdir_lib.check_resume(stored, new)
    assert "allow_changes=learning_rate,weight_decay" in str(e.value)
    changes = workdir_lib.check_resume(stored, new, allow_changes=("learning_rate", "weight_decay"))
    assert changes == {"learning_rate": (0.003, 0.1), "weight_decay": (0.0, 1e-4)}


def test_epochs_and_intervals_change_freely():
    changes = workdir_lib.check_resume(_config(), _config(epochs=80, eval_interval=2))
    assert changes == {"epochs": (40, 80), "eval_interval": (1, 2)}


def test_a_run_record_from_before_the_data_settings_resumes_with_their_defaults(tmp_path):
    config = config_lib.make_config("moons")
    fields = dataclasses.asdict(config)
    for name in ("task", "val_fraction", "test_fraction", "test_path"):
        del fields[name]  # what run.json held before these settings existed
    (tmp_path / "run.json").write_text(json.dumps({"config": fields, "starts": []}))
    stored = workdir_lib.config_from_record(workdir_lib.read_run_record(str(tmp_path)))
    assert (stored.task, stored.val_fraction, stored.test_fraction, stored.test_path) == (
        "auto",
        0.1,
        0.2,
        None,
    )
    assert workdir_lib.check_resume(stored, config) == {}


def test_a_damaged_run_record_is_named(tmp_path):
    (tmp_path / "run.json").write_text('{"config": {"dataset": "iris", "bogus": 1}}')
    with pytest.raises(workdir_lib.WorkdirError, match="run.json is damaged"):
        workdir_lib.read_run_record(str(tmp_path))


def test_run_entry_at_names_a_runs_records_and_checkpoints_only(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "5").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    for entry in ("run.json", "summary.json", "metrics.jsonl", "checkpoints"):
        assert workdir_lib.run_entry_at(str(run / entry)) == str(run / entry)
    inside = run / "checkpoints" / "5" / "state"
    assert workdir_lib.run_entry_at(str(inside)) == str(run / "checkpoints")
    assert workdir_lib.run_entry_at(str(run / "predictions.csv")) is None
    assert workdir_lib.run_entry_at(str(tmp_path / "summary.json")) is None  # no run there
    link = tmp_path / "innocent.json"
    link.symlink_to(run / "summary.json")
    assert workdir_lib.run_entry_at(str(link)) == str(run / "summary.json")
