"""experiments/train.py as users run it (subprocesses: absl flags are global).

Flags, one-line errors, help, resume with --workdir alone, and stops: Ctrl-C and SIGTERM
end cleanly, and a run killed at random points (checkpoint writes included) still ends
bit-identical to an uninterrupted one.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from experiment_runs import ROOT, run_experiment

from jaxbp import privacy
from jaxbp.run import recipe
from jaxbp.run import workdir as workdir_lib
from jaxbp.run.restore import restore_trained

UNBUFFERED = {"PYTHONUNBUFFERED": "1"}
ENV = {**os.environ, "PYTHONPATH": ROOT, **UNBUFFERED}


def _train(*flags, timeout=300):
    return run_experiment("train", *flags, timeout=timeout, env=UNBUFFERED)


def _start(*flags):
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.train", *flags],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _summary(workdir):
    with open(os.path.join(workdir, "summary.json")) as f:
        return json.load(f)


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [
            {k: v for k, v in json.loads(line).items() if k != "steps_per_second"} for line in f
        ]


def _assert_same_run(workdir_a, workdir_b):
    assert _records(workdir_a) == _records(workdir_b)
    assert _summary(workdir_a)["test_loss"] == _summary(workdir_b)["test_loss"]
    params_a = restore_trained(str(workdir_a))[2]
    params_b = restore_trained(str(workdir_b))[2]
    for a, b in zip(params_a, params_b, strict=True):
        for name in a:
            np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))


def test_flagfile_run_prints_the_result_and_writes_the_summary(tmp_path):
    flagfile = tmp_path / "iris.flags"
    workdir = tmp_path / "run"
    flagfile.write_text(f"--dataset=iris\n--epochs=2\n--workdir={workdir}\n")
    result = _train(f"--flagfile={flagfile}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test accuracy" in result.stdout and "epoch 2/2" in result.stdout
    assert "iris: classification, sizes 4-16-3" in result.stdout
    summary = _summary(workdir)
    assert summary["config"]["dataset"] == "iris" and summary["epochs"] == 2


def test_a_private_run_reports_the_epsilon_dp_accounting_gives(tmp_path):
    workdir = tmp_path / "dp"
    flags = ["--dataset=digits", "--dp_target_epsilon=8", "--clip_per_example=1", "--epochs=2"]
    result = _train(*flags, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-2000:]
    record = _summary(workdir)["privacy"]
    spent = privacy.epsilon(
        record["noise_multiplier"], record["sampling_rate"], record["steps"], record["delta"]
    )
    assert record["epsilon"] == spent <= 8
    assert record["sampling_rate"] == 32 / 1258 and record["delta"] == 1e-4  # 1258 train rows
    assert record["accountant"] == "rdp" and record["steps"] == 2 * (1258 // 32)
    assert "epoch 2/2" in result.stdout and f"ε {spent:.3g} at δ 0.0001 (rdp" in result.stdout
    assert _records(workdir)[-1]["privacy/epsilon"] == spent


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dataset=imagenet"], "--dataset=imagenet: unknown; expected one of digits"),
        (["--learning_rate=-1"], "--learning_rate=-1.0: must be a finite number > 0"),
        (["--learning_rate=inf"], "--learning_rate=inf: must be a finite number > 0"),
        (["--momentum=-5"], "--momentum=-5.0: must be a finite number in [0, 1)"),
        (["--weight_decay=nan"], "--weight_decay=nan: must be a finite number >= 0"),
        (["--hidden_sizes=0"], "--hidden_sizes=0: must be positive integers"),
        (["--hidden_sizes=a"], "--hidden_sizes=a: must be integers"),
        (["--seed=1180591620717411303424"], "--seed=1180591620717411303424: must be an integer"),
        (["--target_column=price"], "--target_column=price: does not apply to --dataset=digits"),
        (["--data_path=x.csv"], "--data_path=x.csv: does not apply to --dataset=digits"),
        (["--sizes=64,10", "--hidden_sizes=8"], "--sizes=64,10: given together with hidden"),
        (["--optimizer=lbfgs"], "--optimizer=lbfgs: expected one of sgd"),
        (["--process_id=1"], "needs --coordinator_address, --num_processes and --process_id"),
        (
            ["--process_id=5", "--num_processes=2", "--coordinator_address=127.0.0.1:1"],
            "--process_id=5 must be in [0, --num_processes=2)",
        ),
        (["--dataset=csv"], "--data_path=: is needed by --dataset=csv"),
        (
            ["--sweep=hidden_sizes=16,32"],
            "--sweep=hidden_sizes=16,32: hidden_sizes changes the network's shapes",
        ),
        (["--sweep=learning_rate=1e-3,-1"], "learning_rate=-1: must be a finite number > 0"),
        (["--repeats=0"], "--repeats=0: must be an integer in [1, 4096]"),
        (["--dp_noise_multiplier=1"], "--clip_per_example=: is needed by DP-SGD"),
        (
            ["--dataset=iris", "--dp_target_epsilon=1e5", "--clip_per_example=1"],
            "--dp_target_epsilon=100000.0: ε = 100000.0 is already met",
        ),
        (
            ["--sweep=dp_noise_multiplier=1,0", "--clip_per_example=1"],
            "dp_noise_multiplier=0: must be a finite number > 0",
        ),
        (["--sweep=learning_rate"], "numbers, e.g. --sweep=learning_rate=1e-3,3e-3."),
        (
            ["--learning_rate=0.5", "--sweep=learning_rate=1e-3,3e-3"],
            "--learning_rate=0.5: given together with --sweep=learning_rate=0.001,0.003",
        ),
        (["--task=regression"], "--task=regression: --dataset=digits is a classification"),
        (
            ["--val_fraction=0.6", "--test_fraction=0.5"],
            "--test_fraction=0.5: with --val_fraction=0.6 it leaves no training data",
        ),
        (["--test_path=t.csv"], "--test_path=t.csv: does not apply to --dataset=digits"),
    ],
)
def test_bad_flags_stop_with_one_clear_line(tmp_path, flags, message):
    result = _train(*flags, f"--workdir={tmp_path / 'never'}")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("train.py: "), result.stderr[-2000:]
    assert message in lines[0]
    assert not (tmp_path / "never").exists()


def test_a_checkpoints_file_in_the_workdir_is_one_line_not_a_hang(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "checkpoints").write_text("in the way")
    result = _train("--dataset=iris", f"--workdir={tmp_path / 'w'}", timeout=60)
    assert result.returncode == 2
    assert "checkpoints is a file" in result.stderr and "Traceback" not in result.stderr


def test_help_shows_defaults_choices_and_data_set_defaults():
    result = _train("--helpfull", timeout=120)
    text = " ".join(result.stdout.split())  # absl wraps the help lines
    assert "--learning_rate: Peak learning rate" in text and "(default: '0.003')" in text
    assert "iris 0.01" in text  # the data set's own default beside the global one
    assert "One of: digits, breast_cancer" in text
    assert "--[no]use_bias" in text and "--no_bias" not in text


def test_help_lists_the_run_settings_and_exits_0():
    result = _train("--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    text = " ".join(result.stdout.split())
    assert "--dataset: " in text and "--learning_rate: Peak learning rate" in text
    assert "--task: What the target of an npz or csv is" in text
    assert "One of: auto, classification, regression" in text
    assert "--val_fraction: Share of the examples for validation" in text
    assert "(default: '0.1')" in text and "--test_path: A csv data set's own test file" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\xff\xfe binary", "is not a text file of flags (one --name=value per line)"),
        (None, "does not exist"),
    ],
    ids=["binary", "missing"],
)
def test_a_flagfile_that_is_not_text_is_one_line(tmp_path, content, message):
    path = tmp_path / "run.flags"
    if content is not None:
        path.write_bytes(content)
    result = _train(f"--flagfile={path}", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"train.py: --flagfile={path} {message}; check the path."


def test_resume_needs_only_the_workdir_and_refuses_other_settings(tmp_path):
    workdir = tmp_path / "w"
    first = _train("--dataset=iris", "--epochs=2", f"--workdir={workdir}")
    assert first.returncode == 0, first.stderr[-2000:]
    again = _train(f"--workdir={workdir}", "--epochs=3")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from the checkpoint of epoch 2" in again.stdout
    assert _summary(workdir)["config"]["dataset"] == "iris"
    refused = _train(f"--workdir={workdir}", "--epochs=4", "--learning_rate=0.5")
    assert refused.returncode == 2
    assert "learning_rate 0.01 -> 0.5" in refused.stderr
    assert "--allow_changes=learning_rate" in refused.stderr
    moved = _train(f"--workdir={workdir}", "--dataset=moons")
    assert moved.returncode == 2 and "dataset iris -> moons" in moved.stderr


def _wait_for(process, text, timeout=120):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"never printed {text!r}: {''.join(seen)[-2000:]}")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_ends_cleanly_and_the_resumed_run_is_bit_identical(tmp_path, signum, code):
    flags = ["--dataset=digits", "--epochs=12", "--checkpoint_interval=5", "--checkpoint_seconds=0"]
    straight = _train(*flags, f"--workdir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-2000:]
    workdir = tmp_path / "stopped"
    process = _start(*flags, f"--workdir={workdir}")
    _wait_for(process, "epoch  3/12")
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err[-2000:]
    assert "Traceback" not in err and "Resume with:" in err
    summary = _summary(workdir)
    assert summary["status"] == "interrupted" and 3 <= summary["epochs"] < 12
    assert summary["resume_command"] == f"./launch.sh train --workdir={workdir}"
    assert os.path.getsize(workdir / "curves.png") > 0
    resumed = _train(f"--workdir={workdir}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _summary(workdir)["status"] == "completed"
    _assert_same_run(workdir, tmp_path / "straight")


def test_a_run_killed_at_random_points_still_ends_bit_identical(tmp_path):
    flags = ["--dataset=digits", "--epochs=25", "--checkpoint_interval=1", "--checkpoint_seconds=0"]
    straight = _train(*flags, f"--workdir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-2000:]
    workdir = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    for _ in range(5):
        process = _start(*flags, f"--workdir={workdir}")
        _wait_for(process, "epoch")  # past start-up: the kill lands in training or a save
        time.sleep(rng.uniform(0.0, 1.5))
        if process.poll() is None:
            process.kill()
            kills += 1
        process.communicate(timeout=120)
    assert kills >= 3
    final = _train(f"--workdir={workdir}")
    assert final.returncode == 0, final.stderr[-2000:]
    _assert_same_run(workdir, tmp_path / "straight")


def test_a_member_set_from_flags_stops_resumes_evaluates_and_predicts(tmp_path):
    cache = tmp_path / "xla"
    flags = [
        "--dataset=digits",
        "--epochs=12",
        "--checkpoint_interval=5",
        "--checkpoint_seconds=0",
        "--repeats=2",
        "--sweep=learning_rate=1e-3,3e-3",
        f"--compilation_cache_dir={cache}",
    ]
    straight = _train(*flags, f"--workdir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert (
        "± " in straight.stdout and "mean of 4 members' best-validation params" in straight.stdout
    )
    assert "| learning_rate=0.001 | 2 | 0 |" in straight.stdout
    assert "| learning_rate=0.003 | 2 | 0 |" in (tmp_path / "straight" / "sweep.md").read_text()
    assert os.listdir(cache)  # the programs went to the persistent cache
    summary = _summary(tmp_path / "straight")
    assert [m["seed"] for m in summary["members"]] == [0, 1, 0, 1]
    assert summary["config"]["sweep"] == [["learning_rate", [1e-3, 3e-3]]]

    workdir = tmp_path / "stopped"
    process = _start(*flags, f"--workdir={workdir}")
    _wait_for(process, "epoch  3/12")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert _summary(workdir)["status"] == "interrupted"
    resumed = _train(f"--workdir={workdir}", f"--compilation_cache_dir={cache}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_same_run(workdir, tmp_path / "straight")
    assert _summary(workdir)["members"] == summary["members"]

    evaluated = run_experiment("eval", f"--workdir={workdir}", env=UNBUFFERED)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "ensemble of 4" in evaluated.stdout and "mean ± std" in evaluated.stdout
    config = workdir_lib.config_from_record(workdir_lib.read_run_record(str(workdir)))
    ds = recipe.load_data(config)
    rows = tmp_path / "rows.npz"
    np.savez(rows, x=ds.x_test[:5].astype(np.float64) * ds.x_scale + ds.x_mean)
    output = tmp_path / "predictions.csv"
    predicted = run_experiment(
        "predict",
        f"--workdir={workdir}",
        f"--data_path={rows}",
        f"--output={output}",
        env=UNBUFFERED,
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert "the ensemble of 4 members" in predicted.stdout
    header = output.read_text().splitlines()[0].split(",")
    assert header[0] == "prediction" and header[-4:] == [f"member_{k}" for k in range(4)]


def test_an_npz_of_integer_prices_stops_with_the_task_flags_that_fix_it(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    prices = tmp_path / "prices.npz"
    np.savez(prices, x=x, y=(50_000 + 1_000 * np.arange(120)).astype(np.int64))
    result = _train("--dataset=npz", f"--data_path={prices}", f"--workdir={tmp_path / 'w'}")
    assert result.returncode == 1, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "120 distinct values and 120 of them appear only once" in lines[0]
    assert "--task=regression" in lines[0] and "--task=classification" in lines[0]


def test_a_csv_with_its_own_test_file_task_and_fractions_is_recorded(tmp_path):
    rng = np.random.default_rng(0)

    def table(n):  # rooms 1..5 would be 5 classes under auto
        area = rng.uniform(20, 200, n)
        rooms = np.clip(np.round(area / 40), 1, 5).astype(int)
        return "area,rooms\n" + "".join(f"{a:.2f},{r}\n" for a, r in zip(area, rooms, strict=True))

    (tmp_path / "train.csv").write_text(table(80))
    (tmp_path / "test.csv").write_text(table(30))
    workdir = tmp_path / "run"
    result = _train(
        "--dataset=csv",
        f"--data_path={tmp_path / 'train.csv'}",
        "--target_column=rooms",
        f"--test_path={tmp_path / 'test.csv'}",
        "--task=regression",
        "--val_fraction=0.25",
        "--test_fraction=0.3",
        "--epochs=1",
        f"--workdir={workdir}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "csv: regression, sizes 1-128-1" in result.stdout
    summary = _summary(workdir)
    assert summary["task"] == "regression" and summary["config"]["task"] == "regression"
    assert summary["splits"] == {
        "train": 60,
        "val": 20,
        "test": 30,
        "val_fraction": 0.25,
        "test_fraction": None,
        "test_source": "own",
    }
    stored = workdir_lib.config_from_record(workdir_lib.read_run_record(str(workdir)))
    assert (stored.task, stored.val_fraction, stored.test_path) == (
        "regression",
        0.25,
        str(tmp_path / "test.csv"),
    )
