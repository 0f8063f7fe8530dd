"""Speed and memory benchmark of the hand-written backward against autodiff and PyTorch.

    ./launch.sh bench --quick                      # a small grid, under 2 minutes
    ./launch.sh bench                              # the full grid of docs/performance.md
    ./launch.sh bench --depths=2 --widths=1024 --batch_sizes=256 --activations=tanh,relu

For every grid point (depth, width, batch, activation, dtype) the network is
``MLP((width,) * (depth + 1) + (num_outputs,))``, i.e. ``depth`` hidden layers of ``width``
units. Every variant is compiled ahead of time, warmed up, then timed call by call (each call
ended by ``block_until_ready``) in interleaved rounds that run the compared variants back to
back in a random order. Times are medians over the rounds; a ratio is the median over the
rounds of the ratio of the two calls of a round, so that the load of other processes on a
shared machine hits both sides of it. Variants:

* ``custom``: ``jax.value_and_grad`` through ``apply(backward="custom")`` (the custom_vjp);
* ``loss_and_grad``: `jaxbp.loss_and_grad`, the derivation alone;
* ``autodiff``: ``jax.value_and_grad`` through the plain forward;
* ``matmul``: the 3 matmuls per layer of a gradient step alone (``a Wᵀ``, ``δ W``, ``δᵀ a``),
  the shapes the FLOP count ``6 · batch · Σ n_in n_out`` counts: the hardware's limit here;
* ``train_step``: a full optax (adam) step on the hand-written gradient;
* ``epoch_scan`` / ``epoch_loop``: ``epoch_steps`` such steps as one `lax.scan`
  (`jaxbp.train.make_epoch`) against the same steps dispatched from a Python loop;
* ``norms`` / ``clipped``: `jaxbp.per_example_grad_norms` and the per-example clipped
  gradient, against ``vmap_norms``: the norms of ``vmap(grad)`` (skipped where the B
  per-example gradients would not fit in ``--per_example_max_mib``);
* ``torch_eager`` / ``torch_compile``: the same network, weights and batch in PyTorch
  (forward, loss, ``backward()``), when torch is importable, each timed with 1 and with all
  CPU threads and reported at the faster (OpenMP spin-waiting on a shared machine can make
  the multi-threaded small step 10× slower).

Memory: ``residual_*`` is the bytes the forward half of ``jax.vjp`` hands to the backward
half (the compiled forward program's output, less the loss value and the inputs it passes
through unchanged, which the caller holds anyway); ``temp_*`` is the scratch memory of the
compiled gradient program. A separate section times one epoch of the digits network compiled
with ``lax.scan`` against the same training in PyTorch eager.

Outputs in ``--outdir``: ``results.csv``, ``results.md`` (printed too), ``results.png``.
"""

import contextlib
import csv
import dataclasses
import datetime
import math
import os
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import jaxbp
from jaxbp import backprop, per_example, train
from jaxbp import data as data_lib
from jaxbp.mlp import MLP

_QUICK = flags.DEFINE_boolean("quick", False, "A small grid that runs in under 2 minutes.")
_DEPTHS = flags.DEFINE_list("depths", ["1", "2", "4", "8"], "Hidden layers (the issue's grid).")
_WIDTHS = flags.DEFINE_list("widths", ["32", "256", "1024", "2048"], "Hidden widths.")
_BATCHES = flags.DEFINE_list("batch_sizes", ["1", "32", "256", "1024"], "Rows per step.")
_ACTIVATIONS = flags.DEFINE_list("activations", ["tanh"], "Hidden activations (the digits g).")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "float32, float64 or bfloat16.")
# Not --loss: experiments/train.py and gradcheck.py define that name in the same flag registry.
_LOSS = flags.DEFINE_string("grid_loss", "mse", "Loss of the grid; mse keeps the output plain.")
_NUM_OUTPUTS = flags.DEFINE_integer("num_outputs", 10, "Output width (ten classes, as digits).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Fewest rounds of the gradient comparison.")
_POINT_BUDGET = flags.DEFINE_float(
    "point_budget", 8.0, "Seconds of rounds per point: cheap points get more, up to 5000."
)
_EPOCH_STEPS = flags.DEFINE_integer("epoch_steps", 2, "Steps of the scan-vs-loop epoch.")
_PER_EXAMPLE_MAX_MIB = flags.DEFINE_integer(
    "per_example_max_mib", 2500, "Skip vmap(grad) when its B gradients exceed this (MiB)."
)
_TORCH = flags.DEFINE_boolean("torch", True, "Time PyTorch too, when it is importable.")
_TORCH_COMPILE = flags.DEFINE_boolean(
    "torch_compile", None, "Time torch.compile too (default: on, off with --quick: ~15 s each)."
)
_DIGITS = flags.DEFINE_boolean("digits", True, "The digits epoch: lax.scan against torch eager.")
_OUTDIR = flags.DEFINE_string("outdir", None, "Output folder (default runs/bench-<time>).")

QUICK_GRID = dict(depths=(2,), widths=(32, 256, 1024), batch_sizes=(32, 256))
# The targets.
TARGET_RATIO_MEDIAN = 1.00  # hand-written / jax.grad, median over the grid
TARGET_RATIO_MAX = 1.05  # ... and at every point
TARGET_MATMUL_FRACTION = 0.90  # of the matmul FLOP/s at width >= 1024, batch >= 256
TARGET_DIGITS_SPEEDUP = 20.0  # scan epoch against torch eager
TARGET_NORMS_OVER_GRAD = 1.5  # per-example norms against a plain gradient step
TARGET_VMAP_OVER_NORMS = 5.0  # vmap(grad) against the norms, at width 1024, batch 256

