"""JAX's persistent compilation cache for a command-line process (a process setting).

A re-run of the same shapes (the same network, batch and member count) loads its compiled
programs from ``DEFAULT_DIR`` (``$XDG_CACHE_HOME/jaxbp/xla``, else ``~/.cache/jaxbp/xla``)
instead of compiling them again; train.py's ``--compilation_cache_dir`` chooses the folder.
"""

from __future__ import annotations

import os

DEFAULT_DIR = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
    "jaxbp",
    "xla",
)


def check_dir(path: str) -> None:
    """Raises ValueError unless ``path`` is a folder this process can write, or can create.

    JAX itself turns a cache it cannot write into silent recompiles, so the folder is tried
    first: made if missing, then a file written and removed in it.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{path} is a file, not a folder: name a folder, or '' for no cache.")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-check-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ValueError(
            f"{path} cannot be written ({e.strerror}): name a writable folder, or '' for no cache."
        ) from None


def use(path: str) -> None:
    """Turns on JAX's persistent compilation cache in ``path`` for this process (no-op if empty).

    Every program is cached, however quickly it compiled: the small networks here compile
    in well under JAX's default one-second threshold, yet those seconds are most of a short
    run's wall time.

    Raises:
      ValueError: if ``path`` is a file or cannot be written (`check_dir`).
    """
    if not path:
        return
    check_dir(path)
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
