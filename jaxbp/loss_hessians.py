"""The loss's Hessian at the split point, as columns of a square root (exact or sampled).

Contract: the generalised Gauss-Newton matrix G = Jᵀ (∇²_f L) J splits the network at the
point f where the loss is convex: the logits ``z^[L]`` for the fused losses (bce with its
sigmoid, softmax cross-entropy with its softmax), the output ŷ for the regression losses
(their output activation is part of the network, J runs up to ŷ). At that point the batch
loss ``L = w Σ_i ℓ_i`` (w = 1/B for the mean losses, 1 for ``"sse"``) has a block-diagonal
Hessian, one block ``H_i = w ∇²_f ℓ_i`` per example, and each block is written
``H_i = S_i S_iᵀ`` (eqs. (5.5)-(5.6) of docs/derivations.md)::

    mse        S = √(2w) I            half_mse   S = √w I            sse   S = √2 I
    bce        S = √(w σ(1 − σ))      (diagonal; σ = ŷ, at the logits)
    softmax    S = √w (Diag(τ) − p τᵀ),  p = softmax(z^[L]),  τ = √p   (at the logits)

Columns are returned as rows of a stack: ``columns[i, v, :]`` is the v-th column of S_i,
shape ``(B, V, nL)``. Sampled columns (eq. (5.10)) replace S_i by M draws
``√w ∇_f ℓ(f_i, ỹ_m) / √M`` with ỹ_m drawn from the model's own predictive distribution
(categorical, Bernoulli, Gaussian), so that ``E[Σ_m c_m c_mᵀ] = H_i``.

The softmax square root assumes target rows summing to one (`jaxbp.losses.check_targets`):
then ``∇²_z ℓ_i = Diag(p) − p pᵀ`` whatever the targets.
"""

import math

import jax
import jax.numpy as jnp

from jaxbp import losses as losses_lib

Array = jax.Array

# ∇²_ŷ ℓ_i = κ I for the regression losses: ℓ_i = ‖ŷ − y‖² (mse, sse) or ½‖ŷ − y‖².
REGRESSION_CURVATURE = {"mse": 2.0, "half_mse": 1.0, "sse": 2.0}


def hessian_sqrt(loss_fn: losses_lib.Loss, y_hat: Array) -> Array:
    """The columns of ``S_i`` with ``S_i S_iᵀ = H_i``, the batch loss's Hessian block of
    example i at the split point (eqs. (5.5)-(5.6)).

    Args:
      loss_fn: the loss.
      y_hat: ``ŷ: (B, nL)``, the network's output (p = softmax or σ for the fused losses).

    Returns:
      ``(B, V, nL)`` with V = nL: row ``[i, v]`` is column v of S_i.
    """
    batch, n_out = y_hat.shape
    w = loss_fn.batch_weight(batch)
    eye = jnp.eye(n_out, dtype=y_hat.dtype)
    if loss_fn.name == "softmax_cross_entropy":
        # Column v of Diag(τ) − p τᵀ is τ_v (e_v − p): S Sᵀ = Σ_v p_v (e_v − p)(e_v − p)ᵀ.
        tau = jnp.sqrt(y_hat)
        return math.sqrt(w) * tau[:, :, None] * (eye - y_hat[:, None, :])
    if loss_fn.name == "bce":
        return jnp.sqrt(w * y_hat * (1 - y_hat))[:, :, None] * eye
    kappa = REGRESSION_CURVATURE[loss_fn.name]
    return jnp.broadcast_to(math.sqrt(w * kappa) * eye, (batch, n_out, n_out))


def sampled_hessian_sqrt(
    loss_fn: losses_lib.Loss, z_out: Array, y_hat: Array, key: Array, mc_samples: int
) -> Array:
    """M sampled columns per example whose outer products are unbiased for ``H_i`` (eq. (5.10)).

    Each column is ``√w ∇_f ℓ(f_i, ỹ) / √M`` at a target ỹ drawn from the model's predictive
    distribution: a class ~ Categorical(p) for softmax cross-entropy (column ``p − e_ỹ``),
    ỹ ~ Bernoulli(σ) for bce (``σ − ỹ``), ỹ ~ N(ŷ, I/κ) for the regression losses, whose
    gradient ``κ (ŷ − ỹ)`` is ``√κ ε`` with ε ~ N(0, I). The expected outer product is the
    Fisher of that distribution, which equals ``∇²_f ℓ`` for all five losses.

    Args:
      loss_fn: the loss.
      z_out: ``z^[L]: (B, nL)``, the logits.
      y_hat: ``ŷ: (B, nL)``.
      key: a PRNG key.
      mc_samples: M ≥ 1.

    Returns:
      ``(B, M, nL)``.
    """
    batch, n_out = y_hat.shape
    dtype = y_hat.dtype
    scale = math.sqrt(loss_fn.batch_weight(batch) / mc_samples)
    shape = (batch, mc_samples, n_out)
    if loss_fn.name == "softmax_cross_entropy":
        classes = jax.random.categorical(key, z_out[:, None, :], shape=shape[:2])
        return scale * (y_hat[:, None, :] - jax.nn.one_hot(classes, n_out, dtype=dtype))
    if loss_fn.name == "bce":
        draws = jax.random.bernoulli(key, y_hat[:, None, :], shape).astype(dtype)
        return scale * (y_hat[:, None, :] - draws)
    kappa = REGRESSION_CURVATURE[loss_fn.name]
    return scale * math.sqrt(kappa) * jax.random.normal(key, shape, dtype)
