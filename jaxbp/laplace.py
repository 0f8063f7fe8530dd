"""Laplace approximations of a trained network's posterior, from the δ recursion's curvature.

Contract (eqs. (7.1)-(7.6) of docs/derivations.md): around the trained parameters θ* (the
MAP), the posterior over θ is approximated by ``N(θ*, P⁻¹)`` with the precision

    P = GGN + λ I,        GGN = Σ_{i=1..N} J_iᵀ H_i J_i                     (7.3)

the generalised Gauss-Newton matrix of the *summed* negative log-likelihood of the whole
training set (not the batch mean the training loss takes), with ``J_i = ∂f(x_i)/∂θ`` at the
split point (the logits for ``"bce"`` and ``"softmax_cross_entropy"``, ŷ for the regression
losses) and ``H_i`` the likelihood's Hessian there: ``I/σ²`` for the Gaussian of the
regression losses (eq. (7.1) maps each loss's mean onto it), ``diag(p) − p pᵀ`` for the
categorical, ``σ(1 − σ)`` for the Bernoulli.

Every structure keeps the GGN at σ = 1 in eigen-form, so a new λ or σ costs no new pass:

* ``"full"``: ``GGN = U diag(e) Uᵀ`` (dense; at most `MAX_FULL_PARAMS` parameters);
* ``"diag"``: its diagonal, one array per layer in the ``[W | b]`` layout;
* ``"kron"``: per layer ``G ⊗ A`` with ``A = 1/N Σ ā āᵀ`` and ``G = Σ_i S_iᵀ D_i D_iᵀ S_i``
  (eq. (7.4)), each eigendecomposed, so the layer's precision eigenvalues are
  ``λ_G λ_A / σ² + λ``.

Parameters are flattened layer by layer, each layer's ``W̄ = [W | b]: (n_k, n_{k−1} + 1)``
row by row (`flatten`), the order in which ``jnp.kron(G, A)`` is written.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import backprop, laplace_curvature
from jaxbp import laplace_predictive as predictive_lib
from jaxbp.laplace_tuning import PRIOR_GRID, TUNING_METHODS, optimize_prior, validation_nll
from jaxbp.mlp import MLP, Params

__all__ = (
    "LIKELIHOODS",
    "MAX_FULL_PARAMS",
    "PRIOR_GRID",
    "STRUCTURES",
    "SUBSETS",
    "TUNING_METHODS",
    "Posterior",
    "fit",
    "flatten",
    "optimize_prior",
    "validation_nll",
)

Array = jax.Array

STRUCTURES = ("diag", "kron", "full")
SUBSETS = ("all", "last_layer")
# A dense P x P precision and its eigendecomposition: 4096² float64 is 134 MB and an eigh of
# about a minute on two CPU cores; past that, "kron" or "diag" (or subset="last_layer").
MAX_FULL_PARAMS = 4096
LIKELIHOODS = {
    "mse": "gaussian",
    "half_mse": "gaussian",
    "sse": "gaussian",
    "bce": "bernoulli",
    "softmax_cross_entropy": "categorical",
}


@dataclasses.dataclass(frozen=True)
class Posterior:
    """A Laplace posterior ``N(θ*, P⁻¹)`` as `fit` returns it (module docstring).

    Attributes:
      model: the network.
      loss: the loss it was trained with (a name from `jaxbp.LOSSES`).
      structure: ``"diag"``, ``"kron"`` or ``"full"``.
      subset: ``"all"`` or ``"last_layer"``: the parameters the posterior covers (the rest
        stay at θ*).
      params: θ*, the MAP, in `jaxbp.init_params`' layout.
      factors: the GGN at σ = 1 in eigen-form: ``"full"``: ``(U: (P, P), e: (P,))``;
        ``"diag"``: per layer ``(n_k, m_k)`` in the ``[W | b]`` layout; ``"kron"``: per layer
        ``(Q_G: (n_k, n_k), λ_G: (n_k,), Q_A: (m_k, m_k), λ_A: (m_k,))``, ``m_k = n_{k−1} + 1``
        with a bias.
      num_data: N, the training examples summed over.
      data_fit: ``Σ_i ‖y_i − f_i‖²`` (Gaussian) or ``Σ_i −log p(y_i | f_i)`` at θ*.
      prior_precision: λ of the prior ``N(0, λ⁻¹ I)``.
      sigma_noise: σ of the Gaussian likelihood (unused for classes).
    """

    model: MLP
    loss: str
    structure: str
    subset: str
    params: Params
    factors: Any
    num_data: int
    data_fit: Array
    prior_precision: float | Array = 1.0
    sigma_noise: float | Array = 1.0

    @property
    def likelihood(self) -> str:
        """``"gaussian"``, ``"categorical"`` or ``"bernoulli"``."""
        return LIKELIHOODS[self.loss]

    @property
    def gaussian(self) -> bool:
        return self.likelihood == "gaussian"

    @property
    def layers(self) -> tuple[int, ...]:
        """The 0-based layers the posterior covers."""
        last = self.model.num_layers - 1
        return (last,) if self.subset == "last_layer" else tuple(range(last + 1))

    @property
    def dtype(self) -> Any:
        return jnp.asarray(self.params[0]["W"]).dtype

    @property
    def num_params(self) -> int:
        """P: the number of parameters the posterior covers."""
        shapes = self.model.param_shapes()
        return sum(math.prod(s) for k in self.layers for s in shapes[k].values())

    def replace(self, **changes: Any) -> Posterior:
        """The same posterior with other fields, e.g. ``prior_precision=10.0``."""
        return dataclasses.replace(self, **changes)

    def inverse_eigenvalues(
        self, prior_precision: float | Array | None = None, sigma_noise: float | Array | None = None
    ) -> Any:
        """``1 / (e / σ² + λ)`` for every precision eigenvalue, in the layout of `factors`."""
        lam = self.prior_precision if prior_precision is None else prior_precision
        scale = self.curvature_scale(sigma_noise)
        if self.structure == "full":
            return 1 / (scale * self.factors[1] + lam)
        if self.structure == "diag":
            return tuple(1 / (scale * d + lam) for d in self.factors)
        return tuple(1 / (scale * jnp.outer(e_g, e_a) + lam) for _, e_g, _, e_a in self.factors)

    def curvature_scale(self, sigma_noise: float | Array | None = None) -> Any:
        """``1/σ²`` for a Gaussian likelihood, 1 for classes: the GGN is kept at σ = 1."""
        if not self.gaussian:
            return 1.0
        sigma = self.sigma_noise if sigma_noise is None else sigma_noise
        return 1 / sigma**2

    def log_marginal_likelihood(
        self, prior_precision: float | Array | None = None, sigma_noise: float | Array | None = None
    ) -> Array:
        """The Laplace estimate of ``log p(D)`` (eq. (7.5)), differentiable in λ and σ.

        ``log p(D | θ*) − ½ λ ‖θ*‖² + (P/2) log λ − ½ log det P``, the 2π terms cancelled;
        exact for a network linear in θ with a Gaussian likelihood (Bayesian linear
        regression). θ* and P cover the posterior's parameters only.

        Args:
          prior_precision: λ; the posterior's own when None.
          sigma_noise: σ (Gaussian likelihood only); the posterior's own when None.
        """
        lam = self.prior_precision if prior_precision is None else prior_precision
        sigma = self.sigma_noise if sigma_noise is None else sigma_noise
        if self.gaussian:
            num_values = self.num_data * self.model.sizes[-1]
            log_lik = -self.data_fit / (2 * sigma**2) - num_values / 2 * jnp.log(
                2 * jnp.pi * sigma**2
            )
        else:
            log_lik = -self.data_fit
        theta = flatten(self.model, self.params, self.layers)
        log_det = -sum(
            jnp.sum(jnp.log(v)) for v in jax.tree.leaves(self.inverse_eigenvalues(lam, sigma))
        )
        return (
            log_lik
            - 0.5 * lam * jnp.sum(theta * theta)
            + self.num_params / 2 * jnp.log(lam)
            - 0.5 * log_det
        )

    def precision_matrix(self) -> Array:
        """The dense ``P = GGN/σ² + λ I: (P, P)`` in `flatten`'s order (checks and small nets).

        Raises:
          ValueError: above `MAX_FULL_PARAMS` parameters.
        """
        return _dense(self, self.inverse_eigenvalues(), invert=False)

    def covariance(self) -> Array:
        """The dense posterior covariance ``P⁻¹: (P, P)`` in `flatten`'s order.

        Raises:
          ValueError: above `MAX_FULL_PARAMS` parameters.
        """
        return _dense(self, self.inverse_eigenvalues(), invert=True)

    def predictive(
        self,
        x: Array,
        *,
        method: str = "probit",
        num_samples: int = 1000,
        key: Array | None = None,
        batch_size: int = 256,
    ) -> Array | tuple[Array, Array]:
        """The linearised (GLM) predictive at ``x: (n, n0)`` (eqs. (7.7)-(7.10)).

        Args:
          x: the inputs, standardised as the training inputs were.
          method: classes only: ``"probit"`` (``softmax(κ ∘ f)``, κ from the variances of
            the logits) or ``"mc"`` (``num_samples`` draws of the logits per example).
          num_samples: draws per example for ``"mc"``.
          key: PRNG key, required for ``"mc"``.
          batch_size: rows worked out at a time (memory: ``batch_size × V × P`` for
            ``"full"``, ``× V × n_k`` per layer otherwise).

        Returns:
          Classes: probabilities ``(n, nL)`` (softmax; for one sigmoid unit ``p(y = 1)``,
          ``(n, 1)``). Regression: ``(mean, variance)``, each ``(n, nL)``: the MAP's ŷ and
          ``diag(J Σ Jᵀ) + σ²``; ``method`` is not used.
        """
        return predictive_lib.predictive(
            self, x, method=method, num_samples=num_samples, key=key, batch_size=batch_size
        )


# A pytree: jitted functions take a posterior whole; its description is static.
jax.tree_util.register_dataclass(
    Posterior,
    data_fields=["params", "factors", "data_fit", "prior_precision", "sigma_noise"],
    meta_fields=["model", "loss", "structure", "subset", "num_data"],
)


def flatten(model: MLP, params: Params, layers: tuple[int, ...]) -> Array:
    """The parameters of ``layers`` as one vector: each layer's ``[W | b]`` row by row."""
    parts = []
    for k in layers:
        w_bar = params[k]["W"]
        if model.use_bias:
            w_bar = jnp.concatenate([w_bar, params[k]["b"][:, None]], axis=1)
        parts.append(jnp.ravel(w_bar))
    return jnp.concatenate(parts)


