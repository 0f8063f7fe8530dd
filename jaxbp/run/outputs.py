"""What a training run leaves in its workdir (matplotlib and tensorboardX, imported lazily).

* ``metrics.jsonl``: one JSON line per member and evaluation, each with its ``member``
  index (a single run: member 0); a resumed run first drops the lines written
  after the checkpoint it starts from (and a last line cut short by a kill), so the file
  ends as a straight run's would;
* ``tensorboard/``: the same scalars as TensorBoard events, one writer for the run (each
  member's scalars tagged ``NAME/member_000``, ...), and the hparams with the final metrics
  (their means over the members);
* ``curves.png``: loss and accuracy (or R²) against epochs (a set of several: the mean over
  members with a ±1 std band, one colour per swept value), and where the records carry the
  gradient flow, a panel each for the layers' gradient signal-to-noise ratio
  ``train_flow/snr/k``, mean ‖δ_i‖ ``train_flow/delta_norm/k``, gradient norm
  ``train_flow/grad_norm/k`` and the gradient noise scale ``train_flow/noise_scale``;
* ``summary.json``: the final figures and the config;
* ``sweep.md`` (a set of several members only): test metrics by swept value, mean ± std
  over the members.

`environment` gives the versions, platform and git commit the summary records, and
`tensorboard_hparams` the config as TensorBoard hparams.

Every write goes through `jaxbp.run.workdir`: whole files are replaced atomically and the
jsonl is appended without following symlinks.
"""

import collections
import contextlib
import dataclasses
import io
import json
import math
import os
import platform
import subprocess
import threading
import time
from typing import Any

import jax
import numpy as np

from jaxbp.run import config as config_lib
from jaxbp.run import workdir as workdir_lib
from jaxbp.run.config import Config
from jaxbp.run.progress import EPOCH_LOSS_LABEL


class RunOutputs:
    """metrics.jsonl, TensorBoard events, curves.png, summary.json (and sweep.md) in a workdir.

    Args:
      workdir: the run's folder.
      task: ``"classification"`` (accuracy curves) or ``"regression"`` (R²).
    """

    def __init__(self, workdir: str, task: str):
        self.workdir = workdir
        self.metrics_path = os.path.join(workdir, "metrics.jsonl")
        self.task = task
        from tensorboardX import SummaryWriter
        from tensorboardX.proto.summary_pb2 import Summary

        # One writer for every member: 32 writers cost a short run more than its training.
        self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))
        self._summary = Summary

    def truncate_after(self, epoch: int) -> None:
        """Drops lines written after the checkpoint a resumed run starts from."""
        records = [r for r in self.records() if r["epoch"] <= epoch]
        self._write_lines(records)

    def records(self) -> list[dict[str, float]]:
        """The whole lines of metrics.jsonl so far (a line cut short by a kill is dropped)."""
        if not os.path.exists(self.metrics_path):
            return []
        records = []
        with open(self.metrics_path) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a partial last line: the truncation on resume drops it
        return records

    def write(self, *records: dict[str, Any]) -> None:
        """Appends evaluations (each with ``member``, ``epoch`` and ``step``) to the jsonl and
        TensorBoard, and flushes once.

        The records' scalars of one step go to TensorBoard as one event holding them all:
        an event per scalar costs a member set's run more than its evaluations. The first
        call starts `prepare_plotting`: the programs are traced by then (the tracing and an
        import hold the same lock), and the epochs still to run leave the interpreter idle.
        """
        prepare_plotting()
        workdir_lib.append_lines(self.metrics_path, (json.dumps(r) for r in records))
        by_step: dict[int, list[Any]] = collections.defaultdict(list)
        for record in records:
            suffix = f"/member_{int(record['member']):03d}"
            by_step[int(record["step"])].extend(
                self._summary.Value(tag=name + suffix, simple_value=float(value))
                for name, value in record.items()
                if name not in ("epoch", "step", "member") and value is not None
            )
        for step, values in by_step.items():
            self._tensorboard.file_writer.add_summary(self._summary(value=values), step)
        self._tensorboard.flush()

    def _write_lines(self, records: list[dict[str, float]]) -> None:
        workdir_lib.write_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in records))

    def finish(self, summary: dict[str, Any], hparams: dict[str, Any] | None = None) -> None:
        """Closes TensorBoard (with the hparams), draws curves.png, writes summary.json.

        The seconds this takes are added to the summary's ``phase_seconds["outputs"]``
        where it has one, before summary.json is written.

        A set of several members also gets ``sweep.md`` (`sweep_table`), also as TensorBoard
        text; the hparams carry the means over the members (each member's figures are in the
        summary's ``members`` and in sweep.md).
        """
        started = time.perf_counter()
        members = summary["members"] if len(summary["members"]) > 1 else None
        if hparams is not None:
            metrics = {
                f"hparam/{k}": v
                for k, v in summary.items()
                if k.startswith(("test_", "val_")) and isinstance(v, float) and math.isfinite(v)
            }
            self._tensorboard.add_hparams(hparams, metrics, name="hparams")
        table = None if members is None else sweep_table(summary)
        if table is not None:
            self._tensorboard.add_text("sweep", table)
        self._tensorboard.close()
        labels = None
        if members is not None:
            labels = {m["member"]: swept_label(m, summary) for m in members}
        plot_curves(self.records(), self.task, os.path.join(self.workdir, "curves.png"), labels)
        if table is not None:
            workdir_lib.write_atomic(os.path.join(self.workdir, "sweep.md"), table)
        if "phase_seconds" in summary:
            summary["phase_seconds"]["outputs"] += time.perf_counter() - started
        workdir_lib.write_atomic(
            os.path.join(self.workdir, "summary.json"), json.dumps(summary, indent=2)
        )


