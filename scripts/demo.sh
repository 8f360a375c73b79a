#!/usr/bin/env bash
# The main job end to end on the embedded default: builds, starts a broker with
# local agents, submits examples/demo/workflow.yaml (24 real simulations, then an
# aggregate step reading all their outputs), waits with progress, prints stats,
# writes the HTML report (examples/demo/out/report.html) and prints its path,
# stops everything. Exits 0 when the workflow succeeded.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bins
BIN=target/debug
STATE=$(mktemp -d /tmp/scalable-demo.XXXXXX)
rm -rf examples/demo/out
cleanup() {
  if [ -n "${BROKER_PID:-}" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  rm -rf "$STATE"
}
trap cleanup EXIT
AGENTS=2   # the local target of examples/demo/scalable.yaml
echo "== starting a broker with the manifest's local target: $AGENTS agents (state in $STATE)"
"$BIN/scalable-broker" --state-dir "$STATE" --listen 127.0.0.1:0 \
  --manifest examples/demo/scalable.yaml --target local 2> "$STATE/broker.log" &
BROKER_PID=$!
for _ in $(seq 100); do [ -f "$STATE/access.json" ] && break; sleep 0.1; done
export SCALABLE_ACCESS="$STATE/access.json"
for _ in $(seq 100); do
  n=$("$BIN/scalable" agents --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
  [ "$n" -ge "$AGENTS" ] && break; sleep 0.1
done
"$BIN/scalable" agents
echo "== submitting examples/demo/workflow.yaml"
status=0
"$BIN/scalable" submit examples/demo/workflow.yaml --wait || status=$?
echo "== stats"
"$BIN/scalable" stats last
REPORT="$PWD/examples/demo/out/report.html"
write_report() {
  echo "== report"
  mkdir -p "$(dirname "$REPORT")"
  "$BIN/scalable" report last --format html --output "$REPORT"
  echo "HTML report: $REPORT"
}
if [ "$status" -ne 0 ]; then
  "$BIN/scalable" analyze last || true
  write_report || true
  echo "demo: the workflow failed (exit $status)"; exit "$status"
fi
echo "== the aggregate step's output (examples/demo/out/summary.csv, last lines)"
tail -n 3 examples/demo/out/summary.csv
write_report
echo "demo: ok"
