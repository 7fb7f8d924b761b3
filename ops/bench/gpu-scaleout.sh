#!/usr/bin/env bash
# The 2-GPU run of ops/bench/scaleout.py (docs/performance.md, "GPU: two H200s of one host,
# scaling out"). Needs vLLM 0.22 and genq's deps on PYTHONPATH (../shared/gpu/GPU.md) and
# MODEL_DIR (default .device/model: the Llama-3-8B-shaped config with load_format=dummy). A
# device call has 10 minutes, so in parts; each adds its cases to $KEEP/scaleout.json:
#   CASES=one,two    bash ops/bench/gpu-scaleout.sh
#   CASES=models,tp2 bash ops/bench/gpu-scaleout.sh
#   CASES=one,two,models ROUNDS=2 bash ops/bench/gpu-scaleout.sh   # interleaved repeats
KEEP=${KEEP:-/root/genq-bench}
source "$(dirname "$0")/gpu-env.sh"
export VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-/root/vllm-cache}
# Results go to $KEEP after each case (a call cut short keeps what it measured), and to $OUT.
trap 'cp "$KEEP/scaleout.json" "$OUT/" 2>/dev/null || true' EXIT
python3 ops/bench/scaleout.py --cases "${CASES:-one,two,models,tp2}" --rounds "${ROUNDS:-1}" \
  --prompts 1024 --tokens 256 \
  --concurrency 256 --engine-args '{"load_format": "dummy", "max_num_batched_tokens": 16384}' \
  --logs "$OUT/logs" --out "$KEEP/scaleout.json" 2>&1 | tee -a "$OUT/scaleout.txt"