Array = jax.Array
Thunk = Callable[[], Any]


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to run; `main` fills it from the flags, tests build a tiny one."""

    depths: tuple[int, ...] = (1, 2, 4, 8)
    widths: tuple[int, ...] = (32, 256, 1024, 2048)
    batch_sizes: tuple[int, ...] = (1, 32, 256, 1024)
    activations: tuple[str, ...] = ("tanh",)
    dtypes: tuple[str, ...] = ("float32",)
    loss: str = "mse"
    num_outputs: int = 10
    repeats: int = 5
    point_budget: float = 8.0
    epoch_steps: int = 2
    per_example_max_mib: int = 2500
    torch: bool = True
    torch_compile: bool = True
    digits: bool = True
    digits_budget: float = 20.0  # seconds of rounds of the digits comparison
    digits_hidden: tuple[int, ...] = (128, 32)  # the trainer's 64-128-10 and the 64-32-10


@dataclasses.dataclass(frozen=True)
class Point:
    depth: int
    width: int
    batch: int
    activation: str
    dtype: str


# --------------------------------------------------------------------------------------------
# Timing


def _block(out: Any) -> Any:
    return jax.block_until_ready(out)


class Timings(NamedTuple):
    """Per-call seconds of interleaved rounds.

    Attributes:
      samples: name -> one time per round, in round order (so index r of two names are calls
        made close together in round r).
      rounds: the number of rounds.
    """

    samples: dict[str, list[float]]
    rounds: int

    def median(self, name: str | None) -> float:
        """Median seconds per call; NaN for a name that was not timed."""
        return statistics.median(self.samples[name]) if name in self.samples else math.nan

    def ratio(self, numerator: str | None, denominator: str | None) -> float:
        """Median over rounds of the per-round ratio: load that hits a round hits both."""
        if numerator not in self.samples or denominator not in self.samples:
            return math.nan
        pairs = zip(self.samples[numerator], self.samples[denominator], strict=True)
        return statistics.median(a / b for a, b in pairs)


def time_interleaved(
    thunks: dict[str, Thunk],
    *,
    min_rounds: int,
    budget: float,
    groups: Sequence[Sequence[str]] = (),
    max_rounds: int = 5000,
) -> Timings:
    """Times each thunk call by call, in interleaved rounds.

    Each thunk is called once untimed (warm-up, and the estimate of its cost); then every
    round calls each thunk once, timing each call to its ``block_until_ready``. A round runs
    the groups in a random order and the thunks of a group back to back, in a random order:
    the variants one compares go in one group, so that each round's ratio compares calls made
    under the same load (the machine may be shared: the load of other processes comes and
    goes, and a median of each variant alone can land in different load regimes).

    Args:
      thunks: name -> a call that returns what to block on.
      min_rounds: the fewest rounds.
      budget: seconds of rounds to aim for: cheap thunks get more rounds, up to ``max_rounds``.
      groups: names to run back to back; the other thunks run alone.
      max_rounds: the most rounds.

    Returns:
      The `Timings`.
    """
    estimate = {}
    for name, thunk in thunks.items():
        start = time.perf_counter()
        _block(thunk())
        estimate[name] = time.perf_counter() - start
    per_round = max(sum(estimate.values()), 1e-9)
    rounds = int(min(max_rounds, max(min_rounds, budget // per_round)))
    grouped = [[n for n in group if n in thunks] for group in groups]
    in_groups = [n for group in grouped for n in group]
    if len(in_groups) != len(set(in_groups)):
        raise ValueError(f"a thunk is in two groups: {groups}; each runs once a round.")
    grouped = [g for g in grouped if g] + [[n] for n in thunks if n not in in_groups]
    samples: dict[str, list[float]] = {name: [] for name in thunks}
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(grouped)
        for group in grouped:
            rng.shuffle(group)
            for name in group:
                thunk = thunks[name]
                start = time.perf_counter()
                _block(thunk())
                samples[name].append(time.perf_counter() - start)
    return Timings(samples, rounds)


# --------------------------------------------------------------------------------------------
# The JAX variants


def _x64(dtype: str):
    return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


def _output_activation(loss: str) -> str:
    needed = jaxbp.LOSSES[loss].output_activation
    return needed if needed is not None else "identity"


def build_model(point: Point, loss: str, num_outputs: int) -> MLP:
    """``depth`` hidden layers of ``width``: sizes ``(width,) * (depth + 1) + (num_outputs,)``."""
    sizes = (point.width,) * (point.depth + 1) + (num_outputs,)
    return MLP(sizes, point.activation, _output_activation(loss))


def gradient_flops(model: MLP, batch: int) -> int:
    """``6 · batch · Σ n_in n_out``: 2 FLOPs a multiply-add, 3 matmuls a layer."""
    return 6 * batch * sum(a * b for a, b in zip(model.sizes[:-1], model.sizes[1:], strict=True))


def _make_batch(model: MLP, loss: str, batch: int, dtype: Any, key: Array) -> tuple[Array, Array]:
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (batch, model.sizes[0]), dtype)
    n_out = model.sizes[-1]
    if loss == "softmax_cross_entropy":
        y = jax.nn.one_hot(jax.random.randint(ky, (batch,), 0, n_out), n_out, dtype=dtype)
    elif loss == "bce":
        y = jax.random.bernoulli(ky, 0.5, (batch, n_out)).astype(dtype)
    else:
        y = jax.random.normal(ky, (batch, n_out), dtype)
    return x, y


def _matmuls(params, acts, deltas):
    # Per layer the three matmuls of a gradient step, with its shapes and operand layouts.
    return [
        (a @ layer["W"].T, d @ layer["W"], d.T @ a)
        for layer, a, d in zip(params, acts, deltas, strict=True)
    ]


def count_dots(compiled) -> int:
    """Matmuls (HLO ``dot``) in a compiled program, inside fusions or not.

    Equal counts for custom and autodiff mean the hand-written backward does no extra matmul
    (its ``∂/∂x = δ^[1] W^[1]`` is dead code under ``jax.grad`` with respect to the params).
    """
    return len(re.findall(r"\bdot\(", compiled.as_text()))


def residual_bytes(f: Callable, params, x: Array, y: Array) -> int:
    """Bytes the forward half of ``jax.vjp(f)`` keeps for the backward half.

    From the compiled forward program's memory analysis: its output bytes, less the loss value
    and less the inputs it passes through unchanged (the weights and ``x``, which the caller
    holds anyway); those are found as jaxpr outputs that are jaxpr inputs.
    """

    def forward(params, x, y):
        return jax.vjp(lambda p: f(p, x, y), params)

    jaxpr = jax.make_jaxpr(forward)(params, x, y).jaxpr
    value_var, *residual_vars = jaxpr.outvars
    passed = sum(
        v.aval.size * v.aval.dtype.itemsize
        for v in residual_vars
        if any(v is u for u in jaxpr.invars)
    )
    stats = jax.jit(forward).lower(params, x, y).compile().memory_analysis()
    value_bytes = value_var.aval.size * value_var.aval.dtype.itemsize
    return int(stats.output_size_in_bytes - value_bytes - passed)


def _compile(f: Callable, *args):
    return jax.jit(f).lower(*args).compile()


def python_loop_epoch(step_fn: Callable, batch_size: int, num_examples: int) -> Callable:
    """`jaxbp.train.make_epoch`'s epoch as a Python loop: the same shuffle and steps, each
    step a call of its own (``(params, opt_state, x, y, key, epoch_index) -> params``)."""
    num_batches = num_examples // batch_size
    permute = jax.jit(
        lambda key: jax.random.permutation(key, num_examples)[: num_batches * batch_size].reshape(
            num_batches, batch_size
        )
    )
    step_at = jax.jit(lambda p, s, x, y, order, i: step_fn(p, s, (x[order[i]], y[order[i]])))
    indices = [jnp.int32(i) for i in range(num_batches)]

    def epoch(params, opt_state, x, y, key, epoch_index):
        order = permute(train.epoch_key(key, epoch_index))
        for i in indices:
            params, opt_state, _ = step_at(params, opt_state, x, y, order, i)
        return params

    return epoch


def jax_variants(point: Point, config: BenchConfig) -> tuple[dict[str, Thunk], dict[str, Any]]:
    """The JAX thunks of one point, and its static figures (FLOPs, matmuls, memory)."""
    dtype = jnp.dtype(point.dtype)
    loss = config.loss
    model = build_model(point, loss, config.num_outputs)
    key_params, key_batch, key_epoch = jax.random.split(jax.random.key(0), 3)
    params = jaxbp.init_params(key_params, model, dtype=dtype)
    x, y = _make_batch(model, loss, point.batch, dtype, key_batch)

    def value_fn(backward):
        return lambda p, x, y: backprop.loss_value(model, loss, p, x, y, backward=backward)

    custom = _compile(jax.value_and_grad(value_fn("custom")), params, x, y)
    autodiff = _compile(jax.value_and_grad(value_fn("autodiff")), params, x, y)
    lag = _compile(lambda p, x, y: backprop.loss_and_grad(model, loss, p, x, y), params, x, y)
    acts = [jnp.ones((point.batch, n), dtype) for n in model.sizes[:-1]]
    deltas = [jnp.ones((point.batch, n), dtype) for n in model.sizes[1:]]
    matmul = _compile(_matmuls, params, acts, deltas)

    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)
    step_fn = train.make_train_step(model, loss, optimizer, backward="custom")
    step = _compile(step_fn, params, opt_state, (x, y))
    steps = config.epoch_steps
    x_epoch, y_epoch = _make_batch(model, loss, steps * point.batch, dtype, key_epoch)
    epoch = train.make_epoch(step_fn, point.batch)
    epoch_args = (params, opt_state, x_epoch, y_epoch, key_epoch, 0)
    epoch = epoch.lower(*epoch_args).compile()
    loop = python_loop_epoch(step_fn, point.batch, steps * point.batch)
    _block(loop(*epoch_args))  # compiles its two programs

    norms = _compile(
        lambda p, x, y: per_example.per_example_grad_norms(model, loss, p, x, y), params, x, y
    )
    clipped = _compile(
        lambda p, x, y: per_example.clipped_loss_and_grad(model, loss, p, x, y, 1.0), params, x, y
    )
    thunks: dict[str, Thunk] = {
        "custom": lambda: custom(params, x, y),
        "loss_and_grad": lambda: lag(params, x, y),
        "autodiff": lambda: autodiff(params, x, y),
        "matmul": lambda: matmul(params, acts, deltas),
        "train_step": lambda: step(params, opt_state, (x, y)),
        "epoch_scan": lambda: epoch(*epoch_args),
        "epoch_loop": lambda: loop(*epoch_args),
        "norms": lambda: norms(params, x, y),
        "clipped": lambda: clipped(params, x, y),
    }
    num_params = sum(leaf.size for leaf in jax.tree.leaves(params))
    vmap_mib = point.batch * num_params * dtype.itemsize / 2**20
    if vmap_mib <= config.per_example_max_mib:

        def vmap_norms_fn(p, x, y):
            def one(x_i, y_i):
                return jax.grad(value_fn("autodiff"))(p, x_i[None], y_i[None])

            grads = jax.vmap(one)(x, y)
            return jnp.sqrt(
                sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for g in jax.tree.leaves(grads))
            )

        vmap_norms = _compile(vmap_norms_fn, params, x, y)
        thunks["vmap_norms"] = lambda: vmap_norms(params, x, y)

    static = {
        "flops": gradient_flops(model, point.batch),
        "num_params": num_params,
        "dots_custom": count_dots(custom),
        "dots_autodiff": count_dots(autodiff),
        "residual_custom": residual_bytes(value_fn("custom"), params, x, y),
        "residual_autodiff": residual_bytes(value_fn("autodiff"), params, x, y),
        "temp_custom": custom.memory_analysis().temp_size_in_bytes,
        "temp_autodiff": autodiff.memory_analysis().temp_size_in_bytes,
        "params": params,
        "x": x,
        "y": y,
        "model": model,
    }
    return thunks, static


# --------------------------------------------------------------------------------------------
# PyTorch


def import_torch():
    """torch, or None when it is not installed (the ``bench`` extra)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_dtype(torch, dtype: str):
    return {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}[dtype]


