"""The digits epoch: one epoch compiled with `lax.scan` against the same training in PyTorch.

The trainer's run (`jaxbp.config.make_config("digits")`: its network, loss, optimizer and
learning-rate schedule, built by `jaxbp.recipe`) on the digits training split, and the same
with other hidden widths. Every epoch shuffles (`jaxbp.shuffle.permutation` in JAX,
``torch.randperm`` in PyTorch) and runs the same steps. JAX builds and calls the step and the
epoch as the trainer does (no gradient norm, donated state), each epoch continuing from the
state the last one returned, as PyTorch's training does in place. One child process per CPU
count (`host.run_child`), since XLA:CPU sizes its thread pool once; JAX and PyTorch are
interleaved in the same rounds.
"""

import dataclasses
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxbp
from experiments.bench import host, torch_side
from experiments.bench.config import BenchConfig
from experiments.bench.jax_side import python_loop_epoch
from experiments.bench.timing import Thunk, time_interleaved
from jaxbp import config as config_lib
from jaxbp import recipe, shuffle, train
from jaxbp.mlp import MLP


class Training(NamedTuple):
    """The trainer's training of one digits network, ready to time."""

    config: config_lib.Config
    model: MLP
    loss: str
    optimizer: optax.GradientTransformation
    params: jaxbp.Params
    x: jax.Array  # (examples, features): the training split
    y: jax.Array  # (examples, classes), one-hot


def trainer_training(hidden_sizes: tuple[int, ...] | None = None) -> Training:
    """The trainer's digits run (`jaxbp.config.make_config`), or the same with other hidden
    widths: its data, network, loss and optimizer (with its learning-rate schedule)."""
    config = config_lib.make_config("digits")
    if hidden_sizes is not None:
        config = dataclasses.replace(config, hidden_sizes=hidden_sizes)
    dataset = recipe.load_data(config)
    model = recipe.build_model(config, dataset)
    _, loss = config_lib.resolve_head(config, dataset.task, dataset.num_outputs)
    optimizer = recipe.build_optimizer(config, len(dataset.x_train) // config.batch_size)
    params = jaxbp.init_params(jax.random.key(config.seed), model)
    x, y = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    return Training(config, model, loss, optimizer, params, x, y)


def scan_epoch(t: Training, *, grad_norm: bool = False, donate: bool = True) -> Thunk:
    """An epoch as the trainer runs it, each call continuing from the state of the last."""
    step = train.make_train_step(t.model, t.loss, t.optimizer, grad_norm=grad_norm)
    epoch = train.make_epoch(step, t.config.batch_size, donate=donate)
    state = [jax.tree.map(jnp.copy, t.params), t.optimizer.init(t.params)]
    key = jax.random.key(1)

    def run():
        state[0], state[1], metrics = epoch(*state, t.x, t.y, key, 0)
        return metrics

    return run


def torch_epoch(torch, t: Training) -> Thunk:
    """The same epoch in PyTorch eager: randperm, then per batch zero_grad, backward, step and
    the learning-rate schedule's step."""
    config, batch_size = t.config, t.config.batch_size
    if config.optimizer != "adam" or config.weight_decay or config.schedule not in SCHEDULES:
        raise NotImplementedError(
            f"the PyTorch digits epoch has adam with a {' or '.join(SCHEDULES)} schedule and no "
            f"weight decay; the trainer's config has {config.optimizer}, {config.schedule}, "
            f"weight_decay={config.weight_decay}: add it to torch_epoch."
        )
    net = torch_side.torch_mlp(torch, t.model, t.params, "float32", fused_output=True)
    x, y = torch.from_numpy(np.array(t.x)), torch.from_numpy(np.array(t.y))
    loss_fn = torch_side.torch_loss(torch, t.loss)
    num_batches = len(x) // batch_size
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    schedule = SCHEDULES[config.schedule](torch, optimizer, config.epochs * num_batches)

    def run():
        order = torch.randperm(len(x))[: num_batches * batch_size]
        for idx in order.view(num_batches, batch_size):
            optimizer.zero_grad()
            loss_fn(net(x[idx]), y[idx]).backward()
            optimizer.step()
            schedule.step()

    return run


# The trainer's schedules in PyTorch: (torch, optimizer, total steps) -> a scheduler.
SCHEDULES = {
    "constant": lambda torch, opt, steps: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
    "cosine": lambda torch, opt, steps: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps),
}


