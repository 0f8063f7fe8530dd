"""jaxbp's speed choices against the code each one replaced, timed in the same rounds.

Both sides of a choice are compiled from the library itself; the replaced code is patched in
only while its side is traced, and a patch that leaves the compiled program unchanged is an
error. The digits epochs are the trainer's (`digits.scan_epoch`).
"""

import contextlib
from typing import Any
from unittest import mock

import jax
import jax.numpy as jnp

import jaxbp
from experiments.bench import digits as digits_lib
from experiments.bench.config import BenchConfig, Point
from experiments.bench.jax_side import build_model, compiled_thunk, make_batch
from experiments.bench.timing import time_interleaved
from jaxbp import activations, backprop, mlp


def _tanh_one_minus_a_squared():
    def derivative(a):
        return 1 - a * a

    tanh = activations.Activation("tanh", jnp.tanh, derivative, lambda a, g: g * derivative(a))
    return mock.patch.dict(activations.ACTIVATIONS, tanh=tanh)


def _matmul_with_transpose():
    def layer_forward(a_prev, layer):
        z = a_prev @ layer["W"].T
        return z + layer["b"] if "b" in layer else z

    return mock.patch.object(mlp, "layer_forward", layer_forward)


def _gradients(point: Point, backward: str, patch) -> tuple[str, Any, Any]:
    """``(what is timed, jaxbp's gradient, the gradient traced under patch)``: thunks."""
    model = build_model(point, "mse", 10)
    params = jaxbp.init_params(jax.random.key(0), model)
    x, y = make_batch(model, "mse", point.batch, jnp.float32, jax.random.key(1))

    def value(p, x, y):
        return backprop.loss_value(model, "mse", p, x, y, backward=backward)

    sides = []
    for context in (contextlib.nullcontext, patch):
        with context():
            sides.append(compiled_thunk(jax.value_and_grad(value), params, x, y))
    (chosen, compiled), (other, other_compiled) = sides
    if compiled.as_text() == other_compiled.as_text():
        raise RuntimeError(f"{patch.__name__} left the compiled gradient unchanged.")
    where = f"{backward} gradient, depth {point.depth}, width {point.width}, batch {point.batch}"
    return where, chosen, other


def alternatives(config: BenchConfig) -> list[tuple[str, str, str, Any, Any]]:
    """``(choice, replaced code, what is timed, chosen thunk, replaced thunk)`` of each."""
    small = Point(depth=2, width=32, batch=1024, activation="tanh", dtype="float32")
    row = Point(depth=2, width=1024, batch=1, activation="tanh", dtype="float32")
    einsum = ("layer as einsum('...i,oi->...o')", "a_prev @ W.T")
    training = digits_lib.trainer_training()
    epoch = f"digits {'-'.join(map(str, training.model.sizes))} epoch"
    return [
        (
            "tanh' = (1 - a)(1 + a)",
            "1 - a*a",
            *_gradients(small, "custom", _tanh_one_minus_a_squared),
        ),
        (*einsum, *_gradients(row, "custom", _matmul_with_transpose)),
        (*einsum, *_gradients(row, "autodiff", _matmul_with_transpose)),
        (
            "make_train_step(grad_norm=False)",
            "grad_norm=True",
            epoch,
            digits_lib.scan_epoch(training),
            digits_lib.scan_epoch(training, grad_norm=True),
        ),
        (
            "make_epoch(donate=True)",
            "donate=False",
            epoch,
            digits_lib.scan_epoch(training),
            digits_lib.scan_epoch(training, donate=False),
        ),
    ]


def measure(config: BenchConfig) -> list[dict[str, Any]]:
    """One row per choice: both sides' ms, and the replaced side's time over the chosen's."""
    rows = []
    for choice, replaced, program, chosen, other in alternatives(config):
        jax.block_until_ready((chosen(), other()))  # compiles the jitted epochs
        timings = time_interleaved(
            {"chosen": chosen, "replaced": other},
            min_rounds=config.repeats,
            budget=config.point_budget,
            groups=[("chosen", "replaced")],
            warmup_calls=config.digits_warmup_calls,
        )
        rows.append(
            {
                "choice": choice,
                "replaced": replaced,
                "program": program,
                "chosen_ms": 1e3 * timings.median("chosen"),
                "replaced_ms": 1e3 * timings.median("replaced"),
                "replaced_over_chosen": timings.ratio("replaced", "chosen"),
                "rounds": timings.rounds,
            }
        )
    return rows
