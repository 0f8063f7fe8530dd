"""Using a trained workdir: its network loaded, and predictions for new rows.

The contract, stated once: everything here starts from a workdir that
`jaxbp.run.loop.train_and_evaluate` wrote, and uses the parameters
`jaxbp.run.restore.restore_trained` reads (the best-validation ones, or the latest state's when
no evaluation was made) in the run's precision. New rows are *raw*: ``x_raw: (n, d)`` in the
units of the data file (for MNIST and Fashion-MNIST, pixels / 255, as `jaxbp.data` reads
them), columns in the run's ``feature_names`` order (`jaxbp.data.files.read_features` reads them
so). They are standardised with the statistics the checkpoint stores, exactly as the
training data were, ``x = (x_raw − x_mean) / x_scale``, and the outputs come back in the
data's units: class names, or values ``ŷ · y_scale + y_mean``.

* `load_trained`: the trained network, its parameters and preprocessing, as a `TrainedModel`.
* `predict_rows`: labels or values, and class probabilities, for new rows.

Every workdir holds a member set, M ≥ 1 (a single run: M = 1; ``repeats`` or ``sweep``: more),
its params stacked ``(M, ...)``. Its predictions are the *ensemble*'s: the members' outputs ŷ
averaged (probabilities for classes, values for regression; for M = 1 the run's own),
diverged members left out (`kept`); `member_predictions` gives each member's. `choose_member`
picks one member instead (by index, or ``"best"``: the lowest best validation loss), and
`one_member` makes it a run of its own.
`jaxbp.run.evaluation` builds on `load_trained` for a workdir's test metrics.

Uses the ``experiments`` extra (orbax-checkpoint).
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxbp import backprop
from jaxbp.mlp import MLP, Params
from jaxbp.run import config as config_lib
from jaxbp.run import workdir as workdir_lib
from jaxbp.run.config import Config
from jaxbp.run.progress import member_label
from jaxbp.run.restore import restore_trained


class NotTrainedError(FileNotFoundError):
    """The workdir does not exist, holds no run, or holds no checkpoint to use."""


class NoSuchMemberError(ValueError):
    """The member asked for is not one of the workdir's (an index out of range, or no best)."""


class UnreadableCheckpointError(RuntimeError):
    """The workdir's checkpoint exists but cannot be read back (damaged, or not jaxbp's)."""


class TrainedModel(NamedTuple):
    """A trained network and what it needs to read raw rows, as `load_trained` reads it.

    Attributes:
      config: the run's settings (``W/run.json``).
      model: the network of the checkpoint.
      params: its members' parameters as numpy arrays in the run's precision, one
        ``{"W": (M, n_k, n_{k-1}), "b": (M, n_k)}`` dict per layer.
      loss: the loss it was trained with.
      preprocessing: ``task``, ``feature_names``, ``class_names``, ``x_mean``, ``x_scale``,
        ``y_mean``, ``y_scale`` (see `jaxbp.run.recipe.Preprocessing`).
      best_epoch: the epoch whose parameters these are (best validation loss) when every
        member's come from the same one (always so for a single run), else None (also when
        they are the latest state's).
      members: the M members in order: ``member``, ``seed``, the swept values,
        ``best_epoch``, ``best_val_loss`` (None before any evaluation) and
        ``diverged_at_epoch``.
    """

    config: Config
    model: MLP
    params: Params
    loss: str
    preprocessing: dict[str, Any]
    best_epoch: int | None
    members: list[dict[str, Any]]


# A live run may replace its newest checkpoint between listing and reading it.
_READ_ATTEMPTS = 3
_READ_RETRY_SECONDS = 0.5


