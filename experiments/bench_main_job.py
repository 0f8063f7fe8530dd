"""Time to result of the main job, against a script that fits one scikit-learn MLP.

    python -m experiments.bench_main_job                       # 5 interleaved rounds
    python -m experiments.bench_main_job --rounds=9 --output=main_job.json
    python -m experiments.bench_main_job --repeats=32          # a member set against 32 fits

Every round runs three processes, each timed from its start to its exit:

- ``./launch.sh --workdir=W`` (the main job: digits, defaults) with the compilation cache
  warm (a folder that an earlier run of the same shapes filled);
- the same on a first run: an empty cache folder, so every program compiles;
- ``python experiments/bench_main_job.py --role=sklearn`` (by its path, so without the
  jax import of the ``experiments`` package): what a scikit-learn user runs instead: load
  digits with ``sklearn.datasets``, split it, standardise it, fit one ``MLPClassifier`` of
  the same recipe (one hidden layer of 128 tanh units, adam 3e-3, batch 32, 30 epochs, no
  L2, no early stop) and score it.

With ``--repeats=N`` the job is ``./launch.sh train --dataset=digits --repeats=N`` (N members
in one program) and the scikit-learn script fits N classifiers one after another, seeded
0..N-1, in one process (what a user who wants N seeds runs instead).

The rounds interleave the three, so a busy spell on a shared machine slows all of them;
the report gives the medians, the ratios to scikit-learn and, from the main job's
summary.json (``phase_seconds``), where its time goes; "start" is the rest of the wall
time: the interpreter, the imports, the flags and the exit. Each jaxbp run writes a fresh
workdir.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

from absl import app, flags

_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds; medians are reported.")
_ROLE = flags.DEFINE_enum(
    "role", "bench", ["bench", "sklearn"], "bench: time the three; sklearn: the baseline fit."
)
_OUTPUT = flags.DEFINE_string("output", None, "Also write the figures as JSON here.")
_REPEATS = flags.DEFINE_integer(
    "repeats", 1, "Members of the jaxbp run, and scikit-learn fits of the baseline.", lower_bound=1
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = {"hidden": 128, "learning_rate": 3e-3, "batch_size": 32, "epochs": 30}


def fit_sklearn(seed: int = 0) -> float:
    """The scikit-learn script: load, split, standardise, fit, score; returns the accuracy."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    scaler = StandardScaler().fit(x_train)
    classifier = MLPClassifier(
        hidden_layer_sizes=(RECIPE["hidden"],),
        activation="tanh",
        solver="adam",
        alpha=0.0,
        batch_size=RECIPE["batch_size"],
        learning_rate_init=RECIPE["learning_rate"],
        max_iter=RECIPE["epochs"],
        random_state=seed,
        tol=0.0,
        n_iter_no_change=RECIPE["epochs"] + 1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 30 epochs is the recipe
        classifier.fit(scaler.transform(x_train), y_train)
    return float(classifier.score(scaler.transform(x_test), y_test))


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of ``command`` from start to exit; raises if it fails."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return seconds


def jaxbp_job(workdir: str, cache: str, repeats: int) -> list[str]:
    """The main job, or with ``repeats`` > 1 the digits member set of that size."""
    members = [] if repeats == 1 else ["train", "--dataset=digits", f"--repeats={repeats}"]
    return ["./launch.sh", *members, f"--workdir={workdir}", f"--compilation_cache_dir={cache}"]


def bench(rounds: int, repeats: int = 1) -> dict:
    """Medians over ``rounds`` interleaved rounds of the three processes, with phases."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    # By path, not `-m experiments...`: the package's __init__ imports jax (its extras
    # check), which a scikit-learn script would not pay.
    sklearn = [sys.executable, os.path.abspath(__file__), "--role=sklearn", f"--repeats={repeats}"]

    def main_job(workdir: str, cache: str) -> list[str]:
        return jaxbp_job(workdir, cache, repeats)

    times: dict[str, list[float]] = {"warm": [], "first": [], "sklearn": []}
    phases: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as scratch:
        warm_cache = os.path.join(scratch, "cache-warm")
        timed(main_job(os.path.join(scratch, "fill"), warm_cache), env)  # fills the cache
        for r in range(rounds):
            warm = os.path.join(scratch, f"warm-{r}")
            times["warm"].append(timed(main_job(warm, warm_cache), env))
            cold = os.path.join(scratch, f"cache-first-{r}")
            times["first"].append(timed(main_job(os.path.join(scratch, f"first-{r}"), cold), env))
            times["sklearn"].append(timed(sklearn, env))
            with open(os.path.join(warm, "summary.json")) as f:
                phases.append(json.load(f)["phase_seconds"])
            print(
                f"round {r + 1}/{rounds}: jaxbp warm {times['warm'][-1]:.2f} s, first run "
                f"{times['first'][-1]:.2f} s, scikit-learn {times['sklearn'][-1]:.2f} s",
                flush=True,
            )
    medians = {k: statistics.median(v) for k, v in times.items()}
    phase_medians = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    return {
        "rounds": rounds,
        "repeats": repeats,
        "seconds": times,
        "median_seconds": medians,
        "warm_vs_sklearn": medians["warm"] / medians["sklearn"],
        "first_vs_sklearn": medians["first"] / medians["sklearn"],
        "warm_phase_seconds": phase_medians,
        # the rest of the process: interpreter start, imports, flags, the lock, exit
        "warm_start_seconds": medians["warm"] - sum(phase_medians.values()),
    }


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"bench_main_job.py: unexpected arguments {argv[1:]}.", file=sys.stderr)
        return 2
    if _ROLE.value == "sklearn":
        accuracies = [fit_sklearn(seed) for seed in range(_REPEATS.value)]
        print(f"{len(accuracies)} fit(s), test accuracy {100 * statistics.mean(accuracies):.2f}%")
        return 0
    result = bench(_ROUNDS.value, _REPEATS.value)
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            json.dump(result, f, indent=2)
    m = result["median_seconds"]
    job = "main job" if result["repeats"] == 1 else f"{result['repeats']} members"
    print(
        f"\nmedians of {result['rounds']} rounds: jaxbp {job} {m['warm']:.2f} s with the "
        f"compilation cache warm ({result['warm_vs_sklearn']:.2f}x scikit-learn), "
        f"{m['first']:.2f} s on a first run ({result['first_vs_sklearn']:.2f}x); "
        f"scikit-learn script ({result['repeats']} fit(s)) {m['sklearn']:.2f} s"
    )
    print(f"where the warm {job}'s time goes (median seconds):")
    print(f"  {'start':<12} {result['warm_start_seconds']:6.2f}  (python, imports, flags, exit)")
    for name, seconds in result["warm_phase_seconds"].items():
        print(f"  {name:<12} {seconds:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