def _torch_tensor(torch, array, dtype: str):
    host = np.asarray(jnp.asarray(array, jnp.float32 if dtype == "bfloat16" else array.dtype))
    return torch.from_numpy(host.copy()).to(_torch_dtype(torch, dtype))


def torch_mlp(torch, model: MLP, params, dtype: str, *, fused_output: bool):
    """The same network in PyTorch, with the JAX weights copied in.

    With ``fused_output`` the output activation is left out (the loss takes the logits).
    """
    nn = torch.nn
    hidden = {
        "identity": nn.Identity,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "leaky_relu": lambda: nn.LeakyReLU(jaxbp.activations.LEAKY_RELU_SLOPE),
        "softplus": nn.Softplus,
        "softmax": lambda: nn.Softmax(dim=-1),
    }
    layers = []
    for k, (layer, act) in enumerate(zip(params, model.layer_activations, strict=True)):
        n_out, n_in = layer["W"].shape
        linear = nn.Linear(n_in, n_out, bias=model.use_bias, dtype=_torch_dtype(torch, dtype))
        with torch.no_grad():
            linear.weight.copy_(_torch_tensor(torch, layer["W"], dtype))
            if model.use_bias:
                linear.bias.copy_(_torch_tensor(torch, layer["b"], dtype))
        layers.append(linear)
        if not (fused_output and k == model.num_layers - 1):
            layers.append(hidden[act.name]())
    return nn.Sequential(*layers)