def environment() -> dict[str, Any]:
    """Versions, platform, device kind, CPU count and git commit, for the summary."""
    import importlib.metadata

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True,
            text=True,
            timeout=5,
        )
        if result.returncode == 0 and result.stdout.strip():
            commit = result.stdout.strip()
    return {
        "versions": {n: version(n) for n in ("jaxbp", "jax", "jaxlib", "optax", "numpy")},
        "python": platform.python_version(),
        "platform": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "git_commit": commit,
    }


def tensorboard_hparams(config: Config) -> dict[str, Any]:
    """The config as TensorBoard hparams (scalars and strings only)."""
    out = {}
    for k, v in dataclasses.asdict(config).items():
        if isinstance(v, (tuple, list)):
            v = config_lib.format_value(tuple(v))
        out[k] = "" if v is None else v
    return out


def swept_names(summary: dict[str, Any]) -> list[str]:
    """The names a member set's summary sweeps over, in the config's order."""
    return [name for name, _ in summary["config"].get("sweep", ())]


def swept_label(member: dict[str, Any], summary: dict[str, Any]) -> str:
    """A member's swept values as ``learning_rate=0.01``; ``all members`` without a sweep."""
    names = swept_names(summary)
    return ", ".join(f"{n}={member[n]:g}" for n in names) or "all members"


def sweep_table(summary: dict[str, Any]) -> str:
    """A member set's test metrics by swept value, mean ± std over the members, as Markdown.

    Diverged members (``diverged_at_epoch`` set) are counted but left out of the figures.
    """
    quality = "accuracy" if "test_accuracy" in summary else "r2"
    groups: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for member in summary["members"]:
        groups[swept_label(member, summary)].append(member)

    def spread(members: list[dict[str, Any]], name: str, scale: float = 1.0) -> str:
        values = np.asarray([m[name] for m in members]) * scale
        if not values.size:
            return "-"
        return f"{values.mean():.4g} ± {values.std():.2g}"

    scale = 100.0 if quality == "accuracy" else 1.0
    unit = " (%)" if quality == "accuracy" else ""
    lines = [
        f"| swept | members | diverged | test {quality}{unit} | test loss | best epoch |",
        "|---|---|---|---|---|---|",
    ]
    for label, members in groups.items():
        kept = [m for m in members if m["diverged_at_epoch"] is None]
        lines.append(
            f"| {label} | {len(members)} | {len(members) - len(kept)} | "
            f"{spread(kept, f'test_{quality}', scale)} | {spread(kept, 'test_loss')} | "
            f"{spread(kept, 'best_epoch')} |"
        )
    return "\n".join(lines) + "\n"


