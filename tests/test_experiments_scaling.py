"""Smoke test of experiments/scaling.py: it runs 1 and 2 forced devices and prints the machine
and the table."""

import os

from experiment_runs import run_experiment

from experiments.bench import host


def test_scaling_prints_a_row_per_device_count():
    result = run_experiment(
        "scaling", "--devices=1,2", "--epochs=1", "--hidden_sizes=16", "--batch_size=64"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    machine = next(line for line in lines if line.startswith("Machine: "))
    assert host.cpu_model() in machine and f"{os.cpu_count()} cores" in machine
    assert "Devices: cpu backend, device kind cpu" in lines
    assert any("share the same" in line and "not a speed-up" in line for line in lines)
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")][1:]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2"]
    for row in rows:
        examples_per_second = float(row.split("|")[3].replace(",", ""))
        assert examples_per_second > 0
