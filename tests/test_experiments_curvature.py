"""Smoke tests of experiments/curvature.py: its flags parse, and the diagonal GGN and Hessian
from the δ recursion agree with autodiff's beside them."""

import jax
import jax.numpy as jnp
import pytest
from absl import flags
from absl.testing import flagsaver
from problems import make_problem

import jaxbp
from experiments import curvature


def test_main_prints_both_diagonals_beside_autodiff_and_passes(capsys):
    x64_before = jax.config.jax_enable_x64
    with flagsaver.flagsaver():
        flags.FLAGS(["curvature", "--hidden=4"])
        assert curvature.main([]) == 0
    out = capsys.readouterr().out
    assert "tanh hidden, softmax output, softmax_cross_entropy" in out
    assert out.count("| diag GGN |") == 4 and out.count("| diag Hessian |") == 4
    assert ": pass" in out and "FAIL" not in out
    gap = float(out.split("largest |diag Hessian − diag GGN|: ")[1].split()[0])
    assert gap > 1e-3  # tanh curves: the Hessian is not the GGN
    assert jax.config.jax_enable_x64 == x64_before  # main ran float64 in a context


def test_relu_in_float32_has_the_ggn_as_its_hessian(capsys):
    with flagsaver.flagsaver():
        flags.FLAGS(["curvature", "--activation=relu", "--loss=mse", "--precision=float32"])
        assert curvature.main([]) == 0
    out = capsys.readouterr().out
    assert "largest |diag Hessian − diag GGN|: 0.000e+00" in out
    assert "float32): pass" in out


@pytest.mark.usefixtures("x64")
def test_report_catches_a_wrong_diagonal(monkeypatch):
    """A report that cannot fail shows nothing: the GGN doubled must be far off."""
    model = jaxbp.MLP((3, 4, 2), "sigmoid", "sigmoid")
    params, x, y = make_problem(model, "bce", batch=5, seed=1)
    _, worst = curvature.report(model, "bce", params, x, y)
    assert worst <= curvature.THRESHOLD["float64"]
    right = jaxbp.diag_ggn
    monkeypatch.setattr(jaxbp, "diag_ggn", lambda *a: jax.tree.map(lambda v: 2 * v, right(*a)))
    _, worst = curvature.report(model, "bce", params, x, y)
    assert worst > 0.4
    assert jnp.isfinite(worst)