_plotting: threading.Thread | None = None  # `prepare_plotting`'s thread, once per process


def prepare_plotting() -> None:
    """Starts importing matplotlib and drawing a throwaway figure (which loads the fonts and
    the tick labels' text parser) in a background thread, once per process.

    A run's epochs leave the interpreter idle while XLA computes, so curves.png then costs
    only its own drawing. `plot_curves` and `curves_figure` wait for the thread before they
    touch matplotlib, and nothing else does meanwhile; a failure there (matplotlib missing)
    is left for the import in `curves_figure` to report.
    """
    global _plotting
    if _plotting is None:
        _plotting = threading.Thread(target=_draw_throwaway, name="prepare_plotting", daemon=True)
        _plotting.start()


def _draw_throwaway() -> None:
    with contextlib.suppress(Exception):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401  (the import `curves_figure` makes)
        from matplotlib.figure import Figure

        fig = Figure(figsize=(1, 1))
        ax = fig.add_subplot(yscale="log", title="t", xlabel="x")
        ax.plot([1, 2], [0.1, 1.0], label="l")
        ax.legend()
        fig.savefig(io.BytesIO(), format="png")


def _wait_for_plotting() -> None:
    """Returns once `prepare_plotting`'s thread (if any) is done with matplotlib."""
    if _plotting is not None:
        _plotting.join()


def plot_curves(
    records: list[dict[str, float]],
    task: str,
    path: str,
    labels: dict[int, str] | None = None,
) -> None:
    """`curves_figure` of the records, written as a PNG to ``path``."""
    _wait_for_plotting()
    import matplotlib.pyplot as plt

    fig = curves_figure(records, task, labels)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    workdir_lib.write_atomic(path, buffer.getvalue())


# The gradient-flow panels the records may carry: (key prefix, title, y label).
FLOW_PANELS = (
    ("train_flow/snr/", "gradient SNR (train)", "‖ḡ‖² / Σ Var"),
    ("train_flow/delta_norm/", "mean ‖δ_i‖ per layer (train)", "‖δ_i‖"),
    ("train_flow/grad_norm/", "‖∂L/∂W‖ per layer (train)", "‖∂L/∂W‖_F"),
    ("train_flow/noise_scale", "gradient noise scale (train)", "B_simple (examples)"),
)
TRAIN_LABEL = "train (end of epoch)"  # the end-of-epoch params' loss on the whole split


