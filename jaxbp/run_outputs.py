"""What a training run leaves in its workdir (matplotlib and tensorboardX, imported lazily).

* ``metrics.jsonl``: one JSON line per evaluation; a resumed run first drops the lines
  written after the checkpoint it starts from (and a last line cut short by a kill), so
  the file ends as a straight run's would;
* ``tensorboard/``: the same scalars as TensorBoard events;
* ``curves.png``: loss and accuracy (or R²) against epochs;
* ``summary.json``: the final figures and the config.

Every write goes through `jaxbp.workdir`: whole files are replaced atomically and the
jsonl is appended without following symlinks.
"""

import io
import json
import math
import os
from typing import Any

from jaxbp import workdir as workdir_lib


class RunOutputs:
    """metrics.jsonl, TensorBoard events, curves.png and summary.json in a workdir.

    Args:
      workdir: the run's folder.
      task: ``"classification"`` (accuracy curves) or ``"regression"`` (R²).
    """

    def __init__(self, workdir: str, task: str):
        from tensorboardX import SummaryWriter

        self.workdir = workdir
        self.metrics_path = os.path.join(workdir, "metrics.jsonl")
        self.task = task
        self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

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

    def write(self, record: dict[str, float]) -> None:
        """Appends one evaluation (with ``epoch`` and ``step``) to the jsonl and TensorBoard."""
        workdir_lib.append_line(self.metrics_path, json.dumps(record))
        for name, value in record.items():
            if name not in ("epoch", "step"):
                self.tensorboard.add_scalar(name, value, record["step"])
        self.tensorboard.flush()

    def _write_lines(self, records: list[dict[str, float]]) -> None:
        workdir_lib.write_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in records))

    def finish(self, summary: dict[str, Any], hparams: dict[str, Any] | None = None) -> None:
        """Closes TensorBoard (with the hparams), draws curves.png, writes summary.json."""
        if hparams is not None:
            metrics = {
                f"hparam/{k}": v
                for k, v in summary.items()
                if k.startswith(("test_", "val_")) and isinstance(v, float) and math.isfinite(v)
            }
            self.tensorboard.add_hparams(hparams, metrics, name="hparams")
        self.tensorboard.close()
        plot_curves(self.records(), self.task, os.path.join(self.workdir, "curves.png"))
        workdir_lib.write_atomic(
            os.path.join(self.workdir, "summary.json"), json.dumps(summary, indent=2)
        )


def plot_curves(records: list[dict[str, float]], task: str, path: str) -> None:
    """Loss (log scale) and accuracy or R² per epoch, train and validation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = "accuracy" if task == "classification" else "r2"
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_quality) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val"):
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in records], label=split)
        ax_quality.plot(epochs, [r[f"{split}_{quality}"] for r in records], label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    ax_quality.set(xlabel="epoch", ylabel=quality, title=quality)
    for ax in (ax_loss, ax_quality):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    workdir_lib.write_atomic(path, buffer.getvalue())
