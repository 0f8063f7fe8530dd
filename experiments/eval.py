"""Recompute a trained run's test metrics from its checkpoint.

    ./launch.sh eval --workdir=runs/iris-20250101-120000

Prints the test loss and accuracy (or R²) of the run's best-validation parameters, as its
summary.json has them (for regression with the RMSE and MAE in the target's units), and for
classification the confusion matrix and each class's
precision, recall and F1; writes them to W/eval.json. Nothing is trained; the data split is
loaded again and refused if it changed since training. A member set's figures are its
ensemble's and each member's; ``--member=K`` (an index) or ``--member=best`` (the lowest best
validation loss) evaluates one member alone. Exit status: 0 done, 2 a bad flag or
a workdir that holds no trained run, 1 a fault (changed data, a damaged checkpoint).
"""

from __future__ import annotations

import os
from typing import Any

from absl import flags

from experiments import cli
from jaxbp.run import evaluation
from jaxbp.run.config import SWEEPABLE as _SWEEPABLE

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The workdir of a training run (required: it holds the checkpoint)."
)

_MEMBER = flags.DEFINE_string("member", None, cli.MEMBER_HELP)

PROGRAM = "eval.py"
_HINT = "give the workdir of a training run."
fail = cli.failer(PROGRAM)


def main(argv: list[str]) -> int:
    problem = cli.command_line_problem(argv, _WORKDIR, hint=_HINT)
    if problem:
        return fail(problem, 2)
    workdir = _WORKDIR.value
    try:
        member = cli.parse_member(_MEMBER.value)
    except ValueError as e:
        return fail(str(e), 2)
    try:
        result = evaluation.evaluate_workdir(workdir, member)
    except KeyboardInterrupt:
        return fail("interrupted; nothing was written.", 130)
    except Exception as e:  # no trained run, no such member, or a fault
        return fail(*cli.reading_failure(e, _MEMBER.value))
    print_report(result, workdir)
    return 0


def print_report(result: dict[str, Any], workdir: str) -> None:
    """The metrics table, the confusion matrix and per-class scores, and where they went."""
    params = (
        "the latest checkpoint's parameters"
        if result["best_epoch"] is None
        else f"the best-validation parameters (epoch {result['best_epoch']})"
    )
    members = result["members"]
    if len(members) > 1:
        params = f"{len(members)} members' best-validation parameters"
    print(f"{workdir}: {params} on {result['num_test_examples']} test examples")
    print(f"predictions from {result['predictions_from']}")
    quality = "accuracy" if "test_accuracy" in result else "r2"

    def show(value: float) -> str:
        return f"{100 * value:.2f}%" if quality == "accuracy" else f"{value:.4f}"

    label = "test accuracy" if quality == "accuracy" else "test R²"
    if len(members) == 1:  # a single run: its own figures
        rows = [
            ("test loss", f"{result['test_loss']:.4f}"),
            (label, show(result[f"test_{quality}"])),
        ]
        if "test_rmse" in result:  # regression: the errors in the target's units
            rows += [(f"test {k.upper()}", f"{result[f'test_{k}']:.4g}") for k in ("rmse", "mae")]
        for name, value in rows:
            print(f"  {name:<14}{value:>10}")
    else:
        rows = []
        for m in members:
            values = "".join(f" {k}={v:g}" for k, v in m.items() if k in _SWEEPABLE)
            note = "" if m["diverged_at_epoch"] is None else f" (diverged {m['diverged_at_epoch']})"
            rows.append(
                (
                    f"member {m['member']} seed {m['seed']}{values}",
                    m["test_loss"],
                    show(m[f"test_{quality}"]) + note,
                )
            )
        spread = f"{show(result[f'test_{quality}'])} ± {show(result[f'test_{quality}_std'])}"
        rows.append(("mean ± std", result["test_loss"], spread))
        ensemble = result["ensemble"]
        name = f"ensemble of {ensemble['num_members']}"
        rows.append((name, ensemble["test_loss"], show(ensemble[f"test_{quality}"])))
        width = max(len(row[0]) for row in rows) + 2
        print(f"  {'':<{width}}{'test loss':>10}  {label}")
        for name, loss, quality_text in rows:
            print(f"  {name:<{width}}{loss:>10.4f}  {quality_text}")
        if "test_rmse" in ensemble:  # regression: the errors in the target's units
            print(
                f"  in the target's units: the ensemble's test RMSE {ensemble['test_rmse']:.4g}, "
                f"MAE {ensemble['test_mae']:.4g}; the members' RMSE {result['test_rmse']:.4g} "
                f"± {result['test_rmse_std']:.2g}, MAE {result['test_mae']:.4g} "
                f"± {result['test_mae_std']:.2g}"
            )
        if "confusion_matrix" in result:
            print("\nthe ensemble's predictions:")
    if "confusion_matrix" in result:
        names = result["class_names"]
        label = max(len("class"), *map(len, names))
        cell = max(6, *map(len, names))
        print("\nconfusion matrix (rows: true class, columns: predicted class)")
        print(f"  {'':<{label}}" + "".join(f"  {c:>{cell}}" for c in names))
        for name, row in zip(names, result["confusion_matrix"], strict=True):
            print(f"  {name:<{label}}" + "".join(f"  {n:>{cell}}" for n in row))
        print(f"\n  {'class':<{label}}  {'precision':>9}  {'recall':>9}  {'f1':>9}")
        for name in names:
            scores = (result[k][name] for k in ("precision", "recall", "f1"))
            print(f"  {name:<{label}}" + "".join(f"  {v:>9.4f}" for v in scores))
    print(f"\nwritten to {os.path.join(workdir, evaluation.EVAL_FILE)}")


if __name__ == "__main__":
    cli.run(main)
