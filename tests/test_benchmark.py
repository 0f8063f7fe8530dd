"""Smoke test of experiments/benchmark.py: its smallest configuration runs and reports.

No timing is asserted (timings on a shared CI machine mean nothing); the test checks that every
variant ran, gave finite positive times and the columns the report reads, and that the CSV,
markdown and plot were written.
"""

import csv
import math
import os

import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import benchmark
from experiments.bench import report

SMALLEST = benchmark.BenchConfig(
    depths=(1,),
    widths=(8,),
    batch_sizes=(4,),
    activations=("tanh",),
    dtypes=("float32",),
    repeats=1,
    point_budget=0.05,
    epoch_steps=2,
    torch_compile=False,  # tens of seconds of compilation; the grid run covers it
    digits_budget=0.05,
    digits_hidden=(32,),
    digits_cores=(1,),  # one child process, pinned to one CPU
)
JAX_TIMES = (
    "custom_ms",
    "loss_and_grad_ms",
    "autodiff_ms",
    "matmul_ms",
    "train_step_ms",
    "epoch_scan_ms",
    "epoch_loop_ms",
    "norms_ms",
    "clipped_ms",
    "vmap_norms_ms",
)
RATIOS = (
    "custom_over_autodiff",
    "loss_and_grad_over_autodiff",
    "matmul_fraction_custom",
    "loop_over_scan",
    "norms_over_grad",
    "vmap_over_norms",
)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    outdir = str(tmp_path_factory.mktemp("bench"))
    lines = []
    return benchmark.run_benchmark(SMALLEST, outdir, command="test", log=lines.append), lines


def test_smallest_configuration_reports_every_variant(result):
    result, _ = result
    (row,) = result["rows"]
    assert (row["depth"], row["width"], row["batch"]) == (1, 8, 4)
    for key in JAX_TIMES + RATIOS:
        assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    assert row["flops"] == 6 * 4 * (8 * 8 + 8 * 10)
    assert row["dots_custom"] > 0 and row["dots_autodiff"] > 0
    assert row["residual_custom_bytes"] > 0 and row["residual_autodiff_bytes"] > 0
    if benchmark.import_torch() is not None:
        assert math.isfinite(row["torch_eager_ms"]) and row["torch_eager_ms"] > 0
        assert row["torch_threads"] >= 1
    else:
        assert math.isnan(row["torch_eager_ms"])
    assert math.isnan(row["torch_compile_ms"])  # switched off in SMALLEST


def test_digits_section_reports_the_network(result):
    result, _ = result
    networks = [d["network"] for d in result["digits"]]
    assert networks == ["64-32-10"]
    for d in result["digits"]:
        assert d["jax_scan_ms"] > 0 and d["jax_loop_ms"] > 0 and d["steps"] > 0
        assert d["cores"] == 1  # the child ran on the one CPU it was given
        assert d["shuffle_sort_ms"] > 0 and d["shuffle_hashed_ms"] > 0


def test_best_of_cores_takes_each_framework_at_its_fastest():
    rows = [
        {"network": "a", "cores": 1, "jax_scan_ms": 1.0, "torch_eager_ms": 30.0,
         "torch_threads": 1, "torch_over_scan": 29.0},
        {"network": "a", "cores": 2, "jax_scan_ms": 2.0, "torch_eager_ms": 20.0,
         "torch_threads": 2, "torch_over_scan": 11.0},
        {"network": "b", "cores": 1, "jax_scan_ms": 3.0, "torch_eager_ms": math.nan,
         "torch_threads": None, "torch_over_scan": math.nan},
    ]  # fmt: skip
    a, b = report.best_of_cores(rows)
    assert (a["jax_scan_ms"], a["jax_cores"]) == (1.0, 1)
    assert (a["torch_eager_ms"], a["torch_cores"], a["torch_threads"]) == (20.0, 2, 2)
    assert a["speedup"] == 20.0 and a["per_run"] == {1: 29.0, 2: 11.0}
    assert b["jax_scan_ms"] == 3.0 and math.isnan(b["speedup"])


