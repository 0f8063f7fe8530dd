"""Training: optimisers, the train step, compiled epochs and their metrics.

The layer above the functional core (`jaxbp.loss_and_grad` and friends) and below the run
layer (`jaxbp.run`): pure functions and jitted programs, no files. One idea a module:

* `optimizers`: optax optimisers and learning-rate schedules by name;
* `step`: one minibatch's gradient and update, ``(params, opt_state, (x, y)) -> ...``;
* `epoch`: the step scanned over an epoch's shuffled minibatches (`shuffle`);
* `metrics`: the loss, and accuracy or R², of a whole split;
* `members`: many models in one program, a leading member axis under `jax.vmap`;
* `parallel`: the device mesh, data and member placement.

The names below are re-exported from the first four.
"""

from jaxbp.training.epoch import (
    batches_per_epoch,
    epoch_key,
    epoch_order,
    make_epoch,
    run_epoch,
    scan_steps,
)
from jaxbp.training.metrics import output_metrics, split_metrics
from jaxbp.training.optimizers import (
    OPTIMIZERS,
    SCHEDULES,
    inject_learning_rate,
    learning_rate_of,
    make_optimizer,
    make_schedule,
)
from jaxbp.training.step import Batch, StepFn, make_loss_and_grad, make_train_step

__all__ = (
    "OPTIMIZERS",
    "SCHEDULES",
    "Batch",
    "StepFn",
    "batches_per_epoch",
    "epoch_key",
    "epoch_order",
    "inject_learning_rate",
    "learning_rate_of",
    "make_epoch",
    "make_loss_and_grad",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "output_metrics",
    "run_epoch",
    "scan_steps",
    "split_metrics",
)
