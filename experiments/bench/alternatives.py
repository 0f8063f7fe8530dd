"""jaxbp's speed choices against the code each one replaced, timed in the same rounds.

Both sides are compiled from the library; the replaced code is patched in only while its side
is traced, and a patch that leaves the compiled program unchanged is an error.
"""

import contextlib
from collections.abc import Callable
from typing import Any
from unittest import mock

import jax
import jax.numpy as jnp

from experiments.bench import digits, host
from experiments.bench.config import BenchConfig, Point
from experiments.bench.host import Thunk
from experiments.bench.jax_side import compiled_thunk, grid_network, loss_fn
from jaxbp import activations, mlp


def one_minus_a_squared() -> Any:
    def derivative(a):
        return 1 - a * a

    tanh = activations.Activation("tanh", jnp.tanh, derivative, lambda a, g: g * derivative(a))
    return mock.patch.dict(activations.ACTIVATIONS, tanh=tanh)


def matmul_with_transpose() -> Any:
    def layer_forward(a_prev, layer):
        z = a_prev @ layer["W"].T
        return z + layer["b"] if "b" in layer else z

    return mock.patch.object(mlp, "layer_forward", layer_forward)


def gradients(width: int, batch: int, backward: str, patch: Callable) -> tuple[str, Thunk, Thunk]:
    """``(what is timed, jaxbp's gradient, the gradient traced under patch)``."""
    point = Point(depth=2, width=width, batch=batch, activation="tanh", dtype="float32")
    model, params, x, y = grid_network(point, jax.random.key(0))
    sides = []
    for context in (contextlib.nullcontext, patch):
        with context():
            sides.append(compiled_thunk(jax.value_and_grad(loss_fn(model, backward)), params, x, y))
    (chosen, compiled), (other, other_compiled) = sides
    if compiled.as_text() == other_compiled.as_text():
        raise RuntimeError(f"{patch.__name__} left the compiled gradient unchanged.")
    return f"{backward} gradient, depth 2, width {width}, batch {batch}", chosen, other


def measure(config: BenchConfig) -> list[dict[str, Any]]:
    """One row per choice: both sides' ms, and the replaced side's time over the chosen's."""
    training = digits.run_training()
    epoch = f"digits {'-'.join(map(str, training.model.sizes))} epoch"
    einsum = ("layer as einsum('...i,oi->...o')", "a_prev @ W.T")
    choices = [  # (choice, replaced code, what is timed, chosen thunk, replaced thunk)
        ("tanh' = (1 - a)(1 + a)", "1 - a*a", *gradients(32, 1024, "custom", one_minus_a_squared)),
        (*einsum, *gradients(1024, 1, "custom", matmul_with_transpose)),
        (*einsum, *gradients(1024, 1, "autodiff", matmul_with_transpose)),
        ("make_train_step(grad_norm=False)", "grad_norm=True", epoch, digits.scan_epoch(training),
         digits.scan_epoch(training, grad_norm=True)),
        ("make_epoch(donate=True)", "donate=False", epoch, digits.scan_epoch(training),
         digits.scan_epoch(training, donate=False)),
    ]  # fmt: skip
    rows = []
    for choice, replaced, program, chosen, other in choices:
        jax.block_until_ready((chosen(), other()))  # compiles the jitted epochs
        timings = host.time_interleaved(
            {"chosen": chosen, "replaced": other},
            min_rounds=config.repeats,
            budget=config.point_budget,
            warmup_calls=config.digits_warmup_calls,
        )
        rows.append(
            {
                "choice": choice,
                "replaced": replaced,
                "program": program,
                **timings.ms("chosen", "replaced"),
                "replaced_over_chosen": timings.ratio("replaced", "chosen"),
                "rounds": timings.rounds,
            }
        )
    return rows
