"""Train an MLP with the hand-written backward pass.

    ./launch.sh train --dataset=digits
    ./launch.sh train --dataset=csv --data_path=houses.csv --target_column=price
    ./launch.sh train --workdir=runs/my-run --epochs=60     # resume, or continue a finished run
    ./launch.sh train --flagfile=my_run.flags
    ./launch.sh train --dataset=digits --repeats=8                # 8 seeds in one program
    ./launch.sh train --sweep=learning_rate=1e-3,3e-3,1e-2 --repeats=4   # a 3 x 4 grid

Every run flag is a field of `jaxbp.run.config.Config` (``--help`` shows each default and choice);
flags left unset take the data set's defaults, or, in a workdir that holds a run, that
run's settings. Exit status: 0 done, 1 a fault during the run, 2 bad flags or a workdir
that refuses them, 128 + signal after a clean stop (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from absl import flags

from experiments import cli, compilation_cache, config_flags
from jaxbp.run import config as config_lib
from jaxbp.run import config_checks, loop, stop
from jaxbp.run import outputs as run_outputs
from jaxbp.run import workdir as workdir_lib
from jaxbp.training import parallel

_CONFIG = config_flags.define_config_flags()
flags.adopt_module_key_flags(config_flags)  # --help lists the run settings too
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Outputs; a workdir that holds a run resumes it. Unset: runs/DATASET-TIME."
)
_ALLOW_CHANGES = flags.DEFINE_list(
    "allow_changes",
    [],
    "On resume, optimisation flags that may differ from the stored run's (e.g. learning_rate).",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 in a multi-process run."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, from 0.")
_COORDINATOR_TIMEOUT = flags.DEFINE_integer(
    "coordinator_timeout", 60, "Seconds to wait for the other processes before giving up."
)

_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir",
    compilation_cache.DEFAULT_DIR,
    "JAX's persistent compilation cache: a re-run of the same shapes loads its programs "
    "instead of compiling them. Empty: off.",
)

PROGRAM = "train.py"
fail = cli.failer(PROGRAM)


def start_processes() -> None:
    """Joins a multi-process run when its flags are given (all three, or none).

    Raises:
      ValueError: for an incomplete or inconsistent set, or a coordinator that never answers.
    """
    given = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if all(v is None for v in given):
        return
    if any(v is None for v in given):
        raise ValueError(
            "a multi-process run needs --coordinator_address, --num_processes and "
            "--process_id together."
        )
    if not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
        raise ValueError(
            f"--process_id={_PROCESS_ID.value} must be in [0, --num_processes="
            f"{_NUM_PROCESSES.value})."
        )
    parallel.initialize_distributed(
        _COORDINATOR.value,
        _NUM_PROCESSES.value,
        _PROCESS_ID.value,
        timeout_seconds=_COORDINATOR_TIMEOUT.value,
    )


def resolve_config() -> tuple[config_lib.Config, str]:
    """The config and workdir of the command line (the stored run's config as the base)."""
    workdir = _WORKDIR.value
    stored = None
    if workdir:
        workdir_lib.check_layout(workdir)
        record = workdir_lib.read_run_record(workdir)
        stored = None if record is None else workdir_lib.config_from_record(record)
    config = config_flags.config_from_flags(_CONFIG, stored)
    if not workdir:
        workdir = os.path.join("runs", f"{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    return config, workdir


def main(argv: list[str]) -> int:
    problem = cli.command_line_problem(argv, hint="")
    if problem:
        return fail(problem, 2)
    try:
        config, workdir = resolve_config()
        config_checks.validate(config)
    except config_lib.ConfigError as e:
        return fail(config_flags.flag_message(e), 2)
    except workdir_lib.WorkdirError as e:
        return fail(str(e), 2)
    try:
        start_processes()
    except ValueError as e:
        return fail(str(e), 2)
    except RuntimeError as e:  # the coordinator never answered
        return fail(str(e), 1)
    try:
        compilation_cache.use(_COMPILATION_CACHE_DIR.value)
    except ValueError as e:
        if flags.FLAGS["compilation_cache_dir"].present:
            return fail(f"--compilation_cache_dir={_COMPILATION_CACHE_DIR.value}: {e}", 2)
        # The default folder is a convenience: without it the run compiles, as it would cold.
        print(f"{PROGRAM}: compilation cache off: {e}", file=sys.stderr)
    if parallel.is_primary():
        print(f"jaxbp train: workdir {workdir}", flush=True)
    try:
        summary = loop.train_and_evaluate(
            config, workdir, allow_changes=tuple(_ALLOW_CHANGES.value)
        )
    except config_lib.ConfigError as e:
        return fail(config_flags.flag_message(e), 2)
    except (workdir_lib.ResumeConflictError, workdir_lib.WorkdirError) as e:
        return fail(config_flags.to_flag_words(str(e)), 2)
    except stop.RunInterruptedError as e:
        if parallel.is_primary():
            print(
                f"\n{signal.Signals(e.signum).name}: stopped after epoch {e.summary['epochs']} "
                f"with a checkpoint; summary.json marks the run interrupted. Resume with:\n"
                f"  {e.summary['resume_command']}",
                file=sys.stderr,
            )
        return 128 + e.signum
    except KeyboardInterrupt:
        return fail(
            f"interrupted at once (a second Ctrl-C); the last checkpoint in {workdir} is kept. "
            f"Resume with: ./launch.sh train --workdir={workdir}",
            130,
        )
    except (ValueError, FileNotFoundError, OSError, loop.NonFiniteError) as e:
        return fail(config_flags.to_flag_words(str(e)), 1)
    if parallel.is_primary():
        print_summary(summary, workdir)
    if _NUM_PROCESSES.value is None:  # no other process waits on this one's shutdown
        cli.exit_now(0)
    return 0


def print_summary(summary: dict, workdir: str) -> None:
    """The closing lines: test quality of the best-validation params, time, outputs.

    A set of several members' quality is the mean ± std over its members, followed by the
    table by swept value (also in ``sweep.md``); a single run's is its own.
    """
    members = len(summary["members"]) > 1
    if "test_accuracy" in summary:
        quality = f"test accuracy {100 * summary['test_accuracy']:.2f}%"
        if members:
            quality += f" ± {100 * summary['test_accuracy_std']:.2f}%"
    else:
        quality = f"test R² {summary['test_r2']:.4f}"
        if members:
            quality += f" ± {summary['test_r2_std']:.4f}"
    if members:
        best = (
            f"mean of {summary['num_members']} members' best-validation params, "
            f"{summary['num_diverged']} diverged"
        )
    else:
        best = f"best val loss at epoch {summary['best_epoch']} of {summary['epochs']}"
    spent = ""
    if "privacy" in summary:  # a DP-SGD run: the ε it spent (a set: its largest)
        record = summary["privacy"]
        spent = (
            f", ε {record['epsilon']:.3g} at δ {record['delta']:g} ({record['accountant']}, "
            f"σ {record['noise_multiplier']:.3g})"
        )
    outputs = "summary.json, metrics.jsonl, curves.png, tensorboard/, checkpoints/, best/"
    if members:
        outputs = "summary.json, sweep.md, " + outputs.removeprefix("summary.json, ")
    print(
        f"\n{quality}, test loss {summary['test_loss']:.4f}{spent} ({best}; {summary['status']}; "
        f"{summary['steps']} steps in {summary['seconds']:.2f} s + "
        f"{summary['compile_seconds']:.1f} s compiling; {summary['num_devices']} device(s)).\n"
        f"Outputs in {workdir}: {outputs}"
    )
    if members:
        print("\n" + run_outputs.sweep_table(summary), end="")


if __name__ == "__main__":
    cli.run(main)
