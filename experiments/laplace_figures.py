"""The Laplace figures of the README and docs/derivations.md, measured on trained workdirs.

    python -m experiments.laplace_figures --digits=W [--overtrained=W2] [--moons=W3,W4]
        [--bench=W]

For each digits workdir: the MAP against every posterior structure and subset, each with λ
tuned on the validation NLL and on the marginal likelihood (test accuracy, NLL, ECE with 15
bins, the tuned λ, the fit's seconds), and out of distribution (for the default last-layer
kron posterior tuned on the validation NLL) the mean confidence on 1,000 uniform-noise
images and the AUROC of the top probability between the test digits and the noise. For each
moons workdir: the MAP and that default posterior's test NLL and mean confidence on 1,000
points on circles of radius 5, 20 and 100 around the data's centre (raw units). With
``--bench``: each posterior's fit time against one training epoch of the same net, and with
``--compare_laplax`` laplax's diagonal GGN on the same net and data, timed and compared. Prints
markdown tables; trains nothing (docs/derivations.md gives the training commands).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from experiments import laplace_run
from jaxbp import laplace
from jaxbp.run import inference

_DIGITS = flags.DEFINE_list("digits", [], "Digits workdirs: structures, tunings and noise.")
_OVERTRAINED = flags.DEFINE_list("overtrained", [], "Digits workdirs: structures and tunings.")
_MOONS = flags.DEFINE_list("moons", [], "Moons workdirs: confidence far from the data.")
_BENCH = flags.DEFINE_list("bench", [], "Workdirs: each fit's time against a training epoch.")
_COMPARE_LAPLAX = flags.DEFINE_boolean(
    "compare_laplax",
    False,
    "With --bench: laplax's diagonal GGN on the same net and training split, timed beside the "
    "diag fit and compared with it (where laplax is installed: pip install .[laplax]).",
)
_REPEATS = 7  # timings: the median of this many calls after a compiling one

# (structure, subset): "full" over all 9,610 digits parameters is past laplace.MAX_FULL_PARAMS.
POSTERIORS = (
    ("kron", "last_layer"),
    ("full", "last_layer"),
    ("diag", "last_layer"),
    ("kron", "all"),
    ("diag", "all"),
)
NUM_NOISE = 1000  # uniform-noise images, and points per circle
RADII = (5.0, 20.0, 100.0)


def _fit(trained: Any, dataset: Any, structure: str, subset: str) -> tuple[Any, Any, float]:
    """The single run's posterior tuned by the validation NLL and by marglik, and the seconds
    of the fit itself."""
    (params,) = laplace_run.members(trained)
    x, y = (jnp.asarray(v, jnp.float64) for v in (dataset.x_train, dataset.y_train))
    start = time.perf_counter()
    posterior = laplace.fit(
        trained.model, trained.loss, params, x, y, structure=structure, subset=subset
    )
    jax.block_until_ready(posterior.factors)
    seconds = time.perf_counter() - start
    by_val = laplace.optimize_prior(
        posterior, method="val_nll", x_val=dataset.x_val, y_val=dataset.y_val
    )
    return by_val, laplace.optimize_prior(posterior, method="marglik"), seconds


def _row(name: str, metrics: dict[str, float], lam: str, seconds: str) -> str:
    return (
        f"| {name} | {100 * metrics['test_accuracy']:.2f}% | {metrics['test_nll']:.4f} | "
        f"{metrics['test_ece']:.4f} | {lam} | {seconds} |"
    )


def structures(workdir: str) -> Any:
    """Prints the structures × tunings table; returns the default posterior (kron, last
    layer, λ by validation NLL) with its run and data."""
    trained, dataset = laplace_run.load_run(workdir)
    labels = inference.class_indices(np.asarray(dataset.y_test))
    with jax.enable_x64(True):
        (map_outputs,) = laplace_run.map_outputs(trained, dataset.x_test)
        map_probs = laplace_run.class_probabilities(map_outputs)
        print(f"\n{workdir} (best epoch {trained.best_epoch}), test split of {len(labels)}\n")
        print("| predictive | accuracy | NLL | ECE | λ | fit s, compiling |")
        print("|---|---|---|---|---|---|")
        print(_row("MAP", laplace_run.class_metrics(map_probs, labels), "", ""))
        default = None
        for structure, subset in POSTERIORS:
            by_val, by_marglik, seconds = _fit(trained, dataset, structure, subset)
            default = default or by_val
            for tune, posterior in (("val_nll", by_val), ("marglik", by_marglik)):
                probs = laplace_run.mixture([posterior], dataset.x_test)
                metrics = laplace_run.class_metrics(probs, labels)
                name = f"{structure}, {subset}, λ by {tune}"
                lam = f"{float(posterior.prior_precision):.4g}"
                print(_row(name, metrics, lam, f"{seconds:.2f}" if tune == "val_nll" else ""))
    return trained, dataset, default, map_probs


def noise(trained: Any, dataset: Any, posterior: Any, map_probs: np.ndarray) -> None:
    """Mean confidence on uniform-noise images (in the raw pixel range) and the AUROC of the
    top probability, test digits against noise."""
    from sklearn.metrics import roc_auc_score

    pre = trained.preprocessing
    # The raw pixel range, rounded: the standardisation's round trip leaves ~1e-6 off.
    low = float(np.round(np.min(dataset.x_train * pre["x_scale"] + pre["x_mean"]), 4)) + 0.0
    high = float(np.round(np.max(dataset.x_train * pre["x_scale"] + pre["x_mean"]), 4))
    rng = np.random.default_rng(0)
    raw = rng.uniform(low, high, (NUM_NOISE, dataset.x_train.shape[1]))
    x_noise = (raw - np.asarray(pre["x_mean"])) / np.asarray(pre["x_scale"])
    with jax.enable_x64(True):
        (map_noise,) = laplace_run.map_outputs(trained, x_noise)
        pairs = {
            "MAP": (map_probs, laplace_run.class_probabilities(map_noise)),
            "Laplace (kron, last layer, λ by val_nll)": (
                laplace_run.mixture([posterior], dataset.x_test),
                laplace_run.mixture([posterior], x_noise),
            ),
        }
    print(f"\nuniform noise in [{low:g}, {high:g}], {NUM_NOISE} images\n")
    print("| predictive | mean confidence on noise | AUROC digits vs noise |\n|---|---|---|")
    for name, (digits, noise_probs) in pairs.items():
        scores = np.concatenate([digits.max(axis=1), noise_probs.max(axis=1)])
        truth = np.concatenate([np.ones(len(digits)), np.zeros(len(noise_probs))])
        print(
            f"| {name} | {noise_probs.max(axis=1).mean():.4f} | "
            f"{roc_auc_score(truth, scores):.4f} |"
        )


def far_away(workdir: str) -> None:
    """Moons: test NLL and mean confidence on circles far from the data, MAP and Laplace."""
    trained, dataset = laplace_run.load_run(workdir)
    pre = trained.preprocessing
    labels = inference.class_indices(np.asarray(dataset.y_test))
    angles = np.linspace(0, 2 * np.pi, NUM_NOISE, endpoint=False)
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    with jax.enable_x64(True):
        by_val, by_marglik, _ = _fit(trained, dataset, "kron", "last_layer")
        rows = []
        for name, predict in (
            (
                "MAP",
                lambda x: laplace_run.class_probabilities(laplace_run.map_outputs(trained, x)[0]),
            ),
            ("Laplace, λ by val_nll", lambda x: laplace_run.mixture([by_val], x)),
            ("Laplace, λ by marglik", lambda x: laplace_run.mixture([by_marglik], x)),
        ):
            nll = laplace_run.class_metrics(predict(dataset.x_test), labels)["test_nll"]
            far = [
                predict(r * circle / np.asarray(pre["x_scale"])).max(1).mean()  # raw centre + r·u
                for r in RADII
            ]
            rows.append((name, nll, far))
    lams = f"λ by val_nll {float(by_val.prior_precision):.4g}, by marglik "
    lams += f"{float(by_marglik.prior_precision):.4g}"
    print(f"\n{workdir} (weight decay {trained.config.weight_decay:g}; {lams})\n")
    radii = " | ".join(f"conf. r={r:g}" for r in RADII)
    print(f"| predictive | test NLL | {radii} |\n|---|---|" + "---|" * len(RADII))
    for name, nll, far in rows:
        print(f"| {name} | {nll:.4f} | " + " | ".join(f"{c:.4f}" for c in far) + " |")


def _median_seconds(fn: Any) -> float:
    """The median wall time of ``fn()`` (its result blocked on) after one compiling call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(_REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench(workdir: str) -> None:
    """Each posterior's fit (float64, whole training split, compiled) against one training
    epoch of the run's own step (its precision, batch size and optimizer family: adam)."""
    import optax

    from jaxbp import training as train

    trained, dataset = laplace_run.load_run(workdir)
    config, model = trained.config, trained.model
    params = jax.tree.map(lambda leaf: jnp.asarray(leaf[0]), trained.params)  # member 0
    step = train.make_train_step(model, trained.loss, optax.adam(config.learning_rate))
    epoch = train.make_epoch(step, config.batch_size)
    x, y = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    state = optax.adam(config.learning_rate).init(params)
    key = jax.random.key(0)
    epoch_s = _median_seconds(lambda: epoch(params, state, x, y, key, 0)[0])
    print(f"\n{workdir}: {len(x)} training rows, sizes {model.sizes}\n")
    print("| work | time (ms) | × one epoch |\n|---|---|---|")
    print(f"| one training epoch (batch {config.batch_size}) | {1e3 * epoch_s:.2f} | 1 |")
    with jax.enable_x64(True):
        (params64,) = laplace_run.members(trained)
        x64, y64 = (jnp.asarray(v, jnp.float64) for v in (dataset.x_train, dataset.y_train))
        for structure, subset in POSTERIORS:
            seconds = _median_seconds(
                lambda s=structure, u=subset: (
                    laplace.fit(
                        model, trained.loss, params64, x64, y64, structure=s, subset=u
                    ).factors
                )
            )
            print(
                f"| fit {structure}, {subset} (float64) | {1e3 * seconds:.2f} | "
                f"{seconds / epoch_s:.1f} |"
            )
        if _COMPARE_LAPLAX.value:
            compare_laplax(model, trained.loss, params64, x64, y64, epoch_s)


def compare_laplax(model: Any, loss: str, params: Any, x: Any, y: Any, epoch_s: float) -> None:
    """laplax's diagonal GGN of the whole training split beside the diag fit's (float64):
    one call each after a compiling one, and the largest relative difference."""
    from experiments import bench_curvature

    laplax_fn = bench_curvature.laplax_function(model, loss)
    if laplax_fn is None:
        print(f"\n{bench_curvature.LAPLAX_MISSING}")
        return
    n = x.shape[0]

    def ours():  # the diag fit's GGN of the summed loss, per layer (n_k, m_k): [W | b]
        return laplace.fit(model, loss, params, x, y, structure="diag").factors

    def theirs():  # the mean loss's diagonal, times N: the summed loss's, like the fit's
        return jax.tree.map(lambda leaf: n * leaf, jax.jit(laplax_fn)(params, x, y))

    timings = {}
    for name, fn in (("jaxbp", ours), ("laplax", theirs)):
        jax.block_until_ready(fn())  # compiles
        start = time.perf_counter()
        result = jax.block_until_ready(fn())
        timings[name] = (time.perf_counter() - start, result)
    (ours_s, factors), (theirs_s, diag) = timings["jaxbp"], timings["laplax"]
    worst = 0.0
    for layer, block in zip(diag, factors, strict=True):
        laplax_block = np.column_stack([layer["W"], layer["b"]]) if "b" in layer else layer["W"]
        block = np.asarray(block)
        scale = np.max(np.abs(block))
        worst = max(worst, float(np.max(np.abs(laplax_block - block)) / scale))
    print(
        f"| laplax diagonal GGN (float64, {n} rows) | {1e3 * theirs_s:.2f} | "
        f"{theirs_s / epoch_s:.1f} |\n\nlaplax over the jaxbp diag fit: "
        f"{theirs_s / ours_s:.0f}×; largest difference {worst:.1e} of the largest entry"
    )


def main(argv: list[str]) -> int:
    logging.set_verbosity(logging.WARNING)
    del argv
    for workdir in _DIGITS.value:
        trained, dataset, default, map_probs = structures(workdir)
        noise(trained, dataset, default, map_probs)
    for workdir in _OVERTRAINED.value:
        structures(workdir)
    for workdir in _MOONS.value:
        far_away(workdir)
    for workdir in _BENCH.value:
        bench(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
