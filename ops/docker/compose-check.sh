#!/usr/bin/env bash
# genq's Docker deployment, for real: the commands of README "Deploy with Docker" against a real
# Docker engine, then tests/compose from outside the containers, then `down -v` and a look that
# nothing is left. `make compose-test` runs it (CI too).
#
#   1. a Docker engine: the one that answers, else ops/docker/engine.sh starts one (and stops it
#      at the end, also on failure); where none can run here, it says why and skips (exit 0);
#   2. every base image under its real tag (ops/docker/standins.sh: pulled, or a local stand-in);
#   3. `docker compose --profile cpu build` of genq's API and CPU worker images;
#   4. `docker compose --profile cpu up -d --wait`: healthy means the worker is warm;
#   5. tests/compose: the README's curl, a job polled, a signed webhook, Flower, Prometheus, Redis
#      restarted under waiting jobs, a worker crashed mid-job;
#   6. `docker compose --profile cpu down -v`, and no container, network or volume left.
# It ends with a table of how long each step took and the images' sizes.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GENQ_DOCKER_DIR=${GENQ_DOCKER_DIR:-/var/lib/genq-docker}
PYTHON=${PYTHON:-.venv/bin/python}
COMPOSE=(docker compose --profile cpu)
PROJECT=genq # docker-compose.yml's `name:`
TIMES=()

say() { echo "compose-check: $*"; }
took() { printf '%-28s %7.1f s' "$1" "$(awk "BEGIN { print $EPOCHREALTIME - $2 }")"; }

# timed NAME COMMAND...: run it, its output in $LOGS/NAME.log; on failure, the log's tail.
timed() {
  local name=$1 start=$EPOCHREALTIME
  shift
  say "$name"
  if ! "$@" >"$LOGS/$name.log" 2>&1; then
    tail -n 60 "$LOGS/$name.log"
    say "FAILED: $name (the last lines of its log above)"
    return 1
  fi
  TIMES+=("$(took "$name" "$start")")
}

ENGINE_STARTED=
finish() {
  local rc=$?
  if [ "$rc" != 0 ] && docker info >/dev/null 2>&1; then
    say "failed: the stack's last log lines"
    "${COMPOSE[@]}" logs --no-color --tail 40 2>&1 | tail -n 200 || true
  fi
  if docker info >/dev/null 2>&1; then
    docker rm -f genq-hook-receiver >/dev/null 2>&1 || true
    "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  [ -z "$ENGINE_STARTED" ] || bash ops/docker/engine.sh stop || true
  rm -rf "$LOGS"
  exit "$rc"
}

if ! reason=$(bash ops/docker/engine.sh check); then
  say "SKIPPED: no Docker engine can run on this machine: $reason"
  exit 0
fi
LOGS=$(mktemp -d)
trap finish EXIT
docker info >/dev/null 2>&1 || ENGINE_STARTED=1
start=$EPOCHREALTIME
eval "$(bash ops/docker/engine.sh start)"
TIMES+=("$(took "engine up" "$start")")

timed "base images (stand-ins)" bash ops/docker/standins.sh
timed "build genq-api" "${COMPOSE[@]}" build api
timed "build genq-worker-cpu" "${COMPOSE[@]}" build worker-cpu

# What the operator sets in the environment (README): Flower's login, the webhook signing key,
# and the receiver container that the webhook checks use, on the stack's private network.
GENQ_FLOWER_BASIC_AUTH="genq:$(head -c 12 /dev/urandom | base64 | tr -d '/+=')"
GENQ_WEBHOOK_SECRET=$("$PYTHON" -c 'from genq.contract.webhooks import new_secret; print(new_secret())')
export GENQ_FLOWER_BASIC_AUTH GENQ_WEBHOOK_SECRET GENQ_WEBHOOK_ALLOW_HOSTS=genq-hook-receiver

timed "up --wait (to healthy)" "${COMPOSE[@]}" up -d --wait --wait-timeout 900
say "checks (tests/compose; each one's time in pytest's durations)"
start=$EPOCHREALTIME
GENQ_COMPOSE_CHECK=1 "$PYTHON" -m pytest tests/compose -v -p no:cacheprovider --durations=0
TIMES+=("$(took "checks" "$start")")
timed "down -v" "${COMPOSE[@]}" down -v --remove-orphans

mine=label=com.docker.compose.project=$PROJECT
left=$(docker ps -a -q --filter "$mine"; docker network ls -q --filter "$mine"
  docker volume ls -q --filter "$mine")
if [ -n "$left" ]; then
  say "FAILED: down -v left containers, networks or volumes: $left"
  exit 1
fi
say "down -v left no container, network or volume"

bytes() { docker image inspect -f '{{.Size}}' "$1"; }
gb() { awk "BEGIN { printf \"%.2f GB\", ($1) / 1e9 }"; }
say "times"
printf '  %s\n' "${TIMES[@]}"
base=$(bytes python:3.11-slim)
say "image sizes (their base, python:3.11-slim, $(gb "$base") here, may be a local stand-in)"
for image in genq-api genq-worker-cpu; do
  size=$(bytes "$image")
  printf '  %-16s %s, of which genq'"'"'s layers %s\n' "$image" "$(gb "$size")" "$(gb "$size - $base")"
done
