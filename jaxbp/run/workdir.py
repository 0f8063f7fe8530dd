"""A run's workdir: its layout, the lock of the live run, safe writes and the run record.

Layout of ``W``::

    W/run.json         the run's config and a history of every start (written here)
    W/metrics.jsonl    one JSON line per evaluation
    W/summary.json     the final (or interrupted) figures
    W/curves.png       loss and accuracy (or R²) against epochs
    W/eval.json        written by `jaxbp.run.evaluation.evaluate_workdir`
    W/tensorboard/     TensorBoard events
    W/checkpoints/     the latest train states (orbax), one folder per epoch
    W/best/            the parameters of the best validation loss so far
    W/.lock            held by the live run (an OS lock: a killed run leaves none)

Every file is written to a new temporary file and renamed over its name, so a crash never
leaves half a file and a planted symlink is replaced, never followed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from jaxbp.run import config as config_lib

RUN_RECORD = "run.json"
_DIRECTORIES = ("checkpoints", "best", "tensorboard")
_FILES = (
    RUN_RECORD,
    "metrics.jsonl",
    "summary.json",
    "curves.png",
    "eval.json",
    "laplace.json",
    "reliability.png",
    "sweep.md",
    ".lock",
)


def run_entry_at(path: str) -> str | None:
    """The run record or checkpoint folder that writing ``path`` would overwrite, or None.

    ``path`` (links resolved) is refused when it is one of a workdir's own entries (run.json,
    summary.json, metrics.jsonl, checkpoints/, ...) or lies inside one, for any folder that
    holds a run (a ``run.json``): another file in a workdir, such as predictions.csv, is fine.
    """
    path = os.path.realpath(path)
    folder, entry = os.path.dirname(path), os.path.basename(path)
    while True:
        if entry in (*_DIRECTORIES, *_FILES) and os.path.isfile(os.path.join(folder, RUN_RECORD)):
            return os.path.join(folder, entry)
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder, entry = parent, os.path.basename(folder)


class WorkdirError(RuntimeError):
    """The workdir cannot be used as it is (busy, a file in the way, a symlink)."""


class ResumeConflictError(ValueError):
    """The settings differ from those of the run the workdir holds."""


def check_layout(workdir: str) -> None:
    """Refuses a workdir whose entries are not what a run writes there.

    Raises:
      WorkdirError: when the workdir is a file, or one of its entries is a symlink, or a
        file stands where a folder goes (or the reverse).
    """
    if os.path.lexists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"workdir {workdir} is a file, not a folder; choose another workdir.")
    for name in (*_DIRECTORIES, *_FILES):
        path = os.path.join(workdir, name)
        if os.path.islink(path):
            raise WorkdirError(
                f"{path} is a symlink; a run writes only inside its workdir. Remove the link "
                "or choose another workdir."
            )
        folder = name in _DIRECTORIES
        if os.path.exists(path) and os.path.isdir(path) != folder:
            kind = "a file" if folder else "a folder"
            raise WorkdirError(
                f"{path} is {kind} where a run keeps its {name}; move it away or choose "
                "another workdir."
            )


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
    """Holds ``W/.lock`` for the life of the run; a second live run on ``W`` is refused.

    The lock is the operating system's (``flock``), so a killed run never leaves it stuck.

    Raises:
      WorkdirError: when another live process holds the workdir.
    """
    path = os.path.join(workdir, ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        holder = _lock_holder(fd, fcntl.LOCK_EX)
        if holder is not None:
            raise WorkdirError(
                f"workdir {workdir} is in use by a live run (process {holder}); wait for it "
                "to end or choose another workdir."
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def live_run(workdir: str) -> str | None:
    """The process id of a live run holding ``workdir`` (`locked`), or None; writes nothing."""
    try:
        fd = os.open(os.path.join(workdir, ".lock"), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # no lock file: no run has started here
        return None
    try:
        return _lock_holder(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def _lock_holder(fd: int, mode: int) -> str | None:
    """Takes the lock on ``fd`` in ``mode`` without waiting; the holder's pid if it is taken."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    return None


def write_atomic(path: str, content: str | bytes) -> None:
    """Writes ``content`` to a new temporary file beside ``path``, then renames it over.

    The rename replaces a symlink at ``path`` rather than following it.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; outputs are for reading
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def append_lines(path: str, lines: Iterable[str]) -> None:
    """Appends ``lines`` (each given without its newline) to ``path`` in one write, without
    following a symlink there."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "a") as f:
        f.write("".join(line.rstrip("\n") + "\n" for line in lines))


