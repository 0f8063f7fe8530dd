"""Each derivation's closed form beside the library's numbers, on real data.

For each of the four derivations of docs/derivations.md the script writes its closed form
out in jnp, one example at a time in the derivation's own layout, and evaluates it on a real
dataset. It prints

* for the first example, every layer's z, a and δ of the closed form beside
  ``jaxbp.trace(..., per_example=True)`` (the library's forward values and the δ of its
  backward recursion), unless ``--noshow_deltas``;
* the closed-form gradient averaged over the examples beside ``jaxbp.loss_and_grad`` (the
  hand-written δ recursion), ``jax.grad`` through ``jaxbp.apply(backward="custom")`` (the
  same recursion as a custom_vjp) and ``jax.grad`` of the plain forward pass, with the largest
  element-wise relative error between any two.

Derivations 1 and 3 are then trained with the descent rule W ← W − η ∂L/∂W (eq. (3.7)) and
their test accuracy printed.

python -m experiments.derivations                          # all four, float64
python -m experiments.derivations --derivation=1,3 --seed=1
"""

import sys
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from jax.flatten_util import ravel_pytree

import jaxbp
from jaxbp import data, gradient_check

DERIVATIONS = ("1", "2", "3", "4")

_SEED = flags.DEFINE_integer("seed", 0, "Seeds the data split, the initial weights, SGD order.")
_DERIVATION = flags.DEFINE_list(
    "derivation", list(DERIVATIONS), "Derivations to run (docs/derivations.md): any of 1,2,3,4."
)
flags.register_validator(
    "derivation",
    lambda which: set(which) <= set(DERIVATIONS),
    message=f"--derivation takes numbers among {','.join(DERIVATIONS)}, e.g. --derivation=1,3.",
)
_SHOW_DELTAS = flags.DEFINE_bool(
    "show_deltas", True, "Print every layer's z, a and δ for the first example (the recursion)."
)
_PRECISION = flags.DEFINE_enum(
    "precision",
    "float64",
    ["float32", "float64"],
    "float64 shows the closed forms agree to rounding (~1e-15); float32 to ~1e-5.",
)

# Derivation 1: one sigmoid unit on breast_cancer, full-batch gradient descent.
LEARNING_RATE_1 = 2.0  # mse through a sigmoid has small gradients (|σ'| ≤ ¼): a big step
NUM_STEPS_1 = 300  # the loss has flattened by then; more steps change test accuracy by < 1%
# Derivation 3: L = 2 hidden layers, no biases, one output node, SGD one sample at a time.
SIZES_3 = (30, 16, 8, 1)  # breast_cancer's 30 features, two tanh layers, one output node
ACTIVATION_3 = "tanh"  # the g of eq. (3.1), used for every layer, the output included
LEARNING_RATE_3 = 0.01  # per-sample steps are noisy: a small η
NUM_EPOCHS_3 = 5  # passes over the shuffled training set; accuracy is flat after ~3
# Derivation 4: two sigmoid layers with biases on iris.
SIZES_4 = (4, 8, 3)  # iris's 4 features, 8 hidden units, 3 sigmoid outputs on one-hot
# Relative errors are element-wise, |a − b| / max(|a|, |b|, floor), with the floor at this
# share of the gradient's largest entry: an entry that is a sum of a few hundred rows
# cancelling to ~1e-4 of the largest keeps few float32 digits, whichever order sums it.
RELATIVE_ERROR_FLOOR = 1e-3
# float64: rounding only (the rtol of the library's gradcheck); float32: its 1e-5 was set on
# small batches, and a few hundred rows summed in another order reach ~1e-5 here.
THRESHOLD = {"float64": gradient_check.AUTODIFF_RTOL["float64"], "float32": 1e-4}
MIN_ACCURACY = 0.95  # derivation 1's logistic unit reaches this on breast_cancer; so should 3


class Layer(NamedTuple):
    """A closed form's layer k on one example: ``z^[k]``, ``a^[k]``, ``δ^[k]``, each ``(n_k,)``."""

    z: jax.Array
    a: jax.Array
    delta: jax.Array


