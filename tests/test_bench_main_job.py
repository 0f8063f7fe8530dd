"""experiments/bench_main_job.py in one round, as users run it (absl flags: a subprocess)."""

import json

from experiment_runs import run_experiment

from jaxbp.run import loop


def test_one_round_times_the_main_job_against_the_sklearn_script(tmp_path):
    output = tmp_path / "main_job.json"
    result = run_experiment("bench_main_job", "--rounds=1", f"--output={output}", timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(output.read_text())
    medians = figures["median_seconds"]
    assert all(len(figures["seconds"][k]) == 1 and medians[k] > 0 for k in medians)
    assert figures["warm_vs_sklearn"] == medians["warm"] / medians["sklearn"]
    assert figures["first_vs_sklearn"] == medians["first"] / medians["sklearn"]
    phases = figures["warm_phase_seconds"]
    assert tuple(phases) == loop.PHASES
    assert sum(phases.values()) < medians["warm"]  # the process also imports and starts
    assert "where the warm main job's time goes" in result.stdout


def test_the_sklearn_script_learns_digits_once_or_once_a_seed():
    for repeats in (1, 2):
        result = run_experiment("bench_main_job", "--role=sklearn", f"--repeats={repeats}")
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith(f"{repeats} fit(s), ")
        accuracy = float(result.stdout.split("test accuracy ")[1].rstrip("%\n"))
        assert accuracy > 95.0
