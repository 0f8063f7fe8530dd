"""The linearised (GLM) predictive of a Laplace posterior, from the δ recursion's columns.

Contract (eqs. (7.7)-(7.10) of docs/derivations.md): the network is linearised in its
parameters at the MAP θ*, so the function value at the split point (the logits ``z^[L]`` for
the fused losses, ``ŷ`` for the regression losses) is Gaussian,
``f(x) ~ N(f(x; θ*), J(x) Σ J(x)ᵀ)``, with ``J(x) = ∂f/∂θ`` over the posterior's parameters
and Σ the posterior covariance. Classes come from it by the probit approximation or Monte
Carlo, regression values as a mean and a variance.

The Jacobian is never formed by autodiff. The output of unit v depends on layer k's
parameters through ``z^[k]`` only, so ``∂f_v/∂W̄^[k] = D_v^[k] ā^[k−1]ᵀ`` with ``ā = [a; 1]``
(``[a]`` without a bias) and ``D_v^[k] = ∂f_v/∂z^[k]``: the column ``e_v`` (or the output
activation's row for a regression loss) carried back by the same recursion as δ,
``D^[k] = (D^[k+1] W^[k+1]) ∘ g'(z^[k])`` (eqs. (5.7), (7.7)). Every structure then gives
``Σ_f = J Σ Jᵀ`` in a few contractions of those columns with the posterior's eigenvectors
(eq. (7.8)); the last layer's Kronecker posterior needs no column at all (eq. (7.9)).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import backprop, curvature
from jaxbp.mlp import MLP

if TYPE_CHECKING:
    from jaxbp.laplace import Posterior

Array = jax.Array

METHODS = ("probit", "mc")


def output_columns(
    model: MLP, gaussian: bool, residuals: backprop.Residuals, layers: tuple[int, ...]
) -> tuple[Array, ...]:
    """``D^[k] = ∂f/∂z^[k]`` for each layer index in ``layers``: ``(batch, V, n_k)``.

    Row v of ``D^[k]`` for example i is ``∂f_v(x_i)/∂z_i^[k]`` (eq. (7.7)): at the top the
    unit vectors (the logits are f) or, for a Gaussian likelihood on ``ŷ``, the output
    activation's rows ``∂ŷ_v/∂z^[L]``; below, the columns carried back by
    `jaxbp.curvature.carry_back`.

    Args:
      model: the network.
      gaussian: whether f is ``ŷ`` (regression) rather than the logits.
      residuals: from `backprop.forward_with_residuals`.
      layers: 0-based layer indices, ascending.
    """
    y_hat = residuals.activations[-1]
    batch, num_out = y_hat.shape
    top = jnp.broadcast_to(jnp.eye(num_out, dtype=y_hat.dtype), (batch, num_out, num_out))
    if not top_is_identity(model, gaussian):
        # f is ŷ: row v is ∂ŷ_v/∂z^[L], the output activation's vjp of e_v (eq. (5.7)'s f').
        top = model.layer_activations[-1].vjp(y_hat[:, None, :], top)
    if layers == (model.num_layers - 1,):
        return (top,)  # the last layer alone: no recursion
    columns = curvature.carry_back(model, residuals, model.num_layers, top)
    return tuple(columns[k] for k in layers)


def top_is_identity(model: MLP, gaussian: bool) -> bool:
    """Whether ``∂f/∂z^[L] = I``: the logits of a fused loss, or ŷ of an identity output."""
    return not gaussian or model.output_activation == "identity"


@jax.jit
def project(posterior: Posterior, x: Array) -> tuple[Array, tuple[Any, ...]]:
    """``(f(x; θ*), projection)``: what Σ_f needs of ``x: (batch, n0)`` that λ and σ leave
    alone.

    The projection holds the Jacobian in the posterior's eigenbasis: ``J U: (batch, V, P)``
    for ``"full"``; per layer ``(D, ā²)`` for ``"diag"`` and ``(D Q_G, (ā Q_A)²)`` for
    ``"kron"`` (eq. (7.8)); for the last layer's ``"kron"`` with ``∂f/∂z^[L] = I`` the
    rows of ``Q_G`` themselves, shared by every example (eq. (7.9)).
    """
    model, gaussian, structure = posterior.model, posterior.gaussian, posterior.structure
    layers, factors = posterior.layers, posterior.factors
    z_out, y_hat, residuals = backprop.forward_with_residuals(model, posterior.params, x)
    f = y_hat if gaussian else z_out
    inputs = curvature.layer_inputs(model, residuals)
    a_bar = [inputs[k] for k in layers]
    if structure == "kron" and len(layers) == 1 and top_is_identity(model, gaussian):
        (q_g, _, q_a, _) = factors[0]
        return f, ((q_g, (a_bar[0] @ q_a) ** 2),)
    columns = output_columns(model, gaussian, residuals, layers)
    if structure == "full":
        (eigvecs, _) = factors
        jac = jnp.concatenate(
            [
                jnp.einsum("bvn,bm->bvnm", d, a).reshape(*d.shape[:2], -1)
                for d, a in zip(columns, a_bar, strict=True)
            ],
            axis=-1,
        )
        return f, (jac @ eigvecs,)
    if structure == "diag":
        return f, tuple((d, a * a) for d, a in zip(columns, a_bar, strict=True))
    return f, tuple(
        (d @ q_g, (a @ q_a) ** 2)
        for d, a, (q_g, _, q_a, _) in zip(columns, a_bar, factors, strict=True)
    )


def function_covariance(
    structure: str, projection: tuple[Any, ...], inverse: Any, *, diagonal: bool
) -> Array:
    """``Σ_f = J Σ Jᵀ`` per example: ``(batch, V, V)``, or its diagonal ``(batch, V)``.

    Args:
      structure: the posterior's structure.
      projection: from `project`.
      inverse: the inverse precision eigenvalues `jaxbp.laplace.inverse_eigenvalues` gives
        for one λ and σ.
      diagonal: only the variances ``diag Σ_f`` (all the probit predictive needs).
    """
    if structure == "full":
        (jac_u,) = projection
        if diagonal:
            return jnp.einsum("bvp,p->bv", jac_u * jac_u, inverse)
        return jnp.einsum("bvp,bwp,p->bvw", jac_u, jac_u, inverse)
    total: Any = 0
    for (d, a_sq), inv in zip(projection, inverse, strict=True):
        if d.ndim == 2:  # the last layer's closed form: Σ_f = Q_G diag(c) Q_Gᵀ, eq. (7.9)
            c = a_sq @ inv.T  # (batch, V): c_i = Σ_j (ā Q_A)_j² / (s λ_Gi λ_Aj + λ)
            total = total + (
                jnp.einsum("vi,bi->bv", d * d, c)
                if diagonal
                else jnp.einsum("vi,bi,wi->bvw", d, c, d)
            )
        elif diagonal:
            total = total + jnp.einsum("bvn,bm,nm->bv", d * d, a_sq, inv)
        else:
            total = total + jnp.einsum("bvn,bwn,bm,nm->bvw", d, d, a_sq, inv)
    return total


def probit_logits(f: Array, variance: Array) -> Array:
    """``κ ∘ f`` with ``κ = (1 + π/8 · diag Σ_f)^(−1/2)``: the probit approximation's logits
    (eq. (7.10))."""
    return f / jnp.sqrt(1 + math.pi / 8 * variance)


def probit(f: Array, variance: Array, bernoulli: bool) -> Array:
    """The probit approximation (eq. (7.10)): ``softmax(κ ∘ f)``, or ``σ(κ f)`` for one unit."""
    scaled = probit_logits(f, variance)
    return jax.nn.sigmoid(scaled) if bernoulli else jax.nn.softmax(scaled, axis=-1)


def monte_carlo(f: Array, cov: Array, bernoulli: bool, key: Array, num_samples: int) -> Array:
    """``E[softmax(f)]`` (``σ(f)`` for one unit) over ``f ~ N(f, Σ_f)``, by ``num_samples``
    draws per example: ``f + L ε`` with ``L Lᵀ = Σ_f``."""
    # Σ_f is PSD but can be singular (a softmax's logits shift together): a jitter of the
    # dtype's rounding scale keeps the Cholesky factor finite without moving the draws.
    scale = jnp.max(jnp.diagonal(cov, axis1=-2, axis2=-1), axis=-1)[:, None, None]
    jitter = 10 * jnp.finfo(cov.dtype).eps * (scale + 1) * jnp.eye(cov.shape[-1], dtype=cov.dtype)
    chol = jnp.linalg.cholesky(cov + jitter)
    eps = jax.random.normal(key, (num_samples, *f.shape), f.dtype)
    draws = f + jnp.einsum("bvw,sbw->sbv", chol, eps)
    probs = jax.nn.sigmoid(draws) if bernoulli else jax.nn.softmax(draws, axis=-1)
    return jnp.mean(probs, axis=0)


def padded_batches(x: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """``(rows, num_real)``: ``x`` taken ``min(batch_size, n)`` rows at a time, the last batch
    padded with zero rows, so that every batch has one shape (one compilation)."""
    size = min(batch_size, len(x))
    for start in range(0, len(x), size):
        rows = x[start : start + size]
        num_real = len(rows)
        if num_real < size:
            rows = np.concatenate([rows, np.zeros((size - num_real, *rows.shape[1:]), rows.dtype)])
        yield rows, num_real


@functools.partial(jax.jit, static_argnames=("method", "num_samples"))
def _predict_batch(
    posterior: Posterior, x: Array, key: Array, method: str, num_samples: int
) -> Array | tuple[Array, Array]:
    f, projection = project(posterior, x)
    inverse = posterior.inverse_eigenvalues()
    bernoulli = posterior.likelihood == "bernoulli"
    diagonal = posterior.gaussian or method == "probit"
    cov = function_covariance(posterior.structure, projection, inverse, diagonal=diagonal)
    if posterior.gaussian:
        return f, cov + posterior.sigma_noise**2
    if method == "probit":
        return probit(f, cov, bernoulli)
    return monte_carlo(f, cov, bernoulli, key, num_samples)


def predictive(
    posterior: Posterior,
    x: Array | np.ndarray,
    *,
    method: str = "probit",
    num_samples: int = 1000,
    key: Array | None = None,
    batch_size: int = 256,
) -> Array | tuple[Array, Array]:
    """The GLM predictive at ``x: (n, n0)``, worked out ``batch_size`` rows at a time.

    See `jaxbp.laplace.Posterior.predictive`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}.")
    if method == "mc" and not posterior.gaussian and key is None:
        raise ValueError("method='mc' draws samples: pass key=jax.random.key(seed).")
    if not batch_size > 0 or not num_samples > 0:
        raise ValueError(
            f"batch_size={batch_size} and num_samples={num_samples} must both be positive."
        )
    rows_in = np.asarray(x, posterior.dtype)
    if rows_in.ndim != 2 or rows_in.shape[1] != posterior.model.sizes[0] or not len(rows_in):
        raise ValueError(
            f"x has shape {rows_in.shape}, but the posterior's network takes (n, "
            f"{posterior.model.sizes[0]}) with n > 0; for one example use x[None]."
        )
    key = jax.random.key(0) if key is None else key  # probit and regression draw nothing
    out = [
        jax.tree.map(
            lambda v, n=num_real: v[:n],
            _predict_batch(posterior, rows, jax.random.fold_in(key, i), method, num_samples),
        )
        for i, (rows, num_real) in enumerate(padded_batches(rows_in, batch_size))
    ]
    return jax.tree.map(lambda *parts: jnp.concatenate(parts), *out)
