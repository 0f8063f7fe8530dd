"""Reading a trained run back: its config, network and best parameters.

`restore_trained` starts from a workdir that `jaxbp.run.loop.train_and_evaluate` wrote and
rebuilds what the run trained, in the run's precision: the config from the run record
(`jaxbp.run.workdir`), the network from the checkpoint's own meta, and the params of the newest
best-validation checkpoint (the newest train state's when no evaluation was made). A member
set's params come back stacked ``(M, ...)``. `jaxbp.run.inference` builds on it.

Uses the ``experiments`` extra (orbax-checkpoint).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from jaxbp.mlp import MLP, Params, init_params
from jaxbp.run import workdir as workdir_lib
from jaxbp.run.config import Config
from jaxbp.run.recipe import build_optimizer, initial_member_state, initial_state, member_optimizer
from jaxbp.training import members


def restore_trained(workdir: str) -> tuple[Config, MLP, Params, dict[str, Any]]:
    """The config, network, best parameters and checkpoint meta of a trained workdir.

    Reads the run record and the newest best-validation checkpoint (the newest train
    state's params when no evaluation was made). Loads no data and writes nothing. A
    damaged checkpoint is an error here, not skipped: the params asked for are those the
    summary describes.

    Raises:
      FileNotFoundError: when the workdir holds no run or no checkpoint.
      Exception: what orbax raises for a checkpoint that cannot be read.
    """
    from jaxbp.run.checkpoints import Checkpointer

    record = workdir_lib.read_run_record(workdir)
    if record is None:
        raise FileNotFoundError(
            f"{workdir} holds no run ({workdir_lib.RUN_RECORD} is missing); give the workdir "
            "of a training run."
        )
    config = workdir_lib.config_from_record(record)
    for folder, is_state in (("best", False), ("checkpoints", True)):
        path = os.path.join(workdir, folder)
        if not os.path.isdir(path):
            continue
        checkpointer = Checkpointer(path)
        try:
            epochs = checkpointer.epochs()
            if not epochs:
                continue
            with jax.enable_x64(config.precision == "float64"):
                model, params, meta = _read_params(checkpointer, epochs[-1], config, is_state)
            return config, model, params, meta
        finally:
            checkpointer.close()
    raise FileNotFoundError(f"{workdir} holds no checkpoint; train it first.")


def _read_params(checkpointer, epoch: int, config: Config, is_state: bool):
    """``(model, params, meta)`` of one checkpoint, its template built from its meta."""
    meta = checkpointer.read_meta(epoch)
    network = meta["network"]
    model = MLP(
        tuple(network["sizes"]),
        network["activation"],
        network["output_activation"],
        network["use_bias"],
    )
    like_params = init_params(jax.random.PRNGKey(0), model, dtype=jnp.dtype(config.precision))
    num_members = network.get("members", 1)
    if num_members > 1:  # a member set's checkpoint holds the stacked state
        like_params = members.stack([like_params] * num_members)
    if is_state and num_members > 1:
        like = initial_member_state(config, model, member_optimizer(config, 1))
        params = checkpointer.restore(epoch, like).params
    elif is_state:
        like = initial_state(config, model, build_optimizer(config, 1))._replace(params=like_params)
        params = checkpointer.restore(epoch, like).params
    else:
        params = checkpointer.restore(epoch, {"params": like_params})["params"]
    return model, params, meta
