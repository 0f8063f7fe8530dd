"""The results as markdown tables with their legends, the targets, CSV files and a plot.

A column is ``(header, row key or keys shown "a/b", format[, meaning])``, its meaning a legend
line; format ``"g"`` is 3 significant digits, ``"kib"`` bytes as KiB, else a format spec.
"""

import csv
import math
import operator
import statistics
from collections.abc import Sequence
from typing import Any, NamedTuple

Row = dict[str, Any]

GRID_COLUMNS = (
    ("depth", "depth", "", "hidden layers of `width` units, then 10 outputs"),
    ("width", "width", "", ""),
    ("batch", "batch", "", "rows a step"),
    ("act", "activation", "", "hidden activation"),
    ("dtype", "dtype", "", ""),
    ("custom ms", "custom_ms", "g", "jax.value_and_grad through apply(backward='custom')"),
    ("l&g ms", "loss_and_grad_ms", "g", "jaxbp.loss_and_grad, the derivation alone"),
    ("autodiff ms", "autodiff_ms", "g", "jax.value_and_grad through the plain forward"),
    ("custom/ad", "custom_over_autodiff", ".3f", "custom time over autodiff time"),
    ("l&g/ad", "loss_and_grad_over_autodiff", ".3f", "l&g time over autodiff time"),
    ("dots c/ad", ("dots_custom", "dots_autodiff"), "", "matmuls compiled, custom/autodiff"),
    ("GFLOP/s", "gflops_custom", "g", "6·batch·Σ n_in·n_out over the custom time"),
    ("vs matmul", "matmul_fraction_custom", ".2f", "custom FLOP/s relative to its matmuls alone"),
    ("step ms", "train_step_ms", "g", "a jitted optax adam step"),
    ("loop/scan", "loop_over_scan", ".2f", "steps called from Python over one lax.scan"),
    ("norms/grad", "norms_over_grad", ".2f", "per_example_grad_norms over l&g"),
    ("vmap/norms", "vmap_over_norms", "g", "norms of vmap(grad) over per_example_grad_norms"),
    ("torch ms", "torch_eager_ms", "g", "PyTorch eager: forward, loss, backward()"),
    ("compiled ms", "torch_compile_ms", "g", "the same under torch.compile"),
    ("resid KiB c/ad", ("residual_custom_bytes", "residual_autodiff_bytes"), "kib",
     "what the forward keeps for the backward, custom/autodiff"),
)  # fmt: skip
DIGITS_COLUMNS = (
    ("network", "network", "", "layer sizes"),
    ("cores", "cores", "", "CPUs of the child process"),
    ("steps", "steps", "", "adam steps of an epoch"),
    ("jax scan", "jax_scan_ms", "g", "one epoch as the run runs it (make_epoch)"),
    ("jax loop", "jax_loop_ms", "g", "its steps, each a jitted call from Python"),
    ("torch eager", "torch_eager_ms", "g", "the same epoch in PyTorch eager"),
    ("torch/scan", "torch_over_scan", "g", "torch eager over jax scan"),
    ("loop/scan", "loop_over_scan", "g", "jax loop over jax scan"),
    ("sort shuffle", "shuffle_sort_ms", "g", "jax.random.permutation of the rows alone"),
    ("hashed shuffle", "shuffle_hashed_ms", "g", "jaxbp.training.shuffle.permutation alone"),
)
ALTERNATIVE_COLUMNS = (
    ("jaxbp's choice", "choice", ""),
    ("replaced", "replaced", ""),
    ("timed", "program", ""),
    ("choice ms", "chosen_ms", "g"),
    ("replaced ms", "replaced_ms", "g"),
    ("replaced/choice", "replaced_over_chosen", ".3f"),
)
TARGET_COLUMNS = (("target", "name", ""), ("measured", "value", ".3f"), ("bound", "bound", ""),
                  ("holds", "holds", ""), ("at", "at", ""))  # fmt: skip


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if spec == "kib":
        return f"{value / 1024:.0f}" if value >= 1024 else f"{value / 1024:.2f}"
    if spec == "g":
        return f"{value:.0f}" if value >= 100 else f"{value:.3g}"
    return format(value, spec)


def section(title: str, columns: Sequence[tuple], rows: Sequence[Row]) -> list[str]:
    """The lines of a titled markdown table, its legend (a line a column) above it."""

    def cell(row, keys, spec):
        return "/".join(_fmt(row[k], spec) for k in ((keys,) if isinstance(keys, str) else keys))

    legend = [f"- {c[0]}: {c[3]}" for c in columns if c[3:] and c[3]]
    table = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + "---|" * len(columns)]
    table += ["| " + " | ".join(cell(r, c[1], c[2]) for c in columns) + " |" for r in rows]
    return ["", title, "", *legend, *([""] if legend else []), *table]


class Target(NamedTuple):
    name: str
    value: float
    bound: str  # "<= 1.05" or ">= 0.90"
    holds: bool
    at: str  # the point or points the value comes from


