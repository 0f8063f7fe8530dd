"""What a private step costs: a DP-SGD epoch against the plain one on the digits network.

    python -m experiments.bench_privacy                 # 200 interleaved rounds
    python -m experiments.bench_privacy --rounds=3      # a quick look

The digits run (64-128-10 tanh, softmax cross-entropy, adam) at batch size 64 on
its training split. Three epochs, each one `lax.scan` of the same ``N // 64`` steps, jitted
with donated state, timed call by call in interleaved rounds (`experiments.bench.host`):

* ``plain``: `jaxbp.training.make_epoch` of the plain step (`jaxbp.loss_and_grad`, 64 rows);
* ``clipped``: the same with per-example clipping (`jaxbp.per_example.make_clipped_grad_fn`);
* ``private``: `jaxbp.dp_sgd.make_private_epoch`: Poisson sampling at q = 64/N into
  ``B_max`` rows, clipping, noise on the sum (`jaxbp.dp_sgd.make_private_grad_fn`);

and two parts of the private epoch alone: ``sampling`` (`jaxbp.dp_sgd.epoch_batches`) and
``noise`` (the epoch's noise draws, `jaxbp.dp_sgd.noise_like` once per step).

Prints one JSON object: the best (minimum) and median milliseconds of an epoch and of a step,
and the private and clipped epochs over the plain one (the median of the per-round ratios,
and the ratio of the bests).
"""

import json
import statistics
import sys

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments.bench import digits, host
from jaxbp import dp_sgd, per_example, training

_ROUNDS = flags.DEFINE_integer("rounds", 200, "Interleaved timing rounds (at least 1).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Expected batch size: q = batch_size / N.")

CLIP_NORM = 1.0  # C: the clip and σ only scale numbers, not the work
NOISE_MULTIPLIER = 1.0


def epochs(batch_size: int) -> tuple[dict[str, host.Thunk], dp_sgd.PoissonSampler]:
    """The three epochs (plain, clipped, private) as thunks, each continuing its own state."""
    t = digits.run_training(batch_size=batch_size)
    n = len(t.x)
    sampler = dp_sgd.poisson_sampler(n, batch_size)
    grad_fns = {
        "plain": None,
        "clipped": per_example.make_clipped_grad_fn(t.model, t.loss, CLIP_NORM),
        "private": dp_sgd.make_private_grad_fn(
            t.model,
            t.loss,
            clip_norm=CLIP_NORM,
            noise_multiplier=NOISE_MULTIPLIER,
            expected_batch_size=sampler.expected_batch_size,
        ),
    }
    thunks = {}
    for name, grad_fn in grad_fns.items():
        step = training.make_train_step(
            t.model, t.loss, t.optimizer, grad_fn=grad_fn, grad_norm=False
        )
        if name == "private":
            epoch = dp_sgd.make_private_epoch(step, sampler, donate=True)
        else:
            epoch = training.make_epoch(step, batch_size, donate=True)
        thunks[name] = _continuing(epoch, t)
    # Two parts of the private epoch alone: its sampling, and its noise (one draw per step).
    key = jax.random.key(1)
    sampling = jax.jit(lambda k: dp_sgd.epoch_batches(sampler, k, 0))
    noise_keys = dp_sgd.step_keys(key, 0, sampler.steps_per_epoch)[1]
    noise = jax.jit(lambda ks: jax.lax.map(lambda k: dp_sgd.noise_like(k, t.params, 1.0), ks))
    thunks["sampling"] = lambda: sampling(key)
    thunks["noise"] = lambda: noise(noise_keys)
    return thunks, sampler


def _continuing(epoch, t: digits.Training) -> host.Thunk:
    state = [jax.tree.map(jnp.copy, t.params), t.optimizer.init(t.params)]
    key, calls = jax.random.key(1), [0]

    def run():
        state[0], state[1], metrics = epoch(*state, t.x, t.y, key, calls[0])
        calls[0] += 1
        return metrics

    return run


def measure(rounds: int, batch_size: int = 64) -> dict:
    """The figures `main` prints (module docstring)."""
    thunks, sampler = epochs(batch_size)
    jax.block_until_ready([run() for run in thunks.values()])  # compiles
    timings = host.time_interleaved(thunks, min_rounds=rounds, budget=0.0, warmup_calls=1)
    steps = sampler.steps_per_epoch
    best = {name: 1e3 * min(samples) for name, samples in timings.samples.items()}
    median = {name: 1e3 * statistics.median(s) for name, s in timings.samples.items()}
    return {
        "machine": host.describe(),
        "num_examples": sampler.num_examples,
        "sampling_rate": sampler.sampling_rate,
        "batch_max": sampler.batch_max,
        "steps_per_epoch": steps,
        "rounds": timings.rounds,
        "best_epoch_ms": best,
        "median_epoch_ms": median,
        "best_step_ms": {name: ms / steps for name, ms in best.items()},
        "private_over_plain": timings.ratio("private", "plain"),
        "clipped_over_plain": timings.ratio("clipped", "plain"),
        "private_over_plain_best": best["private"] / best["plain"],
    }


def main(argv: list[str]) -> int:
    del argv
    if _ROUNDS.value < 1:
        sys.exit(f"--rounds must be at least 1, got {_ROUNDS.value}.")
    print(json.dumps(measure(_ROUNDS.value, _BATCH.value), indent=1))
    return 0


if __name__ == "__main__":
    app.run(main)
