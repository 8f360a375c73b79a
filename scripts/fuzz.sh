#!/usr/bin/env bash
# The fuzz campaign (issue 12; not run in CI): property tests over the manifest
# loader and validator, the workflow parser and validator, and protocol frames
# decoded into every message type (common/src/fuzz.rs). Prints, per target,
# the cases run, panics (the bar is 0) and the time per case.
#
#   FUZZ_CASES=100000 scripts/fuzz.sh        # cases per target (default 100000)
#   FUZZ_RELEASE=1 scripts/fuzz.sh           # optimised build (no overflow checks)
#
# The debug build is the default on purpose: it keeps integer overflow checks,
# so an overflow is a panic the campaign sees instead of a silent wrap.
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZ_CASES="${FUZZ_CASES:-100000}"
profile=()
if [[ "${FUZZ_RELEASE:-0}" == 1 ]]; then
    profile=(--release)
fi
echo "== fuzz: ${FUZZ_CASES} cases per target ${profile[*]:-(debug build)}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
start=$(date +%s)
status=0
RUST_BACKTRACE=0 cargo test -p scalable-common ${profile[@]+"${profile[@]}"} --lib fuzz:: -- --nocapture --test-threads 1 \
    >"$log" 2>&1 || status=$?
grep -oE 'fuzz [a-z]+: [0-9]+ cases.*' "$log" || true
if [[ $status -ne 0 ]]; then
    echo "== fuzz FAILED (a panic, or the build):"
    grep -oE "fuzz [a-z]+ failed: .*|^error(\[|:).*" "$log" | head -20 || true
fi
echo "== fuzz done in $(( $(date +%s) - start )) s"
exit "$status"
