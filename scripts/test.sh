#!/usr/bin/env bash
# Runs the whole test suite: format, lints, unit tests and the integration tests
# (which start real brokers and agents on loopback). Debug profile throughout.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build binaries (the integration tests drive them)"
cargo build --workspace --bins
echo "== tests"
cargo test --workspace -- --test-threads "${SCALABLE_TEST_THREADS:-4}"
echo "== python client (python/tests, against target/debug)"
SCALABLE_BIN_DIR="$PWD/target/debug" python3 -m pytest -q -p no:cacheprovider python/tests
