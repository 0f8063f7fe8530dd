"""Curvature and gradient statistics (`jaxbp.curvature`) against a gradient step and autodiff.

    python -m experiments.bench_curvature --quick
    python -m experiments.bench_curvature --output=curvature.json
    VENV/bin/python -m experiments.bench_curvature --laplax    # VENV: one with laplax

Each network's functions are compiled ahead of time and timed in interleaved rounds
(`experiments.bench.host.time_interleaved`), every ratio the median of the per-round ratios,
so load on the machine hits both sides of a ratio alike. The step is `jaxbp.loss_and_grad`.

* The grid: the benchmark's networks (``depth`` tanh layers of ``width``, 10 identity
  outputs, mse; `experiments.bench.jax_side.grid_network`), float32.
* Digits: the run's 64-128-10 tanh softmax network at batch 256 (the first 256 training
  rows of digits), float32, timed also against what a JAX user writes today:
  ``vmap(grad)`` squared for the second moment; ``jax.jacrev`` of the batch outputs and
  ``jax.hessian`` of the loss, contracted as Jᵀ(H J), for the diagonal GGN; the per-example
  ``vmap`` of ``jacrev`` and ``hessian`` for the same. With ``--laplax`` (where the
  `laplax` package is installed: ``pip install .[laplax]``, a separate environment is
  fine), laplax's diagonal GGN too (one GGN-vector product per parameter, `laplax.util.mv.
  diagonal` of `laplax.curv.ggn.create_ggn_mv`), compiled once. Every alternative's result
  is compared with jaxbp's in the same run (largest relative error).
"""

import json
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from absl import app, flags
from jax.flatten_util import ravel_pytree

import jaxbp
from experiments.bench import host
from experiments.bench.config import Point
from experiments.bench.jax_side import LOSS as GRID_LOSS
from experiments.bench.jax_side import grid_network
from jaxbp import data, gradient_check
from jaxbp.losses import LOSSES

# allow_override: the tests import this and experiments.benchmark (its own --quick) into one
# process; the scripts themselves run one at a time.
_QUICK = flags.DEFINE_boolean(
    "quick", False, "A 4-point grid and short budgets (~2 min).", allow_override=True
)
_BUDGET = flags.DEFINE_float("budget", 3.0, "Seconds of timed rounds per network.")
_LAPLAX = flags.DEFINE_boolean("laplax", False, "Time laplax's diagonal GGN (~10 s a call).")
_OUTPUT = flags.DEFINE_string("output", None, "Write the rows as JSON here.")

GRID = dict(depths=(1, 2, 4), widths=(32, 256, 1024), batches=(32, 256))
QUICK_GRID = dict(depths=(1,), widths=(32, 256), batches=(32, 256))
DIGITS_BATCH = 256
LAPLAX_MISSING = (
    "bench_curvature: laplax is not installed here, so it is not timed; install it with "
    "pip install .[laplax] (into a separate environment if you like) and run from there."
)
FUNCTIONS = (
    "sum_grad_squared",
    "variance",
    "grad_gram",
    "diag_ggn",
    "diag_ggn_mc1",
    "diag_hessian",
    "kfac_factors",
)
# The targets over a step: the first-order statistics ≤ 1.5×, diag_ggn ≤ 3× on digits and
# ≤ (outputs + 1)× on the grid, one Monte-Carlo sample ≤ 2×.
TARGETS = {"sum_grad_squared": 1.5, "variance": 1.5, "grad_gram": 1.5, "diag_ggn_mc1": 2.0}
DIGITS_GGN_TARGET = 3.0
AUTODIFF_TARGET = 100.0  # speed-up over each autodiff way and laplax on digits


def jaxbp_functions(model, loss: str) -> dict[str, Callable]:
    """``name -> fn(params, x, y)``: the step and every curvature function."""
    fns: dict[str, Callable] = {
        "step": lambda p, x, y: jaxbp.loss_and_grad(model, loss, p, x, y),
        "diag_ggn_mc1": lambda p, x, y: jaxbp.diag_ggn(
            model, loss, p, x, y, mc_samples=1, key=jax.random.key(0)
        ),
    }
    for name in FUNCTIONS:
        if name not in fns:
            fns[name] = _bound(getattr(jaxbp, name), model, loss)
    return fns


def _bound(fn: Callable, model, loss: str) -> Callable:
    return lambda p, x, y: fn(model, loss, p, x, y)


def _split(model, loss: str):
    """The network up to the split point and the batch loss there (eq. (5.5))."""
    loss_fn = LOSSES[loss]
    forward = jaxbp.forward_logits if loss_fn.fused else jaxbp.forward_outputs
    value = loss_fn.value_from_logits if loss_fn.fused else loss_fn.value
    return (lambda p, x: forward(model, p, x)), value


