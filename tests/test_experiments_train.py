"""Smoke tests of experiments/train.py as users run it (a subprocess: absl flags are global)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(*flags):
    return subprocess.run(
        [sys.executable, "-m", "experiments.train", *flags],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_flagfile_run_prints_the_result_and_writes_the_summary(tmp_path):
    flagfile = tmp_path / "iris.flags"
    workdir = tmp_path / "run"
    flagfile.write_text(f"--dataset=iris\n--epochs=2\n--workdir={workdir}\n")
    result = _train(f"--flagfile={flagfile}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test accuracy" in result.stdout and "epoch 2/2" in result.stdout
    with open(workdir / "summary.json") as f:
        summary = json.load(f)
    assert summary["flags"]["dataset"] == "iris" and summary["epochs"] == 2


def test_bad_flags_stop_with_one_clear_line(tmp_path):
    cases = {
        "--dataset=imagenet": "unknown dataset 'imagenet'",
        "--learning_rate=-1": "--learning_rate must be positive",
        "--hidden_sizes=0": "MLP sizes must all be positive",
    }
    for flag, message in cases.items():
        result = _train(flag, f"--workdir={tmp_path / 'never'}")
        assert result.returncode == 2, (flag, result.stderr[-2000:])
        lines = [line for line in result.stderr.splitlines() if line.startswith("train.py:")]
        assert len(lines) == 1 and message in lines[0], (flag, result.stderr[-2000:])
        assert not (tmp_path / "never").exists()


def test_multi_host_flags_must_come_together(tmp_path):
    result = _train("--coordinator_address=127.0.0.1:1234", f"--workdir={tmp_path / 'x'}")
    assert result.returncode == 2
    assert "needs --coordinator_address, --num_processes and --process_id" in result.stderr
