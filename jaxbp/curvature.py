"""Curvature and gradient statistics from one forward pass and the δ recursion.

Contract: every function takes ``(model, loss, params, x, y, ...)`` as `jaxbp.loss_and_grad`
does, with its input checks, and is jittable with ``model``, ``loss`` and ``mc_samples``
static. Layer k's per-example input is ``ā_i^[k−1] = [a_i^[k−1]; 1]`` (the 1 only with a
bias), ``δ_i^[k] = ∂ℓ_i/∂z_i^[k]`` is the error of example i's own loss ℓ_i (the loss on a
batch of one) and the batch loss is ``L = w Σ_i ℓ_i`` (w = 1/B for the mean losses, 1 for
``"sse"``). Equation numbers refer to section 5 of docs/derivations.md.

First order, from the per-example δ's (one recursion from the per-example output δ)::

    ∇_W ℓ_i = δ_i ā_iᵀ                                                (5.1)
    Σ_i (w ∇_W ℓ_i)² = w² (δ∘δ)ᵀ (ā∘ā)            `sum_grad_squared`  (5.2)
    (1/B) Σ_i (∇ℓ_i − ḡ)²,  ḡ = (1/B) δᵀ ā          `variance`          (5.3)
    K_ij = Σ_k (δ_i·δ_j)(ā_i·ā_j)                   `grad_gram`         (5.4)

Second order: the columns of a square root of the loss's Hessian at the split point
(`jaxbp.loss_hessians`, eqs. (5.5)-(5.6)) go back through the same recursion, which acts on
each row alone and is linear, so it carries a ``(B, V, n)`` stack as it carries δ (eq. (5.7)).
Their squares against ā∘ā give the diagonal GGN (5.8); with the activations' second
derivatives added as weighted columns, the diagonal Hessian (5.9); with sampled columns, the
Monte-Carlo estimate (5.10); their Gram matrices against ā āᵀ, the Kronecker factors (5.11).

References:
  Dangel, Kunstner, Hennig, "BackPACK: Packing more into backprop", ICLR 2020.
  Martens, Grosse, "Optimizing neural networks with Kronecker-factored approximate
  curvature", ICML 2015.
  Botev, Ritter, Barber, "Practical Gauss-Newton optimisation for deep learning", ICML 2017.
"""

import dataclasses
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbp import backprop, loss_hessians, per_example
from jaxbp import losses as losses_lib
from jaxbp.mlp import MLP, Params

Array = jax.Array


class SqrtGGN(NamedTuple):
    """The forward residuals and the loss-Hessian square roots carried back to every layer.

    Attributes:
      residuals: from `jaxbp.forward_with_residuals` (``a^[0] = x, ..., a^[L] = ŷ``, W^[k]).
      columns: ``(D^[1], ..., D^[L])`` with ``D^[k]: (B, V, n_k)``: row ``[i, v]`` is column v
        of ``S_i`` sent back to ``z^[k]`` (eq. (5.7)). Example i's GGN block of layer k's
        ``[W | b]`` flattened row by row is ``Σ_v (D_iv ⊗ ā_i)(D_iv ⊗ ā_i)ᵀ`` (eq. (5.8)),
        ā from `layer_inputs`; summed over i, the batch GGN's block.
    """

    residuals: backprop.Residuals
    columns: tuple[Array, ...]


def layer_inputs(model: MLP, residuals: backprop.Residuals) -> tuple[Array, ...]:
    """``ā^[k−1] = [a^[k−1], 1]: (B, n_{k−1} + 1)`` per layer, ``a^[k−1]`` without a bias."""
    inputs = residuals.activations[:-1]
    if not model.use_bias:
        return inputs
    return tuple(jnp.concatenate([a, jnp.ones((a.shape[0], 1), a.dtype)], axis=1) for a in inputs)


def _check_sampling(mc_samples: int, key: Array | None) -> int:
    try:
        mc_samples = operator.index(mc_samples)
    except TypeError:
        raise ValueError(
            f"mc_samples must be a non-negative int, got {mc_samples!r}: 0 for the exact "
            "curvature, M > 0 for a Monte-Carlo estimate from M sampled targets."
        ) from None
    if mc_samples < 0:
        raise ValueError(f"mc_samples must be >= 0, got {mc_samples}: 0 gives the exact value.")
    if mc_samples > 0 and key is None:
        raise ValueError(
            f"mc_samples={mc_samples} samples targets, so it needs a PRNG key: pass "
            "key=jax.random.key(seed), or mc_samples=0 for the exact value."
        )
    if mc_samples == 0 and key is not None:
        raise ValueError(
            "key is given but mc_samples=0 computes the exact value, which samples nothing: "
            "pass mc_samples=M > 0 for the Monte-Carlo estimate, or drop key."
        )
    return mc_samples


