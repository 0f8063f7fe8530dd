"""What the experiment scripts share: how they start (`run`, `command_line_problem`), errors
as one ``program: ...`` line on stderr with their exit status (`failer`, `reading_failure`),
and a quick exit once a run's outputs are closed."""

import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags
from absl import logging as absl_logging

HELP_WORDS = ("--help", "-help", "-h", "-?", "--helpshort")


def run(main: Callable[[list[str]], int]) -> NoReturn:
    """``app.run(main)``, with ``--help`` exiting 0 and a bad ``--flagfile`` refused in one line.

    absl's ``--help`` exits 1, which a script reads as a failure; and a flagfile that is
    missing or binary would reach absl's parser as a traceback. Exit status 2 for the latter,
    as for any bad flag.
    """
    program = os.path.basename(sys.argv[0])
    for arg in sys.argv[1:]:
        if arg == "--":
            break
        if arg.startswith("--flagfile="):
            problem = flagfile_problem(arg.partition("=")[2])
            if problem:
                print(f"{program}: {problem}", file=sys.stderr)
                sys.exit(2)
    if any(arg in HELP_WORDS for arg in sys.argv[1:]):
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
    sys.exit(app.run(main))


def command_line_problem(argv: list[str], *required: flags.FlagHolder, hint: str) -> str | None:
    """What is wrong with a script's command line, stray arguments or a required flag unset
    (``hint`` says what to give), or None. Also quiets absl's INFO lines, where orbax logs
    every save and restore."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    if len(argv) > 1:
        return f"unexpected arguments {argv[1:]}: flags look like --name=value."
    missing = [f"--{holder.name}" for holder in required if not holder.value]
    if missing:
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required: {hint}"
    return None


def reading_failure(error: Exception, member_text: str | None = None) -> tuple[str, int]:
    """The one line and exit status for an error reading a trained workdir: 2 for a workdir
    that holds no trained run or a member it does not have, 1 for a fault (a damaged
    checkpoint, changed data)."""
    from jaxbp.run import inference
    from jaxbp.run import workdir as workdir_lib

    if isinstance(error, inference.NoSuchMemberError):
        return f"--member={member_text}: {error}", 2
    if isinstance(error, (inference.NotTrainedError, workdir_lib.WorkdirError)):
        return str(error), 2
    return f"{type(error).__name__}: {error}", 1


def flagfile_problem(path: str) -> str | None:
    """Why ``--flagfile=path`` cannot be read as a text file of flags, or None."""
    try:
        with open(path, encoding="utf-8") as f:
            f.read()
    except FileNotFoundError:
        return f"--flagfile={path} does not exist; check the path."
    except UnicodeDecodeError:
        return (
            f"--flagfile={path} is not a text file of flags (one --name=value per line); "
            "check the path."
        )
    except OSError as e:
        return f"--flagfile={path} cannot be read ({e.strerror}); check the path."
    return None


def failer(program: str) -> Callable[[str, int], int]:
    """``fail(message, code)``: prints ``program: message`` on one line, returns ``code``."""

    def fail(message: str, code: int) -> int:
        print(f"{program}: {' '.join(message.split())}", file=sys.stderr)
        return code

    return fail


def exit_now(code: int) -> None:
    """Ends the process with ``code`` at once, skipping the interpreter's teardown.

    For a single process whose outputs are all written and closed (checkpoints, metrics,
    TensorBoard, summary.json): tearing down JAX's runtime and every module takes about
    0.3 s, a tenth of a short training run, and writes nothing. The streams and log
    handlers are flushed first.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


MEMBER_HELP = (
    "Which member predicts: K, the member of that index (0 for a single run), or best, the "
    "member with the lowest best validation loss (among those that did not diverge); "
    "unset, the ensemble of a member set's kept members (a single run itself)."
)


def parse_member(text: str | None) -> int | str | None:
    """``--member``'s value: None (unset), ``"best"``, or an index K ≥ 0.

    Raises:
      ValueError: for anything else, naming the values it takes.
    """
    if text is None or text == "best":
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(
        f"--member={text} is neither a member's index (0, 1, ...) nor best; give one of those, "
        "or leave it out for the ensemble."
    )