class DerivationResult(NamedTuple):
    """One derivation's run.

    Attributes:
      derivation: "1" ... "4".
      max_relative_error: the largest element-wise relative error between any two of the
        closed form's gradient and the library's three (`compare`), and between the closed
        form's z, a, δ and `jaxbp.trace`'s (`layer_table`).
      test_accuracy: after training (derivations 1 and 3), else None.
      lines: the printed report.
    """

    derivation: str
    max_relative_error: float
    test_accuracy: float | None
    lines: tuple[str, ...]


# --------------------------------------------------------------------------------------
# The closed forms of docs/derivations.md, typed in literally, in each derivation's own layout
# (column vectors, W x + b, one example at a time). They use nothing from jaxbp: every
# derivative is taken at the pre-activation z, as the derivations write them, not read from
# the output as the library does. tests/test_derivations.py checks them against the library,
# errata included. With ``with_layers=True`` each also returns its `Layer` values.
# --------------------------------------------------------------------------------------


def sigmoid(z):
    return 1.0 / (1.0 + jnp.exp(-z))


def sigmoid_prime(z):
    """σ'(z) = σ(z)(1 − σ(z)), at the pre-activation (eq. (1.6))."""
    return sigmoid(z) * (1.0 - sigmoid(z))


# Each activation with its derivative at z: g of eq. (3.1), σ and f of eq. (4.1).
AT_Z = {
    "sigmoid": (sigmoid, sigmoid_prime),
    "tanh": (jnp.tanh, lambda z: 1.0 - jnp.tanh(z) ** 2),
    "identity": (lambda z: z, jnp.ones_like),
}


def average_over_samples(per_sample, X, y):
    """Eq. (1.3), J = 1/n Σ_i: ``per_sample(x_i, y_i)``, the gradients of one example,
    averaged over the rows of ``X`` and ``y`` (one compile, ``jax.vmap`` over the rows)."""
    grads = jax.jit(jax.vmap(per_sample))(X, y)
    return jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)


def closed_form_1(W, b, x_i, y_i, sigma_prime=sigmoid_prime, *, with_layers=False):
    """Eq. (1.9) for one sample, L_i = (y_i − ŷ_i)²:

    ∂L_i/∂W = 2(ŷ_i − y_i) σ(z_i)(1 − σ(z_i)) x_iᵀ,   z_i = x_i W + b   (eqs. (1.5)-(1.9))
    ∂L_i/∂b = 2(ŷ_i − y_i) σ(z_i)(1 − σ(z_i))        (eq. (1.7): ∂z_i/∂b = 1)

    ``W: (m, 1)``, scalar ``b``, ``x_i: (m,)`` (the row vector of eq. (1.1)), scalar ``y_i``;
    returns ``(dW: (m, 1), db)``. ``sigma_prime`` replaces ∂ŷ_i/∂z_i to reproduce misreadings
    of eq. (1.6).
    """
    x_i = x_i[None, :]  # (1, m)
    z_i = (x_i @ W + b)[0, 0]  # eq. (1.1)
    dL_dyhat = 2 * (sigmoid(z_i) - y_i)  # eq. (1.5)
    dz = dL_dyhat * sigma_prime(z_i)  # eq. (1.8): δ_i = ∂L_i/∂z_i
    grads = (dz * x_i.T, dz)  # eqs. (1.7), (1.9): ∂z_i/∂W = x_iᵀ
    if with_layers:
        return grads, [Layer(z_i[None], sigmoid(z_i)[None], dz[None])]
    return grads


def closed_form_2(W, b, x, y, *, with_layers=False):
    """Eq. (2.7): ∂ℒ/∂W = 2(S − S²)(s − y)xᵀ, s = σ(Wx + b), S = Diag(s).

    ∂ℒ/∂b = 2(S − S²)(s − y) follows from the same differential with dz = db (eq. (2.4)).
    """
    z = W @ x + b
    s = sigmoid(z)
    S = jnp.diag(s)
    dz = 2 * (S - S @ S) @ (s - y)  # eq. (2.6): δ = ∂ℒ/∂z
    grads = (jnp.outer(dz, x), dz)
    if with_layers:
        return grads, [Layer(z, s, dz)]
    return grads


