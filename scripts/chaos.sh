#!/usr/bin/env bash
# The chaos test of issue 6 over many seeds (reliability.md §5.5 figures): runs
# tests/chaos.rs once per seed and prints its one-line report for each, then
# the medians. Not part of CI (one seed runs there per test run).
#   scripts/chaos.sh            # seeds 1..10
#   scripts/chaos.sh 5 17 99    # these seeds
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=("$@")
[ ${#seeds[@]} -eq 0 ] && seeds=(1 2 3 4 5 6 7 8 9 10)
cargo build --workspace --bins -q
cargo test -p scalable-broker --test integration --no-run -q 2>/dev/null
out=$(mktemp)
fails=0
for s in "${seeds[@]}"; do
  log=$(mktemp)
  if SCALABLE_SEED=$s cargo test -q -p scalable-broker --test integration chaos -- --nocapture >"$log" 2>&1; then :; else
    fails=$((fails+1)); echo "seed $s FAILED:"; grep -E '^(N[0-9]+|ground truth):|timed out|did not finish' "$log" | head -20 | sed 's/^/    /'
  fi
  grep -E '^chaos seed=[0-9]+ tasks=' "$log" | head -1 | tee -a "$out"
  rm -f "$log"
done
base=$(SCALABLE_CHAOS_BASELINE=1 SCALABLE_SEED=${seeds[0]} cargo test -q -p scalable-broker --test integration chaos -- --nocapture 2>&1 \
  | grep -E '^chaos-baseline seed=' | head -1)
echo "$base"
python3 - "$out" <<'PY'
import re, statistics, sys
rows = [dict(re.findall(r'(\w+)=(\[[^\]]*\]|\S+)', l)) for l in open(sys.argv[1])]
if not rows:
    sys.exit("no reports")
def med(k):
    return statistics.median(float(r[k]) for r in rows)
restarts = [int(x) for r in rows for x in re.findall(r'\d+', r['restart_to_accept_ms'])]
print(f"{len(rows)} seeds: violations total {sum(int(r['violations']) for r in rows)}; "
      f"medians: makespan {med('makespan_s'):.1f} s, attempts {med('attempts'):.0f} for 2000 tasks, "
      f"lost {med('lost'):.0f}, retries spent {med('retries_spent'):.0f}, stale ignored {med('stale_ignored'):.0f}, "
      f"crashes {med('crashes'):.0f}; broker restart to accepting: median {statistics.median(restarts):.0f} ms, "
      f"max {max(restarts)} ms over {len(restarts)} restarts")
PY
rm -f "$out"
exit $fails
