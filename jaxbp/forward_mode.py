"""Forward mode meeting the hand-written backward: refused with a hint, not JAX's bare error.

Contract: a `jax.custom_vjp` function has no forward-mode rule, so `jax.jvp`, `jax.jacfwd` and
`jax.linearize` of `jaxbp.apply(..., backward="custom")` raise a TypeError. `call_custom`
calls such a function and, when the TypeError comes from forward mode (asked of JAX with
`under_forward_mode`, not read from its error text), adds the way out: ``backward="autodiff"``.
"""

from collections.abc import Callable

import jax

from jaxbp.mlp import MLP, Params

Array = jax.Array

FORWARD_MODE_HINT = (
    "jaxbp: apply(..., backward='custom') is a jax.custom_vjp function: jax.jvp and "
    "jax.jacfwd of it are not available (forward-over-reverse such as jax.hessian of a loss "
    "does work: it differentiates the hand-written backward). For forward mode use "
    "backward='autodiff'."
)


@jax.custom_vjp
def _custom_vjp_probe(tree: object) -> object:
    return tree


_custom_vjp_probe.defvjp(lambda tree: (tree, None), lambda _, g_bar: (g_bar,))


def under_forward_mode(tree: object) -> bool:
    """Whether ``tree`` carries forward-mode tangents, which no custom_vjp function takes.

    JAX is asked, not its error text read: a trivial custom_vjp function is called on the same
    values, and it raises a TypeError exactly when they are being pushed forward.
    """
    try:
        _custom_vjp_probe(tree)
    except TypeError:
        return True
    return False


def call_custom(
    fn: Callable[[MLP, Params, Array], Array], model: MLP, params: Params, x: Array
) -> Array:
    """``fn(model, params, x)`` for a custom_vjp ``fn``, with a hint if forward mode meets it."""
    try:
        return fn(model, params, x)
    except TypeError as e:
        if not under_forward_mode((params, x)):
            raise
        raise TypeError(f"{e}\n{FORWARD_MODE_HINT}") from e
