"""Smoke tests of experiments/laplace.py and ``experiments/predict.py --laplace`` as users run
them, on the shared trained runs (tests/trained_runs.py), and of the pieces they share
(experiments/laplace_run.py) and jaxbp.calibration."""

import csv
import json
import os

import jax
import numpy as np
import pytest
from experiment_runs import run_experiment as _run
from trained_runs import true_indices

from experiments import laplace_run
from jaxbp import calibration
from jaxbp.run import inference, recipe


def _raw_test_rows(config, path):
    """The test split's raw rows as an .npz (``x``) at ``path``; returns the dataset."""
    dataset = recipe.load_data(config)
    np.savez(path, x=dataset.x_test.astype(np.float64) * dataset.x_scale + dataset.x_mean)
    return dataset


def _predict_with_laplace(config, workdir, tmp_path):
    """``predict --laplace`` on the run's raw test rows: the data set and the probabilities
    (rows checked to sum to one)."""
    data = tmp_path / "rows.npz"
    dataset = _raw_test_rows(config, data)
    output = tmp_path / "p.csv"
    result = _run(
        "predict", f"--workdir={workdir}", f"--data_path={data}", f"--output={output}", "--laplace"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "with the Laplace predictive around" in result.stdout
    with open(output, newline="") as f:
        rows = list(csv.DictReader(f))
    probabilities = np.array(
        [[float(r[k]) for k in r if k.startswith("probability_")] for r in rows]
    )
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    return dataset, probabilities


def test_laplace_writes_the_comparison_and_predict_uses_it(trained, tmp_path):
    workdir, config, summary = trained("iris")
    result = _run("laplace", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kron Laplace over last_layer" in result.stdout
    assert "the run had no weight decay" in result.stdout
    with open(os.path.join(workdir, "laplace.json")) as f:
        written = json.load(f)
    assert written["map"]["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert written["map"]["test_nll"] == pytest.approx(summary["test_loss"], rel=1e-4)
    assert set(written["laplace"]) == {"test_accuracy", "test_nll", "test_ece"}
    assert written["prior_precision"][0] > 0 and written["prior_precision_by_marglik"][0] > 0
    assert os.path.getsize(os.path.join(workdir, "reliability.png")) > 10_000
    dataset, probabilities = _predict_with_laplace(config, workdir, tmp_path)
    labels = true_indices(dataset.y_test)
    # The stored λ gives back the command's own figures (to the float32 rounding of raw rows
    # standardised again).
    assert calibration.negative_log_likelihood(probabilities, labels) == pytest.approx(
        written["laplace"]["test_nll"], rel=1e-6
    )


def test_laplace_of_a_regression_run_and_its_predictive_variance(trained, tmp_path):
    workdir, config, _ = trained("diabetes")
    result = _run("laplace", f"--workdir={workdir}", "--structure=diag", "--tune=marglik")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(workdir, "laplace.json")) as f:
        written = json.load(f)
    assert set(written["laplace"]) == {"test_rmse", "test_nll"}
    assert written["laplace"]["test_rmse"] == pytest.approx(written["map"]["test_rmse"])
    assert written["sigma_noise"][0] != 1.0  # σ is tuned with λ for regression
    assert not os.path.exists(os.path.join(workdir, "reliability.png"))
    data, output = tmp_path / "rows.npz", tmp_path / "p.csv"
    _raw_test_rows(config, data)
    result = _run(
        "predict", f"--workdir={workdir}", f"--data_path={data}", f"--output={output}", "--laplace"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(output, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["prediction", "variance"]
    y_scale = inference.load_trained(workdir).preprocessing["y_scale"][0]
    variances = np.array([float(r["variance"]) for r in rows])
    assert np.all(variances > (written["sigma_noise"][0] * y_scale) ** 2)  # noise + J Σ Jᵀ


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "--workdir is required"),
        (["--workdir=/nonexistent/w"], "does not exist; give the workdir of a training run"),
    ],
)
def test_laplace_refuses_a_bad_workdir_in_one_line(flags, message):
    result = _run("laplace", *flags)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("laplace.py: ") and message in lines[0]


def test_mixture_of_members(trained):
    """A member set's predictive is the average of its members': two copies of one posterior
    mix to that posterior, probabilities and regression moments alike."""
    for name in ("iris", "diabetes"):
        workdir, _, _ = trained(name)
        loaded, dataset = laplace_run.load_run(workdir)
        with jax.enable_x64(True):
            (posterior,), _ = laplace_run.fit_posteriors(
                loaded, dataset, laplace_run.Settings(tune="marglik")
            )
            single = laplace_run.mixture([posterior], dataset.x_test)
            double = laplace_run.mixture([posterior, posterior.replace()], dataset.x_test)
        for a, b in zip(np.atleast_1d(single), np.atleast_1d(double), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_a_member_set_gets_a_posterior_per_member_and_their_mixture(trained, tmp_path):
    workdir, config, _ = trained("iris_pair")
    result = _run("laplace", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(workdir, "laplace.json")) as f:
        written = json.load(f)
    assert len(written["prior_precision"]) == 2  # one tuned posterior per member
    dataset, probabilities = _predict_with_laplace(config, workdir, tmp_path)
    # predict's mixture of the two members' predictives is the one laplace.json scored.
    assert calibration.negative_log_likelihood(
        probabilities, true_indices(dataset.y_test)
    ) == pytest.approx(written["laplace"]["test_nll"], rel=1e-6)


def test_calibration_metrics_against_a_hand_count():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 0])
    bins = calibration.reliability(probabilities, labels, num_bins=5)
    np.testing.assert_array_equal(bins.counts, [0, 0, 1, 1, 2])  # 0.55 | 0.7 | 0.8, 0.9
    expected = (abs(0 - 0.55) + abs(1 - 0.7) + 2 * abs(0.5 - 0.85)) / 4
    assert calibration.expected_calibration_error(probabilities, labels, 5) == pytest.approx(
        expected
    )
    assert calibration.accuracy(probabilities, labels) == 0.5
    assert calibration.negative_log_likelihood(probabilities, labels) == pytest.approx(
        -np.mean(np.log([0.9, 0.2, 0.7, 0.45]))
    )
    with pytest.raises(ValueError, match="expected \\(n, num_classes\\) and \\(n,\\)"):
        calibration.reliability(probabilities, labels[:3])


def test_a_classifier_without_a_likelihood_loss_is_refused():
    """breast_cancer's default is a sigmoid unit trained with mse: no Bernoulli likelihood."""
    import types

    import jaxbp

    run = types.SimpleNamespace(
        preprocessing={"task": "classification"},
        loss="mse",
        model=jaxbp.MLP((30, 1), output_activation="sigmoid"),
    )
    assert "train it with the loss auto" in laplace_run.check_likelihood(run)
    run.loss, run.model = "bce", jaxbp.MLP((30, 3), output_activation="sigmoid")
    assert "several sigmoid outputs" in laplace_run.check_likelihood(run)
    run.model = jaxbp.MLP((30, 1), output_activation="sigmoid")
    assert laplace_run.check_likelihood(run) is None
