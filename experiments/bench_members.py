"""Members per second: N digits networks trained in one program, against scikit-learn.

    python -m experiments.bench_members
    python -m experiments.bench_members --members=1,8,32 --sklearn_fits=8 --output=m.json

The digits network (64-128-10, tanh, softmax cross-entropy) with the run's recipe
(adam 3e-3 on a cosine schedule, batch 32, 30 epochs, `jaxbp.run.recipe.build_optimizer`) is
trained as a member set of N = 1, 8, 32, 128 (`jaxbp.training.members`, seeds 0..N-1): one compiled
epoch per epoch for all N members, dispatched from Python as the run does, and placed
as the run places them (`jaxbp.training.parallel.default_num_devices`): on a CPU with one
forced host device a core (``XLA_FLAGS=--xla_force_host_platform_device_count=2``, which
``./launch.sh train`` sets), each device trains its share of the members. Reported per
N: the compile seconds, the training seconds of the 30 epochs (best of ``--trials``), the
members per second, the training seconds against one member's, and the matmul FLOP/s
reached (``6·batch·Σ n_in·n_out`` a step) as a fraction of the machine's own: a 1024³
float32 product timed in the same process.

Against it: ``--sklearn_fits`` fits of scikit-learn's ``MLPClassifier`` with the same
network and optimiser (one hidden layer of 128 tanh units, adam 3e-3, batch 32, 30 epochs,
no L2 and no early stop), one after another (seeds 0, 1, ...). scikit-learn's adam has no
cosine schedule (its rate stays 3e-3), which changes no cost. "End to end" is, for jaxbp,
building, compiling, initialising, training and one test evaluation of all members; for
scikit-learn, every fit and its test score. "Training" is the epochs alone. The digits
split, standardised, is the same for both and loaded once outside the timings. Compiling
is cold unless ``--compilation_cache_dir`` names a folder a previous run filled.

Where PyTorch is installed (opt-in: docs/performance.md gives the CPU-wheel command),
``--torch_members`` copies are also trained by its ensembling: `torch.func`'s
``stack_module_state``, ``vmap(grad(loss))`` in eager mode and adam written out over the
stacked tensors; its training seconds are compared with the jaxbp set of the same size.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import compilation_cache
from jaxbp import training
from jaxbp.run import config as config_lib
from jaxbp.run import recipe
from jaxbp.training import members, parallel

_MEMBERS = flags.DEFINE_list("members", ["1", "8", "32", "128"], "Member-set sizes N to time.")
_EPOCHS = flags.DEFINE_integer("epochs", 30, "Epochs per member: the run's digits recipe.")
_SKLEARN_FITS = flags.DEFINE_integer(
    "sklearn_fits", 32, "MLPClassifier fits one after another (0: skip scikit-learn)."
)
_TRIALS = flags.DEFINE_integer(
    "trials", 3, "Timed repetitions of each training; the best is kept (the CPU is shared)."
)
_TORCH_MEMBERS = flags.DEFINE_integer(
    "torch_members",
    32,
    "Copies trained by PyTorch's torch.func ensembling where torch is installed (0: skip).",
)
_OUTPUT = flags.DEFINE_string("output", None, "Also write the figures as JSON here.")
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir",
    "",
    "JAX's persistent compilation cache, as train.py's flag; empty (the default): every "
    "program compiles cold. Run twice with a folder to time a re-run.",
)


def _recipe(epochs: int) -> config_lib.Config:
    return config_lib.make_config("digits", hidden_sizes=(128,), epochs=epochs)


def time_member_set(num_members: int, epochs: int, trials: int) -> dict[str, float]:
    """Compile, train (best of ``trials``) and end-to-end seconds of a set of ``num_members``."""
    config = _recipe(epochs)
    data = recipe.load_data(config)
    started = time.perf_counter()
    model = recipe.build_model(config, data)
    _, loss = config_lib.resolve_head(config, data.task, data.num_outputs)
    steps = training.batches_per_epoch(len(data.x_train), config.batch_size)
    optimizer = recipe.build_optimizer(config, steps)
    step = training.make_train_step(model, loss, optimizer, grad_norm=False)
    # The run's placement: members spread over the devices it would take
    mesh = parallel.make_mesh(parallel.default_num_devices(num_members), num_members=num_members)
    axis = parallel.MEMBER_AXIS
    epoch_fn = jax.jit(
        members.make_epoch(
            lambda hparams: step, config.batch_size, num_members, spmd_axis_name=axis
        ),
        donate_argnums=(0, 1),
    )
    evaluate = jax.jit(
        members.over_members(
            lambda p, x, y: training.split_metrics(model, loss, p, x, y, data.task),
            num_members,
            (0, None, None),
            spmd_axis_name=axis,
        )
    )
    x, y, x_test, y_test = parallel.replicate(
        (data.x_train, data.y_train, data.x_test, data.y_test), mesh
    )
    config = config_lib.make_config("digits", hidden_sizes=(128,), repeats=num_members)

    def fresh_state():
        state = recipe.initial_member_state(config, model, lambda hparams: optimizer)
        params, opt_state, key = parallel.place_members(
            (state.params, state.opt_state, state.key), mesh
        )
        return jax.block_until_ready(state._replace(params=params, opt_state=opt_state, key=key))

    state = fresh_state()
    compile_started = time.perf_counter()
    epoch_one = np.int32(1)  # a host scalar, as the run passes it
    compiled = epoch_fn.lower(
        state.params, state.opt_state, {}, x, y, state.key, epoch_one
    ).compile()
    jax.block_until_ready(evaluate(state.params, x_test, y_test))
    compile_seconds = time.perf_counter() - compile_started

    def run(state) -> tuple[float, dict]:
        t0 = time.perf_counter()
        params, opt_state = state.params, state.opt_state
        for epoch in range(1, epochs + 1):
            params, opt_state, _ = compiled(params, opt_state, {}, x, y, state.key, np.int32(epoch))
        jax.block_until_ready(params)
        seconds = time.perf_counter() - t0
        return seconds, evaluate(params, x_test, y_test)

    seconds, metrics = run(state)
    end_to_end = time.perf_counter() - started  # the first training counts, as a user sees it
    best = seconds
    for _ in range(trials - 1):
        best = min(best, run(fresh_state())[0])
    accuracy = np.asarray(metrics["accuracy"])
    return {
        "members": num_members,
        "devices": mesh.size,
        "compile_seconds": compile_seconds,
        "train_seconds": best,
        "end_to_end_seconds": end_to_end,
        "members_per_second": num_members / best,
        "test_accuracy_mean": float(accuracy.mean()),
        "test_accuracy_std": float(accuracy.std()),
    }


def matmul_flops_per_second(size: int = 1024, trials: int = 20) -> float:
    """The machine's float32 matmul FLOP/s: ``2·size³`` over the best of ``trials`` products."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    product = jax.jit(jnp.matmul)
    jax.block_until_ready(product(a, a))
    best = float("inf")
    for _ in range(trials):
        t0 = time.perf_counter()
        jax.block_until_ready(product(a, a))
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def member_epoch_flops(epochs: int) -> float:
    """Matmul FLOPs of one member's training: ``6·batch·Σ n_in·n_out`` a step (three matmuls
    a layer: forward, ∂L/∂W and δ), times the steps."""
    config = _recipe(epochs)
    data = recipe.load_data(config)
    sizes = (data.x_train.shape[1], *config.hidden_sizes, data.num_outputs)
    pairs = zip(sizes[:-1], sizes[1:], strict=True)
    per_step = 6 * config.batch_size * sum(n_in * n_out for n_in, n_out in pairs)
    return per_step * training.batches_per_epoch(len(data.x_train), config.batch_size) * epochs


