"""The compiled programs of a training run: every member's checked epoch and evaluation.

`CompiledRun` compiles, once per run and for the placement of the state it is given:

* the epoch of every member (`jaxbp.members.make_epoch`, one program for all M members),
  *checked*: a member whose loss or params stop being finite in it keeps its state of the
  epoch before, and the epoch reports which members stayed finite;
* the evaluation of every member on a split, ``{name: (M,)}``: loss and accuracy or R²
  (`jaxbp.train.evaluate`), and on the training split also ‖∇L‖ and the gradient flow
  (`jaxbp.gradient_flow`) of its first `FLOW_ROWS` rows;
* ``select_best``: the improved members' params taken over their best ones.

The data splits are placed on the mesh once (`jaxbp.parallel`), replicated; the members'
state, swept values and flags are split over the mesh's ``"members"`` axis
(`jaxbp.parallel.place_members`), and the member vmaps name that axis, so each device group
trains and evaluates its own members. The epoch donates its params and optimizer state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxbp import members, parallel, per_example, train
from jaxbp.config import Config
from jaxbp.data import Dataset
from jaxbp.gradient_flow import gradient_flow
from jaxbp.mlp import MLP, Params
from jaxbp.recipe import TrainState

# Rows of the training split that each evaluation's gradient flow (per-layer mean ‖δ_i‖,
# ‖∂L/∂W‖, the noise scale B_simple) is measured on: enough for a stable mean, and few
# enough that it stays a small fraction of an epoch (docs/performance.md).
FLOW_ROWS = 128


class CompiledRun:
    """A run's epoch, evaluations and best selection, compiled for ``state``'s placement.

    Args:
      config: the run's settings (batch size, backward, per-example clipping).
      model, loss_name: the network and its loss.
      dataset: the run's data; its splits are placed on ``mesh``.
      mesh: the devices (`jaxbp.parallel.make_mesh`).
      optimizer_of: one member's optimizer from its swept scalars.
      hparams: every member's swept values, ``{name: (M,)}``.
      num_members: M, the members of the run.
      state: the stacked state the run starts from, placed on ``mesh``.

    ``seconds`` is how long compiling took.
    """

    def __init__(
        self,
        config: Config,
        model: MLP,
        loss_name: str,
        dataset: Dataset,
        mesh: Mesh,
        optimizer_of: Callable[[members.Hyperparams], optax.GradientTransformation],
        hparams: dict[str, np.ndarray],
        num_members: int,
        state: TrainState,
    ):
        num = self.num_members = num_members
        self.mesh = mesh

        def make_step(hparams: members.Hyperparams) -> train.StepFn:
            clip = hparams.get("clip_per_example", config.clip_per_example)
            grad_fn = None
            if clip is not None:  # the δ rows are clipped: hand-written only

                def grad_fn(params, x, y):
                    return per_example.clipped_loss_and_grad(model, loss_name, params, x, y, clip)

            return train.make_train_step(
                model,
                loss_name,
                optimizer_of(hparams),
                backward=config.backward,
                grad_fn=grad_fn,
                grad_norm=False,  # the evaluation records ‖∇L‖ on the whole training split
            )

        epoch_fn = members.make_epoch(
            make_step,
            config.batch_size,
            num,
            num_examples=len(dataset.x_train),
            shard_batch=parallel.shard_batch(mesh),
            spmd_axis_name=parallel.MEMBER_AXIS,
        )

        def checked_epoch(params, opt_state, hparams, x, y, keys, epoch, active):
            """The epoch of every member; a member that is not finite keeps its old state."""
            new_params, new_opt_state, metrics = epoch_fn(
                params, opt_state, hparams, x, y, keys, epoch
            )
            losses = metrics["loss"]  # (M, steps)
            finite = jnp.all(jnp.isfinite(losses), axis=1)
            for leaf in jax.tree.leaves(new_params):
                finite &= jnp.all(jnp.isfinite(leaf.reshape(num, -1)), axis=1)
            keep = active & finite

            def select(new, old):
                return jnp.where(keep.reshape((num,) + (1,) * (new.ndim - 1)), new, old)

            new_params = jax.tree.map(select, new_params, params)
            new_opt_state = jax.tree.map(select, new_opt_state, opt_state)
            return new_params, new_opt_state, losses, finite

        task = dataset.task
        loss_and_grad = train.make_loss_and_grad(model, loss_name, "custom")

        flow_rows = min(len(dataset.x_train), FLOW_ROWS)

        def evaluate(params, x, y, with_grad_norm):
            def one(params, x, y):
                metrics = train.evaluate(model, loss_name, params, x, y, task)
                if with_grad_norm:  # the training split: ‖∇L‖ and the gradient flow
                    metrics["grad_norm"] = optax.tree.norm(loss_and_grad(params, x, y)[1])
                    if flow_rows >= 2:
                        flow = gradient_flow(model, loss_name, params, x[:flow_rows], y[:flow_rows])
                        metrics.update({f"flow/{k}": v for k, v in flow.items()})
                return metrics

            return members.over_members(
                one, num, (0, None, None), spmd_axis_name=parallel.MEMBER_AXIS
            )(params, x, y)

        epoch_jit = jax.jit(checked_epoch, donate_argnums=(0, 1))
        self._evaluate_jit = jax.jit(evaluate, static_argnums=3)
        self.select_best = jax.jit(
            lambda improved, params, best: jax.tree.map(
                lambda p, b: jnp.where(improved.reshape((num,) + (1,) * (p.ndim - 1)), p, b),
                params,
                best,
            )
        )
        self._splits = {
            name: parallel.replicate(
                (getattr(dataset, f"x_{name}"), getattr(dataset, f"y_{name}")), mesh
            )
            for name in ("train", "val", "test")
        }
        self._x_train, self._y_train = parallel.put_training_data(
            (dataset.x_train, dataset.y_train), mesh
        )
        self._hparams = parallel.place_members(hparams, mesh)
        started = time.perf_counter()
        epoch_args = (
            state.params,
            state.opt_state,
            self._hparams,
            self._x_train,
            self._y_train,
            state.key,
            np.int32(1),
            parallel.place_members(np.ones(num, bool), mesh),
        )
        self._epoch = epoch_jit.lower(*epoch_args).compile()
        for name in ("train", "val", "test"):
            self._evaluate_jit(state.params, *self._splits[name], name == "train")
        self.select_best(np.ones(num, bool), state.params, state.params)
        self.seconds = time.perf_counter() - started

    def epoch(
        self, params: Params, opt_state: Any, key: jax.Array, epoch: int, active: np.ndarray
    ) -> tuple[Params, Any, Any, Any]:
        """Epoch ``epoch`` of every member, checked: ``(params, opt_state, losses, finite)``.

        ``losses`` are ``(M, steps)`` and ``finite`` is ``(M,)``, True for the members whose
        loss and params stayed finite. Members not ``active``, and those not finite, keep
        their old state. Donates ``params`` and ``opt_state``.
        """
        return self._epoch(
            params,
            opt_state,
            self._hparams,
            self._x_train,
            self._y_train,
            key,
            np.int32(epoch),  # a host scalar: no program of its own to convert it
            parallel.place_members(active, self.mesh),
        )

    def evaluate(self, params: Params, split: str) -> dict[str, np.ndarray]:
        """Every member's metrics on a split, ``{name: (M,)}``."""
        metrics = self._evaluate_jit(params, *self._splits[split], split == "train")
        return {k: np.asarray(parallel.to_host(v), np.float64) for k, v in metrics.items()}
