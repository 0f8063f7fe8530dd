"""Gradient checking: the hand-written gradients against jax.grad and finite differences.

For every layer and leaf, three relative errors (CS231n-style, element-wise
``|a − b| / max(|a|, |b|)``, the maximum over the leaf):

* ``loss_and_grad`` (the derivation alone) against ``jax.grad`` of the plain forward;
* ``jax.grad`` through ``apply(backward="custom")`` (the custom_vjp) against the same;
* ``loss_and_grad`` against fourth-order central finite differences
  ``(−L(θ + 2h e_i) + 8L(θ + h e_i) − 8L(θ − h e_i) + L(θ − 2h e_i)) / 12h`` on a sample of
  entries, in float64 only. Its truncation error is O(h⁴), so a step large enough to keep
  rounding small (h = 1e-3) still agrees to ~1e-10. An entry whose steps move a
  ReLU-family pre-activation across its kink is skipped (no derivative there).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxbp import backprop
from jaxbp import losses as losses_lib
from jaxbp import mlp as mlp_lib
from jaxbp.mlp import MLP, Params

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

# Thresholds of the project (README, "Gradient checks").
AUTODIFF_THRESHOLD = {"float64": 1e-10, "float32": 1e-5}
FINITE_DIFF_THRESHOLD = 1e-6
# A finite difference carries rounding noise ≈ ε_64 · |L| / h ≈ 2e-13 · |L| at h = 1e-3, so an
# exact zero (a dead ReLU unit) cannot be matched relatively: denominators are floored at
# FINITE_DIFF_FLOOR · max(1, |L|), i.e. entries below it are compared at 1e-12 · max(1, |L|).
FINITE_DIFF_FLOOR = 1e-6


class LeafCheck(NamedTuple):
    """The check of one parameter leaf (e.g. layer 2, ``"W"``: seed 003's ∂L/∂W^[2])."""

    layer: int
    leaf: str
    shape: tuple[int, ...]
    vs_autodiff: float
    custom_vjp_vs_autodiff: float
    vs_finite_diff: float
    fd_entries: int
    fd_skipped: int


class GradCheckReport(NamedTuple):
    """All leaves of one check (seed 003's four gradients and more), with the thresholds."""

    rows: tuple[LeafCheck, ...]
    dtype: str
    autodiff_threshold: float
    finite_diff_threshold: float

    @property
    def passed(self) -> bool:
        """True when every leaf is within both thresholds."""
        return all(
            r.vs_autodiff <= self.autodiff_threshold
            and r.custom_vjp_vs_autodiff <= self.autodiff_threshold
            and (r.fd_entries == 0 or r.vs_finite_diff <= self.finite_diff_threshold)
            for r in self.rows
        )

    @property
    def max_vs_autodiff(self) -> float:
        """Worst relative error of either hand-written path against jax.grad."""
        return max(max(r.vs_autodiff, r.custom_vjp_vs_autodiff) for r in self.rows)

    @property
    def max_vs_finite_diff(self) -> float:
        """Worst relative error against finite differences (nan if none were taken)."""
        values = [r.vs_finite_diff for r in self.rows if r.fd_entries]
        return max(values) if values else float("nan")

    def table(self) -> str:
        """The report as a markdown table."""
        lines = [
            "| layer | leaf | shape | hand vs jax.grad | custom_vjp vs jax.grad "
            "| hand vs finite diff | fd entries (skipped) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.layer} | {r.leaf} | {r.shape} | {r.vs_autodiff:.1e} "
                f"| {r.custom_vjp_vs_autodiff:.1e} | {r.vs_finite_diff:.1e} "
                f"| {r.fd_entries} ({r.fd_skipped}) |"
            )
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(
            f"\n{verdict} ({self.dtype}): thresholds {self.autodiff_threshold:.0e} vs "
            f"jax.grad, {self.finite_diff_threshold:.0e} vs finite differences."
        )
        return "\n".join(lines)


def relative_error(a: ArrayLike, b: ArrayLike, floor: float = 0.0) -> float:
    """Max over entries of ``|a − b| / max(|a|, |b|, floor)``; 0 where both are 0.

    A NaN or inf anywhere gives inf: a broken gradient must never pass.
    """
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    if not (np.isfinite(a64).all() and np.isfinite(b64).all()):
        return float("inf")
    denom = np.maximum(np.maximum(np.abs(a64), np.abs(b64)), floor)
    diff = np.abs(a64 - b64)
    ratio = np.divide(diff, denom, out=np.zeros_like(diff), where=denom > 0)
    return float(ratio.max()) if ratio.size else 0.0


def _kink_pattern(model: MLP, params: Params, x: Array) -> Array:
    """The side of its kink every ReLU-family unit is on (empty if there is none).

    Read from the activations: a > 0 exactly when z > 0, the same test that picks the branch
    of ``derivative_from_output``.
    """
    acts = mlp_lib.forward_layers(model, params, x).a[1:]
    signs = [
        (a > 0).ravel()
        for a, act in zip(acts, model.layer_activations, strict=True)
        if act.has_kink
    ]
    return jnp.concatenate(signs) if signs else jnp.zeros((0,), bool)


def finite_difference_grads(
    model: MLP,
    loss: str,
    params: Params,
    x: Array,
    y: Array,
    indices: Array,
    *,
    step: float = 1e-3,
) -> tuple[Array, Array]:
    """Fourth-order central differences of the loss at the given flat parameter indices.

    Args:
      model, loss, params, x, y: as for `loss_and_grad`.
      indices: ``(m,)`` indices into ``ravel_pytree(params)``.
      step: the step h.

    Returns:
      ``(fd, valid)``: ``(m,)`` estimates and whether the ±h steps stayed off every kink.
    """
    flat, unravel = ravel_pytree(params)
    pattern = _kink_pattern(model, params, x)

    def one(i: Array) -> tuple[Array, Array]:
        values, same_side = [], jnp.array(True)
        for multiple in (2, 1, -1, -2):
            shifted = unravel(flat.at[i].add(multiple * step))
            values.append(backprop.loss_value(model, loss, shifted, x, y))
            same_side &= jnp.all(_kink_pattern(model, shifted, x) == pattern)
        fd = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * step)
        return fd, same_side

    return jax.jit(jax.vmap(one))(indices)


