"""The diagonal GGN and Hessian of a two-layer net from the δ recursion, beside jax.hessian's.

`jaxbp.diag_ggn` carries the loss-Hessian's square-root columns back through the δ recursion
and squares them (eqs. (5.5)-(5.8) of docs/derivations.md); `jaxbp.diag_hessian` adds the
activations' second derivatives (eq. (5.9)). Autodiff builds the same from their definitions:
the GGN as Jᵀ H J with J = ``jax.jacrev`` of the network up to the split point (the logits
for bce and softmax cross-entropy, ŷ otherwise) and H = ``jax.hessian`` of the loss there,
and the Hessian as ``jax.hessian`` of the loss in the parameters. Each layer's diagonals are
printed side by side on iris, with the largest element-wise relative error.

./launch.sh curvature                                  # tanh, softmax cross-entropy, float64
./launch.sh curvature --activation=relu --loss=mse     # relu: the Hessian's diagonal is the GGN's
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax.flatten_util import ravel_pytree

import jaxbp
from experiments import cli
from jaxbp import data, gradient_check
from jaxbp.losses import LOSSES

# allow_override (--seed, --precision): the tests import several experiment scripts that
# define them into one process; the scripts themselves run one at a time.
_SEED = flags.DEFINE_integer(
    "seed", 0, "Seeds the data split and the initial weights.", allow_override=True
)
_ACTIVATION = flags.DEFINE_enum(
    "activation", "tanh", list(jaxbp.HIDDEN_ACTIVATIONS), "The hidden layer's g."
)
_LOSS = flags.DEFINE_enum(
    "loss", "softmax_cross_entropy", list(LOSSES), "With the output activation it fits."
)
_HIDDEN = flags.DEFINE_integer("hidden", 8, "Hidden units: small, so jax.hessian is quick.")
_PRECISION = flags.DEFINE_enum(
    "precision",
    "float64",
    ["float32", "float64"],
    "float64 shows agreement to ~1e-15.",
    allow_override=True,
)

THRESHOLD = {"float64": 1e-10, "float32": 1e-4}
# Entries below this fraction of a diagonal's largest are compared on that scale: their
# relative error is rounding of a cancelling sum, not a wrong formula.
RELATIVE_ERROR_FLOOR = 1e-6


def autodiff_diag_ggn(model, loss, params, x, y):
    """diag(Jᵀ H J) by ``jax.jacrev`` and ``jax.hessian``, shaped like ``params``."""
    fused = LOSSES[loss].fused

    def split_output(p):
        return (jaxbp.forward_logits if fused else jaxbp.forward_outputs)(model, p, x)

    def split_loss(f):
        return LOSSES[loss].value_from_logits(f, y) if fused else LOSSES[loss].value(f, y)

    jac = jax.jacrev(split_output)(params)  # leaves (B, V, *leaf)
    flat_jac = jnp.concatenate([j.reshape(*j.shape[:2], -1) for j in jax.tree.leaves(jac)], axis=-1)
    hess = jax.hessian(split_loss)(split_output(params))  # (B, V, B, V)
    diag = jnp.einsum("iap,iajb,jbp->p", flat_jac, hess, flat_jac)
    return ravel_pytree(params)[1](diag)


def autodiff_diag_hessian(model, loss, params, x, y):
    """diag ∇²_θ L by ``jax.hessian`` of the plain loss, shaped like ``params``."""
    flat, unravel = ravel_pytree(params)

    def value(p):
        return jaxbp.loss_value(model, loss, unravel(p), x, y, backward="autodiff")

    return unravel(jnp.diag(jax.hessian(value)(flat)))


def _entries(values, count=3) -> str:
    flat = np.asarray(values).ravel()
    return ", ".join(f"{v:+.6e}" for v in flat[:count]) + (", …" if flat.size > count else "")


def report(model, loss, params, x, y) -> tuple[list[str], float]:
    """The markdown lines of both comparisons and the largest relative error among them."""
    pairs = {
        "diag GGN": (jaxbp.diag_ggn, autodiff_diag_ggn, "jacrev + hessian"),
        "diag Hessian": (jaxbp.diag_hessian, autodiff_diag_hessian, "jax.hessian"),
    }
    lines = [
        "| quantity | leaf | δ recursion | autodiff | autodiff by | max rel. error |",
        "|---|---|---|---|---|---|",
    ]
    worst, results = 0.0, {}
    for quantity, (ours_fn, theirs_fn, how) in pairs.items():
        # Under jit: one compile each, where eager autodiff would compile op by op.
        ours = jax.jit(ours_fn, static_argnums=(0, 1))(model, loss, params, x, y)
        theirs = jax.jit(theirs_fn, static_argnums=(0, 1))(model, loss, params, x, y)
        results[quantity] = ours
        for k, (layer, reference) in enumerate(zip(ours, theirs, strict=True), start=1):
            for name in sorted(layer, reverse=True):  # W, then b
                floor = RELATIVE_ERROR_FLOOR * float(jnp.max(jnp.abs(reference[name])))
                error = gradient_check.relative_error(layer[name], reference[name], floor)
                worst = max(worst, error)
                lines.append(
                    f"| {quantity} | {name}^[{k}] | {_entries(layer[name])} | "
                    f"{_entries(reference[name])} | {how} | {error:.1e} |"
                )
    gap = max(
        float(jnp.max(jnp.abs(h - g)))
        for h, g in zip(*map(jax.tree.leaves, results.values()), strict=True)
    )
    lines.append(
        f"\nlargest |diag Hessian − diag GGN|: {gap:.3e} "
        "(0 where no activation curves: relu, leaky_relu, identity, with a fused loss or an "
        "identity output; eq. (5.9))"
    )
    return lines, worst


def main(argv: list[str]) -> int:
    del argv
    precision = _PRECISION.value
    # A context, not jax.config.update: the setting is restored when main returns (tests).
    with jax.enable_x64(precision == "float64"), jax.default_matmul_precision("highest"):
        ds = data.load_dataset("iris", seed=_SEED.value, dtype=np.dtype(precision))
        output = LOSSES[_LOSS.value].output_activation
        n_in, n_out = ds.x_train.shape[1], ds.y_train.shape[1]
        model = jaxbp.MLP((n_in, _HIDDEN.value, n_out), _ACTIVATION.value, output)
        params = jaxbp.init_params(jax.random.key(_SEED.value), model, dtype=precision)
        x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
        lines, worst = report(model, _LOSS.value, params, x, y)
    print(
        f"## diagonal GGN and Hessian: iris {model.sizes}, {model.activation} hidden, "
        f"{output} output, {_LOSS.value}, {len(x)} examples, {precision}\n"
    )
    print("\n".join(lines))
    verdict = "pass" if worst <= THRESHOLD[precision] else "FAIL"
    print(
        f"\nmax relative error between the δ recursion and autodiff: {worst:.1e} "
        f"(threshold {THRESHOLD[precision]:.0e}, {precision}): {verdict}"
    )
    return 0 if verdict == "pass" else 1


if __name__ == "__main__":
    cli.run(main)
