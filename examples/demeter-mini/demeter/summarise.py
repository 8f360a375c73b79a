"""python3 -m demeter.summarise out summary.csv

The postprocess step: each scenario's mean land-cover shares in the last
year, one row per scenario, from every CSV the downscale step wrote.
"""
import csv
import os
import sys

from demeter import LAND_CLASSES, YEARS


def main(argv):
    if len(argv) != 2:
        print("usage: python3 -m demeter.summarise OUT_DIR SUMMARY.csv", file=sys.stderr)
        return 2
    out_dir, summary = argv
    names = sorted(f for f in os.listdir(out_dir) if f.endswith(".csv"))
    if not names:
        print(f"demeter.summarise: no scenario outputs in {out_dir}", file=sys.stderr)
        return 2
    rows = []
    for name in names:
        with open(os.path.join(out_dir, name), newline="") as f:
            last = [r for r in csv.DictReader(f) if int(r["year"]) == YEARS[-1]]
        means = [sum(float(r[k]) for r in last) / len(last) for k in LAND_CLASSES]
        rows.append([name[:-4]] + [f"{m:.4f}" for m in means])
    tmp = summary + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scenario"] + LAND_CLASSES)
        w.writerows(rows)
    os.replace(tmp, summary)
    print(f"summarised {len(rows)} scenario(s) into {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
