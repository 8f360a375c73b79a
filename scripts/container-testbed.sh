#!/usr/bin/env bash
# Real podman and a real Docker engine for the agent's container tests, on a
# machine with no registry: both get the image localhost/busybox:local, imported
# from a busybox-static rootfs.
#
#   scripts/container-testbed.sh start    install what is missing, configure podman,
#                                         start dockerd on a private socket, import
#                                         the image into both (idempotent)
#   scripts/container-testbed.sh stop     stop that dockerd (by its PID file only)
#   scripts/container-testbed.sh status   print what is there
#
# Then: podman run ... localhost/busybox:local ...
#       DOCKER_HOST=unix:///tmp/scalable-docker/docker.sock docker run ... localhost/busybox:local ...
#
# Why each piece (verified on this project's machine kind, see the shared
# testbeds/README-feasibility.md §2a/§2b):
#   * podman's default crun refuses cgroups in "hybrid" mode -> runtime = runc;
#   * podman asks for RLIMIT_NOFILE 1048576 and raises RLIMIT_NPROC, which needs
#     CAP_SYS_RESOURCE (missing here) -> default_ulimits at the real hard limits;
#   * netns = none: no CNI bridge on the host (tasks use --network host);
#   * dockerd with --iptables=false --bridge=none and its own data/exec roots, so
#     it touches nothing outside $DOCKER_DIR.
set -euo pipefail
ACTION=${1:-start}
IMAGE=localhost/busybox:local
ROOTFS=${SCALABLE_TESTBED_ROOTFS:-/tmp/scalable-rootfs}
DOCKER_DIR=${SCALABLE_DOCKER_DIR:-/tmp/scalable-docker}
DOCKER_SOCK=$DOCKER_DIR/docker.sock
DROPIN=/etc/containers/containers.conf.d/50-scalable-tests.conf
export DEBIAN_FRONTEND=noninteractive

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: container-testbed.sh needs root (rootful podman, dockerd)" >&2
    exit 2
  fi
}

install_missing() {
  local missing=()
  for p in podman runc busybox-static docker.io; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "installing: ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
  }
}

configure_podman() {
  local nofile; nofile=$(ulimit -Hn)
  [ "$nofile" = unlimited ] && nofile=1048576
  local want
  want=$(cat <<EOF
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=32768:32768"]
netns = "none"
[engine]
runtime = "runc"
EOF
)
  mkdir -p "$(dirname "$DROPIN")"
  if [ "$(cat "$DROPIN" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" > "$DROPIN"
  fi
}

build_rootfs() {
  [ -x "$ROOTFS/bin/busybox" ] && [ -e "$ROOTFS/bin/sh" ] && return
  mkdir -p "$ROOTFS"/{bin,proc,sys,dev,tmp,etc,data,home,mnt}
  cp -f /bin/busybox "$ROOTFS/bin/busybox"
  for c in $("$ROOTFS/bin/busybox" --list); do
    [ "$c" = busybox ] || ln -sf busybox "$ROOTFS/bin/$c"
  done
  touch "$ROOTFS/etc/hosts" "$ROOTFS/etc/resolv.conf"
  echo 'root:x:0:0:root:/root:/bin/sh' > "$ROOTFS/etc/passwd"
  echo 'root:x:0:' > "$ROOTFS/etc/group"
}

start_podman() {
  configure_podman
  if ! podman image exists "$IMAGE"; then
    tar -C "$ROOTFS" -c . | podman import -q - "$IMAGE" >/dev/null
  fi
}

dockerd_running() {
  [ -f "$DOCKER_DIR/dockerd.pid" ] && kill -0 "$(cat "$DOCKER_DIR/dockerd.pid")" 2>/dev/null
}

start_docker() {
  mkdir -p "$DOCKER_DIR"
  if ! dockerd_running; then
    rm -f "$DOCKER_SOCK"
    nohup dockerd --host "unix://$DOCKER_SOCK" --data-root "$DOCKER_DIR/root" \
      --exec-root "$DOCKER_DIR/exec" --pidfile "$DOCKER_DIR/dockerd.pid" \
      --iptables=false --ip6tables=false --bridge=none \
      >"$DOCKER_DIR/dockerd.log" 2>&1 &
  fi
  export DOCKER_HOST=unix://$DOCKER_SOCK
  for _ in $(seq 150); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
  docker info >/dev/null || { echo "error: dockerd did not come up; see $DOCKER_DIR/dockerd.log" >&2; exit 1; }
  if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    tar -C "$ROOTFS" -c . | docker import - "$IMAGE" >/dev/null
  fi
}

start() {
  need_root
  install_missing
  build_rootfs
  start_podman
  start_docker
  echo "container testbed ready: podman (runc) and DOCKER_HOST=unix://$DOCKER_SOCK, image $IMAGE"
}

stop() {
  if dockerd_running; then
    local p; p=$(cat "$DOCKER_DIR/dockerd.pid")
    kill "$p"
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  fi
  echo "dockerd stopped"
}

status() {
  command -v podman >/dev/null && podman image exists "$IMAGE" && echo "podman: $IMAGE" || echo "podman: not ready"
  if dockerd_running; then echo "dockerd: pid $(cat "$DOCKER_DIR/dockerd.pid") on unix://$DOCKER_SOCK"; else echo "dockerd: not running"; fi
}

case "$ACTION" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
