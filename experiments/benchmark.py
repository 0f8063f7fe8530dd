"""Speed and memory benchmark of the hand-written backward against autodiff and PyTorch.

    ./launch.sh bench --quick                      # a small grid, under 2 minutes
    ./launch.sh bench                              # the full grid of docs/performance.md
    ./launch.sh bench --depths=2 --widths=1024 --batch_sizes=256 --activations=tanh,relu

For every grid point (depth, width, batch, activation, dtype) the network is
``MLP((width,) * (depth + 1) + (num_outputs,))``, i.e. ``depth`` hidden layers of ``width``
units. Every variant is compiled ahead of time, warmed up, then timed call by call (each call
ended by ``block_until_ready``) in interleaved rounds that run the compared variants back to
back in a random order. Times are medians over the rounds; a ratio is the median over the
rounds of the ratio of the two calls of a round, so that the load of other processes on a
shared machine hits both sides of it. Variants:

* ``custom``: ``jax.value_and_grad`` through ``apply(backward="custom")`` (the custom_vjp);
* ``loss_and_grad``: `jaxbp.loss_and_grad`, the derivation alone;
* ``autodiff``: ``jax.value_and_grad`` through the plain forward;
* ``matmul``: the 3 matmuls per layer of a gradient step alone (``a Wᵀ``, ``δ W``, ``δᵀ a``),
  the shapes the FLOP count ``6 · batch · Σ n_in n_out`` counts: the hardware's limit here;
* ``train_step``: a full optax (adam) step on the hand-written gradient;
* ``epoch_scan`` / ``epoch_loop``: ``epoch_steps`` such steps as one `lax.scan`
  (`jaxbp.train.make_epoch`) against the same steps dispatched from a Python loop;
* ``norms`` / ``clipped``: `jaxbp.per_example_grad_norms` and the per-example clipped
  gradient, against ``vmap_norms``: the norms of ``vmap(grad)`` (skipped where the B
  per-example gradients would not fit in ``--per_example_max_mib``);
* ``torch_eager`` / ``torch_compile``: the same network, weights and batch in PyTorch
  (forward, loss, ``backward()``), when torch is importable, each timed with 1 and with all
  CPU threads and reported at the faster (OpenMP spin-waiting on a shared machine can make
  the multi-threaded small step 10× slower).

Memory: ``residual_*`` is the bytes the forward half of ``jax.vjp`` hands to the backward
half (the compiled forward program's output, less the loss value and the inputs it passes
through unchanged, which the caller holds anyway); ``temp_*`` is the scratch memory of the
compiled gradient program. A separate section (`experiments/bench/digits.py`) times one
epoch of the digits network compiled with ``lax.scan`` against the same training in PyTorch
eager, in one child process per CPU count.

Outputs in ``--outdir``: ``results.csv``, ``results.md`` (printed too), ``results.png``.

The parts live in ``experiments/bench/`` (timing, the JAX side, the PyTorch side, the report);
this file holds the flags and runs the grid.
"""

import contextlib
import dataclasses
import datetime
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
from absl import app, flags

from experiments.bench import digits as digits_lib
from experiments.bench.config import BenchConfig, Point
from experiments.bench.jax_side import _x64, jax_variants
from experiments.bench.report import evaluate_targets, plot, report, write_csv
from experiments.bench.timing import time_interleaved
from experiments.bench.torch_side import (
    TorchRunner,
    best_torch,
    import_torch,
)

