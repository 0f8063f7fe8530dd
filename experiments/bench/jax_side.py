"""The JAX side of one grid point: its network, batch, and compiled variants to time.

Beside the variants, the point's static figures: the FLOP count of a gradient step, the
matmuls in the compiled programs, and the residual memory the forward keeps for the backward.
"""

import contextlib
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import jaxbp
from experiments.bench.config import BenchConfig, Point
from experiments.bench.timing import Thunk, _block
from jaxbp import backprop, per_example, train
from jaxbp.gradient_check import random_targets
from jaxbp.mlp import MLP

Array = jax.Array


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
    return x, random_targets(ky, model, loss, batch, dtype)


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
    permute = jax.jit(lambda key, e: train.epoch_order(key, e, num_examples, batch_size))
    step_at = jax.jit(lambda p, s, x, y, order, i: step_fn(p, s, (x[order[i]], y[order[i]])))
    indices = [jnp.int32(i) for i in range(num_batches)]

    def epoch(params, opt_state, x, y, key, epoch_index):
        order = permute(key, epoch_index)
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