def read_run_record(workdir: str) -> dict[str, Any] | None:
    """``W/run.json`` (``{"config": ..., "starts": [...]}``), or None for a new workdir."""
    path = os.path.join(workdir, RUN_RECORD)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        config_from_record(record)
    except (ValueError, KeyError, TypeError) as e:
        raise WorkdirError(
            f"{path} is damaged ({e}); it names the run this workdir holds. Restore it or "
            "choose another workdir."
        ) from None
    return record


def config_from_record(record: dict[str, Any]) -> config_lib.Config:
    """The `Config` stored in a run record (JSON lists back to tuples)."""
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in record["config"].items()
    }
    return config_lib.Config(**fields)


def record_start(
    workdir: str,
    stored: dict[str, Any] | None,
    config: config_lib.Config,
    time: str,
    start_epoch: int,
) -> dict[str, tuple[Any, Any]]:
    """Writes ``run.json``: the config and the ``stored`` record's starts with this one added.

    Returns:
      The settings changed against the stored run's, ``{name: (old, new)}``.
    """
    changes = {}
    if stored is not None:
        changes = config_changes(config_from_record(stored), config)
    starts = [] if stored is None else list(stored["starts"])
    starts.append(
        {
            "time": time,
            "from_epoch": start_epoch,
            "changes": {k: [a, b] for k, (a, b) in changes.items()},
        }
    )
    record = {"config": dataclasses.asdict(config), "starts": starts}
    write_atomic(os.path.join(workdir, RUN_RECORD), json.dumps(record, indent=2))
    return changes


def config_changes(stored: config_lib.Config, new: config_lib.Config) -> dict[str, tuple[Any, Any]]:
    """``{field: (stored value, new value)}`` for every field that differs."""
    old_fields, new_fields = dataclasses.asdict(stored), dataclasses.asdict(new)
    return {k: (old_fields[k], v) for k, v in new_fields.items() if old_fields[k] != v}


def check_resume(
    stored: config_lib.Config, new: config_lib.Config, allow_changes: Sequence[str] = ()
) -> dict[str, tuple[Any, Any]]:
    """Refuses settings that would mix two runs in one workdir.

    ``"fixed"`` fields (data, network, seeds, batch size) may never change; ``"override"``
    fields (the optimisation's numbers) only when named in ``allow_changes``; ``"free"``
    fields (epochs, intervals, devices) always.

    Returns:
      The changes that are allowed, ``{field: (stored, new)}``.

    Raises:
      ResumeConflictError: naming every change that is not allowed.
    """
    changes = config_changes(stored, new)
    unknown = sorted(set(allow_changes) - set(config_lib.FIELDS))
    if unknown:
        raise ResumeConflictError(f"allow_changes names unknown settings: {', '.join(unknown)}.")
    fixed = {k: v for k, v in changes.items() if config_lib.field_rule(k) == "fixed"}
    guarded = {
        k: v
        for k, v in changes.items()
        if config_lib.field_rule(k) == "override" and k not in allow_changes
    }

    def describe(items: dict[str, tuple[Any, Any]]) -> str:
        return ", ".join(
            f"{k} {config_lib.format_value(a)} -> {config_lib.format_value(b)}"
            for k, (a, b) in items.items()
        )

    if "epochs" in changes and new.dp_target_epsilon is not None:
        raise ResumeConflictError(
            f"the workdir holds a run with other settings ({describe(changes)}); "
            f"dp_target_epsilon={new.dp_target_epsilon:g} calibrated the noise multiplier "
            "for the stored epochs, so other epochs would change it mid-run. Use the stored "
            "epochs, or a new workdir."
        )
    if fixed:
        raise ResumeConflictError(
            f"the workdir holds a run with other settings ({describe(fixed)}); these define "
            "the run, so resuming would mix two runs. Use a new workdir, or the stored values."
        )
    if guarded:
        raise ResumeConflictError(
            f"the workdir holds a run with other settings ({describe(guarded)}); these change "
            f"the optimisation from the checkpoint on. Allow them explicitly with "
            f"allow_changes={','.join(guarded)}, or use the stored values."
        )
    return changes
