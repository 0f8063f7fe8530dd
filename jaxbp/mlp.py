"""The network: a frozen description, its parameters, and the plain forward pass.

Contract (eq. (4.1) of docs/derivations.md, with a batch of rows as in eq. (0.1)): layer k maps
``a^[k-1]: (batch, n_{k-1})`` to ``z^[k] = a^[k-1] @ W^[k].T + b^[k]`` and
``a^[k] = g(z^[k])``, with ``W^[k]: (n_k, n_{k-1})`` and ``b^[k]: (n_k,)``; the last layer
uses the output activation f. Parameters are a list with one ``{"W", "b"}`` dict per
layer (no ``"b"`` when ``use_bias=False``, as in eq. (3.1)).
"""

import dataclasses
import operator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import activations

Array = jax.Array
Params = list[dict[str, Array]]

INIT_SCHEMES: dict[str, Any] = {
    # W is (n_out, n_in): fan-in is the last axis, fan-out the one before it.
    "glorot_uniform": jax.nn.initializers.glorot_uniform(in_axis=-1, out_axis=-2),
    "glorot_normal": jax.nn.initializers.glorot_normal(in_axis=-1, out_axis=-2),
    "he_uniform": jax.nn.initializers.he_uniform(in_axis=-1, out_axis=-2),
    "he_normal": jax.nn.initializers.he_normal(in_axis=-1, out_axis=-2),
    "lecun_normal": jax.nn.initializers.lecun_normal(in_axis=-1, out_axis=-2),
}
_RELU_FAMILY = ("relu", "leaky_relu")


@dataclasses.dataclass(frozen=True)
class MLP:
    """A multilayer perceptron, described by sizes and activation names.

    Frozen and hashable, so it is a static argument under ``jax.jit``.

    Attributes:
      sizes: ``(n0, n1, ..., nL)``: input width, hidden widths, output width.
      activation: hidden activation g (eq. (3.1)).
      output_activation: output activation f (eq. (4.1)); softmax allowed here only.
      use_bias: whether layers have ``b`` (eq. (4.1)) or not (eq. (3.1)).
    """

    sizes: tuple[int, ...]
    activation: str = "sigmoid"
    output_activation: str = "identity"
    use_bias: bool = True

    def __post_init__(self) -> None:
        try:
            # operator.index, not int: 2.5 or "32" are errors, not silently (2,) or (3, 2).
            if isinstance(self.sizes, str):
                raise TypeError
            # bool is an int subclass: MLP((True, True)) would otherwise be a 1-1 network.
            if any(isinstance(n, (bool, np.bool_)) for n in self.sizes):
                raise TypeError
            sizes = tuple(operator.index(n) for n in self.sizes)
        except TypeError:
            raise ValueError(
                f"MLP sizes must be a sequence of positive ints, got {self.sizes!r}."
            ) from None
        if len(sizes) < 2:
            raise ValueError(
                f"MLP needs at least 2 sizes (input and output width), got {sizes}: "
                "e.g. sizes=(64, 32, 10)."
            )
        if any(n <= 0 for n in sizes):
            raise ValueError(f"MLP sizes must all be positive, got {sizes}.")
        object.__setattr__(self, "sizes", sizes)
        activations.get_activation(self.activation, allowed=activations.HIDDEN_ACTIVATIONS)
        output = activations.get_activation(self.output_activation)
        if not output.elementwise and sizes[-1] == 1:
            raise ValueError(
                f"output_activation={self.output_activation!r} over one output unit is the "
                "constant 1, so nothing could be learnt: for two classes use one unit with "
                "output_activation='sigmoid' and loss 'bce', or give softmax one unit per class."
            )

    @property
    def num_layers(self) -> int:
        """Number of weight layers L (one fewer than ``len(sizes)``)."""
        return len(self.sizes) - 1

    @property
    def layer_activations(self) -> tuple[activations.Activation, ...]:
        """The activation of each layer: g for the hidden ones, f for the last."""
        hidden = activations.ACTIVATIONS[self.activation]
        output = activations.ACTIVATIONS[self.output_activation]
        return (hidden,) * (self.num_layers - 1) + (output,)

    def param_shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """The shape of every leaf, in the layout of `init_params`."""
        shapes = []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            layer: dict[str, tuple[int, ...]] = {"W": (n_out, n_in)}
            if self.use_bias:
                layer["b"] = (n_out,)
            shapes.append(layer)
        return shapes


def default_init_scheme(model: MLP) -> str:
    """Glorot for saturating activations, He for the ReLU family."""
    return "he_normal" if model.activation in _RELU_FAMILY else "glorot_uniform"


def init_params(
    key: Array, model: MLP, *, scheme: str = "auto", dtype: Any = jnp.float32
) -> Params:
    """Draws initial parameters, ``W^[k]: (n_k, n_{k-1})`` and ``b^[k] = 0: (n_k,)``.

    Args:
      key: a PRNG key.
      model: the network.
      scheme: ``"auto"`` (Glorot for sigmoid/tanh/softplus/identity, He for the ReLU
        family) or one of `INIT_SCHEMES`.
      dtype: parameter dtype (float64 needs ``jax_enable_x64``).

    Returns:
      A list with one ``{"W", "b"}`` dict per layer (the W^[1], b^[1], W^[2], b^[2] of eq. (4.1)).
    """
    if scheme == "auto":
        scheme = default_init_scheme(model)
    if scheme not in INIT_SCHEMES:
        raise ValueError(
            f"unknown init scheme {scheme!r}: expected 'auto' or one of {', '.join(INIT_SCHEMES)}."
        )
    initializer = INIT_SCHEMES[scheme]
    keys = jax.random.split(key, model.num_layers)
    params = []
    for layer_key, shapes in zip(keys, model.param_shapes(), strict=True):
        layer = {"W": initializer(layer_key, shapes["W"], dtype)}
        if model.use_bias:
            layer["b"] = jnp.zeros(shapes["b"], dtype)
        params.append(layer)
    return params