def torch_loss(torch, loss: str) -> Callable:
    """``(output, y) -> scalar``: the jaxbp loss in PyTorch (fused ones from the logits)."""
    functional = torch.nn.functional

    def n(y):
        return y.shape[0]

    return {
        "mse": lambda out, y: ((out - y) ** 2).sum() / n(y),
        "half_mse": lambda out, y: 0.5 * ((out - y) ** 2).sum() / n(y),
        "sse": lambda out, y: ((out - y) ** 2).sum(),
        "bce": lambda z, y: (
            functional.binary_cross_entropy_with_logits(z, y, reduction="sum") / n(y)
        ),
        "softmax_cross_entropy": lambda z, y: (
            functional.cross_entropy(z, y, reduction="sum") / n(y)
        ),
    }[loss]


def thread_counts() -> tuple[int, ...]:
    """1 and all CPU threads: PyTorch is timed at both and reported at the faster.

    OpenMP threads spin-wait for work; on a machine shared with other processes that can make
    the multi-threaded run of a small step many times slower than the single-threaded one.
    """
    return tuple(sorted({1, os.cpu_count() or 1}))


def best_torch(timings: Timings, kind: str) -> tuple[str | None, int | None]:
    """The fastest ``kind@T`` timed (by median), and its T; ``(None, None)`` if none was."""
    names = [n for n in timings.samples if n.startswith(kind + "@")]
    if not names:
        return None, None
    best = min(names, key=timings.median)
    return best, int(best.split("@")[1])


def pin_threads(torch, threads: int, thunk: Thunk) -> Thunk:
    """``thunk`` run with ``torch.set_num_threads(threads)``."""

    def run():
        torch.set_num_threads(threads)
        return thunk()

    return run


class TorchRunner:
    """PyTorch gradient steps for the grid, keeping one torch.compile per network shape."""

    def __init__(self, torch, config: BenchConfig):
        self.torch = torch
        self.config = config
        self.threads = thread_counts()
        self._compiled_key = None
        self._compiled_net = None
        self._compiled = None
        self.compile_error: str | None = None
        if hasattr(torch, "_dynamo"):
            torch._dynamo.config.cache_size_limit = 64

    def thunks(self, point: Point, static: dict[str, Any]) -> tuple[dict[str, Thunk], float]:
        """``({name: thunk}, seconds spent compiling)`` for one point.

        The names are ``torch_eager@T`` and ``torch_compile@T`` for T in `thread_counts`.
        """
        torch = self.torch
        loss = self.config.loss
        fused = jaxbp.LOSSES[loss].value_from_logits is not None
        model = static["model"]
        net = torch_mlp(torch, model, static["params"], point.dtype, fused_output=fused)
        x = _torch_tensor(torch, static["x"], point.dtype)
        y = _torch_tensor(torch, static["y"], point.dtype)
        loss_fn = torch_loss(torch, loss)

        def eager():
            for p in net.parameters():
                p.grad = None
            value = loss_fn(net(x), y)
            value.backward()
            return value

        thunks = {f"torch_eager@{t}": pin_threads(torch, t, eager) for t in self.threads}
        compile_seconds = math.nan
        if self.config.torch_compile and self.compile_error is None:
            # One compiled function per network shape, reused across batch sizes (dynamo
            # recompiles once for a dynamic batch); the weights of this point are copied in.
            shape_key = (model, point.dtype)
            if shape_key != self._compiled_key:
                torch._dynamo.reset()
                self._compiled_key = shape_key
                self._compiled_net = net
                compiled_net = net
                self._compiled = torch.compile(lambda x, y: loss_fn(compiled_net(x), y))
            else:
                with torch.no_grad():
                    for mine, theirs in zip(
                        self._compiled_net.parameters(), net.parameters(), strict=True
                    ):
                        mine.copy_(theirs)
            compiled_net, compiled = self._compiled_net, self._compiled

            def compiled_step():
                for p in compiled_net.parameters():
                    p.grad = None
                value = compiled(x, y)
                value.backward()
                return value

            start = time.perf_counter()
            try:
                compiled_step()  # compiles, or recompiles for this batch size
                for t in self.threads:
                    thunks[f"torch_compile@{t}"] = pin_threads(torch, t, compiled_step)
            except Exception as e:  # noqa: BLE001 -- any compiler failure means "does not work"
                self.compile_error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            compile_seconds = time.perf_counter() - start
        return thunks, compile_seconds


