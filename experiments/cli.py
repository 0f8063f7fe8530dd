"""What the experiment scripts share: errors as one ``program: ...`` line on stderr."""

import sys
from collections.abc import Callable


def failer(program: str) -> Callable[[str, int], int]:
    """``fail(message, code)``: prints ``program: message`` on one line, returns ``code``."""

    def fail(message: str, code: int) -> int:
        print(f"{program}: {' '.join(message.split())}", file=sys.stderr)
        return code

    return fail
