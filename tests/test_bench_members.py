"""experiments/bench_members.py on a tiny setting, as users run it (a subprocess: absl flags)."""

import importlib.util
import json

import pytest
from experiment_runs import run_experiment


def test_bench_members_times_member_sets_and_sklearn_fits(tmp_path):
    output = tmp_path / "bench.json"
    result = run_experiment(
        "bench_members",
        "--members=1,2",
        "--epochs=2",
        "--sklearn_fits=2",
        "--trials=1",
        "--torch_members=2",
        f"--output={output}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(output.read_text())
    assert [r["members"] for r in figures["member_sets"]] == [1, 2]
    for row in figures["member_sets"]:
        assert row["train_seconds"] > 0 and row["compile_seconds"] > 0
        assert row["members_per_second"] == row["members"] / row["train_seconds"]
        assert 0.5 < row["test_accuracy_mean"] <= 1.0  # two epochs already learn digits
        flops = 6 * 32 * (64 * 128 + 128 * 10) * (1258 // 32) * 2  # a member's 2 epochs
        expected_gflops = row["members"] * flops / row["train_seconds"] / 1e9
        assert row["gflops"] == pytest.approx(expected_gflops, rel=1e-12)
        assert row["fraction_of_matmul_peak"] == pytest.approx(
            row["gflops"] / figures["matmul_gflops"], rel=1e-12
        )
    assert figures["sklearn"]["fits"] == 2 and figures["sklearn"]["train_seconds"] > 0
    two = figures["member_sets"][1]
    expected = figures["sklearn"]["train_seconds"] / two["train_seconds"]
    assert figures["speedup_training"] == expected
    assert "scikit-learn MLPClassifier, 2 fits one after another" in result.stdout
    if importlib.util.find_spec("torch") is None:
        assert "PyTorch is not installed: torch.func ensembling skipped." in result.stdout
    else:
        torch_func = figures["torch_func"]
        assert torch_func["members"] == 2 and 0.5 < torch_func["test_accuracy_mean"] <= 1.0
        expected = torch_func["train_seconds"] / two["train_seconds"]
        assert figures["speedup_training_vs_torch"] == expected
