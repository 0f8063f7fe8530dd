"""Smoke test of experiments/bench_curvature.py on its smallest setting.

No timing is asserted (timings on a shared machine mean nothing): every function and
alternative ran, gave finite positive times and ratios, the alternatives' results equal
jaxbp's to float32 rounding, and the report and targets read them.
"""

import importlib.util
import json
import math

import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import bench_curvature

TINY = dict(depths=(1,), widths=(8,), batches=(4,))
ALTERNATIVES = ("vmap_grad_squared", "jacrev_hessian", "vmap_jacrev")


@pytest.fixture(scope="module")
def rows():
    lines = []
    laplax = importlib.util.find_spec("laplax") is not None
    result = bench_curvature.run(TINY, 0.02, laplax, digits_batch=8, log=lines.append)
    return result, lines, laplax


def test_every_function_is_timed_against_the_step(rows):
    result, lines, _ = rows
    grid_row, digits_row = result
    assert (grid_row["network"], grid_row["batch"]) == ("8-8-10", 4)
    assert (digits_row["network"], digits_row["batch"]) == ("64-128-10", 8)
    for row in result:
        for name in ("step", *bench_curvature.FUNCTIONS):
            assert math.isfinite(row[f"{name}_ms"]) and row[f"{name}_ms"] > 0, name
        for name in bench_curvature.FUNCTIONS:
            assert math.isfinite(row[f"{name}_over_step"]) and row[f"{name}_over_step"] > 0
    assert len(lines) == 2 and lines[-1].startswith("64-128-10 batch 8: step")
    assert "jacrev_hessian_ms" not in grid_row  # the autodiff ways run on digits only


def test_the_alternatives_agree_with_jaxbp_and_are_reported(rows):
    result, _, laplax = rows
    digits_row = result[-1]
    for name in ALTERNATIVES + (("laplax",) if laplax else ()):
        assert digits_row[f"{name}_ms"] > 0 and digits_row[f"{name}_jaxbp_ms"] > 0
        assert digits_row[f"{name}_over_jaxbp"] > 0
        assert digits_row[f"{name}_error"] <= 1e-4, (name, digits_row[f"{name}_error"])
    table = bench_curvature.markdown(result)
    assert table.count("\n| 8-8-10 | 4 |") + table.count("\n| 64-128-10 | 8 |") == 2
    assert all(f"| {name} |" in table for name in ALTERNATIVES)
    met = bench_curvature.targets(result)
    assert "diag_ggn <= 3x step (digits)" in met and "jacrev_hessian >= 100x jaxbp (digits)" in met
    assert all(isinstance(ok, bool) for ok in met.values())


@pytest.mark.skipif(importlib.util.find_spec("laplax") is not None, reason="laplax installed")
def test_laplax_asked_for_but_missing_is_said(monkeypatch):
    monkeypatch.setattr(bench_curvature, "time_network", lambda *a, **k: {"network": "x"})
    monkeypatch.setattr(bench_curvature, "_progress", str)
    lines = []
    bench_curvature.run(TINY, 0.01, True, digits_batch=4, log=lines.append)
    assert lines[0] == bench_curvature.LAPLAX_MISSING


def test_main_prints_and_writes_the_rows_run_gives(tmp_path, monkeypatch, capsys, rows):
    result, _, _ = rows
    output = tmp_path / "curvature.json"
    calls = []
    monkeypatch.setattr(bench_curvature, "run", lambda *a, **k: calls.append(a) or result)
    with flagsaver.flagsaver():
        flags.FLAGS(["bench_curvature", "--quick", "--budget=5", f"--output={output}"])
        assert bench_curvature.main([]) == 0
    assert calls == [(bench_curvature.QUICK_GRID, 1.0, False)]  # --quick caps the budget
    figures = json.loads(output.read_text())
    assert [r["network"] for r in figures["rows"]] == ["8-8-10", "64-128-10"]
    assert figures["targets"] == bench_curvature.targets(result)
    out = capsys.readouterr().out
    assert bench_curvature.markdown(result) in out
    assert "target diag_ggn <= 3x step (digits):" in out
