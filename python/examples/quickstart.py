"""The two-minute example: seed 002's heterogeneous pool from Python.

Run from the repository root after `cargo build --bins`,
`export PATH="$PWD/target/debug:$PATH"` and `pip install ./python`:

    python3 python/examples/quickstart.py

A broker with the manifest's local target (two agents serving the demeter and
postprocess tags) starts, runs the functions below as tasks, and stops.
"""

import sys

from scalable import ScalableSession, as_completed


def run_demeter_scenario(scenario):
    # stands in for the model: the scenario's land cells
    return {"scenario": scenario, "cells": 1000 + 10 * int(scenario[3])}


def aggregate(result):
    return f"{result['scenario']}: {result['cells']} cells"


def check_inputs(scenario):
    if scenario.startswith("ssp9"):
        raise ValueError(f"unknown scenario {scenario}")
    return scenario


def main(manifest):
    scenarios = ["ssp1_0p5", "ssp2_0p5", "ssp3_0p5", "ssp4_0p5", "ssp5_0p5"]
    with ScalableSession.from_yaml(manifest, target="local") as session:
        print("plan:", session.plan(dry_run=True).scale_plan)
        client = session.start()
        sims = [client.submit(run_demeter_scenario, s, tag="demeter") for s in scenarios]
        summaries = [client.submit(aggregate, sim, tag="postprocess") for sim in sims]  # futures as inputs
        for line in client.gather(summaries):
            print(line)
        squares = client.map(pow, range(100), exp=2, tag="demeter")  # one job of 100 tasks
        print("sum of squares:", sum(client.gather(squares)))
        for f in as_completed([client.submit(check_inputs, "ssp9_0p5", tag="demeter")]):
            try:
                f.result()
            except ValueError as err:
                print("failed as expected:", err)
                print(err.remote_traceback.strip().splitlines()[-1])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "examples/demeter-mini/scalable.yaml")