# --------------------------------------------------------------------------------------------
# The grid


def grid(config: BenchConfig) -> list[Point]:
    """Every point, ordered so that one network shape's batch sizes come together."""
    return [
        Point(depth, width, batch, activation, dtype)
        for dtype in config.dtypes
        for activation in config.activations
        for depth in config.depths
        for width in config.widths
        for batch in config.batch_sizes
    ]


# Each point is timed in phases: (the thunks timed together, share of --point_budget). The
# gradient phase, whose ratios the targets read, gets the most rounds (at least --repeats);
# the others at least 3. A name's time comes from the first phase that lists it.
PHASES = {
    "gradient": (("custom", "loss_and_grad", "autodiff", "matmul", "norms", "clipped"), 1.0),
    "training": (("train_step", "epoch_scan", "epoch_loop"), 0.25),
    "vmap": (("vmap_norms", "norms"), 0.1),
    "torch": (("custom",), 0.25),  # with torch_eager@T, torch_compile@T for T in thread_counts
}
_TIMED = (
    "custom",
    "loss_and_grad",
    "autodiff",
    "matmul",
    "train_step",
    "epoch_scan",
    "epoch_loop",
    "norms",
    "clipped",
    "vmap_norms",
    "torch_eager",
    "torch_compile",
)


def run_point(
    point: Point, config: BenchConfig, torch_runner: TorchRunner | None
) -> dict[str, Any]:
    """One row of the results: times (ms), ratios, FLOP/s, memory."""
    with _x64(point.dtype):
        start = time.perf_counter()
        thunks, static = jax_variants(point, config)
        torch_compile_s, torch_names = math.nan, ()
        if torch_runner is not None:
            torch_thunks, torch_compile_s = torch_runner.thunks(point, static)
            thunks.update(torch_thunks)
            torch_names = tuple(torch_thunks)
        setup_s = time.perf_counter() - start
        phases = {}
        for phase, (names, share) in PHASES.items():
            if phase == "torch":
                names = (*torch_names, *names)
            phases[phase] = time_interleaved(
                {name: thunks[name] for name in names if name in thunks},
                min_rounds=config.repeats if phase == "gradient" else 3,
                budget=config.point_budget * share,
                groups=[names],
            )
        eager, torch_threads = best_torch(phases["torch"], "torch_eager")
        compiled, compile_threads = best_torch(phases["torch"], "torch_compile")
    ms = {
        name: 1e3 * phases[phase].median(name)
        for phase, (names, _) in PHASES.items()
        for name in names
        if phase == "gradient" or name not in PHASES["gradient"][0]
    }
    ms["torch_eager"] = 1e3 * phases["torch"].median(eager)
    ms["torch_compile"] = 1e3 * phases["torch"].median(compiled)
    ratio = phases["gradient"].ratio
    flops = static["flops"]
    row: dict[str, Any] = dataclasses.asdict(point)
    row.update({f"{name}_ms": ms[name] for name in _TIMED})
    steps = config.epoch_steps
    row.update(
        custom_over_autodiff=ratio("custom", "autodiff"),
        loss_and_grad_over_autodiff=ratio("loss_and_grad", "autodiff"),
        dots_custom=static["dots_custom"],
        dots_autodiff=static["dots_autodiff"],
        gflops_matmul=flops / ms["matmul"] / 1e6,
        gflops_custom=flops / ms["custom"] / 1e6,
        gflops_loss_and_grad=flops / ms["loss_and_grad"] / 1e6,
        matmul_fraction_custom=ratio("matmul", "custom"),
        matmul_fraction_loss_and_grad=ratio("matmul", "loss_and_grad"),
        scan_step_ms=ms["epoch_scan"] / steps,
        loop_step_ms=ms["epoch_loop"] / steps,
        loop_over_scan=phases["training"].ratio("epoch_loop", "epoch_scan"),
        norms_over_grad=ratio("norms", "loss_and_grad"),
        clipped_over_grad=ratio("clipped", "loss_and_grad"),
        vmap_over_norms=phases["vmap"].ratio("vmap_norms", "norms"),
        torch_eager_over_custom=phases["torch"].ratio(eager, "custom"),
        torch_compile_over_custom=phases["torch"].ratio(compiled, "custom"),
        torch_threads=torch_threads,
        torch_compile_threads=compile_threads,
        residual_custom_bytes=static["residual_custom"],
        residual_autodiff_bytes=static["residual_autodiff"],
        temp_custom_bytes=static["temp_custom"],
        temp_autodiff_bytes=static["temp_autodiff"],
        flops=flops,
        num_params=static["num_params"],
        rounds=phases["gradient"].rounds,
        setup_s=setup_s,
        torch_compile_s=torch_compile_s,
    )
    return row


