#!/usr/bin/env bash
# Every image that docker-compose.yml and the Dockerfiles in ops/ start FROM or run as `image:`,
# present under its own tag: pulled where a registry answers, else built here as a stand-in from
# Debian's packages (ops/docker/standins/), so that the compose file and the Dockerfiles stay
# exactly what a user runs. A tag with no stand-in recipe is an error that names it.
#   ops/docker/standins.sh            # needs a Docker engine (ops/docker/engine.sh start)
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=ops/docker/standins
DIR=${GENQ_DOCKER_DIR:-/var/lib/genq-docker}
DEBIAN_BASE=genq-standin/debian:bookworm

log() { echo "standins: $*" >&2; }

# The external images: FROM lines (an ARG's default where FROM names the ARG) and the `image:` of
# every compose service that has no `build:`.
external_images() {
  local file
  for file in ops/Dockerfile.*; do
    awk '$1 == "ARG" && $2 ~ /=/ { split($2, kv, "="); arg[kv[1]] = kv[2] }
         $1 == "FROM" { name = $2; if (name ~ /^\$\{?/) { gsub(/[${}]/, "", name); name = arg[name] }
                        print name }' "$file"
  done
  docker compose --profile cpu --profile gpu config --format json |
    python3 -c 'import json, sys
for s in json.load(sys.stdin)["services"].values():
    if "build" not in s:
        print(s["image"])'
}

# Debian bookworm (minbase) with the machine's CA certificates: the base of every stand-in.
debian_base() {
  docker image inspect "$DEBIAN_BASE" >/dev/null 2>&1 && return 0
  local root=$DIR/rootfs-bookworm
  if [ ! -x "$root/usr/bin/apt-get" ] || [ ! -f "$root/.complete" ]; then
    if ! command -v debootstrap >/dev/null; then
      log "installing debootstrap (apt)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
    log "debootstrap bookworm (minbase) into $root"
    rm -rf "$root"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$root" \
      http://deb.debian.org/debian >"$DIR/debootstrap.log" 2>&1 ||
      { tail -20 "$DIR/debootstrap.log" >&2; exit 1; }
    touch "$root/.complete"
  fi
  printf '%s\n' 'deb http://deb.debian.org/debian bookworm main' \
    'deb http://deb.debian.org/debian bookworm-updates main' \
    'deb http://deb.debian.org/debian-security bookworm-security main' >"$root/etc/apt/sources.list"
  # A machine that reaches the registries through a TLS-inspecting proxy has that proxy's CA here.
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$root" update-ca-certificates >/dev/null
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/*
  log "docker import $DEBIAN_BASE"
  tar -C "$root" --exclude=./.complete -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - "$DEBIAN_BASE" >/dev/null
}

# Build stand-in $2 (a Dockerfile in ops/docker/standins) as tag $1.
standin() {
  local tag=$1 recipe=$HERE/$2 context
  debian_base
  context=$(mktemp -d)
  mkdir "$context/wheels"
  if [ "$2" = python.Dockerfile ]; then
    # pip's find-links on this machine (local wheels PyPI does not have), as the stand-in's own.
    local links
    links=$(python3 -m pip config get global.find-links 2>/dev/null || echo "${PIP_FIND_LINKS:-}")
    for d in $links; do
      [ -d "$d" ] && find "$d" -maxdepth 1 -name '*.whl' -exec cp --reflink=auto {} "$context/wheels/" \;
    done
  fi
  log "building stand-in $tag from $recipe"
  docker build -t "$tag" -f "$recipe" "$context" >"$DIR/standin.log" 2>&1 ||
    { tail -30 "$DIR/standin.log" >&2; log "stand-in $tag failed to build"; exit 1; }
  rm -rf "$context"
}

for image in $(external_images | sort -u); do
  if docker image inspect "$image" >/dev/null 2>&1; then
    continue
  fi
  if timeout 60 docker pull -q "$image" >/dev/null 2>&1; then
    log "pulled $image"
    continue
  fi
  case "$image" in
    python:3.11-slim) standin "$image" python.Dockerfile ;;
    redis:7) standin "$image" redis.Dockerfile ;;
    prom/prometheus:*) standin "$image" prometheus.Dockerfile ;;
    *)
      log "$image: no registry answers and no stand-in recipe in $HERE"
      exit 1
      ;;
  esac
done
