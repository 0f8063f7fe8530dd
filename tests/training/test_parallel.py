"""Tests of jaxbp.training.parallel: data parallelism over forced host devices and over processes.

Devices are forced with XLA_FLAGS before jax is imported, so these runs happen in
subprocesses; each prints one JSON line that the tests read.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from experiment_runs import ROOT, run_experiment

from jaxbp.training import parallel

_FOUR_DEVICES = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from jaxbp.run import config
    from jaxbp.training import members
    from jaxbp.training import parallel
    from jaxbp import training
    from jaxbp.run import restore
    from jaxbp.run import loop
    import jaxbp

    workdir = sys.argv[1]
    out = {"devices": jax.device_count()}
    for n in (1, 4):
        cfg = config.make_config(
        "digits", epochs=2, num_devices=n, checkpoint_interval=2, checkpoint_seconds=0.0
    )
        out[f"summary_{n}"] = loop.train_and_evaluate(cfg, f"{workdir}/d{n}", log=lambda _: None)
        params = restore.restore_trained(f"{workdir}/d{n}")[2]
        out[f"params_{n}"] = [np.asarray(l).tolist() for l in jax.tree.leaves(params)]

    # The compiled step over a 4-device mesh must all-reduce the gradient.
    mesh = parallel.make_mesh(4)
    model = jaxbp.MLP((8, 16, 3), "tanh", "softmax")
    params = parallel.replicate(jaxbp.init_params(jax.random.key(0), model), mesh)
    opt = training.make_optimizer("sgd", 0.1)
    step = training.make_train_step(model, "softmax_cross_entropy", opt)
    epoch = training.make_epoch(step, 8, shard_batch=parallel.shard_batch(mesh))
    y = np.eye(3, dtype=np.float32)[np.arange(32) % 3]
    x, y = parallel.replicate((np.ones((32, 8), np.float32), y), mesh)
    hlo = epoch.lower(params, opt.init(params), x, y, jax.random.PRNGKey(0), 0).compile().as_text()
    out["all_reduce"] = "all-reduce" in hlo
    # Member sets on 1 and on 4 devices: 4 members (one a device), 2 (two devices a member,
    # data parallel inside it) and 3 (no common divisor: data parallel).
    for repeats in (4, 2, 3):
        for n in (1, 4):
            cfg = config.make_config("digits", epochs=2, repeats=repeats, num_devices=n)
            s = loop.train_and_evaluate(cfg, f"{workdir}/m{repeats}-{n}", log=lambda _: None)
            out[f"members_{repeats}_{n}"] = {
                "mesh": s["mesh"],
                "test_loss": [m["test_loss"] for m in s["members"]],
            }

    # Unset num_devices on CPU: a single run takes one device, a member set spreads.
    for repeats in (1, 4):
        cfg = config.make_config("digits", epochs=1, repeats=repeats)
        s = loop.train_and_evaluate(cfg, f"{workdir}/default{repeats}", log=lambda _: None)
        out[f"default_mesh_{repeats}"] = s["mesh"]

    # The member axis is split over the devices: each holds 2 of 8 members, and no number
    # is summed across devices (members do not talk to each other).
    mesh = parallel.make_mesh(4, num_members=8)
    keys = members.member_keys(range(8))
    params = members.init_member_params(keys, model)
    opt_states = members.over_members(opt.init, 8, (0,))(params)
    state = parallel.place_members((params, opt_states, keys), mesh)
    member_epoch = jax.jit(members.make_epoch(
        lambda hparams: step, 8, 8, shard_batch=parallel.shard_batch(mesh),
        spmd_axis_name=parallel.MEMBER_AXIS))
    lowered = member_epoch.lower(state[0], state[1], {}, x, y, state[2], 0)
    new_params = lowered.compile()(state[0], state[1], {}, x, y, state[2], 0)[0]
    out["member_shards"] = sorted({s.data.shape[0] for s in new_params[0]["W"].addressable_shards})
    out["member_float_all_reduces"] = [  # the loop's shared trip count is a pred[] one
        line for line in lowered.compile().as_text().splitlines()
        if "all-reduce(" in line and "f32" in line.split("all-reduce(")[0]
    ]
    try:
        loop.train_and_evaluate(config.make_config("digits", epochs=1, num_devices=4,
                                   batch_size=30), f"{workdir}/bad", log=lambda _: None)
        out["bad_batch"] = None
    except ValueError as e:
        out["bad_batch"] = str(e)
    print(json.dumps(out))
    """
)


