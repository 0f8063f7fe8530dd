"""Each seed's closed-form gradient, written out literally, against the library.

Every closed form below is typed in from its seed (shared/seeds/, cited by file name) in
plain jnp, in the seed's own layout (W x + b on a column vector, one example at a time,
then averaged as seed 000 eq. 3 does). It is compared with

* ``jaxbp.loss_and_grad`` (the hand-written δ recursion, no autodiff), and
* ``jax.grad`` of the seed's loss written on top of ``jaxbp.apply(..., backward="custom")``
  (the same recursion as a ``jax.custom_vjp``).

The errata listed in shared/seeds/README.md are each reproduced and shown to be caught:
the mistaken formula disagrees with the library by far more than the right one does.
The closed forms here are independent of the library: derivatives are taken at the
pre-activation ``z`` (as the seeds write them), not from the stored output.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.gradient_check import relative_error

RTOL = 1e-10  # float64: the closed form and the recursion differ by rounding only
ATOL = 1e-13  # entries that cancel to ~0 are compared absolutely
WRONG = 1e-2  # an erratum must be off by more than this (relative), the right form ≤ 1e-10


@pytest.fixture(autouse=True)
def _float64():
    """Runs each test in float64; `jax.enable_x64` restores the previous setting on exit."""
    with jax.enable_x64(True):
        yield


def _rng(seed):
    # numpy draws: a jax.random call per shape would compile one more program per test.
    return np.random.default_rng(seed)


def _normal(rng, shape):
    return jnp.asarray(rng.normal(size=shape))


def _uniform(rng, shape, low=0.0, high=1.0):
    return jnp.asarray(rng.uniform(low, high, size=shape))


def sigmoid(z):
    return 1.0 / (1.0 + jnp.exp(-z))


def sigmoid_prime(z):
    # σ'(z) = σ(z)(1 − σ(z)), evaluated at the pre-activation as the seeds write it.
    return sigmoid(z) * (1.0 - sigmoid(z))


def tanh_prime(z):
    return 1.0 - jnp.tanh(z) ** 2


def identity_prime(z):
    return jnp.ones_like(z)


G = {"sigmoid": (sigmoid, sigmoid_prime), "tanh": (jnp.tanh, tanh_prime)}
F = {"sigmoid": (sigmoid, sigmoid_prime), "identity": (lambda z: z, identity_prime)}


def _library_grads(model, loss, params, x, y, loss_on_y_hat):
    """(loss_and_grad's grads, jax.grad of the seed's loss through apply(backward="custom")).

    ``x`` may be one example ``(n0,)``: `apply` takes it as it is, `loss_and_grad` as a
    batch of one. The two loss values are checked to agree on the way.
    """
    x_batch, y_batch = (x[None], y[None]) if x.ndim == 1 else (x, y)
    loss_and_grad = jax.jit(jaxbp.loss_and_grad, static_argnums=(0, 1))
    value, hand = loss_and_grad(model, loss, params, x_batch, y_batch)

    def loss_through_custom_vjp(p):
        return loss_on_y_hat(jaxbp.apply(model, p, x, backward="custom"), y)

    value_vjp, via_vjp = jax.jit(jax.value_and_grad(loss_through_custom_vjp))(params)
    chex.assert_trees_all_close(value, value_vjp, rtol=RTOL)
    return hand, via_vjp


def _assert_matches_library(closed_form, hand, via_vjp):
    chex.assert_trees_all_close(hand, closed_form, rtol=RTOL, atol=ATOL)
    chex.assert_trees_all_close(via_vjp, closed_form, rtol=RTOL, atol=ATOL)


def _average_over_samples(per_sample_grads, X, y):
    """Seed 000 eqs. 3-4: ∂L/∂θ = 1/n Σ_i ∂L_i/∂θ, from a one-sample closed form.

    The per-sample formula is mapped over the rows with ``jax.vmap`` and compiled once.
    """
    per_sample = jax.jit(jax.vmap(per_sample_grads))(X, y)
    return jax.tree.map(lambda g: jnp.mean(g, axis=0), per_sample)


def _flat(tree):
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


# --------------------------------------------------------------------------------------
# seed 000_ec86669a6f964b66.txt: one sigmoid unit, L = 1/n Σ (y_i − ŷ_i)²
# --------------------------------------------------------------------------------------


def _seed000_problem(n=9, m=5):
    rng = _rng(0)
    W = _normal(rng, (m, 1))  # seed 000: W ∈ R^{m×1}
    b = _normal(rng, ())  # scalar b
    X = _normal(rng, (n, m))  # row i is x_i ∈ R^{1×m}
    y = _uniform(rng, (n,))
    return W, b, X, y


def _seed000_L_i_grads(W, b, x_i, y_i, sigma_prime_at=None):
    """Seed 000 eq. 14 for one sample; ∂L_i/∂b worked out the same way.

    ∂L_i/∂W = 2(ŷ_i − y_i) σ(z_i)(1 − σ(z_i)) x_iᵀ   (eq. 14)
    ∂L_i/∂b = 2(ŷ_i − y_i) σ(z_i)(1 − σ(z_i))        (eq. 12 with ∂z_i/∂b = 1)

    ``sigma_prime_at(z_i, y_hat_i)`` replaces σ(z_i)(1 − σ(z_i)) to reproduce misreadings.
    """
    x_i = x_i[None, :]  # (1, m): seed 000's row vector
    z_i = (x_i @ W + b)[0, 0]  # eq. 1
    y_hat_i = sigmoid(z_i)
    dL_dyhat = 2 * (y_hat_i - y_i)  # eq. 11
    if sigma_prime_at is None:
        dyhat_dz = sigmoid(z_i) * (1 - sigmoid(z_i))  # eq. 12, read as σ(z_i)(1 − σ(z_i))
    else:
        dyhat_dz = sigma_prime_at(z_i, y_hat_i)
    return dL_dyhat * dyhat_dz * x_i.T, dL_dyhat * dyhat_dz  # eqs. 13-14: ∂z_i/∂W = x_iᵀ


def _seed000_closed_form(W, b, X, y, sigma_prime_at=None):
    """Eqs. 3-4: ∂L/∂W = 1/n Σ_i ∂L_i/∂W, ∂L/∂b = 1/n Σ_i ∂L_i/∂b."""
    return _average_over_samples(
        lambda x_i, y_i: _seed000_L_i_grads(W, b, x_i, y_i, sigma_prime_at), X, y
    )


def _seed000_library(W, b, X, y):
    model = jaxbp.MLP((W.shape[0], 1), output_activation="sigmoid")
    params = [{"W": W.T, "b": jnp.reshape(b, (1,))}]  # the library's W is (n_out, n_in)

    def seed_loss(y_hat, y):  # eq. 2: L = 1/n Σ (y_i − ŷ_i)²
        return jnp.mean((y - y_hat[:, 0]) ** 2)

    return _library_grads(model, "mse", params, X, y, seed_loss)


def _seed000_as_params(dW, db):
    return [{"W": dW.T, "b": jnp.reshape(db, (1,))}]


def test_seed000_eq14_averaged_matches_library():
    W, b, X, y = _seed000_problem()
    hand, via_vjp = _seed000_library(W, b, X, y)
    closed_form = _seed000_as_params(*_seed000_closed_form(W, b, X, y))
    _assert_matches_library(closed_form, hand, via_vjp)
    assert jnp.abs(closed_form[0]["b"]).max() > 1e-3  # a real gradient, not a zero


def test_seed000_mean_of_per_example_grads_is_eq3():
    W, b, X, y = _seed000_problem()
    model = jaxbp.MLP((W.shape[0], 1), output_activation="sigmoid")
    params = [{"W": W.T, "b": jnp.reshape(b, (1,))}]
    per_example = jax.jit(jaxbp.per_example_grads, static_argnums=(0, 1))(
        model, "mse", params, X, y
    )
    for i in range(X.shape[0]):  # eq. 14 for each L_i alone
        dW_i, db_i = _seed000_L_i_grads(W, b, X[i], y[i])
        chex.assert_trees_all_close(
            jax.tree.map(lambda leaf, i=i: leaf[i], per_example),
            _seed000_as_params(dW_i, db_i),
            rtol=RTOL,
            atol=ATOL,
        )


@pytest.mark.parametrize(
    "misreading",
    [
        # σz_i(1 − σz_i) with "σz_i" taken as the product ŷ_i · z_i.
        lambda z, y_hat: y_hat * z * (1 - y_hat * z),
        # σz_i(1 − σz_i) with σ dropped: z(1 − z), seed 001's mistake too.
        lambda z, y_hat: z * (1 - z),
    ],
    ids=["sigma_times_z", "z_one_minus_z"],
)
def test_seed000_erratum_sigma_z_read_literally_is_caught(misreading):
    W, b, X, y = _seed000_problem()
    hand, _ = _seed000_library(W, b, X, y)
    right = _seed000_as_params(*_seed000_closed_form(W, b, X, y))
    wrong = _seed000_as_params(*_seed000_closed_form(W, b, X, y, sigma_prime_at=misreading))
    assert relative_error(_flat(right), _flat(hand)) <= RTOL
    assert relative_error(_flat(wrong), _flat(hand)) > WRONG


# --------------------------------------------------------------------------------------
# seed 001_d6f965bfea66bd78.txt: s = σ(Wx + b), ℒ = Σ (s − y)², second answer
# --------------------------------------------------------------------------------------


def _seed001_problem(n_in=4, n_out=3):
    rng = _rng(1)
    W = _normal(rng, (n_out, n_in))
    b = _normal(rng, (n_out,))
    x = _normal(rng, (n_in,))
    y = jnp.asarray(np.eye(n_out)[rng.integers(n_out)])  # a one-hot target
    return W, b, x, y


def _seed001_closed_form(W, b, x, y):
    """∂ℒ/∂W = 2(S − S²)(s − y)xᵀ, S = Diag(s); ∂ℒ/∂b = 2(S − S²)(s − y) (dz = db)."""
    z = W @ x + b
    s = sigmoid(z)
    S = jnp.diag(s)
    dz = 2 * (S - S @ S) @ (s - y)
    return jnp.outer(dz, x), dz


def _seed001_library(W, b, x, y):
    model = jaxbp.MLP((W.shape[1], W.shape[0]), output_activation="sigmoid")
    params = [{"W": W, "b": b}]  # seed 001 writes z = Wx + b: the same W layout

    def seed_loss(s, y):  # ℒ = r:r, r = s − y, for one example s: (n_out,)
        r = s - y
        return jnp.sum(r * r)

    return _library_grads(model, "sse", params, x, y, seed_loss)


def test_seed001_vector_form_matches_library():
    W, b, x, y = _seed001_problem()
    hand, via_vjp = _seed001_library(W, b, x, y)
    dW, db = _seed001_closed_form(W, b, x, y)
    _assert_matches_library([{"W": dW, "b": db}], hand, via_vjp)


def test_seed001_erratum_sigmoid_derivative_applied_to_z_is_caught():
    # The question: "derivative of sigmoid of x = x(1 − x)", then applied to z = Wx + b.
    W, b, x, y = _seed001_problem()
    hand, _ = _seed001_library(W, b, x, y)
    z = W @ x + b
    s = sigmoid(z)
    right = jnp.outer(2 * (s - y) * s * (1 - s), x)
    wrong = jnp.outer(2 * (s - y) * z * (1 - z), x)
    assert relative_error(right, hand[0]["W"]) <= RTOL
    assert relative_error(wrong, hand[0]["W"]) > WRONG


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
    rng = _rng(3)
    W1, b1 = _normal(rng, (n1, n0)), _normal(rng, (n1,))
    W2, b2 = _normal(rng, (n2, n1)), _normal(rng, (n2,))
    X = _normal(rng, (batch, n0))
    Y = _uniform(rng, (batch, n2))
    return [{"W": W1, "b": b1}, {"W": W2, "b": b2}], X, Y


def _seed003_summary(params, x, y, f, f_prime):
    """Seed 003, Summary of Gradients, for one example x ∈ R^{n0}."""
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


def _half_mse_on_y_hat(y_hat, y):  # seed 003: L = ½‖y − ŷ‖², averaged over the batch
    return 0.5 * jnp.sum((y - y_hat) ** 2) / y.shape[0]


@pytest.mark.parametrize("f_name", ["sigmoid", "identity"])
@pytest.mark.parametrize("batch", [1, 7], ids=["single_example", "batch_averaged"])
def test_seed003_summary_of_gradients_matches_library(f_name, batch):
    params, X, Y = _seed003_problem(batch)
    f, f_prime = F[f_name]
    model = jaxbp.MLP((4, 6, 3), activation="sigmoid", output_activation=f_name)
    hand, via_vjp = _library_grads(model, "half_mse", params, X, Y, _half_mse_on_y_hat)
    closed_form = _average_over_samples(
        lambda x, y: _seed003_summary(params, x, y, f, f_prime), X, Y
    )
    _assert_matches_library(closed_form, hand, via_vjp)


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
    delta = _normal(_rng(7), z2.shape)
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
    rng = _rng(2)
    # W^(k): (n_k, n_{k−1}) with entries of std 1/sqrt(n_{k−1}): tanh units in their bend.
    params = [
        {"W": _normal(rng, (n_out, n_in)) / np.sqrt(n_in)}
        for n_in, n_out in zip(SIZES_002[:-1], SIZES_002[1:], strict=True)
    ]
    X = _normal(rng, (batch, SIZES_002[0]))
    y = _uniform(rng, (batch,), -0.8, 0.8)
    return params, X, y


def _seed002_grads(Ws, x, y, g, g_prime, *, back_weights="L+1", back_sum="over_i"):
    """Seed 002 §2 forward and §3.1-3.6 backward for one sample, Loss = (g(z) − y)².

    Ws[k − 1] is W^(k), k = 1..L+1, with W^(k): (n_k, n_{k−1}) and W^(L+1): (1, n_L).

    Args:
      back_weights: "L+1" (right) or "L" (the seed's W_{1i}^{(L)} in §3.4).
      back_sum: "over_i" (right: Σ_i over the nodes of layer k+1) or "over_j" (the other
        reading of §3.6's mixed indices: δ^(k) = (W δ^(k+1)) ∘ g' instead of Wᵀ δ^(k+1)).

    Returns:
      [∂Loss/∂W^(1), ..., ∂Loss/∂W^(L+1)].
    """
    L = len(Ws) - 1
    h, z = [x], [None]  # h[0] = x; z[k], h[k] for layer k
    for k in range(1, L + 2):
        z.append(jnp.einsum("ij,j->i", Ws[k - 1], h[k - 1]))  # z_i^(k) = Σ_j W_ij^(k) h_j^(k−1)
        h.append(g(z[k]))  # h_i^(k) = g(z_i^(k))
    z_out = z[L + 1][0]  # z = z_1^(L+1)
    # §3.1: ∂Loss/∂z = ∂Loss/∂g(z) × ∂g(z)/∂z, with Loss(g(z), y) = (g(z) − y)².
    dz_out = 2 * (g(z_out) - y) * g_prime(z_out)
    grads = [None] * (L + 1)
    # §3.2: ∂Loss/∂W_1j^(L+1) = ∂Loss/∂z × h_j^(L).
    grads[L] = dz_out * h[L][None, :]
    # §3.4: ∂Loss/∂z_i^(L) = ∂Loss/∂z × W_1i^(L+1) × g'(z_i^(L)).
    W_back = Ws[L] if back_weights == "L+1" else Ws[L - 1]
    dz = dz_out * W_back[0, :] * g_prime(z[L])
    for k in range(L, 0, -1):
        # §3.3: ∂Loss/∂W_ij^(k) = ∂Loss/∂z_i^(k) × h_j^(k−1)  (h^(0) = x).
        grads[k - 1] = jnp.einsum("i,j->ij", dz, h[k - 1])
        if k > 1:
            # §3.5: ∂Loss/∂z_j^(k−1) = Σ_i ∂Loss/∂z_i^(k) × W_ij^(k) × g'(z_j^(k−1)).
            subscripts = "i,ij->j" if back_sum == "over_i" else "j,ij->i"
            dz = jnp.einsum(subscripts, dz, Ws[k - 1]) * g_prime(z[k - 1])
    return grads


def _seed002_J_grads(params, X, y, g_name, back_weights="L+1", back_sum="over_i"):
    """J = 1/n Σ Loss: the per-sample §3.6 gradients averaged."""
    g, g_prime = G[g_name]
    Ws = [layer["W"] for layer in params]
    grads = _average_over_samples(
        lambda x, y: _seed002_grads(
            Ws, x, y, g, g_prime, back_weights=back_weights, back_sum=back_sum
        ),
        X,
        y,
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
    hand, via_vjp = _seed002_library(params, X, y, g_name)
    _assert_matches_library(_seed002_J_grads(params, X, y, g_name), hand, via_vjp)


@pytest.mark.parametrize("g_name", ["tanh", "sigmoid"])
def test_seed002_erratum_W_L_instead_of_W_L_plus_1_is_caught(g_name):
    params, X, y = _seed002_problem()
    hand, _ = _seed002_library(params, X, y, g_name)
    right = _seed002_J_grads(params, X, y, g_name, back_weights="L+1")
    wrong = _seed002_J_grads(params, X, y, g_name, back_weights="L")
    assert relative_error(_flat(right), _flat(hand)) <= RTOL
    assert relative_error(_flat(wrong), _flat(hand)) > WRONG
    # Only the layers below the output are affected: ∂/∂W^(L+1) does not use W_back.
    chex.assert_trees_all_close(wrong[-1], hand[-1], rtol=RTOL, atol=ATOL)


def test_seed002_erratum_sum_over_the_wrong_index_is_caught():
    params, X, y = _seed002_problem()
    hand, _ = _seed002_library(params, X, y, "tanh")
    right = _seed002_J_grads(params, X, y, "tanh", back_sum="over_i")
    wrong = _seed002_J_grads(params, X, y, "tanh", back_sum="over_j")
    assert relative_error(_flat(right), _flat(hand)) <= RTOL
    assert relative_error(_flat(wrong), _flat(hand)) > WRONG


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
