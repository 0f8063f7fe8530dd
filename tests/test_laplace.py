"""Tests for jaxbp.laplace: the posterior precision, the marginal likelihood, the GLM
predictive and the tuning of the prior, in float64.

Oracles: Bayesian linear regression's closed forms (a network with no hidden layer, an
identity output and ``half_mse`` is that model); the GGN from ``jax.jacrev`` of the outputs
and ``jax.hessian`` of the summed negative log-likelihood; a predictive built from
``jax.jacrev``; Gauss-Hermite quadrature and finite differences.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from problems import make_params

import jaxbp
from jaxbp import laplace

MC_SAMPLES = 100_000


def _flat_jacobian(model, params, x, layers, gaussian):
    """``∂f/∂θ: (N, V, P)`` by ``jax.jacrev``, in `laplace.flatten`'s order."""

    def outputs(sub):
        full = [sub[layers.index(k)] if k in layers else params[k] for k in range(len(params))]
        if gaussian:
            return jaxbp.forward_outputs(model, full, x)
        return jaxbp.forward_logits(model, full, x)

    jac = jax.jacrev(outputs)([params[k] for k in layers])
    n, v = x.shape[0], model.sizes[-1]
    parts = []
    for layer in jac:
        w = layer["W"]
        if "b" in layer:
            w = jnp.concatenate([w, layer["b"][..., None]], axis=-1)
        parts.append(w.reshape(n, v, -1))
    return jnp.concatenate(parts, axis=-1)


def _nll_hessians(loss, f, y, sigma):
    """``∂²(−log p(y_i | f_i))/∂f_i²: (N, V, V)`` by ``jax.hessian``."""

    def nll(f_i, y_i):
        if loss == "softmax_cross_entropy":
            return -jnp.sum(y_i * jax.nn.log_softmax(f_i))
        if loss == "bce":
            return jnp.sum(optax.sigmoid_binary_cross_entropy(f_i, y_i))
        return jnp.sum((y_i - f_i) ** 2) / (2 * sigma**2)

    return jax.vmap(jax.hessian(nll))(f, y)


def _problem(activation, output, loss, sizes, n=13, seed=0, use_bias=True):
    model = jaxbp.MLP(sizes, activation, output, use_bias)
    rng = np.random.default_rng(seed)
    params = make_params(model, rng)
    x = jnp.asarray(rng.normal(size=(n, sizes[0])))
    if loss == "softmax_cross_entropy":
        y = jax.nn.one_hot(rng.integers(0, sizes[-1], n), sizes[-1], dtype=jnp.float64)
    elif loss == "bce":
        y = jnp.asarray(rng.integers(0, 2, (n, 1)), jnp.float64)
    else:
        y = jnp.asarray(rng.normal(size=(n, sizes[-1])))
    return model, params, x, y


def test_bayesian_linear_regression_closed_forms(x64):
    """half_mse on a linear net is BLR: covariance (X̃ᵀX̃/σ² + λI)⁻¹ and the log evidence.

    The training loss is L = 1/(2N) Σ ‖y_i − ŷ_i‖², so N·L/σ² is the Gaussian NLL up to
    constants (eq. (7.2)): the ridge solution below is where ∇(N·L/σ²) + λθ = 0.
    """
    del x64
    n, d, v, sigma, lam = 40, 3, 2, 0.7, 2.5
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=(d, v)) + 0.3 + sigma * rng.normal(size=(n, v))
    x_bar = np.concatenate([x, np.ones((n, 1))], axis=1)
    precision = x_bar.T @ x_bar / sigma**2 + lam * np.eye(d + 1)
    ridge = np.linalg.solve(precision, x_bar.T @ y / sigma**2)  # (d + 1, v)
    model = jaxbp.MLP((d, v), output_activation="identity")
    params = [{"W": jnp.asarray(ridge[:d].T), "b": jnp.asarray(ridge[d])}]
    _, grads = jaxbp.loss_and_grad(model, "half_mse", params, x, y)
    stationary = laplace.flatten(model, grads, (0,)) * n / sigma**2 + lam * laplace.flatten(
        model, params, (0,)
    )
    np.testing.assert_allclose(stationary, 0, atol=1e-10)
    posterior = laplace.fit(
        model, "half_mse", params, x, y, structure="full", prior_precision=lam, sigma_noise=sigma
    )
    # [W | b] row by row: each output's d + 1 parameters together, one block per output.
    expected_cov = np.kron(np.eye(v), np.linalg.inv(precision))
    np.testing.assert_allclose(posterior.covariance(), expected_cov, rtol=1e-8, atol=1e-12)
    marginal = sigma**2 * np.eye(n) + x_bar @ x_bar.T / lam  # y_v ~ N(0, σ²I + X̃X̃ᵀ/λ)
    _, log_det = np.linalg.slogdet(marginal)
    quad = np.einsum("iv,iv->", y, np.linalg.solve(marginal, y))
    evidence = -0.5 * (quad + v * log_det + v * n * math.log(2 * math.pi))
    assert float(posterior.log_marginal_likelihood()) == pytest.approx(evidence, rel=1e-8)


