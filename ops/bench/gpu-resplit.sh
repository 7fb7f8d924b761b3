#!/usr/bin/env bash
# After ../shared/gpu/build-bundle.sh: cut the bundle again into parts that each fit one device
# call beside this checkout (a call carries at most 64 MiB, the tracked tree included: 20 MB now,
# the benchmarks' raw results), and put py-spy's binary in .device/run/bin (the bundle leaves out
# bin/; gpu-engine-core.sh runs it as PY_SPY=.device/run/bin/py-spy). Then one call per part,
# in order, carrying .device/pN, and the last one also .device/run and .device/model:
#   call k < N:  mkdir -p /root/parts && mv .device/pK/part.* /root/parts/
#   call N:      mv .device/pN/part.* /root/parts/ && bash .device/run/device-install.sh && ...
# The parts' SHA256 (.device/run/SHA256) is that of the whole, so device-install.sh checks them
# as before. py-spy's wheel comes from build-bundle.sh's cache when py-spy was one of its extras.
# SLIM=1 (~3 min here) first leaves out of the bundle what a dense Llama-shaped model never loads
# (mistral_common's own tokenizer files and pycountry's translations: 57 MB unpacked, 6 MB
# packed), writes py-spy as bin/py-spy.xz and xz-compresses .device/model/tokenizer.json: with
# genq's extras and `vllm serve`'s (~117 MB in all) the bundle then goes in two calls beside a
# 2 MiB tree. ops/bench/gpu-engine-runs.sh unpacks the .xz files on the device.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=.device
CACHE=${CACHE:-/tmp/genq-device-wheels}
MiB=$((1 << 20))

spy=$(ls "$CACHE"/extra/py_spy-*.whl 2>/dev/null | head -1 || true)
if [ -n "$spy" ]; then
  mkdir -p "$DEST/run/bin"
  unzip -p "$spy" '*/scripts/py-spy' >"$DEST/run/bin/py-spy" && chmod +x "$DEST/run/bin/py-spy"
  [ "${SLIM:-0}" = 1 ] && xz -9f "$DEST/run/bin/py-spy"
fi
if [ "${SLIM:-0}" = 1 ] && [ -f "$DEST/model/tokenizer.json" ]; then
  xz -9f "$DEST/model/tokenizer.json"
fi

tree=$(git ls-files -z | xargs -0 cat | wc -c)
last=$(du -cb "$DEST/run" "$DEST/model" 2>/dev/null | tail -1 | cut -f1)
big=$((64 * MiB - tree - 2 * MiB))  # a call that carries a part alone (2 MiB to spare)
room=$((big - last))                 # the last call carries run/ and model/ beside its part
[ "$room" -gt "$MiB" ] || { echo "no room left beside a ${tree}-byte tree" >&2; exit 1; }

whole=$(mktemp)
cat "$DEST"/p*/part.* >"$whole"
[ "$(sha256sum "$whole" | cut -d' ' -f1)" = "$(cat "$DEST/run/SHA256")" ] || {
  echo "the parts in $DEST do not add up to the bundle's SHA256" >&2; exit 1; }
if [ "${SLIM:-0}" = 1 ]; then
  site=$(mktemp -d)
  xz -dc "$whole" | tar -x -C "$site"
  rm -rf "$site/mistral_common/data" "$site/pycountry/locales"
  tar -C "$site" -cf - . | xz -T0 -6 >"$whole"
  rm -rf "$site"
  sha256sum "$whole" | cut -d' ' -f1 >"$DEST/run/SHA256"
fi
size=$(stat -c %s "$whole")
tail_bytes=$((size < room ? size : room))
rm -rf "$DEST"/p[0-9]*
work=$(mktemp -d)
# parts of `big` bytes, then the last `tail_bytes` (names sort in order: device-install cats part.*)
if [ "$size" -gt "$tail_bytes" ]; then
  head -c $((size - tail_bytes)) "$whole" | (cd "$work" && split -b "$big" -d -a 2 - part.)
fi
n=$(ls "$work" | wc -l)
tail -c "$tail_bytes" "$whole" >"$work/part.$(printf %02d "$n")"
i=1
for part in "$work"/part.*; do mkdir -p "$DEST/p$i" && mv "$part" "$DEST/p$i/"; i=$((i + 1)); done
rm -rf "$work" "$whole"
echo "tree $((tree / MiB)) MiB; $((i - 1)) parts, the last to go with run/ and model/:"
du -sh "$DEST"/p* "$DEST/run"