def curves_figure(
    records: list[dict[str, float]], task: str, labels: dict[int, str] | None = None
) -> Any:
    """Loss (log scale) and accuracy or R² per epoch, train and validation, and the gradient
    flow the records carry (`FLOW_PANELS`, log scale), as a matplotlib figure of 5 × 4 inch
    panels, three to a row.

    The ``train`` curves are the loss and accuracy of each epoch's end-of-epoch params on the
    whole training split (`TRAIN_LABEL`); a single run also draws the mean of the epoch's
    step losses (``epoch_loss``, the progress line's `EPOCH_LOSS_LABEL`), dotted. With
    ``labels`` (member index -> its swept values) the records are a member set's: each
    label gets one colour, its mean over members drawn with a ±1 std band (validation
    solid, train dashed); the flow panels show the mean over each label's members.
    """
    _wait_for_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = "accuracy" if task == "classification" else "r2"
    flows = []
    for prefix, title, ylabel in FLOW_PANELS:
        keys = sorted({k for r in records for k in r if k.startswith(prefix)})
        if keys:
            flows.append((keys, title, ylabel))
    num = 2 + len(flows)
    cols, rows = min(num, 3), math.ceil(num / 3)
    fig, grid = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[num:]:  # the row's empty places
        ax.remove()
    axes = axes[:num]
    ax_loss, ax_quality = axes[:2]
    for ax, (keys, title, ylabel) in zip(axes[2:], flows, strict=True):
        _plot_per_layer(ax, records, keys, labels)
        ax.set(xlabel="epoch", ylabel=ylabel, yscale="log", title=title)
    # A DP-SGD run's records have no training split (they stay private).
    splits = [s for s in ("train", "val") if records and f"{s}_loss" in records[0]]
    names = {"train": TRAIN_LABEL, "val": "val"}
    if labels is None:
        epochs = [r["epoch"] for r in records]
        for split in splits:
            ax_loss.plot(epochs, [r[f"{split}_loss"] for r in records], label=names[split])
            ax_quality.plot(epochs, [r[f"{split}_{quality}"] for r in records], label=split)
        if records and "epoch_loss" in records[0]:
            ax_loss.plot(
                epochs,
                [np.nan if r["epoch_loss"] is None else r["epoch_loss"] for r in records],
                ":",
                color="C0",
                label=f"train ({EPOCH_LOSS_LABEL})",
            )
    else:
        for colour, label in enumerate(dict.fromkeys(labels.values())):
            group = [r for r in records if labels.get(int(r.get("member", -1))) == label]
            epochs = sorted({r["epoch"] for r in group})
            for split, style in (("val", "-"), ("train", "--"))[: len(splits)]:
                for ax, name in ((ax_loss, f"{split}_loss"), (ax_quality, f"{split}_{quality}")):
                    by_epoch = [
                        np.asarray([r[name] for r in group if r["epoch"] == e]) for e in epochs
                    ]
                    mean = np.asarray([v.mean() for v in by_epoch])
                    std = np.asarray([v.std() for v in by_epoch])
                    name = names[split] if ax is ax_loss else split
                    ax.plot(epochs, mean, style, color=f"C{colour}", label=f"{name} {label}")
                    if split == "val":
                        ax.fill_between(
                            epochs, mean - std, mean + std, color=f"C{colour}", alpha=0.2
                        )
    ax_loss.set(xlabel="epoch", ylabel="loss on the whole split", yscale="log", title="loss")
    ax_quality.set(xlabel="epoch", ylabel=quality, title=quality)
    for ax in axes:
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _plot_per_layer(ax: Any, records: list[dict[str, float]], keys: list[str], labels: Any) -> None:
    """Each of ``keys`` (one per layer, ending in its number k, or one alone) per epoch; a
    set: the mean over the members of each swept value (its colour), one style per layer."""
    groups = {None: records} if labels is None else {}
    for label in dict.fromkeys((labels or {}).values()):
        groups[label] = [r for r in records if labels.get(int(r.get("member", -1))) == label]
    for colour, (label, group) in enumerate(groups.items()):
        epochs = sorted({r["epoch"] for r in group if keys[0] in r})
        for k, key in enumerate(keys):
            mean = [np.mean([r[key] for r in group if r["epoch"] == e]) for e in epochs]
            layer = key.rsplit("/", 1)[1]
            name = (f"layer {layer}" if layer.isdigit() else layer) + (
                "" if label is None else f" {label}"
            )
            style = ("-", "--", ":", "-.")[k % 4] if label is not None else "-"
            color = f"C{k if label is None else colour}"
            values = np.where(np.isfinite(mean), mean, np.nan)  # +inf (no variance): a gap
            ax.plot(epochs, values, style, color=color, label=name)
