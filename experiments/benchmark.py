"""Speed and memory benchmark of the hand-written backward against autodiff and PyTorch.

    ./launch.sh bench --quick                      # a small grid, about two minutes
    ./launch.sh bench                              # the full grid of docs/performance.md
    ./launch.sh bench --depths=2 --widths=1024 --batch_sizes=256 --activations=tanh,relu

For every grid point (depth, width, batch, activation, dtype) the network is
``MLP((width,) * (depth + 1) + (num_outputs,))``. Every variant is compiled ahead of time,
warmed up, then timed call by call in interleaved rounds (`experiments/bench/timing.py`);
times are medians over rounds, ratios medians over rounds of the ratio of two calls made back
to back. The variants are those of `experiments/bench/jax_side.py` and, where torch is
installed, `torch_side.py`; the digits epoch (`digits.py`) runs in one child process per CPU
count; `alternatives.py` times the library's speed choices against the code they replaced.

Outputs in ``--outdir``: ``results.csv``, ``digits.csv``, ``alternatives.csv``, ``results.md``
(printed too) and ``results.png``. The flags are the fields of `BenchConfig`.
"""

import dataclasses
import datetime
import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
from absl import app, flags

from experiments.bench import alternatives as alternatives_lib
from experiments.bench import digits as digits_lib
from experiments.bench import host, report
from experiments.bench.config import BenchConfig, Point
from experiments.bench.jax_side import jax_variants, x64_for
from experiments.bench.timing import time_interleaved
from experiments.bench.torch_side import TorchRunner, best_torch, import_torch


def _define_flags() -> dict[str, flags.FlagHolder]:
    """One flag per `BenchConfig` field, with its default and its reason as the help."""
    define = {
        bool: flags.DEFINE_boolean,
        int: flags.DEFINE_integer,
        float: flags.DEFINE_float,
        str: flags.DEFINE_string,
    }
    holders = {}
    for field in dataclasses.fields(BenchConfig):
        default, reason = field.default, field.metadata["help"]
        if isinstance(default, tuple):
            holders[field.name] = flags.DEFINE_list(field.name, list(map(str, default)), reason)
        else:
            holders[field.name] = define[type(default)](field.name, default, reason)
    return holders


_CONFIG_FLAGS = _define_flags()
_QUICK = flags.DEFINE_boolean("quick", False, "The QUICK settings: about two minutes in all.")
_OUTDIR = flags.DEFINE_string("outdir", None, "Output folder (default runs/bench-<time>).")

# --quick: a 6-point grid with shorter budgets; flags given on the command line win.
QUICK = dict(
    depths=(2,),
    widths=(32, 256, 1024),
    batch_sizes=(32, 256),
    point_budget=4.0,
    digits_budget=4.0,
    torch_compile=False,  # ~15 s of compiling per network shape
)


def config_from_flags() -> BenchConfig:
    """The `BenchConfig` of the command line."""
    values = {}
    for field in dataclasses.fields(BenchConfig):
        holder = _CONFIG_FLAGS[field.name]
        if _QUICK.value and not holder.present and field.name in QUICK:
            values[field.name] = QUICK[field.name]
        elif isinstance(field.default, tuple):
            values[field.name] = tuple(type(field.default[0])(v) for v in holder.value)
        else:
            values[field.name] = holder.value
    return BenchConfig(**values)


def grid(config: BenchConfig) -> list[Point]:
    """Every point, ordered so that one network shape's batch sizes come together."""
    axes = (config.dtypes, config.activations, config.depths, config.widths, config.batch_sizes)
    return [Point(d, w, b, a, t) for t, a, d, w, b in itertools.product(*axes)]


# The phases of a point: (the thunks timed together, share of --point_budget). The gradient
# phase, whose ratios the targets read, gets the most rounds; a name's time comes from the
# first phase that lists it. The torch phase adds torch_eager@T and torch_compile@T.
PHASES = {
    "gradient": (("custom", "loss_and_grad", "autodiff", "matmul", "norms", "clipped"), 1.0),
    "training": (("train_step", "epoch_scan", "epoch_loop"), 0.25),
    "vmap": (("vmap_norms", "norms"), 0.1),
    "torch": (("custom",), 0.25),
}
TORCH_KINDS = ("torch_eager", "torch_compile")  # timed at 1 and all threads, the faster kept
# column: (phase, numerator, denominator): the median over rounds of the per-round ratio.
RATIOS = {
    "custom_over_autodiff": ("gradient", "custom", "autodiff"),
    "loss_and_grad_over_autodiff": ("gradient", "loss_and_grad", "autodiff"),
    "matmul_fraction_custom": ("gradient", "matmul", "custom"),
    "matmul_fraction_loss_and_grad": ("gradient", "matmul", "loss_and_grad"),
    "norms_over_grad": ("gradient", "norms", "loss_and_grad"),
    "clipped_over_grad": ("gradient", "clipped", "loss_and_grad"),
    "loop_over_scan": ("training", "epoch_loop", "epoch_scan"),
    "vmap_over_norms": ("vmap", "vmap_norms", "norms"),
    "torch_eager_over_custom": ("torch", "torch_eager", "custom"),
    "torch_compile_over_custom": ("torch", "torch_compile", "custom"),
}


