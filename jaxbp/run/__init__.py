"""The run layer: a training run's config, loop, checkpoints, outputs, workdir and inference.

`jaxbp.run.loop.train_and_evaluate(config, workdir)` is the whole experiment. Around it, one
idea a module:

* `config` (the settings, one declaration each) and `config_checks` (their validation);
* `recipe`: what a run is built from (data, network, optimizer, first state);
  `privacy_plan`: a DP-SGD run's sampling, noise and accounting;
* `loop`: `train_and_evaluate`; `programs`: its compiled epoch and evaluations;
  `progress`: where each member stands (best, diverged); `stop`: SIGINT and SIGTERM;
* `checkpoints`, `outputs`, `workdir`: what a run leaves on disk;
* `restore`, `inference`, `evaluation`: a trained workdir read back, its predictions and
  its test metrics again.

The layer needs the ``experiments`` extra (orbax-checkpoint, tensorboardX, matplotlib,
dp-accounting); without it, importing any of these modules raises `MissingExtraError`, one
line that names the command that installs it. ``import jaxbp`` never imports this layer.
"""

import importlib.util

# Imported where first used; dp_accounting only by a DP run (jaxbp.privacy).
EXTRA = ("orbax.checkpoint", "tensorboardX", "matplotlib", "dp_accounting")
INSTALL = 'pip install "jaxbp[experiments]"'


class MissingExtraError(ImportError):
    """The run layer's optional dependencies are not installed."""


def _installed(name: str) -> bool:
    try:  # find_spec, not import: matplotlib and orbax cost a run their import time
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or blocked in sys.modules
        return False


def check_extra() -> None:
    """Raises `MissingExtraError` naming the missing packages and the install command."""
    missing = [name.split(".")[0] for name in EXTRA if not _installed(name)]
    if missing:
        raise MissingExtraError(
            f"jaxbp.run needs the experiments extra, which is not installed (missing: "
            f"{', '.join(missing)}): {INSTALL}"
        )


check_extra()
