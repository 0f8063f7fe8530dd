"""Smoke tests of experiments/derivations.py: its flags parse, and every closed form agrees
with the library, layer by layer and in the gradient."""

import jax
import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import derivations


def test_main_parses_flags_runs_the_chosen_derivations_and_restores_precision(capsys):
    x64_before = jax.config.jax_enable_x64
    with flagsaver.flagsaver():
        flags.FLAGS(["derivations", "--derivation=2,4", "--seed=1", "--precision=float64"])
        assert derivations.main([]) == 0
    out = capsys.readouterr().out
    assert "## derivation 2" in out and "## derivation 4" in out
    assert "## derivation 1" not in out
    assert out.count(": pass") == 2 and "FAIL" not in out
    assert "| 2 | δ^[2] |" in out  # the per-layer table, shown by default
    assert jax.config.jax_enable_x64 == x64_before  # main ran float64 in a context


def test_show_deltas_can_be_switched_off(capsys):
    with flagsaver.flagsaver():
        flags.FLAGS(["derivations", "--derivation=2", "--noshow_deltas"])
        assert derivations.main([]) == 0
    assert "δ^[1]" not in capsys.readouterr().out


def test_every_derivation_agrees_with_the_library_and_training_reaches_the_target():
    with jax.enable_x64(True):
        results = derivations.reproduce(derivations.DERIVATIONS, seed=0, precision="float64")
    assert list(results) == list(derivations.DERIVATIONS)
    for name, result in results.items():
        assert result.derivation == name
        assert result.max_relative_error <= 1e-10, (name, result.max_relative_error)
        assert any("jaxbp.loss_and_grad" in line for line in result.lines)
        assert any("δ^[1]" in line for line in result.lines)
    # Derivation 3 has two hidden layers and the output: three rows of δ.
    assert any("| 3 | δ^[3] |" in line for line in results["3"].lines)
    for name in ("1", "3"):  # trained with W ← W − η ∂L/∂W
        assert results[name].test_accuracy >= derivations.MIN_ACCURACY, results[name]
    assert results["2"].test_accuracy is None and results["4"].test_accuracy is None
    # The sign erratum of eq. (3.7) is shown: the ascent rule's J ends above where it started.
    ascent = next(line for line in results["3"].lines if "W ← W + η" in line)
    start, end = (float(v) for v in ascent.split("J ")[1].split(" (")[0].split(" → "))
    assert end > start


def test_float32_run_is_within_its_threshold():
    with jax.enable_x64(False):
        (result,) = derivations.reproduce(["4"], seed=0, precision="float32").values()
    assert result.max_relative_error <= derivations.THRESHOLD["float32"]


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="unknown derivations.*1, 2"):
        derivations.reproduce(["5"])
    with jax.enable_x64(False), pytest.raises(ValueError, match="jax_enable_x64"):
        derivations.reproduce(["1"], precision="float64")
