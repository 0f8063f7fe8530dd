"""Each seed's own closed-form gradient beside the library's, on real data.

For every seed derivation (cited by file name) the script writes the seed's formula out in jnp,
evaluates it on a real dataset, and prints it beside ``jaxbp.loss_and_grad`` (the
hand-written δ recursion), ``jax.grad`` through ``jaxbp.apply(backward="custom")`` (the same
recursion as a custom_vjp) and ``jax.grad`` of the plain forward pass, with the largest
element-wise relative error between any two. Seeds 000 and 002 are then trained with the
descent rule W ← W − η ∂L/∂W and their test accuracy printed.

python -m experiments.seeds                         # all four seeds, float64
python -m experiments.seeds --which=000,002 --seed=1
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

SEEDS = ("000", "001", "002", "003")

_SEED = flags.DEFINE_integer("seed", 0, "Seeds the data split, the initial weights, SGD order.")
_WHICH = flags.DEFINE_list("which", list(SEEDS), "Seeds to reproduce: any of 000,001,002,003.")
flags.register_validator(
    "which",
    lambda which: set(which) <= set(SEEDS),
    message=f"--which takes seeds among {','.join(SEEDS)}, e.g. --which=000,002.",
)
_PRECISION = flags.DEFINE_enum(
    "precision",
    "float64",
    ["float32", "float64"],
    "float64 shows the closed forms agree to rounding (~1e-15); float32 to ~1e-5.",
)

# seed 000: one sigmoid unit on breast_cancer, full-batch gradient descent.
LEARNING_RATE_000 = 2.0  # mse through a sigmoid has small gradients (|σ'| ≤ ¼): a big step
NUM_STEPS_000 = 300  # the loss has flattened by then; more steps change test accuracy by < 1%
# seed 002: L = 2 hidden layers, no biases, one output node, SGD one sample at a time.
SIZES_002 = (30, 16, 8, 1)  # breast_cancer's 30 features, two tanh layers, seed 002's one node
ACTIVATION_002 = "tanh"  # seed 002's g, used for every layer, the output included
LEARNING_RATE_002 = 0.01  # per-sample steps are noisy: a small η
NUM_EPOCHS_002 = 5  # passes over the shuffled training set; accuracy is flat after ~3
# seed 003: two sigmoid layers with biases on iris.
SIZES_003 = (4, 8, 3)  # iris's 4 features, 8 hidden units, 3 sigmoid outputs on one-hot
# Relative errors are element-wise, |a − b| / max(|a|, |b|, floor), with the floor at this
# share of the gradient's largest entry: an entry that is a sum of a few hundred rows
# cancelling to ~1e-4 of the largest keeps few float32 digits, whichever order sums it.
RELATIVE_ERROR_FLOOR = 1e-3
# float64: rounding only (the rtol of the library's gradcheck); float32: its 1e-5 was set on
# small batches, and a few hundred rows summed in another order reach ~1e-5 here.
THRESHOLD = {"float64": gradient_check.AUTODIFF_RTOL["float64"], "float32": 1e-4}
MIN_ACCURACY = 0.95  # seed 000's logistic unit reaches this on breast_cancer; so should 002


class SeedResult(NamedTuple):
    """One seed's reproduction.

    Attributes:
      seed: "000" ... "003".
      max_relative_error: the largest element-wise relative error between any two of the
        seed's closed form and the library's three gradients (`compare`).
      test_accuracy: after training (seeds 000 and 002), else None.
      lines: the printed report.
    """

    seed: str
    max_relative_error: float
    test_accuracy: float | None
    lines: tuple[str, ...]


# --------------------------------------------------------------------------------------
# The seeds' closed forms, typed in literally, in each seed's own layout (column vectors,
# W x + b, one example at a time). They use nothing from jaxbp: every derivative is taken at
# the pre-activation z, as the seeds write them, not read from the output as the library
# does. tests/test_seeds.py checks them against the library, errata included.
# --------------------------------------------------------------------------------------


def sigmoid(z):
    return 1.0 / (1.0 + jnp.exp(-z))


def sigmoid_prime(z):
    """σ'(z) = σ(z)(1 − σ(z)), at the pre-activation (seed 000 eq. 12)."""
    return sigmoid(z) * (1.0 - sigmoid(z))


