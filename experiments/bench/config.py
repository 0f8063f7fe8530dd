"""What a benchmark run measures: its configuration and one point of its grid."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to run; `main` fills it from the flags, tests build a tiny one."""

    depths: tuple[int, ...] = (1, 2, 4, 8)
    widths: tuple[int, ...] = (32, 256, 1024, 2048)
    batch_sizes: tuple[int, ...] = (1, 32, 256, 1024)
    activations: tuple[str, ...] = ("tanh",)
    dtypes: tuple[str, ...] = ("float32",)
    loss: str = "mse"
    num_outputs: int = 10
    repeats: int = 5
    point_budget: float = 8.0
    epoch_steps: int = 2
    per_example_max_mib: int = 2500
    torch: bool = True
    torch_compile: bool = True
    digits: bool = True
    digits_budget: float = 20.0  # seconds of rounds of the digits comparison
    digits_hidden: tuple[int, ...] = (128, 32)  # the trainer's 64-128-10 and the 64-32-10
    # Untimed epochs before each timed one: training runs epochs back to back, so an epoch is
    # timed after one of its own, not right after the other framework's.
    digits_warmup_calls: int = 3
    # CPUs the digits comparison runs on, one child process each: XLA:CPU sizes its thread
    # pool from them once, where PyTorch picks its thread count per call.
    digits_cores: tuple[int, ...] = (1, 2)


@dataclasses.dataclass(frozen=True)
class Point:
    depth: int
    width: int
    batch: int
    activation: str
    dtype: str
