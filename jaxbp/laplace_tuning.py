"""Tuning a Laplace posterior's prior precision λ (and σ for regression).

Two ways, as laplace-torch offers them (eq. (7.6) of docs/derivations.md):

* ``"marglik"``: maximise the Laplace log marginal likelihood
  `jaxbp.laplace.Posterior.log_marginal_likelihood`, a closed form in the stored
  eigenvalues: a grid on ``log λ`` (and ``log σ``), then gradient ascent from its best point,
  kept within the grid's range.
* ``"val_nll"``: the grid point whose linearised predictive has the lowest negative
  log-likelihood on a validation split.

The marginal likelihood assumes θ* is a mode of the posterior with prior ``N(0, λ⁻¹ I)``. A
network trained without weight decay is no such mode: its weights are large, the evidence
then favours a tiny λ and the predictive comes out under-confident. The validation NLL makes
no such assumption; prefer it for such a run.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbp import laplace_predictive as predictive_lib

if TYPE_CHECKING:
    from jaxbp.laplace import Posterior

Array = jax.Array

TUNING_METHODS = ("marglik", "val_nll")
# The default grid of λ: eight decades around 1, four points each (val_nll and marglik's start).
PRIOR_GRID = tuple(float(v) for v in np.logspace(-4, 4, 33))

# σ is searched relative to the MAP's root-mean-square training residual s₀: s₀·10^[−1, 1].
SIGMA_GRID = tuple(float(v) for v in np.logspace(-1, 1, 21))
MARGLIK_STEPS = 200  # Adam steps from the grid's best point: converged on every net tried
MARGLIK_LEARNING_RATE = 0.05  # in log λ and log σ


def optimize_prior(
    posterior: Posterior,
    *,
    method: str = "marglik",
    x_val: Array | None = None,
    y_val: Array | None = None,
    prior_grid: tuple[float, ...] = PRIOR_GRID,
    tune_sigma: bool | None = None,
) -> Posterior:
    """The posterior with λ (and σ) tuned by the marginal likelihood or the validation NLL.

    Args:
      posterior: from `jaxbp.laplace.fit`.
      method: ``"marglik"`` or ``"val_nll"`` (module docstring).
      x_val: ``(n, n0)`` validation inputs, for ``"val_nll"``.
      y_val: ``(n, nL)`` validation targets, for ``"val_nll"``.
      prior_grid: the λ values searched (positive).
      tune_sigma: whether σ is tuned too; default: for a Gaussian likelihood.

    Returns:
      The posterior with the tuned ``prior_precision`` (and ``sigma_noise``).
    """
    if method not in TUNING_METHODS:
        raise ValueError(f"unknown method {method!r}: expected one of {', '.join(TUNING_METHODS)}.")
    if not prior_grid or min(prior_grid) <= 0:
        raise ValueError(f"prior_grid must hold positive values, got {prior_grid}.")
    if tune_sigma is None:
        tune_sigma = posterior.gaussian
    if tune_sigma and not posterior.gaussian:
        raise ValueError("tune_sigma=True needs a Gaussian likelihood (a regression loss).")
    if method == "val_nll" and (x_val is None or y_val is None):
        raise ValueError("method='val_nll' needs the validation split: pass x_val and y_val.")
    lams = jnp.sort(jnp.asarray(prior_grid, posterior.dtype))
    sigmas = jnp.asarray([posterior.sigma_noise], posterior.dtype)
    if tune_sigma:
        rms = jnp.sqrt(posterior.data_fit / (posterior.num_data * posterior.model.sizes[-1]))
        sigmas = rms * jnp.asarray(SIGMA_GRID, posterior.dtype)
    lam_grid, sigma_grid = (g.ravel() for g in jnp.meshgrid(lams, sigmas, indexing="ij"))
    if method == "val_nll":
        assert x_val is not None and y_val is not None
        scores = validation_nll(posterior, x_val, y_val, lam_grid, sigma_grid)
        best = int(jnp.argmin(scores))
        return posterior.replace(
            prior_precision=float(lam_grid[best]), sigma_noise=float(sigma_grid[best])
        )
    evidence = jax.vmap(posterior.log_marginal_likelihood)(lam_grid, sigma_grid)
    best = int(jnp.argmax(evidence))
    start = jnp.log(jnp.stack([lam_grid[best], sigma_grid[best]]))
    log_range = jnp.log(jnp.stack([lams[0], lams[-1]]))
    values, negative = _ascend(posterior, start, log_range, tune_sigma)
    if not negative <= -evidence[best]:  # the grid point was already the best
        values = start
    lam, sigma = (float(v) for v in jnp.exp(values))
    return posterior.replace(prior_precision=lam, sigma_noise=sigma)


_OPTIMIZER = optax.adam(MARGLIK_LEARNING_RATE)


@functools.partial(jax.jit, static_argnames=("tune_sigma",))
def _ascend(
    posterior: Posterior, start: Array, log_lam_range: Array, tune_sigma: bool
) -> tuple[Array, Array]:
    """Gradient ascent on the log marginal likelihood in ``(log λ, log σ)`` from ``start``
    (``log λ`` kept in ``log_lam_range``); returns the end point and its negative value."""

    def negative(log_values: Array) -> Array:
        log_sigma = log_values[1] if tune_sigma else start[1]
        return -posterior.log_marginal_likelihood(jnp.exp(log_values[0]), jnp.exp(log_sigma))

    def step(carry: tuple[Array, Any], _: None) -> tuple[tuple[Array, Any], None]:
        values, state = carry
        updates, state = _OPTIMIZER.update(jax.grad(negative)(values), state)
        values = optax.apply_updates(values, updates)
        return (values.at[0].set(jnp.clip(values[0], *log_lam_range)), state), None

    (values, _), _ = jax.lax.scan(step, (start, _OPTIMIZER.init(start)), None, MARGLIK_STEPS)
    return values, negative(values)


@jax.jit
def _batch_nll(
    posterior: Posterior, x: Array, y: Array, weights: Array, lams: Array, sigmas: Array
) -> Array:
    """The summed NLL of one padded batch at every ``(λ, σ)`` pair: ``(num_pairs,)``."""
    f, projection = predictive_lib.project(posterior, x)

    def nll(pair: tuple[Array, Array]) -> Array:
        lam, sigma = pair
        inverse = posterior.inverse_eigenvalues(lam, sigma)
        var = predictive_lib.function_covariance(
            posterior.structure, projection, inverse, diagonal=True
        )
        if posterior.gaussian:
            var = var + sigma**2
            rows = jnp.sum(0.5 * jnp.log(2 * jnp.pi * var) + (y - f) ** 2 / (2 * var), axis=-1)
        else:
            logits = predictive_lib.probit_logits(f, var)
            rows = negative_log_probability(logits, y, posterior.likelihood)
        return jnp.sum(weights * rows)

    return jax.lax.map(nll, (lams, sigmas), batch_size=16)


def validation_nll(
    posterior: Posterior,
    x: Array | np.ndarray,
    y: Array | np.ndarray,
    prior_precisions: Array,
    sigmas: Array,
    *,
    batch_size: int = 256,
) -> Array:
    """The mean validation NLL of the predictive at each ``(λ, σ)`` pair: ``(num_pairs,)``.

    The probit predictive for classes (eq. (7.10)), the Gaussian ``N(f, diag Σ_f + σ²)`` for
    regression; the Jacobian's projection is computed once per batch and each pair costs a
    contraction.
    """
    x, y = np.asarray(x, posterior.dtype), np.asarray(y, posterior.dtype)
    y = y[:, None] if y.ndim == 1 else y
    if x.ndim != 2 or y.shape != (len(x), posterior.model.sizes[-1]) or not len(x):
        raise ValueError(
            f"x_val of shape {x.shape} and y_val of shape {y.shape} do not fit the network "
            f"(n, {posterior.model.sizes[0]}) -> (n, {posterior.model.sizes[-1]}), n > 0."
        )
    lams = jnp.asarray(prior_precisions, posterior.dtype)
    sigmas = jnp.asarray(sigmas, posterior.dtype)
    total = jnp.zeros(lams.shape, posterior.dtype)
    for (x_rows, num_real), (y_rows, _) in zip(
        predictive_lib.padded_batches(x, batch_size),
        predictive_lib.padded_batches(y, batch_size),
        strict=True,
    ):
        weights = (np.arange(len(x_rows)) < num_real).astype(x.dtype)
        total = total + _batch_nll(posterior, x_rows, y_rows, weights, lams, sigmas)
    return total / len(x)


def negative_log_probability(logits: Array, y: Array, likelihood: str) -> Array:
    """``−log p(y)`` per example for probabilities ``softmax(logits)`` (``σ(logits)`` for
    the Bernoulli), taken from the logits so that a confident miss stays finite."""
    if likelihood == "bernoulli":
        return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, y), axis=-1)
    return optax.softmax_cross_entropy(logits, y)
