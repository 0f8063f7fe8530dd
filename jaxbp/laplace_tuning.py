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
    lams = jnp.asarray(prior_grid, posterior.dtype)
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
    lam, sigma = _ascend(
        posterior,
        float(lam_grid[best]),
        float(sigma_grid[best]),
        tune_sigma,
        (float(jnp.log(lams[0])), float(jnp.log(lams[-1]))),
    )
    return posterior.replace(prior_precision=lam, sigma_noise=sigma)


def _ascend(
    posterior: Posterior,
    lam: float,
    sigma: float,
    tune_sigma: bool,
    log_lam_range: tuple[float, float],
) -> tuple[float, float]:
    """Gradient ascent on the log marginal likelihood in ``(log λ, log σ)`` from a grid point."""

    def negative(log_values: Array) -> Array:
        log_sigma = log_values[1] if tune_sigma else jnp.log(sigma)
        return -posterior.log_marginal_likelihood(jnp.exp(log_values[0]), jnp.exp(log_sigma))

    optimizer = optax.adam(MARGLIK_LEARNING_RATE)

    @jax.jit
    def step(carry: tuple[Array, Any], _: None) -> tuple[tuple[Array, Any], Array]:
        values, state = carry
        value, grad = jax.value_and_grad(negative)(values)
        updates, state = optimizer.update(grad, state)
        values = optax.apply_updates(values, updates)
        return (values.at[0].set(jnp.clip(values[0], *log_lam_range)), state), value

    start = jnp.log(jnp.asarray([lam, sigma], posterior.dtype))
    (values, _), _ = jax.lax.scan(step, (start, optimizer.init(start)), None, MARGLIK_STEPS)
    if not negative(values) <= negative(start):  # the grid point was already the best
        values = start
    return float(jnp.exp(values[0])), float(jnp.exp(values[1])) if tune_sigma else sigma


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
    regression; the Jacobian's projection is computed once and each pair costs a contraction.
    """
    x, y = np.asarray(x), np.asarray(y)
    y = y[:, None] if y.ndim == 1 else y
    if x.ndim != 2 or y.shape != (len(x), posterior.model.sizes[-1]):
        raise ValueError(
            f"x_val of shape {x.shape} and y_val of shape {y.shape} do not fit the network "
            f"(n, {posterior.model.sizes[0]}) -> (n, {posterior.model.sizes[-1]})."
        )
    total = jnp.zeros(prior_precisions.shape, posterior.dtype)
    for rows in predictive_lib.batches(len(x), batch_size):
        f, projection = predictive_lib.project(posterior, x[rows])
        y_rows = jnp.asarray(y[rows], posterior.dtype)

        def nll(lam: Array, sigma: Array, f=f, projection=projection, y_rows=y_rows) -> Array:
            inverse = posterior.inverse_eigenvalues(lam, sigma)
            var = predictive_lib.function_covariance(
                posterior.structure, projection, inverse, diagonal=True
            )
            if posterior.gaussian:
                var = var + sigma**2
                return jnp.sum(0.5 * jnp.log(2 * jnp.pi * var) + (y_rows - f) ** 2 / (2 * var))
            logits = predictive_lib.probit_logits(f, var)
            return jnp.sum(negative_log_probability(logits, y_rows, posterior.likelihood))

        total = total + jax.lax.map(lambda pair, nll=nll: nll(*pair), (prior_precisions, sigmas))
    return total / len(x)


def negative_log_probability(logits: Array, y: Array, likelihood: str) -> Array:
    """``−log p(y)`` per example for probabilities ``softmax(logits)`` (``σ(logits)`` for
    the Bernoulli), taken from the logits so that a confident miss stays finite."""
    if likelihood == "bernoulli":
        return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, y), axis=-1)
    return optax.softmax_cross_entropy(logits, y)