def test_report_files_are_written(result):
    result, lines = result
    files = result["files"]
    with open(files["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["custom_ms"]) > 0
    with open(files["markdown"]) as f:
        markdown = f.read()
    assert markdown == result["markdown"]
    assert "| depth | width | batch |" in markdown and "Targets:" in markdown
    assert "Machine: " in markdown and "cores" in markdown
    if "plot" in files:
        assert os.path.getsize(files["plot"]) > 0
    assert any("1 points" in line for line in lines)


def test_targets_are_evaluated(result):
    result, _ = result
    names = " ".join(t["target"] for t in result["targets"])
    assert "jax.grad" in names and "residual memory" in names
    for target in result["targets"]:
        assert isinstance(target["holds"], bool) and target["figure"]


def test_time_interleaved_gives_a_median_per_thunk():
    calls = {"a": 0, "b": 0, "c": 0}

    def thunk(name):
        def run():
            calls[name] += 1
            return name

        return run

    timings = benchmark.time_interleaved(
        {"a": thunk("a"), "b": thunk("b"), "c": thunk("c")},
        min_rounds=4,
        budget=0.0,
        groups=[("a", "b")],
    )
    assert timings.rounds == 4 and set(timings.samples) == {"a", "b", "c"}
    assert calls == {"a": 5, "b": 5, "c": 5}  # one warm-up each, then one call a round
    assert all(len(s) == 4 and min(s) >= 0 for s in timings.samples.values())
    assert timings.median("a") >= 0 and math.isnan(timings.median("d"))
    assert timings.ratio("a", "b") > 0 and math.isnan(timings.ratio("a", "d"))
    with pytest.raises(ValueError, match="two groups"):
        benchmark.time_interleaved(
            {"a": thunk("a")}, min_rounds=1, budget=0.0, groups=[("a",), ("a",)]
        )


def test_time_interleaved_warmup_calls_precede_every_timed_call():
    log = []

    def thunk(name):
        def run():
            log.append(name)
            return name

        return run

    timings = benchmark.time_interleaved(
        {"a": thunk("a"), "b": thunk("b")},
        min_rounds=3,
        budget=0.0,
        groups=[("a", "b")],
        warmup_calls=2,
    )
    assert all(len(s) == 3 for s in timings.samples.values())
    rounds = log[2:]  # after the one estimate call each
    assert len(rounds) == 3 * 2 * 3  # rounds x thunks x (2 untimed + 1 timed)
    runs = [rounds[i : i + 3] for i in range(0, len(rounds), 3)]
    assert all(len(set(run)) == 1 for run in runs)  # a thunk's calls come back to back


def test_quick_flag_selects_the_quick_grid():
    with flagsaver.flagsaver():
        flags.FLAGS(["benchmark", "--quick"])
        config = benchmark.config_from_flags()
    assert config.depths == benchmark.QUICK_GRID["depths"]
    assert config.widths == benchmark.QUICK_GRID["widths"]
    assert config.batch_sizes == benchmark.QUICK_GRID["batch_sizes"]
    assert not config.torch_compile
    with flagsaver.flagsaver():
        flags.FLAGS(["benchmark", "--quick", "--widths=64", "--torch_compile"])
        config = benchmark.config_from_flags()
    assert config.widths == (64,) and config.torch_compile
    with flagsaver.flagsaver():
        flags.FLAGS(["benchmark"])
        config = benchmark.config_from_flags()
    assert config.widths == (32, 256, 1024, 2048) and config.batch_sizes == (1, 32, 256, 1024)
    assert config.depths == (1, 2, 4, 8) and config.torch_compile


def test_a_point_runs_without_torch():
    # The benchmark must work where torch is not installed (the `bench` extra is optional).
    (point,) = benchmark.grid(SMALLEST)
    row = benchmark.run_point(point, SMALLEST, torch_runner=None)
    assert row["custom_ms"] > 0 and math.isfinite(row["custom_over_autodiff"])
    assert math.isnan(row["torch_eager_ms"]) and row["torch_threads"] is None
