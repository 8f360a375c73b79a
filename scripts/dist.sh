#!/usr/bin/env bash
# Builds the portable release: scalable, scalable-broker and scalable-agent for
# x86_64 Linux with glibc 2.17 or newer (CentOS 7, RHEL/Rocky 8, Ubuntu 20.04,
# Amazon Linux 2 and every newer distribution), in the `dist` profile (LTO, one
# codegen unit, stripped), and writes
#   target/scalable-dist/scalable-VERSION-x86_64-linux-gnu.tar.gz (+ .sha256)
# holding bin/, SHA256SUMS and INSTALL.txt.
#
# The glibc floor comes from cargo-zigbuild (zig links against glibc 2.17's
# symbol versions); both it and zig come from PyPI (cargo-zigbuild, ziglang),
# installed under target/dist-tools when missing. Nothing else is fetched
# beyond crates.io and PyPI.
#
# Checks, and fails when they do not hold: every binary's highest GLIBC_
# symbol is at most 2.17; the agent is at most 10 MB, the broker and the CLI
# at most 20 MB each. Prints the sizes.
#
# Usage: scripts/dist.sh            (SCALABLE_DIST_DIR to write elsewhere)
#        SCALABLE_DIST_BUILT=DIR scripts/dist.sh   checks and packs the binaries
#        already in DIR instead of building (e.g. target/release, which fails)
set -euo pipefail
cd "$(dirname "$0")/.."

GLIBC_FLOOR=2.17
TRIPLE=x86_64-unknown-linux-gnu
BINS=(scalable scalable-broker scalable-agent)
# Bars of issue 14, in bytes (MB = 10^6).
AGENT_BYTES_MAX=10000000
OTHER_BYTES_MAX=20000000
# The versions this script was checked with; newer ones may do.
ZIGBUILD_PIN="cargo-zigbuild==0.24.1"
ZIGLANG_PIN="ziglang==0.17.1"

# Not target/dist: that is cargo's own directory for the dist profile.
OUT=${SCALABLE_DIST_DIR:-target/scalable-dist}
TOOLS=target/dist-tools

say() { printf '== %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# cargo-zigbuild and zig: already on PATH, or installed under $TOOLS: a venv,
# or a plain pip --target where the python has no venv module.
tools() {
  if command -v cargo-zigbuild >/dev/null && { command -v zig >/dev/null || python3 -m ziglang version >/dev/null 2>&1; }; then
    return
  fi
  if [ ! -x "$TOOLS/venv/bin/cargo-zigbuild" ] && [ ! -x "$TOOLS/py/bin/cargo-zigbuild" ]; then
    say "installing $ZIGBUILD_PIN and $ZIGLANG_PIN from PyPI into $TOOLS"
    if python3 -m venv "$TOOLS/venv" 2>/dev/null; then
      "$TOOLS/venv/bin/python" -m pip install -q "$ZIGBUILD_PIN" "$ZIGLANG_PIN"
    else
      rm -rf "$TOOLS/venv"
      python3 -m pip install -q --target "$TOOLS/py" "$ZIGBUILD_PIN" "$ZIGLANG_PIN"
    fi
  fi
  # cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on PATH: the
  # venv's python3 first, or the --target directory on PYTHONPATH.
  if [ -x "$TOOLS/venv/bin/cargo-zigbuild" ]; then
    export PATH="$PWD/$TOOLS/venv/bin:$PATH"
  else
    export PATH="$PWD/$TOOLS/py/bin:$PATH"
    export PYTHONPATH="$PWD/$TOOLS/py${PYTHONPATH:+:$PYTHONPATH}"
  fi
}

# The highest GLIBC_x.y a binary needs, from its dynamic symbol versions.
highest_glibc() {
  local syms
  if command -v objdump >/dev/null; then
    syms=$(objdump -T "$1")
  else
    syms=$(readelf --dyn-syms -W "$1")
  fi
  grep -o 'GLIBC_[0-9][0-9.]*' <<<"$syms" | sed 's/GLIBC_//' | sort -V -u | tail -n 1
}

# True when version $1 <= version $2.
version_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$1" ]; }

version=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "scalable-agent"))')
built=${SCALABLE_DIST_BUILT:-}
if [ -z "$built" ]; then
  tools
  build_note="$TRIPLE, glibc >= $GLIBC_FLOOR"
  say "building scalable $version for $build_note (profile dist)"
  started=$(date +%s)
  # SCALABLE_BUILD names this build in --version, the agent's log and render.
  SCALABLE_BUILD="$build_note" cargo zigbuild --locked --profile dist \
    --target "$TRIPLE.$GLIBC_FLOOR" --workspace --bins
  say "built in $(( $(date +%s) - started )) s"
  built="target/$TRIPLE/dist"
fi
name="scalable-$version-x86_64-linux-gnu"
stage="$OUT/$name"
rm -rf "$stage"
mkdir -p "$stage/bin"

fail=0
say "sizes and glibc floors"
for b in "${BINS[@]}"; do
  f="$built/$b"
  [ -x "$f" ] || die "$f was not built"
  bytes=$(stat -c %s "$f")
  glibc=$(highest_glibc "$f")
  max=$OTHER_BYTES_MAX
  [ "$b" = scalable-agent ] && max=$AGENT_BYTES_MAX
  printf '%-16s %9d bytes (%s MB, bar %d MB)  highest GLIBC_%s\n' \
    "$b" "$bytes" "$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')" \
    "$((max / 1000000))" "${glibc:-none}"
  if [ "$bytes" -gt "$max" ]; then
    echo "error: $b is $bytes bytes, over its bar of $max" >&2
    fail=1
  fi
  if [ -n "$glibc" ] && ! version_le "$glibc" "$GLIBC_FLOOR"; then
    echo "error: $b needs GLIBC_$glibc, above the floor $GLIBC_FLOOR" >&2
    fail=1
  fi
  install -m 0755 "$f" "$stage/bin/$b"
done
[ "$fail" = 0 ] || die "the dist binaries do not meet their bars"

sed -e "s/@VERSION@/$version/g" -e "s/@GLIBC@/$GLIBC_FLOOR/g" \
  scripts/dist/INSTALL.txt >"$stage/INSTALL.txt"
(cd "$stage" && sha256sum bin/* INSTALL.txt >SHA256SUMS)

# Reproducible: fixed order, owners and times (the last commit's), no gzip name.
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
tarball="$OUT/$name.tar.gz"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
  -C "$OUT" -cf - "$name" | gzip -n -9 >"$tarball"
(cd "$OUT" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
say "wrote $tarball ($(stat -c %s "$tarball") bytes) and $tarball.sha256"
cat "$tarball.sha256"