def closed_form_3(
    Ws, x, y, g, g_prime, *, back_weights="L+1", back_sum="over_i", with_layers=False
):
    """Eq. (3.1) forward and eqs. (3.3)-(3.6) backward for one sample, Loss = (g(z) − y)².

    ``Ws = [W^[1], ..., W^[L+1]]`` with ``W^[k]: (n_k, n_{k−1})`` and ``W^[L+1]: (1, n_L)``,
    ``x: (n_0,)``, scalar ``y``, the activation ``g`` and its derivative at z; returns
    ``[∂Loss/∂W^[1], ..., ∂Loss/∂W^[L+1]]``. The errata (docs/derivations.md):
    ``back_weights="L"`` sends the output's δ back through W^[L] in eq. (3.5) (right:
    "L+1"); ``back_sum="over_j"`` sums eq. (3.6) over the wrong index, W δ^[k+1] for
    Wᵀ δ^[k+1] (right: "over_i", Σ_i over the nodes of layer k+1).
    """
    L = len(Ws) - 1
    h, z = [x], [None]  # h[k] holds a^[k] (h[0] = x), z[k] holds z^[k]
    for k in range(1, L + 2):
        z.append(jnp.einsum("ij,j->i", Ws[k - 1], h[k - 1]))  # z_i^[k] = Σ_j W_ij^[k] a_j^[k−1]
        h.append(g(z[k]))  # a_i^[k] = g(z_i^[k])
    z_out = z[L + 1][0]  # z = z_1^[L+1]
    dz_out = 2 * (g(z_out) - y) * g_prime(z_out)  # (3.3): ∂Loss/∂g(z) × ∂g(z)/∂z
    grads = [None] * (L + 1)
    grads[L] = dz_out * h[L][None, :]  # (3.4): ∂Loss/∂W_1j^[L+1] = ∂Loss/∂z × a_j^[L]
    # (3.5): ∂Loss/∂z_i^[L] = ∂Loss/∂z × W_1i^[L+1] × g'(z_i^[L]).
    W_back = Ws[L] if back_weights == "L+1" else Ws[L - 1]
    dz = dz_out * W_back[0, :] * g_prime(z[L])
    deltas = [dz_out[None]]
    for k in range(L, 0, -1):
        deltas.append(dz)
        grads[k - 1] = jnp.einsum("i,j->ij", dz, h[k - 1])  # (3.4), a^[0] = x
        if k > 1:  # (3.6): ∂Loss/∂z_j^[k−1] = Σ_i ∂Loss/∂z_i^[k] × W_ij^[k] × g'(z_j^[k−1])
            subscripts = "i,ij->j" if back_sum == "over_i" else "j,ij->i"
            dz = jnp.einsum(subscripts, dz, Ws[k - 1]) * g_prime(z[k - 1])
    if with_layers:
        deltas.reverse()  # δ^[1], ..., δ^[L+1]
        return grads, [Layer(z[k], h[k], deltas[k - 1]) for k in range(1, L + 2)]
    return grads


def closed_form_4(params, x, y, f, f_prime, *, with_layers=False):
    """Eq. (4.9), the four gradients, σ hidden and output f, for one example ``x: (n0,)``;
    returns the gradients in ``params``' layout (two ``{"W", "b"}`` dicts)."""
    W1, b1, W2, b2 = params[0]["W"], params[0]["b"], params[1]["W"], params[1]["b"]
    z1 = W1 @ x + b1  # eq. (4.1)
    a1 = sigmoid(z1)
    z2 = W2 @ a1 + b2
    y_hat = f(z2)
    delta2 = (y_hat - y) * f_prime(z2)  # eq. (4.4): (ŷ − y) ∘ f'(z^[2])
    delta1 = (W2.T @ delta2) * sigmoid_prime(z1)  # eq. (4.7): (W^[2])ᵀ δ^[2] ∘ σ'(z^[1])
    grads = [
        {"W": jnp.outer(delta1, x), "b": delta1},  # eq. (4.8): δ^[1] xᵀ and δ^[1]
        {"W": jnp.outer(delta2, a1), "b": delta2},  # eq. (4.5): δ^[2] (a^[1])ᵀ and δ^[2]
    ]
    if with_layers:
        return grads, [Layer(z1, a1, delta1), Layer(z2, y_hat, delta2)]
    return grads