def measure(config: BenchConfig) -> list[dict[str, Any]]:
    """The rows of this process: each network's epochs, and the shuffle alone."""
    torch = torch_side.import_torch() if config.torch else None
    networks = [trainer_training(), *(trainer_training((h,)) for h in config.digits_hidden)]
    n, key = len(networks[0].x), jax.random.key(1)
    sort = jax.jit(lambda k: jax.random.permutation(k, n)).lower(key).compile()
    hashed = jax.jit(lambda k: shuffle.permutation(k, n)).lower(key).compile()
    shuffles = _time(config, {"sort": lambda: sort(key), "hashed": lambda: hashed(key)}, 0.25)
    shuffle_ms = {f"shuffle_{k}_ms": 1e3 * shuffles.median(k) for k in ("sort", "hashed")}
    return [{**_epochs(config, torch, t), **shuffle_ms} for t in networks]


def _epochs(config: BenchConfig, torch, t: Training) -> dict[str, Any]:
    step = train.make_train_step(t.model, t.loss, t.optimizer, grad_norm=False)
    loop = python_loop_epoch(step, t.config.batch_size, len(t.x))
    opt_state, key = t.optimizer.init(t.params), jax.random.key(1)
    thunks = {
        "jax_scan": scan_epoch(t),
        "jax_loop": lambda: loop(t.params, opt_state, t.x, t.y, key, 0),
    }
    if torch is not None:
        epoch = torch_epoch(torch, t)
        for threads in torch_side.thread_counts():
            thunks[f"torch_eager@{threads}"] = torch_side.pin_threads(torch, threads, epoch)
    timings = _time(config, thunks, 1.0)
    eager, threads = torch_side.best_torch(timings, "torch_eager")
    return {
        "network": "-".join(map(str, t.model.sizes)),
        "cores": len(os.sched_getaffinity(0)),
        "steps": len(t.x) // t.config.batch_size,
        "jax_scan_ms": 1e3 * timings.median("jax_scan"),
        "jax_loop_ms": 1e3 * timings.median("jax_loop"),
        "torch_eager_ms": 1e3 * timings.median(eager),
        "torch_over_scan": timings.ratio(eager, "jax_scan"),
        "loop_over_scan": timings.ratio("jax_loop", "jax_scan"),
        "torch_threads": threads,
        "rounds": timings.rounds,
    }


def _time(config: BenchConfig, thunks: dict[str, Thunk], share: float):
    return time_interleaved(
        thunks,
        min_rounds=config.repeats,
        budget=config.digits_budget * share,
        groups=[list(thunks)],
        warmup_calls=config.digits_warmup_calls,
    )


def digits_benchmark(config: BenchConfig, log: Callable[[str], None] = print) -> list[dict]:
    """One row per network and CPU count, each CPU count measured in a child process."""
    rows = []
    for cores in sorted({min(c, len(os.sched_getaffinity(0))) for c in config.digits_cores}):
        spec = {**dataclasses.asdict(config), "cores": cores}
        child_rows = host.run_child("experiments.bench.digits", spec)
        log(f"digits on {cores} core(s): " + ", ".join(map(_summary, child_rows)))
        rows += child_rows
    return rows


def _summary(row: dict[str, Any]) -> str:
    return f"{row['network']} scan {row['jax_scan_ms']:.3g} ms, torch {row['torch_eager_ms']:.3g}"


def _measure_spec(spec: dict[str, Any]) -> list[dict[str, Any]]:
    # JSON made the tuples lists; "cores" is the child's, not the config's.
    fields = {f.name for f in dataclasses.fields(BenchConfig)}
    return measure(
        BenchConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k in fields}
        )
    )


if __name__ == "__main__":
    host.child_main(_measure_spec)
