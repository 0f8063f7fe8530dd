"""Optax optimisers and learning-rate schedules by name.

Contract: `make_schedule` maps a peak rate and a schedule name to an optax schedule
``step -> η_step``; `make_optimizer` maps an optimiser name, a rate (a number, a traced scalar
or a schedule) and its numbers to an `optax.GradientTransformation`. Both refuse an unknown
name with the list of known ones. `inject_learning_rate` puts the rate of every step into the
optimizer state (`optax.inject_hyperparams`), where `learning_rate_of` reads it back, so a run
logs the rate it used without rebuilding its schedule.
"""

from collections.abc import Callable
from typing import Any

import jax
import optax

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def make_schedule(
    learning_rate: float, schedule: str = "constant", *, total_steps: int = 1, warmup_steps: int = 0
) -> optax.Schedule:
    """A learning-rate schedule: constant, cosine decay, or linear warmup then cosine.

    Args:
      learning_rate: the peak rate η (> 0).
      schedule: one of `SCHEDULES`.
      total_steps: steps of the whole run (cosine decays to 0 over them).
      warmup_steps: linear warmup steps for ``"warmup_cosine"``.

    Returns:
      An optax schedule ``step -> η_step``.
    """
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}.")
    if schedule == "constant":
        return optax.constant_schedule(learning_rate)
    if schedule == "cosine":
        return optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))
    if schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, max(warmup_steps, 1), max(total_steps, warmup_steps + 1)
        )
    raise ValueError(f"unknown schedule {schedule!r}: expected one of {', '.join(SCHEDULES)}.")


def make_optimizer(
    name: str,
    learning_rate: float | jax.Array | optax.Schedule,
    *,
    momentum: float | jax.Array = 0.9,
    weight_decay: float | jax.Array = 0.0,
    decay: bool | None = None,
) -> optax.GradientTransformation:
    """An optax optimiser by name.

    ``"sgd"`` is eq. (3.7)'s update with the sign right, W ← W − η ∂L/∂W (the derivation writes
    ``+``, which is gradient ascent). Weight decay is decoupled (AdamW-style) for adam and
    added to the gradient (L2) for the SGD family.

    Args:
      name: one of `OPTIMIZERS`.
      learning_rate: η or a schedule.
      momentum: β for ``"momentum"`` and ``"nesterov"``.
      weight_decay: λ ≥ 0.
      decay: whether the chain applies weight decay at all; default ``weight_decay != 0``.
        A member set fixes it for every member, whose λ may then be traced
        (`jaxbp.training.members.make_optimizer`); a member with λ = 0 adds ``0 · W``, no bit.

    Returns:
      The `optax.GradientTransformation`.
    """
    if isinstance(weight_decay, int | float) and weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    if decay is None:
        decay = bool(weight_decay)
    if name == "adam":
        return (
            optax.adamw(learning_rate, weight_decay=weight_decay)
            if decay
            else optax.adam(learning_rate)
        )
    if name == "sgd":
        sgd = optax.sgd(learning_rate)
    elif name == "momentum":
        sgd = optax.sgd(learning_rate, momentum=momentum)
    elif name == "nesterov":
        sgd = optax.sgd(learning_rate, momentum=momentum, nesterov=True)
    else:
        raise ValueError(f"unknown optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}.")
    return optax.chain(optax.add_decayed_weights(weight_decay), sgd) if decay else sgd


def inject_learning_rate(
    make: Callable[[jax.Array], optax.GradientTransformation],
    learning_rate: float | jax.Array | optax.Schedule,
) -> optax.GradientTransformation:
    """``make(η)`` with η injected by `optax.inject_hyperparams`.

    Each update evaluates ``learning_rate`` (a schedule of the step count, or a number) and
    keeps the value in the state (`learning_rate_of`); the update is the one ``make`` builds
    with that value, bit for bit the optimizer ``make(learning_rate)`` of a schedule.

    Args:
      make: an optimizer from one rate, e.g. ``lambda lr: make_optimizer("adam", lr)``.
      learning_rate: η, or a schedule ``step -> η_step``.
    """
    return optax.inject_hyperparams(lambda learning_rate: make(learning_rate))(
        learning_rate=learning_rate
    )


def learning_rate_of(opt_state: Any) -> jax.Array:
    """The rate of the last update of an `inject_learning_rate` state (before any: step 0's).

    Stacked states (a leading member axis) give one rate per member, ``(M,)``.
    """
    return opt_state.hyperparams["learning_rate"]