# --------------------------------------------------------------------------------------
# One run per derivation: its closed form beside the library's numbers, then training.
# --------------------------------------------------------------------------------------

TITLES = {
    "1": "one sigmoid unit, per-example chain rule",
    "2": "vector form with differentials",
    "3": "L hidden layers, general g and Loss",
    "4": "two layers in matrix form with biases",
}


def _entries(values, count=4) -> str:
    flat = np.asarray(values).ravel()
    more = ", …" if flat.size > count else ""
    return ", ".join(f"{v:+.4e}" for v in flat[:count]) + more


def layer_table(model, loss, params, x, y, closed_layers) -> tuple[list[str], float]:
    """The closed form's ``z, a, δ`` of every layer for example 0 beside `jaxbp.trace`'s.

    ``jaxbp.trace(..., per_example=True)`` gives δ_i of example i's own loss, the δ the
    derivations write for one example. Returns the markdown lines and the largest
    element-wise relative error (floored as in `compare`).
    """
    traced = jax.jit(jaxbp.trace, static_argnums=(0, 1), static_argnames="per_example")(
        model, loss, params, x, y, per_example=True
    )
    lines = [
        "per layer, example 0: the closed form's values, then jaxbp.trace(per_example=True)'s",
        "",
        "| layer | value | closed form | jaxbp.trace | max rel. error |",
        "|---|---|---|---|---|",
    ]
    worst = 0.0
    for k, (closed, layer) in enumerate(zip(closed_layers, traced, strict=True), start=1):
        for name in ("z", "a", "delta"):
            ours = np.asarray(getattr(closed, name))
            theirs = np.asarray(getattr(layer, name)[0])
            floor = RELATIVE_ERROR_FLOOR * float(np.abs(ours).max())
            error = gradient_check.relative_error(ours, theirs, floor)
            worst = max(worst, error)
            label = "δ" if name == "delta" else name
            lines.append(
                f"| {k} | {label}^[{k}] | {_entries(ours)} | {_entries(theirs)} | {error:.1e} |"
            )
    return lines, worst


def compare(
    model, loss, params, x, y, derivation, what, closed_form, closed_layers
) -> tuple[list[str], float]:
    """The derivation's ``closed_form = (name, gradient)`` (in the library's layout) beside
    the library's three gradients of ``loss``, as a markdown table titled with the derivation
    and ``what``, and the largest element-wise relative error between any two of the four.
    With ``closed_layers`` (the closed form's `Layer` values for example 0; None for none)
    the `layer_table` comes first."""
    _, hand = jax.jit(jaxbp.loss_and_grad, static_argnums=(0, 1))(model, loss, params, x, y)

    def loss_fn(p, backward):
        return jaxbp.loss_value(model, loss, p, x, y, backward=backward)

    grad = jax.jit(jax.grad(loss_fn), static_argnums=1)
    grads = {
        closed_form[0]: closed_form[1],
        "jaxbp.loss_and_grad": hand,
        'jax.grad via apply(backward="custom")': grad(params, "custom"),
        "jax.grad of the plain forward": grad(params, "autodiff"),
    }
    flats = {name: np.asarray(ravel_pytree(g)[0]) for name, g in grads.items()}
    floor = RELATIVE_ERROR_FLOOR * float(np.abs(flats[closed_form[0]]).max())
    errors = {
        (a, b): gradient_check.relative_error(flats[a], flats[b], floor)
        for a in flats
        for b in flats
    }
    lines = [f"## derivation {derivation} ({TITLES[derivation]}): {what}", ""]
    worst = max(errors.values())
    if closed_layers is not None:
        table, layer_error = layer_table(model, loss, params, x, y, closed_layers)
        lines += [*table, ""]
        worst = max(worst, layer_error)
    lines += [
        "| gradient | ‖∇‖ | first entries of ∂/∂W^[1] | max rel. error vs closed form |",
        "|---|---|---|---|",
    ]
    for name, g in grads.items():
        entries = ", ".join(f"{v:+.6e}" for v in np.asarray(g[0]["W"]).ravel()[:3])
        error = "—" if name == closed_form[0] else f"{errors[name, closed_form[0]]:.1e}"
        lines.append(f"| {name} | {np.linalg.norm(flats[name]):.6e} | {entries} | {error} |")
    return lines, worst


