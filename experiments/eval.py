"""Recompute a trained run's test metrics from its checkpoint.

    ./launch.sh eval --workdir=runs/iris-20250101-120000

Prints the test loss and accuracy (or R²) of the run's best-validation parameters, as its
summary.json has them, and for classification the confusion matrix and each class's
precision, recall and F1; writes them to W/eval.json. Nothing is trained; the data split is
loaded again and refused if it changed since training. Exit status: 0 done, 2 a bad flag or
a workdir that holds no trained run, 1 a fault (changed data, a damaged checkpoint).
"""

from __future__ import annotations

import os
from typing import Any

from absl import flags, logging

from experiments import cli
from jaxbp.run import evaluation, inference
from jaxbp.run import workdir as workdir_lib
from jaxbp.run.config import SWEEPABLE as _SWEEPABLE

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The workdir of a training run (required: it holds the checkpoint)."
)

PROGRAM = "eval.py"
fail = cli.failer(PROGRAM)


def main(argv: list[str]) -> int:
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    if len(argv) > 1:
        return fail(f"unexpected arguments {argv[1:]}: flags look like --name=value.", 2)
    workdir = _WORKDIR.value
    if not workdir:
        return fail("--workdir is required: give the workdir of a training run.", 2)
    try:
        result = evaluation.evaluate_workdir(workdir)
    except (inference.NotTrainedError, workdir_lib.WorkdirError) as e:
        return fail(str(e), 2)
    except KeyboardInterrupt:
        return fail("interrupted; nothing was written.", 130)
    except Exception as e:  # a fault: changed data, a damaged checkpoint, a failed write
        return fail(f"{type(e).__name__}: {e}", 1)
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
    quality = "accuracy" if "test_accuracy" in result else "r2"

    def show(value: float) -> str:
        return f"{100 * value:.2f}%" if quality == "accuracy" else f"{value:.4f}"

    label = "test accuracy" if quality == "accuracy" else "test R²"
    if len(members) == 1:  # a single run: its own figures
        rows = [
            ("test loss", f"{result['test_loss']:.4f}"),
            (label, show(result[f"test_{quality}"])),
        ]
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
