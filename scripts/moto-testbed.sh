#!/usr/bin/env bash
# A local AWS API endpoint (moto_server: EC2, ECS and S3) and the `aws` CLI, for
# the aws provider's tests and staging through S3 (`storage:`, tests/staging_s3.rs).
# moto only records EC2/ECS API calls: no instance boots, no user-data or
# container runs; its S3 keeps objects (use a bucket of your own; never reset
# moto while others use it).
#
#   scripts/moto-testbed.sh start    install moto[server] and awscli if missing
#                                    (pip), start moto_server on
#                                    127.0.0.1:$MOTO_PORT, wait until it answers
#                                    (idempotent)
#   scripts/moto-testbed.sh stop     stop that moto_server (by its PID file only)
#   scripts/moto-testbed.sh status   print what is there
#
# Clients: --endpoint-url http://127.0.0.1:5000 --region us-east-1 with dummy
# credentials (AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test); the script
# writes them as shell assignments to $MOTO_DIR/env and never touches ~/.aws.
# Reset all of moto's state: curl -X POST http://127.0.0.1:5000/moto-api/reset
#
# From the shared testbeds/moto-setup.sh (README-feasibility.md §3).
set -euo pipefail
ACTION=${1:-start}
MOTO_DIR=${SCALABLE_MOTO_DIR:-/tmp/scalable-moto}
PORT=${MOTO_PORT:-5000}
PIDFILE=$MOTO_DIR/moto.pid
URL=http://127.0.0.1:$PORT

pid_alive() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
answers() { curl -sf -o /dev/null "$URL/moto-api/"; }

# moto_server and aws: on PATH, else where pip put them.
find_tools() {
  local scripts
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
  MOTO_SERVER=$(command -v moto_server || true)
  AWS=$(command -v aws || true)
  [ -n "$MOTO_SERVER" ] || [ ! -x "$scripts/moto_server" ] || MOTO_SERVER=$scripts/moto_server
  [ -n "$AWS" ] || [ ! -x "$scripts/aws" ] || AWS=$scripts/aws
}

# Like .ci/run's kubernetes-validate: pip of the machine's python3. The tests
# run `aws` from PATH, so a CLI pip put elsewhere is linked into /usr/local/bin.
install_missing() {
  find_tools
  local want=()
  [ -n "$MOTO_SERVER" ] || want+=("moto[server,ec2,ecs,s3]")
  [ -n "$AWS" ] || want+=(awscli)
  [ ${#want[@]} -eq 0 ] && return
  echo "installing with pip: ${want[*]}" >&2
  python3 -m pip install -q "${want[@]}"
  command -v pyenv >/dev/null && pyenv rehash 2>/dev/null || true
  find_tools
  if ! command -v aws >/dev/null && [ -n "$AWS" ] && [ -w /usr/local/bin ]; then
    ln -sf "$AWS" /usr/local/bin/aws
  fi
}

start() {
  mkdir -p "$MOTO_DIR"
  install_missing
  if [ -z "$MOTO_SERVER" ] || ! command -v aws >/dev/null; then
    echo "error: moto_server or aws is still missing after pip install (see above)" >&2
    exit 1
  fi
  if ! pid_alive; then
    if answers; then
      echo "error: something else already answers on $URL (not started by this script)" >&2
      exit 1
    fi
    nohup "$MOTO_SERVER" -H 127.0.0.1 -p "$PORT" >"$MOTO_DIR/moto.log" 2>&1 &
    echo $! >"$PIDFILE"
  fi
  for _ in $(seq 150); do answers && break; sleep 0.2; done
  if ! answers; then
    echo "error: moto_server did not answer on $URL; see $MOTO_DIR/moto.log" >&2
    exit 1
  fi
  cat >"$MOTO_DIR/env" <<EOF
AWS_ENDPOINT_URL=$URL
AWS_ACCESS_KEY_ID=test
AWS_SECRET_ACCESS_KEY=test
AWS_DEFAULT_REGION=us-east-1
EOF
  echo "moto ready: $URL (pid $(cat "$PIDFILE")), aws $("$AWS" --version 2>&1 | cut -d' ' -f1), credentials in $MOTO_DIR/env"
}

stop() {
  pid_alive || { rm -f "$PIDFILE"; return 0; }
  local p; p=$(cat "$PIDFILE")
  kill "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then kill -9 "$p" 2>/dev/null || true; fi
  rm -f "$PIDFILE"
}

status() {
  find_tools
  if pid_alive; then echo "moto_server: pid $(cat "$PIDFILE") on $URL"; else echo "moto_server: not running"; fi
  echo "moto_server binary: ${MOTO_SERVER:-missing}"
  echo "aws: ${AWS:-missing}"
}

case "$ACTION" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