def gradcheck(
    model: MLP,
    loss: str,
    params: Params,
    x: Array,
    y: Array,
    *,
    fd_entries_per_leaf: int = 32,
    fd_step: float = 1e-3,
    seed: int = 0,
) -> GradCheckReport:
    """Checks the hand-written gradients (seed 002 §3.6, seed 003 Summary of Gradients).

    Args:
      model, loss, params, x, y: as for `loss_and_grad`.
      fd_entries_per_leaf: entries per leaf checked by finite differences (all of them when
        the leaf is smaller); finite differences run in float64 only.
      fd_step: the finite-difference step h.
      seed: picks the sampled entries.

    Returns:
      A `GradCheckReport`; ``report.passed`` is the verdict, ``report.table()`` the table.

    Raises:
      ValueError: for params that are not float32 or float64, an empty batch, or targets the
        loss cannot fit (`jaxbp.losses.check_targets`).
    """
    dtype = jnp.result_type(*jax.tree.leaves(params))
    if dtype not in (jnp.float32, jnp.float64):
        raise ValueError(f"gradcheck needs float32 or float64 params, got {dtype}.")
    dtype_name = jnp.dtype(dtype).name
    if jnp.size(x) == 0:
        raise ValueError(
            f"gradcheck got x of shape {tuple(jnp.shape(x))}: with no examples every gradient is "
            "zero and the check would pass without checking anything; pass at least one row."
        )
    losses_lib.check_targets(loss, y)
    x = jnp.asarray(x, dtype)
    y = jnp.asarray(y, dtype)

    value, hand = backprop.loss_and_grad(model, loss, params, x, y)
    fd_floor = FINITE_DIFF_FLOOR * max(1.0, abs(float(value)))
    oracle = jax.grad(backprop.loss_value, argnums=2)(model, loss, params, x, y)
    through_vjp = jax.grad(lambda p: backprop.loss_value(model, loss, p, x, y, backward="custom"))(
        params
    )

    leaves_hand, _ = jax.tree_util.tree_flatten_with_path(hand)
    sizes = [leaf.size for _, leaf in leaves_hand]
    offsets = np.cumsum([0] + sizes)
    rng = np.random.default_rng(seed)
    picks = []
    for offset, size in zip(offsets[:-1], sizes, strict=True):
        chosen = rng.permutation(size)[: min(size, fd_entries_per_leaf)]
        picks.append(np.sort(chosen) + offset)

    use_fd = dtype == jnp.float64
    if use_fd:
        all_picks = jnp.asarray(np.concatenate(picks))
        fd_grads, fd_valid = finite_difference_grads(
            model, loss, params, x, y, all_picks, step=fd_step
        )
        fd, valid = np.asarray(fd_grads), np.asarray(fd_valid)
    flat_hand = np.asarray(ravel_pytree(hand)[0])

    rows = []
    start = 0
    for (path, leaf_hand), leaf_oracle, leaf_vjp, pick in zip(
        leaves_hand, jax.tree.leaves(oracle), jax.tree.leaves(through_vjp), picks, strict=True
    ):
        layer, name = path[0].idx + 1, path[1].key
        vs_fd, skipped = float("nan"), 0
        if use_fd:
            sl = slice(start, start + len(pick))
            ok = valid[sl]
            skipped = int((~ok).sum())
            vs_fd = relative_error(flat_hand[pick][ok], fd[sl][ok], fd_floor)
        start += len(pick)
        rows.append(
            LeafCheck(
                layer=layer,
                leaf=name,
                shape=tuple(leaf_hand.shape),
                vs_autodiff=relative_error(leaf_hand, leaf_oracle),
                custom_vjp_vs_autodiff=relative_error(leaf_vjp, leaf_oracle),
                vs_finite_diff=vs_fd,
                fd_entries=len(pick) if use_fd else 0,
                fd_skipped=skipped,
            )
        )
    return GradCheckReport(
        tuple(rows), dtype_name, AUTODIFF_THRESHOLD[dtype_name], FINITE_DIFF_THRESHOLD
    )


