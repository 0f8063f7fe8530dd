"""Smoke tests of experiments/eval.py and experiments/predict.py as users run them.

Each runs in a subprocess (absl flags are global) on an iris run trained here.
"""

import csv
import json
import os
import pathlib
import re
import shutil

import numpy as np
import pytest
from experiment_runs import run_experiment as _run

from jaxbp.run import config as config_lib
from jaxbp.run import inference, loop, recipe


def _one_error_line(result, program, code, message):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"{program}: "), result.stderr[-2000:]
    assert message in lines[0], lines[0]


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    """A 3-epoch iris run: (workdir, summary, raw test rows, their true class names)."""
    config = config_lib.make_config("iris", epochs=3)
    workdir = str(tmp_path_factory.mktemp("runs") / "iris")
    summary = loop.train_and_evaluate(config, workdir, log=lambda _: None)
    ds = recipe.load_data(config)
    x_raw = ds.x_test.astype(np.float64) * ds.x_scale + ds.x_mean
    truth = np.asarray(ds.class_names)[np.argmax(ds.y_test, axis=1)]
    return workdir, summary, x_raw, truth


@pytest.fixture(scope="module")
def rows_csv(iris_run, tmp_path_factory):
    """The raw test rows as a csv with the features reversed and a target column first."""
    _, _, x_raw, truth = iris_run
    names = inference.load_trained(iris_run[0]).preprocessing["feature_names"]
    path = tmp_path_factory.mktemp("data") / "new.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["species", *reversed(names)])
        for label, row in zip(truth, x_raw, strict=True):
            writer.writerow([label, *(repr(float(v)) for v in reversed(row))])
    return str(path)


def test_eval_prints_the_table_and_writes_eval_json(iris_run):
    workdir, summary, _, _ = iris_run
    result = _run("eval", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert re.search(rf"\n  test accuracy +{100 * summary['test_accuracy']:.2f}%\n", out), out
    assert re.search(rf"\n  test loss +{summary['test_loss']:.4f}\n", out), out
    assert "confusion matrix (rows: true class, columns: predicted class)" in out
    for name in ("setosa", "versicolor", "virginica"):
        assert f"\n  {name}" in out
    assert f"written to {os.path.join(workdir, 'eval.json')}" in out
    with open(os.path.join(workdir, "eval.json")) as f:
        written = json.load(f)
    assert written["test_accuracy"] == pytest.approx(summary["test_accuracy"], rel=1e-6)
    assert sum(map(sum, written["confusion_matrix"])) == 30


@pytest.mark.parametrize(
    "case, code, message",
    [
        ("missing", 2, "does not exist; give the workdir of a training run"),
        ("empty", 2, "holds no run (run.json is missing)"),
        ("file", 2, "is a file, not a folder"),
        ("unset", 2, "--workdir is required"),
        ("damaged", 1, "UnreadableCheckpointError: the checkpoint in"),
    ],
)
def test_eval_refuses_a_bad_workdir_in_one_line(iris_run, tmp_path, case, code, message):
    workdir = tmp_path / "w"
    if case == "empty":
        workdir.mkdir()
    elif case == "file":
        workdir.write_text("not a workdir")
    elif case == "damaged":
        shutil.copytree(iris_run[0], workdir, ignore=shutil.ignore_patterns("eval.json"))
        (epoch,) = os.listdir(workdir / "best")
        (workdir / "best" / epoch / "meta" / "metadata").write_text("{not json")
    flags = [] if case == "unset" else [f"--workdir={workdir}"]
    result = _run("eval", *flags)
    _one_error_line(result, "eval.py", code, message)
    assert not (workdir / "eval.json").exists()


def test_predict_writes_the_labels_and_probabilities(iris_run, rows_csv, tmp_path):
    workdir, summary, _, truth = iris_run
    output = tmp_path / "predictions.csv"
    result = _run(
        "predict", f"--workdir={workdir}", f"--data_path={rows_csv}", f"--output={output}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "30 rows predicted" in result.stdout and f"written to {output}" in result.stdout
    assert "\npredictions from the single run\n" in result.stdout
    with open(output, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "prediction",
        "probability_setosa",
        "probability_versicolor",
        "probability_virginica",
    ]
    labels = np.array([r["prediction"] for r in rows])
    assert np.mean(labels == truth) == pytest.approx(summary["test_accuracy"], abs=1e-6)
    probabilities = np.array([[float(v) for v in list(r.values())[1:]] for r in rows])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_data", "does not exist; check the path"),
        ("wrong_columns", "lacks the feature column(s)"),
        ("no_folder", "does not exist; create it or write elsewhere"),
        ("no_run", "holds no run"),
    ],
)
def test_predict_refuses_bad_inputs_in_one_line(iris_run, rows_csv, tmp_path, case, message):
    workdir, data, output = iris_run[0], rows_csv, tmp_path / "out.csv"
    if case == "no_data":
        data = str(tmp_path / "missing.csv")
    elif case == "wrong_columns":
        data = str(tmp_path / "other.csv")
        with open(data, "w") as f:
            f.write("sepal length (cm),colour\n5.1,red\n")
    elif case == "no_folder":
        output = tmp_path / "missing" / "out.csv"
    elif case == "no_run":
        workdir = str(tmp_path)
    result = _run("predict", f"--workdir={workdir}", f"--data_path={data}", f"--output={output}")
    _one_error_line(result, "predict.py", 2, message)
    assert not output.exists()