CASES = [  # (hidden activation, output activation, loss, sizes)
    ("tanh", "softmax", "softmax_cross_entropy", (3, 5, 3)),
    ("sigmoid", "sigmoid", "mse", (2, 4, 3, 2)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[2] + "-" + c[1] for c in CASES])
def test_full_precision_is_the_ggn_of_jacrev_and_hessian(x64, case):
    """P = Σ_i J_iᵀ H_i J_i + λI, J by jax.jacrev, H by jax.hessian of the summed NLL; the
    diagonal structure is its diagonal; both subsets."""
    del x64
    activation, output, loss, sizes = case
    model, params, x, y = _problem(activation, output, loss, sizes)
    lam, sigma = 0.8, 0.6
    gaussian = laplace.LIKELIHOODS[loss] == "gaussian"
    for subset, layers in (("all", tuple(range(model.num_layers))), ("last_layer", (1,))):
        layers = layers if subset == "all" else (model.num_layers - 1,)
        jac = _flat_jacobian(model, params, x, list(layers), gaussian)
        f = (
            jaxbp.forward_outputs(model, params, x)
            if gaussian
            else jaxbp.forward_logits(model, params, x)
        )
        ggn = jnp.einsum("ivp,ivw,iwq->pq", jac, _nll_hessians(loss, f, y, sigma), jac)
        expected = ggn + lam * jnp.eye(ggn.shape[0])
        for structure in ("full", "diag"):
            posterior = laplace.fit(
                model,
                loss,
                params,
                x,
                y,
                structure=structure,
                subset=subset,
                prior_precision=lam,
                sigma_noise=sigma,
                batch_size=4,
            )
            want = expected if structure == "full" else jnp.diag(jnp.diag(expected))
            np.testing.assert_allclose(
                posterior.precision_matrix(),
                want,
                rtol=1e-10,
                atol=1e-12 * float(jnp.abs(want).max()),
            )


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse"])
def test_diag_and_kron_are_the_curvature_modules_scaled_to_the_data_set(x64, loss):
    """diag = N/κ · diag_ggn, kron = kron(N/κ · G, A) of `jaxbp.curvature` on the whole set
    as one batch (the batch mean's Hessian carries w = 1/N and κ = 2 for mse), over σ²; the
    fit runs in padded batches that do not divide N."""
    del x64
    output = "softmax" if loss == "softmax_cross_entropy" else "identity"
    model, params, x, y = _problem("tanh", output, loss, (3, 5, 3))
    lam, sigma = 0.5, 1.0 if output == "softmax" else 0.4
    scale = x.shape[0] / (1.0 if output == "softmax" else 2.0) / sigma**2
    diag = jaxbp.diag_ggn(model, loss, params, x, y)
    factors = jaxbp.kfac_factors(model, loss, params, x, y)
    for subset, layers in (("all", (0, 1)), ("last_layer", (1,))):
        kwargs = dict(subset=subset, prior_precision=lam, sigma_noise=sigma, batch_size=4)
        got = laplace.fit(model, loss, params, x, y, structure="diag", **kwargs)
        want = scale * laplace.flatten(model, diag, layers) + lam
        np.testing.assert_allclose(jnp.diag(got.precision_matrix()), want, rtol=1e-10)
        got = laplace.fit(model, loss, params, x, y, structure="kron", **kwargs)
        blocks = [jnp.kron(scale * factors[k][1], factors[k][0]) for k in layers]
        want = jax.scipy.linalg.block_diag(*blocks) + lam * jnp.eye(got.num_params)
        np.testing.assert_allclose(got.precision_matrix(), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "half_mse"])
