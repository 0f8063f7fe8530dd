"""The results as text and files: markdown tables, the issue's targets, CSV and plot.

The targets are checked against the measured figures; the report is the markdown that
``results.md`` holds and the run prints.
"""

import csv
import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

# The targets.
TARGET_RATIO_MEDIAN = 1.00  # hand-written / jax.grad, median over the grid
TARGET_RATIO_MAX = 1.05  # ... and at every point
TARGET_MATMUL_FRACTION = 0.90  # of the matmul FLOP/s at width >= 1024, batch >= 256
TARGET_DIGITS_SPEEDUP = 20.0  # scan epoch against torch eager
TARGET_NORMS_OVER_GRAD = 1.5  # per-example norms against a plain gradient step
TARGET_VMAP_OVER_NORMS = 5.0  # vmap(grad) against the norms, at width 1024, batch 256


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def _kib(n: int) -> str:
    return f"{n / 1024:.0f}" if n >= 1024 else f"{n / 1024:.2f}"


GRID_COLUMNS = (
    ("depth", "depth", lambda r: r["depth"]),
    ("width", "width", lambda r: r["width"]),
    ("batch", "batch", lambda r: r["batch"]),
    ("act", "g", lambda r: r["activation"]),
    ("dtype", "dtype", lambda r: r["dtype"]),
    ("custom ms", "custom_ms", lambda r: _fmt(r["custom_ms"])),
    ("l&g ms", "loss_and_grad_ms", lambda r: _fmt(r["loss_and_grad_ms"])),
    ("autodiff ms", "autodiff_ms", lambda r: _fmt(r["autodiff_ms"])),
    ("custom/ad", "custom_over_autodiff", lambda r: f"{r['custom_over_autodiff']:.3f}"),
    ("l&g/ad", "", lambda r: f"{r['loss_and_grad_over_autodiff']:.3f}"),
    ("dots c/ad", "", lambda r: f"{r['dots_custom']}/{r['dots_autodiff']}"),
    ("GFLOP/s", "", lambda r: _fmt(r["gflops_custom"])),
    ("of matmul", "", lambda r: f"{r['matmul_fraction_custom']:.2f}"),
    ("step ms", "", lambda r: _fmt(r["train_step_ms"])),
    ("loop/scan", "", lambda r: f"{r['loop_over_scan']:.2f}"),
    ("norms/grad", "", lambda r: f"{r['norms_over_grad']:.2f}"),
    ("vmap/norms", "", lambda r: _fmt(r["vmap_over_norms"])),
    ("torch ms", "", lambda r: _fmt(r["torch_eager_ms"])),
    ("compiled ms", "", lambda r: _fmt(r["torch_compile_ms"])),
    (
        "resid KiB c/ad",
        "",
        lambda r: f"{_kib(r['residual_custom_bytes'])}/{_kib(r['residual_autodiff_bytes'])}",
    ),
)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _where(row: dict[str, Any]) -> str:
    return f"depth {row['depth']}, width {row['width']}, batch {row['batch']}"


