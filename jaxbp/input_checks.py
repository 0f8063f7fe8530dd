"""The one eager check of a batch's values, which the jittable functions leave unchecked.

Contract: the library's functions (`jaxbp.apply`, `jaxbp.loss_value`, `jaxbp.loss_and_grad`,
`jaxbp.trace`, `jaxbp.gradient_flow`, the per-example functions) check what costs nothing
under `jax.jit` (names, shapes, the params' layout, static arguments) and raise ValueError
before any work. They do not read values: a NaN or infinite entry in ``x`` or the params, or
targets outside the loss's domain (bce targets outside [0, 1], softmax cross-entropy rows
that are negative or do not sum to one), give NaN or meaningless results, not an error.
Reading a value would copy it to the host on every call, and a traced value has none.

`check_inputs` is the call that checks the values too, eagerly on concrete arrays: call it
once on the data before a training loop, or when a result comes out NaN.
"""

import jax
import numpy as np

from jaxbp import backprop
from jaxbp import losses as losses_lib
from jaxbp.mlp import MLP, Params
from jaxbp.per_example import check_clip_norm

Array = jax.Array


def _host(name: str, value: object) -> np.ndarray:
    """``value`` as a host array, or a ValueError if it is traced (inside jit or grad)."""
    try:
        return np.asarray(value)
    except jax.errors.TracerArrayConversionError:
        raise ValueError(
            f"check_inputs reads the values of {name}, which is traced here: call it outside "
            "jax.jit, jax.grad and jax.vmap, on the concrete arrays."
        ) from None


def _first_non_finite(values: np.ndarray) -> str:
    """Where the first NaN or infinite entry is, e.g. ``"row 3, column 7"``."""
    index = np.argwhere(~np.isfinite(values))[0]
    if values.ndim == 2:
        return f"row {index[0]}, column {index[1]}"
    return f"index {tuple(int(i) for i in index)}"


def check_inputs(
    model: MLP,
    loss: str,
    params: Params,
    x: Array,
    y: Array,
    *,
    clip_norm: float | Array | None = None,
) -> None:
    """Checks a batch's shapes and values, eagerly; raises ValueError naming the first problem.

    Everything `jaxbp.loss_and_grad` checks (the loss name, the params' layout, the shapes of
    ``x`` and ``y``), and then what it leaves to the caller (module docstring): every param
    and every entry of ``x`` finite in the dtype the computation uses (a float64 ``1e39``
    becomes ``inf`` in float32), the targets finite and inside the loss's domain
    (`jaxbp.losses.check_targets`), and ``clip_norm`` positive when given.

    Args:
      model: the network.
      loss: a name from `jaxbp.LOSSES`.
      params: the parameters.
      x: ``(batch, n0)``.
      y: ``(batch, nL)`` targets (``(batch,)`` for a single output unit).
      clip_norm: the per-example clipping norm C of `jaxbp.clipped_loss_and_grad`, if used.

    Raises:
      ValueError: for the first problem found, with where it is and what to do.

    Examples:
      >>> import jax, jaxbp
      >>> model = jaxbp.MLP((3, 1), output_activation="sigmoid")
      >>> params = jaxbp.init_params(jax.random.key(0), model)
      >>> x, y = jax.numpy.ones((2, 3)), jax.numpy.array([0.0, 2.0])
      >>> jaxbp.check_inputs(model, "bce", params, x, y)
      Traceback (most recent call last):
      ...
      ValueError: bce targets must lie in [0, 1], got values from 0 to 2: use 0/1 labels or \
probabilities of the positive class (for ±1 labels, (y + 1) / 2).
    """
    _, x, y = backprop.check_loss_inputs(model, loss, params, x, y)
    for k, layer in enumerate(params, start=1):
        for name, leaf in layer.items():
            values = _host(f"params layer {k} {name}", leaf)
            if not np.all(np.isfinite(values)):
                raise ValueError(
                    f"params layer {k} {name} has {np.count_nonzero(~np.isfinite(values))} NaN "
                    f"or infinite entries (first at {_first_non_finite(values)}): a step "
                    "diverged; restart from finite params with a smaller learning rate."
                )
    x_host = _host("x", x)
    if not np.all(np.isfinite(x_host)):
        raise ValueError(
            f"x has {np.count_nonzero(~np.isfinite(x_host))} NaN or infinite entries in "
            f"{x_host.dtype} (first at {_first_non_finite(x_host)}): drop or impute those "
            "rows, or rescale features too large for the dtype."
        )
    losses_lib.check_targets(loss, _host("y", y))
    if clip_norm is not None:
        check_clip_norm(clip_norm)