# Each activation with its derivative at z: seed 002's g, seed 003's σ and f.
AT_Z = {
    "sigmoid": (sigmoid, sigmoid_prime),
    "tanh": (jnp.tanh, lambda z: 1.0 - jnp.tanh(z) ** 2),
    "identity": (lambda z: z, jnp.ones_like),
}


def average_over_samples(per_sample, X, y):
    """Seed 000 eqs. 3-4, J = 1/n Σ_i: ``per_sample(x_i, y_i)``, the gradients of one example,
    averaged over the rows of ``X`` and ``y`` (one compile, ``jax.vmap`` over the rows)."""
    grads = jax.jit(jax.vmap(per_sample))(X, y)
    return jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)


def closed_form_000(W, b, x_i, y_i, sigma_prime=sigmoid_prime):
    """seed 000 eq. 14 for one sample, L_i = (y_i − ŷ_i)², and ∂L_i/∂b worked out alike.

    ∂L_i/∂W = 2(ŷ_i − y_i) σ(z_i)(1 − σ(z_i)) x_iᵀ,   z_i = x_i W + b   (eqs. 11-14)
    ∂L_i/∂b = 2(ŷ_i − y_i) σ(z_i)(1 − σ(z_i))        (eq. 12 with ∂z_i/∂b = 1)

    ``W: (m, 1)``, scalar ``b``, ``x_i: (m,)`` (seed 000's row vector), scalar ``y_i``; returns
    ``(dW: (m, 1), db)``. ``sigma_prime`` replaces ∂ŷ_i/∂z_i to reproduce misreadings of eq. 12.
    """
    x_i = x_i[None, :]  # (1, m)
    z_i = (x_i @ W + b)[0, 0]  # eq. 1
    dL_dyhat = 2 * (sigmoid(z_i) - y_i)  # eq. 11
    dz = dL_dyhat * sigma_prime(z_i)  # eq. 12
    return dz * x_i.T, dz  # eqs. 13-14: ∂z_i/∂W = x_iᵀ


def closed_form_001(W, b, x, y):
    """seed 001, second answer: ∂ℒ/∂W = 2(S − S²)(s − y)xᵀ, s = σ(Wx + b), S = Diag(s).

    ∂ℒ/∂b = 2(S − S²)(s − y) follows from the same differential with dz = db.
    """
    s = sigmoid(W @ x + b)
    S = jnp.diag(s)
    dz = 2 * (S - S @ S) @ (s - y)
    return jnp.outer(dz, x), dz


def closed_form_002(Ws, x, y, g, g_prime, *, back_weights="L+1", back_sum="over_i"):
    """seed 002 §2 forward and §3.1-3.6 backward for one sample, Loss = (g(z) − y)².

    ``Ws = [W^(1), ..., W^(L+1)]`` with ``W^(k): (n_k, n_{k−1})`` and ``W^(L+1): (1, n_L)``,
    ``x: (n_0,)``, scalar ``y``, the activation ``g`` and its derivative at z; returns
    ``[∂Loss/∂W^(1), ..., ∂Loss/∂W^(L+1)]``. The errata: ``back_weights="L"`` is the seed's
    W_1i^(L) in §3.4 (right: "L+1"); ``back_sum="over_j"`` the other reading of §3.6's mixed
    indices, W δ^(k+1) for Wᵀ δ^(k+1) (right: "over_i", Σ_i over the nodes of layer k+1).
    """
    L = len(Ws) - 1
    h, z = [x], [None]  # h[0] = x; z[k], h[k] for layer k
    for k in range(1, L + 2):
        z.append(jnp.einsum("ij,j->i", Ws[k - 1], h[k - 1]))  # z_i^(k) = Σ_j W_ij^(k) h_j^(k−1)
        h.append(g(z[k]))  # h_i^(k) = g(z_i^(k))
    z_out = z[L + 1][0]  # z = z_1^(L+1)
    dz_out = 2 * (g(z_out) - y) * g_prime(z_out)  # §3.1: ∂Loss/∂g(z) × ∂g(z)/∂z
    grads = [None] * (L + 1)
    grads[L] = dz_out * h[L][None, :]  # §3.2: ∂Loss/∂W_1j^(L+1) = ∂Loss/∂z × h_j^(L)
    # §3.4: ∂Loss/∂z_i^(L) = ∂Loss/∂z × W_1i^(L+1) × g'(z_i^(L)).
    W_back = Ws[L] if back_weights == "L+1" else Ws[L - 1]
    dz = dz_out * W_back[0, :] * g_prime(z[L])
    for k in range(L, 0, -1):
        grads[k - 1] = jnp.einsum("i,j->ij", dz, h[k - 1])  # §3.3, h^(0) = x
        if k > 1:  # §3.5: ∂Loss/∂z_j^(k−1) = Σ_i ∂Loss/∂z_i^(k) × W_ij^(k) × g'(z_j^(k−1))
            subscripts = "i,ij->j" if back_sum == "over_i" else "j,ij->i"
            dz = jnp.einsum(subscripts, dz, Ws[k - 1]) * g_prime(z[k - 1])
    return grads