_QUICK = flags.DEFINE_boolean("quick", False, "A small grid that runs in under 2 minutes.")
_DEPTHS = flags.DEFINE_list("depths", ["1", "2", "4", "8"], "Hidden layers (the issue's grid).")
_WIDTHS = flags.DEFINE_list("widths", ["32", "256", "1024", "2048"], "Hidden widths.")
_BATCHES = flags.DEFINE_list("batch_sizes", ["1", "32", "256", "1024"], "Rows per step.")
_ACTIVATIONS = flags.DEFINE_list("activations", ["tanh"], "Hidden activations (the digits g).")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "float32, float64 or bfloat16.")
# Not --loss: experiments/train.py and gradcheck.py define that name in the same flag registry.
_LOSS = flags.DEFINE_string("grid_loss", "mse", "Loss of the grid; mse keeps the output plain.")
_NUM_OUTPUTS = flags.DEFINE_integer("num_outputs", 10, "Output width (ten classes, as digits).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Fewest rounds of the gradient comparison.")
_POINT_BUDGET = flags.DEFINE_float(
    "point_budget", 8.0, "Seconds of rounds per point: cheap points get more, up to 5000."
)
_EPOCH_STEPS = flags.DEFINE_integer("epoch_steps", 2, "Steps of the scan-vs-loop epoch.")
_PER_EXAMPLE_MAX_MIB = flags.DEFINE_integer(
    "per_example_max_mib", 2500, "Skip vmap(grad) when its B gradients exceed this (MiB)."
)
_TORCH = flags.DEFINE_boolean("torch", True, "Time PyTorch too, when it is importable.")
_TORCH_COMPILE = flags.DEFINE_boolean(
    "torch_compile", None, "Time torch.compile too (default: on, off with --quick: ~15 s each)."
)
_DIGITS = flags.DEFINE_boolean("digits", True, "The digits epoch: lax.scan against torch eager.")
_DIGITS_CORES = flags.DEFINE_list(
    "digits_cores", ["1", str(len(os.sched_getaffinity(0)))], "CPU counts of the digits runs."
)
_DIGITS_WARMUP = flags.DEFINE_integer(
    "digits_warmup_calls",
    3,
    "Untimed epochs right before each timed digits epoch (0: timed right after the other "
    "framework's epoch, caches cold).",
)
_OUTDIR = flags.DEFINE_string("outdir", None, "Output folder (default runs/bench-<time>).")

QUICK_GRID = dict(depths=(2,), widths=(32, 256, 1024), batch_sizes=(32, 256))


# --------------------------------------------------------------------------------------------
# The grid


def grid(config: BenchConfig) -> list[Point]:
    """Every point, ordered so that one network shape's batch sizes come together."""
    return [
        Point(depth, width, batch, activation, dtype)
        for dtype in config.dtypes
        for activation in config.activations
        for depth in config.depths
        for width in config.widths
        for batch in config.batch_sizes
    ]


# Each point is timed in phases: (the thunks timed together, share of --point_budget). The
# gradient phase, whose ratios the targets read, gets the most rounds (at least --repeats);
# the others at least 3. A name's time comes from the first phase that lists it.
PHASES = {
    "gradient": (("custom", "loss_and_grad", "autodiff", "matmul", "norms", "clipped"), 1.0),
    "training": (("train_step", "epoch_scan", "epoch_loop"), 0.25),
    "vmap": (("vmap_norms", "norms"), 0.1),
    "torch": (("custom",), 0.25),  # with torch_eager@T, torch_compile@T for T in thread_counts
}
_TIMED = (
    "custom",
    "loss_and_grad",
    "autodiff",
    "matmul",
    "train_step",
    "epoch_scan",
    "epoch_loop",
    "norms",
    "clipped",
    "vmap_norms",
    "torch_eager",
    "torch_compile",
)


