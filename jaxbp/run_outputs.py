"""What a training run leaves in its workdir (matplotlib and tensorboardX, imported lazily).

* ``metrics.jsonl``: one JSON line per evaluation; a resumed run first drops the lines
  written after the checkpoint it starts from, so the file ends as a straight run's would;
* ``tensorboard/``: the same scalars as TensorBoard events;
* ``curves.png``: loss and accuracy (or R²) against epochs;
* ``summary.json``: the final figures and the flags, written atomically.
"""

import json
import os
from typing import Any


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
        """The lines of metrics.jsonl so far."""
        if not os.path.exists(self.metrics_path):
            return []
        with open(self.metrics_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def write(self, record: dict[str, float]) -> None:
        """Appends one evaluation (with ``epoch`` and ``step``) to the jsonl and TensorBoard."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in record.items():
            if name not in ("epoch", "step"):
                self.tensorboard.add_scalar(name, value, record["step"])
        self.tensorboard.flush()

    def _write_lines(self, records: list[dict[str, float]]) -> None:
        tmp = self.metrics_path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        os.replace(tmp, self.metrics_path)

    def finish(self, summary: dict[str, Any]) -> None:
        """Closes TensorBoard, draws curves.png and writes summary.json atomically."""
        self.tensorboard.close()
        plot_curves(self.records(), self.task, os.path.join(self.workdir, "curves.png"))
        tmp = os.path.join(self.workdir, "summary.json.tmp")
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=2)
        os.replace(tmp, os.path.join(self.workdir, "summary.json"))


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
    fig.savefig(path, dpi=100)
    plt.close(fig)
