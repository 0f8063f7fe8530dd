"""The digits epoch: the run's run as one `lax.scan` epoch against the same in PyTorch eager.

`run_training` builds a run as the run does (`experiments/scaling.py` uses it too). Each
CPU count is measured in a child process (`host.run_child`), JAX and PyTorch interleaved in the
same rounds, each epoch continuing from the state the last returned, as training does.
"""

import dataclasses
import functools
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
from experiments.bench.host import Thunk
from experiments.bench.jax_side import python_loop_epoch
from jaxbp import training
from jaxbp.mlp import MLP
from jaxbp.run import config as config_lib
from jaxbp.run import recipe
from jaxbp.training import shuffle


class Training(NamedTuple):
    config: config_lib.Config
    model: MLP
    loss: str
    optimizer: optax.GradientTransformation  # with the config's learning-rate schedule
    params: jaxbp.Params
    x: jax.Array  # (examples, features): the training split
    y: jax.Array  # (examples, outputs)


def run_training(dataset: str = "digits", **overrides: Any) -> Training:
    """The run's run of ``make_config(dataset, **overrides)``: data, network, optimizer."""
    config = config_lib.make_config(dataset, **overrides)
    data = recipe.load_data(config)
    model = recipe.build_model(config, data)
    _, loss = config_lib.resolve_head(config, data.task, data.num_outputs)
    optimizer = recipe.build_optimizer(config, len(data.x_train) // config.batch_size)
    params = jaxbp.init_params(jax.random.key(config.seed), model)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    return Training(config, model, loss, optimizer, params, x, y)


def scan_epoch(t: Training, *, grad_norm: bool = False, donate: bool = True) -> Thunk:
    """An epoch as the run runs it, each call continuing from the state of the last."""
    step = training.make_train_step(t.model, t.loss, t.optimizer, grad_norm=grad_norm)
    epoch = training.make_epoch(step, t.config.batch_size, donate=donate)
    state = [jax.tree.map(jnp.copy, t.params), t.optimizer.init(t.params)]
    key = jax.random.key(1)

    def run():
        state[0], state[1], metrics = epoch(*state, t.x, t.y, key, 0)
        return metrics

    return run


def torch_epoch(torch: Any, t: Training) -> Thunk:
    """The same epoch in PyTorch eager: randperm, then per batch zero_grad, backward, adam's
    step and the cosine schedule's step."""
    config, batch_size = t.config, t.config.batch_size
    net = torch_side.torch_mlp(torch, t.model, t.params, "float32", fused_output=True)
    x, y = torch.from_numpy(np.array(t.x)), torch.from_numpy(np.array(t.y))
    loss_fn = torch_side.torch_loss(torch, t.loss)
    num_batches = len(x) // batch_size
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    steps = config.epochs * num_batches
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

    def run():
        order = torch.randperm(len(x))[: num_batches * batch_size]
        for idx in order.view(num_batches, batch_size):
            optimizer.zero_grad()
            loss_fn(net(x[idx]), y[idx]).backward()
            optimizer.step()
            schedule.step()

    return run


def measure(config: BenchConfig) -> list[dict[str, Any]]:
    """This process's rows: each network's epochs, and the shuffle alone."""
    torch = torch_side.import_torch() if config.torch else None
    timed = functools.partial(  # each network gets digits_budget, the shuffles a quarter
        host.time_interleaved, min_rounds=config.repeats, warmup_calls=config.digits_warmup_calls
    )
    networks = [run_training()]
    networks += [run_training(hidden_sizes=(h,)) for h in config.digits_hidden]
    n, key = len(networks[0].x), jax.random.key(1)
    sort = jax.jit(lambda k: jax.random.permutation(k, n)).lower(key).compile()
    hashed = jax.jit(lambda k: shuffle.permutation(k, n)).lower(key).compile()
    thunks = {"shuffle_sort": lambda: sort(key), "shuffle_hashed": lambda: hashed(key)}
    shuffles = timed(thunks, budget=config.digits_budget / 4)
    rows = []
    for t in networks:
        step = training.make_train_step(t.model, t.loss, t.optimizer, grad_norm=False)
        args = (t.params, t.optimizer.init(t.params), t.x, t.y, key, 0)
        thunks = {
            "jax_scan": scan_epoch(t),
            "jax_loop": python_loop_epoch(step, t.config.batch_size, args),
        }
        if torch is not None:
            thunks |= torch_side.at_threads(torch, "torch_eager", torch_epoch(torch, t))
        timings, threads = torch_side.at_fastest(
            timed(thunks, budget=config.digits_budget), ("torch_eager",)
        )
        rows.append(
            {
                "network": "-".join(map(str, t.model.sizes)),
                "cores": len(os.sched_getaffinity(0)),
                "steps": len(t.x) // t.config.batch_size,
                **timings.ms("jax_scan", "jax_loop", "torch_eager"),
                "torch_over_scan": timings.ratio("torch_eager", "jax_scan"),
                "loop_over_scan": timings.ratio("jax_loop", "jax_scan"),
                "torch_threads": threads["torch_eager"],
                "rounds": timings.rounds,
                **shuffles.ms("shuffle_sort", "shuffle_hashed"),
            }
        )
    return rows


def digits_benchmark(config: BenchConfig, log: Callable[[str], None]) -> list[dict]:
    """One row per network and CPU count, each CPU count measured in a child process."""
    rows = []
    for cores in sorted({min(c, len(os.sched_getaffinity(0))) for c in config.digits_cores}):
        child_rows = host.run_child(
            "experiments.bench.digits", {**dataclasses.asdict(config), "cores": cores}
        )
        times = [f"{r['network']} scan {r['jax_scan_ms']:.3g} ms, torch {r['torch_eager_ms']:.3g}"
                 for r in child_rows]  # fmt: skip
        log(f"digits on {cores} core(s): " + ", ".join(times))
        rows += child_rows
    return rows


if __name__ == "__main__":
    host.child_main(lambda spec: measure(BenchConfig.from_dict(spec)))
