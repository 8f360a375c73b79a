#!/usr/bin/env bash
# The assistants against a real (tiny) model: SmolLM2-135M behind an
# OpenAI-compatible server (../shared/testbeds/llm-setup.sh; its first build
# takes 5-15 minutes). Not in CI: the suite proves the LLM path with a local
# stub (tests/assistants/llm.rs); this shows what a real model does with the
# prompts, the validation and the repair round.
#
#   scripts/llm-check.sh            start the model if needed, run each assistant once
#   BIN=DIR scripts/llm-check.sh    use the binaries in DIR (default target/debug)
#   LLM_PORT=8011                   the server's port (the setup script's default)
#
# Each command prints either "(a model)" in its header (the answer validated)
# or a one-line "note: the openai backend gave no usable answer (...)" and the
# heuristic result: both are correct outcomes; a crash or an invalid manifest
# is not. The server is stopped at the end only if this script started it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/debug}
PORT=${LLM_PORT:-8011}
SETUP=${LLM_SETUP:-../shared/testbeds/llm-setup.sh}
[ -x "$BIN/scalable" ] || { echo "no $BIN/scalable: cargo build first" >&2; exit 2; }
[ -f "$SETUP" ] || { echo "no $SETUP (the shared testbeds)" >&2; exit 2; }

started=0
if ! curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null 2>&1; then
  LLM_PORT=$PORT bash "$SETUP" start
  started=1
fi
cleanup() { if [ "$started" = 1 ]; then LLM_PORT=$PORT bash "$SETUP" stop; fi; }
trap cleanup EXIT

export SCALABLE_AI_BACKEND=openai
export AI_BASE_URL="http://127.0.0.1:$PORT/v1"
export AI_MODEL=smollm2
export AI_TIMEOUT=${AI_TIMEOUT:-120}
unset AI_API_KEY
out=$(mktemp -d)
trap 'rm -rf "$out"; cleanup' EXIT

run() {
  echo "\$ scalable $*"
  local t0=$SECONDS rc=0
  "$BIN/scalable" "$@" >"$out/stdout" 2>"$out/stderr" || rc=$?
  head -n 12 "$out/stdout"
  sed 's/^/  stderr: /' "$out/stderr"
  echo "  [exit $rc, $((SECONDS - t0)) s]"
  [ "$rc" = 0 ] || { echo "FAIL: exit $rc" >&2; exit 1; }
}

run compose --description "Demeter LULCC pipeline (4 CPUs, 16GB) on slurm queue batch with 2 retries"
run explain examples/demeter/scalable.yaml --target hpc
run migrate examples/demeter/scalable.yaml --from slurm --to kubernetes
run init-component tests/fixtures/cropsim --name cropsim
echo "ok: every assistant answered (from the model or, after its notice, the heuristics)"
