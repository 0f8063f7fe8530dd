"""The vanishing gradient that the δ recursion predicts, measured layer by layer on digits.

Eq. (3.6) of docs/derivations.md sends the error down one layer as
δ^[k] = ((W^[k+1])ᵀ δ^[k+1]) ∘ g'(z^[k]): each layer multiplies it by g'. For the sigmoid
g' = σ(1 − σ) ≤ 1/4, so with weights of order one ‖δ^[k]‖ falls by a factor of about 4 or
more per layer; tanh' ≤ 1 (and = 1 only at 0) loses less; relu' is 0 or 1 and, with He
initialisation, keeps the norm roughly level.

For every hidden activation and depth the script trains an MLP on digits and records, at
initialisation and after training, `jaxbp.gradient_flow`'s mean ‖δ_i^[k]‖ per layer on a
fixed batch of training examples, with the mean g'(z^[k]) of each hidden layer from
`jaxbp.trace`. It writes ``vanishing.png`` (one panel per activation and time) and
``vanishing.md`` (the tables) to ``--outdir``.

python -m experiments.vanishing                  # depths 2-10, ~minutes, to runs/vanishing-TIME
python -m experiments.vanishing --outdir=/tmp/vanishing --quick   # depths 2, 4; one epoch
"""

import os
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import jaxbp
from jaxbp import activations, data, training
from jaxbp.run import config

ACTIVATIONS = ("sigmoid", "tanh", "relu")


def define_flags() -> None:
    """The command line's flags, defined when the script runs (not on import), so that tests
    can import this module beside other experiments that define ``--seed`` or ``--outdir``."""
    flags.DEFINE_string(
        "outdir", None, "Folder for vanishing.png and vanishing.md. Unset: runs/vanishing-TIME."
    )
    flags.DEFINE_list(
        "depths", [str(d) for d in range(2, 11)], "Weight layers L: 2 is one hidden layer."
    )
    flags.DEFINE_list("activations", list(ACTIVATIONS), "Hidden activations g.")
    flags.DEFINE_integer("width", 32, "Units per hidden layer: digits needs few.")
    flags.DEFINE_integer("epochs", 10, "Epochs per network: digits is learnt by then.")
    flags.DEFINE_integer("probe_size", 256, "Training examples the norms are averaged on.")
    flags.DEFINE_integer("seed", 0, "Random seed of the initial weights and the order.")
    flags.DEFINE_bool("quick", False, "Depths 2 and 4, one epoch: a smoke run.")


class Run(NamedTuple):
    """One network's measurements.

    Attributes:
      activation, depth: the hidden g and the number of weight layers L.
      delta_init, delta_trained: ``(L,)`` mean ‖δ_i^[k]‖ for k = 1..L.
      g_prime_init: ``(L − 1,)`` mean g'(z^[k]) over the hidden units and probe examples.
      test_accuracy: after training.
    """

    activation: str
    depth: int
    delta_init: np.ndarray
    delta_trained: np.ndarray
    g_prime_init: np.ndarray
    test_accuracy: float


def _delta_norms(model, loss, params, x, y) -> np.ndarray:
    flow = jaxbp.gradient_flow(model, loss, params, x, y)
    return np.array([float(flow[f"delta_norm/{k}"]) for k in range(1, model.num_layers + 1)])


def _mean_g_prime(model, loss, params, x, y) -> np.ndarray:
    g_prime = activations.ACTIVATIONS[model.activation].derivative_from_output
    layers = jaxbp.trace(model, loss, params, x, y)[:-1]
    return np.array([float(jnp.mean(g_prime(layer.a))) for layer in layers])