def run_point(point: Point, config: BenchConfig, torch_runner: TorchRunner | None) -> dict:
    """One row of the results: times (ms), ratios, FLOP/s, memory."""
    with x64_for(point.dtype):
        start = time.perf_counter()
        thunks, figures, inputs = jax_variants(point, config)
        torch_thunks, torch_compile_s = {}, math.nan
        if torch_runner is not None:
            torch_thunks, torch_compile_s = torch_runner.thunks(point, inputs)
            thunks.update(torch_thunks)
        setup_s = time.perf_counter() - start
        timed = {}
        for phase, (names, share) in PHASES.items():
            names = (*torch_thunks, *names) if phase == "torch" else names
            timed[phase] = time_interleaved(
                {name: thunks[name] for name in names if name in thunks},
                min_rounds=config.repeats if phase == "gradient" else 3,
                budget=config.point_budget * share,
                groups=[names],
            )
    best = {kind: best_torch(timed["torch"], kind) for kind in TORCH_KINDS}  # (name, threads)
    name = {kind: name for kind, (name, _) in best.items()}
    ms = {}
    for phase, (names, _) in PHASES.items():
        for n in (*names, *TORCH_KINDS) if phase == "torch" else names:
            ms.setdefault(n, 1e3 * timed[phase].median(name.get(n, n)))
    ratios = {k: timed[p].ratio(name.get(a, a), name.get(b, b)) for k, (p, a, b) in RATIOS.items()}
    flops = figures["flops"]
    return {
        **dataclasses.asdict(point),
        **{f"{n}_ms": value for n, value in ms.items()},
        **ratios,
        **{f"gflops_{n}": flops / ms[n] / 1e6 for n in ("matmul", "custom", "loss_and_grad")},
        "scan_step_ms": ms["epoch_scan"] / config.epoch_steps,
        "loop_step_ms": ms["epoch_loop"] / config.epoch_steps,
        "torch_threads": best["torch_eager"][1],
        "torch_compile_threads": best["torch_compile"][1],
        **figures,
        "rounds": timed["gradient"].rounds,
        "setup_s": setup_s,
        "torch_compile_s": torch_compile_s,
    }


TORCH_MISSING = (
    "benchmark: torch is not installed, so PyTorch is not timed; to compare, install the "
    "CPU-only wheel: .venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu"
)


def run_benchmark(
    config: BenchConfig, outdir: str, *, command: str = "", log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Runs the grid, the digits epoch and the alternatives; writes the files to ``outdir``.

    Returns:
      ``{"rows", "digits", "alternatives", "targets", "markdown", "files"}``.
    """
    torch = import_torch() if config.torch else None
    if config.torch and torch is None:
        log(TORCH_MISSING)
    torch_runner = TorchRunner(torch, config) if torch is not None else None
    device = jax.devices()[0]
    machine = f"{host.describe()} ({jax.default_backend()} backend, {device.device_kind}); " + (
        f"torch {torch.__version__}" if torch is not None else "no torch"
    )
    log(f"benchmark: {machine}")
    points, rows, start = grid(config), [], time.perf_counter()
    for i, point in enumerate(points, start=1):
        rows.append(row := run_point(point, config, torch_runner))
        log(
            f"[{i}/{len(points)} {time.perf_counter() - start:6.0f}s] {point}: custom "
            f"{row['custom_ms']:.3g} ms, custom/ad {row['custom_over_autodiff']:.3f}, "
            f"l&g/ad {row['loss_and_grad_over_autodiff']:.3f}, vs matmul "
            f"{row['matmul_fraction_custom']:.2f}, torch {row['torch_eager_ms']:.3g} ms"
        )
    digits = digits_lib.digits_benchmark(config, log) if config.digits else []
    alternatives = alternatives_lib.measure(config) if config.alternatives else []
    notes = []
    if torch_runner is not None and torch_runner.compile_error:
        notes.append(f"torch.compile does not work here: {torch_runner.compile_error}")
    markdown = report.report(rows, digits, alternatives, machine, command, notes)
    os.makedirs(outdir, exist_ok=True)
    files = {}
    for name, table in (("results", rows), ("digits", digits), ("alternatives", alternatives)):
        if table:
            files[f"{name}_csv"] = os.path.join(outdir, f"{name}.csv")
            report.write_csv(table, files[f"{name}_csv"])
    files["markdown"] = os.path.join(outdir, "results.md")
    with open(files["markdown"], "w") as f:
        f.write(markdown)
    if report.plot(rows, plot_path := os.path.join(outdir, "results.png")):
        files["plot"] = plot_path
    elapsed = time.perf_counter() - start
    log(f"benchmark: {len(rows)} points in {elapsed:.0f}s; wrote {', '.join(files.values())}")
    return {
        "rows": rows,
        "digits": digits,
        "alternatives": alternatives,
        "targets": report.targets(rows, digits),
        "markdown": markdown,
        "files": files,
    }


def main(argv: Sequence[str]) -> None:
    del argv
    outdir = _OUTDIR.value or os.path.join(
        "runs", "bench-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    command = "./launch.sh bench " + " ".join(sys.argv[1:])
    print(run_benchmark(config_from_flags(), outdir, command=command.strip())["markdown"])


if __name__ == "__main__":
    app.run(main)
