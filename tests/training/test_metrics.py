"""Tests of jaxbp.training.metrics: regression errors in the targets' own units."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import training


@pytest.mark.parametrize("num_outputs", [1, 3])
def test_rmse_and_mae_are_in_the_targets_units(x64, num_outputs):
    del x64
    rng = np.random.default_rng(num_outputs)
    n = 40
    y_raw = rng.normal(150.0, 60.0, (n, num_outputs)) * np.arange(1, num_outputs + 1)
    y_hat_raw = y_raw + rng.normal(0.0, 20.0, (n, num_outputs))
    mean, scale = y_raw.mean(axis=0), y_raw.std(axis=0)  # the standardisation of the data
    y, y_hat = (y_raw - mean) / scale, (y_hat_raw - mean) / scale
    metrics = training.output_metrics(jnp.asarray(y_hat), jnp.asarray(y), "regression", scale)
    error = y_hat_raw - y_raw  # every row and output, in units
    assert float(metrics["rmse"]) == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-12)
    assert float(metrics["mae"]) == pytest.approx(np.mean(np.abs(error)), rel=1e-12)
    # R² is unitless: the same from the standardised and the raw targets of one output.
    if num_outputs == 1:
        r2 = 1 - np.sum(error**2) / np.sum((y_raw - y_raw.mean()) ** 2)
        assert float(metrics["r2"]) == pytest.approx(r2, rel=1e-12)


def test_split_metrics_passes_the_scale_and_classification_has_no_errors_in_units(x64):
    del x64
    model = jaxbp.MLP((2, 2), "identity", "identity", use_bias=False)
    params = [{"W": jnp.eye(2)}]
    x = jnp.array([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
    y = jnp.array([[1.0, 1.0], [0.0, 1.0], [0.5, 0.0]])
    metrics = training.split_metrics(model, "mse", params, x, y, "regression", (10.0, 2.0))
    error = (np.asarray(x) - np.asarray(y)) * np.array([10.0, 2.0])
    assert float(metrics["rmse"]) == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-12)
    assert float(metrics["mae"]) == pytest.approx(np.mean(np.abs(error)), rel=1e-12)
    assert set(training.split_metrics(model, "mse", params, x, y, "regression")) == {"loss", "r2"}
    classes = training.split_metrics(model, "mse", params, x, y, "classification", (1.0, 1.0))
    assert set(classes) == {"loss", "accuracy"}