def run_one(ds, activation: str, depth: int, width: int, epochs: int, probe: int, seed: int):
    """Trains one network with the digits defaults of `jaxbp.run.config` and measures it."""
    cfg = config.make_config(
        "digits", hidden_sizes=(width,) * (depth - 1), activation=activation, epochs=epochs
    )
    model = jaxbp.MLP((ds.num_features, *cfg.hidden_sizes, ds.num_outputs), activation, "softmax")
    loss = "softmax_cross_entropy"
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    x_probe, y_probe = x[:probe], y[:probe]
    k_init, k_order = jax.random.split(jax.random.key(seed))
    params = jaxbp.init_params(k_init, model)  # Glorot for sigmoid and tanh, He for relu
    delta_init = _delta_norms(model, loss, params, x_probe, y_probe)
    g_prime_init = _mean_g_prime(model, loss, params, x_probe, y_probe)
    steps = epochs * training.batches_per_epoch(len(x), cfg.batch_size)
    schedule = training.make_schedule(cfg.learning_rate, cfg.schedule, total_steps=steps)
    optimizer = training.make_optimizer(cfg.optimizer, schedule)
    step = training.make_train_step(model, loss, optimizer, grad_norm=False)
    epoch = training.make_epoch(step, cfg.batch_size)
    opt_state = optimizer.init(params)
    for e in range(epochs):
        params, opt_state, _ = epoch(params, opt_state, x, y, k_order, e)
    delta_trained = _delta_norms(model, loss, params, x_probe, y_probe)
    metrics = training.split_metrics(
        model, loss, params, jnp.asarray(ds.x_test), jnp.asarray(ds.y_test), ds.task
    )
    accuracy = float(metrics["accuracy"])
    return Run(activation, depth, delta_init, delta_trained, g_prime_init, accuracy)


def per_layer_factor(norms: np.ndarray) -> float:
    """Geometric mean over the hidden layers of ‖δ^[k]‖ / ‖δ^[k+1]‖ (nan for L = 1)."""
    if len(norms) < 2:
        return float("nan")
    return float(np.exp(np.mean(np.log(norms[:-1] / norms[1:]))))