# --------------------------------------------------------------------------------------------
# Digits: one epoch compiled with lax.scan against PyTorch eager


def digits_benchmark(config: BenchConfig, torch) -> list[dict[str, Any]]:
    """Milliseconds per epoch of the digits networks: scan, Python loop, torch eager.

    The trainer's recipe (tanh, softmax cross-entropy, adam 3e-3, batch 32) on the digits
    training split; every epoch shuffles (``jax.random.permutation`` in JAX, ``torch.randperm``
    in PyTorch) and runs the same number of steps.
    """
    ds = data_lib.load_dataset("digits", seed=0)
    return [
        _digits_row(config, torch, ds.x_train, ds.y_train, hidden)
        for hidden in config.digits_hidden
    ]


def _digits_row(config: BenchConfig, torch, x_np, y_np, hidden: int) -> dict[str, Any]:
    batch_size, learning_rate, loss = 32, 3e-3, "softmax_cross_entropy"
    num_examples = len(x_np)
    num_batches = num_examples // batch_size
    model = MLP((x_np.shape[1], hidden, y_np.shape[1]), "tanh", "softmax")
    params = jaxbp.init_params(jax.random.key(0), model)
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)
    step_fn = train.make_train_step(model, loss, optimizer, backward="custom")
    epoch = train.make_epoch(step_fn, batch_size)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    key = jax.random.key(1)
    loop = python_loop_epoch(step_fn, batch_size, num_examples)

    def scan_epoch():
        return epoch(params, opt_state, x, y, key, 0)

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
        thunks, min_rounds=config.repeats, budget=config.digits_budget, groups=[list(thunks)]
    )
    eager, threads = best_torch(timings, "torch_eager")
    return {
        "network": "-".join(map(str, model.sizes)),
        "steps": num_batches,
        "jax_scan_ms": 1e3 * timings.median("jax_scan"),
        "jax_loop_ms": 1e3 * timings.median("jax_loop"),
        "torch_eager_ms": 1e3 * timings.median(eager),
        "torch_over_scan": timings.ratio(eager, "jax_scan"),
        "loop_over_scan": timings.ratio("jax_loop", "jax_scan"),
        "torch_threads": threads,
        "rounds": timings.rounds,
    }


# --------------------------------------------------------------------------------------------
# Reports


def machine_description(torch=None) -> str:
    """One line: CPU model, cores, memory, jax/jaxlib and torch versions, backend."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        memory = f", {int(f.readline().split()[1]) / 2**20:.0f} GiB RAM"
    torch_version = f", torch {torch.__version__}" if torch is not None else ", no torch"
    device = jax.devices()[0]
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}; jax {jax.__version__} "
        f"({jax.default_backend()} backend, {device.device_kind}){torch_version}; "
        f"python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def _kib(n: int) -> str:
    return f"{n / 1024:.0f}" if n >= 1024 else f"{n / 1024:.2f}"


GRID_COLUMNS = (
    ("depth", "depth", lambda r: r["depth"]),
    ("width", "width", lambda r: r["width"]),
    ("batch", "batch", lambda r: r["batch"]),
    ("act", "g", lambda r: r["activation"]),
    ("dtype", "dtype", lambda r: r["dtype"]),
    ("custom ms", "custom_ms", lambda r: _fmt(r["custom_ms"])),
    ("l&g ms", "loss_and_grad_ms", lambda r: _fmt(r["loss_and_grad_ms"])),
    ("autodiff ms", "autodiff_ms", lambda r: _fmt(r["autodiff_ms"])),
    ("custom/ad", "custom_over_autodiff", lambda r: f"{r['custom_over_autodiff']:.3f}"),
    ("l&g/ad", "", lambda r: f"{r['loss_and_grad_over_autodiff']:.3f}"),
    ("dots c/ad", "", lambda r: f"{r['dots_custom']}/{r['dots_autodiff']}"),
    ("GFLOP/s", "", lambda r: _fmt(r["gflops_custom"])),
    ("of matmul", "", lambda r: f"{r['matmul_fraction_custom']:.2f}"),
    ("step ms", "", lambda r: _fmt(r["train_step_ms"])),
    ("loop/scan", "", lambda r: f"{r['loop_over_scan']:.2f}"),
    ("norms/grad", "", lambda r: f"{r['norms_over_grad']:.2f}"),
    ("vmap/norms", "", lambda r: _fmt(r["vmap_over_norms"])),
    ("torch ms", "", lambda r: _fmt(r["torch_eager_ms"])),
    ("compiled ms", "", lambda r: _fmt(r["torch_compile_ms"])),
    (
        "resid KiB c/ad",
        "",
        lambda r: f"{_kib(r['residual_custom_bytes'])}/{_kib(r['residual_autodiff_bytes'])}",
    ),
)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _where(row: dict[str, Any]) -> str:
    return f"depth {row['depth']}, width {row['width']}, batch {row['batch']}"


def evaluate_targets(
    rows: list[dict[str, Any]], digits: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each target of the issue with its measured figure: ``{"target", "figure", "holds"}``."""
    targets = []

    def add(target: str, figure: str, holds: bool) -> None:
        targets.append({"target": target, "figure": figure, "holds": bool(holds)})

    for key, label in (
        ("custom_over_autodiff", "apply(custom) under jax.grad"),
        ("loss_and_grad_over_autodiff", "loss_and_grad"),
    ):
        median = statistics.median(r[key] for r in rows)
        worst = max(rows, key=lambda r, key=key: r[key])
        add(
            f"{label} / jax.grad: median <= {TARGET_RATIO_MEDIAN:.2f}, "
            f"every point <= {TARGET_RATIO_MAX:.2f}",
            f"median {median:.3f}, max {worst[key]:.3f} ({_where(worst)})",
            median <= TARGET_RATIO_MEDIAN and worst[key] <= TARGET_RATIO_MAX,
        )
    big = [r for r in rows if r["width"] >= 1024 and r["batch"] >= 256]
    if big:
        custom = min(r["matmul_fraction_custom"] for r in big)
        lag = min(r["matmul_fraction_loss_and_grad"] for r in big)
        add(
            f"width >= 1024, batch >= 256: >= {TARGET_MATMUL_FRACTION:.0%} of the matmul FLOP/s",
            f"min {custom:.2f} (custom), {lag:.2f} (loss_and_grad) over {len(big)} points",
            min(custom, lag) >= TARGET_MATMUL_FRACTION,
        )
    for d in digits:
        if not math.isnan(d["torch_over_scan"]):
            add(
                f"digits {d['network']}: scan epoch >= {TARGET_DIGITS_SPEEDUP:.0f}x torch eager",
                f"{d['torch_over_scan']:.1f}x ({d['jax_scan_ms']:.2f} ms against "
                f"{d['torch_eager_ms']:.1f} ms)",
                d["torch_over_scan"] >= TARGET_DIGITS_SPEEDUP,
            )
    above = [r for r in rows if r["residual_custom_bytes"] > r["residual_autodiff_bytes"]]
    ratio = max(r["residual_custom_bytes"] / max(r["residual_autodiff_bytes"], 1) for r in rows)
    add(
        "residual memory of the custom backward <= autodiff's at every point",
        f"max custom/autodiff {ratio:.2f}; {len(above)} points above",
        not above,
    )
    at_target = [r for r in rows if r["width"] == 1024 and r["batch"] == 256]
    if at_target:
        worst = max(r["norms_over_grad"] for r in at_target)
        add(
            f"per_example_grad_norms <= {TARGET_NORMS_OVER_GRAD}x a gradient step "
            "(width 1024, batch 256)",
            f"max {worst:.2f} over depths {[r['depth'] for r in at_target]} "
            f"(whole grid: max {max(r['norms_over_grad'] for r in rows):.2f})",
            worst <= TARGET_NORMS_OVER_GRAD,
        )
        vmapped = [r for r in at_target if not math.isnan(r["vmap_over_norms"])]
        if vmapped:
            least = min(r["vmap_over_norms"] for r in vmapped)
            add(
                f"per_example_grad_norms >= {TARGET_VMAP_OVER_NORMS:.0f}x faster than "
                "vmap(grad) (width 1024, batch 256)",
                f"min {least:.1f}x over depths {[r['depth'] for r in vmapped]} (deeper: "
                "the B gradients exceed --per_example_max_mib)",
                least >= TARGET_VMAP_OVER_NORMS,
            )
    return targets


