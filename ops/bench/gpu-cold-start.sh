#!/usr/bin/env bash
# The GPU run of ops/bench/cold_start.py (docs/cold-start.md). Same set-up as ops/bench/gpu.sh:
# vLLM 0.22 + genq's deps on PYTHONPATH (../shared/gpu/GPU.md) and MODEL_DIR (default
# .device/model: a Llama-3-8B-shaped config, weights made up by load_format=dummy).
#   RUNS=bare_cold,genq_cold,genq_cached  bash ops/bench/gpu-cold-start.sh   # a device call has 10 min
#   RUNS=genq_no_warmup,bare_cached       bash ops/bench/gpu-cold-start.sh   # the rest, same result
KEEP=${KEEP:-/root/genq-cold}
source "$(dirname "$0")/gpu-env.sh"
# The result lives in KEEP (merged into run by run) and is copied to OUT however this ends.
trap 'cp "$KEEP/cold-start-gpu.json" "$OUT/" 2>/dev/null || true' EXIT
python3 ops/bench/cold_start.py --runs "${RUNS:-bare_cold,genq_cold,genq_cached,genq_no_warmup,bare_cached}" \
  --cache-root "$KEEP/cache" --worker-concurrency 256 --batch 256 \
  --engine-args '{"load_format": "dummy", "max_num_batched_tokens": 16384}' \
  --logs "$OUT/logs" --out "$KEEP/cold-start-gpu.json" 2>&1 | tee -a "$OUT/cold-start.txt"
