#!/usr/bin/env bash
# The seeds' Demeter example, laptop-sized, end to end (examples/demeter-mini):
# checks the manifest for its four targets (local, hpc on Slurm, aws Fargate,
# k8s) and prints what each would submit, starts a broker that owns the local
# target (2 agents serving demeter and postprocess), runs the workflow (5 SSP
# scenarios downscaled by the stand-in model, then a summary), shows stats
# and the summary, and stops everything. Exits 0 when the run succeeded.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bins
export PATH="$PWD/target/debug:$PATH"
cd examples/demeter-mini
STATE=$(mktemp -d /tmp/scalable-demeter.XXXXXX)
rm -rf out summary.csv
cleanup() {
  if [ -n "${BROKER_PID:-}" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  rm -rf "$STATE"
}
trap cleanup EXIT
echo "== scalable validate scalable.yaml (every target)"
scalable validate scalable.yaml
for target in hpc aws k8s; do
  echo "== scalable render scalable.yaml --target $target --tag demeter --commands"
  scalable render scalable.yaml --target "$target" --tag demeter --commands 2>/dev/null | head -n 2
done
echo "== a broker owning the local target (state in $STATE)"
scalable-broker --state-dir "$STATE" --listen 127.0.0.1:0 \
  --manifest scalable.yaml --target local >/dev/null 2>"$STATE/broker.log" &
BROKER_PID=$!
for _ in $(seq 100); do [ -f "$STATE/access.json" ] && break; sleep 0.1; done
export SCALABLE_ACCESS="$STATE/access.json"
echo "== scalable submit --manifest scalable.yaml workflow.yaml --wait"
status=0
scalable submit --manifest scalable.yaml workflow.yaml --wait || status=$?
scalable stats last
if [ "$status" -ne 0 ]; then
  scalable analyze last || true
  echo "demeter-mini: the workflow failed (exit $status)"; exit "$status"
fi
echo "== summary.csv"
cat summary.csv
echo "demeter-mini: ok"
