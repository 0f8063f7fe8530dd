"""Problems the tests share (a network's parameters, a batch of inputs and its targets) and
the comparison of two gradients.

Parameters and inputs are numpy draws and targets come from
`jaxbp.gradient_check.random_targets` (numpy too, in the encoding the loss fits): a problem
of a new shape compiles nothing, which keeps the property tests fast.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from jaxbp.gradient_check import random_targets

# (rtol, atol as a fraction of the leaf's largest |entry|). The atol is relative to the
# leaf: an entry of ∂/∂W = δᵀ a or ∂/∂b = Σ_batch δ is a sum whose terms can cancel, and the
# two routes sum in different orders, so the result carries an absolute rounding error of
# about ε·(size of the terms) whatever its own size. Element-wise relative error on such an
# entry is noise (in float32 it reaches 1e-3 on near-zero entries); the per-leaf scale keeps
# the check tight for every entry of normal size.
TOLERANCES = {"float64": (1e-10, 1e-13), "float32": (1e-5, 1e-6)}


def assert_grads_close(actual, expected, dtype):
    """Leaf-by-leaf comparison with `TOLERANCES` (same structure, shapes and dtypes)."""
    chex.assert_trees_all_equal_structs(actual, expected)
    chex.assert_trees_all_equal_shapes_and_dtypes(actual, expected)
    rtol, atol_fraction = TOLERANCES[dtype]
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        scale = float(jnp.max(jnp.abs(e))) if e.size else 0.0
        chex.assert_trees_all_close(a, e, rtol=rtol, atol=atol_fraction * scale)


def make_params(model, rng, dtype="float64"):
    """W ~ N(0, 1/n_in) and b ~ N(0, 1/4): the biases are non-zero, so ∂/∂b is no special case.

    Args:
      model: the network.
      rng: a ``numpy.random.Generator``.
      dtype: the parameters' dtype.

    Returns:
      Parameters in `jaxbp.init_params`' layout.
    """
    params = []
    for shapes in model.param_shapes():
        n_out, n_in = shapes["W"]
        layer = {"W": jnp.asarray(rng.normal(size=(n_out, n_in)) / np.sqrt(n_in), dtype)}
        if "b" in shapes:
            layer["b"] = jnp.asarray(rng.normal(size=n_out) * 0.5, dtype)
        params.append(layer)
    return params


def make_problem(model, loss, *, batch=5, seed=0, dtype="float64"):
    """``(params, x, y)``: `make_params`, ``x ~ N(0, 1): (batch, n0)`` and targets the loss
    fits, ``(batch, nL)``, all drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    params = make_params(model, rng, dtype)
    x = jnp.asarray(rng.normal(size=(batch, model.sizes[0])), dtype)
    y = random_targets(jax.random.key(seed), model, loss, batch, dtype)
    return params, x, y


def classification_problem(key=0, n=48, sizes=(5, 16, 3), dtype=jnp.float32):
    """A tanh network with a softmax output and ``n`` examples it can learn to classify.

    Returns:
      ``(model, params, x, y)``: `jaxbp.init_params`, ``x ~ N(0, 1)`` and one-hot ``y`` whose
      class is the largest entry of a fixed random projection of ``x``.
    """
    model = jaxbp.MLP(sizes, "tanh", "softmax")
    k_p, k_x, k_y = jax.random.split(jax.random.key(key), 3)
    params = jaxbp.init_params(k_p, model, dtype=dtype)
    x = jax.random.normal(k_x, (n, sizes[0]), dtype)
    labels = jnp.argmax(x @ jax.random.normal(k_y, (sizes[0], sizes[-1]), dtype), axis=-1)
    y = jax.nn.one_hot(labels, sizes[-1], dtype=dtype)
    return model, params, x, y
