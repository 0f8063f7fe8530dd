"""Speed and memory benchmark of the hand-written backward against autodiff and PyTorch:
``./launch.sh bench --quick`` (a small grid, about two minutes) or ``./launch.sh bench`` (the
full grid of docs/performance.md). The flags are the fields of `BenchConfig`; the output files,
the method and the modules of `bench/` are described in docs/performance.md.
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

from experiments.bench import alternatives, digits, host, report, torch_side
from experiments.bench.config import BenchConfig, Point
from experiments.bench.jax_side import jax_variants

_DEFINE = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float}
_CONFIG_FLAGS = {
    f.name: flags.DEFINE_list(f.name, list(map(str, f.default)), f.metadata["help"])
    if isinstance(f.default, tuple)
    else _DEFINE.get(type(f.default), flags.DEFINE_string)(f.name, f.default, f.metadata["help"])
    for f in dataclasses.fields(BenchConfig)
}
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
    """The `BenchConfig` of the command line; --quick sets the QUICK fields not given."""
    quick = {n: v for n, v in QUICK.items() if _QUICK.value and not _CONFIG_FLAGS[n].present}
    return BenchConfig.from_dict({**{n: h.value for n, h in _CONFIG_FLAGS.items()}, **quick})


def grid(config: BenchConfig) -> list[Point]:
    """Every point, ordered so that one network shape's batch sizes come together."""
    axes = (config.dtypes, config.activations, config.depths, config.widths, config.batch_sizes)
    return [Point(d, w, b, a, t) for t, a, d, w, b in itertools.product(*axes)]


# The phases of a point: (names timed together, share of --point_budget). A time comes from the
# first phase that lists its name, a ratio from the first that times both of its names; the
# torch phase times each KIND@T of torch_side and takes each kind at its fastest T.
PHASES = (
    (("custom", "loss_and_grad", "autodiff", "matmul", "norms", "clipped"), 1.0),
    (("train_step", "epoch_scan", "epoch_loop"), 0.25),
    (("vmap_norms", "norms"), 0.1),
    (("torch_eager", "torch_compile", "custom"), 0.25),
)
TORCH_KINDS = ("torch_eager", "torch_compile")
GFLOPS = ("matmul", "custom", "loss_and_grad")  # the FLOPs of a gradient step over their time
RATIOS = {  # column: (numerator, denominator), the median of the per-round ratios
    "custom_over_autodiff": ("custom", "autodiff"),
    "loss_and_grad_over_autodiff": ("loss_and_grad", "autodiff"),
    "matmul_fraction_custom": ("matmul", "custom"),
    "matmul_fraction_loss_and_grad": ("matmul", "loss_and_grad"),
    "norms_over_grad": ("norms", "loss_and_grad"),
    "clipped_over_grad": ("clipped", "loss_and_grad"),
    "loop_over_scan": ("epoch_loop", "epoch_scan"),
    "vmap_over_norms": ("vmap_norms", "norms"),
    "torch_eager_over_custom": ("torch_eager", "custom"),
    "torch_compile_over_custom": ("torch_compile", "custom"),
}