def closed_form_003(params, x, y, f, f_prime):
    """seed 003, Summary of Gradients, σ hidden and output f, for one example ``x: (n0,)``;
    returns the gradients in ``params``' layout (two ``{"W", "b"}`` dicts)."""
    W1, b1, W2, b2 = params[0]["W"], params[0]["b"], params[1]["W"], params[1]["b"]
    z1 = W1 @ x + b1  # Forward Propagation
    a1 = sigmoid(z1)
    z2 = W2 @ a1 + b2
    y_hat = f(z2)
    delta2 = (y_hat - y) * f_prime(z2)  # (ŷ − y) ∘ f'(z^[2])
    delta1 = (W2.T @ delta2) * sigmoid_prime(z1)  # (W^[2])ᵀ δ^[2] ∘ σ'(z^[1])
    return [
        {"W": jnp.outer(delta1, x), "b": delta1},  # ∂L/∂W^[1] = δ^[1] xᵀ, ∂L/∂b^[1] = δ^[1]
        {"W": jnp.outer(delta2, a1), "b": delta2},  # ∂L/∂W^[2] = δ^[2] (a^[1])ᵀ, ∂L/∂b^[2]
    ]


# --------------------------------------------------------------------------------------
# One reproduction per seed: its closed form beside the library's gradients, then training.
# --------------------------------------------------------------------------------------

FILES = {
    "000": "000_ec86669a6f964b66.txt",
    "001": "001_d6f965bfea66bd78.txt",
    "002": "002_d7d3681c3aab63a0.txt",
    "003": "003_9d9dca60a2a4e9a1.txt",
}


def compare(model, loss, params, x, y, seed, what, closed_form) -> tuple[list[str], float]:
    """The seed's ``closed_form = (name, gradient)`` (in the library's layout) beside the
    library's three gradients of ``loss``, as a markdown table titled with the seed and
    ``what``, and the largest element-wise relative error between any two of the four."""
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
    lines = [
        f"## seed {seed} ({FILES[seed]}): {what}",
        "",
        "| gradient | ‖∇‖ | first entries of ∂/∂W^[1] | max rel. error vs seed |",
        "|---|---|---|---|",
    ]
    for name, g in grads.items():
        entries = ", ".join(f"{v:+.6e}" for v in np.asarray(g[0]["W"]).ravel()[:3])
        error = "—" if name == closed_form[0] else f"{errors[name, closed_form[0]]:.1e}"
        lines.append(f"| {name} | {np.linalg.norm(flats[name]):.6e} | {entries} | {error} |")
    return lines, max(errors.values())


def accuracy(model, params, x, y, threshold) -> float:
    """Share of rows whose single output lands on the right side of ``threshold``."""
    y_hat = jaxbp.apply(model, params, x)
    return float(jnp.mean((y_hat > threshold) == (y > threshold)))


