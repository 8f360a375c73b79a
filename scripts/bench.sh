#!/usr/bin/env bash
# Benchmarks of issue 3 (a script, not a timed test): builds release binaries
# and runs scripts/bench.py, which prints each figure and its ratio to the bar.
#   scripts/bench.sh              # all three
#   scripts/bench.sh spawn        # just one: spawn | dispatch | submit | packing | restart | tail | report | advise | python | scaling | staging | staging_s3
#   BENCH_BIN=DIR scripts/bench.sh staging   # the binaries in DIR, nothing built
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${BENCH_BIN:-}" ] || cargo build --release --bins
exec python3 scripts/bench.py "$@"
