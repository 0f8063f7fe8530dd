"""Compiled training: optax optimisers, a jitted train step, and whole epochs under `lax.scan`.

Contract: a train step is the pure function
``(params, opt_state, (x, y)) -> (params, opt_state, metrics)``; its gradient comes from the
hand-written δ recursion (`backward="custom"`, `jaxbp.loss_and_grad`) or from `jax.grad`
through the plain forward (`backward="autodiff"`), and both give the same run to
floating-point tolerance. An epoch is one `jax.lax.scan` of that step over minibatches of a
permutation drawn from ``fold_in(key, epoch)``, so a run is a deterministic function of its
seed and small networks are not dominated by Python dispatch.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxbp import backprop, shuffle
from jaxbp.mlp import MLP, Params

Array = jax.Array
# (x, y), or (x, y, *extra) for a grad_fn that takes more (jaxbp.dp_sgd's mask and key).
Batch = tuple[Array, ...]
StepFn = Callable[[Params, optax.OptState, Batch], tuple[Params, optax.OptState, dict]]

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
        (`jaxbp.members.make_optimizer`); a member with λ = 0 adds ``0 · W``, no bit.

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


def make_loss_and_grad(
    model: MLP, loss: str, backward: str = "custom"
) -> Callable[[Params, Array, Array], tuple[Array, Params]]:
    """``(params, x, y) -> (loss, grads)`` by the derivation or by jax.grad.

    Args:
      model: the network.
      loss: a loss name.
      backward: ``"custom"`` (`jaxbp.loss_and_grad`, eqs. (3.2)-(3.6)) or ``"autodiff"``.
    """
    if backward == "custom":
        return lambda params, x, y: backprop.loss_and_grad(model, loss, params, x, y)
    if backward == "autodiff":
        return jax.value_and_grad(
            lambda params, x, y: backprop.loss_value(model, loss, params, x, y)
        )
    raise ValueError(
        f"unknown backward {backward!r}: expected one of {', '.join(backprop.BACKWARDS)}."
    )


def make_train_step(
    model: MLP,
    loss: str,
    optimizer: optax.GradientTransformation,
    *,
    backward: str = "custom",
    grad_fn: Callable[..., tuple[Array, Params]] | None = None,
    grad_norm: bool = True,
) -> StepFn:
    """A pure train step ``(params, opt_state, (x, y)) -> (params, opt_state, metrics)``.

    The update is optax's (for sgd: eq. (3.7), W ← W − η ∂L/∂W). Not jitted itself, so it
    can sit inside `make_epoch`'s scan; wrap it in `jax.jit` to call it alone.

    Args:
      model: the network.
      loss: a loss name.
      optimizer: an optax transformation.
      backward: ``"custom"`` or ``"autodiff"`` (ignored when ``grad_fn`` is given).
      grad_fn: overrides the gradient, ``(params, x, y) -> (loss, grads)``; a batch with
        entries after ``(x, y)`` passes them on, ``grad_fn(params, x, y, *extra)`` (the mask
        and noise key of `jaxbp.dp_sgd.make_private_grad_fn`).
      grad_norm: whether the metrics carry ``‖∇L‖₂``; a small network's step spends about
        5% of its time on it, so a caller that does not read it can leave it out.

    Returns:
      The step; metrics are ``{"loss": L before the update, "grad_norm": ‖∇L‖₂}`` (no
      ``"grad_norm"`` when ``grad_norm=False``).
    """
    grad_fn = grad_fn or make_loss_and_grad(model, loss, backward)

    def step(params: Params, opt_state: optax.OptState, batch: Batch):
        x, y, *extra = batch  # e.g. a private step's mask and noise key (jaxbp.dp_sgd)
        value, grads = grad_fn(params, x, y, *extra)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {"loss": value}
        if grad_norm:
            metrics["grad_norm"] = optax.tree.norm(grads)
        return params, opt_state, metrics

    return step


def epoch_key(key: Array, epoch: int | Array) -> Array:
    """The shuffling key of an epoch: ``fold_in(key, epoch)``, so resuming needs no state."""
    return jax.random.fold_in(key, epoch)


def batches_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches in an epoch, ``num_examples // batch_size``; the remainder is dropped.

    Raises:
      ValueError: when ``batch_size`` is not in ``[1, num_examples]``.
    """
    if not 0 < batch_size <= num_examples:
        raise ValueError(
            f"batch_size {batch_size} does not fit the {num_examples} training examples: "
            f"use a batch size from 1 to {num_examples}."
        )
    return num_examples // batch_size


def epoch_order(key: Array, epoch: int | Array, num_examples: int, batch_size: int) -> Array:
    """The minibatches of an epoch: ``(num_examples // batch_size, batch_size)`` row indices.

    A `jaxbp.shuffle.permutation` of the rows drawn from ``epoch_key(key, epoch)``, the last
    partial batch dropped.

    Raises:
      ValueError: when ``batch_size`` does not fit ``num_examples`` (`batches_per_epoch`).
    """
    num_batches = batches_per_epoch(num_examples, batch_size)
    order = shuffle.permutation(epoch_key(key, epoch), num_examples)
    return order[: num_batches * batch_size].reshape(num_batches, batch_size)


