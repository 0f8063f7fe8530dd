"""Calibrated probabilities for a trained run: its Laplace posterior, fitted post hoc.

    ./launch.sh laplace --workdir=W [--structure=kron --subset=last_layer] [--tune=val_nll]

Fits `jaxbp.laplace` on W's training split at the best checkpoint (each member's, for a
member set), tunes the prior precision λ (and σ for regression) on the validation NLL
(``--tune=marglik``: on the marginal likelihood; the other choice is reported beside it) and
compares the MAP network with the Laplace predictive on the test split: accuracy, NLL and
ECE (15 bins), or for regression the RMSE and the Gaussian NLL. Writes ``W/laplace.json``
and, for classes, ``W/reliability.png`` (MAP and Laplace side by side). A member set's
predictive is the mixture of its kept members' posteriors. The fit runs in float64.

A network trained without weight decay is no mode of a posterior with a Gaussian prior: the
marginal likelihood then picks a tiny λ and an under-confident predictive, so the validation
NLL is the default and the report says when the run had no weight decay. Exit status: 0
done, 2 a bad flag or a workdir that holds no trained run, 1 a fault.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np
from absl import flags

from experiments import cli, laplace_run
from jaxbp import laplace
from jaxbp.run import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "The workdir of a training run (required).")
_STRUCTURE = flags.DEFINE_enum(
    "structure", "kron", laplace.STRUCTURES, "Posterior precision: Kronecker factors per layer."
)
_SUBSET = flags.DEFINE_enum(
    "subset",
    "last_layer",
    laplace.SUBSETS,
    "Parameters covered: the last layer is cheap, and enough.",
)
_TUNE = flags.DEFINE_enum(
    "tune", "val_nll", laplace.TUNING_METHODS, "How λ is tuned: the validation NLL assumes nothing."
)

PROGRAM = "laplace.py"
fail = cli.failer(PROGRAM)


def main(argv: list[str]) -> int:
    problem = cli.command_line_problem(argv, _WORKDIR, hint="give the workdir of a training run.")
    if problem:
        return fail(problem, 2)
    workdir = _WORKDIR.value
    try:
        trained, dataset = laplace_run.load_run(workdir)
    except Exception as e:  # no trained run, or a fault: changed data, a damaged checkpoint
        return fail(*cli.reading_failure(e))
    problem = laplace_run.check_likelihood(trained)
    if problem:
        return fail(problem, 2)
    settings = laplace_run.Settings(_STRUCTURE.value, _SUBSET.value, _TUNE.value)
    try:
        with jax.enable_x64(True):
            start = time.perf_counter()
            posteriors, others = laplace_run.fit_posteriors(trained, dataset, settings)
            seconds = time.perf_counter() - start
            metrics, predictions = laplace_run.evaluate(trained, dataset, posteriors)
            other_metrics, _ = laplace_run.evaluate(trained, dataset, others)
        result = report(trained, settings, posteriors, others, metrics, other_metrics, seconds)
        workdir_lib.write_atomic(
            os.path.join(workdir, laplace_run.LAPLACE_FILE), json.dumps(result, indent=2)
        )
        if predictions is not None:
            title = (
                f"{workdir}: {settings.structure} Laplace, {settings.subset}, λ by {settings.tune}"
            )
            laplace_run.plot_reliability(
                os.path.join(workdir, laplace_run.RELIABILITY_FILE), predictions, title
            )
    except KeyboardInterrupt:
        return fail("interrupted; nothing was written.", 130)
    except Exception as e:  # a fault: a failed fit or write
        return fail(f"{type(e).__name__}: {e}", 1)
    print_report(result, workdir)
    return 0


def report(
    trained: Any,
    settings: laplace_run.Settings,
    posteriors: list[Any],
    others: list[Any],
    metrics: dict[str, Any],
    other_metrics: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """What ``W/laplace.json`` holds."""
    other = "marglik" if settings.tune == "val_nll" else "val_nll"
    weight_decays = {trained.config.weight_decay} | {
        m.get("weight_decay", trained.config.weight_decay) for m in trained.members
    }
    return {
        **settings._asdict(),
        "best_epoch": trained.best_epoch,
        "num_members": len(posteriors),
        "num_params": posteriors[0].num_params,
        "weight_decay": sorted(weight_decays),
        "prior_precision": [float(p.prior_precision) for p in posteriors],
        "sigma_noise": [float(p.sigma_noise) for p in posteriors],
        "fit_seconds": seconds,
        **metrics,
        f"prior_precision_by_{other}": [float(p.prior_precision) for p in others],
        f"laplace_by_{other}": other_metrics["laplace"],
    }


def print_report(result: dict[str, Any], workdir: str) -> None:
    """The MAP against the Laplace predictive, the tuned λ and where it all went."""
    other = "marglik" if result["tune"] == "val_nll" else "val_nll"
    lams = ", ".join(f"{v:.4g}" for v in result["prior_precision"])
    print(
        f"{workdir}: {result['structure']} Laplace over {result['subset']} "
        f"({result['num_params']} parameters, {result['num_members']} member(s)), fitted in "
        f"{result['fit_seconds']:.2f} s; λ = {lams} by {result['tune']}"
    )
    edges = (min(laplace.PRIOR_GRID), max(laplace.PRIOR_GRID))
    if any(np.isclose(v, edges, rtol=1e-9).any() for v in result["prior_precision"]):
        print(
            f"  λ is at the edge of the grid {edges[0]:g}..{edges[1]:g}: past it the "
            f"{result['tune']} may improve further"
        )
    rows = [
        ("MAP", result["map"]),
        ("Laplace", result["laplace"]),
        (f"Laplace, λ by {other}", result[f"laplace_by_{other}"]),
    ]
    keys = list(result["map"])
    print(f"  {'':<24}" + "".join(f"{k.removeprefix('test_'):>10}" for k in keys))
    for name, values in rows:
        print(f"  {name:<24}" + "".join(f"{values[k]:>10.4f}" for k in keys))
    other_lams = ", ".join(f"{v:.4g}" for v in result[f"prior_precision_by_{other}"])
    print(f"  {other} would pick λ = {other_lams}")
    if result["weight_decay"] == [0.0]:
        print(
            "  the run had no weight decay: its weights are no mode of a Gaussian prior, and "
            "the marginal likelihood's λ is then too small (an under-confident predictive)"
        )
    written = [laplace_run.LAPLACE_FILE] + (
        [laplace_run.RELIABILITY_FILE] if "test_ece" in result["map"] else []
    )
    print(f"written to {', '.join(os.path.join(workdir, f) for f in written)}")


if __name__ == "__main__":
    cli.run(main)
