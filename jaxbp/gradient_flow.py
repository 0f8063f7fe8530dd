"""How the error flows back through the layers: per-layer δ and gradient norms, and the
gradient noise scale, from one forward and one δ recursion.

Contract: `gradient_flow(model, loss, params, x, y)` returns a flat ``dict[str, Array]`` of
scalars, ready for a metrics logger, with for every layer k = 1..L

* ``delta_norm/k``: the mean over the examples of ‖δ_i^[k]‖, the per-example error of eq.
  (1.8)/(3.6) of docs/derivations.md (B times the rows of the batch δ for the mean losses,
  eq. (0.4)). Eq. (3.6), δ^[k] = ((W^[k+1])ᵀ δ^[k+1]) ∘ g'(z^[k]), multiplies it by g' once
  per layer on the way down: with sigmoid units g' ≤ 1/4, so it shrinks geometrically unless
  the weights make up for it (the vanishing gradient, `experiments/vanishing.py`);
* ``grad_norm/k``: ‖∂L/∂W^[k]‖_F of the batch loss (eq. (0.3));
* ``snr/k``: the signal-to-noise ratio of the layer's per-example gradients (eq. (5.12)),

      snr^[k] = ‖ḡ^[k]‖² / Σ_p Var_p^[k],    Var^[k] = 1/B Σ_i (g_i^[k] − ḡ^[k])²,

  over all of the layer's parameters (W and b), with ḡ = 1/B Σ_i g_i and the unscaled
  variance of `jaxbp.variance`. A ratio of sums, not a mean of per-parameter ratios: a
  parameter whose gradient hardly varies (a dead unit's) would otherwise dominate it. It is
  the signal-to-noise ratio of one example's gradient: the batch mean's is B times it, and
  a layer with snr ≪ 1/B gets mostly noise from a batch of B. Where every example's gradient
  is the same (zero variance) it is +inf, or of order 1/ε where rounding leaves a trace;
  where every per-example gradient is zero (an exact fit) it is 0. Σ_p Var_p comes from the
  same rank-one norms as the noise scale: 1/B Σ_i ‖δ_i‖² (‖a_i‖² + 1[bias]) − ‖ḡ‖²;

and ``noise_scale``, the simple gradient noise scale of McCandlish et al. (2018),

    B_simple = tr(Σ) / ‖G‖²,     tr(Σ) ≈ (1/B Σ_i ‖g_i‖² − ‖G‖²) · B / (B − 1)

with g_i = ∇_θ L_i the gradient of example i's own loss and G = 1/B Σ_i g_i their mean (the
batch gradient for the mean losses). The ‖g_i‖ come from the rank-one identity
‖δ_i a_iᵀ‖ = ‖δ_i‖ ‖a_i‖ (`jaxbp.per_example_grad_norms`): no per-example gradient is formed.
The estimate of tr(Σ) is unbiased; the ratio is not, and on one batch it is noisy. B_simple
is roughly the batch size beyond which a larger batch stops cutting the number of steps.
Where the mean gradient is zero (an exact fit, or any stationary point) it is ``inf``: no
batch is large enough to see a direction the examples agree on. That is the value the
ratio x/0 takes, also when tr(Σ) is 0 too, so that 0/0 never gives NaN.

References:
  McCandlish, Kaplan, Amodei et al., "An Empirical Model of Large-Batch Training",
  arXiv:1812.06162 (2018).
"""

import jax
import jax.numpy as jnp

from jaxbp import backprop, per_example
from jaxbp.mlp import MLP, Params

Array = jax.Array