def run_point(point: Point, config: BenchConfig, torch_runner: Any | None) -> dict[str, Any]:
    """One row of results.csv: times (ms), ratios, FLOP/s, memory."""
    with jax.enable_x64(point.dtype == "float64"):
        start = time.perf_counter()
        thunks, figures, inputs = jax_variants(point, config)
        torch_compile_s = math.nan
        if torch_runner is not None:
            torch_thunks, torch_compile_s = torch_runner.thunks(point, inputs)
            thunks.update(torch_thunks)
        setup_s = time.perf_counter() - start
        timed = [
            host.time_interleaved(
                {n: f for n, f in thunks.items() if n.split("@")[0] in names},
                min_rounds=config.repeats if i == 0 else 3,
                budget=config.point_budget * share,
            )
            for i, (names, share) in enumerate(PHASES)
        ]
    timed[-1], threads = torch_side.at_fastest(timed[-1], TORCH_KINDS)
    ms: dict[str, float] = {}
    for (names, _), timings in zip(PHASES, timed, strict=True):
        for name in names:  # a name's time from the first phase that lists it
            ms.setdefault(name, 1e3 * timings.median(name))
    ratios = {  # each from the first phase that times both names
        column: next((t.ratio(a, b) for t in timed if {a, b} <= t.samples.keys()), math.nan)
        for column, (a, b) in RATIOS.items()
    }
    return {
        **dataclasses.asdict(point),
        **{f"{name}_ms": value for name, value in ms.items()},
        **ratios,
        **{f"gflops_{n}": figures["flops"] / ms[n] / 1e6 for n in GFLOPS},
        "scan_step_ms": ms["epoch_scan"] / config.epoch_steps,
        "loop_step_ms": ms["epoch_loop"] / config.epoch_steps,
        "torch_threads": threads["torch_eager"],
        "torch_compile_threads": threads["torch_compile"],
        **figures,
        "rounds": timed[0].rounds,
        "setup_s": setup_s,
        "torch_compile_s": torch_compile_s,
    }


PROGRESS = ("custom_ms", "custom_over_autodiff", "loss_and_grad_over_autodiff", "torch_eager_ms")
TORCH_MISSING = (
    "benchmark: torch is not installed, so PyTorch is not timed; to compare, install the "
    "CPU-only wheel: .venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu"
)


def run_benchmark(
    config: BenchConfig, outdir: str, *, command: str = "", log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Runs the grid, the digits epoch and the alternatives, writes the files to ``outdir``, and
    returns ``{"rows", "digits", "alternatives", "targets", "markdown", "files"}``."""
    torch = torch_side.import_torch() if config.torch else None
    if config.torch and torch is None:
        log(TORCH_MISSING)
    torch_runner = torch_side.TorchRunner(torch, config) if torch is not None else None
    backend = f"{jax.default_backend()} backend, {jax.devices()[0].device_kind}"
    version = f"torch {torch.__version__}" if torch is not None else "no torch"
    log(f"benchmark: {(machine := f'{host.describe()} ({backend}); {version}')}")
    points, rows, start = grid(config), [], time.perf_counter()
    for i, point in enumerate(points, start=1):
        rows.append(r := run_point(point, config, torch_runner))
        figures = ", ".join(f"{k} {r[k]:.3g}" for k in PROGRESS)
        log(f"[{i}/{len(points)} {time.perf_counter() - start:6.0f}s] {point}: {figures}")
    tables = {
        "results": rows,
        "digits": digits.digits_benchmark(config, log) if config.digits else [],
        "alternatives": alternatives.measure(config) if config.alternatives else [],
    }
    error = torch_runner and torch_runner.compile_error
    notes = [f"torch.compile does not work here: {error}"] if error else []
    markdown = report.report(tables, machine, command, notes)
    os.makedirs(outdir, exist_ok=True)
    files = {f"{n}_csv": report.write_csv(t, f"{outdir}/{n}.csv") for n, t in tables.items() if t}
    with open(files.setdefault("markdown", f"{outdir}/results.md"), "w") as f:
        f.write(markdown)
    report.plot(rows, files.setdefault("plot", f"{outdir}/results.png"))
    elapsed = time.perf_counter() - start
    log(f"benchmark: {len(rows)} points in {elapsed:.0f}s; wrote {', '.join(files.values())}")
    targets = report.targets(rows, tables["digits"])
    return dict(tables, rows=rows, targets=targets, markdown=markdown, files=files)


def main(argv: Sequence[str]) -> None:
    del argv
    now = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir = _OUTDIR.value or os.path.join("runs", f"bench-{now}")
    command = " ".join(["./launch.sh bench", *sys.argv[1:]])
    print(run_benchmark(config_from_flags(), outdir, command=command)["markdown"])


if __name__ == "__main__":
    app.run(main)
