"""Activation functions, each kept beside its hand-written derivative.

Contract: an `Activation` maps a pre-activation ``z`` to ``a = g(z)`` and gives the
vector-Jacobian product ``vjp(a, g_bar) = g_bar · ∂a/∂z`` *from the output ``a`` alone*.
That is what lets the custom backward pass keep only the activations as residuals
(eqs. (1.6), (2.3) of docs/derivations.md: σ' = σ − σ², so ``S − S²`` needs ``s`` and nothing
else).

For every element-wise activation ``vjp(a, g_bar) = g_bar ∘ g'(z)`` (eq. (4.4): the
Jacobian of an element-wise map is diagonal). Softmax is the one
activation whose Jacobian is not diagonal: ``vjp(s, g_bar) = s ∘ (g_bar − ⟨g_bar, s⟩)`` (eq. (0.5)).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

LEAKY_RELU_SLOPE = 0.01


class Activation(NamedTuple):
    """An activation and its backward rule (eq. (4.4); the g of eq. (3.1)).

    Attributes:
      name: the name used by `MLP` (e.g. ``"sigmoid"``).
      fn: ``z -> a``, shape preserving, ``z: (..., n)``.
      derivative_from_output: ``a -> g'(z)`` for element-wise activations (None for softmax).
      vjp: ``(a, g_bar) -> delta = g_bar · ∂a/∂z``, both ``(..., n)``.
      elementwise: False only for softmax, whose Jacobian couples the units.
      has_kink: True where g' jumps (ReLU family): finite differences are not valid there.
      second_derivative_from_output: ``a -> g''(z)`` for element-wise activations that curve;
        None where g'' = 0 wherever it exists (identity, the ReLU family) and for softmax.
        The diagonal Hessian's residual terms need it (eq. (5.9)).
    """

    name: str
    fn: Callable[[Array], Array]
    derivative_from_output: Callable[[Array], Array] | None
    vjp: Callable[[Array, Array], Array]
    elementwise: bool = True
    has_kink: bool = False
    second_derivative_from_output: Callable[[Array], Array] | None = None


def _elementwise(
    name: str,
    fn: Callable[[Array], Array],
    derivative_from_output: Callable[[Array], Array],
    has_kink: bool = False,
    second_derivative_from_output: Callable[[Array], Array] | None = None,
) -> Activation:
    """Builds an element-wise activation: δ = ḡ ∘ g'(z) (eq. (4.4))."""

    def vjp(a: Array, g_bar: Array) -> Array:
        return g_bar * derivative_from_output(a)

    return Activation(
        name, fn, derivative_from_output, vjp, True, has_kink, second_derivative_from_output
    )


def _softmax_vjp(s: Array, g_bar: Array) -> Array:
    # J = Diag(s) − s sᵀ, so ḡ J = s ∘ (ḡ − ⟨ḡ, s⟩): one reduction, no n×n matrix.
    return s * (g_bar - jnp.sum(g_bar * s, axis=-1, keepdims=True))


def _softplus_derivative(a: Array) -> Array:
    # softplus'(z) = σ(z) and a = log(1 + e^z) gives σ(z) = 1 − e^{−a}; expm1 keeps it
    # accurate when a ≈ e^z is tiny.
    return -jnp.expm1(-a)


def _softplus_second_derivative(a: Array) -> Array:
    # softplus''(z) = σ'(z) = σ(1 − σ), with σ = 1 − e^{−a} and 1 − σ = e^{−a}.
    return -jnp.expm1(-a) * jnp.exp(-a)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        _elementwise("identity", lambda z: z, jnp.ones_like),
        # σ' = σ(1 − σ): eq. (1.6); the S − S² of eq. (2.3).
        # σ'' = σ'(1 − 2σ), again a function of the output.
        _elementwise(
            "sigmoid",
            jax.nn.sigmoid,
            lambda a: a * (1 - a),
            second_derivative_from_output=lambda a: a * (1 - a) * (1 - 2 * a),
        ),
        # tanh' = 1 − a², written (1 − a)(1 + a): no cancellation as |a| → 1, and XLA:CPU runs
        # the fused backward faster than with 1 − a·a (measured in docs/performance.md).
        # tanh'' = −2 tanh · tanh'.
        _elementwise(
            "tanh",
            jnp.tanh,
            lambda a: (1 - a) * (1 + a),
            second_derivative_from_output=lambda a: -2 * a * (1 - a) * (1 + a),
        ),
        # a > 0 exactly when z > 0, so the output decides the branch (g'(0) := 0).
        _elementwise("relu", jax.nn.relu, lambda a: (a > 0).astype(a.dtype), has_kink=True),
        _elementwise(
            "leaky_relu",
            lambda z: jnp.where(z > 0, z, LEAKY_RELU_SLOPE * z),
            lambda a: jnp.where(a > 0, 1.0, LEAKY_RELU_SLOPE).astype(a.dtype),
            has_kink=True,
        ),
        _elementwise(
            "softplus",
            jax.nn.softplus,
            _softplus_derivative,
            second_derivative_from_output=_softplus_second_derivative,
        ),
        Activation("softmax", lambda z: jax.nn.softmax(z, axis=-1), None, _softmax_vjp, False),
    )
}

HIDDEN_ACTIVATIONS: tuple[str, ...] = tuple(n for n, a in ACTIVATIONS.items() if a.elementwise)
OUTPUT_ACTIVATIONS: tuple[str, ...] = tuple(ACTIVATIONS)


def get_activation(name: str, *, allowed: tuple[str, ...] = OUTPUT_ACTIVATIONS) -> Activation:
    """Looks up an activation by name.

    Args:
      name: one of ``allowed``.
      allowed: the names valid where it is used (softmax is an output activation only).

    Returns:
      The `Activation`.

    Raises:
      ValueError: for an unknown or not-allowed name, listing the allowed ones.
    """
    if name not in allowed:
        if name in ACTIVATIONS:
            raise ValueError(
                f"{name!r} is an output activation only (its Jacobian is not diagonal): use "
                f"output_activation={name!r}; hidden activations are {', '.join(allowed)}."
            )
        raise ValueError(f"unknown activation {name!r}: expected one of {', '.join(allowed)}.")
    return ACTIVATIONS[name]
