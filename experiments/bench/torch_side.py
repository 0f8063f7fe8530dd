"""The PyTorch side: a JAX network's weights, batch and loss in PyTorch, timed at 1 and at all
CPU threads (``KIND@THREADS``) and reported at the faster (docs/performance.md says why)."""

import functools
import importlib.util
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench.config import BenchConfig, Point
from experiments.bench.host import Thunk, Timings
from jaxbp import activations
from jaxbp.mlp import MLP


def import_torch() -> Any:
    """torch, or None where it is not installed."""
    return importlib.import_module("torch") if importlib.util.find_spec("torch") else None


def to_torch(torch: Any, array: Any, dtype: str) -> Any:
    """A JAX array as a torch tensor of ``dtype`` (through float32 for bfloat16)."""
    host = np.array(jnp.asarray(array, jnp.float32) if dtype == "bfloat16" else array)
    return torch.from_numpy(host).to(getattr(torch, dtype))


def torch_mlp(torch: Any, model: MLP, params: Any, dtype: str, *, fused_output: bool) -> Any:
    """The network in PyTorch with the JAX weights; ``fused_output`` leaves out f."""
    nn = torch.nn
    named = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(activations.LEAKY_RELU_SLOPE)}
    layers = []
    for k, (layer, act) in enumerate(zip(params, model.layer_activations, strict=True)):
        n_out, n_in = layer["W"].shape
        layers.append(nn.Linear(n_in, n_out, bias=model.use_bias, dtype=getattr(torch, dtype)))
        if not (fused_output and k == model.num_layers - 1):  # nn.Identity, nn.Tanh, ...
            layers.append((named.get(act.name) or getattr(nn, act.name.capitalize()))())
    net = nn.Sequential(*layers)
    with torch.no_grad():  # W and b of a layer, as weight and bias
        for tensor, leaf in zip(net.parameters(), jax.tree.leaves(params), strict=True):
            tensor.copy_(to_torch(torch, leaf, dtype))
    return net


def torch_loss(torch: Any, loss: str) -> Callable:
    """``(output, y) -> scalar``: the grid's mse, or digits' cross-entropy from the logits."""
    return {
        "mse": lambda out, y: ((out - y) ** 2).sum() / len(y),
        "softmax_cross_entropy": lambda z, y: (
            torch.nn.functional.cross_entropy(z, y, reduction="sum") / len(y)
        ),
    }[loss]


def at_threads(torch: Any, kind: str, thunk: Thunk) -> dict[str, Thunk]:
    """``{KIND@T: thunk run with T torch threads}`` for T in 1 and all CPU threads."""

    def run(threads: int) -> Any:
        torch.set_num_threads(threads)
        return thunk()

    return {f"{kind}@{t}": functools.partial(run, t) for t in sorted({1, os.cpu_count() or 1})}


def at_fastest(timings: Timings, kinds: Sequence[str]) -> tuple[Timings, dict[str, int | None]]:
    """``timings`` with each kind's fastest ``KIND@T`` also named KIND, and each kind's T (None
    where it was not timed)."""
    samples, threads = dict(timings.samples), {}
    for kind in kinds:
        names = [n for n in timings.samples if n.startswith(kind + "@")]
        threads[kind] = None
        if fastest := min(names, key=timings.median, default=None):
            samples[kind], threads[kind] = timings.samples[fastest], int(fastest.split("@")[1])
    return Timings(samples, timings.rounds), threads


def gradient_step(net: Any, loss_of: Callable, x: Any, y: Any) -> Thunk:
    """A thunk of zero_grad, ``loss_of(x, y)`` and backward()."""

    def step():
        net.zero_grad(set_to_none=True)
        (value := loss_of(x, y)).backward()
        return value

    return step


class TorchRunner:
    """The PyTorch gradient steps of the grid, one torch.compile per network shape."""

    def __init__(self, torch: Any, config: BenchConfig):
        self.torch, self.config = torch, config
        self.shape: Any = None  # of the network compiled (self.net, self.compiled)
        self.compile_error: str | None = None
        torch._dynamo.config.cache_size_limit = 64  # a recompile per batch size

    def thunks(self, point: Point, inputs: dict[str, Any]) -> tuple[dict[str, Thunk], float]:
        """``({KIND@T: thunk}, seconds compiling)``: eager and compiled steps, 1 and all T."""
        torch, loss_fn = self.torch, torch_loss(self.torch, "mse")
        net = torch_mlp(torch, inputs["model"], inputs["params"], point.dtype, fused_output=False)
        x, y = (to_torch(torch, inputs[k], point.dtype) for k in ("x", "y"))
        eager = gradient_step(net, lambda x, y: loss_fn(net(x), y), x, y)
        thunks = at_threads(torch, "torch_eager", eager)
        if not self.config.torch_compile or self.compile_error:
            return thunks, math.nan
        if self.shape != (inputs["model"], point.dtype):  # compiled once, dynamic in the batch
            torch._dynamo.reset()
            self.shape, self.net = (inputs["model"], point.dtype), net
            self.compiled = torch.compile(lambda x, y: loss_fn(net(x), y))
        self.net.load_state_dict(net.state_dict())  # this point's weights
        start = time.perf_counter()
        try:
            step = gradient_step(self.net, self.compiled, x, y)
            step()  # compiles for this batch size
            thunks |= at_threads(torch, "torch_compile", step)
        except Exception as e:  # noqa: BLE001 -- any compiler failure means "does not work"
            self.compile_error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        return thunks, time.perf_counter() - start