def markdown(runs: list[Run], command: str) -> str:
    """The summary table, then every layer's mean ‖δ^[k]‖ of the deepest networks."""
    lines = [
        f"Made by `{command}`.",
        "",
        "Mean ‖δ_i^[k]‖ over the probe examples (each example's own δ, `jaxbp.gradient_flow`); "
        "factor: the geometric mean of ‖δ^[k]‖/‖δ^[k+1]‖ over the layers; mean g': the mean "
        "of g'(z^[k]) over the hidden units at initialisation.",
        "",
        "| g | L | ‖δ^[1]‖/‖δ^[L]‖ init | factor per layer, init | mean g', init | "
        "factor per layer, trained | test accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        mean_g = f"{np.mean(r.g_prime_init):.3f}" if len(r.g_prime_init) else "—"
        lines.append(
            f"| {r.activation} | {r.depth} | {r.delta_init[0] / r.delta_init[-1]:.2e} | "
            f"{per_layer_factor(r.delta_init):.3f} | {mean_g} | "
            f"{per_layer_factor(r.delta_trained):.3f} | {r.test_accuracy:.1%} |"
        )
    deepest = max(r.depth for r in runs)
    lines += [
        "",
        f"Every layer, L = {deepest}: mean ‖δ^[k]‖ at initialisation → after training.",
        "",
        "| g | " + " | ".join(f"k = {k}" for k in range(1, deepest + 1)) + " |",
        "|---|" + "---|" * deepest,
    ]
    for r in runs:
        if r.depth == deepest:
            cells = [
                f"{a:.1e} → {b:.1e}" for a, b in zip(r.delta_init, r.delta_trained, strict=True)
            ]
            lines.append(f"| {r.activation} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: list[Run], path: str) -> None:
    """Mean ‖δ^[k]‖ against k, one line per depth; columns: activations, rows: init, trained."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r.activation for r in runs))
    depths = sorted({r.depth for r in runs})
    fig, axes = plt.subplots(
        2, len(names), figsize=(3.2 * len(names), 5.2), sharey=True, squeeze=False
    )
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(depths)))
    for col, name in enumerate(names):
        for row, (field, when) in enumerate(
            (("delta_init", "at initialisation"), ("delta_trained", "after training"))
        ):
            ax = axes[row, col]
            for r in runs:
                if r.activation == name:
                    norms = getattr(r, field)
                    colour = colours[depths.index(r.depth)]
                    ax.semilogy(range(1, r.depth + 1), norms, "o-", ms=3, color=colour)
            if name == "sigmoid" and row == 0:
                # The bound of eq. (3.6) with σ' ≤ 1/4: a factor 4 per layer down from δ^[L].
                deepest = max((r for r in runs if r.activation == name), key=lambda r: r.depth)
                top = max(depths)
                ks = np.arange(1, top + 1)
                reference = deepest.delta_init[-1] * 0.25 ** (top - ks)
                ax.semilogy(ks, reference, "--", color="grey", lw=1, label="× 1/4 per layer")
                ax.legend(fontsize=7, frameon=False, loc="lower right")
            ax.set_title(f"{name}, {when}", fontsize=9)
            ax.set_xlabel("layer k", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, which="major", alpha=0.3)
        axes[0, col].set_xticks(range(1, max(depths) + 1))
        axes[1, col].set_xticks(range(1, max(depths) + 1))
    axes[0, 0].set_ylabel("mean over examples of ‖δ_i‖", fontsize=8)
    axes[1, 0].set_ylabel("mean over examples of ‖δ_i‖", fontsize=8)
    handles = [
        plt.Line2D([], [], color=colours[i], marker="o", ms=3, label=f"L = {d}")
        for i, d in enumerate(depths)
    ]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_all(
    outdir: str,
    depths: list[int],
    names: list[str],
    *,
    width: int = 32,
    epochs: int = 10,
    probe_size: int = 256,
    seed: int = 0,
    command: str = "./launch.sh vanishing",
) -> list[Run]:
    """Trains and measures every (activation, depth), writes the figure and the tables."""
    unknown = sorted(set(names) - set(activations.HIDDEN_ACTIVATIONS))
    if unknown or not depths or min(depths) < 1:
        raise ValueError(
            f"activations must be among {', '.join(activations.HIDDEN_ACTIVATIONS)} and depths "
            f"positive ints, got {names} and {depths}."
        )
    ds = data.load_dataset("digits", seed=0)
    runs = []
    for name in names:
        for depth in depths:
            run = run_one(ds, name, depth, width, epochs, probe_size, seed)
            print(
                f"{name:8s} L = {depth:2d}: ‖δ^[1]‖/‖δ^[L]‖ = "
                f"{run.delta_init[0] / run.delta_init[-1]:.2e} at init, "
                f"{run.delta_trained[0] / run.delta_trained[-1]:.2e} trained; "
                f"test accuracy {run.test_accuracy:.1%}",
                flush=True,
            )
            runs.append(run)
    os.makedirs(outdir, exist_ok=True)
    table = markdown(runs, command)
    with open(os.path.join(outdir, "vanishing.md"), "w") as f:
        f.write(table)
    plot(runs, os.path.join(outdir, "vanishing.png"))
    print(table)
    print(f"wrote {outdir}/vanishing.png and vanishing.md")
    return runs


def main(argv: list[str]) -> int:
    del argv  # no positional arguments
    FLAGS = flags.FLAGS
    quick = FLAGS.quick
    try:
        run_all(
            FLAGS.outdir or os.path.join("runs", f"vanishing-{time.strftime('%Y%m%d-%H%M%S')}"),
            [2, 4] if quick else [int(d) for d in FLAGS.depths],
            list(FLAGS.activations),
            width=FLAGS.width,
            epochs=1 if quick else FLAGS.epochs,
            probe_size=FLAGS.probe_size,
            seed=FLAGS.seed,
            # absl hands main the arguments left after the flags: the flags are in sys.argv.
            command=" ".join(["./launch.sh vanishing", *sys.argv[1:]]),
        )
    except ValueError as e:
        print(f"vanishing: {e} (--activations, --depths)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    define_flags()
    sys.exit(app.run(main))
