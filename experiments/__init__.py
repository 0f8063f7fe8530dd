"""The experiment scripts: thin absl entry points over `jaxbp.run` and the library.

They need the ``experiments`` extra; without it every script stops at once with one line
that names the command that installs it.
"""

import importlib.util

try:
    import jaxbp.run  # checks orbax-checkpoint, tensorboardX and matplotlib
except ImportError as e:  # jaxbp.run.MissingExtraError: one line with the install command
    raise SystemExit(f"experiments: {e}") from None
if importlib.util.find_spec("absl") is None:
    raise SystemExit(f"experiments: absl-py is not installed: {jaxbp.run.INSTALL}")