def seed_000(seed: int, dtype) -> SeedResult:
    """One sigmoid unit, mse, breast_cancer; then plain gradient descent."""
    ds = data.load_dataset("breast_cancer", seed=seed, dtype=dtype)
    model = jaxbp.MLP((ds.num_features, 1), output_activation="sigmoid")
    params = jaxbp.init_params(jax.random.key(seed), model, dtype=dtype)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    # The seed's W ∈ R^{m×1} is the library's W^T (the library stores (n_out, n_in)).
    W, b = params[0]["W"].T, params[0]["b"][0]
    dW, db = average_over_samples(lambda x_i, y_i: closed_form_000(W, b, x_i, y_i), x, y[:, 0])
    what = f"one sigmoid unit, mse, breast_cancer {model.sizes}, {len(x)} examples"
    closed_form = ("seed 000 eq. 14 averaged (eq. 3)", [{"W": dW.T, "b": db[None]}])
    table, worst = compare(model, "mse", params, x, y, "000", what, closed_form)
    optimizer = optax.sgd(LEARNING_RATE_000)  # W ← W − η ∂L/∂W

    @jax.jit
    def train(params):
        def step(carry, _):
            params, opt_state = carry
            value, grads = jaxbp.loss_and_grad(model, "mse", params, x, y)
            updates, opt_state = optimizer.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, _), values = jax.lax.scan(
            step, (params, optimizer.init(params)), None, length=NUM_STEPS_000
        )
        return params, values

    trained, values = train(params)
    test_accuracy = accuracy(model, trained, ds.x_test, ds.y_test, 0.5)
    training = (
        f"training: {NUM_STEPS_000} full-batch steps of optax.sgd({LEARNING_RATE_000}), "
        f"W ← W − η ∂L/∂W: loss {values[0]:.4f} → {values[-1]:.4f}; "
        f"test accuracy {test_accuracy:.1%} on {len(ds.x_test)} examples (threshold 0.5)"
    )
    return SeedResult("000", worst, test_accuracy, (*table, "", training))


def seed_001(seed: int, dtype) -> SeedResult:
    """Vector form, sse, one iris example with three sigmoid outputs on its one-hot target."""
    ds = data.load_dataset("iris", seed=seed, dtype=dtype)
    model = jaxbp.MLP((ds.num_features, ds.num_outputs), output_activation="sigmoid")
    params = jaxbp.init_params(jax.random.key(seed), model, dtype=dtype)
    x, y = jnp.asarray(ds.x_train[:1]), jnp.asarray(ds.y_train[:1])
    dW, db = closed_form_001(params[0]["W"], params[0]["b"], x[0], y[0])
    what = f"s = σ(Wx + b), ℒ = Σ (s − y)², iris {model.sizes}, one example"
    closed_form = ("seed 001: 2(S − S²)(s − y)xᵀ", [{"W": dW, "b": db}])
    table, worst = compare(model, "sse", params, x, y, "001", what, closed_form)
    return SeedResult("001", worst, None, tuple(table))


def seed_002(seed: int, dtype) -> SeedResult:
    """Deep, no biases, one output node, tanh everywhere; SGD one sample at a time."""
    ds = data.load_dataset("breast_cancer", seed=seed, dtype=dtype)
    model = jaxbp.MLP(SIZES_002, ACTIVATION_002, ACTIVATION_002, use_bias=False)
    k_init, k_order = jax.random.split(jax.random.key(seed))
    params = jaxbp.init_params(k_init, model, dtype=dtype)
    x = jnp.asarray(ds.x_train)
    y = 2 * jnp.asarray(ds.y_train) - 1  # {0, 1} → {−1, +1}, the range of the tanh output
    g, g_prime = AT_Z[ACTIVATION_002]
    Ws = [layer["W"] for layer in params]
    seed_grads = average_over_samples(  # J = 1/n Σ Loss
        lambda x_i, y_i: closed_form_002(Ws, x_i, y_i, g, g_prime), x, y[:, 0]
    )
    what = (
        f"{model.num_layers - 1} hidden layers, no biases, one output node, g = tanh, "
        f"mse, breast_cancer {model.sizes}, {len(x)} examples, targets ±1"
    )
    closed_form = ("seed 002 §3.6 (W^(L+1)), J = 1/n Σ", [{"W": dW} for dW in seed_grads])
    table, worst = compare(model, "mse", params, x, y, "002", what, closed_form)

    @jax.jit
    def sgd_epochs(params, sign, key):
        """W ← W + sign·η ∂Loss/∂W on one sample at a time, over shuffled epochs."""

        def sample_step(params, i):
            _, grads = jaxbp.loss_and_grad(model, "mse", params, x[i][None], y[i][None])
            return jax.tree.map(
                lambda w, dw: w + sign * LEARNING_RATE_002 * dw, params, grads
            ), None

        def epoch(params, key):
            order = jax.random.permutation(key, len(x))
            return jax.lax.scan(sample_step, params, order)[0], None

        return jax.lax.scan(epoch, params, jax.random.split(key, NUM_EPOCHS_002))[0]

    def J(p):
        return float(jaxbp.loss_value(model, "mse", p, x, y))

    trained = sgd_epochs(params, -1.0, k_order)
    ascended = sgd_epochs(params, +1.0, k_order)
    test_accuracy = accuracy(model, trained, ds.x_test, 2 * ds.y_test - 1, 0.0)
    training = (
        f"training: {NUM_EPOCHS_002} epochs of SGD one shuffled sample at a time (lax.scan), "
        f"η = {LEARNING_RATE_002}:",
        f"  descent W ← W − η ∂Loss/∂W:           J {J(params):.4f} → {J(trained):.4f}; "
        f"test accuracy {test_accuracy:.1%} on {len(ds.x_test)} examples (threshold 0)",
        f"  seed's W ← W + η ∂Loss/∂W (erratum): J {J(params):.4f} → {J(ascended):.4f} "
        "(ascent: the loss goes up)",
    )
    return SeedResult("002", worst, test_accuracy, (*table, "", *training))


