"""Smoke tests of experiments/vanishing.py: a --quick run from the command line writes the
figure and the table, and the sigmoid network's δ shrinks by about σ' ≤ 1/4 per layer."""

import os
import subprocess
import sys

import pytest
from experiment_runs import ROOT, run_experiment

from experiments import vanishing


def run_script(*args):
    return run_experiment("vanishing", *args, timeout=600, env={"JAX_PLATFORMS": "cpu"})


def test_quick_run_writes_the_figure_and_table_to_a_default_folder(tmp_path):
    """Without --outdir the outputs go to runs/vanishing-TIME below the working folder."""
    result = subprocess.run(
        [sys.executable, "-m", "experiments.vanishing", "--quick", "--probe_size=64"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (outdir,) = (tmp_path / "runs").glob("vanishing-*")
    assert os.path.getsize(outdir / "vanishing.png") > 1000
    table = (outdir / "vanishing.md").read_text()
    for name in vanishing.ACTIVATIONS:
        assert f"| {name} | 2 |" in table and f"| {name} | 4 |" in table
    assert "k = 4" in table
    assert "--quick" in table  # the command that made it
    assert "wrote" in result.stdout


def test_bad_activation_is_refused(tmp_path):
    result = run_script(f"--outdir={tmp_path}", "--activations=softmax", "--quick")
    assert result.returncode == 2
    assert "activations must be among" in result.stderr
    with pytest.raises(ValueError, match="activations must be among"):
        vanishing.run_all(str(tmp_path), [2], ["softmax"])


def test_sigmoid_layers_shrink_delta_and_relu_keeps_it():
    ds = vanishing.data.load_dataset("digits", seed=0)
    sigmoid = vanishing.run_one(ds, "sigmoid", 4, 16, 1, 64, 0)
    relu = vanishing.run_one(ds, "relu", 4, 16, 1, 64, 0)
    assert len(sigmoid.delta_init) == 4 and len(sigmoid.g_prime_init) == 3
    assert all(g <= 0.25 for g in sigmoid.g_prime_init)  # σ' ≤ 1/4 at every unit
    assert vanishing.per_layer_factor(sigmoid.delta_init) < 0.5
    assert vanishing.per_layer_factor(relu.delta_init) > 0.5
