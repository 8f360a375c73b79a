"""Issue 18's scaling benchmark (scripts/bench.sh scaling).

A bursty workload: three waves of 60 tasks of `sleep 1`, each submitted 20 s
after the previous wave finished, run three ways on this host:
  fixed-1   one 1-cpu agent for the whole run;
  fixed-6   six 1-cpu agents;
  adaptive  a local target with adaptive: {minimum: 1, maximum: 6} whose
            scaler starts and drains 1-cpu pilots (agent processes started
            through the local provider).
Figures, from the broker's store: makespan (first submit to last finish),
agent-seconds (each agent's life inside that window; a pilot from its
submission), idle agent-seconds (agent-seconds less the tasks' run time),
and for the adaptive run the time from each burst to the first pilot
submitted and to the first task dispatched, the idle seconds the scaler's
outcomes recorded, and the pilots left above the minimum at the end.
Bars (issue 18): adaptive makespan within 25% of fixed-6, agent-seconds
within 50% above fixed-1, no pilot left above the minimum, every decision
with reasoning and outcome.
BENCH_SCALING_WAVES, _TASKS, _GAP_S, _COOLDOWN change the workload.
"""
import json, os, shutil, sqlite3, statistics, subprocess, tempfile, time

WAVES = int(os.environ.get("BENCH_SCALING_WAVES", "3"))
TASKS = int(os.environ.get("BENCH_SCALING_TASKS", "60"))
GAP_S = float(os.environ.get("BENCH_SCALING_GAP_S", "20"))
COOLDOWN = os.environ.get("BENCH_SCALING_COOLDOWN", "2s")

MANIFEST = """version: 1
project: {{name: bench-scaling}}
targets:
  lab:
    provider: local
    threads_per_worker: 1
    adaptive: {{minimum: 1, maximum: 6, cooldown: {cooldown}}}
"""


def db(b):
    return sqlite3.connect(f"file:{b.state}/broker.db?mode=ro", uri=True)


def waves(b):
    """Submits the waves; returns [(run, submitted_ms, finished_ms)]."""
    out = []
    for w in range(WAVES):
        if w:
            time.sleep(GAP_S)
        r = b.cli("submit", "--json", "--array", f"1-{TASKS}", "--name", f"wave{w + 1}",
                  "--", "sleep", "1")
        if r.returncode != 0:
            raise SystemExit(f"submit failed: {r.stderr}")
        run = json.loads(r.stdout)["run"]
        b.wait_run(run)
        sub, fin, _ = b.run_times(run)
        out.append((run, sub, fin))
    return out


def busy_s(c, start_ms, end_ms):
    (us,) = c.execute(
        "SELECT COALESCE(SUM(ended_at_us - started_at_us), 0) FROM attempts "
        "WHERE end_class = 'SUCCESS'").fetchone()
    return us / 1e6


def fixed(Broker, n):
    b = Broker(agents=[["--cpus", "1"]] * n)
    try:
        ws = waves(b)
        start, end = ws[0][1], ws[-1][2]
        span = (end - start) / 1000.0
        busy = busy_s(db(b), start, end)
        return {"makespan_s": span, "agent_s": n * span, "idle_agent_s": n * span - busy}
    finally:
        b.stop()


def pilot_seconds(c, start, end):
    total = 0.0
    for sub, ended in c.execute("SELECT submitted_at_ms, ended_at_ms FROM pilots"):
        lo, hi = max(sub, start), min(ended or end, end)
        total += max(0, hi - lo) / 1000.0
    return total


def live_pilots(c):
    (n,) = c.execute("SELECT COUNT(*) FROM pilots WHERE state NOT IN ('ended', 'draining')").fetchone()
    return n


