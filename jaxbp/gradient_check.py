"""Gradient checking: the hand-written gradients against jax.grad and finite differences.

Each entry ``a`` of a hand-written gradient is compared with its reference ``b`` by

    |a − b| ≤ atol + rtol·|b|

and every layer and leaf reports its worst ratio ``|a − b| / (atol + rtol·|b|)``: at most 1
passes, and the ratio says by how much. Three comparisons per leaf:

* ``loss_and_grad`` (the derivation alone) against ``jax.grad`` of the plain forward;
* ``jax.grad`` through the custom_vjp (``loss_value(backward="custom")``) against the same;
* ``loss_and_grad`` against fourth-order central finite differences
  ``(−L(θ + 2h e_i) + 8L(θ + h e_i) − 8L(θ − h e_i) + L(θ − 2h e_i)) / 12h`` on a sample of
  entries, in float64 only. Its truncation error is O(h⁴), so a step large enough to keep
  rounding small (h = 1e-3) still agrees to ~1e-10. An entry whose steps move a
  ReLU-family pre-activation across its kink is skipped (no derivative there).

The tolerances depend on the dtype (`default_tolerances`). Against jax.grad, ``rtol`` is the
project's threshold (README, "Gradient checks") and ``atol`` is `ATOL_ULPS` rounding units of
the leaf's largest entry: an entry of ∂/∂W = δᵀ a or ∂/∂b = Σ_batch δ is a sum whose terms
can cancel, and the two routes sum in different orders, so it carries an absolute rounding
error of about ε times the size of its terms whatever its own size. Against finite
differences, ``atol`` is the quotient's rounding noise, ≈ ε_64 · |L| / h ≈ 2e-13 · |L|, with a
margin: an exact zero (a dead ReLU unit) cannot be matched relatively.
"""

import math
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


class Tolerance(NamedTuple):
    """``|a − b| ≤ atol·scale + rtol·|b|`` per entry, with ``b`` the reference.

    Attributes:
      rtol: relative to the reference entry.
      atol: absolute, in units of a scale: the leaf's largest ``|jax.grad|`` entry against
        jax.grad, ``max(1, |L|)`` against finite differences.
    """

    rtol: float
    atol: float


# rtol against jax.grad: rounding only in float64; float32 keeps about five of its seven digits
# through a few layers and a batch sum.
AUTODIFF_RTOL = {"float64": 1e-10, "float32": 1e-5}
# atol against jax.grad, in ε of the dtype times the leaf's largest entry: a margin over the
# cancellation that `./launch.sh gradcheck --precision=float32` shows.
ATOL_ULPS = 8
FINITE_DIFF_TOLERANCE = Tolerance(rtol=1e-6, atol=1e-12)


def default_tolerances(dtype: jax.typing.DTypeLike) -> tuple[Tolerance, Tolerance]:
    """``(against jax.grad, against finite differences)`` for float32 or float64 params."""
    name = jnp.dtype(dtype).name
    eps = float(jnp.finfo(dtype).eps)
    return Tolerance(AUTODIFF_RTOL[name], ATOL_ULPS * eps), FINITE_DIFF_TOLERANCE


class LeafCheck(NamedTuple):
    """The check of one parameter leaf (e.g. layer 2, ``"W"``: the ∂L/∂W^[2] of eq. (4.5)).

    The three comparisons are worst ratios ``|a − b| / (atol + rtol·|b|)``: at most 1 passes.
    ``vs_finite_diff`` is nan when no entry was compared (float32, or every step crossed a
    kink).
    """

    layer: int
    leaf: str
    shape: tuple[int, ...]
    vs_autodiff: float
    custom_vjp_vs_autodiff: float
    vs_finite_diff: float
    fd_entries: int
    fd_skipped: int


def _ratio_text(ratio: float) -> str:
    return "skipped" if math.isnan(ratio) else f"{ratio:.1e}"


