#!/usr/bin/env bash
# The GPU run of ops/bench/bench.py, as made on a lent H100 (see docs/benchmarks.md).
# Needs vLLM 0.22 + genq's deps on PYTHONPATH (../shared/gpu/GPU.md) and a model directory:
# MODEL_DIR (default .device/model: a Llama-3-8B-shaped config with the SmolLM2 tokenizer,
# weights made up by vLLM's load_format=dummy: real compute, random tokens).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/genq-gpu-bench}; mkdir -p "$OUT"
export GENQ_MODEL=${MODEL_DIR:-$PWD/.device/model}
export GENQ_REDIS_SERVER=${GENQ_REDIS_SERVER:-$PWD/.device/run/bin/redis-server}
export VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-/tmp/vllm-cache}
ENGINE_ARGS='{"load_format": "dummy", "max_num_batched_tokens": 16384}'
python3 ops/bench/bench.py --prompts 256 --tokens 256 --concurrency 1,16,64,256 \
  --worker-concurrency 256 --seed-requests 4 --engine-args "$ENGINE_ARGS" \
  --logs "$OUT" --out "$OUT/gpu.json" 2>&1 | tee "$OUT/bench.txt"