def seed_003(seed: int, dtype) -> SeedResult:
    """Two sigmoid layers with biases, ½‖y − ŷ‖² averaged over the iris training set."""
    ds = data.load_dataset("iris", seed=seed, dtype=dtype)
    model = jaxbp.MLP(SIZES_003, activation="sigmoid", output_activation="sigmoid")
    params = jaxbp.init_params(jax.random.key(seed), model, dtype=dtype)
    # Biases start at zero; give them values so ∂/∂b is tested on a general point.
    params = [
        {"W": layer["W"], "b": 0.1 * jax.random.normal(k, layer["b"].shape, dtype)}
        for layer, k in zip(params, jax.random.split(jax.random.key(seed + 1), 2), strict=True)
    ]
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    f, f_prime = AT_Z["sigmoid"]
    closed_form = average_over_samples(
        lambda x_i, y_i: closed_form_003(params, x_i, y_i, f, f_prime), x, y
    )
    what = (
        f"two layers with biases, σ = f = sigmoid, ½‖y − ŷ‖², iris {model.sizes}, {len(x)} examples"
    )
    closed_form = ("seed 003 Summary, batch-averaged", closed_form)
    table, worst = compare(model, "half_mse", params, x, y, "003", what, closed_form)
    return SeedResult("003", worst, None, tuple(table))


REPRODUCTIONS: dict[str, Callable[[int, object], SeedResult]] = dict(
    zip(SEEDS, (seed_000, seed_001, seed_002, seed_003), strict=True)
)


def reproduce(which, seed: int = 0, precision: str = "float64") -> dict[str, SeedResult]:
    """Runs the chosen reproductions.

    Args:
      which: seed names among `SEEDS`.
      seed: seeds the data split, initial weights and SGD order.
      precision: "float64" (needs ``jax_enable_x64``) or "float32".

    Returns:
      ``{seed name: SeedResult}`` in the order given.
    """
    unknown = [w for w in which if w not in REPRODUCTIONS]
    if unknown:
        raise ValueError(f"unknown seeds {unknown}: expected some of {', '.join(SEEDS)}.")
    if precision == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            "precision='float64' needs jax_enable_x64: run it under "
            '"with jax.enable_x64(True):", or use precision="float32".'
        )
    dtype = np.dtype(precision)
    return {w: REPRODUCTIONS[w](seed, dtype) for w in which}


def main(argv: list[str]) -> int:
    del argv
    # A context, not jax.config.update: the setting is restored when main returns (tests).
    with jax.enable_x64(_PRECISION.value == "float64"):
        results = reproduce(_WHICH.value, _SEED.value, _PRECISION.value)
    threshold = THRESHOLD[_PRECISION.value]
    failures = []
    for name, result in results.items():
        print("\n".join(result.lines))
        verdict = "pass" if result.max_relative_error <= threshold else "FAIL"
        print(
            f"\nmax relative error between any two gradients: {result.max_relative_error:.1e} "
            f"(threshold {threshold:.0e}, {_PRECISION.value}): {verdict}\n"
        )
        if verdict == "FAIL":
            failures.append(f"seed {name} gradients")
        if result.test_accuracy is not None and result.test_accuracy < MIN_ACCURACY:
            failures.append(f"seed {name} accuracy {result.test_accuracy:.1%}")
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
