#!/usr/bin/env bash
# A Docker Engine for building and running the images where none is running (a CI machine, a
# fresh VM): Debian's dockerd on a socket, data root and pid file of its own under .cache/engine,
# so it never touches a system engine. The data root stays between runs, so image layers are
# reused when they can be; nothing depends on that.
#   scripts/engine.sh start   starts it unless it runs already; prints DOCKER_HOST=unix://...
#   scripts/engine.sh stop    stops it by its pid file and waits until it is gone
#   scripts/engine.sh env     prints DOCKER_HOST=unix://... (whether or not it runs)
#   scripts/engine.sh install installs what is missing, and nothing else (`make setup-test`)
#   scripts/engine.sh running exits 0 if it runs
# ENGINE_PRIORITY=idle with `start`: the daemon and everything it runs (builds, containers) get
# the CPU and disk only when nothing else wants them (SCHED_IDLE, nice 19, idle I/O class), so
# an image can build beside tests without pushing their deadlines (scripts/test.sh).
# `install` and `start` install what the container tests use when missing (as root, Debian packages): docker.io
# (dockerd 20.10), docker-compose (1.29), podman, runc and catatonit (Kubernetes manifests:
# `podman kube play`), and mmdebstrap (base images, scripts/base-images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$(pwd)/.cache/engine
SOCKET=$DIR/docker.sock
PIDFILE=$DIR/dockerd.pid
export DOCKER_HOST=unix://$SOCKET

install_missing() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  # podman builds a pod's pause image around catatonit.
  command -v catatonit >/dev/null 2>&1 || [ -x /usr/libexec/podman/catatonit ] || missing+=(catatonit)
  command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "engine: install ${missing[*]} (Debian packages) first" >&2
    exit 1
  fi
  echo "engine: installing ${missing[*]} from Debian" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

case "${1:-}" in
  start)
    install_missing
    mkdir -p "$DIR/root" "$DIR/exec"
    if ! running; then
      # A pid file left by a daemon that died would stop the new one from starting.
      rm -f "$PIDFILE" "$SOCKET"
      priority=()
      if [ "${ENGINE_PRIORITY:-}" = idle ]; then
        priority=(chrt --idle 0 nice -n 19 ionice -c 3)
      fi
      "${priority[@]}" dockerd --data-root "$DIR/root" --exec-root "$DIR/exec" --pidfile "$PIDFILE" \
        -H "unix://$SOCKET" </dev/null >"$DIR/dockerd.log" 2>&1 &
      for _ in $(seq 1 120); do
        docker version >/dev/null 2>&1 && break
        sleep 0.5
      done
      if ! docker version >/dev/null 2>&1; then
        echo "engine: dockerd did not come up; its log:" >&2
        tail -n 30 "$DIR/dockerd.log" >&2
        exit 1
      fi
    fi
    echo "DOCKER_HOST=$DOCKER_HOST"
    ;;
  stop)
    if running; then
      pid=$(cat "$PIDFILE")
      kill "$pid"
      for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
      done
    fi
    ;;
  env)
    echo "DOCKER_HOST=$DOCKER_HOST"
    ;;
  running)
    running
    ;;
  install)
    install_missing
    ;;
  *)
    echo "usage: scripts/engine.sh start|stop|env|install|running" >&2
    exit 2
    ;;
esac
