"""Reading a trained run back (its config, network and best parameters), and the checkpoint
layouts: the one a run writes and resumes (`LAYOUT`), and the earlier ones only read.

`restore_trained` starts from a workdir that `jaxbp.run.loop.train_and_evaluate` wrote and
rebuilds what the run trained, in the run's precision: the config from the run record
(`jaxbp.run.workdir`), the network from the checkpoint's own meta, and the params of the newest
best-validation checkpoint (the newest train state's when no evaluation was made), stacked
``(M, ...)`` with M ≥ 1 (a single run: M = 1). It reads the params alone, without a template
of the rest of the state, so the workdirs of every checkpoint layout read back
(a single run's unstacked params of layout 1 get their member axis here);
`refuse_earlier_layout` refuses to resume those workdirs. `jaxbp.run.inference` builds on it.

Uses the ``experiments`` extra (orbax-checkpoint).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.mlp import MLP, Params, init_params
from jaxbp.run import workdir as workdir_lib
from jaxbp.run.config import Config

# The checkpoint layout this version writes, in every checkpoint's meta: 2, every tree
# stacked ``(M, ...)`` and the learning rate in the optimizer state. A checkpoint without it
# is of layout 1: a single run's tree unstacked, an optimizer state without the rate.
LAYOUT = 2


class EarlierLayoutError(workdir_lib.ResumeConflictError):
    """The workdir's checkpoints are of an earlier layout: they cannot be resumed."""


def earlier_layout_message(workdir: str) -> str:
    """The one line that refuses to resume a workdir of an earlier checkpoint layout."""
    return (
        f"{workdir} was written by an earlier checkpoint layout and cannot be resumed (eval, "
        "predict and laplace still read it); train again in a new workdir."
    )


def refuse_earlier_layout(workdir: str) -> None:
    """Refuses, before any work, to resume a workdir whose newest readable train state is of
    an earlier layout than `LAYOUT`.

    Raises:
      EarlierLayoutError: naming the fix (a new workdir).
    """
    path = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(path):
        return
    from jaxbp.run.checkpoints import Checkpointer

    checkpointer = Checkpointer(path)
    try:
        for epoch in reversed(checkpointer.epochs()):
            try:
                meta = checkpointer.read_meta(epoch)
            except Exception:  # damage: the resume sets it aside and names it
                continue
            if meta.get("layout") != LAYOUT:
                raise EarlierLayoutError(earlier_layout_message(workdir))
            return
    finally:
        checkpointer.close()


def restore_trained(workdir: str) -> tuple[Config, MLP, Params, dict[str, Any]]:
    """The config, network, best parameters ``(M, ...)`` and checkpoint meta of a workdir.

    Reads the run record and the newest best-validation checkpoint (the newest train
    state's params when no evaluation was made). Loads no data and writes nothing. A
    damaged checkpoint is an error here, not skipped: the params asked for are those the
    summary describes.

    Raises:
      FileNotFoundError: when the workdir holds no run or no checkpoint.
      ValueError: when the checkpoint's params do not fit its network.
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
    for folder in ("best", "checkpoints"):
        path = os.path.join(workdir, folder)
        if not os.path.isdir(path):
            continue
        checkpointer = Checkpointer(path)
        try:
            epochs = checkpointer.epochs()
            if not epochs:
                continue
            with jax.enable_x64(config.precision == "float64"):
                meta = checkpointer.read_meta(epochs[-1])
                model = _network(meta)
                params = _member_params(checkpointer.restore_params(epochs[-1]), model, meta)
            return config, model, params, meta
        finally:
            checkpointer.close()
    raise FileNotFoundError(f"{workdir} holds no checkpoint; train it first.")


def _network(meta: dict[str, Any]) -> MLP:
    """The network a checkpoint's meta describes."""
    network = meta["network"]
    return MLP(
        tuple(network["sizes"]),
        network["activation"],
        network["output_activation"],
        network["use_bias"],
    )


def _member_params(params: Params, model: MLP, meta: dict[str, Any]) -> Params:
    """A checkpoint's params with the member axis, checked against its network.

    Layout 1 (no ``layout`` in the meta) stored a single run's params without the axis
    (its network meta has no ``members``).
    """
    num_members = meta["network"].get("members", 1)
    if "layout" not in meta and "members" not in meta["network"]:
        params = jax.tree.map(lambda leaf: jnp.expand_dims(leaf, 0), params)
    like = jax.eval_shape(lambda: init_params(jax.random.PRNGKey(0), model))
    want = [(num_members, *leaf.shape) for leaf in jax.tree.leaves(like)]
    got = [tuple(np.shape(leaf)) for leaf in jax.tree.leaves(params)]
    if str(jax.tree.structure(like)) != str(jax.tree.structure(params)) or want != got:
        raise ValueError(
            f"the checkpoint's params {got} do not fit its network {model.sizes} of "
            f"{num_members} member(s) {want}; the checkpoint is not this run's."
        )
    return params