def time_sklearn(fits: int, epochs: int) -> dict[str, float]:
    """``fits`` MLPClassifier fits one after another: end-to-end and training seconds."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    config = _recipe(epochs)
    data = recipe.load_data(config)
    labels = np.argmax(data.y_train, axis=1)
    test_labels = np.argmax(data.y_test, axis=1)
    train_seconds, accuracies = 0.0, []
    started = time.perf_counter()
    for seed in range(fits):
        classifier = MLPClassifier(
            hidden_layer_sizes=config.hidden_sizes,
            activation="tanh",
            solver="adam",
            alpha=0.0,
            batch_size=config.batch_size,
            learning_rate_init=config.learning_rate,
            max_iter=epochs,
            shuffle=True,
            random_state=seed,
            tol=0.0,
            n_iter_no_change=epochs + 1,
        )
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # 30 epochs is the recipe
            classifier.fit(data.x_train, labels)
        train_seconds += time.perf_counter() - t0
        accuracies.append(classifier.score(data.x_test, test_labels))
    return {
        "fits": fits,
        "train_seconds": train_seconds,
        "end_to_end_seconds": time.perf_counter() - started,
        "test_accuracy_mean": float(np.mean(accuracies)),
        "test_accuracy_std": float(np.std(accuracies)),
    }


def time_torch_ensemble(num_members: int, epochs: int, threads: int) -> dict[str, float] | None:
    """``num_members`` copies trained together by PyTorch's ensembling, or None without torch.

    `torch.func.stack_module_state` stacks the copies' weights, ``vmap(grad(loss))`` of
    `torch.func.functional_call` gives every member's gradient in one call (eager), and adam
    is written out over the stacked tensors (β = 0.9, 0.999, ε = 1e-8, the rate of the
    run's cosine schedule at each step). Each member draws its own example order, as the
    JAX members do. Timed: the epochs alone, on ``threads`` threads.
    """
    try:
        import torch
        from torch.func import functional_call, grad, stack_module_state, vmap
    except ImportError:
        return None
    torch.set_num_threads(threads)
    config = _recipe(epochs)
    data = recipe.load_data(config)
    steps = training.batches_per_epoch(len(data.x_train), config.batch_size)
    schedule = recipe.build_schedule(config, steps)
    rates = np.asarray(jax.jit(jax.vmap(schedule))(jnp.arange(epochs * steps)), np.float32)
    x = torch.from_numpy(np.asarray(data.x_train, np.float32))
    labels = torch.from_numpy(np.argmax(data.y_train, axis=1))
    torch.manual_seed(0)

    def copy() -> torch.nn.Module:
        n_in, (n_hidden,), n_out = data.x_train.shape[1], config.hidden_sizes, data.num_outputs
        return torch.nn.Sequential(
            torch.nn.Linear(n_in, n_hidden), torch.nn.Tanh(), torch.nn.Linear(n_hidden, n_out)
        )

    base = copy().to("meta")
    params, _ = stack_module_state([copy() for _ in range(num_members)])

    def loss(p, xb, yb):
        return torch.nn.functional.cross_entropy(functional_call(base, p, (xb,)), yb)

    member_grads = vmap(grad(loss))
    first = {k: torch.zeros_like(v) for k, v in params.items()}
    second = {k: torch.zeros_like(v) for k, v in params.items()}
    generator = torch.Generator().manual_seed(0)
    t0, t = time.perf_counter(), 0
    with torch.no_grad():
        for _ in range(epochs):
            order = torch.stack(
                [torch.randperm(len(x), generator=generator) for _ in range(num_members)]
            )[:, : steps * config.batch_size].reshape(num_members, steps, config.batch_size)
            for s in range(steps):
                idx = order[:, s]
                grads = member_grads(params, x[idx], labels[idx])
                t += 1
                for k, g in grads.items():
                    first[k].mul_(0.9).add_(g, alpha=0.1)
                    second[k].mul_(0.999).addcmul_(g, g, value=0.001)
                    step_size = float(rates[t - 1]) / (1 - 0.9**t)
                    denom = (second[k] / (1 - 0.999**t)).sqrt_().add_(1e-8)
                    params[k].addcdiv_(first[k], denom, value=-step_size)
    seconds = time.perf_counter() - t0
    x_test = torch.from_numpy(np.asarray(data.x_test, np.float32))
    logits = vmap(lambda p: functional_call(base, p, (x_test,)))(params)
    accuracy = (logits.argmax(-1).numpy() == np.argmax(data.y_test, axis=1)).mean(axis=1)
    return {
        "members": num_members,
        "threads": threads,
        "train_seconds": seconds,
        "test_accuracy_mean": float(accuracy.mean()),
        "test_accuracy_std": float(accuracy.std()),
    }


def _accuracy(row: dict) -> str:
    return f"{100 * row['test_accuracy_mean']:.2f}±{100 * row['test_accuracy_std']:.2f}%"


def _set_of(rows: list[dict], num_members: int) -> dict | None:
    return next((r for r in rows if r["members"] == num_members), None)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"bench_members.py: unexpected arguments {argv[1:]}.", file=sys.stderr)
        return 2
    compilation_cache.use(_COMPILATION_CACHE_DIR.value)
    sizes = [int(n) for n in _MEMBERS.value]
    epochs, trials = _EPOCHS.value, _TRIALS.value
    print(
        f"digits 64-128-10, adam 3e-3 cosine, batch 32, {epochs} epochs; "
        f"{jax.default_backend()} ({jax.devices()[0].device_kind}), best of {trials}"
    )
    rows = [time_member_set(n, epochs, trials) for n in sizes]
    peak, flops = matmul_flops_per_second(), member_epoch_flops(epochs)
    for r in rows:
        r["gflops"] = r["members"] * flops / r["train_seconds"] / 1e9
        r["fraction_of_matmul_peak"] = r["gflops"] * 1e9 / peak
    one = (_set_of(rows, 1) or {}).get("train_seconds")
    print(f"\nmatmul peak (a 1024^3 float32 product): {peak / 1e9:.1f} GFLOP/s")
    print(
        f"\n{'N':>5} {'devices':>8} {'compile s':>10} {'train s':>9} {'vs one':>7} "
        f"{'members/s':>10} {'GFLOP/s':>8} {'of peak':>8} {'acc':>14}"
    )
    for r in rows:
        ratio = "" if one is None else f"{r['train_seconds'] / one:.1f}x"
        print(
            f"{r['members']:>5} {r['devices']:>8} {r['compile_seconds']:>10.2f} "
            f"{r['train_seconds']:>9.3f} {ratio:>7} {r['members_per_second']:>10.1f} "
            f"{r['gflops']:>8.1f} "
            f"{r['fraction_of_matmul_peak']:>8.0%} {_accuracy(r):>14}"
        )
    result: dict = {"epochs": epochs, "matmul_gflops": peak / 1e9, "member_sets": rows}
    if _SKLEARN_FITS.value:
        fits = _SKLEARN_FITS.value
        sk = result["sklearn"] = time_sklearn(fits, epochs)
        print(
            f"\nscikit-learn MLPClassifier, {fits} fits one after another: "
            f"{sk['end_to_end_seconds']:.2f} s end to end, {sk['train_seconds']:.2f} s training "
            f"(test accuracy {_accuracy(sk)})"
        )
        if (same := _set_of(rows, fits)) is not None:
            result["speedup_end_to_end"] = sk["end_to_end_seconds"] / same["end_to_end_seconds"]
            result["speedup_training"] = sk["train_seconds"] / same["train_seconds"]
            print(
                f"jaxbp, {fits} members in one program: {same['end_to_end_seconds']:.2f} s end "
                f"to end ({result['speedup_end_to_end']:.1f}x faster), "
                f"{same['train_seconds']:.3f} s training ({result['speedup_training']:.1f}x)"
            )
    n = _TORCH_MEMBERS.value
    # torch picks its threads per call; a small step can be slower on all of them
    runs = (
        [time_torch_ensemble(n, epochs, t) for t in sorted({1, os.cpu_count() or 1})] if n else []
    )
    if runs and runs[0] is None:
        print("\nPyTorch is not installed: torch.func ensembling skipped.")
    elif runs:
        tf = result["torch_func"] = min(runs, key=lambda r: r["train_seconds"])
        print(
            f"\nPyTorch torch.func ensembling, {n} copies: {tf['train_seconds']:.2f} s training "
            f"on {tf['threads']} thread(s) (test accuracy {_accuracy(tf)})"
        )
        if (same := _set_of(rows, n)) is not None:
            result["speedup_training_vs_torch"] = tf["train_seconds"] / same["train_seconds"]
            print(
                f"jaxbp, {n} members: {same['train_seconds']:.3f} s training "
                f"({result['speedup_training_vs_torch']:.1f}x faster)"
            )
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