def accuracy(model, params, x, y, threshold) -> float:
    """Share of rows whose single output lands on the right side of ``threshold``."""
    y_hat = jaxbp.apply(model, params, x)
    return float(jnp.mean((y_hat > threshold) == (y > threshold)))


def derivation_1(seed: int, dtype, show_deltas: bool = True) -> DerivationResult:
    """One sigmoid unit, mse, breast_cancer; then plain gradient descent."""
    ds = data.load_dataset("breast_cancer", seed=seed, dtype=dtype)
    model = jaxbp.MLP((ds.num_features, 1), output_activation="sigmoid")
    params = jaxbp.init_params(jax.random.key(seed), model, dtype=dtype)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    # Eq. (1.1)'s W ∈ R^{m×1} is the library's W^T (the library stores (n_out, n_in)).
    W, b = params[0]["W"].T, params[0]["b"][0]
    dW, db = average_over_samples(lambda x_i, y_i: closed_form_1(W, b, x_i, y_i), x, y[:, 0])
    _, layers = closed_form_1(W, b, x[0], y[0, 0], with_layers=True)
    what = f"one sigmoid unit, mse, breast_cancer {model.sizes}, {len(x)} examples"
    closed_form = ("eq. (1.9) averaged by eq. (1.3)", [{"W": dW.T, "b": db[None]}])
    layers = layers if show_deltas else None
    table, worst = compare(model, "mse", params, x, y, "1", what, closed_form, layers)
    optimizer = optax.sgd(LEARNING_RATE_1)  # W ← W − η ∂L/∂W

    @jax.jit
    def train(params):
        def step(carry, _):
            params, opt_state = carry
            value, grads = jaxbp.loss_and_grad(model, "mse", params, x, y)
            updates, opt_state = optimizer.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, _), values = jax.lax.scan(
            step, (params, optimizer.init(params)), None, length=NUM_STEPS_1
        )
        return params, values

    trained, values = train(params)
    test_accuracy = accuracy(model, trained, ds.x_test, ds.y_test, 0.5)
    training = (
        f"training: {NUM_STEPS_1} full-batch steps of optax.sgd({LEARNING_RATE_1}), "
        f"W ← W − η ∂L/∂W: loss {values[0]:.4f} → {values[-1]:.4f}; "
        f"test accuracy {test_accuracy:.1%} on {len(ds.x_test)} examples (threshold 0.5)"
    )
    return DerivationResult("1", worst, test_accuracy, (*table, "", training))


def derivation_2(seed: int, dtype, show_deltas: bool = True) -> DerivationResult:
    """Vector form, sse, one iris example with three sigmoid outputs on its one-hot target."""
    ds = data.load_dataset("iris", seed=seed, dtype=dtype)
    model = jaxbp.MLP((ds.num_features, ds.num_outputs), output_activation="sigmoid")
    params = jaxbp.init_params(jax.random.key(seed), model, dtype=dtype)
    x, y = jnp.asarray(ds.x_train[:1]), jnp.asarray(ds.y_train[:1])
    (dW, db), layers = closed_form_2(params[0]["W"], params[0]["b"], x[0], y[0], with_layers=True)
    what = f"s = σ(Wx + b), ℒ = Σ (s − y)², iris {model.sizes}, one example"
    closed_form = ("eq. (2.7): 2(S − S²)(s − y)xᵀ", [{"W": dW, "b": db}])
    layers = layers if show_deltas else None
    table, worst = compare(model, "sse", params, x, y, "2", what, closed_form, layers)
    return DerivationResult("2", worst, None, tuple(table))


