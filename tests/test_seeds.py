"""Each seed's closed-form gradient, written out literally, against the library.

The closed forms are `experiments.seeds`' (one example at a time, in each seed's own layout,
derivatives taken at the pre-activation ``z``, nothing from jaxbp), averaged as seed 000
eq. 3 does. Each is compared with

* ``jaxbp.loss_and_grad`` (the hand-written δ recursion, no autodiff), and
* ``jax.grad`` of the seed's loss written on top of ``jaxbp.apply(..., backward="custom")``
  (the same recursion as a ``jax.custom_vjp``).

The errata of the seeds (their README) are each reproduced and shown to be caught: the
mistaken formula disagrees with the library by far more than the right one does.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from experiments.seeds import (
    AT_Z,
    average_over_samples,
    closed_form_000,
    closed_form_001,
    closed_form_002,
    closed_form_003,
    sigmoid,
    sigmoid_prime,
)
from jaxbp.gradient_check import relative_error

RTOL = 1e-10  # float64: the closed form and the recursion differ by rounding only
ATOL = 1e-13  # entries that cancel to ~0 are compared absolutely
WRONG = 1e-2  # an erratum must be off by more than this (relative), the right form ≤ 1e-10


@pytest.fixture(autouse=True)
def _float64():
    """Runs each test in float64; `jax.enable_x64` restores the previous setting on exit."""
    with jax.enable_x64(True):
        yield


def _draw(seed, *shapes, uniform=None):
    """Normal draws of the given shapes, the last one uniform in ``uniform = (low, high)``
    when given. numpy, since a jax.random call per shape would compile one more program."""
    rng = np.random.default_rng(seed)
    arrays = [jnp.asarray(rng.normal(size=shape)) for shape in shapes]
    if uniform is not None:
        arrays[-1] = jnp.asarray(rng.uniform(*uniform, size=shapes[-1]))
    return arrays


def _library_grads(model, loss, params, x, y, loss_on_y_hat):
    """(loss_and_grad's grads, jax.grad of the seed's loss through apply(backward="custom")).

    ``x`` may be one example ``(n0,)``: `apply` takes it as it is, `loss_and_grad` as a
    batch of one. The two loss values are checked to agree on the way.
    """
    x_batch, y_batch = (x[None], y[None]) if x.ndim == 1 else (x, y)
    value, hand = jax.jit(jaxbp.loss_and_grad, static_argnums=(0, 1))(
        model, loss, params, x_batch, y_batch
    )

    def loss_through_custom_vjp(p):
        return loss_on_y_hat(jaxbp.apply(model, p, x, backward="custom"), y)

    value_vjp, via_vjp = jax.jit(jax.value_and_grad(loss_through_custom_vjp))(params)
    chex.assert_trees_all_close(value, value_vjp, rtol=RTOL)
    return hand, via_vjp


def _assert_matches_library(closed_form, hand, via_vjp):
    chex.assert_trees_all_close(hand, closed_form, rtol=RTOL, atol=ATOL)
    chex.assert_trees_all_close(via_vjp, closed_form, rtol=RTOL, atol=ATOL)


def _assert_right_passes_wrong_fails(right, wrong, library):
    flat = [jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(t)]) for t in (right, wrong)]
    library = jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(library)])
    assert relative_error(flat[0], library) <= RTOL
    assert relative_error(flat[1], library) > WRONG


# --------------------------------------------------------------------------------------
# seed 000_ec86669a6f964b66.txt: one sigmoid unit, L = 1/n Σ (y_i − ŷ_i)²
# --------------------------------------------------------------------------------------


def _seed000_problem(n=9, m=5):
    # W ∈ R^{m×1}, scalar b, row i of X is x_i ∈ R^{1×m}, y_i ∈ [0, 1].
    return _draw(0, (m, 1), (), (n, m), (n,), uniform=(0, 1))


def _seed000_params(W, b, dW=None, db=None):
    """The library's layout for the unit (W is (n_out, n_in), the seed's Wᵀ), or for its
    gradient when dW, db are given."""
    W, b = (W, b) if dW is None else (dW, db)
    return [{"W": W.T, "b": jnp.reshape(b, (1,))}]


def _seed000_closed_form(W, b, X, y, sigma_prime=sigmoid_prime):
    grads = average_over_samples(
        lambda x_i, y_i: closed_form_000(W, b, x_i, y_i, sigma_prime), X, y
    )
    return _seed000_params(W, b, *grads)


def _seed000_library(W, b, X, y):
    model = jaxbp.MLP((W.shape[0], 1), output_activation="sigmoid")

    def seed_loss(y_hat, y):  # eq. 2: L = 1/n Σ (y_i − ŷ_i)²
        return jnp.mean((y - y_hat[:, 0]) ** 2)

    return _library_grads(model, "mse", _seed000_params(W, b), X, y, seed_loss)


def test_seed000_eq14_averaged_matches_library():
    W, b, X, y = _seed000_problem()
    closed_form = _seed000_closed_form(W, b, X, y)
    _assert_matches_library(closed_form, *_seed000_library(W, b, X, y))
    assert jnp.abs(closed_form[0]["b"]).max() > 1e-3  # a real gradient, not a zero


def test_seed000_mean_of_per_example_grads_is_eq3():
    W, b, X, y = _seed000_problem()
    model = jaxbp.MLP((W.shape[0], 1), output_activation="sigmoid")
    per_example = jax.jit(jaxbp.per_example_grads, static_argnums=(0, 1))(
        model, "mse", _seed000_params(W, b), X, y
    )
    for i in range(X.shape[0]):  # eq. 14 for each L_i alone
        chex.assert_trees_all_close(
            jax.tree.map(lambda leaf, i=i: leaf[i], per_example),
            _seed000_params(W, b, *closed_form_000(W, b, X[i], y[i])),
            rtol=RTOL,
            atol=ATOL,
        )


@pytest.mark.parametrize(
    "misreading",
    [
        # σz_i(1 − σz_i) with "σz_i" taken as the product ŷ_i · z_i.
        lambda z: sigmoid(z) * z * (1 - sigmoid(z) * z),
        # σz_i(1 − σz_i) with σ dropped: z(1 − z), seed 001's mistake too.
        lambda z: z * (1 - z),
    ],
    ids=["sigma_times_z", "z_one_minus_z"],
)
def test_seed000_erratum_sigma_z_read_literally_is_caught(misreading):
    W, b, X, y = _seed000_problem()
    hand, _ = _seed000_library(W, b, X, y)
    right = _seed000_closed_form(W, b, X, y)
    wrong = _seed000_closed_form(W, b, X, y, sigma_prime=misreading)
    _assert_right_passes_wrong_fails(right, wrong, hand)


# --------------------------------------------------------------------------------------
# seed 001_d6f965bfea66bd78.txt: s = σ(Wx + b), ℒ = Σ (s − y)², second answer
# --------------------------------------------------------------------------------------


def _seed001_problem(n_in=4, n_out=3):
    W, b, x = _draw(1, (n_out, n_in), (n_out,), (n_in,))
    y = jnp.eye(n_out)[1]  # a one-hot target
    return W, b, x, y


def _seed001_library(W, b, x, y):
    model = jaxbp.MLP((W.shape[1], W.shape[0]), output_activation="sigmoid")
    params = [{"W": W, "b": b}]  # seed 001 writes z = Wx + b: the same W layout

    def seed_loss(s, y):  # ℒ = r:r, r = s − y, for one example s: (n_out,)
        r = s - y
        return jnp.sum(r * r)

    return _library_grads(model, "sse", params, x, y, seed_loss)


def test_seed001_vector_form_matches_library():
    W, b, x, y = _seed001_problem()
    dW, db = closed_form_001(W, b, x, y)
    _assert_matches_library([{"W": dW, "b": db}], *_seed001_library(W, b, x, y))


def test_seed001_erratum_sigmoid_derivative_applied_to_z_is_caught():
    # The question: "derivative of sigmoid of x = x(1 − x)", then applied to z = Wx + b.
    W, b, x, y = _seed001_problem()
    hand, _ = _seed001_library(W, b, x, y)
    z = W @ x + b
    s = sigmoid(z)
    right = jnp.outer(2 * (s - y) * s * (1 - s), x)
    wrong = jnp.outer(2 * (s - y) * z * (1 - z), x)
    _assert_right_passes_wrong_fails(right, wrong, hand[0]["W"])


def test_seed001_erratum_sign_gives_negated_gradient():
    # The question writes ∂Loss/∂ŷ = 2(y − ŷ); the first answer corrects it to −2(y − ŷ).
    W, b, x, y = _seed001_problem()
    hand, _ = _seed001_library(W, b, x, y)
    s = sigmoid(W @ x + b)
    wrong = jnp.outer(2 * (y - s) * s * (1 - s), x)
    chex.assert_trees_all_close(-wrong, hand[0]["W"], rtol=RTOL, atol=ATOL)
    assert relative_error(wrong, hand[0]["W"]) > WRONG  # exactly 2 where the entry is nonzero
    assert jnp.sum(wrong * hand[0]["W"]) < 0  # it points uphill


# --------------------------------------------------------------------------------------
# seed 003_9d9dca60a2a4e9a1.txt: two layers with biases, L = ½‖y − ŷ‖²
# --------------------------------------------------------------------------------------


def _seed003_problem(batch, n0=4, n1=6, n2=3):
    W1, b1, W2, b2, X, Y = _draw(
        3, (n1, n0), (n1,), (n2, n1), (n2,), (batch, n0), (batch, n2), uniform=(0, 1)
    )
    return [{"W": W1, "b": b1}, {"W": W2, "b": b2}], X, Y


def _half_mse_on_y_hat(y_hat, y):  # seed 003: L = ½‖y − ŷ‖², averaged over the batch
    return 0.5 * jnp.sum((y - y_hat) ** 2) / y.shape[0]


@pytest.mark.parametrize("f_name", ["sigmoid", "identity"])
@pytest.mark.parametrize("batch", [1, 7], ids=["single_example", "batch_averaged"])
def test_seed003_summary_of_gradients_matches_library(f_name, batch):
    params, X, Y = _seed003_problem(batch)
    f, f_prime = AT_Z[f_name]
    model = jaxbp.MLP((4, 6, 3), activation="sigmoid", output_activation=f_name)
    closed_form = average_over_samples(lambda x, y: closed_form_003(params, x, y, f, f_prime), X, Y)
    _assert_matches_library(
        closed_form, *_library_grads(model, "half_mse", params, X, Y, _half_mse_on_y_hat)
    )


def test_seed003_why_steps():
    # The three "why?" steps of Step 1-2, each checked with jax's autodiff of the forward map.
    params, X, _ = _seed003_problem(1)
    W2, b2, x = params[1]["W"], params[1]["b"], X[0]
    a1 = sigmoid(params[0]["W"] @ x + params[0]["b"])
    z2 = W2 @ a1 + b2
    # (1) ŷ = f(z) element-wise has the diagonal Jacobian Diag(f'(z)), so ḡ J = ḡ ∘ f'(z).
    jac = jax.jacobian(sigmoid)(z2)
    chex.assert_trees_all_close(jac, jnp.diag(sigmoid_prime(z2)), rtol=RTOL, atol=ATOL)
    # (2) z = W a + b: ∂L/∂W_ij = δ_i a_j, i.e. ∂L/∂W = δ aᵀ for any upstream δ.
    (delta,) = _draw(7, z2.shape)
    dW = jax.grad(lambda W: jnp.dot(delta, W @ a1 + b2))(W2)
    chex.assert_trees_all_close(dW, jnp.outer(delta, a1), rtol=RTOL, atol=ATOL)
    # (3) ∂z/∂a = W, so ∂L/∂a = Wᵀ δ.
    da = jax.grad(lambda a: jnp.dot(delta, W2 @ a + b2))(a1)
    chex.assert_trees_all_close(da, W2.T @ delta, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------
# seed 002_d7d3681c3aab63a0.txt: L hidden layers, no biases, one output node, general g
# --------------------------------------------------------------------------------------

SIZES_002 = (4, 5, 5, 5, 1)  # L = 3 hidden layers of equal width, so W^(L) fits where
# W^(L+1) belongs (the erratum can be computed, not just rejected by shape).


def _seed002_problem(batch=6):
    # W^(k): (n_k, n_{k−1}) with entries of std 1/sqrt(n_{k−1}): tanh units in their bend.
    shapes = list(zip(SIZES_002[1:], SIZES_002[:-1], strict=True))
    *Ws, X, y = _draw(2, *shapes, (batch, SIZES_002[0]), (batch,), uniform=(-0.8, 0.8))
    params = [{"W": W / np.sqrt(W.shape[1])} for W in Ws]
    return params, X, y


def _seed002_J_grads(params, X, y, g_name, **erratum):
    """J = 1/n Σ Loss: the per-sample §3.6 gradients averaged."""
    g, g_prime = AT_Z[g_name]
    Ws = [layer["W"] for layer in params]
    grads = average_over_samples(
        lambda x, y: closed_form_002(Ws, x, y, g, g_prime, **erratum), X, y
    )
    return [{"W": dW} for dW in grads]


def _seed002_library(params, X, y, g_name):
    model = jaxbp.MLP(SIZES_002, activation=g_name, output_activation=g_name, use_bias=False)

    def seed_J(y_hat, y):  # J = 1/n Σ Loss(h(x), y), Loss = (h − y)²
        return jnp.mean((y_hat[:, 0] - y) ** 2)

    return _library_grads(model, "mse", params, X, y, seed_J)


@pytest.mark.parametrize("g_name", ["tanh", "sigmoid"])
def test_seed002_deep_recursion_matches_library(g_name):
    params, X, y = _seed002_problem()
    closed_form = _seed002_J_grads(params, X, y, g_name)
    _assert_matches_library(closed_form, *_seed002_library(params, X, y, g_name))


@pytest.mark.parametrize("g_name", ["tanh", "sigmoid"])
def test_seed002_erratum_W_L_instead_of_W_L_plus_1_is_caught(g_name):
    params, X, y = _seed002_problem()
    hand, _ = _seed002_library(params, X, y, g_name)
    right = _seed002_J_grads(params, X, y, g_name)
    wrong = _seed002_J_grads(params, X, y, g_name, back_weights="L")
    _assert_right_passes_wrong_fails(right, wrong, hand)
    # Only the layers below the output are affected: ∂/∂W^(L+1) does not use W_back.
    chex.assert_trees_all_close(wrong[-1], hand[-1], rtol=RTOL, atol=ATOL)


def test_seed002_erratum_sum_over_the_wrong_index_is_caught():
    params, X, y = _seed002_problem()
    hand, _ = _seed002_library(params, X, y, "tanh")
    right = _seed002_J_grads(params, X, y, "tanh")
    wrong = _seed002_J_grads(params, X, y, "tanh", back_sum="over_j")
    _assert_right_passes_wrong_fails(right, wrong, hand)


def test_seed002_erratum_ascent_update_raises_the_loss():
    # §3.6 writes W ← W + η ∂Loss/∂W; descent is W ← W − η ∂Loss/∂W.
    params, X, y = _seed002_problem()
    model = jaxbp.MLP(SIZES_002, activation="tanh", output_activation="tanh", use_bias=False)
    learning_rate, num_steps = 0.05, 5  # small steps: the first-order change dominates

    @jax.jit
    def step(p, sign):
        value, grads = jaxbp.loss_and_grad(model, "mse", p, X, y)
        return value, jax.tree.map(lambda w, dw: w + sign * learning_rate * dw, p, grads)

    def run(sign):
        p, history = params, []
        for _ in range(num_steps + 1):
            value, p = step(p, sign)
            history.append(float(value))  # J before this step: the last is after num_steps
        return history

    descent, ascent = run(-1.0), run(+1.0)
    assert descent[0] == ascent[0]
    assert all(b < a for a, b in zip(descent, descent[1:], strict=False)), descent
    assert all(b > a for a, b in zip(ascent, ascent[1:], strict=False)), ascent
    assert ascent[-1] > ascent[0] * 1.01 and descent[-1] < descent[0] * 0.99