def adaptive(Broker):
    tmp = tempfile.mkdtemp(prefix="scalable-bench-scaling.")
    manifest = os.path.join(tmp, "scalable.yaml")
    with open(manifest, "w") as f:
        f.write(MANIFEST.format(cooldown=COOLDOWN))
    saved = os.environ.get("BENCH_BROKER_ARGS")
    os.environ["BENCH_BROKER_ARGS"] = f"--manifest {manifest} --target lab"
    try:
        b = Broker()
    finally:
        if saved is None:
            os.environ.pop("BENCH_BROKER_ARGS")
        else:
            os.environ["BENCH_BROKER_ARGS"] = saved
    pids = []
    try:
        for _ in range(400):
            if len(b.cli_json("agents")) >= 1:
                break
            time.sleep(0.05)
        ws = waves(b)
        start, end = ws[0][1], ws[-1][2]
        c = db(b)
        to_pilot, to_task = [], []
        for run, sub, _ in ws:
            p = c.execute("SELECT MIN(submitted_at_ms) FROM pilots WHERE submitted_at_ms >= ?",
                          (sub,)).fetchone()[0]
            # The broker's clock: when the first task was handed to an agent
            # (the agents' start times are on their own clocks).
            t = c.execute("SELECT MIN(assigned_at_ms) FROM attempts WHERE run_id = ?",
                          (run,)).fetchone()[0]
            if p is not None:
                to_pilot.append((p - sub) / 1000.0)
            if t is not None:
                to_task.append((t - sub) / 1000.0)
        # Back to the minimum, the drained pilots' records ended.
        deadline = time.time() + 60
        while time.time() < deadline and not (live_pilots(c) == 1 and c.execute(
                "SELECT COUNT(*) FROM pilots WHERE state = 'draining'").fetchone()[0] == 0):
            time.sleep(0.5)
        time.sleep(2 * 1.0)  # the last outcomes (flushed every 5 s at most)
        left = live_pilots(c) - 1
        agent_s = pilot_seconds(c, start, end)
        busy = busy_s(c, start, end)
        decisions = c.execute("SELECT COUNT(*) FROM scaling_decisions").fetchone()[0]
        without = c.execute(
            "SELECT COUNT(*) FROM scaling_decisions WHERE reasoning = '' OR busy_s IS NULL "
            "OR idle_s IS NULL").fetchone()[0]
        recorded_idle = c.execute(
            "SELECT COALESCE(SUM(idle_s), 0) FROM scaling_decisions WHERE workers_to_add != '{}'"
        ).fetchone()[0]
        pids = [int(p) for (p,) in c.execute(
            "SELECT provider_id FROM pilots WHERE state != 'ended'") if p.isdigit()]
        return {
            "makespan_s": (end - start) / 1000.0, "agent_s": agent_s,
            "idle_agent_s": agent_s - busy, "recorded_idle_s": recorded_idle,
            "burst_to_pilot_s": to_pilot, "burst_to_task_s": to_task,
            "left_above_min": left, "decisions": decisions, "without_outcome": without,
        }
    finally:
        b.stop()
        # A pilot outlives its broker (to reconnect after a restart) until its
        # idle timeout; the benchmark leaves none behind.
        for pid in pids:
            subprocess.run(["kill", str(pid)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def bench_scaling(Broker, BIN):
    print(f"scaling: {WAVES} waves of {TASKS} x sleep 1, {GAP_S:.0f} s gaps (binaries: {BIN})")
    one = fixed(Broker, 1)
    six = fixed(Broker, 6)
    ad = adaptive(Broker)
    for name, r in (("fixed-1", one), ("fixed-6", six), ("adaptive", ad)):
        print(f"  {name:9} makespan {r['makespan_s']:6.1f} s  agent-seconds {r['agent_s']:6.1f}"
              f"  idle agent-seconds {r['idle_agent_s']:6.1f}")
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    print(f"  adaptive: burst to first pilot submitted {ad['burst_to_pilot_s']} s "
          f"(median {med(ad['burst_to_pilot_s']):.2f}), to first task dispatched "
          f"{[round(x, 2) for x in ad['burst_to_task_s']]} s; recorded idle "
          f"{ad['recorded_idle_s']:.1f} s; {ad['decisions']} decisions, "
          f"{ad['without_outcome']} without reasoning or outcome; "
          f"{ad['left_above_min']} pilot(s) left above the minimum")
    bars = [
        ("makespan within 25% of fixed-6", ad["makespan_s"] <= 1.25 * six["makespan_s"]),
        ("agent-seconds within 50% above fixed-1", ad["agent_s"] <= 1.5 * one["agent_s"]),
        ("no pilot left above the minimum", ad["left_above_min"] == 0),
        ("every decision has reasoning and outcome", ad["without_outcome"] == 0),
    ]
    ok = True
    for what, good in bars:
        print(f"  {what}: {'yes' if good else 'NO  <-- over the bar'}")
        ok &= good
    return ok