def load_trained(workdir: str) -> TrainedModel:
    """The trained network of ``workdir``, read from its checkpoint alone (no data loaded).

    A workdir whose run is still training can be read: its newest complete checkpoint is
    used, and a checkpoint the run replaces while it is read is listed and read again.

    Raises:
      NotTrainedError: when ``workdir`` does not exist, holds no run or no checkpoint.
      UnreadableCheckpointError: when its checkpoint cannot be read back.
      jaxbp.run.workdir.WorkdirError: when ``workdir`` is a file, or its run record is damaged.
    """
    if not os.path.lexists(workdir):
        raise NotTrainedError(
            f"workdir {workdir} does not exist; give the workdir of a training run."
        )
    workdir_lib.check_layout(workdir)
    record = workdir_lib.read_run_record(workdir)
    if record is None:
        raise NotTrainedError(
            f"{workdir} holds no run ({workdir_lib.RUN_RECORD} is missing); give the workdir "
            "of a training run."
        )
    if not any(_checkpoint_epochs(os.path.join(workdir, f)) for f in ("best", "checkpoints")):
        raise NotTrainedError(
            f"{workdir} holds a run but no checkpoint (best/ and checkpoints/ hold no epoch); "
            "train it until its first checkpoint."
        )
    precision = workdir_lib.config_from_record(record).precision
    with jax.enable_x64(precision == "float64"):
        for attempt in range(_READ_ATTEMPTS):
            try:
                config, model, params, meta = restore_trained(workdir)
                params = jax.tree.map(np.asarray, params)  # float64 outside the x64 context
                break
            except Exception as e:  # a failure to read: a race with a live run, or damage
                holder = workdir_lib.live_run(workdir)
                if holder is not None and attempt + 1 < _READ_ATTEMPTS:
                    time.sleep(_READ_RETRY_SECONDS)  # it replaced the checkpoint: list again
                    continue
                cause = (str(e).strip().splitlines() or [""])[0][:200]
                if holder is not None:
                    raise UnreadableCheckpointError(
                        f"the run in {workdir} is still training (process {holder}) and was "
                        f"writing its checkpoint ({type(e).__name__}: {cause}); try again "
                        "in a moment, or when it has ended."
                    ) from e
                raise UnreadableCheckpointError(
                    f"the checkpoint in {workdir} cannot be read ({type(e).__name__}: {cause}); "
                    "restore the workdir from a copy, or train the run again."
                ) from e
    if "preprocessing" not in meta:
        raise UnreadableCheckpointError(
            f"the checkpoint in {workdir} stores no preprocessing, so raw rows cannot be "
            "read for it; train the run again with this version of jaxbp."
        )
    return TrainedModel(
        config,
        model,
        params,
        meta["network"]["loss"],
        meta["preprocessing"],
        *_members(config, meta),
    )


def _members(config: Config, meta: dict[str, Any]) -> tuple[int | None, list[dict[str, Any]]]:
    """The common best epoch (or None) and each member's entry, from a checkpoint's meta.

    A layout-1 single run's best record holds its ``epoch`` and ``val_loss``, without ``members``.
    """
    grid = config_lib.member_grid(config)
    best = meta.get("best")
    bests = [{"epoch": None}] * len(grid) if best is None else best.get("members", [best])
    diverged = meta.get("diverged") or [None] * len(grid)
    members = [
        {
            "member": m.index,
            "seed": m.seed,
            **m.values,
            "best_epoch": b["epoch"],
            "best_val_loss": b.get("val_loss"),
            "diverged_at_epoch": d,
        }
        for m, b, d in zip(grid, bests, diverged, strict=True)
    ]
    epochs = {b["epoch"] for b in bests}
    return (epochs.pop() if len(epochs) == 1 else None), members


def kept(trained: TrainedModel) -> np.ndarray:
    """``(M,)`` True for the members the ensemble averages: those that did not diverge (a
    member chosen alone, `one_member`, is used even if it diverged: its params are those of
    the epoch before)."""
    live = np.asarray([m["diverged_at_epoch"] is None for m in trained.members])
    return live if live.any() else np.ones_like(live)


def _outputs(trained: TrainedModel, x: np.ndarray) -> np.ndarray:
    """ŷ of every member, ``(M, n, nL)``."""
    model = trained.model
    with jax.enable_x64(trained.config.precision == "float64"):

        def forward(params, x):
            return backprop.apply(model, params, x, backward="autodiff")

        return np.asarray(jax.jit(jax.vmap(forward, in_axes=(0, None)))(trained.params, x))


