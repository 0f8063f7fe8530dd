"""Gradient-check report: hand-written gradients against jax.grad and finite differences.

Each column is the worst ratio |a − b| / (atol + rtol·|b|) over the entries (at most 1
passes); finite differences run in float64 only ("skipped" otherwise).

./launch.sh gradcheck                       # every hidden activation × loss, float64
./launch.sh gradcheck --activation=relu --loss=bce --sizes=4,16,1 --detail
"""

import math
import sys

import jax
from absl import app, flags

_ACTIVATION = flags.DEFINE_list(
    "activation", [], "Hidden activations to check (default: all of them)."
)
_LOSS = flags.DEFINE_list("loss", [], "Losses to check (default: all of them).")
_OUTPUT_ACTIVATION = flags.DEFINE_string(
    "output_activation",
    None,
    "Output activation (default: the one each loss fits, jaxbp.losses.default_output_activation).",
)
_SIZES = flags.DEFINE_list(
    "sizes", ["5", "8", "6", "3"], "Layer widths n0,...,nL: small is enough."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 7, "Rows in the checked batch.")
_PRECISION = flags.DEFINE_enum(
    "precision", "float64", ["float32", "float64"], "float64 also runs finite differences."
)
_USE_BIAS = flags.DEFINE_boolean("use_bias", True, "Layers with b (seed 003) or without (002).")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds params, inputs and targets.")
_DETAIL = flags.DEFINE_boolean("detail", False, "Print the per-leaf table of every check.")


def main(argv: list[str]) -> int:
    del argv
    if _PRECISION.value == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxbp
    from jaxbp.gradient_check import gradcheck, random_targets
    from jaxbp.losses import default_output_activation

    dtype = jnp.dtype(_PRECISION.value)
    hidden = _ACTIVATION.value or list(jaxbp.HIDDEN_ACTIVATIONS)
    losses = _LOSS.value or list(jaxbp.LOSSES)
    sizes = tuple(int(n) for n in _SIZES.value)
    print(
        f"jaxbp gradient check: sizes {sizes}, batch {_BATCH_SIZE.value}, {dtype.name}, "
        f"backend {jax.default_backend()}\n"
    )
    print(
        "| activation | output | loss | hand vs jax.grad | custom_vjp vs jax.grad "
        "| hand vs finite diff | verdict |"
    )
    print("|---|---|---|---|---|---|---|")
    failures = 0
    for activation in hidden:
        for loss in losses:
            output = _OUTPUT_ACTIVATION.value or default_output_activation(loss)
            model = jaxbp.MLP(sizes, activation, output, _USE_BIAS.value)
            k_params, k_x, k_y = jax.random.split(jax.random.key(_SEED.value), 3)
            params = jaxbp.init_params(k_params, model, dtype=dtype)
            x = jax.random.normal(k_x, (_BATCH_SIZE.value, sizes[0]), dtype)
            y = random_targets(k_y, model, loss, _BATCH_SIZE.value, dtype)
            report = gradcheck(model, loss, params, x, y, seed=_SEED.value)
            hand = max(r.vs_autodiff for r in report.rows)
            vjp = max(r.custom_vjp_vs_autodiff for r in report.rows)
            fd = report.max_vs_finite_diff
            verdict = "pass" if report.passed else "FAIL"
            failures += not report.passed
            print(
                f"| {activation} | {output} | {loss} | {hand:.1e} | {vjp:.1e} "
                f"| {'skipped' if math.isnan(fd) else f'{fd:.1e}'} | {verdict} |"
            )
            if _DETAIL.value:
                print("\n" + report.table() + "\n")
    total = len(hidden) * len(losses)
    print(f"\n{total - failures} passed, {failures} failed; {report.tolerance_text()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(app.run(main))