@pytest.mark.parametrize("entry", ["run.json", "checkpoints/out.csv"])
def test_predict_never_writes_over_a_runs_records(iris_run, rows_csv, entry):
    workdir = iris_run[0]
    record = os.path.join(workdir, "run.json")
    before = pathlib.Path(record).read_text()
    output = os.path.join(workdir, entry)
    result = _run(
        "predict", f"--workdir={workdir}", f"--data_path={rows_csv}", f"--output={output}"
    )
    _one_error_line(result, "predict.py", 2, "which a training run keeps; write the predictions")
    assert pathlib.Path(record).read_text() == before
    assert not os.path.exists(os.path.join(workdir, "checkpoints", "out.csv"))


def test_predict_carries_an_identifier_column_through(iris_run, rows_csv, tmp_path):
    truth = iris_run[3]
    output = tmp_path / "with_ids.csv"
    flags = [f"--workdir={iris_run[0]}", f"--data_path={rows_csv}", f"--output={output}"]
    result = _run("predict", *flags, "--id_column=species")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(output, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:2] == ["species", "prediction"]
    assert [r["species"] for r in rows] == list(truth)
    missing = _run("predict", *flags, "--id_column=name")
    _one_error_line(missing, "predict.py", 2, "has no single column 'name'")


def test_eval_and_predict_take_one_member_and_refuse_others(iris_run, rows_csv, tmp_path):
    workdir, summary, _, _ = iris_run
    result = _run("eval", f"--workdir={workdir}", "--member=best")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\npredictions from the single run (member 0)\n" in result.stdout
    assert re.search(rf"\n  test loss +{summary['test_loss']:.4f}\n", result.stdout)
    with open(os.path.join(workdir, "eval.json")) as f:
        stored = json.load(f)
    assert stored["members_used"] == [0] and stored["member_choice"] == "best"
    output = tmp_path / "one.csv"
    flags = [f"--workdir={workdir}", f"--data_path={rows_csv}", f"--output={output}"]
    refused = _run("predict", *flags, "--member=1")
    _one_error_line(refused, "predict.py", 2, "--member=1: member 1 does not name a member; the ")
    assert "holds a single run: member 0" in refused.stderr and not output.exists()
    _one_error_line(
        _run("eval", f"--workdir={workdir}", "--member=last"),
        "eval.py",
        2,
        "--member=last is neither a member's index (0, 1, ...) nor best",
    )