def autodiff_functions(model, loss: str) -> dict[str, Callable]:
    """The same quantities as a JAX user writes them with autodiff."""
    output, value = _split(model, loss)

    def vmap_grad_squared(p, x, y):
        w = LOSSES[loss].batch_weight(x.shape[0])
        grad = jax.grad(lambda p, x_i, y_i: jaxbp.loss_value(model, loss, p, x_i[None], y_i[None]))
        grads = jax.vmap(grad, in_axes=(None, 0, 0))(p, x, y)
        return jax.tree.map(lambda g: jnp.sum((w * g) ** 2, axis=0), grads)

    def jacrev_hessian(p, x, y):
        jac = jax.jacrev(lambda q: output(q, x))(p)  # leaves (B, V, *leaf)
        f = output(p, x)
        hess = jax.hessian(lambda f: value(f, y))(f)  # (B, V, B, V)
        # Examples do not interact: only the diagonal blocks H_ii enter (a dense Jᵀ H J
        # would cost B times more).
        blocks = hess[jnp.arange(x.shape[0]), :, jnp.arange(x.shape[0]), :]  # (B, V, V)
        return jax.tree.map(lambda j: jnp.einsum("ia...,iab,ib...->...", j, blocks, j), jac)

    def vmap_jacrev(p, x, y):
        w = LOSSES[loss].batch_weight(x.shape[0])

        def one(x_i, y_i):
            jac = jax.jacrev(lambda q: output(q, x_i[None])[0])(p)  # leaves (V, *leaf)
            f = output(p, x_i[None])[0]
            hess = w * jax.hessian(lambda f: value(f[None], y_i[None]))(f)  # (V, V)
            return jax.tree.map(lambda j: jnp.sum(j * jnp.tensordot(hess, j, 1), axis=0), jac)

        return jax.tree.map(lambda d: jnp.sum(d, axis=0), jax.vmap(one)(x, y))

    return {
        "vmap_grad_squared": vmap_grad_squared,
        "jacrev_hessian": jacrev_hessian,
        "vmap_jacrev": vmap_jacrev,
    }


def laplax_function(model, loss: str) -> Callable | None:
    """laplax's diagonal GGN of the sum over examples, divided by B: the mean loss's."""
    try:
        from laplax.curv.ggn import create_ggn_mv
        from laplax.util.mv import diagonal
    except ImportError:
        return None
    output, _ = _split(model, loss)
    laplax_loss = {"softmax_cross_entropy": "cross_entropy", "mse": "mse"}[loss]

    def laplax_diag_ggn(p, x, y):
        def model_fn(input, params):  # laplax's calling convention, one example
            return output(params, input[None])[0]

        ggn_mv = create_ggn_mv(model_fn, p, {"input": x, "target": y}, laplax_loss)
        flat = diagonal(ggn_mv, layout=p) / x.shape[0]
        return ravel_pytree(p)[1](flat)

    return laplax_diag_ggn


def _compiled(fns: dict[str, Callable], params, x, y) -> dict[str, host.Thunk]:
    thunks = {}
    for name, fn in fns.items():
        compiled = jax.jit(fn).lower(params, x, y).compile()
        thunks[name] = lambda c=compiled: c(params, x, y)
    return thunks


def _error(ours, theirs) -> float:
    a, b = ravel_pytree(ours)[0], ravel_pytree(theirs)[0]
    return gradient_check.relative_error(a, b, 1e-6 * float(jnp.max(jnp.abs(b))))


def time_network(
    model, loss, params, x, y, budget: float, *, alternatives: bool = False, laplax: bool = False
) -> dict[str, Any]:
    """One row: each function's ms and its ratio to the step, and with ``alternatives`` the
    autodiff ways' (and with ``laplax`` laplax's) ms, their ratio to jaxbp's and the largest
    relative difference of their results."""
    thunks = _compiled(jaxbp_functions(model, loss), params, x, y)
    timings = host.time_interleaved(thunks, min_rounds=5, budget=budget)
    row: dict[str, Any] = {"network": "-".join(map(str, model.sizes)), "batch": x.shape[0]}
    row.update(timings.ms(*thunks))
    row.update({f"{n}_over_step": timings.ratio(n, "step") for n in thunks if n != "step"})
    if not alternatives:
        return row
    others = autodiff_functions(model, loss)
    if laplax and (laplax_fn := laplax_function(model, loss)) is not None:
        others["laplax"] = laplax_fn
    ours = {"vmap_grad_squared": "sum_grad_squared"}
    slow = _compiled(others, params, x, y)
    mine = {n: thunks[n] for n in ("step", "sum_grad_squared", "diag_ggn")}
    slow_timings = host.time_interleaved({**mine, **slow}, min_rounds=3, budget=budget)
    row.update(slow_timings.ms(*slow))
    for name, thunk in slow.items():
        reference = ours.get(name, "diag_ggn")
        row[f"{name}_jaxbp_ms"] = 1e3 * slow_timings.median(reference)  # the same rounds
        row[f"{name}_over_jaxbp"] = slow_timings.ratio(name, reference)
        row[f"{name}_error"] = _error(thunks[reference](), thunk())
    return row