def gradient_flow(model: MLP, loss: str, params: Params, x: Array, y: Array) -> dict[str, Array]:
    """Per-layer mean ‖δ_i^[k]‖, ‖∂L/∂W^[k]‖ and gradient signal-to-noise ratio, and the
    gradient noise scale B_simple.

    One forward pass and one δ recursion from the per-example output errors; jittable with
    ``model`` and ``loss`` static.

    Names and shapes are checked; values are not (NaN inputs, targets outside the loss's
    domain): `jaxbp.check_inputs` checks them eagerly.

    Args:
      model: the network.
      loss: a name from `jaxbp.LOSSES`.
      params: the parameters.
      x: ``(batch, n0)`` with batch ≥ 2 (the variance needs two examples).
      y: ``(batch, nL)`` targets (``(batch,)`` for a single output unit).

    Returns:
      ``{"delta_norm/1": ..., "grad_norm/1": ..., "snr/1": ..., "noise_scale": ...}``,
      scalars in the params' dtype; the keys are numbered by layer k = 1..L.

    Raises:
      ValueError: for a batch of one, or any argument `jaxbp.loss_and_grad` refuses.

    Examples:
      >>> import jax, jaxbp
      >>> model = jaxbp.MLP((3, 4, 1))
      >>> params = jaxbp.init_params(jax.random.key(0), model)
      >>> x = jax.random.normal(jax.random.key(1), (8, 3))
      >>> flow = jaxbp.gradient_flow(model, "mse", params, x, x[:, :1])
      >>> sorted(flow)  # doctest: +NORMALIZE_WHITESPACE
      ['delta_norm/1', 'delta_norm/2', 'grad_norm/1', 'grad_norm/2', 'noise_scale',
       'snr/1', 'snr/2']
    """
    loss_fn, x, y = backprop.check_loss_inputs(model, loss, params, x, y)
    batch = x.shape[0]
    if batch < 2:
        raise ValueError(
            f"x has shape {tuple(x.shape)}: the gradient noise scale needs the spread of the "
            "per-example gradients, so pass a batch of at least 2 examples."
        )
    _, residuals, deltas, norms = per_example.forward_and_example_deltas(
        model, loss_fn, params, x, y
    )
    # G = 1/B Σ_i g_i: the recursion's rows scaled by 1/B, then eq. (0.3).
    mean_grads = backprop.gradients_from_deltas(
        model, residuals, tuple(delta / batch for delta in deltas)
    )
    # The batch loss is w Σ_i L_i, so its gradient is (w B) G: G itself for the mean losses.
    to_batch = batch if loss_fn.reduction == "sum" else 1
    flow = {}
    layers = zip(deltas, residuals.activations[:-1], mean_grads, strict=True)
    for k, (delta, a_prev, grads) in enumerate(layers, start=1):
        delta_sq = jnp.sum(delta * delta, axis=-1)
        flow[f"delta_norm/{k}"] = jnp.mean(jnp.sqrt(delta_sq))
        flow[f"grad_norm/{k}"] = to_batch * jnp.linalg.norm(grads["W"])
        flow[f"snr/{k}"] = _snr(model, delta_sq, a_prev, grads)
    mean_sq_norm = sum(jnp.sum(g * g) for g in jax.tree.leaves(mean_grads))  # ‖G‖²
    trace_sigma = (jnp.mean(norms * norms) - mean_sq_norm) * batch / (batch - 1)
    # At an exact fit or a stationary point G = 0 and the ratio is x/0: inf, documented.
    flow["noise_scale"] = jnp.where(
        mean_sq_norm > 0, trace_sigma / jnp.where(mean_sq_norm > 0, mean_sq_norm, 1), jnp.inf
    )
    return flow


def _snr(model: MLP, delta_sq: Array, a_prev: Array, mean_grads: dict[str, Array]) -> Array:
    """``‖ḡ‖² / Σ_p Var_p`` of one layer (eq. (5.12)) from ``‖δ_i‖²: (B,)`` and ``a^[k−1]``."""
    a_sq = jnp.sum(a_prev * a_prev, axis=-1) + (1 if model.use_bias else 0)
    signal = sum(jnp.sum(g * g) for g in mean_grads.values())
    # Σ_p Var_p = 1/B Σ_i ‖g_i‖² − ‖ḡ‖², with ‖g_i‖² = ‖δ_i‖² ‖ā_i‖² (rank one); clipped at
    # 0, where rounding can leave it slightly negative.
    noise = jnp.maximum(jnp.mean(delta_sq * a_sq) - signal, 0)
    safe_noise = jnp.where(noise > 0, noise, 1)
    return jnp.where(noise > 0, signal / safe_noise, jnp.where(signal > 0, jnp.inf, 0.0))
