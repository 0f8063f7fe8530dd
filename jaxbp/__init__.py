"""jaxbp: hand-derived backpropagation in JAX.

The δ recursions of four backpropagation derivations (docs/derivations.md restates them and
maps them to the code) as a `jax.custom_vjp`, checked against `jax.grad` and finite
differences.
"""

from jaxbp import laplace  # the Laplace posterior's namespace: jaxbp.laplace.fit, ...
from jaxbp.activations import ACTIVATIONS, HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, Activation
from jaxbp.backprop import (
    Residuals,
    apply,
    backward_from_output_delta,
    forward_with_residuals,
    gradients_from_deltas,
    layer_deltas,
    loss_and_grad,
    loss_value,
    output_delta,
)
from jaxbp.curvature import (
    SqrtGGN,
    backpropagated_sqrt_ggn,
    diag_ggn,
    diag_hessian,
    grad_gram,
    kfac_factors,
    layer_inputs,
    sum_grad_squared,
    variance,
)
from jaxbp.gradient_check import GradCheckReport, LeafCheck, gradcheck
from jaxbp.gradient_flow import gradient_flow
from jaxbp.input_checks import check_inputs
from jaxbp.layer_trace import LayerTrace, trace
from jaxbp.losses import LOSSES, Loss
from jaxbp.mlp import (
    MLP,
    Forward,
    Params,
    forward_layers,
    forward_logits,
    forward_outputs,
    init_params,
)
from jaxbp.per_example import (
    clipped_grad_sum,
    clipped_loss_and_grad,
    per_example_grad_norms,
    per_example_grads,
)

__all__ = (
    "ACTIVATIONS",
    "HIDDEN_ACTIVATIONS",
    "LOSSES",
    "MLP",
    "OUTPUT_ACTIVATIONS",
    "Activation",
    "Forward",
    "GradCheckReport",
    "LayerTrace",
    "LeafCheck",
    "Loss",
    "Params",
    "Residuals",
    "SqrtGGN",
    "apply",
    "backpropagated_sqrt_ggn",
    "backward_from_output_delta",
    "check_inputs",
    "clipped_grad_sum",
    "clipped_loss_and_grad",
    "diag_ggn",
    "diag_hessian",
    "forward_outputs",
    "forward_layers",
    "forward_logits",
    "forward_with_residuals",
    "grad_gram",
    "gradcheck",
    "gradient_flow",
    "gradients_from_deltas",
    "init_params",
    "kfac_factors",
    "laplace",
    "layer_deltas",
    "layer_inputs",
    "loss_and_grad",
    "loss_value",
    "output_delta",
    "per_example_grad_norms",
    "per_example_grads",
    "sum_grad_squared",
    "trace",
    "variance",
)