def run_point(
    point: Point, config: BenchConfig, torch_runner: TorchRunner | None
) -> dict[str, Any]:
    """One row of the results: times (ms), ratios, FLOP/s, memory."""
    with _x64(point.dtype):
        start = time.perf_counter()
        thunks, static = jax_variants(point, config)
        torch_compile_s, torch_names = math.nan, ()
        if torch_runner is not None:
            torch_thunks, torch_compile_s = torch_runner.thunks(point, static)
            thunks.update(torch_thunks)
            torch_names = tuple(torch_thunks)
        setup_s = time.perf_counter() - start
        phases = {}
        for phase, (names, share) in PHASES.items():
            if phase == "torch":
                names = (*torch_names, *names)
            phases[phase] = time_interleaved(
                {name: thunks[name] for name in names if name in thunks},
                min_rounds=config.repeats if phase == "gradient" else 3,
                budget=config.point_budget * share,
                groups=[names],
            )
        eager, torch_threads = best_torch(phases["torch"], "torch_eager")
        compiled, compile_threads = best_torch(phases["torch"], "torch_compile")
    ms = {
        name: 1e3 * phases[phase].median(name)
        for phase, (names, _) in PHASES.items()
        for name in names
        if phase == "gradient" or name not in PHASES["gradient"][0]
    }
    ms["torch_eager"] = 1e3 * phases["torch"].median(eager)
    ms["torch_compile"] = 1e3 * phases["torch"].median(compiled)
    ratio = phases["gradient"].ratio
    flops = static["flops"]
    row: dict[str, Any] = dataclasses.asdict(point)
    row.update({f"{name}_ms": ms[name] for name in _TIMED})
    steps = config.epoch_steps
    row.update(
        custom_over_autodiff=ratio("custom", "autodiff"),
        loss_and_grad_over_autodiff=ratio("loss_and_grad", "autodiff"),
        dots_custom=static["dots_custom"],
        dots_autodiff=static["dots_autodiff"],
        gflops_matmul=flops / ms["matmul"] / 1e6,
        gflops_custom=flops / ms["custom"] / 1e6,
        gflops_loss_and_grad=flops / ms["loss_and_grad"] / 1e6,
        matmul_fraction_custom=ratio("matmul", "custom"),
        matmul_fraction_loss_and_grad=ratio("matmul", "loss_and_grad"),
        scan_step_ms=ms["epoch_scan"] / steps,
        loop_step_ms=ms["epoch_loop"] / steps,
        loop_over_scan=phases["training"].ratio("epoch_loop", "epoch_scan"),
        norms_over_grad=ratio("norms", "loss_and_grad"),
        clipped_over_grad=ratio("clipped", "loss_and_grad"),
        vmap_over_norms=phases["vmap"].ratio("vmap_norms", "norms"),
        torch_eager_over_custom=phases["torch"].ratio(eager, "custom"),
        torch_compile_over_custom=phases["torch"].ratio(compiled, "custom"),
        torch_threads=torch_threads,
        torch_compile_threads=compile_threads,
        residual_custom_bytes=static["residual_custom"],
        residual_autodiff_bytes=static["residual_autodiff"],
        temp_custom_bytes=static["temp_custom"],
        temp_autodiff_bytes=static["temp_autodiff"],
        flops=flops,
        num_params=static["num_params"],
        rounds=phases["gradient"].rounds,
        setup_s=setup_s,
        torch_compile_s=torch_compile_s,
    )
    return row


# --------------------------------------------------------------------------------------------
# Reports


