"""Where each member of a run stands: its best validation loss, best params, divergence.

A single run is a member set of one. `Progress` keeps, for each member k,

* ``best_epoch[k]`` and ``best_val[k]``: the epoch of its lowest validation loss so far and
  that loss (None and inf before any evaluation); its params then are ``best_params``,
  stacked ``(M, ...)``, kept in memory and written to ``best/`` only with a checkpoint;
* ``diverged_at[k]``: the epoch in which its loss or params stopped being finite, None
  while it trains. A diverged member keeps the params of the epoch before, and is left out
  of the means, the std, the progress line and the early stop.

`progress_line` is the log line of one evaluation: one member's figures, or the mean ± std
over the members still training; `diverged_line` the message when none is left. Its loss is
the *epoch mean* (the mean of the epoch's step losses, each on its batch with the params of
that step, `EPOCH_LOSS_LABEL`), not the loss of the end-of-epoch params on the whole training
split that ``curves.png`` plots as ``train``; regression adds the validation RMSE and MAE in
the targets' units.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from jaxbp.mlp import Params
from jaxbp.run.config import Member

# The name of the mean of an epoch's step losses, in the progress line and curves.png.
EPOCH_LOSS_LABEL = "epoch-mean loss"


@dataclasses.dataclass
class Progress:
    """Where each member stands: best val loss and epoch so far, the epoch it diverged in.

    ``best_params`` holds each member's best params (stacked), None before any evaluation.
    """

    best_epoch: list[int | None]
    best_val: np.ndarray
    diverged_at: list[int | None]
    best_params: Params | None = None
    saved_best: int | None = None  # the epoch of the best params last written to best/

    @classmethod
    def new(cls, num_members: int) -> Progress:
        """The progress before epoch 1: no best yet, nothing diverged."""
        return cls([None] * num_members, np.full(num_members, math.inf), [None] * num_members)

    def active(self) -> np.ndarray:
        """``(M,)`` True for the members still training (not diverged)."""
        return np.asarray([e is None for e in self.diverged_at])

    def patience_out(self, epoch: int, patience: int) -> bool:
        """Whether every training member has gone ``patience`` epochs without a better val."""
        return all(
            best is not None and epoch - best >= patience
            for best, live in zip(self.best_epoch, self.active(), strict=True)
            if live
        )

    def improved(self, val_loss: np.ndarray) -> np.ndarray:
        """``(M,)`` True for the training members whose val loss beats their best."""
        return self.active() & (val_loss < self.best_val)

    def note_best(self, improved: np.ndarray, val_loss: np.ndarray, epoch: int) -> None:
        """Records ``epoch`` and its val loss as the improved members' best."""
        for k in np.flatnonzero(improved):
            self.best_epoch[k], self.best_val[k] = epoch, float(val_loss[k])

    def unsaved_best(self) -> tuple[int, dict[str, Any]] | None:
        """The epoch and ``best`` meta record of best params not yet written, else None.

        The epoch is the newest improvement's, so the best checkpoint is never newer than
        the state saved right after it.
        """
        newest = max((e for e in self.best_epoch if e is not None), default=None)
        if newest is None or newest == self.saved_best:
            return None
        return newest, {
            "epoch": newest,
            "members": [
                {"epoch": e, "val_loss": None if e is None else float(v)}
                for e, v in zip(self.best_epoch, self.best_val, strict=True)
            ],
        }

    def resume_best(self, saved_epoch: int, record: dict[str, Any], params: Params) -> None:
        """Takes up the best params a resumed run finds, written with ``record``."""
        bests = record["members"]
        self.best_epoch[:] = [b["epoch"] for b in bests]
        self.best_val[:] = [math.inf if b["epoch"] is None else b["val_loss"] for b in bests]
        self.best_params = params
        self.saved_best = saved_epoch

    def causes(
        self, newly: np.ndarray, losses: Any, epoch: int, steps_per_epoch: int
    ) -> dict[int, str]:
        """Why each member of ``newly: (M,)`` diverged in ``epoch``, ``{k: text}``.

        ``losses``: the epoch's `jaxbp.run.programs.EpochLosses` on the host.
        """
        causes = {}
        for k in np.flatnonzero(newly):
            bad = np.flatnonzero(~np.isfinite(losses.steps[k]))
            if bad.size:
                step = (epoch - 1) * steps_per_epoch + int(bad[0]) + 1
                what = f"the loss became {losses.steps[k][bad[0]]} at step {step}"
            elif not np.isfinite(losses.end[k]):
                what = f"the loss at its params after the epoch is {losses.end[k]}"
            else:
                what = "its params became non-finite"
            causes[int(k)] = what
        return causes

    def mark_diverged(
        self, newly: np.ndarray, causes: dict[int, str], epoch: int, members: list[Member]
    ) -> list[str]:
        """Freezes the members of ``newly: (M,)``, diverged in ``epoch`` (`causes`).

        Returns one log line per member frozen.
        """
        lines = []
        for k in np.flatnonzero(newly):
            self.diverged_at[k] = epoch
            lines.append(
                f"member {k} ({member_label(members[k])}) diverged in epoch {epoch} "
                f"({causes[int(k)]}); it keeps its params of epoch "
                f"{epoch - 1} and is left out of the means."
            )
        return lines

    def best_epochs(self, epoch: int) -> list[int | None]:
        """Each member's best epoch; without an evaluation yet, the epoch of its params now.

        A diverged member's params now are those of the epoch before it diverged.
        """
        return [
            e if e is not None else (epoch if live else None)
            for e, live in zip(self.best_epoch, self.active(), strict=True)
        ]

    def member_summaries(
        self,
        members: list[Member],
        test: dict[str, np.ndarray],
        val: dict[str, np.ndarray],
        epoch: int,
    ) -> list[dict[str, Any]]:
        """Each member's entry of a member set's summary: seed, swept values, metrics."""
        best_epochs = self.best_epochs(epoch)
        return [
            {
                "member": m.index,
                "seed": m.seed,
                **m.values,
                **{f"test_{k}": float(v[m.index]) for k, v in test.items()},
                **{f"val_{k}": float(v[m.index]) for k, v in val.items()},
                "best_epoch": best_epochs[m.index],
                "diverged_at_epoch": self.diverged_at[m.index],
            }
            for m in members
        ]


