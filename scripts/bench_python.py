"""Issue 21's benchmark, run by `scripts/bench.sh python` (scripts/bench.py).

client.map of N (10,000) trivial Python functions through the Python client
on one broker and one 2-cpu agent (release binaries, BENCH_BIN): the time for
`map` to return every future (bar < 1 s), and the gather rate, N / (map start
to the last result), against `seq M | xargs -P2 -n1 PY -c pass` (M: BENCH_PY_XARGS_N, default
3,000) in the same run, before and after ours, averaged (bar >= 0.8 of it). PY is the interpreter the tasks run (this one,
`sys.executable`): one interpreter per task is the floor of the cold design.
The client's default runs calls warm (a fork of the agent's pre-imported
interpreter per call); the cold path (`Client(warm=False)`, BENCH_PY_COLD_N
calls, default 1,000; 0 skips it) and `ProcessPoolExecutor(2)` (imports paid
once, no broker: the warm design's floor) are printed beside it.
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


def pool_rate(n):
    """`ProcessPoolExecutor(2).map(noop, range(n))`, pool start included: the
    warm design's own floor (imports paid once, no broker)."""
    from concurrent.futures import ProcessPoolExecutor

    t = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        values = list(pool.map(noop, range(n)))
    if values != list(range(n)):
        sys.exit("python: the pool's values differ from the inputs")
    return n / (time.perf_counter() - t)


def client_run(broker_class, n, warm):
    """(seconds for `map` to return, gather rate) on a fresh broker and agent."""
    from scalable import Client

    b = broker_class(agents=[["--cpus", "2", "--name", "bench"]])
    try:
        client = Client(b.access, rundir=os.path.join(b.dir, "python"), warm=warm)
        t = time.perf_counter()
        futures = client.map(noop, range(n))
        submit_s = time.perf_counter() - t
        values = client.gather(futures)
        total_s = time.perf_counter() - t
        client.close()
    finally:
        b.stop()
        import shutil

        shutil.rmtree(b.dir, ignore_errors=True)  # 10,000 calls' files
    if values != list(range(n)):
        sys.exit(f"python: gathered values differ from the inputs (warm={warm})")
    return submit_s, n / total_s


def bench_python(broker_class, load_now, bin_dir):
    """`broker_class`: bench.py's Broker (a broker and its agents on BENCH_BIN)."""
    import shutil

    os.environ["SCALABLE_BIN_DIR"] = bin_dir
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

    n = int(os.environ.get("BENCH_PY_N", "10000"))
    n_cold = int(os.environ.get("BENCH_PY_COLD_N", str(min(n, 1000))))
    # A rate: 3,000 interpreters each side measure it well, in a third of the time.
    n_xargs = int(os.environ.get("BENCH_PY_XARGS_N", str(min(n, 3000))))
    load = load_now()
    # xargs before and after ours, averaged: the machine's load drifts
    # during a run of minutes and would otherwise favour one side.
    xargs_before = xargs_rate(n_xargs, sys.executable)
    submit_s, warm = client_run(broker_class, n, True)
    pool = pool_rate(n)
    cold_submit_s, cold = client_run(broker_class, n_cold, False) if n_cold > 0 else (0.0, 0.0)
    xargs_after = xargs_rate(n_xargs, sys.executable)
    xargs = (xargs_before + xargs_after) / 2
    print(f"7. python: client.map of {n:,} trivial functions (one 2-cpu agent): map returned all "
          f"futures in {submit_s:.3f} s (bar < {SUBMIT_BAR:.0f} s); load {load} -> {load_now()}", flush=True)
    print(f"   gather, tasks/s (ratio to xargs; bar >= {GATHER_BAR} for warm):", flush=True)
    print(f"   warm (default)          {warm:9,.1f}  ({warm / xargs:.2f})", flush=True)
    if n_cold > 0:
        print(f"   cold (warm=False)       {cold:9,.1f}  ({cold / xargs:.2f}; {n_cold:,} calls, map "
              f"{cold_submit_s:.3f} s)", flush=True)
    print(f"   xargs -P2 python -c pass {xargs:8,.1f}  (1.00; before {xargs_before:,.1f}, after "
          f"{xargs_after:,.1f}; {n_xargs:,} calls each; {sys.executable})", flush=True)
    print(f"   ProcessPoolExecutor(2)  {pool:9,.1f}  ({pool / xargs:.2f}; warm is {warm / pool:.2f} of it)",
          flush=True)
    shim = shutil.which("python3")
    if shim and os.path.realpath(shim) != os.path.realpath(sys.executable):
        print(f"   (`python3` on PATH is {shim}, another program: xargs -P2 python3 -c pass "
              f"{xargs_rate(min(n, 1000), 'python3'):,.1f}/s over {min(n, 1000):,} calls)", flush=True)
    return submit_s < SUBMIT_BAR and warm / xargs >= GATHER_BAR
