#!/usr/bin/env bash
# jaxbp launcher: sets up .venv on first use, then runs a subcommand.
#
#   ./launch.sh [--platform=cpu|gpu|tpu] [SUBCOMMAND] [FLAGS...]
#   ./launch.sh --help
set -euo pipefail

usage() {
  cat <<'EOF'
usage: ./launch.sh [--platform=cpu|gpu|tpu] [SUBCOMMAND] [--flag=value ...]

  (none)      the main job: train the default digits network (flags as for train)
  train       train an MLP; a workdir that holds a run resumes it (--help for every flag)
  eval        recompute a trained workdir's test metrics: eval --workdir=W
  predict     label new rows: predict --workdir=W --data_path=F --output=P [--laplace]
  laplace     calibrated probabilities: a trained run's Laplace posterior against its MAP:
              laplace --workdir=W [--structure=kron --subset=last_layer] [--tune=val_nll|marglik]
  gradcheck   the hand-written gradients against jax.grad and finite differences
  derivations each derivation's z, a, δ and gradient beside the library (alias: seeds)
  curvature   a 2-layer net's diagonal GGN and Hessian from the δ recursion beside jax.hessian's
  vanishing   per-layer ‖δ‖ of deep sigmoid/tanh/relu nets on digits (--outdir=D, else runs/)
  bench       speed and memory benchmark (docs/performance.md)
  scaling     examples/s against data-parallel devices
  test        ruff (lint and format), mypy over jaxbp/ and the test suite
  help        this list

The first call sets up .venv (python3 -m venv, pip install -e ".[experiments,dev]").
EOF
}
cd "$(dirname "${BASH_SOURCE[0]}")"

platform="${JAXBP_PLATFORM:-cpu}"
args=()
for arg in "$@"; do
  case "$arg" in
    --platform=*) platform="${arg#--platform=}" ;;
    *) args+=("$arg") ;;
  esac
done
set -- "${args[@]+"${args[@]}"}"

case "$platform" in
  cpu) jax_extra="" ;;
  gpu) jax_extra="jax[cuda12]" ;;
  tpu) jax_extra="jax[tpu]" ;;
  *) echo "launch.sh: unknown --platform=$platform: expected cpu, gpu or tpu." >&2; exit 2 ;;
esac

venv=.venv
python="$venv/bin/python"
# Reinstall when pyproject.toml or the platform changes.
stamp="$venv/.jaxbp-install-$(cksum < pyproject.toml | cut -d' ' -f1)-$platform"
if [ ! -f "$stamp" ]; then
  echo "launch.sh: setting up $venv (platform $platform)..." >&2
  [ -x "$python" ] || python3 -m venv "$venv"
  "$python" -m pip install --quiet --upgrade pip
  "$python" -m pip install --quiet -e ".[experiments,dev]" ${jax_extra:+"$jax_extra"}
  rm -f "$venv"/.jaxbp-install-*
  touch "$stamp"
fi

case "${1:-}" in
  -h | --help | help) usage; exit 0 ;;
esac
if [ "$platform" = cpu ]; then
  export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"  # no probing for accelerators, no TPU notice
fi
if [ "$platform" = gpu ] && [[ "${XLA_FLAGS:-}" != *xla_gpu_deterministic_ops* ]]; then
  # XLA:GPU otherwise picks kernels by timing them in each process and sums with atomics:
  # a resumed run could then differ from an uninterrupted one in the last bits.
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_deterministic_ops=true"
fi

cmd="${1:-main}"
case "$cmd" in
  -*) cmd=main ;;  # bare flags: the main job with them
  *) [ $# -gt 0 ] && shift ;;
esac
if [ "$platform" = cpu ] && { [ "$cmd" = main ] || [ "$cmd" = train ]; } \
    && [[ "${XLA_FLAGS:-}" != *xla_force_host_platform_device_count* ]]; then
  # One host device a core: a member set (--repeats, --sweep) trains each device's members
  # on a core of its own; a single run still takes one device (jaxbp.training.parallel).
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$(nproc)"
fi
case "$cmd" in
  main) exec "$python" -m experiments.train "$@" ;;
  train) exec "$python" -m experiments.train "$@" ;;
  eval) exec "$python" -m experiments.eval "$@" ;;
  predict) exec "$python" -m experiments.predict "$@" ;;
  laplace) exec "$python" -m experiments.laplace "$@" ;;
  gradcheck) exec "$python" -m experiments.gradcheck "$@" ;;
  derivations | seeds) exec "$python" -m experiments.derivations "$@" ;;
  curvature) exec "$python" -m experiments.curvature "$@" ;;
  vanishing) exec "$python" -m experiments.vanishing "$@" ;;
  scaling) exec "$python" -m experiments.scaling "$@" ;;
  bench) exec "$python" -m experiments.benchmark "$@" ;;  # PyTorch too where installed
  test)
    "$venv/bin/ruff" check .
    "$venv/bin/ruff" format --check .
    "$venv/bin/mypy"
    exec "$python" -m pytest -q -n 2 "$@" ;;
  *) echo "launch.sh: unknown subcommand '$cmd'; ./launch.sh --help lists them." >&2; exit 2 ;;
esac
