#!/usr/bin/env bash
# One saturation level (4,096 jobs x 256 forced tokens, 1,024 in flight, engine batching 256) of
# one system, with py-spy on vLLM's engine core process while the level runs: where does the
# engine's time go under genq and under `vllm serve` (docs/performance.md, "The engine core is
# spawned, not forked")?
#   bash ops/bench/gpu-engine-core.sh fork  NAME   # genq, the engine core forked (vLLM's default)
#   bash ops/bench/gpu-engine-core.sh spawn NAME   # genq, VLLM_WORKER_MULTIPROC_METHOD=spawn
#   bash ops/bench/gpu-engine-core.sh serve NAME   # `vllm serve`, not streamed
#   bash ops/bench/gpu-engine-core.sh limit NAME   # the offline engine limit
#   bash ops/bench/gpu-engine-core.sh overhead NAME  # genq at low load: ops/bench/overhead.py,
#                                                    # plain and with idle cores kept awake
#   bash ops/bench/gpu-engine-core.sh lowload NAME   # low load, each system beside the others:
#       the engine alone (AsyncLLM), genq and `vllm serve` (not streamed), one job in flight,
#       200 jobs x 16 forced tokens, back to back and 20 ms apart (bench.py --think-ms 0,20)
# Writes $OUT/NAME.json, NAME.txt and NAME-core-profile.txt (py-spy raw, --idle: waiting shows).
# PY_SPY: the py-spy binary (default: on PATH). ENGINE_ARGS: the engine's options, the same for
# every system (default below: dummy weights, batches of 256). RAMP_S: bench.py's --ramp-s (the
# first 1,024 requests sent evenly over that many seconds, not at once). LEVELS: the in-flight
# levels of fork, spawn and serve, one after another on the same server (default 1024; e.g.
# 64,1024: 64 in flight first); JOBS_PER_SLOT: jobs per level, c x this (default 4; at 1,024 the
# 4,096 prompts cap it). LOWLOAD_SYSTEMS: lowload's systems (default engine,genq,vllm_serve_plain).
KEEP=${KEEP:-/root/genq-bench}
source "$(dirname "$0")/gpu-env.sh"
export VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-/root/vllm-cache} GENQ_API_WORKERS=${GENQ_API_WORKERS:-2}
variant=$1 name=$2
case $variant in
  fork) systems=genq ;;
  spawn) systems=genq; export VLLM_WORKER_MULTIPROC_METHOD=spawn ;;
  serve) systems=vllm_serve_plain ;;
  limit) systems=limit ;;
  overhead) ;;
  lowload)  # every engine core spawned, as genq's and `vllm serve`'s are by default
    systems=${LOWLOAD_SYSTEMS:-engine,genq,vllm_serve_plain}
    export VLLM_WORKER_MULTIPROC_METHOD=spawn ;;
  *) echo "variant: fork, spawn, serve, limit, overhead or lowload" >&2; exit 2 ;;
esac
EA=${ENGINE_ARGS:-'{"load_format": "dummy", "max_num_batched_tokens": 16384, "max_num_seqs": 256}'}
log=$OUT/$name.txt
# A run that fails leaves the end of its servers' logs (bench.py's work folder) in NAME.txt.
trap '[ "${rc:-0}" = 0 ] || for f in "$(ls -td /tmp/genq-bench-* 2>/dev/null | head -1)"/*.log; do
  [ -f "$f" ] && { echo "== $f"; tail -30 "$f"; } >>"$log"; done' EXIT
if [ "$variant" = overhead ]; then
  python3 ops/bench/overhead.py --jobs 200 --tokens 16 --engine-args "$EA" \
    --hold-cpu-latency-us 0 --out "$OUT/$name.json" >"$log" 2>&1
  tail -40 "$log"
  exit
fi
if [ "$variant" = lowload ]; then
  # The worker as for saturation (it holds 1,024, the engine batches 256); one job at a time.
  python3 ops/bench/bench.py --prompts 200 --tokens 16 --concurrency 1 --jobs-per-slot 200 \
    --mix-prompts 0 --think-ms 0,20 --worker-concurrency 1024 --seed-requests 4 --seed-curls 2 \
    --engine-args "$EA" --systems "$systems" --out "$OUT/$name.json" >"$log" 2>&1 || rc=$?
  tail -40 "$log"
  exit "${rc:-0}"
fi
python3 ops/bench/bench.py --prompts 4096 --tokens 256 --concurrency "${LEVELS:-1024}" \
  --jobs-per-slot "${JOBS_PER_SLOT:-4}" --mix-prompts 0 \
  --worker-concurrency 1024 --seed-requests 4 --seed-curls 2 --engine-args "$EA" \
  --systems "$systems" ${RAMP_S:+--ramp-s "$RAMP_S"} --out "$OUT/$name.json" >"$log" 2>&1 &
bench=$!
if [ "$variant" != limit ]; then
  # Once the level runs and its batch is full, 20 s of the engine core's stacks.
  until grep -q "at concurrency 1024" "$log" 2>/dev/null || ! kill -0 $bench 2>/dev/null; do
    sleep 1
  done
  sleep 12
  core=$(pgrep -f "VLLM::EngineCore" | head -1)
  [ -n "$core" ] && "${PY_SPY:-py-spy}" record -p "$core" -r 50 -d 20 --idle --threads \
    --nonblocking -f raw -o "$OUT/$name-core-profile.txt" >/dev/null 2>&1 || true
fi
wait $bench || rc=$?
tail -40 "$log"
exit "${rc:-0}"
