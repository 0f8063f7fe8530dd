"""The digits epoch: one epoch compiled with `lax.scan` against the same training in PyTorch.

The trainer's recipe (tanh, softmax cross-entropy, adam 3e-3, batch 32) on the digits
training split; every epoch shuffles (`jaxbp.shuffle.permutation` in JAX, ``torch.randperm``
in PyTorch) and runs the same number of steps. JAX runs the step and the epoch as the trainer
(`jaxbp.runner`) builds and calls them; each epoch continues from the state the last one
returned, as PyTorch's training does in place.

Each framework is timed at its best use of the machine. PyTorch picks its thread count per
call (``torch.set_num_threads``, 1 and all), but XLA:CPU sizes its thread pool once, from the
CPUs the process may run on. So the comparison runs in one child process per CPU count
(``os.sched_setaffinity`` before JAX starts): in each, JAX and PyTorch are timed in the same
interleaved rounds. On a 2-core machine a small network's kernels lose more to the hand-off
between XLA's two threads than they gain (docs/performance.md), so one core can be the faster.

    python -m experiments.bench.digits '{"digits_hidden": [32], ...}' OUT.json CORES
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

# Importing JAX does not start its CPU backend: the child pins its CPUs before the first use.
import jax
import jax.numpy as jnp
import optax

import jaxbp
from experiments.bench.config import BenchConfig
from experiments.bench.jax_side import python_loop_epoch
from experiments.bench.timing import time_interleaved
from experiments.bench.torch_side import (
    best_torch,
    import_torch,
    pin_threads,
    thread_counts,
    torch_loss,
    torch_mlp,
)
from jaxbp import data as data_lib
from jaxbp import shuffle, train
from jaxbp.mlp import MLP


def digits_benchmark(
    config: BenchConfig, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """One row per network and CPU count, each measured in a child process of its own."""
    available = len(os.sched_getaffinity(0))
    rows = []
    for cores in sorted({min(c, available) for c in config.digits_cores}):
        child_rows = _run_child(config, cores)
        log(f"digits on {cores} core(s): " + ", ".join(_summary(r) for r in child_rows))
        rows += child_rows
    return rows


def _summary(row: dict[str, Any]) -> str:
    return f"{row['network']} scan {row['jax_scan_ms']:.3g} ms, torch {row['torch_eager_ms']:.3g}"


def _run_child(config: BenchConfig, cores: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "digits.json")
        spec = json.dumps(dataclasses.asdict(config))
        cmd = [sys.executable, "-m", "experiments.bench.digits", spec, out, str(cores)]
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"the digits child on {cores} core(s) failed:\n{done.stderr[-3000:]}"
            )
        with open(out) as f:
            return json.load(f)


def measure(config: BenchConfig) -> list[dict[str, Any]]:
    """The rows of this process: each network's scan, Python-loop and torch eager epochs."""
    torch = import_torch() if config.torch else None
    ds = data_lib.load_dataset("digits", seed=0)
    shuffles = _shuffle_times(config, len(ds.x_train))
    return [
        {**_row(config, torch, ds.x_train, ds.y_train, hidden), **shuffles}
        for hidden in config.digits_hidden
    ]


def _shuffle_times(config: BenchConfig, num_examples: int) -> dict[str, float]:
    """Milliseconds of an epoch's shuffle alone: the sort of `jax.random.permutation` against
    the hashed bijection of `jaxbp.shuffle.permutation` (each a jitted call of its own)."""
    key = jax.random.key(1)
    sort = jax.jit(lambda k: jax.random.permutation(k, num_examples)).lower(key).compile()
    hashed = jax.jit(lambda k: shuffle.permutation(k, num_examples)).lower(key).compile()
    timings = time_interleaved(
        {"sort": lambda: sort(key), "hashed": lambda: hashed(key)},
        min_rounds=config.repeats,
        budget=config.digits_budget / 4,
        groups=[("sort", "hashed")],
        warmup_calls=config.digits_warmup_calls,
    )
    return {
        "shuffle_sort_ms": 1e3 * timings.median("sort"),
        "shuffle_hashed_ms": 1e3 * timings.median("hashed"),
    }


def _row(config: BenchConfig, torch, x_np, y_np, hidden: int) -> dict[str, Any]:
    batch_size, learning_rate, loss = 32, 3e-3, "softmax_cross_entropy"
    num_examples = len(x_np)
    num_batches = num_examples // batch_size
    model = MLP((x_np.shape[1], hidden, y_np.shape[1]), "tanh", "softmax")
    params = jaxbp.init_params(jax.random.key(0), model)
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)
    step_fn = train.make_train_step(model, loss, optimizer, backward="custom", grad_norm=False)
    epoch = train.make_epoch(step_fn, batch_size, donate=True)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    key = jax.random.key(1)
    loop = python_loop_epoch(step_fn, batch_size, num_examples)
    trained = [jax.tree.map(jnp.copy, params), optimizer.init(params)]

    def scan_epoch():
        trained[0], trained[1], metrics = epoch(*trained, x, y, key, 0)
        return metrics

    def loop_epoch():
        return loop(params, opt_state, x, y, key, 0)

    thunks = {"jax_scan": scan_epoch, "jax_loop": loop_epoch}
    if torch is not None:
        net = torch_mlp(torch, model, params, "float32", fused_output=True)
        xt, yt = torch.from_numpy(x_np.copy()), torch.from_numpy(y_np.copy())
        loss_fn = torch_loss(torch, loss)
        torch_opt = torch.optim.Adam(net.parameters(), lr=learning_rate)

        def torch_epoch():
            order = torch.randperm(num_examples)[: num_batches * batch_size]
            for idx in order.view(num_batches, batch_size):
                torch_opt.zero_grad()
                loss_fn(net(xt[idx]), yt[idx]).backward()
                torch_opt.step()

        for t in thread_counts():
            thunks[f"torch_eager@{t}"] = pin_threads(torch, t, torch_epoch)
    timings = time_interleaved(
        thunks,
        min_rounds=config.repeats,
        budget=config.digits_budget,
        groups=[list(thunks)],
        warmup_calls=config.digits_warmup_calls,
    )
    eager, threads = best_torch(timings, "torch_eager")
    return {
        "network": "-".join(map(str, model.sizes)),
        "cores": len(os.sched_getaffinity(0)),
        "steps": num_batches,
        "jax_scan_ms": 1e3 * timings.median("jax_scan"),
        "jax_loop_ms": 1e3 * timings.median("jax_loop"),
        "torch_eager_ms": 1e3 * timings.median(eager),
        "torch_over_scan": timings.ratio(eager, "jax_scan"),
        "loop_over_scan": timings.ratio("jax_loop", "jax_scan"),
        "torch_threads": threads,
        "rounds": timings.rounds,
    }


def _child_main(argv: list[str]) -> None:
    spec, out, cores = argv
    available = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, available[: int(cores)])  # before JAX sizes its thread pool
    raw = json.loads(spec)  # JSON turned the tuples into lists
    config = BenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    rows = measure(config)
    with open(out, "w") as f:
        json.dump(rows, f)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