def _run_code(code, *args, env_extra):
    env = {**os.environ, "PYTHONPATH": ROOT, **env_extra}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dp")
    result = _run_code(
        _FOUR_DEVICES,
        str(workdir),
        # Four CPU devices, also on a machine with an accelerator.
        env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_four_devices_match_one_device(four_devices):
    assert four_devices["devices"] == 4
    one, four = four_devices["summary_1"], four_devices["summary_4"]
    assert (one["num_devices"], four["num_devices"]) == (1, 4)
    assert abs(four["test_loss"] - one["test_loss"]) <= 1e-5 * abs(one["test_loss"])
    for a, b in zip(four_devices["params_1"], four_devices["params_4"], strict=True):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "repeats, mesh",
    [
        (4, {"members": 4, "data": 1}),
        (2, {"members": 2, "data": 2}),
        (3, {"members": 1, "data": 4}),
    ],
)
def test_members_spread_over_devices_match_one_device(four_devices, repeats, mesh):
    one, four = four_devices[f"members_{repeats}_1"], four_devices[f"members_{repeats}_4"]
    assert one["mesh"] == {"members": 1, "data": 1} and four["mesh"] == mesh
    np.testing.assert_allclose(four["test_loss"], one["test_loss"], rtol=1e-5)


def test_on_cpu_a_single_run_takes_one_device_and_a_member_set_spreads(four_devices):
    assert four_devices["default_mesh_1"] == {"members": 1, "data": 1}
    assert four_devices["default_mesh_4"] == {"members": 4, "data": 1}


def test_members_are_split_over_the_member_axis(four_devices):
    assert four_devices["member_shards"] == [2]
    assert four_devices["member_float_all_reduces"] == []


def test_the_sharded_step_all_reduces(four_devices):
    assert four_devices["all_reduce"] is True


def test_a_batch_that_does_not_divide_fails_clearly(four_devices):
    message = four_devices["bad_batch"]
    assert message is not None and "batch_size=30: does not divide over 4 devices" in message


def test_more_devices_than_exist_fails_clearly():
    with pytest.raises(ValueError, match="num_devices=64, but JAX sees"):
        parallel.make_mesh(64)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_with_one(tmp_path):
    # One CPU device a process, the reference too: two processes cannot share one accelerator.
    cpu = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    single = tmp_path / "single"
    done = run_experiment("train", "--dataset=digits", "--epochs=2", f"--workdir={single}", env=cpu)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(single / "summary.json") as f:
        reference = json.load(f)
    port = _free_port()
    workdir = tmp_path / "multi"
    env = {**os.environ, "PYTHONPATH": ROOT, **cpu}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "experiments.train",
                "--dataset=digits",
                "--epochs=2",
                f"--workdir={workdir}",
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    with open(workdir / "summary.json") as f:
        summary = json.load(f)
    assert summary["num_processes"] == 2 and summary["num_devices"] == 2
    assert abs(summary["test_loss"] - reference["test_loss"]) <= 1e-5 * reference["test_loss"]
    assert "test accuracy" in outputs[0][0] and "test accuracy" not in outputs[1][0]


def test_a_coordinator_that_never_answers_gives_up_in_one_line(tmp_path):
    result = run_experiment(
        "train",
        f"--coordinator_address=127.0.0.1:{_free_port()}",
        "--num_processes=2",
        "--process_id=1",
        "--coordinator_timeout=3",
        f"--workdir={tmp_path / 'w'}",
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "no coordinator answered" in result.stderr and "within 3 s" in result.stderr
    assert "Traceback" not in result.stderr