def derivation_3(seed: int, dtype, show_deltas: bool = True) -> DerivationResult:
    """Deep, no biases, one output node, tanh everywhere; SGD one sample at a time."""
    ds = data.load_dataset("breast_cancer", seed=seed, dtype=dtype)
    model = jaxbp.MLP(SIZES_3, ACTIVATION_3, ACTIVATION_3, use_bias=False)
    k_init, k_order = jax.random.split(jax.random.key(seed))
    params = jaxbp.init_params(k_init, model, dtype=dtype)
    x = jnp.asarray(ds.x_train)
    y = 2 * jnp.asarray(ds.y_train) - 1  # {0, 1} → {−1, +1}, the range of the tanh output
    g, g_prime = AT_Z[ACTIVATION_3]
    Ws = [layer["W"] for layer in params]
    closed_grads = average_over_samples(  # J = 1/n Σ Loss, eq. (3.2)
        lambda x_i, y_i: closed_form_3(Ws, x_i, y_i, g, g_prime), x, y[:, 0]
    )
    _, layers = closed_form_3(Ws, x[0], y[0, 0], g, g_prime, with_layers=True)
    what = (
        f"{model.num_layers - 1} hidden layers, no biases, one output node, g = tanh, "
        f"mse, breast_cancer {model.sizes}, {len(x)} examples, targets ±1"
    )
    closed_form = ("eqs. (3.3)-(3.6), J = 1/n Σ", [{"W": dW} for dW in closed_grads])
    layers = layers if show_deltas else None
    table, worst = compare(model, "mse", params, x, y, "3", what, closed_form, layers)

    @jax.jit
    def sgd_epochs(params, sign, key):
        """W ← W + sign·η ∂Loss/∂W on one sample at a time, over shuffled epochs."""

        def sample_step(params, i):
            _, grads = jaxbp.loss_and_grad(model, "mse", params, x[i][None], y[i][None])
            return jax.tree.map(lambda w, dw: w + sign * LEARNING_RATE_3 * dw, params, grads), None

        def epoch(params, key):
            order = jax.random.permutation(key, len(x))
            return jax.lax.scan(sample_step, params, order)[0], None

        return jax.lax.scan(epoch, params, jax.random.split(key, NUM_EPOCHS_3))[0]

    def J(p):
        return float(jaxbp.loss_value(model, "mse", p, x, y))

    trained = sgd_epochs(params, -1.0, k_order)
    ascended = sgd_epochs(params, +1.0, k_order)
    test_accuracy = accuracy(model, trained, ds.x_test, 2 * ds.y_test - 1, 0.0)
    training = (
        f"training: {NUM_EPOCHS_3} epochs of SGD one shuffled sample at a time (lax.scan), "
        f"η = {LEARNING_RATE_3}:",
        f"  descent W ← W − η ∂Loss/∂W:           J {J(params):.4f} → {J(trained):.4f}; "
        f"test accuracy {test_accuracy:.1%} on {len(ds.x_test)} examples (threshold 0)",
        f"  erratum W ← W + η ∂Loss/∂W:         J {J(params):.4f} → {J(ascended):.4f} "
        "(ascent: the loss goes up)",
    )
    return DerivationResult("3", worst, test_accuracy, (*table, "", *training))