def _dense(posterior: Posterior, inverse: Any, *, invert: bool) -> Array:
    if posterior.num_params > MAX_FULL_PARAMS:
        raise ValueError(
            f"the posterior covers {posterior.num_params} parameters; a dense matrix is "
            f"formed for at most {MAX_FULL_PARAMS}: use subset='last_layer'."
        )
    power = 1 if invert else -1
    if posterior.structure == "full":
        eigvecs = posterior.factors[0]
        return (eigvecs * inverse**power) @ eigvecs.T
    blocks = []
    for factor, inv in zip(posterior.factors, inverse, strict=True):
        if posterior.structure == "diag":
            blocks.append(jnp.diag(jnp.ravel(inv**power)))
        else:
            q = jnp.kron(factor[0], factor[2])  # eigenvectors of G ⊗ A
            blocks.append((q * jnp.ravel(inv**power)) @ q.T)
    return jax.scipy.linalg.block_diag(*blocks)


def fit(
    model: MLP,
    loss: str,
    params: Params,
    x: Array,
    y: Array,
    *,
    structure: str = "kron",
    subset: str = "all",
    prior_precision: float = 1.0,
    sigma_noise: float = 1.0,
    batch_size: int = 256,
) -> Posterior:
    """The Laplace posterior of a trained network on its whole training set (eq. (7.3)).

    Args:
      model: the network.
      loss: the loss it was trained with: Gaussian likelihood for ``"mse"``, ``"half_mse"``
        and ``"sse"``; Bernoulli for ``"bce"``, categorical for ``"softmax_cross_entropy"``.
      params: θ*, the trained parameters.
      x: ``(N, n0)``: the whole training set (its likelihood is a sum over it).
      y: ``(N, nL)`` targets (``(N,)`` for one output unit).
      structure: ``"kron"``, ``"diag"`` or ``"full"`` (at most `MAX_FULL_PARAMS` parameters).
      subset: ``"all"`` or ``"last_layer"``.
      prior_precision: λ > 0 (tune it with `optimize_prior`).
      sigma_noise: σ > 0 of the Gaussian likelihood (regression only).
      batch_size: training rows per pass (memory, not results).

    Returns:
      The `Posterior`.

    Examples:
      >>> import jax, jaxbp
      >>> from jaxbp import laplace
      >>> model = jaxbp.MLP((3, 4, 2), "tanh", "softmax")
      >>> params = jaxbp.init_params(jax.random.key(0), model)
      >>> x, y = jax.numpy.ones((5, 3)), jax.nn.one_hot(jax.numpy.arange(5) % 2, 2)
      >>> posterior = laplace.fit(model, "softmax_cross_entropy", params, x, y)
      >>> posterior.predictive(x).shape
      (5, 2)
    """
    if structure not in STRUCTURES:
        raise ValueError(
            f"unknown structure {structure!r}: expected one of {', '.join(STRUCTURES)}."
        )
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}: expected one of {', '.join(SUBSETS)}.")
    for name, value in (("prior_precision", prior_precision), ("sigma_noise", sigma_noise)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}.")
    if not batch_size > 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    _, x, y = backprop.check_loss_inputs(model, loss, params, x, y)
    posterior = Posterior(model, loss, structure, subset, params, None, x.shape[0], jnp.zeros(()))
    if structure == "full" and posterior.num_params > MAX_FULL_PARAMS:
        raise ValueError(
            f"structure='full' holds a dense {posterior.num_params} x {posterior.num_params} "
            f"precision; it is offered up to {MAX_FULL_PARAMS} parameters: use "
            "structure='kron' or 'diag', or subset='last_layer'."
        )
    sums: Any = None
    data_fit = jnp.zeros((), x.dtype)
    x_host, y_host = np.asarray(x), np.asarray(y)
    # Every batch padded to one shape (the padding weighs 0): one compilation per fit.
    for (x_rows, num_real), (y_rows, _) in zip(
        predictive_lib.padded_batches(x_host, batch_size),
        predictive_lib.padded_batches(y_host, batch_size),
        strict=True,
    ):
        weights = (np.arange(len(x_rows)) < num_real).astype(x_host.dtype)
        batch_sums, batch_fit = laplace_curvature.curvature_sums(
            model, loss, structure, posterior.layers, params, x_rows, y_rows, weights
        )
        sums = batch_sums if sums is None else jax.tree.map(jnp.add, sums, batch_sums)
        data_fit = data_fit + batch_fit
    return posterior.replace(
        factors=laplace_curvature.eigen_form(structure, sums, posterior.num_data),
        data_fit=data_fit,
        prior_precision=prior_precision,
        sigma_noise=sigma_noise,
    )
