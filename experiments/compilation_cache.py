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


def use(path: str) -> None:
    """Turns on JAX's persistent compilation cache in ``path`` for this process (no-op if empty).

    Every program is cached, however quickly it compiled: the small networks here compile
    in well under JAX's default one-second threshold, yet those seconds are most of a short
    run's wall time.
    """
    if not path:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