def derivation_4(seed: int, dtype, show_deltas: bool = True) -> DerivationResult:
    """Two sigmoid layers with biases, ½‖y − ŷ‖² averaged over the iris training set."""
    ds = data.load_dataset("iris", seed=seed, dtype=dtype)
    model = jaxbp.MLP(SIZES_4, activation="sigmoid", output_activation="sigmoid")
    params = jaxbp.init_params(jax.random.key(seed), model, dtype=dtype)
    # Biases start at zero; give them values so ∂/∂b is tested on a general point.
    params = [
        {"W": layer["W"], "b": 0.1 * jax.random.normal(k, layer["b"].shape, dtype)}
        for layer, k in zip(params, jax.random.split(jax.random.key(seed + 1), 2), strict=True)
    ]
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    f, f_prime = AT_Z["sigmoid"]
    closed_form = average_over_samples(
        lambda x_i, y_i: closed_form_4(params, x_i, y_i, f, f_prime), x, y
    )
    what = (
        f"two layers with biases, σ = f = sigmoid, ½‖y − ŷ‖², iris {model.sizes}, {len(x)} examples"
    )
    _, layers = closed_form_4(params, x[0], y[0], f, f_prime, with_layers=True)
    closed_form = ("eq. (4.9), batch-averaged", closed_form)
    layers = layers if show_deltas else None
    table, worst = compare(model, "half_mse", params, x, y, "4", what, closed_form, layers)
    return DerivationResult("4", worst, None, tuple(table))


REPRODUCTIONS: dict[str, Callable[[int, object], DerivationResult]] = dict(
    zip(DERIVATIONS, (derivation_1, derivation_2, derivation_3, derivation_4), strict=True)
)


def reproduce(
    which, seed: int = 0, precision: str = "float64", show_deltas: bool = True
) -> dict[str, DerivationResult]:
    """Runs the chosen derivations.

    Args:
      which: derivation numbers among `DERIVATIONS`.
      seed: the random seed of the data split, initial weights and SGD order.
      precision: "float64" (needs ``jax_enable_x64``) or "float32".
      show_deltas: whether each report starts with the per-layer z, a, δ table.

    Returns:
      ``{derivation number: DerivationResult}`` in the order given.
    """
    unknown = [w for w in which if w not in REPRODUCTIONS]
    if unknown:
        raise ValueError(
            f"unknown derivations {unknown}: expected some of {', '.join(DERIVATIONS)}."
        )
    if precision == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            "precision='float64' needs jax_enable_x64: run it under "
            '"with jax.enable_x64(True):", or use precision="float32".'
        )
    dtype = np.dtype(precision)
    # float32 as the thresholds mean it: by default GPUs and TPUs multiply float32 matrices
    # with fewer mantissa bits (TF32, bfloat16 passes), ~1e-3 off the closed forms.
    with jax.default_matmul_precision("highest"):
        return {w: REPRODUCTIONS[w](seed, dtype, show_deltas) for w in which}


def main(argv: list[str]) -> int:
    del argv
    # A context, not jax.config.update: the setting is restored when main returns (tests).
    with jax.enable_x64(_PRECISION.value == "float64"):
        results = reproduce(_DERIVATION.value, _SEED.value, _PRECISION.value, _SHOW_DELTAS.value)
    threshold = THRESHOLD[_PRECISION.value]
    failures = []
    for name, result in results.items():
        print("\n".join(result.lines))
        verdict = "pass" if result.max_relative_error <= threshold else "FAIL"
        print(
            "\nmax relative error between the closed form and the library: "
            f"{result.max_relative_error:.1e} "
            f"(threshold {threshold:.0e}, {_PRECISION.value}): {verdict}\n"
        )
        if verdict == "FAIL":
            failures.append(f"derivation {name} gradients")
        if result.test_accuracy is not None and result.test_accuracy < MIN_ACCURACY:
            failures.append(f"derivation {name} accuracy {result.test_accuracy:.1%}")
    summary = ", ".join(
        f"{n}: {r.max_relative_error:.1e}"
        + (f" / {r.test_accuracy:.1%}" if r.test_accuracy is not None else "")
        for n, r in results.items()
    )
    print(f"summary (max rel. error / test accuracy): {summary}")
    if failures:
        print(f"FAILED: {'; '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(app.run(main))
