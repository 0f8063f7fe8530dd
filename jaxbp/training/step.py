"""The train step: one minibatch's gradient and optimiser update, a pure function.

Contract: a train step is the pure function
``(params, opt_state, (x, y)) -> (params, opt_state, metrics)``; its gradient comes from the
hand-written δ recursion (`backward="custom"`, `jaxbp.loss_and_grad`) or from `jax.grad`
through the plain forward (`backward="autodiff"`), and both give the same run to
floating-point tolerance. `jaxbp.training.epoch` scans it over an epoch.
"""

from collections.abc import Callable

import jax
import optax

from jaxbp import backprop
from jaxbp.mlp import MLP, Params

Array = jax.Array
# (x, y), or (x, y, *extra) for a grad_fn that takes more (jaxbp.dp_sgd's mask and key).
Batch = tuple[Array, ...]
StepFn = Callable[[Params, optax.OptState, Batch], tuple[Params, optax.OptState, dict]]


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
