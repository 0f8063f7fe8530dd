"""Smoke test of experiments/benchmark.py: its smallest configuration runs and reports.

No timing is asserted (timings on a shared CI machine mean nothing); the test checks that every
variant ran, gave finite positive times and the columns the report reads, and that the CSV,
markdown and plot were written.
"""

import csv
import math
import os

import jax
import jax.numpy as jnp
import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import benchmark
from experiments.bench import alternatives, digits, report
from experiments.bench.config import BenchConfig
from experiments.bench.host import time_interleaved
from experiments.bench.torch_side import import_torch
from jaxbp.run import config as config_lib
from jaxbp.run import recipe

SMALLEST = BenchConfig(
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
    digits_hidden=(),  # the run's network alone
    digits_cores=(1,),  # one child process, pinned to one CPU
    alternatives=False,  # compiles ten programs; test_alternatives_run covers them
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
    if import_torch() is not None:
        assert math.isfinite(row["torch_eager_ms"]) and row["torch_eager_ms"] > 0
        assert row["torch_threads"] >= 1
    else:
        assert math.isnan(row["torch_eager_ms"])
    assert math.isnan(row["torch_compile_ms"])  # switched off in SMALLEST


def test_digits_section_times_the_trainers_network(result):
    result, _ = result
    trainer_config = config_lib.make_config("digits")
    sizes = (64, *trainer_config.hidden_sizes, 10)
    assert [d["network"] for d in result["digits"]] == ["-".join(map(str, sizes))]
    for d in result["digits"]:
        assert d["jax_scan_ms"] > 0 and d["jax_loop_ms"] > 0
        assert d["steps"] == len(digits.run_training().x) // trainer_config.batch_size
        assert d["cores"] == 1  # the child ran on the one CPU it was given
        assert d["shuffle_sort_ms"] > 0 and d["shuffle_hashed_ms"] > 0
        if import_torch() is not None:
            assert d["torch_eager_ms"] > 0 and d["torch_threads"] >= 1


def test_digits_training_is_the_trainers():
    trainer_config = config_lib.make_config("digits")
    t = digits.run_training()
    assert t.config == trainer_config and t.loss == "softmax_cross_entropy"
    assert t.model == recipe.build_model(trainer_config, recipe.load_data(trainer_config))
    assert digits.run_training(hidden_sizes=(32,)).model.sizes == (64, 32, 10)
    # The optimizer is the run's: its learning rate follows the config's schedule.
    state = t.optimizer.init(t.params)
    updates, _ = t.optimizer.update(jax.tree.map(jnp.ones_like, t.params), state, t.params)
    first_step = float(-updates[0]["b"][0])  # adam's first step is the learning rate
    # (up to float32's bias correction 1 - 0.999, 1e-5 off)
    assert abs(first_step - trainer_config.learning_rate) < 1e-4 * trainer_config.learning_rate


def test_digits_targets_take_each_framework_at_its_fastest():
    rows = [
        {"network": "a", "cores": 1, "jax_scan_ms": 1.0, "torch_eager_ms": 30.0,
         "torch_threads": 1},
        {"network": "a", "cores": 2, "jax_scan_ms": 2.0, "torch_eager_ms": 20.0,
         "torch_threads": 2},
        {"network": "b", "cores": 1, "jax_scan_ms": 3.0, "torch_eager_ms": math.nan,
         "torch_threads": None},
    ]  # fmt: skip
    (a,) = report.targets([], rows)  # b has no PyTorch time, so no target
    assert a.name == "digits a epoch: torch eager / lax.scan, each at its fastest"
    assert (a.value, a.bound, a.holds) == (20.0, ">= 20.00", True)
    assert a.at == "scan 1 ms on 1 core(s), torch 20 ms on 2 core(s), 2 thread(s)"


def test_report_files_are_written(result):
    result, lines = result
    files = result["files"]
    with open(files["results_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["custom_ms"]) > 0
    with open(files["digits_csv"]) as f:
        assert [r["network"] for r in csv.DictReader(f)] == [result["digits"][0]["network"]]
    with open(files["markdown"]) as f:
        markdown = f.read()
    assert markdown == result["markdown"]
    assert "| depth | width | batch |" in markdown and "Targets:" in markdown
    assert "- custom ms: jax.value_and_grad" in markdown  # the legend, a line a column
    assert "Machine: " in markdown and "cores" in markdown
    assert os.path.getsize(files["plot"]) > 0
    assert any("1 points" in line for line in lines)
    if import_torch() is None:
        assert benchmark.TORCH_MISSING in lines
        assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in (
            benchmark.TORCH_MISSING
        )


def test_targets_of_the_run_agree_with_their_bounds(result):
    result, _ = result
    targets = result["targets"]
    names = [t.name for t in targets]
    assert "apply(custom) / jax.grad, median" in names
    assert "residual bytes, custom / autodiff, max" in names
    for t in targets:
        comparison, bound = t.bound.split()
        expected = t.value <= float(bound) if comparison == "<=" else t.value >= float(bound)
        assert t.holds == expected and math.isfinite(t.value) and t.at, t


def _grid_row(width, batch, custom_over_autodiff, **rest):
    row = dict(depth=1, width=width, batch=batch, custom_over_autodiff=custom_over_autodiff)
    for key in ("loss_and_grad_over_autodiff", "matmul_fraction_custom",
                "matmul_fraction_loss_and_grad", "residual_ratio", "norms_over_grad",
                "vmap_over_norms"):  # fmt: skip
        row[key] = rest.get(key, math.nan)
    return row


def test_targets_read_the_rows_they_name():
    rows = [
        _grid_row(32, 32, 0.98),
        _grid_row(1024, 256, 1.00, matmul_fraction_custom=0.95, vmap_over_norms=4.0),
        _grid_row(2048, 1024, 1.07, matmul_fraction_custom=0.85),
    ]
    digits = [
        {"network": "64-32-10", "cores": 1, "jax_scan_ms": 0.5, "torch_eager_ms": 15.0,
         "torch_threads": 1},
        {"network": "64-128-10", "cores": 1, "jax_scan_ms": 1.5, "torch_eager_ms": 18.0,
         "torch_threads": 1},
    ]  # fmt: skip
    found = {t.name: t for t in report.targets(rows, digits)}
    median = found["apply(custom) / jax.grad, median"]
    assert (median.value, median.holds, median.at) == (1.00, True, "3 points")
    worst = found["apply(custom) / jax.grad, max"]
    assert (worst.value, worst.holds) == (1.07, False)
    assert worst.at == "depth 1, width 2048, batch 1024"
    matmul = found["apply(custom) vs matmul, min over width >= 1024, batch >= 256"]
    assert (matmul.value, matmul.holds) == (0.85, False)
    vmap = found["vmap(grad) norms / per_example_grad_norms, min at width 1024, batch 256"]
    assert (vmap.value, vmap.holds, vmap.bound) == (4.0, False, ">= 5.00")
    small = found["digits 64-32-10 epoch: torch eager / lax.scan, each at its fastest"]
    assert (small.value, small.holds) == (30.0, True)
    trainers = found["digits 64-128-10 epoch: torch eager / lax.scan, each at its fastest"]
    assert (trainers.value, trainers.holds) == (12.0, False)
    # Targets whose column has no measured value (all NaN here) are left out, not failed.
    assert not any(name.startswith("loss_and_grad / jax.grad") for name in found)


def test_alternatives_compile_different_programs_and_time_both():
    config = BenchConfig(repeats=2, point_budget=0.0, digits_warmup_calls=0)
    rows = alternatives.measure(config)
    assert len(rows) == 5 and len({(r["choice"], r["program"]) for r in rows}) == 5
    for row in rows:
        assert row["chosen_ms"] > 0 and row["replaced_ms"] > 0 and row["rounds"] == 2, row
        assert math.isfinite(row["replaced_over_chosen"]), row


def test_time_interleaved_gives_a_median_per_thunk():
    calls = {"a": 0, "b": 0, "c": 0}

    def thunk(name):
        def run():
            calls[name] += 1
            return name

        return run

    timings = time_interleaved(
        {"a": thunk("a"), "b": thunk("b"), "c": thunk("c")},
        min_rounds=4,
        budget=0.0,
    )
    assert timings.rounds == 4 and set(timings.samples) == {"a", "b", "c"}
    assert calls == {"a": 5, "b": 5, "c": 5}  # one warm-up each, then one call a round
    assert all(len(s) == 4 and min(s) >= 0 for s in timings.samples.values())
    assert timings.median("a") >= 0 and math.isnan(timings.median("d"))
    assert timings.ratio("a", "b") > 0 and math.isnan(timings.ratio("a", "d"))


def test_time_interleaved_warmup_calls_precede_every_timed_call():
    log = []

    def thunk(name):
        def run():
            log.append(name)
            return name

        return run

    timings = time_interleaved(
        {"a": thunk("a"), "b": thunk("b")},
        min_rounds=3,
        budget=0.0,
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
    assert config.depths == benchmark.QUICK["depths"]
    assert config.widths == benchmark.QUICK["widths"]
    assert config.batch_sizes == benchmark.QUICK["batch_sizes"]
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