def make_epoch(
    step: StepFn,
    batch_size: int,
    *,
    num_examples: int | None = None,
    shard_batch: Callable[[Batch], Batch] | None = None,
    donate: bool = False,
) -> Callable[..., tuple[Params, optax.OptState, dict]]:
    """One epoch as a single `jax.lax.scan` over shuffled minibatches (jitted).

    The returned ``epoch(params, opt_state, x, y, key, epoch_index)`` visits the examples in
    the order `epoch_order` draws from ``fold_in(key, epoch_index)``, dropping the last partial
    batch, and scans ``step`` over the ``n // batch_size`` batches; metrics come back stacked,
    shape ``(steps,)`` each.

    Args:
      step: from `make_train_step`.
      batch_size: rows per step.
      num_examples: rows of ``x`` that are examples (default all; the data-parallel
        placement pads ``x`` past them).
      shard_batch: optional ``batch -> batch`` applied to every minibatch (the data-parallel
        sharding constraint of `jaxbp.parallel`).
      donate: donate the ``params`` and ``opt_state`` buffers to the epoch, which writes the
        new ones into them (`jax.jit`'s ``donate_argnums``): the caller must use only the
        returned state afterwards, as a training loop does. Saves an allocation per leaf.
    """

    epoch = functools.partial(
        run_epoch, step, batch_size, num_examples=num_examples, shard_batch=shard_batch
    )
    return jax.jit(epoch, donate_argnums=(0, 1) if donate else ())


def run_epoch(
    step: StepFn,
    batch_size: int,
    params: Params,
    opt_state: optax.OptState,
    x: Array,
    y: Array,
    key: Array,
    epoch_index: int | Array,
    *,
    num_examples: int | None = None,
    shard_batch: Callable[[Batch], Batch] | None = None,
) -> tuple[Params, optax.OptState, dict]:
    """The body of `make_epoch`'s epoch, not jitted: for callers that wrap it (`jax.vmap`).

    Args: as `make_epoch`'s epoch and `make_epoch`.

    Returns:
      ``(params, opt_state, metrics)``, the metrics stacked ``(steps,)`` each.
    """
    n = x.shape[0] if num_examples is None else num_examples
    order = epoch_order(key, epoch_index, n, batch_size)
    return scan_steps(step, params, opt_state, x, y, (order,), shard_batch=shard_batch)


def scan_steps(
    step: StepFn,
    params: Params,
    opt_state: optax.OptState,
    x: Array,
    y: Array,
    batches: tuple,
    *,
    shard_batch: Callable[[Batch], Batch] | None = None,
) -> tuple[Params, optax.OptState, dict]:
    """``step`` scanned over an epoch's minibatches (`jax.lax.scan`), not jitted.

    Args:
      step: from `make_train_step`.
      params, opt_state: the state the epoch starts from.
      x, y: the training split.
      batches: ``(rows, *extra)``, each with a leading ``steps`` axis: step t takes the batch
        ``(x[rows[t]], y[rows[t]], *extra[t])`` (extra: e.g. `jaxbp.dp_sgd`'s mask and key).
      shard_batch: optional ``batch -> batch`` applied to each ``(x[rows[t]], y[rows[t]])``.

    Returns:
      ``(params, opt_state, metrics)``, the metrics stacked ``(steps,)`` each.
    """

    def body(carry, per_step):
        rows, *extra = per_step
        batch = (x[rows], y[rows])
        if shard_batch is not None:
            batch = shard_batch(batch)
        params, opt_state, metrics = step(*carry, (*batch, *extra))
        return (params, opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), batches)
    return params, opt_state, metrics


def evaluate(
    model: MLP, loss: str, params: Params, x: Array, y: Array, task: str
) -> dict[str, Array]:
    """Loss and accuracy (classification) or R² (regression) on a whole split.

    Accuracy is argmax agreement for several outputs and ``ŷ > 0.5`` against ``y > 0.5`` for
    one; R² is ``1 − Σ(y − ŷ)² / Σ(y − ȳ)²`` over all outputs.

    Args:
      model, loss, params: the network, its loss name and parameters.
      x: ``(n, n0)``; y: ``(n, nL)``.
      task: ``"classification"`` or ``"regression"``.

    Returns:
      ``{"loss": ..., "accuracy": ...}`` or ``{"loss": ..., "r2": ...}``, scalars.
    """
    value = backprop.loss_value(model, loss, params, x, y)
    y_hat = backprop.apply(model, params, x, backward="autodiff")
    return {"loss": value, **output_metrics(y_hat, y, task)}


def output_metrics(y_hat: Array, y: Array, task: str) -> dict[str, Array]:
    """`evaluate`'s accuracy or R² from outputs ``ŷ: (n, nL)`` alone (e.g. an ensemble's mean)."""
    if task == "regression":
        residual = jnp.sum((y - y_hat) ** 2)
        total = jnp.sum((y - jnp.mean(y, axis=0)) ** 2)
        return {"r2": 1 - residual / total}
    if y.shape[-1] == 1:
        correct = (y_hat[:, 0] > 0.5) == (y[:, 0] > 0.5)
    else:
        correct = jnp.argmax(y_hat, axis=-1) == jnp.argmax(y, axis=-1)
    return {"accuracy": jnp.mean(correct)}
