#!/usr/bin/env python3
"""One scenario of a toy land-use change model: a seeded random walk of the
shares of five land types over 50 years, written as JSON."""
import argparse, json, os, random

p = argparse.ArgumentParser()
p.add_argument("--scenario", type=int, required=True)
p.add_argument("--out", required=True)
a = p.parse_args()

rng = random.Random(a.scenario)
types = ["crop", "pasture", "forest", "urban", "other"]
shares = [0.3, 0.2, 0.3, 0.05, 0.15]
for year in range(50):
    for _ in range(2000):
        i, j = rng.randrange(5), rng.randrange(5)
        d = min(shares[i], 0.0005 * rng.random())
        shares[i] -= d
        shares[j] += d
os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
tmp = a.out + ".tmp"
with open(tmp, "w") as f:
    json.dump({"scenario": a.scenario, "shares": dict(zip(types, shares))}, f)
os.replace(tmp, a.out)
print(f"scenario {a.scenario}: forest {shares[2]:.4f}")