def carry_back(
    model: MLP, residuals: backprop.Residuals, layer: int, columns: Array
) -> tuple[Array, ...]:
    """Columns ``(B, C, n_layer)`` at ``z^[layer]`` sent back to layers 1..layer (eq. (5.7)).

    `jaxbp.layer_deltas` acts on each row alone and is linear, so it takes the B·C columns
    as rows, each beside its example's activations (repeated C times).

    Returns:
      ``(D^[1], ..., D^[layer])``, ``D^[k]: (B, C, n_k)``.
    """
    batch, num_columns, width = columns.shape
    # The recursion from z^[layer] is that of the network cut after that layer.
    cut = dataclasses.replace(model, sizes=model.sizes[: layer + 1], output_activation="identity")
    # a^[0] = x only counts (the recursion reads g' of a^[1..layer−1] and the top's shape).
    rows = backprop.Residuals(
        residuals.weights[:layer],
        residuals.activations[:1]
        + tuple(jnp.repeat(a, num_columns, axis=0) for a in residuals.activations[1 : layer + 1]),
    )
    deltas = backprop.layer_deltas(cut, rows, columns.reshape(batch * num_columns, width))
    # One row per (example, column): a plain matmul per layer, where a vmap over the columns
    # gave XLA:CPU batched matmuls that fused badly with the squares (2-3× slower).
    return tuple(d.reshape(batch, num_columns, -1) for d in deltas)


def _sqrt_ggn(
    model: MLP,
    loss_fn: losses_lib.Loss,
    params: Params,
    x: Array,
    mc_samples: int,
    key: Array | None,
) -> SqrtGGN:
    z_out, y_hat, residuals = backprop.forward_with_residuals(model, params, x)
    if mc_samples:
        assert key is not None
        columns = loss_hessians.sampled_hessian_sqrt(loss_fn, z_out, y_hat, key, mc_samples)
    else:
        columns = loss_hessians.hessian_sqrt(loss_fn, y_hat)
    if not loss_fn.fused:
        # Split at ŷ: the output activation is part of the network, eq. (5.7)'s f'.
        columns = model.layer_activations[-1].vjp(y_hat[:, None, :], columns)
    return SqrtGGN(residuals, carry_back(model, residuals, model.num_layers, columns))


def backpropagated_sqrt_ggn(
    model: MLP,
    loss: str,
    params: Params,
    x: Array,
    y: Array,
    *,
    mc_samples: int = 0,
    key: Array | None = None,
) -> SqrtGGN:
    """The residuals and, per layer, the loss-Hessian square roots sent back (eqs. (5.5)-(5.7)).

    The building block of the GGN quantities: example i's exact GGN ``J_iᵀ H_i J_i``,
    restricted to layer k's ``[W | b]`` flattened row by row, is
    ``Σ_v (D_iv^[k] ⊗ ā_i^[k−1])(D_iv^[k] ⊗ ā_i^[k−1])ᵀ``; across two layers k, l the block
    is ``Σ_v (D_iv^[k] ⊗ ā_i^[k−1])(D_iv^[l] ⊗ ā_i^[l−1])ᵀ``. ``H_i`` carries the batch
    weight w (`jaxbp.loss_hessians`), so the sum over i is the batch loss's GGN.

    Args:
      model: the network.
      loss: a name from `jaxbp.LOSSES`.
      params: the parameters.
      x: ``(batch, n0)``.
      y: ``(batch, nL)`` targets (checked; the GGN does not depend on them).
      mc_samples: 0 for the exact square root (V = nL columns), M > 0 for M sampled columns
        (eq. (5.10)).
      key: a PRNG key, needed exactly when ``mc_samples > 0``.

    Returns:
      A `SqrtGGN`; ``columns[k − 1]: (B, V, n_k)``.
    """
    mc_samples = _check_sampling(mc_samples, key)
    loss_fn, x, y = backprop.check_loss_inputs(model, loss, params, x, y)
    return _sqrt_ggn(model, loss_fn, params, x, mc_samples, key)


