#!/usr/bin/env bash
# Several saturation runs of ops/bench/gpu-engine-core.sh in one device call, each with a named set
# of engine options (docs/performance.md, "Full CUDA graphs for mixed steps: refuted"):
#   bash ops/bench/gpu-engine-runs.sh spawn:c1-genq-full:full serve:c2-serve-full:full limit:c3:default
# Each argument is VARIANT:NAME:OPTIONS[:NEED_S], VARIANT (overhead and lowload too: low load)
# and NAME as gpu-engine-core.sh takes them and OPTIONS one of: default (gpu-engine-core.sh's), full
# (cudagraph_mode FULL, graphs up to 1,024 tokens), fp1024 (FULL_AND_PIECEWISE, vLLM's default
# mode, graphs up to 1,024 tokens), nowaves (default, and genq's worker on vLLM's own scheduler:
# GENQ_ADMISSION_WAVE=0), holdN (default, the backlog held back up to N engine steps:
# GENQ_ADMISSION_HOLD_STEPS=N), apiN (default, and N API processes instead of 2:
# GENQ_API_WORKERS=N), nogather (default, but a burst into a refilling batch is not gathered:
# GENQ_ADMISSION_GATHER_MS=0) and gatherN (gathered up to N ms: GENQ_ADMISSION_GATHER_MS=N).
# The call that installs the bundle carries .device/run and .device/model; this script keeps
# their binaries (redis-server, py-spy), device-env.sh and the model in /root, so later calls on
# the same machine carry nothing but the tree (files there that came xz-compressed, NAME.xz,
# are unpacked).
# BUDGET_S: the seconds this script may take (a device call has 600 s at most, its other steps
# included); a run that would not end within it is skipped, with a line that says so, rather
# than cut off: each run is taken to need NEED_S seconds (default 240). A run that fails is
# reported and the next one runs.
#   LEVELS=64,1024 JOBS_PER_SLOT=8 BUDGET_S=$((570 - SECONDS)) bash ops/bench/gpu-engine-runs.sh \
#     limit:h1-limit:default:150 spawn:h2-genq:default:260 lowload:h3-low:default:300
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -d .device/run ]; then
  mkdir -p /root/bin && cp .device/run/bin/* /root/bin/ && cp .device/run/device-env.sh /root/
  rm -rf /root/model && cp -r .device/model /root/model
  for f in /root/bin/*.xz /root/model/*.xz; do [ -e "$f" ] && xz -df "$f"; done
  chmod +x /root/bin/*
fi
began=$(date +%s)
set +u; source /root/device-env.sh; set -u
export MODEL_DIR=/root/model PY_SPY=/root/bin/py-spy GENQ_REDIS_SERVER=/root/bin/redis-server
base='"load_format": "dummy", "max_num_batched_tokens": 16384, "max_num_seqs": 256'
graphs() { echo "{$base, \"compilation_config\": {\"cudagraph_mode\": \"$1\", \"max_cudagraph_capture_size\": 1024}}"; }
for spec in "$@"; do
  IFS=: read -r variant name options need <<<"$spec"
  left=$((${BUDGET_S:-100000} - ($(date +%s) - began)))
  if [ "$left" -lt "${need:-240}" ]; then
    echo "== $name skipped: ${left} s left of BUDGET_S, it needs ${need:-240} s"
    continue
  fi
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
    $([[ $options == gather[0-9]* ]] && echo "GENQ_ADMISSION_GATHER_MS=${options#gather}") \
    bash ops/bench/gpu-engine-core.sh "$variant" "$name" | tail -25 || echo "== $name failed"
  echo "== $name took $(($(date +%s) - start)) s"
done
