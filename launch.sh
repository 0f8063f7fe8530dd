#!/usr/bin/env bash
# jaxbp launcher: sets up .venv on first use, then runs a subcommand.
#
#   ./launch.sh [--platform=cpu|gpu|tpu] [SUBCOMMAND] [FLAGS...]
#
#   (none)      the main job: train the default digits network with the hand-written backward
#   train       experiments/train.py          (absl flags, e.g. --dataset=iris)
#   gradcheck   experiments/gradcheck.py      (gradient-check report)
#   seeds       experiments/seeds.py          (each seed's closed form beside the library)
#   bench       experiments/benchmark.py      (speed and memory benchmark)
#   scaling     experiments/scaling.py        (examples/s against data-parallel devices)
#   test        ruff (lint + format) and the pytest suite
set -euo pipefail
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

cmd="${1:-main}"
[ $# -gt 0 ] && shift
case "$cmd" in
  main) exec "$python" -m experiments.train "$@" ;;
  train) exec "$python" -m experiments.train "$@" ;;
  gradcheck) exec "$python" -m experiments.gradcheck "$@" ;;
  seeds) exec "$python" -m experiments.seeds "$@" ;;
  scaling) exec "$python" -m experiments.scaling "$@" ;;
  bench) exec "$python" -m experiments.benchmark "$@" ;;  # PyTorch too where installed
  test)
    "$venv/bin/ruff" check .
    "$venv/bin/ruff" format --check .
    exec "$python" -m pytest -q -n 2 "$@" ;;
  *) echo "launch.sh: unknown subcommand '$cmd': expected train, gradcheck, seeds, bench, scaling or test." >&2; exit 2 ;;
esac