def digits_network(batch: int = DIGITS_BATCH) -> tuple[Any, str, Any, Any, Any]:
    """The digits run's network on the first ``batch`` standardised training rows."""
    ds = data.load_dataset("digits")
    model = jaxbp.MLP((ds.x_train.shape[1], 128, 10), "tanh", "softmax")
    params = jaxbp.init_params(jax.random.key(0), model)
    x, y = (jnp.asarray(a[:batch], jnp.float32) for a in (ds.x_train, ds.y_train))
    return model, "softmax_cross_entropy", params, x, y


def run(
    grid: dict,
    budget: float,
    laplax: bool,
    *,
    digits_batch: int = DIGITS_BATCH,
    log: Callable[[str], None] = print,
) -> list:
    """The grid's rows (jaxbp only), then the digits row (with the alternatives)."""
    if laplax and laplax_function(jaxbp.MLP((1, 2)), "mse") is None:
        log(LAPLAX_MISSING)
    rows = []
    for depth in grid["depths"]:
        for width in grid["widths"]:
            for batch in grid["batches"]:
                point = Point(depth, width, batch, "tanh", "float32")
                model, params, x, y = grid_network(point, jax.random.key(0))
                row = time_network(model, GRID_LOSS, params, x, y, budget)
                rows.append({**row, "depth": depth, "width": width})
                log(_progress(row))
    digits = digits_network(digits_batch)
    rows.append(time_network(*digits, 2 * budget, alternatives=True, laplax=laplax))
    log(_progress(rows[-1]))
    return rows


def _progress(row: dict) -> str:
    ratios = ", ".join(f"{n} {row[f'{n}_over_step']:.2f}" for n in FUNCTIONS)
    return f"{row['network']} batch {row['batch']}: step {row['step_ms']:.3g} ms; ×step: {ratios}"


def markdown(rows: list[dict]) -> str:
    """The tables of docs/performance.md: ratios to a step, then the digits alternatives."""
    lines = [
        "| network | batch | step ms | " + " | ".join(FUNCTIONS) + " |",
        "|---|---|---|" + "---|" * len(FUNCTIONS),
    ]
    for r in rows:
        ratios = " | ".join(f"{r[f'{n}_over_step']:.2f}×" for n in FUNCTIONS)
        lines.append(f"| {r['network']} | {r['batch']} | {r['step_ms']:.3g} | {ratios} |")
    digits = rows[-1]
    others = [n for n in ("vmap_grad_squared", "jacrev_hessian", "vmap_jacrev", "laplax")
              if f"{n}_ms" in digits]  # fmt: skip
    if others:
        lines += ["", "| alternative | ms | jaxbp ms | × jaxbp | max rel. difference |"]
        lines.append("|---|---|---|---|---|")
        for n in others:
            lines.append(
                f"| {n} | {digits[f'{n}_ms']:.4g} | {digits[f'{n}_jaxbp_ms']:.3g} | "
                f"{digits[f'{n}_over_jaxbp']:.0f}× | {digits[f'{n}_error']:.1e} |"
            )
    return "\n".join(lines)


def targets(rows: list[dict]) -> dict[str, bool]:
    """Whether each target of the module docstring is met."""
    digits, outputs = rows[-1], 10
    met = {
        f"{n} <= {t}x step": all(r[f"{n}_over_step"] <= t for r in rows) for n, t in TARGETS.items()
    }
    met["diag_ggn <= 3x step (digits)"] = digits["diag_ggn_over_step"] <= DIGITS_GGN_TARGET
    met["diag_ggn <= 11x step (grid)"] = all(
        r["diag_ggn_over_step"] <= outputs + 1 for r in rows[:-1]
    )
    for n in ("vmap_grad_squared", "jacrev_hessian", "vmap_jacrev", "laplax"):
        if f"{n}_over_jaxbp" in digits:
            met[f"{n} >= 100x jaxbp (digits)"] = digits[f"{n}_over_jaxbp"] >= AUTODIFF_TARGET
    return met


def main(argv: list[str]) -> int:
    del argv
    grid = QUICK_GRID if _QUICK.value else GRID
    budget = min(_BUDGET.value, 1.0) if _QUICK.value else _BUDGET.value
    print(f"bench_curvature: {host.describe()}")
    rows = run(grid, budget, _LAPLAX.value)
    print(markdown(rows))
    met = targets(rows)
    print("\n".join(f"target {name}: {'met' if ok else 'MISSED'}" for name, ok in met.items()))
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            json.dump({"machine": host.describe(), "rows": rows, "targets": met}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