def check_params(model: MLP, params: Params) -> None:
    """Raises ValueError unless ``params`` has the layout and shapes of ``model``."""
    expected = model.param_shapes()
    if not isinstance(params, (list, tuple)) or len(params) != len(expected):
        given = len(params) if isinstance(params, (list, tuple)) else type(params).__name__
        raise ValueError(
            f"params must be a list of {len(expected)} layer dicts for sizes {model.sizes}, "
            f"got {given}: build them with jaxbp.init_params(key, model)."
        )
    for k, (layer, shapes) in enumerate(zip(params, expected, strict=True), start=1):
        if not isinstance(layer, dict) or set(layer) != set(shapes):
            keys = sorted(layer) if isinstance(layer, dict) else type(layer).__name__
            raise ValueError(
                f"layer {k} params must have keys {sorted(shapes)} "
                f"(use_bias={model.use_bias}), got {keys}."
            )
        for name, shape in shapes.items():
            actual = tuple(jnp.shape(layer[name]))
            if actual != shape:
                raise ValueError(
                    f"layer {k} {name} has shape {actual}, but sizes {model.sizes} need "
                    f"{shape} ({name} of layer k is (n_k, n_(k-1)) for W, (n_k,) for b)."
                )


def check_input_shape(model: MLP, x: Array) -> None:
    """Raises ValueError unless ``x`` is ``(batch, n0)`` or ``(n0,)``."""
    shape = jnp.shape(x)
    if len(shape) not in (1, 2) or shape[-1] != model.sizes[0]:
        raise ValueError(
            f"x has shape {shape}, but the model takes (batch, {model.sizes[0]}) or "
            f"({model.sizes[0]},): check the feature count against sizes[0]."
        )


def check_targets(model: MLP, x: Array, y: Array) -> Array:
    """Checks ``y`` against the output width and batch; returns it as ``(batch, nL)``.

    A ``(batch,)`` target is accepted for a single output unit.
    """
    n_out = model.sizes[-1]
    y = jnp.asarray(y)
    given = tuple(y.shape)
    if y.ndim == 1 and n_out == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape != (jnp.shape(x)[0], n_out):
        hint = (
            " For class labels, one-hot encode them: jax.nn.one_hot(labels, num_classes)."
            if len(given) == 1 and n_out > 1
            else ""
        )
        raise ValueError(
            f"y has shape {given}, but x of shape {tuple(jnp.shape(x))} and output "
            f"width {n_out} need ({jnp.shape(x)[0]}, {n_out}).{hint}"
        )
    return y


def layer_forward(a_prev: Array, layer: dict[str, Array]) -> Array:
    """``z = a_prev @ W.T + b`` (eq. (4.1): z = W a + b, for a batch of rows: eq. (0.1))."""
    # einsum, not a_prev @ W.T: with one row XLA:CPU copies W.T on every call for the
    # matrix-vector product, which dominates at batch 1 (measured in docs/performance.md).
    z = jnp.einsum("...i,oi->...o", a_prev, layer["W"])
    if "b" in layer:
        z = z + layer["b"]
    return z


class Forward(NamedTuple):
    """Every layer's values from one forward pass (eqs. (3.1), (4.1)).

    Attributes:
      z: ``(z^[1], ..., z^[L])``, the pre-activations, ``z^[k]: (batch, n_k)``.
      a: ``(a^[0] = x, a^[1], ..., a^[L] = ŷ)``, the activations, ``a^[k]: (batch, n_k)``.
    """

    z: tuple[Array, ...]
    a: tuple[Array, ...]


def forward_layers(model: MLP, params: Params, x: Array) -> Forward:
    """The forward pass layer by layer: ``z^[k] = a^[k-1] @ W^[k].T + b^[k]``, ``a^[k] = g(z^[k])``.

    The one loop over the layers: `forward_logits`, `forward_outputs` and
    `jaxbp.forward_with_residuals` take what they need from it.

    Args:
      model: the network.
      params: its parameters (`init_params` layout).
      x: ``(batch, n0)``.

    Returns:
      A `Forward` with every ``z^[k]`` and ``a^[k]``.
    """
    a = x
    zs, acts = [], [x]
    for layer, act in zip(params, model.layer_activations, strict=True):
        z = layer_forward(a, layer)
        a = act.fn(z)
        zs.append(z)
        acts.append(a)
    return Forward(tuple(zs), tuple(acts))


def forward_logits(model: MLP, params: Params, x: Array) -> Array:
    """The plain forward pass up to the output pre-activation ``z^[L]`` (the z^[2] of eq. (4.1)).

    Plain jnp code, differentiated by ``jax.grad``: the oracle for the custom backward.
    """
    return forward_layers(model, params, x).z[-1]


def forward_outputs(model: MLP, params: Params, x: Array) -> Array:
    """The plain forward pass ``ŷ = f(z^[L])`` (eq. (4.1))."""
    return forward_layers(model, params, x).a[-1]