def machine_description(torch=None) -> str:
    """One line: CPU model, cores, memory, jax/jaxlib and torch versions, backend."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        memory = f", {int(f.readline().split()[1]) / 2**20:.0f} GiB RAM"
    torch_version = f", torch {torch.__version__}" if torch is not None else ", no torch"
    device = jax.devices()[0]
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}; jax {jax.__version__} "
        f"({jax.default_backend()} backend, {device.device_kind}){torch_version}; "
        f"python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def run_benchmark(
    config: BenchConfig, outdir: str, *, command: str = "", log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Runs the grid (and the digits epoch), writes CSV, markdown and plot to ``outdir``.

    Returns:
      ``{"rows", "digits", "targets", "markdown", "files"}``.
    """
    torch = import_torch() if config.torch else None
    if config.torch and torch is None:
        log("benchmark: torch is not importable; timing JAX only (pip install -e '.[bench]').")
    torch_runner = TorchRunner(torch, config) if torch is not None else None
    machine = machine_description(torch)
    log(f"benchmark: {machine}")
    os.makedirs(outdir, exist_ok=True)
    points = grid(config)
    rows = []
    start = time.perf_counter()
    for i, point in enumerate(points, start=1):
        row = run_point(point, config, torch_runner)
        rows.append(row)
        log(
            f"[{i}/{len(points)} {time.perf_counter() - start:6.0f}s] depth {point.depth} width "
            f"{point.width} batch {point.batch} {point.activation} {point.dtype}: custom "
            f"{row['custom_ms']:.3g} ms, custom/ad {row['custom_over_autodiff']:.3f}, "
            f"l&g/ad {row['loss_and_grad_over_autodiff']:.3f}, of matmul "
            f"{row['matmul_fraction_custom']:.2f}, torch {row['torch_eager_ms']:.3g} ms"
        )
    digits = digits_lib.digits_benchmark(config, log) if config.digits else []
    targets = evaluate_targets(rows, digits)
    notes = []
    if torch_runner is not None and torch_runner.compile_error:
        notes.append(f"torch.compile does not work here: {torch_runner.compile_error}")
    markdown = report(rows, digits, targets, machine, command, notes)
    files = {
        "csv": os.path.join(outdir, "results.csv"),
        "markdown": os.path.join(outdir, "results.md"),
        "plot": os.path.join(outdir, "results.png"),
    }
    write_csv(rows, files["csv"])
    if digits:
        files["digits_csv"] = os.path.join(outdir, "digits.csv")
        write_csv(digits, files["digits_csv"])
    with open(files["markdown"], "w") as f:
        f.write(markdown)
    if not plot(rows, files["plot"]):
        del files["plot"]
    elapsed = time.perf_counter() - start
    log(f"benchmark: {len(rows)} points in {elapsed:.0f}s; wrote {', '.join(files.values())}")
    return {
        "rows": rows,
        "digits": digits,
        "targets": targets,
        "markdown": markdown,
        "files": files,
    }


def config_from_flags() -> BenchConfig:
    """The BenchConfig of the command line (``--quick`` replaces the grid)."""

    def ints(values):
        return tuple(int(v) for v in values)

    quick = _QUICK.value
    torch_compile = _TORCH_COMPILE.value if _TORCH_COMPILE.value is not None else not quick
    grid_flags = dict(
        depths=ints(_DEPTHS.value), widths=ints(_WIDTHS.value), batch_sizes=ints(_BATCHES.value)
    )
    if quick:
        for name, flag in (("depths", _DEPTHS), ("widths", _WIDTHS), ("batch_sizes", _BATCHES)):
            if not flag.present:
                grid_flags[name] = QUICK_GRID[name]
    return BenchConfig(
        **grid_flags,
        activations=tuple(_ACTIVATIONS.value),
        dtypes=tuple(_DTYPES.value),
        loss=_LOSS.value,
        num_outputs=_NUM_OUTPUTS.value,
        repeats=_REPEATS.value,
        point_budget=_POINT_BUDGET.value if _POINT_BUDGET.present or not quick else 4.0,
        epoch_steps=_EPOCH_STEPS.value,
        per_example_max_mib=_PER_EXAMPLE_MAX_MIB.value,
        torch=_TORCH.value,
        torch_compile=torch_compile,
        digits=_DIGITS.value,
        digits_budget=20.0 if not quick else 4.0,
        digits_warmup_calls=_DIGITS_WARMUP.value,
        digits_cores=ints(_DIGITS_CORES.value),
    )


def main(argv: Sequence[str]) -> None:
    del argv
    config = config_from_flags()
    outdir = _OUTDIR.value or os.path.join(
        "runs", "bench-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    command = "./launch.sh bench " + " ".join(sys.argv[1:])
    result = run_benchmark(config, outdir, command=command.strip())
    print(result["markdown"])


if __name__ == "__main__":
    app.run(main)