def random_targets(key: Array, model: MLP, loss: str, batch_size: int, dtype=jnp.float32) -> Array:
    """Targets a loss fits, drawn in the range of its output activation
    (`jaxbp.losses.default_output_activation`): {0, 1} for a sigmoid (bce), one-hot for a
    softmax (softmax cross-entropy), standard normal for the regression losses.

    Drawn on the host by numpy, seeded by the key's data: a problem of a new shape costs no
    compilation (jax.random compiles a program per shape). Not for use under ``jax.jit``.

    Args:
      key: a PRNG key (``jax.random.key`` or ``PRNGKey``); another key gives other targets.
      model: the network (its output width).
      loss: the loss name.
      batch_size: rows.
      dtype: float dtype.

    Returns:
      ``(batch_size, nL)`` targets.
    """
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    rng = np.random.default_rng(np.asarray(key).ravel())
    n_out = model.sizes[-1]
    output = losses_lib.default_output_activation(loss)
    y: np.ndarray
    if output == "sigmoid":
        y = rng.integers(0, 2, size=(batch_size, n_out))
    elif output == "softmax":
        y = np.eye(n_out)[rng.integers(0, n_out, size=batch_size)]
    else:
        y = rng.standard_normal(size=(batch_size, n_out))
    return jnp.asarray(y.astype(jnp.dtype(dtype)), dtype)  # cast on the host: no compile
