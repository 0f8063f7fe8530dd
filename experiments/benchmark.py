"""Speed and memory benchmark of the hand-written backward against autodiff and PyTorch.

    ./launch.sh bench --quick          # a small grid, about two minutes
    ./launch.sh bench                  # the full grid of docs/performance.md

Every grid point's variants (`bench/jax_side.py`, and `bench/torch_side.py` where torch is
installed) are compiled ahead of time and timed in interleaved rounds (`bench/timing.py`); then
the digits epoch (`bench/digits.py`) and the speed choices (`bench/alternatives.py`). Writes
``results.csv``, ``digits.csv``, ``alternatives.csv``, ``results.md`` (printed too) and
``results.png`` to ``--outdir``; the flags are the fields of `BenchConfig`.
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
from experiments.bench.timing import time_interleaved

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


# The phases of a point: (names timed together, share of --point_budget). A name's time comes
# from the first phase that lists it; the torch phase adds torch_eager@T and torch_compile@T.
PHASES = {
    "gradient": (("custom", "loss_and_grad", "autodiff", "matmul", "norms", "clipped"), 1.0),
    "training": (("train_step", "epoch_scan", "epoch_loop"), 0.25),
    "vmap": (("vmap_norms", "norms"), 0.1),
    "torch": (("custom",), 0.25),
}
TORCH_KINDS = ("torch_eager", "torch_compile")  # each reported at its faster thread count
RATIOS = {  # column: (phase, numerator, denominator), the median of the per-round ratios
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


def run_point(point: Point, config: BenchConfig, torch_runner: Any | None) -> dict[str, Any]:
    """One row of results.csv: times (ms), ratios, FLOP/s, memory."""
    with jax.enable_x64(point.dtype == "float64"):
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
            )
    best = {kind: torch_side.best(timed["torch"], kind) for kind in TORCH_KINDS}
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
    """Runs the grid, the digits epoch and the alternatives, writes the files to ``outdir``, and
    returns ``{"rows", "digits", "alternatives", "targets", "markdown", "files"}``."""
    torch = torch_side.import_torch() if config.torch else None
    if config.torch and torch is None:
        log(TORCH_MISSING)
    torch_runner = torch_side.TorchRunner(torch, config) if torch is not None else None
    backend = f"{jax.default_backend()} backend, {jax.devices()[0].device_kind}"
    version = f"torch {torch.__version__}" if torch is not None else "no torch"
    machine = f"{host.describe()} ({backend}); {version}"
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
    tables = {
        "results": rows,
        "digits": digits.digits_benchmark(config, log) if config.digits else [],
        "alternatives": alternatives.measure(config) if config.alternatives else [],
    }
    notes = []
    if torch_runner is not None and torch_runner.compile_error:
        notes.append(f"torch.compile does not work here: {torch_runner.compile_error}")
    markdown = report.report(*tables.values(), machine, command, notes)
    os.makedirs(outdir, exist_ok=True)
    files = {f"{n}_csv": report.write_csv(t, f"{outdir}/{n}.csv") for n, t in tables.items() if t}
    with open(files.setdefault("markdown", f"{outdir}/results.md"), "w") as f:
        f.write(markdown)
    if report.plot(rows, f"{outdir}/results.png"):
        files["plot"] = f"{outdir}/results.png"
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