class GradCheckReport(NamedTuple):
    """All leaves of one check (the four gradients of eq. (4.9) and more), with the tolerances."""

    rows: tuple[LeafCheck, ...]
    dtype: str
    autodiff_tolerance: Tolerance
    finite_diff_tolerance: Tolerance

    @property
    def passed(self) -> bool:
        """True when every entry of every leaf is within its tolerances."""
        return all(
            r.vs_autodiff <= 1
            and r.custom_vjp_vs_autodiff <= 1
            and (r.fd_entries == r.fd_skipped or r.vs_finite_diff <= 1)
            for r in self.rows
        )

    @property
    def max_vs_autodiff(self) -> float:
        """Worst ratio to the tolerance of either hand-written path against jax.grad."""
        return max(max(r.vs_autodiff, r.custom_vjp_vs_autodiff) for r in self.rows)

    @property
    def max_vs_finite_diff(self) -> float:
        """Worst ratio to the tolerance against finite differences (nan if none compared)."""
        values = [r.vs_finite_diff for r in self.rows if r.fd_entries > r.fd_skipped]
        return max(values) if values else float("nan")

    def table(self) -> str:
        """The report as a markdown table of worst ratios to the tolerance."""
        lines = [
            "| layer | leaf | shape | hand vs jax.grad | custom_vjp vs jax.grad "
            "| hand vs finite diff | fd entries (skipped) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.layer} | {r.leaf} | {r.shape} | {_ratio_text(r.vs_autodiff)} "
                f"| {_ratio_text(r.custom_vjp_vs_autodiff)} | {_ratio_text(r.vs_finite_diff)} "
                f"| {r.fd_entries} ({r.fd_skipped}) |"
            )
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"\n{verdict} ({self.dtype}): {self.tolerance_text()}")
        return "\n".join(lines)

    def tolerance_text(self) -> str:
        """What the ratios are ratios to, in one line."""
        ad, fd = self.autodiff_tolerance, self.finite_diff_tolerance
        return (
            "columns are the worst |a − b| / (atol + rtol·|b|), at most 1 to pass; vs jax.grad "
            f"rtol {ad.rtol:.0e}, atol {ad.atol:.1e} × the leaf's largest entry; vs finite "
            f"differences rtol {fd.rtol:.0e}, atol {fd.atol:.0e} × max(1, |L|)."
        )


def tolerance_ratio(a: ArrayLike, b: ArrayLike, tolerance: Tolerance, scale: float) -> float:
    """Max over entries of ``|a − b| / (atol·scale + rtol·|b|)``: at most 1 passes.

    Args:
      a: the checked entries.
      b: the reference entries, same shape.
      tolerance: the ``rtol`` and ``atol``.
      scale: the unit of ``atol``.

    Returns:
      The worst ratio; 0 for no entries; inf if any entry is NaN or inf (a broken gradient
      must never pass), or differs where the bound is 0.
    """
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    if not (np.isfinite(a64).all() and np.isfinite(b64).all()):
        return float("inf")
    diff = np.abs(a64 - b64)
    bound = tolerance.atol * scale + tolerance.rtol * np.abs(b64)
    ratio = np.divide(diff, bound, out=np.where(diff > 0, np.inf, 0.0), where=bound > 0)
    return float(ratio.max()) if ratio.size else 0.0


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
    rtol: float | None = None,
    atol: float | None = None,
    fd_entries_per_leaf: int = 32,
    fd_step: float = 1e-3,
    seed: int = 0,
) -> GradCheckReport:
    """Checks the hand-written gradients (eqs. (3.3)-(3.6), (4.9)).

    Args:
      model, loss, params, x, y: as for `loss_and_grad`.
      rtol, atol: the tolerance against jax.grad (module docstring); None takes the
        params' dtype's from `default_tolerances`.
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
    if jnp.size(x) == 0:
        raise ValueError(
            f"gradcheck got x of shape {tuple(jnp.shape(x))}: with no examples every gradient is "
            "zero and the check would pass without checking anything; pass at least one row."
        )
    losses_lib.check_targets(loss, y)
    autodiff_tol, fd_tol = default_tolerances(dtype)
    autodiff_tol = Tolerance(
        autodiff_tol.rtol if rtol is None else rtol, autodiff_tol.atol if atol is None else atol
    )
    x = jnp.asarray(x, dtype)
    y = jnp.asarray(y, dtype)

    # The tolerances are the dtype's rounding: GPUs and TPUs by default multiply float32
    # matrices with fewer mantissa bits (TF32, bfloat16 passes), ~1e-3 off, so the check
    # pins every matmul to the dtype's full precision.
    with jax.default_matmul_precision("highest"):
        value, hand = backprop.loss_and_grad(model, loss, params, x, y)
        oracle = jax.grad(backprop.loss_value, argnums=2)(model, loss, params, x, y)
        through_vjp = jax.grad(
            lambda p: backprop.loss_value(model, loss, p, x, y, backward="custom")
        )(params)
    fd_scale = max(1.0, abs(float(value)))

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
        scale = float(jnp.max(jnp.abs(leaf_oracle))) if leaf_oracle.size else 0.0
        vs_fd, skipped = float("nan"), 0
        if use_fd:
            sl = slice(start, start + len(pick))
            ok = valid[sl]
            skipped = int((~ok).sum())
            if ok.any():
                vs_fd = tolerance_ratio(flat_hand[pick][ok], fd[sl][ok], fd_tol, fd_scale)
        start += len(pick)
        rows.append(
            LeafCheck(
                layer=layer,
                leaf=name,
                shape=tuple(leaf_hand.shape),
                vs_autodiff=tolerance_ratio(leaf_hand, leaf_oracle, autodiff_tol, scale),
                custom_vjp_vs_autodiff=tolerance_ratio(leaf_vjp, leaf_oracle, autodiff_tol, scale),
                vs_finite_diff=vs_fd,
                fd_entries=len(pick) if use_fd else 0,
                fd_skipped=skipped,
            )
        )
    return GradCheckReport(tuple(rows), jnp.dtype(dtype).name, autodiff_tol, fd_tol)


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
