#!/usr/bin/env python3
"""Reads every scenario result and writes a summary table (one row per
scenario plus the mean)."""
import glob, json, os, sys

src, out = sys.argv[1], sys.argv[2]
rows = []
for path in sorted(glob.glob(os.path.join(src, "sim-*.json"))):
    with open(path) as f:
        rows.append(json.load(f))
if not rows:
    sys.exit(f"no results in {src}")
types = list(rows[0]["shares"])
with open(out, "w") as f:
    f.write("scenario," + ",".join(types) + "\n")
    for r in sorted(rows, key=lambda r: r["scenario"]):
        f.write(f"{r['scenario']}," + ",".join(f"{r['shares'][t]:.5f}" for t in types) + "\n")
    means = [sum(r["shares"][t] for r in rows) / len(rows) for t in types]
    f.write("mean," + ",".join(f"{m:.5f}" for m in means) + "\n")
print(f"aggregated {len(rows)} scenarios into {out}")