def predict_rows(
    workdir: str | TrainedModel, x_raw: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """The trained network's predictions for raw rows, in the data's units.

    Args:
      workdir: the workdir of a training run, or its `load_trained` result (to read the
        checkpoint once for several calls).
      x_raw: ``(n, d)`` raw rows, columns in the run's ``feature_names`` order, e.g. from
        ``jaxbp.data.files.read_features(path, trained.preprocessing["feature_names"])``.

    Returns:
      ``(predictions, probabilities)``. Classification: ``predictions`` ``(n,)`` class names
      (``ŷ > 0.5`` for one output unit, else ``argmax ŷ``) and ``probabilities``
      ``(n, num_classes)`` in ``class_names`` order: the softmax outputs, or ``[1 − p, p]``
      for one sigmoid unit; None for an output that is no distribution (identity, several
      sigmoids). Regression: ``predictions`` ``ŷ · y_scale + y_mean``, ``(n,)`` for one
      target or ``(n, num_targets)``, and None.

    Raises:
      ValueError: when ``x_raw`` is not ``(n, d)`` or holds a value that is not finite (also
        once standardised in the run's dtype), or when an output comes out non-finite.
      NotTrainedError, jaxbp.run.workdir.WorkdirError: see `load_trained`.
    """
    trained = workdir if isinstance(workdir, TrainedModel) else load_trained(workdir)
    y_hat = _outputs(trained, standardise(trained, x_raw))
    return _in_data_units(trained, y_hat[kept(trained)].mean(axis=0))  # the ensemble


def _in_data_units(
    trained: TrainedModel, y_hat: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """`predict_rows`'s ``(predictions, probabilities)`` of outputs ``ŷ: (n, nL)``."""
    pre, model = trained.preprocessing, trained.model
    bad = ~np.isfinite(y_hat).all(axis=1)
    if bad.any():  # never hand out NaN predictions as if they were results
        raise ValueError(
            f"{bad.sum()} of {len(bad)} rows give NaN or infinite outputs (first: row "
            f"{np.flatnonzero(bad)[0]}, counting from 0): the run's parameters or those rows' "
            "features are out of range."
        )
    if pre["task"] == "regression":
        values = y_hat * np.asarray(pre["y_scale"]) + np.asarray(pre["y_mean"])
        return (values[:, 0] if values.shape[1] == 1 else values), None
    labels = np.asarray(pre["class_names"])[class_indices(y_hat)]
    probabilities = None
    if y_hat.shape[1] == 1 and model.output_activation == "sigmoid":
        probabilities = np.concatenate([1 - y_hat, y_hat], axis=1)
    elif model.output_activation == "softmax":
        probabilities = y_hat
    return labels, probabilities


def standardise(trained: TrainedModel, x_raw: np.ndarray) -> np.ndarray:
    """Raw rows ``(n, d)`` as the network reads them: ``(x_raw − x_mean) / x_scale`` in the
    run's precision.

    Raises:
      ValueError: when ``x_raw`` is not ``(n, d)`` or holds a value that is not finite.
    """
    pre = trained.preprocessing
    x_raw = np.asarray(x_raw)
    names = pre["feature_names"]
    if x_raw.ndim != 2 or x_raw.shape[1] != len(names):
        raise ValueError(
            f"x_raw has shape {x_raw.shape}, but the network takes raw rows (n, {len(names)}) "
            f"with the features {brief(names)}; read them with "
            "jaxbp.data.files.read_features(path, feature_names)."
        )
    if not np.issubdtype(x_raw.dtype, np.number) or not np.isfinite(x_raw).all():
        raise ValueError(
            "x_raw holds values that are not finite numbers (NaN, inf or non-numeric); the "
            "network predicts nothing sensible for them. Fill or drop those rows."
        )
    dtype = np.dtype(trained.config.precision)
    # The data's own order of operations, so a training row meets the same input bits.
    with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
        x = (x_raw.astype(dtype) - np.asarray(pre["x_mean"]).astype(dtype)) / np.asarray(
            pre["x_scale"]
        ).astype(dtype)
    if not np.isfinite(x).all():  # finite in float64, beyond the range of the run's dtype
        row, column = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(
            f"x_raw row {row}, feature {names[column]!r} is beyond the range of {dtype} once "
            "standardised; the network predicts nothing sensible for it. Fix or drop that row."
        )
    return x


def member_predictions(
    workdir: str | TrainedModel, x_raw: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Each member's `predict_rows`, in member order (diverged members too: their params
    are those of the epoch before they diverged)."""
    trained = workdir if isinstance(workdir, TrainedModel) else load_trained(workdir)
    y_hat = _outputs(trained, standardise(trained, x_raw))
    return [_in_data_units(trained, member) for member in y_hat]


def choose_member(trained: TrainedModel, member: int | str) -> int:
    """The index of the member that ``member`` names: an index K itself, or ``"best"``, the
    member with the lowest best validation loss among those that did not diverge.

    A single run is a set of one: ``0`` and ``"best"`` name it (evaluated or not).

    Raises:
      NoSuchMemberError: for an index outside ``0 .. M − 1`` (naming the range), a name
        other than ``"best"``, or ``"best"`` where no member that did not diverge was
        evaluated.
    """
    num = len(trained.members)
    if member == "best":
        if num == 1:  # the only member
            return 0
        candidates = [
            m
            for m in trained.members
            if m["diverged_at_epoch"] is None and m.get("best_val_loss") is not None
        ]
        if not candidates:
            raise NoSuchMemberError(
                "no member has a best validation loss (each diverged or was never evaluated); "
                f"choose one by index, 0 to {num - 1}."
            )
        return int(min(candidates, key=lambda m: m["best_val_loss"])["member"])
    if isinstance(member, str) or not 0 <= member < num:
        held = "a single run: member 0" if num == 1 else f"{num} members: 0 to {num - 1}"
        raise NoSuchMemberError(
            f"member {member!r} does not name a member; the workdir holds {held}, or 'best' "
            "(the lowest best validation loss)."
        )
    return int(member)


def one_member(trained: TrainedModel, k: int) -> TrainedModel:
    """Member ``k`` alone, a run of one member: its params ``(1, ...)``, entry and best epoch."""
    member = trained.members[k]
    return trained._replace(
        params=jax.tree.map(lambda leaf: leaf[k : k + 1], trained.params),
        members=[member],
        best_epoch=member["best_epoch"],
    )


def select_members(
    trained: TrainedModel, member: int | str | None
) -> tuple[TrainedModel, list[int], str]:
    """The model that predicts for ``member`` (None: the ensemble of a set's kept members;
    an index or ``"best"``: `choose_member`'s, as a single run), the indices of the members
    its predictions come from, and that said in words for the user.

    Raises:
      NoSuchMemberError: see `choose_member`.
    """
    single = len(trained.members) == 1  # the words of a single run
    if member is None and single:
        return trained, [0], "the single run"
    if member is None:
        used = np.flatnonzero(kept(trained)).tolist()
        left = len(kept(trained)) - len(used)
        text = f"the ensemble of members {', '.join(map(str, used))} (their outputs averaged"
        return trained, used, text + (f"; {left} diverged, left out)" if left else ")")
    k = choose_member(trained, member)
    if single:
        return trained, [0], "the single run (member 0)"
    text = f"member {k} ({member_label(config_lib.member_grid(trained.config)[k])})"
    if member == "best":
        text += ", the lowest best validation loss"
    diverged = trained.members[k]["diverged_at_epoch"]
    if diverged is not None:
        text += f", which diverged in epoch {diverged}"
    return one_member(trained, k), [k], text


def class_indices(y: np.ndarray) -> np.ndarray:
    """Class indices of ``(n, 1)`` outputs or targets (``> 0.5``) or ``(n, C)`` ones (argmax)."""
    if y.shape[1] == 1:
        return (y[:, 0] > 0.5).astype(np.int64)
    return np.argmax(y, axis=1)


def _checkpoint_epochs(folder: str) -> list[str]:
    """The epoch folders (numeric names) of a checkpoint folder; orbax's temporaries are not."""
    if not os.path.isdir(folder):
        return []
    return [name for name in os.listdir(folder) if name.isdigit()]


def brief(value: Any, limit: int = 4) -> Any:
    """A list cut to its first ``limit`` items for an error message (floats to 6 digits)."""
    if not isinstance(value, (list, tuple)):
        return value
    items = [float(f"{v:.6g}") if isinstance(v, float) else v for v in value[:limit]]
    return items + ["..."] if len(value) > limit else items