def report(
    rows: list[dict[str, Any]],
    digits: list[dict[str, Any]],
    targets: list[dict[str, Any]],
    machine: str,
    command: str,
    notes: Sequence[str] = (),
) -> str:
    """The markdown report: machine, command, the grid, digits, and the targets."""
    parts = [f"Machine: {machine}", "", f"Command: `{command}`", ""]
    parts += [
        "Times: medians over interleaved rounds, ms per call. Ratios (custom/ad, l&g/ad, "
        "of matmul, loop/scan, norms/grad, vmap/norms): medians over rounds of the ratio of "
        "calls made back to back. custom: jax.grad through apply(backward='custom'); l&g: "
        "jaxbp.loss_and_grad; ad: jax.grad through the plain forward; dots: matmuls in the "
        "compiled custom/autodiff programs; GFLOP/s: 6·batch·Σ n_in·n_out over the custom "
        "gradient's time; of matmul: time of those matmuls alone over the custom gradient's; "
        "step: a jitted optax adam step; loop/scan: an epoch's steps dispatched from Python "
        "over the same steps in one lax.scan; norms/grad: per_example_grad_norms over "
        "loss_and_grad; vmap/norms: norms of vmap(grad) over per_example_grad_norms; torch, "
        "compiled: PyTorch eager and torch.compile forward+backward; resid: residual KiB, "
        "custom/autodiff.",
        "",
        markdown_table(
            [c[0] for c in GRID_COLUMNS], [[c[2](r) for c in GRID_COLUMNS] for r in rows]
        ),
    ]
    if digits:
        parts += [
            "",
            "Digits, one epoch (ms), interleaved medians:",
            "",
            markdown_table(
                [
                    "network",
                    "steps",
                    "jax scan",
                    "jax loop",
                    "torch eager",
                    "torch/scan",
                    "loop/scan",
                ],
                [
                    [
                        d["network"],
                        d["steps"],
                        _fmt(d["jax_scan_ms"]),
                        _fmt(d["jax_loop_ms"]),
                        _fmt(d["torch_eager_ms"]),
                        _fmt(d["torch_over_scan"]),
                        _fmt(d["loop_over_scan"]),
                    ]
                    for d in digits
                ],
            ),
        ]
    parts += [
        "",
        "Targets:",
        "",
        markdown_table(
            ["target", "measured", "holds"],
            [[t["target"], t["figure"], "yes" if t["holds"] else "**no**"] for t in targets],
        ),
    ]
    if notes:
        parts += ["", *notes]
    return "\n".join(parts) + "\n"


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict[str, Any]], path: str) -> bool:
    """Four panels against the FLOPs of a step; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    flops = np.array([r["flops"] for r in rows], float)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0, 0]
    ax.scatter(
        flops, [r["custom_over_autodiff"] for r in rows], label="apply(custom) / jax.grad", s=14
    )
    ax.scatter(
        flops,
        [r["loss_and_grad_over_autodiff"] for r in rows],
        label="loss_and_grad / jax.grad",
        s=14,
        marker="x",
    )
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(TARGET_RATIO_MAX, color="r", lw=0.8, ls="--")
    ax.set(
        xscale="log", xlabel="FLOPs per step", ylabel="time ratio", title="hand-written / autodiff"
    )
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.scatter(flops, [r["matmul_fraction_custom"] for r in rows], s=14)
    ax.axhline(TARGET_MATMUL_FRACTION, color="r", lw=0.8, ls="--")
    ax.set(
        xscale="log",
        xlabel="FLOPs per step",
        ylabel="matmul time / gradient time",
        title="fraction of the matmul FLOP/s",
    )
    ax = axes[1, 0]
    for key, label in (
        ("custom_ms", "jax custom"),
        ("torch_eager_ms", "torch eager"),
        ("torch_compile_ms", "torch.compile"),
    ):
        ax.scatter(flops, [r[key] for r in rows], label=label, s=14)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="FLOPs per step",
        ylabel="ms per gradient",
        title="gradient time",
    )
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    custom = np.array([r["residual_custom_bytes"] for r in rows], float)
    autodiff = np.array([r["residual_autodiff_bytes"] for r in rows], float)
    ax.scatter(autodiff, custom, s=14)
    lims = [min(custom.min(), autodiff.min()) * 0.8, max(custom.max(), autodiff.max()) * 1.2]
    ax.plot(lims, lims, color="k", lw=0.8)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="autodiff residual bytes",
        ylabel="custom residual bytes",
        title="residual memory",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run_benchmark(
    config: BenchConfig, outdir: str, *, command: str = "", log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Runs the grid (and the digits epoch), writes CSV, markdown and plot to ``outdir``.

    Returns:
      ``{"rows", "digits", "targets", "markdown", "files"}``.
    """
    torch = import_torch() if config.torch else None
    if config.torch and torch is None:
        log("benchmark: torch is not importable; timing JAX only (pip install -e '.[bench]').")
    torch_runner = TorchRunner(torch, config) if torch is not None else None
    machine = machine_description(torch)
    log(f"benchmark: {machine}")
    os.makedirs(outdir, exist_ok=True)
    points = grid(config)
    rows = []
    start = time.perf_counter()
    for i, point in enumerate(points, start=1):
        row = run_point(point, config, torch_runner)
        rows.append(row)
        log(
            f"[{i}/{len(points)} {time.perf_counter() - start:6.0f}s] depth {point.depth} width "
            f"{point.width} batch {point.batch} {point.activation} {point.dtype}: custom "
            f"{row['custom_ms']:.3g} ms, custom/ad {row['custom_over_autodiff']:.3f}, "
            f"l&g/ad {row['loss_and_grad_over_autodiff']:.3f}, of matmul "
            f"{row['matmul_fraction_custom']:.2f}, torch {row['torch_eager_ms']:.3g} ms"
        )
    digits = digits_benchmark(config, torch) if config.digits else []
    targets = evaluate_targets(rows, digits)
    notes = []
    if torch_runner is not None and torch_runner.compile_error:
        notes.append(f"torch.compile does not work here: {torch_runner.compile_error}")
    markdown = report(rows, digits, targets, machine, command, notes)
    files = {
        "csv": os.path.join(outdir, "results.csv"),
        "markdown": os.path.join(outdir, "results.md"),
        "plot": os.path.join(outdir, "results.png"),
    }
    write_csv(rows, files["csv"])
    if digits:
        files["digits_csv"] = os.path.join(outdir, "digits.csv")
        write_csv(digits, files["digits_csv"])
    with open(files["markdown"], "w") as f:
        f.write(markdown)
    if not plot(rows, files["plot"]):
        del files["plot"]
    elapsed = time.perf_counter() - start
    log(f"benchmark: {len(rows)} points in {elapsed:.0f}s; wrote {', '.join(files.values())}")
    return {
        "rows": rows,
        "digits": digits,
        "targets": targets,
        "markdown": markdown,
        "files": files,
    }


