"""The JAX side of a grid point: its network, batch, compiled variants and static figures."""

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import jaxbp
from experiments.bench.config import BenchConfig, Point
from experiments.bench.host import Thunk
from jaxbp import backprop, per_example, training
from jaxbp.gradient_check import random_targets
from jaxbp.mlp import MLP

LOSS = "mse"  # the grid's loss: its output layer stays plain (identity)


def make_batch(model: MLP, batch: int, dtype: Any, key: jax.Array) -> tuple[Any, Any]:
    """Normal ``x`` of ``(batch, n0)`` and targets of the grid's loss."""
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (batch, model.sizes[0]), dtype)
    return x, random_targets(ky, model, LOSS, batch, dtype)


def grid_network(point: Point, key: jax.Array) -> tuple[MLP, Any, Any, Any]:
    """``(model, params, x, y)``: ``depth`` hidden layers of ``width``, then 10 outputs."""
    model = MLP((point.width,) * (point.depth + 1) + (10,), point.activation, "identity")
    key_params, key_batch = jax.random.split(key)
    params = jaxbp.init_params(key_params, model, dtype=jnp.dtype(point.dtype))
    return model, params, *make_batch(model, point.batch, jnp.dtype(point.dtype), key_batch)


def loss_fn(model: MLP, backward: str) -> Callable:
    """``(params, x, y) -> loss`` through ``apply(backward=backward)``."""
    return lambda p, x, y: backprop.loss_value(model, LOSS, p, x, y, backward=backward)


def compiled_thunk(f: Callable, *args: Any) -> tuple[Thunk, Any]:
    """``f`` compiled ahead of time for ``args``, and a thunk that calls it on them."""
    compiled = jax.jit(f).lower(*args).compile()
    return (lambda: compiled(*args)), compiled


def residual_bytes(f: Callable, params: Any, x: jax.Array, y: jax.Array) -> int:
    """Bytes the forward half of ``jax.vjp(f)`` keeps for the backward half: the compiled
    forward's output less the loss value and the inputs it passes through unchanged (jaxpr
    outputs that are jaxpr inputs: the weights and ``x``, which the caller holds anyway)."""

    def forward(params, x, y):
        return jax.vjp(lambda p: f(p, x, y), params)

    jaxpr = jax.make_jaxpr(forward)(params, x, y).jaxpr
    value, *residuals = jaxpr.outvars
    passed = [value, *(v for v in residuals if any(v is u for u in jaxpr.invars))]
    output = jax.jit(forward).lower(params, x, y).compile().memory_analysis().output_size_in_bytes
    return int(output - sum(v.aval.size * v.aval.dtype.itemsize for v in passed))


def python_loop_epoch(step_fn: Callable, batch_size: int, args: tuple) -> Thunk:
    """`jaxbp.training.make_epoch`'s epoch on ``args = (params, opt_state, x, y, key,
    epoch_index)`` as a Python loop, the same shuffle and steps, each step a jitted call."""
    num_examples = len(args[2])
    permute = jax.jit(lambda key, e: training.epoch_order(key, e, num_examples, batch_size))
    step_at = jax.jit(lambda p, s, x, y, order, i: step_fn(p, s, (x[order[i]], y[order[i]])))
    indices = [jnp.int32(i) for i in range(num_examples // batch_size)]

    def epoch():
        params, opt_state, x, y, key, epoch_index = args
        order = permute(key, epoch_index)
        for i in indices:
            params, opt_state, _ = step_at(params, opt_state, x, y, order, i)
        return params

    return epoch


def jax_variants(point: Point, config: BenchConfig) -> tuple[dict, dict, dict]:
    """The JAX thunks of a point, its static figures, and its inputs (for PyTorch)."""
    dtype, batch = jnp.dtype(point.dtype), point.batch
    key, key_epoch = jax.random.split(jax.random.key(0))
    model, params, x, y = grid_network(point, key)

    def vmap_norms(p, x, y):
        grad = jax.grad(loss_fn(model, "autodiff"))
        grads = jax.vmap(lambda x_i, y_i: grad(p, x_i[None], y_i[None]))
        leaves = jax.tree.leaves(grads(x, y))
        return jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for g in leaves))

    def matmuls(params, acts, deltas):  # per layer a gradient step's a Wᵀ, δ W and δᵀ a
        layers = zip(params, acts, deltas, strict=True)
        return [(a @ p["W"].T, d @ p["W"], d.T @ a) for p, a, d in layers]

    gradients = {
        "custom": jax.value_and_grad(loss_fn(model, "custom")),
        "loss_and_grad": lambda p, x, y: backprop.loss_and_grad(model, LOSS, p, x, y),
        "autodiff": jax.value_and_grad(loss_fn(model, "autodiff")),
        "norms": lambda p, x, y: per_example.per_example_grad_norms(model, LOSS, p, x, y),
        "clipped": lambda p, x, y: per_example.clipped_loss_and_grad(model, LOSS, p, x, y, 1.0),
    }
    num_params = sum(leaf.size for leaf in jax.tree.leaves(params))
    if batch * num_params * dtype.itemsize / 2**20 <= config.per_example_max_mib:
        gradients["vmap_norms"] = vmap_norms  # B copies of the parameters
    thunks, compiled = {}, {}
    for name, f in gradients.items():
        thunks[name], compiled[name] = compiled_thunk(f, params, x, y)
    acts = [jnp.ones((batch, n), dtype) for n in model.sizes[:-1]]
    deltas = [jnp.ones((batch, n), dtype) for n in model.sizes[1:]]
    thunks["matmul"], _ = compiled_thunk(matmuls, params, acts, deltas)

    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)
    step_fn = training.make_train_step(model, LOSS, optimizer)
    thunks["train_step"], _ = compiled_thunk(step_fn, params, opt_state, (x, y))
    x_epoch, y_epoch = make_batch(model, config.epoch_steps * batch, dtype, key_epoch)
    epoch_args = (params, opt_state, x_epoch, y_epoch, key_epoch, 0)
    epoch = training.make_epoch(step_fn, batch).lower(*epoch_args).compile()
    thunks["epoch_scan"] = lambda: epoch(*epoch_args)
    thunks["epoch_loop"] = python_loop_epoch(step_fn, batch, epoch_args)
    jax.block_until_ready(thunks["epoch_loop"]())  # compiles its two programs

    layer_shapes = zip(model.sizes[:-1], model.sizes[1:], strict=True)
    residual = {b: residual_bytes(loss_fn(model, b), params, x, y) for b in ("custom", "autodiff")}
    figures = {
        "flops": 6 * batch * sum(n_in * n_out for n_in, n_out in layer_shapes),  # 3 matmuls
        "num_params": num_params,
        **{f"dots_{b}": len(re.findall(r"\bdot\(", compiled[b].as_text())) for b in residual},
        **{f"residual_{b}_bytes": residual[b] for b in residual},
        "residual_ratio": residual["custom"] / max(residual["autodiff"], 1),
        **{f"temp_{b}_bytes": compiled[b].memory_analysis().temp_size_in_bytes for b in residual},
    }
    return thunks, figures, {"model": model, "params": params, "x": x, "y": y}