def _squared_matmul(
    model: MLP, residuals: backprop.Residuals, h: tuple[Array, ...], per_example: bool
) -> Params:
    """``Σ_i h_i^[k] (a_i^[k−1] ∘ a_i^[k−1])ᵀ`` for W and ``Σ_i h_i^[k]`` for b (eqs. (5.2),
    (5.8)); without the sum over i when ``per_example``."""
    # A barrier: otherwise XLA:CPU fuses the reduction that makes h (over columns) into both
    # the matmul and the bias's sum, which made diag_ggn 4× slower (docs/performance.md).
    h = jax.lax.optimization_barrier(h)
    out = []
    for h_k, a_prev in zip(h, residuals.activations[:-1], strict=True):
        a_sq = a_prev * a_prev
        w_sq = h_k[:, :, None] * a_sq[:, None, :] if per_example else h_k.T @ a_sq
        layer = {"W": w_sq}
        if model.use_bias:
            layer["b"] = h_k if per_example else jnp.sum(h_k, axis=0)
        out.append(layer)
    return out


def _example_deltas(
    model: MLP, loss: str, params: Params, x: Array, y: Array
) -> tuple[losses_lib.Loss, backprop.Residuals, tuple[Array, ...]]:
    loss_fn, x, y = backprop.check_loss_inputs(model, loss, params, x, y)
    _, residuals, deltas, _ = per_example.forward_and_example_deltas(model, loss_fn, params, x, y)
    return loss_fn, residuals, deltas


def sum_grad_squared(model: MLP, loss: str, params: Params, x: Array, y: Array) -> Params:
    """``Σ_i (w ∇ℓ_i)²`` element-wise (BackPACK's SumGradSquared), one matmul per layer (5.2).

    ``w ∇ℓ_i`` is example i's share of the batch gradient, so this is the second moment with
    the loss's own reduction inside: ``(w² δ∘δ)ᵀ (a∘a)`` for W, ``Σ_i w² δ_i∘δ_i`` for b.

    Returns:
      A pytree shaped like ``params``.
    """
    loss_fn, residuals, deltas = _example_deltas(model, loss, params, x, y)
    w = loss_fn.batch_weight(x.shape[0])
    return _squared_matmul(model, residuals, tuple(w * w * d * d for d in deltas), False)


def variance(model: MLP, loss: str, params: Params, x: Array, y: Array) -> Params:
    """The per-example gradients' variance ``(1/B) Σ_i (∇ℓ_i − ḡ)²``, element-wise (5.3).

    Unscaled: ∇ℓ_i is the gradient of example i's own loss, whatever the reduction, and the
    divisor is B (not B − 1). BackPACK's Variance is that of the reduced gradients w ∇ℓ_i,
    w² times this (1/B² of it for a mean loss). Computed as ``(1/B) Σ_i (∇ℓ_i)² − ḡ²`` from
    two matmuls per layer; rounding can leave an entry of zero variance slightly off zero,
    so entries are clipped at 0.

    Returns:
      A pytree shaped like ``params``.
    """
    _, residuals, deltas = _example_deltas(model, loss, params, x, y)
    batch = x.shape[0]
    second = _squared_matmul(model, residuals, tuple(d * d / batch for d in deltas), False)
    mean = backprop.gradients_from_deltas(model, residuals, tuple(d / batch for d in deltas))
    return jax.tree.map(lambda s, m: jnp.maximum(s - m * m, 0), second, mean)


def grad_gram(model: MLP, loss: str, params: Params, x: Array, y: Array) -> Array:
    """``K_ij = ⟨∇ℓ_i, ∇ℓ_j⟩`` of the unscaled per-example gradients, none formed (5.4).

    ``Σ_k (δ_i^[k]·δ_j^[k]) (a_i^[k−1]·a_j^[k−1] + 1[bias])``: two (B, B) matmuls per layer.

    Returns:
      ``(B, B)``, symmetric positive semi-definite; its diagonal is the squared norms of
      `jaxbp.per_example_grad_norms`.
    """
    _, residuals, deltas = _example_deltas(model, loss, params, x, y)
    gram = jnp.zeros((x.shape[0], x.shape[0]), deltas[0].dtype)
    for delta, a_bar in zip(deltas, layer_inputs(model, residuals), strict=True):
        gram = gram + (delta @ delta.T) * (a_bar @ a_bar.T)
    return gram


