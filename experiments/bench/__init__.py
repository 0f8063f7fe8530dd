"""The parts of `experiments/benchmark.py`, one job a module.

* `config`: what to run (`BenchConfig`) and one grid point (`Point`);
* `timing`: per-call timing of thunks in interleaved rounds;
* `jax_side`: the JAX network, batch and compiled variants of a point, with their FLOP count,
  matmul count and residual memory;
* `torch_side`: the same network and gradient step in PyTorch, timed at 1 and all threads;
* `digits`: the digits epoch, `lax.scan` against PyTorch eager, one child process per CPU
  count;
* `report`: the markdown tables, the issue's targets, the CSV and the plot.

`experiments/benchmark.py` holds the flags and runs the grid; these modules never read
``FLAGS``.
"""
