# Sourced by the GPU scripts (gpu.sh, gpu-cold-start.sh): the repository root, where results go
# ($OUT comes back from the device; $KEEP survives between calls on a kept machine), the model
# (MODEL_DIR, default .device/model) and the Redis binary carried in the bundle.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-/tmp/genq-gpu}; mkdir -p "$OUT"
KEEP=${KEEP:?set KEEP to a folder that survives between calls}; mkdir -p "$KEEP"
export GENQ_MODEL=${MODEL_DIR:-$PWD/.device/model}
export GENQ_REDIS_SERVER=${GENQ_REDIS_SERVER:-$PWD/.device/run/bin/redis-server}
