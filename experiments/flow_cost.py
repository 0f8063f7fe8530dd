"""What the run's per-evaluation gradient flow costs, against one training epoch.

    python -m experiments.flow_cost            # digits, the run's default network

Times, on the training split of the data set, one compiled epoch, the evaluation the
trainer runs without the gradient flow (loss, accuracy, ‖∇L‖) and with it
(`jaxbp.gradient_flow` on `jaxbp.run.programs.FLOW_ROWS` rows), as medians of interleaved calls.
"""

import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags

from jaxbp import gradient_flow, training
from jaxbp.run import config as config_lib
from jaxbp.run import programs, recipe

_DATASET = flags.DEFINE_string("dataset", "digits", "Data set whose default run is timed.")
_ROUNDS = flags.DEFINE_integer("rounds", 50, "Interleaved timing rounds.")


def main(argv: list[str]) -> int:
    del argv
    config = config_lib.make_config(_DATASET.value)
    data = recipe.load_data(config)
    model = recipe.build_model(config, data)
    _, loss = config_lib.resolve_head(config, data.task, data.num_outputs)
    steps = training.batches_per_epoch(len(data.x_train), config.batch_size)
    optimizer = recipe.build_optimizer(config, steps)
    state = recipe.initial_state(config, model, optimizer)
    step = training.make_train_step(model, loss, optimizer, grad_norm=False)
    epoch = training.make_epoch(step, config.batch_size)
    loss_and_grad = training.make_loss_and_grad(model, loss)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    rows = min(len(x), programs.FLOW_ROWS)

    @jax.jit
    def plain(params):
        metrics = training.split_metrics(model, loss, params, x, y, data.task)
        metrics["grad_norm"] = optax.tree.norm(loss_and_grad(params, x, y)[1])
        return metrics

    @jax.jit
    def with_flow(params):
        return {**plain(params), **gradient_flow(model, loss, params, x[:rows], y[:rows])}

    calls = {
        "epoch": lambda: epoch(state.params, state.opt_state, x, y, state.key, 1),
        "evaluation": lambda: plain(state.params),
        "evaluation + flow": lambda: with_flow(state.params),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(3):
        for call in calls.values():
            jax.block_until_ready(call())
    for _ in range(_ROUNDS.value):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    for name, ms in median.items():
        print(f"{name:<18} {ms:8.3f} ms")
    flow_ms = median["evaluation + flow"] - median["evaluation"]
    print(f"gradient flow: {flow_ms:.3f} ms, {flow_ms / median['epoch']:.1%} of an epoch")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
