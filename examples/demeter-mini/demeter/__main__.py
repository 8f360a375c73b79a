"""python3 -m demeter --scenario ssp1_0p5 --out out/ssp1_0p5.csv

Downscales one scenario's regional land allocation onto a grid: each cell
gets shares of the land classes from a seeded suitability field weighted by
the soil-quality constraints, scaled so the region's totals match GCAM's
projection for every year. Exit 2 on a bad scenario or a missing input (the
seeds' INVALID_INPUT), as the real model's IOError would.
"""
import argparse
import csv
import os
import random
import re
import sys

from demeter import LAND_CLASSES, YEARS

REGION_DEGREES = 10.0


def parse_scenario(name):
    m = re.fullmatch(r"(ssp[1-5])_(\d+)p(\d+)", name)
    if not m:
        raise ValueError(f"scenario {name!r}: expected sspN_RES, e.g. ssp1_0p5")
    resolution = float(f"{m.group(2)}.{m.group(3)}")
    if not 0.25 <= resolution <= 2.0:
        raise ValueError(f"scenario {name!r}: resolution {resolution} outside 0.25..2.0 degrees")
    return m.group(1), resolution


def read_csv(data, relative):
    path = os.path.join(data, relative)
    if not os.path.exists(path):
        raise OSError(f"IOError: {relative} not found in {data}")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def allocation(data, ssp):
    rows = read_csv(data, "gcam_landalloc.csv")
    out = {}
    for r in rows:
        if r["scenario"] == ssp:
            out.setdefault(int(r["year"]), {})[r["landclass"]] = float(r["share"])
    if sorted(out) != YEARS:
        raise OSError(f"IOError: gcam_landalloc.csv has no full projection for {ssp}")
    return out


def downscale(scenario, data):
    ssp, resolution = parse_scenario(scenario)
    alloc = allocation(data, ssp)
    weights = {r["landclass"]: float(r["weight"]) for r in read_csv(data, "constraints/soil_quality.csv")}
    rng = random.Random(scenario)
    n = int(REGION_DEGREES / resolution)
    cells = [(x, y) for x in range(n) for y in range(n)]
    suitability = {c: [rng.random() * weights.get(k, 1.0) + 1e-6 for k in LAND_CLASSES] for c in cells}
    rows = []
    for year in YEARS:
        target = alloc[year]
        # Scale each class so that the grid's mean share matches the region's.
        means = [sum(s[i] for s in suitability.values()) / len(cells) for i in range(len(LAND_CLASSES))]
        for (x, y), s in suitability.items():
            raw = [s[i] * target[k] / means[i] for i, k in enumerate(LAND_CLASSES)]
            total = sum(raw)
            rows.append([year, x, y] + [round(v / total, 6) for v in raw])
    return rows, n


def main(argv=None):
    p = argparse.ArgumentParser(prog="demeter", description=__doc__.splitlines()[0])
    p.add_argument("--scenario", required=True, help="sspN_RES, e.g. ssp1_0p5 (SSP1, 0.5 degrees)")
    p.add_argument("--out", required=True, help="the gridded land cover, CSV")
    p.add_argument("--data", default=os.environ.get("DEMETER_DATA", "demeter_data"),
                   help="inputs: gcam_landalloc.csv, constraints/ (default $DEMETER_DATA)")
    a = p.parse_args(argv)
    try:
        rows, n = downscale(a.scenario, a.data)
    except (ValueError, OSError) as e:
        print(f"demeter: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    tmp = a.out + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["year", "x", "y"] + LAND_CLASSES)
        w.writerows(rows)
    os.replace(tmp, a.out)
    forest = [r[3 + LAND_CLASSES.index("forest")] for r in rows if r[0] == YEARS[-1]]
    print(f"{a.scenario}: {n}x{n} cells, {YEARS[-1]} forest share {sum(forest) / len(forest):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
