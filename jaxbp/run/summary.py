"""What a run reports: one metrics record per member and evaluation, and ``summary.json``.

Plain functions of the run's numbers on the host (the metrics come from
`jaxbp.run.programs.metrics_of`, ``{name: (M,)}``); `jaxbp.run.outputs` writes them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxbp.privacy import PrivacyAccount
from jaxbp.run import outputs
from jaxbp.run.config import Config, Member
from jaxbp.run.progress import Progress


def epoch_records(
    evaluated: dict[str, dict[str, np.ndarray]],
    *,
    epoch: int,
    steps_per_epoch: int,
    step_losses: np.ndarray | None,
    rates: np.ndarray,
    seconds: float,
    active: np.ndarray,
    epsilon: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One metrics record per member, each with its ``member`` index.

    Args:
      evaluated: ``{split: {name: (M,)}}`` for the splits the record carries.
      epoch, steps_per_epoch: where the run stands.
      step_losses: ``(M, steps)``, the epoch's losses; None: no ``epoch_loss`` (a DP-SGD
        run's, which are not private).
      rates: ``(M,)``, every member's learning rate in the epoch's last step.
      seconds: the epoch's wall time.
      active: ``(M,)``; a diverged member's record holds its frozen params' metrics and no
        ``epoch_loss`` (null: its epoch was thrown away).
      epsilon: ``(M,)``, a DP-SGD run's ε so far, recorded as ``privacy/epsilon``.
    """
    num = len(active)
    records = []
    for k in range(num):
        record: dict[str, Any] = {"member": k, "epoch": epoch, "step": epoch * steps_per_epoch}
        if step_losses is not None:
            record["epoch_loss"] = float(step_losses[k].mean()) if active[k] else None
        for split, metrics in evaluated.items():
            record.update({f"{split}_{name}": float(v[k]) for name, v in metrics.items()})
        if epsilon is not None:
            record["privacy/epsilon"] = float(epsilon[k])
        record["learning_rate"] = float(rates[k])
        record["steps_per_second"] = steps_per_epoch / seconds
        records.append(record)
    return records


def run_summary(
    *,
    best: dict[str, dict[str, np.ndarray]],
    last_test: dict[str, np.ndarray],
    progress: Progress,
    members: tuple[Member, ...],
    epoch: int,
    status: str,
    run_facts: dict[str, Any],
    config: Config,
    accounts: list[PrivacyAccount] | None = None,
) -> dict[str, Any]:
    """The summary of a run: the best-validation params' metrics (``best``: ``{split: {name:
    (M,)}}``), the last epoch's test metrics, each member's, and the means and standard
    deviations over the members that did not diverge (a single run: its own figures at the
    top, std 0). ``best_epoch`` is the members' common best epoch, None when they differ.

    A DP-SGD run's ``accounts`` (one per member) give its ``privacy`` record, each member's,
    and at the top the member's of the largest ε (the weakest guarantee of one model;
    releasing several members spends more)."""
    kept = progress.active()

    def mean(values: np.ndarray) -> float:
        return float(np.mean(values[kept]))

    test, val = best["test"], best["val"]
    summary: dict[str, Any] = {
        "status": status,
        **{f"test_{k}": mean(v) for k, v in test.items()},
        **{f"val_{k}": mean(v) for k, v in val.items() if k != "grad_norm"},
        **({"train_loss": mean(best["train"]["loss"])} if "train" in best else {}),
        "best_epoch": _common(progress.best_epochs(epoch)),
        **{f"last_epoch_test_{k}": mean(v) for k, v in last_test.items()},
    }
    for name, values in test.items():
        summary[f"test_{name}_mean"] = mean(values)
        summary[f"test_{name}_std"] = float(np.std(values[kept]))
    summary["num_members"] = len(members)
    summary["num_diverged"] = int((~kept).sum())
    summary["members"] = progress.member_summaries(list(members), test, val, epoch)
    for entry, account in zip(summary["members"], accounts or (), strict=False):
        entry["privacy"] = account.to_dict()
    if accounts:
        summary["privacy"] = max(accounts, key=lambda a: a.epsilon).to_dict()
    summary.update(run_facts)
    summary.update(
        {
            "num_processes": jax.process_count(),
            "config": dataclasses.asdict(config),
            **outputs.environment(),
        }
    )
    return summary


def _common(values: list[Any]) -> Any:
    """The one value all entries share, else None."""
    return values[0] if len(set(values)) == 1 else None