def best_of_cores(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per network: the fastest JAX scan epoch and the fastest torch eager epoch of any run.

    ``speedup`` is the second over the first: each framework at its best use of the machine.
    """
    best = []
    for network in dict.fromkeys(r["network"] for r in rows):
        mine = [r for r in rows if r["network"] == network]
        jax_row = min(mine, key=lambda r: r["jax_scan_ms"])
        timed_torch = [r for r in mine if not math.isnan(r["torch_eager_ms"])]
        torch_row = min(timed_torch, key=lambda r: r["torch_eager_ms"]) if timed_torch else None
        best.append(
            {
                "network": network,
                "jax_scan_ms": jax_row["jax_scan_ms"],
                "jax_cores": jax_row["cores"],
                "torch_eager_ms": torch_row["torch_eager_ms"] if torch_row else float("nan"),
                "torch_cores": torch_row["cores"] if torch_row else None,
                "torch_threads": torch_row["torch_threads"] if torch_row else None,
                "speedup": (
                    torch_row["torch_eager_ms"] / jax_row["jax_scan_ms"]
                    if torch_row
                    else float("nan")
                ),
                "per_run": {r["cores"]: r["torch_over_scan"] for r in mine},
            }
        )
    return best


def evaluate_targets(
    rows: list[dict[str, Any]], digits: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each target of the issue with its measured figure: ``{"target", "figure", "holds"}``."""
    targets = []

    def add(target: str, figure: str, holds: bool) -> None:
        targets.append({"target": target, "figure": figure, "holds": bool(holds)})

    for key, label in (
        ("custom_over_autodiff", "apply(custom) under jax.grad"),
        ("loss_and_grad_over_autodiff", "loss_and_grad"),
    ):
        median = statistics.median(r[key] for r in rows)
        worst = max(rows, key=lambda r, key=key: r[key])
        add(
            f"{label} / jax.grad: median <= {TARGET_RATIO_MEDIAN:.2f}, "
            f"every point <= {TARGET_RATIO_MAX:.2f}",
            f"median {median:.3f}, max {worst[key]:.3f} ({_where(worst)})",
            median <= TARGET_RATIO_MEDIAN and worst[key] <= TARGET_RATIO_MAX,
        )
    big = [r for r in rows if r["width"] >= 1024 and r["batch"] >= 256]
    if big:
        custom = min(r["matmul_fraction_custom"] for r in big)
        lag = min(r["matmul_fraction_loss_and_grad"] for r in big)
        add(
            f"width >= 1024, batch >= 256: >= {TARGET_MATMUL_FRACTION:.0%} of the matmul FLOP/s",
            f"min {custom:.2f} (custom), {lag:.2f} (loss_and_grad) over {len(big)} points",
            min(custom, lag) >= TARGET_MATMUL_FRACTION,
        )
    for d in best_of_cores(digits):
        if not math.isnan(d["speedup"]):
            per_run = ", ".join(
                f"{cores} core(s) {ratio:.1f}x" for cores, ratio in sorted(d["per_run"].items())
            )
            add(
                f"digits {d['network']}: scan epoch >= {TARGET_DIGITS_SPEEDUP:.0f}x torch eager",
                f"{d['speedup']:.1f}x: {d['jax_scan_ms']:.3g} ms ({d['jax_cores']} core(s)) "
                f"against {d['torch_eager_ms']:.3g} ms ({d['torch_cores']} core(s), "
                f"{d['torch_threads']} thread(s)); within each run: {per_run}",
                d["speedup"] >= TARGET_DIGITS_SPEEDUP,
            )
    above = [r for r in rows if r["residual_custom_bytes"] > r["residual_autodiff_bytes"]]
    ratio = max(r["residual_custom_bytes"] / max(r["residual_autodiff_bytes"], 1) for r in rows)
    add(
        "residual memory of the custom backward <= autodiff's at every point",
        f"max custom/autodiff {ratio:.2f}; {len(above)} points above",
        not above,
    )
    at_target = [r for r in rows if r["width"] == 1024 and r["batch"] == 256]
    if at_target:
        worst = max(r["norms_over_grad"] for r in at_target)
        add(
            f"per_example_grad_norms <= {TARGET_NORMS_OVER_GRAD}x a gradient step "
            "(width 1024, batch 256)",
            f"max {worst:.2f} over depths {[r['depth'] for r in at_target]} "
            f"(whole grid: max {max(r['norms_over_grad'] for r in rows):.2f})",
            worst <= TARGET_NORMS_OVER_GRAD,
        )
        vmapped = [r for r in at_target if not math.isnan(r["vmap_over_norms"])]
        if vmapped:
            least = min(r["vmap_over_norms"] for r in vmapped)
            add(
                f"per_example_grad_norms >= {TARGET_VMAP_OVER_NORMS:.0f}x faster than "
                "vmap(grad) (width 1024, batch 256)",
                f"min {least:.1f}x over depths {[r['depth'] for r in vmapped]} (deeper: "
                "the B gradients exceed --per_example_max_mib)",
                least >= TARGET_VMAP_OVER_NORMS,
            )
    return targets


def report(
    rows: list[dict[str, Any]],
    digits: list[dict[str, Any]],
    targets: list[dict[str, Any]],
    machine: str,
    command: str,
    notes: Sequence[str] = (),
) -> str:
    """The markdown report: machine, command, the grid, digits, and the targets."""
    parts = [f"Machine: {machine}", "", f"Command: `{command}`", ""]
    parts += [
        "Times: medians over interleaved rounds, ms per call. Ratios (custom/ad, l&g/ad, "
        "of matmul, loop/scan, norms/grad, vmap/norms): medians over rounds of the ratio of "
        "calls made back to back. custom: jax.grad through apply(backward='custom'); l&g: "
        "jaxbp.loss_and_grad; ad: jax.grad through the plain forward; dots: matmuls in the "
        "compiled custom/autodiff programs; GFLOP/s: 6·batch·Σ n_in·n_out over the custom "
        "gradient's time; of matmul: time of those matmuls alone over the custom gradient's; "
        "step: a jitted optax adam step; loop/scan: an epoch's steps dispatched from Python "
        "over the same steps in one lax.scan; norms/grad: per_example_grad_norms over "
        "loss_and_grad; vmap/norms: norms of vmap(grad) over per_example_grad_norms; torch, "
        "compiled: PyTorch eager and torch.compile forward+backward; resid: residual KiB, "
        "custom/autodiff.",
        "",
        markdown_table(
            [c[0] for c in GRID_COLUMNS], [[c[2](r) for c in GRID_COLUMNS] for r in rows]
        ),
    ]
    if digits:
        parts += [
            "",
            "Digits, one epoch (ms), interleaved medians, one child process per CPU count; "
            "shuffle: the epoch's shuffle alone (sort: jax.random.permutation; hashed: "
            "jaxbp.shuffle.permutation):",
            "",
            markdown_table(
                [
                    "network",
                    "cores",
                    "steps",
                    "jax scan",
                    "jax loop",
                    "torch eager",
                    "torch/scan",
                    "loop/scan",
                    "shuffle: sort",
                    "shuffle: hashed",
                ],
                [
                    [
                        d["network"],
                        d["cores"],
                        d["steps"],
                        _fmt(d["jax_scan_ms"]),
                        _fmt(d["jax_loop_ms"]),
                        _fmt(d["torch_eager_ms"]),
                        _fmt(d["torch_over_scan"]),
                        _fmt(d["loop_over_scan"]),
                        _fmt(d["shuffle_sort_ms"]),
                        _fmt(d["shuffle_hashed_ms"]),
                    ]
                    for d in digits
                ],
            ),
        ]
    parts += [
        "",
        "Targets:",
        "",
        markdown_table(
            ["target", "measured", "holds"],
            [[t["target"], t["figure"], "yes" if t["holds"] else "**no**"] for t in targets],
        ),
    ]
    if notes:
        parts += ["", *notes]
    return "\n".join(parts) + "\n"


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict[str, Any]], path: str) -> bool:
    """Four panels against the FLOPs of a step; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    flops = np.array([r["flops"] for r in rows], float)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0, 0]
    ax.scatter(
        flops, [r["custom_over_autodiff"] for r in rows], label="apply(custom) / jax.grad", s=14
    )
    ax.scatter(
        flops,
        [r["loss_and_grad_over_autodiff"] for r in rows],
        label="loss_and_grad / jax.grad",
        s=14,
        marker="x",
    )
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(TARGET_RATIO_MAX, color="r", lw=0.8, ls="--")
    ax.set(
        xscale="log", xlabel="FLOPs per step", ylabel="time ratio", title="hand-written / autodiff"
    )
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.scatter(flops, [r["matmul_fraction_custom"] for r in rows], s=14)
    ax.axhline(TARGET_MATMUL_FRACTION, color="r", lw=0.8, ls="--")
    ax.set(
        xscale="log",
        xlabel="FLOPs per step",
        ylabel="matmul time / gradient time",
        title="fraction of the matmul FLOP/s",
    )
    ax = axes[1, 0]
    for key, label in (
        ("custom_ms", "jax custom"),
        ("torch_eager_ms", "torch eager"),
        ("torch_compile_ms", "torch.compile"),
    ):
        ax.scatter(flops, [r[key] for r in rows], label=label, s=14)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="FLOPs per step",
        ylabel="ms per gradient",
        title="gradient time",
    )
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    custom = np.array([r["residual_custom_bytes"] for r in rows], float)
    autodiff = np.array([r["residual_autodiff_bytes"] for r in rows], float)
    ax.scatter(autodiff, custom, s=14)
    lims = [min(custom.min(), autodiff.min()) * 0.8, max(custom.max(), autodiff.max()) * 1.2]
    ax.plot(lims, lims, color="k", lw=0.8)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="autodiff residual bytes",
        ylabel="custom residual bytes",
        title="residual memory",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
