"""The benchmark's settings, one field a flag with its default and reason, and a grid point."""

import dataclasses
import os
from typing import Any


def _field(default: Any, reason: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": reason})


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to run; `experiments/benchmark.py` makes a flag of every field."""

    depths: tuple[int, ...] = _field((1, 2, 4, 8), "Hidden layers of the grid's networks.")
    widths: tuple[int, ...] = _field((32, 256, 1024, 2048), "Widths: dispatch- to FLOP-bound.")
    batch_sizes: tuple[int, ...] = _field((1, 32, 256, 1024), "Rows a step (1: matrix-vector).")
    activations: tuple[str, ...] = _field(("tanh",), "Hidden activations (the run's tanh).")
    dtypes: tuple[str, ...] = _field(("float32",), "float32, float64 or bfloat16.")
    repeats: int = _field(5, "Fewest rounds of the gradient comparison.")
    point_budget: float = _field(8.0, "Seconds of rounds a point: cheap ones get more rounds.")
    epoch_steps: int = _field(2, "Steps of the scan-against-loop epoch.")
    per_example_max_mib: int = _field(2500, "Skip vmap(grad) where its B gradients exceed this.")
    torch: bool = _field(True, "Time PyTorch too, where it is installed.")
    torch_compile: bool = _field(True, "Time torch.compile too (~15 s compiling a shape).")
    digits: bool = _field(True, "Time the digits epoch: lax.scan against PyTorch eager.")
    digits_budget: float = _field(20.0, "Seconds of rounds of each digits comparison.")
    digits_hidden: tuple[int, ...] = _field((32,), "Hidden widths timed beside the run's.")
    # Training runs epochs back to back, so an epoch is timed after epochs of its own, not
    # right after the other framework's (whose code and data then fill the caches).
    digits_warmup_calls: int = _field(3, "Untimed epochs before each timed one (0: cold).")
    digits_cores: tuple[int, ...] = _field(
        (1, len(os.sched_getaffinity(0))), "CPU counts of the digits runs, a process each."
    )
    alternatives: bool = _field(True, "Time jaxbp's speed choices against the code replaced.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "BenchConfig":
        """The config of flag or JSON values, a list as a tuple of its default's element type;
        keys that are not fields are ignored."""
        kept = {f.name: f.default for f in dataclasses.fields(cls) if f.name in values}
        lists = {
            n: tuple(map(type(d[0]), values[n])) for n, d in kept.items() if isinstance(d, tuple)
        }
        return cls(**{**{n: values[n] for n in kept}, **lists})


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: ``depth`` hidden layers of ``width`` units, ``batch`` rows a step."""

    depth: int
    width: int
    batch: int
    activation: str
    dtype: str
