#!/usr/bin/env bash
# Several saturation runs of ops/bench/gpu-engine-core.sh in one device call, each with a named set
# of engine options (docs/benchmarks.md, "Full CUDA graphs tried" — session 12):
#   bash ops/bench/gpu-engine-runs.sh spawn:c1-genq-full:full serve:c2-serve-full:full limit:c3:default
# Each argument is VARIANT:NAME:OPTIONS, VARIANT (overhead too: genq at low load) and NAME as
# gpu-engine-core.sh takes them and OPTIONS one of: default (session 9's), full (cudagraph_mode
# FULL, graphs up to 1,024 tokens), fp1024 (FULL_AND_PIECEWISE, vLLM's default mode, graphs up to
# 1,024 tokens), nowaves (default, and genq's worker on vLLM's own scheduler: GENQ_ADMISSION_WAVE=0;
# session 13), holdN (default, the backlog held back up to N engine steps:
# GENQ_ADMISSION_HOLD_STEPS=N), apiN (default, and N API processes instead of 2: GENQ_API_WORKERS=N;
# session 14), nogather (default, but a burst into a refilling batch is not gathered:
# GENQ_ADMISSION_GATHER_MS=0; session 15) and gatherN (gathered up to N ms:
# GENQ_ADMISSION_GATHER_MS=N).
# The call that installs the bundle carries .device/run and .device/model; this script keeps
# their binaries (redis-server, py-spy), device-env.sh and the model in /root, so later calls on
# the same machine carry nothing but the tree.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -d .device/run ]; then
  mkdir -p /root/bin && cp .device/run/bin/* /root/bin/ && cp .device/run/device-env.sh /root/
  rm -rf /root/model && cp -r .device/model /root/model
fi
set +u; source /root/device-env.sh; set -u
export MODEL_DIR=/root/model PY_SPY=/root/bin/py-spy GENQ_REDIS_SERVER=/root/bin/redis-server
base='"load_format": "dummy", "max_num_batched_tokens": 16384, "max_num_seqs": 256'
graphs() { echo "{$base, \"compilation_config\": {\"cudagraph_mode\": \"$1\", \"max_cudagraph_capture_size\": 1024}}"; }
for spec in "$@"; do
  IFS=: read -r variant name options <<<"$spec"
  waves=
  case $options in
    default) ea="{$base}" ;;
    nowaves) ea="{$base}" waves=0 ;;
    hold*) ea="{$base}" ;;  # holdN: GENQ_ADMISSION_HOLD_STEPS=N
    api*) ea="{$base}" ;;   # apiN: GENQ_API_WORKERS=N
    nogather) ea="{$base}" ;;
    gather*) ea="{$base}" ;;  # gatherN: GENQ_ADMISSION_GATHER_MS=N
    full) ea=$(graphs FULL) ;;
    fp1024) ea=$(graphs FULL_AND_PIECEWISE) ;;
    *) echo "OPTIONS: default, nowaves, holdN, apiN, nogather, gatherN, full or fp1024" >&2; exit 2 ;;
  esac
  echo "== $variant $name $ea"
  start=$(date +%s)
  env ENGINE_ARGS="$ea" ${waves:+GENQ_ADMISSION_WAVE=$waves} \
    $([[ $options == hold* ]] && echo "GENQ_ADMISSION_HOLD_STEPS=${options#hold}") \
    $([[ $options == api* ]] && echo "GENQ_API_WORKERS=${options#api}") \
    $([[ $options == nogather ]] && echo "GENQ_ADMISSION_GATHER_MS=0") \
    $([[ $options == gather[0-9]* ]] && echo "GENQ_ADMISSION_GATHER_MS=${options#gather}") bash ops/bench/gpu-engine-core.sh "$variant" "$name" | tail -25
  echo "== $name took $(($(date +%s) - start)) s"
done