def test_predictive_is_the_linearised_network_of_jacrev(x64, loss):
    """Every structure and subset, the last layer's kron closed form included: probit
    softmax(f / √(1 + π/8 diag JΣJᵀ)) or (ŷ, diag JΣJᵀ + σ²) with J from jax.jacrev and Σ
    the dense covariance."""
    del x64
    output = "softmax" if loss == "softmax_cross_entropy" else "identity"
    model, params, x, y = _problem("tanh", output, loss, (3, 5, 3))
    x_new = x[:7] * 2
    gaussian = output == "identity"
    for subset in ("all", "last_layer"):
        layers = [1] if subset == "last_layer" else [0, 1]
        jac = _flat_jacobian(model, params, x_new, layers, gaussian)
        for structure in ("full", "diag", "kron"):
            posterior = laplace.fit(
                model,
                loss,
                params,
                x,
                y,
                structure=structure,
                subset=subset,
                prior_precision=0.7,
                sigma_noise=0.5,
                batch_size=4,
            )
            var = jnp.einsum("ivp,pq,ivq->iv", jac, posterior.covariance(), jac)
            got = posterior.predictive(x_new, batch_size=4)
            if gaussian:
                np.testing.assert_allclose(got[0], jaxbp.forward_outputs(model, params, x_new))
                np.testing.assert_allclose(got[1], var + 0.25, rtol=1e-10)
            else:
                logits = jaxbp.forward_logits(model, params, x_new)
                want = jax.nn.softmax(logits / jnp.sqrt(1 + math.pi / 8 * var), axis=-1)
                np.testing.assert_allclose(got, want, rtol=1e-10)


def _mc_tolerance(p, num_samples):
    """Four standard errors of a mean of ``num_samples`` draws in [0, 1] (bound: ½/√n)."""
    return 4 * 0.5 / math.sqrt(num_samples)


def test_probit_against_monte_carlo(x64):
    """Bernoulli: 10⁵ MC draws of the logit agree with Gauss-Hermite quadrature of E[σ(f)]
    (the same Gaussian) within MC error, and so does the probit approximation. Softmax: probit
    and MC agree within MC error where the logits' variance is small (λ large); with large
    variance the probit scaling of each logit apart is only an approximation
    (docs/derivations.md, eq. (7.10))."""
    del x64
    model, params, x, y = _problem("tanh", "sigmoid", "bce", (2, 8, 1), n=200)
    posterior = laplace.fit(model, "bce", params, x, y, structure="full")
    x_new = x[:5] * 3
    mc = posterior.predictive(x_new, method="mc", key=jax.random.key(0), num_samples=MC_SAMPLES)
    probit = posterior.predictive(x_new)
    jac = _flat_jacobian(model, params, x_new, [0, 1], False)
    std = jnp.sqrt(jnp.einsum("ivp,pq,ivq->iv", jac, posterior.covariance(), jac))[:, 0]
    f = jaxbp.forward_logits(model, params, x_new)[:, 0]
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # ∫ g(t) e^{−t²/2} dt
    exact = jax.nn.sigmoid(f[:, None] + std[:, None] * nodes) @ weights / math.sqrt(2 * math.pi)
    assert float(std.max()) > 1  # a variance large enough to move the mean away from σ(f)
    assert float(jnp.max(jnp.abs(exact - jax.nn.sigmoid(f)))) > 0.01
    tol = _mc_tolerance(mc, MC_SAMPLES)
    np.testing.assert_allclose(mc[:, 0], exact, atol=tol)
    np.testing.assert_allclose(probit[:, 0], mc[:, 0], atol=tol)
    model, params, x, y = _problem("tanh", "softmax", "softmax_cross_entropy", (2, 8, 3), n=200)
    posterior = laplace.fit(
        model, "softmax_cross_entropy", params, x, y, structure="kron", prior_precision=30.0
    )
    mc = posterior.predictive(x[:5], method="mc", key=jax.random.key(1), num_samples=MC_SAMPLES)
    np.testing.assert_allclose(posterior.predictive(x[:5]), mc, atol=tol)


def test_marginal_likelihood_gradient_against_finite_differences(x64):
    """The log marginal likelihood (eq. (7.5)) from the eigenvalues equals the Gaussian
    log-likelihood of the residuals, the prior at θ* and the dense precision's slogdet; its
    ∂/∂λ and ∂/∂σ by jax.grad equal central differences; each structure, both subsets."""
    del x64
    model, params, x, y = _problem("tanh", "sigmoid", "mse", (3, 5, 3))
    residual = jnp.sum((y - jaxbp.forward_outputs(model, params, x)) ** 2)
    for structure, subset in (("full", "all"), ("diag", "all"), ("kron", "last_layer")):
        posterior = laplace.fit(
            model,
            "mse",
            params,
            x,
            y,
            structure=structure,
            subset=subset,
            prior_precision=1.3,
            sigma_noise=0.6,
        )
        theta = laplace.flatten(model, params, posterior.layers)
        _, log_det = jnp.linalg.slogdet(posterior.precision_matrix())
        want = (
            -residual / (2 * 0.36)
            - y.size / 2 * math.log(2 * math.pi * 0.36)
            - 0.65 * jnp.sum(theta**2)
            + theta.size / 2 * math.log(1.3)
            - 0.5 * log_det
        )
        assert float(posterior.log_marginal_likelihood()) == pytest.approx(float(want), rel=1e-10)
        point = jnp.asarray([1.3, 0.6])
        grad = jax.grad(lambda v, p=posterior: p.log_marginal_likelihood(v[0], v[1]))(point)
        h = 1e-6
        for i in range(2):
            step = jnp.zeros(2).at[i].set(h)
            up = posterior.log_marginal_likelihood(*(point + step))
            down = posterior.log_marginal_likelihood(*(point - step))
            assert float(grad[i]) == pytest.approx(float(up - down) / (2 * h), rel=1e-6)