def diag_ggn(
    model: MLP,
    loss: str,
    params: Params,
    x: Array,
    y: Array,
    *,
    mc_samples: int = 0,
    key: Array | None = None,
    per_example: bool = False,
) -> Params:
    """The diagonal of the GGN ``G = Σ_i J_iᵀ H_i J_i`` of the batch loss (eqs. (5.5)-(5.8)).

    Split at the logits for ``"bce"`` and ``"softmax_cross_entropy"``, at ŷ for the others.
    ``diag G`` of W^[k] is ``Σ_i Σ_v (D_iv^[k])² (a_i^[k−1])²ᵀ``: the square-root columns
    of `backpropagated_sqrt_ggn`, squared, against the squared inputs.

    Args:
      model, loss, params, x, y: as for `jaxbp.loss_and_grad`.
      mc_samples: 0 for the exact diagonal; M > 0 for the unbiased Monte-Carlo estimate from
        M targets per example sampled from the model's predictive distribution (eq. (5.10)).
      key: a PRNG key, needed exactly when ``mc_samples > 0``.
      per_example: whether to return each example's contribution ``diag(J_iᵀ H_i J_i)``
        (with the batch weight in H_i, so that they sum over the examples to the batch's).

    Returns:
      A pytree shaped like ``params``, or with a leading ``(B,)`` axis when ``per_example``.

    Examples:
      >>> import jax, jaxbp
      >>> model = jaxbp.MLP((3, 4, 2), "tanh", "softmax")
      >>> params = jaxbp.init_params(jax.random.key(0), model)
      >>> x, y = jax.numpy.ones((5, 3)), jax.nn.one_hot(jax.numpy.arange(5) % 2, 2)
      >>> jaxbp.diag_ggn(model, "softmax_cross_entropy", params, x, y)[0]["W"].shape
      (4, 3)
    """
    sqrt_ggn = backpropagated_sqrt_ggn(model, loss, params, x, y, mc_samples=mc_samples, key=key)
    h = tuple(jnp.sum(d * d, axis=1) for d in sqrt_ggn.columns)
    return _squared_matmul(model, sqrt_ggn.residuals, h, per_example)


def _output_residual(
    model: MLP, loss_fn: losses_lib.Loss, y_hat: Array, y: Array
) -> tuple[Array, Array] | None:
    """``Σ_j ḡ_j ∇²_z f_j(z^[L])`` as ``(columns (B, nL, nL), weights (B, nL))`` (eq. (5.9)),
    or None where f is not curved or the split is at the logits."""
    output = model.layer_activations[-1]
    if loss_fn.fused or (output.elementwise and output.second_derivative_from_output is None):
        return None
    g_bar = loss_fn.grad(y_hat, y)  # ∂L/∂ŷ of the batch loss
    eye = jnp.eye(y_hat.shape[-1], dtype=y_hat.dtype)
    if output.elementwise:
        assert output.second_derivative_from_output is not None
        return jnp.broadcast_to(eye, (*y_hat.shape, y_hat.shape[-1])), (
            g_bar * output.second_derivative_from_output(y_hat)
        )
    # Softmax: Σ_j ḡ_j ∇²s_j = Σ_j δ_j (e_j − s)(e_j − s)ᵀ with δ = s ∘ (ḡ − ⟨ḡ, s⟩).
    return eye - y_hat[:, None, :], output.vjp(y_hat, g_bar)