EVERY = ("", lambda r: True)
BIG = (" over width >= 1024, batch >= 256", lambda r: r["width"] >= 1024 and r["batch"] >= 256)
AT_1024x256 = (" at width 1024, batch 256", lambda r: (r["width"], r["batch"]) == (1024, 256))
TARGETS = (  # (what, (rows' name, rows), column, statistic, comparison, bound)
    ("apply(custom) / jax.grad", EVERY, "custom_over_autodiff", "median", "<=", 1.00),
    ("apply(custom) / jax.grad", EVERY, "custom_over_autodiff", "max", "<=", 1.05),
    ("loss_and_grad / jax.grad", EVERY, "loss_and_grad_over_autodiff", "median", "<=", 1.00),
    ("loss_and_grad / jax.grad", EVERY, "loss_and_grad_over_autodiff", "max", "<=", 1.05),
    ("apply(custom) vs matmul", BIG, "matmul_fraction_custom", "min", ">=", 0.90),
    ("loss_and_grad vs matmul", BIG, "matmul_fraction_loss_and_grad", "min", ">=", 0.90),
    ("residual bytes, custom / autodiff", EVERY, "residual_ratio", "max", "<=", 1.00),
    ("per_example_grad_norms / l&g", AT_1024x256, "norms_over_grad", "max", "<=", 1.5),
    ("vmap(grad) norms / per_example_grad_norms", AT_1024x256, "vmap_over_norms", "min", ">=", 5),
)
DIGITS_SPEEDUP = 20.0  # a digits epoch: torch eager over lax.scan, each at its fastest


def targets(rows: list[Row], digits: list[Row]) -> list[Target]:
    """Every target with rows to read, and the figure that decides it."""
    found = []  # (name, measured value, comparison, bound, where)
    for what, (shown, test), key, statistic, comparison, bound in TARGETS:
        if mine := [r for r in rows if test(r) and not math.isnan(r[key])]:
            if statistic == "median":
                value, at = statistics.median(r[key] for r in mine), f"{len(mine)} points"
            else:
                r = (max if statistic == "max" else min)(mine, key=operator.itemgetter(key))
                value, at = r[key], f"depth {r['depth']}, width {r['width']}, batch {r['batch']}"
            found.append((f"{what}, {statistic}{shown}", value, comparison, bound, at))
    timed = [r for r in digits if not math.isnan(r["torch_eager_ms"])]
    for network in dict.fromkeys(r["network"] for r in timed):  # each framework at its fastest
        scan, eager = (
            min((r for r in timed if r["network"] == network), key=operator.itemgetter(time))
            for time in ("jax_scan_ms", "torch_eager_ms")
        )
        at = (
            f"scan {scan['jax_scan_ms']:.3g} ms on {scan['cores']} core(s), torch "
            f"{eager['torch_eager_ms']:.3g} ms on {eager['cores']} core(s), "
            f"{eager['torch_threads']} thread(s)"
        )
        name = f"digits {network} epoch: torch eager / lax.scan, each at its fastest"
        speedup = eager["torch_eager_ms"] / scan["jax_scan_ms"]
        found.append((name, speedup, ">=", DIGITS_SPEEDUP, at))
    holds = {"<=": operator.le, ">=": operator.ge}
    return [Target(n, v, f"{op} {b:.2f}", holds[op](v, b), at) for n, v, op, b, at in found]


SECTIONS = {  # table: (title, columns)
    "results": ("The grid:", GRID_COLUMNS),
    "digits": ("Digits, one epoch (ms), a child process per CPU count:", DIGITS_COLUMNS),
    "alternatives": ("jaxbp's speed choices against the code each replaced:", ALTERNATIVE_COLUMNS),
}


def report(tables: dict[str, list[Row]], machine: str, command: str, notes: Sequence[str]) -> str:
    """The markdown report of `SECTIONS`' tables: machine, command, each non-empty table with
    its legend, the targets."""
    parts = [f"Machine: {machine}", "", f"Command: `{command}`", ""]
    parts += ["Times are medians over interleaved rounds; a ratio is the median over the rounds"]
    parts += ["of the ratio of two calls made back to back."]
    for name, rows in tables.items():
        parts += section(*SECTIONS[name], rows) if rows else []
    shown = [t._asdict() for t in targets(tables["results"], tables["digits"])]
    parts += section("Targets:", TARGET_COLUMNS, shown) + ["", *notes]
    return "\n".join(parts).rstrip() + "\n"


def write_csv(rows: list[Row], path: str) -> str:
    """Writes ``rows`` (the first row's keys the header) to ``path``, and returns it."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


PANELS = (  # (title, y label, y scale, [(column, label)], target line); x: FLOPs of a step
    ("hand-written / autodiff", "time ratio (below 1: hand-written faster)", "linear",
     [("custom_over_autodiff", "apply(custom)"), ("loss_and_grad_over_autodiff", "l&g")], 1.05),
    ("FLOP/s relative to a plain matmul", "matmul time / gradient time", "linear",
     [("matmul_fraction_custom", "apply(custom)"), ("matmul_fraction_loss_and_grad", "l&g")],
     0.90),
    ("gradient step time", "ms", "log", [("custom_ms", "jax apply(custom)"),
     ("torch_eager_ms", "torch eager"), ("torch_compile_ms", "torch.compile")], None),
    ("residual memory", "bytes kept, custom / autodiff", "linear",
     [("residual_ratio", "apply(custom)")], 1.00),
)  # fmt: skip


def plot(rows: list[Row], path: str) -> None:
    """The `PANELS`, each against the FLOPs of a step, to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flops = [r["flops"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (title, ylabel, yscale, series, bound) in zip(axes.flat, PANELS, strict=True):
        for (key, label), marker in zip(series, "ox+", strict=False):
            if not all(math.isnan(r[key]) for r in rows):
                ax.scatter(flops, [r[key] for r in rows], s=16, marker=marker, label=label)
        if bound is not None:
            ax.axhline(1.0, color="k", lw=0.8)
            ax.axhline(bound, color="r", lw=0.8, ls="--", label=f"target {bound:.2f}")
        ax.set(title=title, xscale="log", yscale=yscale, xlabel="FLOPs a step", ylabel=ylabel)
        ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