def _train_map(model, loss, x, y, weight_decay, steps=1500):
    """θ* minimising N·L + ½ wd ‖θ‖² (the MAP of eq. (7.2) at σ = 1), full batch, Adam."""
    params = make_params(model, np.random.default_rng(3))
    optimizer = optax.adam(1e-2)

    def step(carry, _):
        params, state = carry
        _, grads = jaxbp.loss_and_grad(model, loss, params, x, y)
        grads = jax.tree.map(lambda g, p: x.shape[0] * g + weight_decay * p, grads, params)
        updates, state = optimizer.update(grads, state)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, steps))(
        (params, optimizer.init(params))
    )
    return params


def test_tuned_sigma_finds_the_noise_of_a_regression_toy(x64):
    """y = sin(2x) + 0.3 ε: σ tuned by the marginal likelihood and by the validation NLL lands
    in [0.25, 0.35]; λ by val_nll is the grid point of the lowest validation NLL of the
    predictive itself."""
    del x64
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (240, 1))
    y = np.sin(2 * x) + 0.3 * rng.normal(size=x.shape)
    x_train, y_train, x_val, y_val = x[:160], y[:160], x[160:], y[160:]
    model = jaxbp.MLP((1, 16, 1), "tanh")
    params = _train_map(model, "half_mse", jnp.asarray(x_train), jnp.asarray(y_train), 1.0)
    posterior = laplace.fit(model, "half_mse", params, x_train, y_train, structure="full")
    tuned = laplace.optimize_prior(posterior, method="marglik")
    assert 0.25 <= tuned.sigma_noise <= 0.35, tuned.sigma_noise
    grid = (1e-3, 1e-1, 1.0, 10.0, 1e3)
    by_val = laplace.optimize_prior(
        posterior, method="val_nll", x_val=x_val, y_val=y_val, prior_grid=grid
    )
    assert 0.25 <= by_val.sigma_noise <= 0.35, by_val.sigma_noise

    def nll(lam):  # the predictive's own mean validation NLL at the tuned σ
        mean, var = by_val.replace(prior_precision=lam).predictive(x_val)
        return float(jnp.mean(0.5 * jnp.log(2 * jnp.pi * var) + (y_val - mean) ** 2 / (2 * var)))

    scores = [nll(lam) for lam in grid]
    assert by_val.prior_precision == grid[int(np.argmin(scores))]
    np.testing.assert_allclose(
        laplace.validation_nll(
            by_val, x_val, y_val, jnp.asarray(grid), jnp.full(len(grid), by_val.sigma_noise)
        ),
        scores,
        rtol=1e-10,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(structure="dense"), "unknown structure 'dense'"),
        (dict(subset="first"), "unknown subset 'first'"),
        (dict(prior_precision=0.0), "prior_precision must be positive"),
        (dict(sigma_noise=-1.0), "sigma_noise must be positive"),
    ],
)
def test_fit_refuses_bad_arguments(kwargs, message):
    model = jaxbp.MLP((3, 4, 2), "tanh", "softmax")
    params = jaxbp.init_params(jax.random.key(0), model)
    x, y = jnp.ones((5, 3)), jax.nn.one_hot(jnp.arange(5) % 2, 2)
    with pytest.raises(ValueError, match=message):
        laplace.fit(model, "softmax_cross_entropy", params, x, y, **kwargs)


def test_full_is_refused_above_its_size_and_mc_needs_a_key():
    model = jaxbp.MLP((64, 128, 10), "tanh", "softmax")  # 9610 parameters
    params = jaxbp.init_params(jax.random.key(0), model)
    x, y = jnp.ones((4, 64)), jax.nn.one_hot(jnp.arange(4), 10)
    with pytest.raises(ValueError, match="offered up to 4096 parameters: use structure='kron'"):
        laplace.fit(model, "softmax_cross_entropy", params, x, y, structure="full")
    posterior = laplace.fit(
        model, "softmax_cross_entropy", params, x, y, structure="kron", subset="last_layer"
    )
    with pytest.raises(ValueError, match="pass key=jax.random.key"):
        posterior.predictive(x, method="mc")
    with pytest.raises(ValueError, match="needs the validation split"):
        laplace.optimize_prior(posterior, method="val_nll")