def diag_hessian(
    model: MLP, loss: str, params: Params, x: Array, y: Array, *, per_example: bool = False
) -> Params:
    """The diagonal of the Hessian ``∇²_θ L`` of the batch loss (eq. (5.9)).

    The GGN's columns (`diag_ggn`) plus the terms of the activations' second derivatives: at
    every hidden layer k the residual ``r^[k] = g''(z^[k]) ∘ (Δ^[k+1] W^[k+1])`` (Δ the batch
    loss's δ), a diagonal carried further down as weighted unit columns, and for a regression
    loss through a curved output activation f, ``Σ_j ∂L/∂ŷ_j ∇²_z f_j``. It equals `diag_ggn`
    when no activation curves (relu, leaky_relu, identity; or a fused loss's output).

    Args:
      model, loss, params, x, y: as for `jaxbp.loss_and_grad`.
      per_example: whether to return each example's contribution (they sum to the batch's).

    Returns:
      A pytree shaped like ``params``, or with a leading ``(B,)`` axis when ``per_example``.
    """
    loss_fn, x, y = backprop.check_loss_inputs(model, loss, params, x, y)
    sqrt_ggn = _sqrt_ggn(model, loss_fn, params, x, 0, None)
    residuals = sqrt_ggn.residuals
    h = [jnp.sum(d * d, axis=1) for d in sqrt_ggn.columns]
    y_hat = residuals.activations[-1]

    def add_weighted(layer: int, columns: Array, weights: Array) -> None:
        # Columns at z^[layer] with signed weights: Σ_c weight_c (D_c^[k])² for k ≤ layer.
        for k, d in enumerate(carry_back(model, residuals, layer, columns)):
            h[k] = h[k] + jnp.einsum("bc,bcn->bn", weights, d * d)

    output_residual = _output_residual(model, loss_fn, y_hat, y)
    if output_residual is not None:
        add_weighted(model.num_layers, *output_residual)
    hidden = model.layer_activations[0]
    if hidden.second_derivative_from_output is not None and model.num_layers > 1:
        assert hidden.derivative_from_output is not None
        delta = backprop.loss_output_delta(model, loss_fn, y_hat, y)
        deltas = backprop.layer_deltas(model, residuals, delta)
        for k in range(1, model.num_layers):  # hidden layer k, deltas[k] = Δ^[k+1]
            a_k = residuals.activations[k]
            r = hidden.second_derivative_from_output(a_k) * (deltas[k] @ residuals.weights[k])
            h[k - 1] = h[k - 1] + r  # the unit columns e_n squared: r itself
            if k > 1:
                # e_n one layer down (eq. (5.7)): (e_n W^[k]) ∘ g'(z^[k−1]) = row n of W^[k]
                # times g', a broadcast; layer_deltas takes them further.
                g_prime = hidden.derivative_from_output(residuals.activations[k - 1])
                add_weighted(k - 1, residuals.weights[k - 1][None] * g_prime[:, None, :], r)
    return _squared_matmul(model, residuals, tuple(h), per_example)


def kfac_factors(
    model: MLP,
    loss: str,
    params: Params,
    x: Array,
    y: Array,
    *,
    mc_samples: int = 0,
    key: Array | None = None,
) -> tuple[tuple[Array, Array], ...]:
    """The Kronecker factors ``(A_k, G_k)`` of every layer's GGN block (eq. (5.11)).

    ``A_k = (1/B) Σ_i ā_i ā_iᵀ`` with ``ā = [a^[k−1]; 1]`` (the 1 only with a bias) and
    ``G_k = Σ_i Σ_v D_iv D_ivᵀ`` of the backpropagated square-root columns: exact columns give
    KFLR, sampled ones (``mc_samples > 0``) KFAC's Monte-Carlo Fisher. Convention:
    ``jnp.kron(G_k, A_k)`` approximates the GGN block of layer k's ``[W | b]`` flattened row
    by row (W: ``(n_k, n_{k−1})``, b appended as a last column), ``Σ_i G_i ⊗ ā_i ā_iᵀ``; it is
    exact when B = 1 or when all rows of x are equal. G_k sums over the batch with the loss's
    weight (it is the batch loss's); A_k averages, so their product is the batch's scale.

    Args:
      model, loss, params, x, y: as for `jaxbp.loss_and_grad`.
      mc_samples: 0 for exact columns, M > 0 for M sampled targets per example.
      key: a PRNG key, needed exactly when ``mc_samples > 0``.

    Returns:
      ``((A_1, G_1), ..., (A_L, G_L))`` with ``A_k: (n_{k−1} + 1[bias], same)`` and
      ``G_k: (n_k, n_k)``.
    """
    sqrt_ggn = backpropagated_sqrt_ggn(model, loss, params, x, y, mc_samples=mc_samples, key=key)
    factors = []
    for d, a_bar in zip(sqrt_ggn.columns, layer_inputs(model, sqrt_ggn.residuals), strict=True):
        flat = d.reshape(-1, d.shape[-1])  # all (i, v) columns as rows
        factors.append((a_bar.T @ a_bar / a_bar.shape[0], flat.T @ flat))
    return tuple(factors)
