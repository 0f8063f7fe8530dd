"""experiments/bench_privacy.py in one round, as users run it (absl flags: a subprocess)."""

import json

from experiment_runs import run_experiment

from jaxbp import dp_sgd


def test_one_round_times_the_plain_clipped_and_private_epochs():
    result = run_experiment("bench_privacy", "--rounds=1", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout[result.stdout.index("{") :])
    n, q = figures["num_examples"], figures["sampling_rate"]
    assert q == 64 / n
    assert figures["batch_max"] == dp_sgd.batch_max(n, q)
    assert figures["steps_per_epoch"] == n // 64
    assert figures["rounds"] == 1
    best, steps = figures["best_epoch_ms"], figures["steps_per_epoch"]
    assert set(best) == {"plain", "clipped", "private", "sampling", "noise"}
    assert min(best.values()) > 0
    assert figures["best_step_ms"] == {name: ms / steps for name, ms in best.items()}
    assert figures["private_over_plain_best"] == best["private"] / best["plain"]
    # One round: the median of the per-round ratios is that round's ratio of the bests.
    assert abs(figures["private_over_plain"] - figures["private_over_plain_best"]) < 1e-9
    assert "cores" in figures["machine"]


def test_rounds_must_be_positive():
    result = run_experiment("bench_privacy", "--rounds=0")
    assert result.returncode != 0
    assert "--rounds must be at least 1" in result.stderr
