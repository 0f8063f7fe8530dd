"""The PyTorch side: the same network, weights, batch and loss as the JAX side, in PyTorch.

Each gradient step is run eager and under torch.compile, pinned to 1 and to all CPU threads;
the report takes the faster thread count.
"""

import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

import jaxbp
from experiments.bench.config import BenchConfig, Point
from experiments.bench.timing import Thunk, Timings
from jaxbp.mlp import MLP


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