def member_label(member: Member) -> str:
    """``seed 3, learning_rate=0.01``: a member's seed and swept values."""
    values = ", ".join(f"{k}={v:g}" for k, v in member.values.items())
    return f"seed {member.seed}" + (f", {values}" if values else "")


def diverged_line(epoch: int, causes: dict[int, str], num_members: int, on_disk: str) -> str:
    """The message of a run whose every member has diverged, ``causes`` those of ``epoch``."""
    who, why = "every member", "; ".join(f"member {k}: {w}" for k, w in causes.items())
    if num_members == 1:  # the words of a single run
        who, why = "the run", causes[0]
    return (
        f"{who} diverged by epoch {epoch} ({why}); {on_disk}. Lower learning_rate or check "
        "the data."
    )


def progress_line(
    records: list[dict[str, float]], epochs: int, eta: float, active: np.ndarray
) -> str:
    """One member's progress, or the mean (± std) over the members still training."""
    quality = "accuracy" if "val_accuracy" in records[0] else "r2"
    fmt = (lambda v: f"{100 * v:.2f}%") if quality == "accuracy" else (lambda v: f"{v:.4f}")
    live = [r for r, a in zip(records, active, strict=True) if a]

    def value(name: str, fmt=fmt) -> str:
        values = np.asarray([r[name] for r in live], np.float64)
        text = fmt(values.mean())
        if len(records) > 1:
            text += f" ± {fmt(values.std())}"
        return text

    def plain(v: float) -> str:
        return f"{v:.4f}"

    members_text = ""
    if len(records) > 1:
        diverged = len(records) - len(live)
        members_text = f"  {len(records)} members" + (
            f" ({diverged} diverged, left out)" if diverged else ""
        )
    record = records[0]
    parts = [f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}"]
    if "epoch_loss" in record:  # not in a DP-SGD run's records
        parts.append(f"{EPOCH_LOSS_LABEL} {value('epoch_loss', plain)}")
    if f"train_{quality}" in record:
        parts.append(f"train {quality} {value(f'train_{quality}')}")
    val = f"val {quality} {value(f'val_{quality}')}"
    if "val_rmse" in record:  # regression: the errors in the targets' units
        rmse, mae = (value(f"val_{k}", lambda v: f"{v:.4g}") for k in ("rmse", "mae"))
        val += f"  val RMSE {rmse} MAE {mae} (target units)"
    parts.append(val + members_text)
    if "privacy/epsilon" in record:
        parts.append(f"ε {value('privacy/epsilon', lambda v: f'{v:.3g}')}")
    parts.append(f"{record['steps_per_second']:,.0f} steps/s  ETA {math.ceil(eta)}s")
    return "  ".join(parts)
