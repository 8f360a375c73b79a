"""Issue 21's benchmark, run by `scripts/bench.sh python` (scripts/bench.py).

client.map of N (10,000) trivial Python functions through the Python client
on one broker and one 2-cpu agent (release binaries, BENCH_BIN): the time for
`map` to return every future (bar < 1 s), and the gather rate, N / (map start
to the last result), against `seq N | xargs -P2 -n1 PY -c pass` in the same
run, before and after ours, averaged (bar >= 0.8 of it). PY is the interpreter the tasks run (this one,
`sys.executable`): one interpreter per task is the floor of that design.
`python3` on PATH is reported too when it is another program (a pyenv shim).

The module's top level imports nothing heavy: each task's interpreter
imports it to find `noop`.
"""

import os
import sys
import time

SUBMIT_BAR, GATHER_BAR = 1.0, 0.8


def noop(x):
    return x


def xargs_rate(n, python):
    import subprocess

    t = time.perf_counter()
    subprocess.run(f"seq {n} | xargs -P2 -n1 {python} -c pass", shell=True, check=True)
    return n / (time.perf_counter() - t)


def bench_python(broker_class, load_now, bin_dir):
    """`broker_class`: bench.py's Broker (a broker and its agents on BENCH_BIN)."""
    import shutil

    os.environ["SCALABLE_BIN_DIR"] = bin_dir

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    from scalable import Client

    n = int(os.environ.get("BENCH_PY_N", "10000"))
    load = load_now()
    # xargs before and after ours, averaged: the machine's load drifts
    # during a run of minutes and would otherwise favour one side.
    xargs_before = xargs_rate(n, sys.executable)
    b = broker_class(agents=[["--cpus", "2", "--name", "bench"]])
    try:
        client = Client(b.access, rundir=os.path.join(b.dir, "python"))
        t = time.perf_counter()
        futures = client.map(noop, range(n))
        submit_s = time.perf_counter() - t
        values = client.gather(futures)
        total_s = time.perf_counter() - t
        client.close()
    finally:
        b.stop()
    if values != list(range(n)):
        sys.exit("python: gathered values differ from the inputs")
    xargs_after = xargs_rate(n, sys.executable)
    xargs = (xargs_before + xargs_after) / 2
    rate = n / total_s
    print(f"7. python: client.map of {n:,} trivial functions (one 2-cpu agent): map returned all "
          f"futures in {submit_s:.3f} s (bar < {SUBMIT_BAR:.0f} s); gather {rate:,.1f} calls/s "
          f"({total_s:.1f} s); xargs -P2 {sys.executable} -c pass {xargs:,.1f}/s (before "
          f"{xargs_before:,.1f}, after {xargs_after:,.1f}); ratio "
          f"{rate / xargs:.2f} (bar >= {GATHER_BAR}); load {load} -> {load_now()}", flush=True)
    shim = shutil.which("python3")
    if shim and os.path.realpath(shim) != os.path.realpath(sys.executable):
        print(f"   (`python3` on PATH is {shim}, another program: xargs -P2 python3 -c pass "
              f"{xargs_rate(min(n, 1000), 'python3'):,.1f}/s over {min(n, 1000):,} calls)", flush=True)
    return submit_s < SUBMIT_BAR and rate / xargs >= GATHER_BAR
