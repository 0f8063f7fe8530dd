"""Smoke test of experiments/vanishing.py: a --quick run writes the figure and the table, and
the sigmoid network's δ shrinks by at most about σ' ≤ 1/4 times the weights per layer."""

import os

from absl import flags
from absl.testing import flagsaver

from experiments import vanishing


def test_quick_run_writes_the_figure_and_table(tmp_path, capsys):
    with flagsaver.flagsaver():
        flags.FLAGS(["vanishing", f"--outdir={tmp_path}", "--quick", "--probe_size=64"])
        assert vanishing.main(["vanishing"]) == 0
    assert os.path.getsize(tmp_path / "vanishing.png") > 1000
    table = (tmp_path / "vanishing.md").read_text()
    for name in vanishing.ACTIVATIONS:
        assert f"| {name} | 2 |" in table and f"| {name} | 4 |" in table
    assert "k = 4" in table
    assert "wrote" in capsys.readouterr().out


def test_sigmoid_layers_shrink_delta_and_relu_keeps_it():
    ds = vanishing.data.load_dataset("digits", seed=0)
    sigmoid = vanishing.run_one(ds, "sigmoid", 4, 16, 1, 64, 0)
    relu = vanishing.run_one(ds, "relu", 4, 16, 1, 64, 0)
    assert len(sigmoid.delta_init) == 4 and len(sigmoid.g_prime_init) == 3
    assert all(g <= 0.25 for g in sigmoid.g_prime_init)  # σ' ≤ 1/4 at every unit
    assert vanishing.per_layer_factor(sigmoid.delta_init) < 0.5
    assert vanishing.per_layer_factor(relu.delta_init) > 0.5


def test_bad_activation_is_refused(tmp_path):
    with flagsaver.flagsaver():
        flags.FLAGS(["vanishing", f"--outdir={tmp_path}", "--activations=softmax", "--quick"])
        assert vanishing.main(["vanishing"]) == 2
