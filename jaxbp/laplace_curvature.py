"""The GGN of a Laplace posterior over a training set, from the curvature module's columns.

Contract (eqs. (7.1)-(7.4) of docs/derivations.md): `curvature_sums` takes one batch, padded
to a fixed shape with rows of weight 0, and returns its share of the GGN of the *summed*
negative log-likelihood at σ = 1 in a structure's layout, and its share of the data fit;
summed over the batches, `eigen_form` turns them into what `jaxbp.laplace.Posterior.factors`
holds. The columns are `jaxbp.curvature.backpropagated_sqrt_ggn`'s, those of the batch
*loss* ``L = w Σ_i ℓ_i`` with ``∂²ℓ_i/∂ŷ² = κ I`` for a regression loss: divided by
``√(w κ)`` they are the summed likelihood's (eq. (7.2)).
"""

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxbp import curvature, loss_hessians
from jaxbp import losses as losses_lib
from jaxbp.mlp import MLP, Params, layer_forward

Array = jax.Array


def eigen_form(structure: str, sums: Any, num_data: int) -> Any:
    """The summed curvature in the eigen-form `jaxbp.laplace.Posterior.factors` holds: the
    diagonal as it is; ``eigh`` of the dense GGN; per layer ``eigh`` of ``A = (1/N) Σ ā āᵀ``
    and of ``G`` (eq. (7.4)). Eigenvalues below 0 (a PSD matrix's rounding) are set to 0."""
    if structure == "diag":
        return tuple(sums)
    if structure == "full":
        eigvals, eigvecs = jnp.linalg.eigh(sums)
        return eigvecs, jnp.maximum(eigvals, 0)
    factors = []
    for a_sum, g in sums:
        e_a, q_a = jnp.linalg.eigh(a_sum / num_data)  # A = 1/N Σ ā āᵀ
        e_g, q_g = jnp.linalg.eigh(g)
        factors.append((q_g, jnp.maximum(e_g, 0), q_a, jnp.maximum(e_a, 0)))
    return tuple(factors)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def curvature_sums(
    model: MLP,
    loss: str,
    structure: str,
    layers: tuple[int, ...],
    params: Params,
    x: Array,
    y: Array,
    weights: Array,
) -> tuple[Any, Array]:
    """One batch's share of the GGN (eq. (7.3)) in the structure's layout, and of the fit.

    Args:
      model, loss, params: the network, its loss and θ*.
      structure: ``"diag"``, ``"kron"`` or ``"full"``.
      layers: the 0-based layers the posterior covers.
      x: ``(B, n0)``; y: ``(B, nL)``.
      weights: ``(B,)``, 1 for an example and 0 for a padding row.

    Returns:
      ``(sums, data_fit)``: ``"diag"``: per layer ``Σ_i Σ_v D_iv² ā_i²ᵀ: (n_k, m_k)``;
      ``"kron"``: per layer ``(Σ_i ā_i ā_iᵀ, Σ_i Σ_v D_iv D_ivᵀ)``; ``"full"``: the dense
      ``Σ_i (Sᵀ J_i)ᵀ (Sᵀ J_i): (P, P)``. ``data_fit``: ``Σ_i ‖y_i − ŷ_i‖²`` for a regression
      loss, else ``Σ_i −log p(y_i | z_i)``.
    """
    loss_fn = losses_lib.get_loss(loss)
    sqrt_ggn = curvature.backpropagated_sqrt_ggn(model, loss, params, x, y)
    residuals = sqrt_ggn.residuals
    y_hat = residuals.activations[-1]
    if not loss_fn.fused:  # a regression loss: the Gaussian of eq. (7.1)
        data_fit = jnp.sum(weights[:, None] * (y - y_hat) ** 2)
    else:  # the fused loss's mean NLL from the logits, of one row at a time
        z_out = layer_forward(residuals.activations[-2], params[-1])
        nll = loss_fn.value_from_logits
        assert nll is not None
        data_fit = jnp.sum(weights * jax.vmap(lambda f_i, y_i: nll(f_i[None], y_i[None]))(z_out, y))
    # The batch loss's square-root columns carry w (and κ = ∂²ℓ_i/∂ŷ² for a regression loss):
    # dividing by √(w κ) leaves those of the summed NLL, at σ = 1 (eq. (7.3)).
    kappa = loss_hessians.REGRESSION_CURVATURE.get(loss, 1.0)
    scale = weights / math.sqrt(loss_fn.batch_weight(x.shape[0]) * kappa)
    ggn_columns = [sqrt_ggn.columns[k] * scale[:, None, None] for k in layers]
    inputs = curvature.layer_inputs(model, residuals)
    a_bar = [inputs[k] for k in layers]
    pairs = list(zip(ggn_columns, a_bar, strict=True))
    a_weighted = [a * weights[:, None] for a in a_bar]
    if structure == "diag":
        return [jnp.einsum("bun,bm->nm", c * c, a * a) for c, a in pairs], data_fit
    if structure == "kron":
        gram = [
            (a_w.T @ a, jnp.einsum("bun,buk->nk", c, c))
            for (c, a), a_w in zip(pairs, a_weighted, strict=True)
        ]
        return gram, data_fit
    rows = jnp.concatenate(
        [jnp.einsum("bun,bm->bunm", c, a).reshape(*c.shape[:2], -1) for c, a in pairs], axis=-1
    ).reshape(-1, sum(c.shape[-1] * a.shape[-1] for c, a in pairs))
    return rows.T @ rows, data_fit
