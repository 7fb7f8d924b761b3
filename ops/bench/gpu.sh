#!/usr/bin/env bash
# The GPU run of ops/bench/bench.py (docs/performance.md, "GPU: one H200, concurrency sweep").
# Needs vLLM 0.22 + genq's deps on PYTHONPATH (../shared/gpu/GPU.md) and a model directory:
# MODEL_DIR (default .device/model: a Llama-3-8B-shaped config with the SmolLM2 tokenizer;
# load_format=dummy makes up the weights: real compute, random tokens, so every output length is
# forced).
#   SYSTEMS=limit,engine,genq  bash ops/bench/gpu.sh    # a part of it (a device call has 10 min)
#   SYSTEMS=vllm_serve         bash ops/bench/gpu.sh    # the rest, added to the same result
KEEP=${KEEP:-/root/genq-bench}
source "$(dirname "$0")/gpu-env.sh"
export VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-/root/vllm-cache}
ENGINE_ARGS='{"load_format": "dummy", "max_num_batched_tokens": 16384}'
RESUME=(); [ -f "$KEEP/gpu.json" ] && RESUME=(--resume "$KEEP/gpu.json")
python3 ops/bench/bench.py --prompts 1024 --tokens 256 --concurrency 1,4,16,64,256 \
  --mix-prompts 1024 --mix-concurrency 64,256 --mix-prompt-median 256 --mix-output-median 128 \
  --mix-max-prompt 2048 --mix-max-output 1024 \
  --worker-concurrency 256 --seed-requests 4 --engine-args "$ENGINE_ARGS" \
  --systems "${SYSTEMS:-limit,engine,genq,vllm_serve}" "${RESUME[@]}" ${PROFILE:+--profile-worker "$PROFILE"} \
  --logs "$OUT" --out "$OUT/gpu.json" 2>&1 | tee -a "$OUT/bench.txt"
cp "$OUT/gpu.json" "$KEEP/gpu.json"