def config_from_flags() -> BenchConfig:
    """The BenchConfig of the command line (``--quick`` replaces the grid)."""

    def ints(values):
        return tuple(int(v) for v in values)

    quick = _QUICK.value
    torch_compile = _TORCH_COMPILE.value if _TORCH_COMPILE.value is not None else not quick
    grid_flags = dict(
        depths=ints(_DEPTHS.value), widths=ints(_WIDTHS.value), batch_sizes=ints(_BATCHES.value)
    )
    if quick:
        for name, flag in (("depths", _DEPTHS), ("widths", _WIDTHS), ("batch_sizes", _BATCHES)):
            if not flag.present:
                grid_flags[name] = QUICK_GRID[name]
    return BenchConfig(
        **grid_flags,
        activations=tuple(_ACTIVATIONS.value),
        dtypes=tuple(_DTYPES.value),
        loss=_LOSS.value,
        num_outputs=_NUM_OUTPUTS.value,
        repeats=_REPEATS.value,
        point_budget=_POINT_BUDGET.value if _POINT_BUDGET.present or not quick else 4.0,
        epoch_steps=_EPOCH_STEPS.value,
        per_example_max_mib=_PER_EXAMPLE_MAX_MIB.value,
        torch=_TORCH.value,
        torch_compile=torch_compile,
        digits=_DIGITS.value,
        digits_budget=20.0 if not quick else 4.0,
    )


def main(argv: Sequence[str]) -> None:
    del argv
    config = config_from_flags()
    outdir = _OUTDIR.value or os.path.join(
        "runs", "bench-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    command = "./launch.sh bench " + " ".join(sys.argv[1:])
    result = run_benchmark(config, outdir, command=command.strip())
    print(result["markdown"])


if __name__ == "__main__":
    app.run(main)
