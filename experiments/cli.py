"""What the experiment scripts share: how they start (`run`), errors as one
``program: ...`` line on stderr, and a quick exit once a run's outputs are closed."""

import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from absl import app

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
