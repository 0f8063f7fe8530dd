"""Predict new examples with a trained run.

    ./launch.sh predict --workdir=runs/iris-20250101-120000 --data_path=new.csv \\
        --output=predictions.csv

``--data_path`` holds raw rows in the units of the training data: a csv whose header names
every feature of the run (in any order; other columns, such as the target, are ignored), or
an .npz with an array ``x``. ``--output`` gets a csv with a ``prediction`` column (the class
name, or the value in the target's units; ``prediction_0``, ... for several targets) and, for
classification, one ``probability_<class>`` column per class; ``--id_column=NAME`` puts
the data file's column NAME first, so each prediction keeps its row's identifier. For a
member set (a run with ``--repeats`` or ``--sweep``) ``prediction`` and the probabilities
are the ensemble's (the members' outputs averaged) and ``member_0``, ``member_1``, ... hold
each member's prediction (single-target runs); ``--member=K`` (an index) or ``--member=best``
(the lowest best validation loss) predicts with that member alone. The console says which
members the predictions come from. With ``--laplace`` the predictions and
probabilities are the Laplace predictive's (``./launch.sh laplace``: its stored posterior
settings and tuned prior when W/laplace.json exists, else the defaults tuned on the
validation split), and for regression a ``variance`` column holds the predictive variance.
Exit status: 0 done, 2 a bad flag (a workdir without a trained run, a data file that is
missing or does not fit the run, an output folder that does not exist, an output that would
overwrite a run's records), 1 a fault (a damaged checkpoint, a failed write, outputs that
are not finite).
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags

from experiments import cli
from jaxbp.data import files
from jaxbp.run import inference, prediction_file
from jaxbp.run import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The workdir of a training run (required: it holds the checkpoint)."
)
_DATA_PATH = flags.DEFINE_string(
    "data_path", None, "The .csv or .npz of raw rows to predict (required)."
)
_OUTPUT = flags.DEFINE_string(
    "output", None, "The csv file to write (required; its folder must exist)."
)
_LAPLACE = flags.DEFINE_bool(
    "laplace", False, "The Laplace predictive (./launch.sh laplace) instead of the MAP network's."
)

_ID_COLUMN = flags.DEFINE_string(
    "id_column",
    None,
    "A column of --data_path (an array of an .npz) copied as the output's first column, so "
    "each prediction keeps its row's identifier.",
)

_MEMBER = flags.DEFINE_string("member", None, cli.MEMBER_HELP)

PROGRAM = "predict.py"
fail = cli.failer(PROGRAM)


def check_output(output: str, data_path: str) -> str | None:
    """Why ``--output`` cannot be written, or None when it can."""
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        return (
            f"--output={output}: the folder {folder} does not exist; create it or write elsewhere."
        )
    if os.path.isdir(output):
        return f"--output={output} is a folder; give the path of the csv file to write."
    if os.path.exists(output) and os.path.exists(data_path) and os.path.samefile(output, data_path):
        return f"--output={output} is the --data_path file; write the predictions elsewhere."
    entry = workdir_lib.run_entry_at(output)
    if entry is not None:
        return (
            f"--output={output} would overwrite {entry}, which a training run keeps; write the "
            "predictions elsewhere (another name in the workdir is fine, e.g. predictions.csv)."
        )
    return None


def main(argv: list[str]) -> int:
    problem = cli.command_line_problem(
        argv,
        _WORKDIR,
        _DATA_PATH,
        _OUTPUT,
        hint="give --workdir of a training run, --data_path of the rows to predict and "
        "--output for the predictions.",
    )
    if problem:
        return fail(problem, 2)
    workdir, data_path, output = _WORKDIR.value, _DATA_PATH.value, _OUTPUT.value
    problem = check_output(output, data_path)
    if problem:
        return fail(problem, 2)
    try:
        member = cli.parse_member(_MEMBER.value)
    except ValueError as e:
        return fail(str(e), 2)
    if member is not None and _LAPLACE.value:
        return fail(
            "--member with --laplace: the Laplace predictive is fitted for every kept member "
            "of the workdir; drop --member (or --laplace to predict with one member).",
            2,
        )
    try:
        trained, _, source = inference.select_members(inference.load_trained(workdir), member)
    except Exception as e:  # no trained run, no such member, or a fault
        return fail(*cli.reading_failure(e, _MEMBER.value))
    if _LAPLACE.value:
        from experiments import laplace_run

        problem = laplace_run.check_likelihood(trained)
        if problem:
            return fail(f"--laplace: {problem}", 2)
    try:
        x_raw = files.read_features(data_path, trained.preprocessing["feature_names"])
        ids = None
        if _ID_COLUMN.value:
            ids = (_ID_COLUMN.value, files.read_column(data_path, _ID_COLUMN.value))
    except (OSError, ValueError) as e:  # missing, unreadable, or not the run's features
        return fail(str(e), 2)
    try:
        members, variances = None, None
        if _LAPLACE.value:
            predictions, probabilities, variances = laplace_run.predict_raw(workdir, trained, x_raw)
        else:
            predictions, probabilities = inference.predict_rows(trained, x_raw)
            if len(trained.members) > 1 and predictions.ndim == 1:
                members = [p for p, _ in inference.member_predictions(trained, x_raw)]
        prediction_file.write_predictions(
            output,
            predictions,
            probabilities,
            trained.preprocessing["class_names"],
            members,
            variances,
            ids,
        )
    except KeyboardInterrupt:
        return fail(f"interrupted; {output} was not written.", 130)
    except Exception as e:  # a fault: a failed write
        return fail(f"{type(e).__name__}: {e}", 1)
    print_report(predictions, trained, workdir, output, laplace=_LAPLACE.value, source=source)
    return 0


def print_report(
    predictions: np.ndarray,
    trained: inference.TrainedModel,
    workdir: str,
    output: str,
    *,
    laplace: bool = False,
    source: str | None = None,
) -> None:
    """How many rows were predicted, by which parameters, what came out, and where it went."""
    params = (
        "the latest checkpoint's parameters"
        if trained.best_epoch is None
        else f"the best-validation parameters (epoch {trained.best_epoch})"
    )
    if len(trained.members) > 1:
        kept = sum(m["diverged_at_epoch"] is None for m in trained.members)
        params = (
            f"the ensemble of {kept} members (each member's best-validation parameters; "
            f"{len(trained.members) - kept} diverged, left out)"
        )
    by = "the Laplace predictive around " if laplace else ""
    print(f"{len(predictions)} rows predicted with {by}{params} of {workdir}")
    if source is not None:
        print(f"predictions from {source}")
    if trained.preprocessing["task"] == "classification":
        names, counts = np.unique(predictions, return_counts=True)
        print("  " + ", ".join(f"{n}: {c}" for n, c in zip(names, counts, strict=True)))
    elif len(predictions):
        print(
            f"  values from {predictions.min():.4g} to {predictions.max():.4g}, "
            f"mean {predictions.mean():.4g}"
        )
    print(f"written to {output}")


if __name__ == "__main__":
    cli.run(main)
