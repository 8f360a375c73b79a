#!/usr/bin/env python3
"""Issue 3's benchmarks, run against the release binaries.

1. spawn:    (issue 15) 10,000 tasks of /bin/true, one broker, one agent with
             2 cpus (cpu binding, the memory sampler and output capture on, as the
             agent runs by default), from submit to all finished (the broker's own
             recorded submit and finish times), against
             `seq 10000 | xargs -P2 -n1 /bin/true` in the same loop; 3 repetitions,
             medians. Bar: ratio >= 1.10 (aim 1.25). Also the broker's and the
             agent's cpu per task (utime+stime from /proc/PID/stat, before and
             after the run) and the idle agent's peak RSS (VmHWM once connected).
             BENCH_BIN=DIR runs other binaries (before/after comparisons).
2. dispatch: (issue 15) 200,000 tasks with two --noop agents: tasks/s. Bar:
             >= 150,000/s. Then 200,000 tasks on 100 --noop agents of 1 cpu
             each: tasks/s and the broker's cpu per task (utime+stime from
             /proc/PID/stat around the run) beside the two-agent figure: it
             should stay flat as agents are added.
3. submit:   a 1,000,000-task range job: time until `submit` returns, and the
             broker's peak RSS. Bar: < 5 s and < 500 MB.
4. packing:  1,000 tasks of random 1-4 cpus and 0.1-0.5 s (`sleep`) on two
             4-cpu agents: busy cpu-seconds / available cpu-seconds over the
             makespan, from the broker's recorded intervals. Bar: >= 0.90.
5. restart:  (issue 6) a store with 100,000 tasks, half done (one run: a job of
             50,000 noop tasks that ran, one of 50,000 that no agent serves);
             kill -9 of the broker, restart on the same state dir and port:
             time from exec until it answers (a CLI `status` succeeds), the
             broker's own "state loaded" time, and its peak RSS once its agents
             are back. Bar: < 2 s and < 300 MB.
6. tail:     (issue 15) prefetching piles work behind a long task: two 1-cpu
             agents, one job of a 6 s task, a 2 s task and four 1 s tasks
             (sleep). The first agent runs the 6 s task with 1 s tasks queued
             behind it while the other runs out of work. Makespan (the broker's
             submit to finish) against the lower bound max(longest task, total
             work / agents) = 6 s; 3 repetitions, medians.
7. report:   (issue 16) `scalable report` of a 100-task run (sleep 0.05, every
             tenth task exits 1; one 2-cpu agent) and of a 100,000-attempt run
             (two --noop agents): the wall time of the CLI writing each format
             (the broker's read, the pages, the rendering) and the HTML's size.
             Bar: the 100,000-attempt HTML in < 3 s and < 10 MB.
8. advise:   (issue 17) training each learned model (linear, random_forest,
             gradient_boosting: 5-fold CV plus the conformal bound) on 10,000
             synthetic attempts with 5 features, and one recommendation, in
             the release example `advise_bench`. Bars: training < 2 s for
             linear and random forest, < 5 s for gradient boosting; a
             recommendation < 5 ms.
9. python:   (issue 21) client.map of 10,000 trivial Python functions:
             time to get the futures back, gather rate against
             `xargs -P2 -n1 python -c pass` (scripts/bench_python.py).
10. scaling: (issue 18) three waves of 60 one-second tasks with 20 s gaps on
             fixed pools of 1 and 6 agents and on an adaptive local target
             (min 1, max 6): makespan, agent-seconds, idle agent-seconds, burst
             to first pilot and first task (scripts/bench_scaling.py). Bars:
             makespan within 25% of fixed-6, agent-seconds within 50% above
             fixed-1. Not in the default set (about 6 minutes).
11. staging: (issue 20) transfer rates through the broker on loopback for
             one 1 GB file and 10,000 files of 10 KB against cp
             (scripts/bench_staging.py). Bars: >= 200 MB/s, >= 2,000 files/s.
12. staging_s3: (issue 20) the same two workloads through moto's S3 with the
             aws CLI (`--storage`; scripts/bench_staging_s3.py). No bar: moto
             is a stand-in. Not in the default set.
BENCH_BIN=DIR runs the binaries in DIR (to compare builds with one script).
"""
import json, os, platform, shutil, signal, sqlite3, statistics, subprocess, sys, tempfile, time

BIN = os.environ.get("BENCH_BIN") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "target", "release")
REPS = int(os.environ.get("BENCH_REPS", "3"))


class Broker:
    def __init__(self, agents=()):
        self.dir = tempfile.mkdtemp(prefix="scalable-bench.")
        self.state = os.path.join(self.dir, "state")
        self.log = open(os.path.join(self.dir, "broker.log"), "w")
        env = dict(os.environ, SCALABLE_LOG="warn")
        self.proc = subprocess.Popen(
            [f"{BIN}/scalable-broker", "--state-dir", self.state, "--listen", "127.0.0.1:0",
             *os.environ.get("BENCH_BROKER_ARGS", "").split()],
            stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        self.access = os.path.join(self.state, "access.json")
        for _ in range(200):
            if os.path.exists(self.access):
                break
            time.sleep(0.05)
        self.agents = []
        for args in agents:
            self.agents.append(subprocess.Popen(
                [f"{BIN}/scalable-agent", "--token-file", os.path.join(self.state, "agent.token"), *args],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, f"agent{len(self.agents)}.log"), "w"),
                env=env))
        for _ in range(200 + 10 * len(agents)):
            if len(self.cli_json("agents")) >= len(agents):
                break
            time.sleep(0.05)

    def cli(self, *args):
        return subprocess.run([f"{BIN}/scalable", "--access", self.access, *args],
                              capture_output=True, text=True, cwd=self.dir)

    def cli_json(self, *args):
        out = self.cli(*args, "--json")
        return json.loads(out.stdout) if out.returncode == 0 else []

    def run_times(self, run):
        db = sqlite3.connect(f"file:{self.state}/broker.db?mode=ro", uri=True)
        sub, fin, state = db.execute(
            "SELECT submitted_at_ms, finished_at_ms, state FROM runs WHERE id = ?", (run,)).fetchone()
        return sub, fin, state

    def wait_run(self, run):
        while True:
            sub, fin, state = self.run_times(run)
            if fin is not None:
                return (fin - sub) / 1000.0, state
            time.sleep(0.05)

    def rss_peak_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")

    def stop(self):
        for a in self.agents:
            a.send_signal(signal.SIGTERM)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for a in self.agents:
            try:
                a.wait(timeout=10)
            except subprocess.TimeoutExpired:
                a.kill()
        # The store is the bulk of a run's files (100 MB for 600,000 tasks);
        # logs and written reports stay. BENCH_KEEP=1 keeps the store too.
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(self.state, ignore_errors=True)


def submit(b, n, cmd):
    out = b.cli("submit", "--json", "--array", f"1-{n}", "--name", "bench", "--", *cmd)
    if out.returncode != 0:
        sys.exit(f"submit failed: {out.stderr}")
    reply = json.loads(out.stdout)
    if reply["tasks"] != n:
        sys.exit(f"submit stored {reply['tasks']} tasks, expected {n}")
    return reply["run"]


def cpu_us(pid):
    """utime + stime of one process (not its reaped children), in microseconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the comm field: state is fields[0], utime fields[11], stime fields[12].
    return (int(fields[11]) + int(fields[12])) * 1e6 / os.sysconf("SC_CLK_TCK")


def guard_of(agent):
    """The pid of the agent's orphan guard (its child running `__orphan-guard`)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                guard = b"__orphan-guard" in f.read()
        except OSError:
            continue
        if ppid == agent and guard:
            return int(entry)
    return None


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def load_now():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


SPAWN_BAR, SPAWN_AIM = 1.10, 1.25


def bench_spawn():
    n = 10_000
    ours, xargs, broker_us, agent_us, guard_us, idle_mb, loads = [], [], [], [], [], [], []
    for rep in range(REPS):
        loads.append(load_now())
        t = time.perf_counter()
        subprocess.run(f"seq {n} | xargs -P2 -n1 /bin/true", shell=True, check=True)
        xargs.append(n / (time.perf_counter() - t))
        b = Broker(agents=[["--cpus", "2", "--name", "bench"]])
        try:
            agent = b.agents[0].pid
            time.sleep(0.5)  # idle: connected, nothing assigned yet
            idle_mb.append(peak_rss_mb(agent))
            guard = guard_of(agent)
            guard_cpu = (lambda: cpu_us(guard)) if guard else (lambda: 0.0)
            cpu0 = (cpu_us(b.proc.pid), cpu_us(agent), guard_cpu())
            run = submit(b, n, ["/bin/true"])
            secs, state = b.wait_run(run)
            cpu1 = (cpu_us(b.proc.pid), cpu_us(agent), guard_cpu())
            if state != "succeeded":
                sys.exit(f"spawn run ended {state}")
            ours.append(n / secs)
            broker_us.append((cpu1[0] - cpu0[0]) / n)
            agent_us.append((cpu1[1] - cpu0[1]) / n)
            guard_us.append((cpu1[2] - cpu0[2]) / n)
        finally:
            b.stop()
        print(f"  rep {rep + 1}: scalable {ours[-1]:,.0f} tasks/s, xargs -P2 {xargs[-1]:,.0f} tasks/s, "
              f"ratio {ours[-1] / xargs[-1]:.2f}; cpu per task: broker {broker_us[-1]:.0f} us, "
              f"agent {agent_us[-1]:.0f} us (its orphan guard {guard_us[-1]:.1f} us); "
              f"load {loads[-1]}", flush=True)
    o, x = statistics.median(ours), statistics.median(xargs)
    ratios = [a / b for a, b in zip(ours, xargs)]
    print(f"1. spawn: 10,000 x /bin/true on one 2-cpu agent (binding, sampler, capture on): "
          f"median {o:,.0f} tasks/s; xargs -P2 {x:,.0f} tasks/s; ratio {o / x:.2f} "
          f"(median of per-rep ratios {statistics.median(ratios):.2f}; bar >= {SPAWN_BAR:.2f}, "
          f"{o / x / SPAWN_BAR:.2f} of it; aim {SPAWN_AIM:.2f}); cpu per task: broker "
          f"{statistics.median(broker_us):.0f} us, agent {statistics.median(agent_us):.0f} us "
          f"(orphan guard {statistics.median(guard_us):.1f} us); "
          f"idle agent peak RSS {statistics.median(idle_mb):.1f} MB; load {', '.join(loads)}")
    return o / x >= SPAWN_BAR


def dispatch_once(n, agents):
    """n no-op tasks on these agents: (tasks/s, broker and all agents' cpu us per task)."""
    b = Broker(agents=agents)
    try:
        if len(b.cli_json("agents")) < len(agents):
            sys.exit(f"only {len(b.cli_json('agents'))} of {len(agents)} agents connected")
        c0 = cpu_us(b.proc.pid)
        a0 = sum(cpu_us(a.pid) for a in b.agents)
        run = submit(b, n, ["/bin/true"])
        secs, state = b.wait_run(run)
        c1 = cpu_us(b.proc.pid)
        a1 = sum(cpu_us(a.pid) for a in b.agents)
    finally:
        b.stop()
    if state != "succeeded":
        sys.exit(f"dispatch run ended {state}")
    return n / secs, (c1 - c0) / n, (a1 - a0) / n


def bench_dispatch():
    n = 200_000
    rate, cpu2, ag2 = dispatch_once(n, [["--noop", "--name", f"noop{i}"] for i in (1, 2)])
    print(f"2. dispatch: 200,000 tasks on two --noop agents: {rate:,.0f} tasks/s "
          f"(bar >= 150,000; ratio {rate / 150000:.2f}), broker {cpu2:.1f} cpu-us/task, "
          f"agents {ag2:.1f} cpu-us/task", flush=True)
    many, cpu100, ag100 = dispatch_once(n, [["--noop", "--cpus", "1", "--name", f"noop{i}"]
                                            for i in range(100)])
    print(f"   200,000 tasks on 100 --noop agents of 1 cpu: {many:,.0f} tasks/s, "
          f"broker {cpu100:.1f} cpu-us/task ({cpu100 / cpu2:.2f}x the two-agent figure), "
          f"agents {ag100:.1f} cpu-us/task")
    return rate >= 150_000


def bench_tail():
    durations = [6, 2, 1, 1, 1, 1]
    agents = 2
    bound = max(max(durations), sum(durations) / agents)
    spans = []
    for rep in range(REPS):
        b = Broker(agents=[["--cpus", "1", "--name", f"tail{i}"] for i in range(agents)])
        try:
            path = os.path.join(b.dir, "tail.yaml")
            with open(path, "w") as f:
                f.write("workflow: tail\njobs:\n  - name: tail\n    command: [sleep, \"{{ item }}\"]\n"
                        f"    foreach: {json.dumps([str(d) for d in durations])}\n")
            out = b.cli("submit", "--json", path)
            if out.returncode != 0:
                sys.exit(f"submit failed: {out.stderr}")
            secs, state = b.wait_run(json.loads(out.stdout)["run"])
        finally:
            b.stop()
        if state != "succeeded":
            sys.exit(f"tail run ended {state}")
        spans.append(secs)
        print(f"  rep {rep + 1}: makespan {secs:.2f} s", flush=True)
    m = statistics.median(spans)
    print(f"6. tail: {durations} s on {agents} 1-cpu agents: median makespan {m:.2f} s, "
          f"lower bound {bound:.2f} s, ratio {m / bound:.2f} (1.00 is perfect)")
    return True


def bench_submit():
    n = 1_000_000
    b = Broker()
    try:
        t = time.perf_counter()
        run = submit(b, n, ["echo", "{{ item }}"])
        secs = time.perf_counter() - t
        rss = b.rss_peak_mb()
    finally:
        b.stop()
    print(f"3. submit: 1,000,000-task range job: submit returned in {secs:.2f} s (bar < 5 s), "
          f"broker peak RSS {rss:.0f} MB (bar < 500 MB)")
    # Per-item dependencies (issue 20): a second 1,000,000-task job waiting
    # per item on the first adds no per-task edge, only a count per task.
    b = Broker()
    try:
        wf = os.path.join(b.dir, "per-item.yaml")
        with open(wf, "w") as f:
            f.write(f"workflow: bench\njobs:\n"
                    f"  - {{name: a, range: \"1..={n}\", command: [echo, \"{{{{ item }}}}\"]}}\n"
                    f"  - {{name: b, range: \"1..={n}\", command: [echo, \"{{{{ item }}}}\"], "
                    f"after: [{{job: a, per: item}}]}}\n")
        t = time.perf_counter()
        out = b.cli("submit", "--json", wf)
        per_secs = time.perf_counter() - t
        if out.returncode != 0:
            sys.exit(f"submit failed: {out.stderr}")
        per_rss = b.rss_peak_mb()
    finally:
        b.stop()
    print(f"   per item: two 1,000,000-task jobs, the second after the first per item: "
          f"submit returned in {per_secs:.2f} s (bar < 5 s), broker peak RSS {per_rss:.0f} MB")
    return secs < 5 and rss < 500 and per_secs < 5


def bench_packing():
    import random
    seed = int(os.environ.get("BENCH_SEED", "20261122"))
    rng = random.Random(seed)
    by_cpus = {c: [] for c in (1, 2, 3, 4)}
    for _ in range(1000):
        by_cpus[rng.randint(1, 4)].append(round(rng.uniform(0.1, 0.5), 3))
    b = Broker(agents=[["--cpus", "4", "--memory", "8G", "--name", f"pack{i}"] for i in (1, 2)])
    try:
        jobs = "".join(
            f"  - name: c{c}\n    command: [sleep, \"{{{{ item }}}}\"]\n"
            f"    resources: {{cpus: {c}}}\n    foreach: {json.dumps(d)}\n"
            for c, d in by_cpus.items() if d)
        path = os.path.join(b.dir, "packing.yaml")
        with open(path, "w") as f:
            f.write("workflow: packing\njobs:\n" + jobs)
        out = b.cli("submit", "--json", path)
        if out.returncode != 0:
            sys.exit(f"submit failed: {out.stderr}")
        run = json.loads(out.stdout)["run"]
        secs, state = b.wait_run(run)
        db = sqlite3.connect(f"file:{b.state}/broker.db?mode=ro", uri=True)
        rows = db.execute(
            "SELECT j.cpus, a.started_at_us, a.ended_at_us FROM attempts a JOIN jobs j ON j.id = a.job_id "
            "WHERE a.run_id = ? AND a.end_class = 'SUCCESS'", (run,)).fetchall()
    finally:
        b.stop()
    busy = sum(c * (e - s) for c, s, e in rows) / 1e6
    makespan = (max(e for _, _, e in rows) - min(s for _, s, _ in rows)) / 1e6
    eff = busy / (8 * makespan)
    print(f"4. packing: 1,000 tasks (1-4 cpus, 0.1-0.5 s, seed {seed}) on two 4-cpu agents: "
          f"{busy:.1f} busy cpu-s / {8 * makespan:.1f} available cpu-s over a {makespan:.1f} s makespan "
          f"= {eff:.3f} (bar >= 0.90)")
    return eff >= 0.90


def bench_restart():
    half = 50_000
    b = Broker(agents=[["--noop", "--tags", "done", "--reconnect-max", "1s", "--name", f"noop{i}"]
                       for i in (1, 2)])
    try:
        path = os.path.join(b.dir, "restart.yaml")
        with open(path, "w") as f:
            f.write("workflow: restart\njobs:\n"
                    f"  - name: done\n    tag: done\n    range: \"1..={half}\"\n    command: [\"true\"]\n"
                    f"  - name: held\n    tag: nobody\n    range: \"1..={half}\"\n    command: [\"true\"]\n")
        out = b.cli("submit", "--json", path)
        if out.returncode != 0:
            sys.exit(f"submit failed: {out.stderr}")
        run = json.loads(out.stdout)["run"]
        while True:
            st = b.cli_json("status", str(run))
            if st and st[0]["counts"]["succeeded"] >= half:
                break
            time.sleep(0.2)
        time.sleep(0.5)
        with open(b.access) as f:
            address = json.load(f)["address"]
        b.proc.kill()
        b.proc.wait()
        db = sqlite3.connect(f"file:{b.state}/broker.db?mode=ro", uri=True)
        tasks = db.execute("SELECT SUM(task_count) FROM jobs").fetchone()[0]
        rows = db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
        attempts = db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
        db.close()
        b.log = open(os.path.join(b.dir, "broker-restart.log"), "w")
        t = time.perf_counter()
        b.proc = subprocess.Popen(
            [f"{BIN}/scalable-broker", "--state-dir", b.state, "--listen", address],
            stdout=subprocess.DEVNULL, stderr=b.log, env=dict(os.environ, SCALABLE_LOG="info"))
        while b.cli("status", "--json").returncode != 0:
            if time.perf_counter() - t > 30:
                sys.exit("the restarted broker never answered")
            time.sleep(0.01)
        secs = time.perf_counter() - t
        # Let the agents reconnect and the core settle, then read the peak.
        for _ in range(100):
            if len(b.cli_json("agents")) >= 2:
                break
            time.sleep(0.1)
        time.sleep(1)
        rss = b.rss_peak_mb()
        st = b.cli_json("status", str(run))[0]
        b.log.flush()
        loaded = [l for l in open(os.path.join(b.dir, "broker-restart.log")) if "state loaded in" in l]
    finally:
        b.stop()
    load_ms = loaded[0].split("state loaded in")[1].strip() if loaded else "?"
    print(f"5. restart: store with {tasks:,} tasks ({rows:,} task rows, {attempts:,} attempts), "
          f"{st['counts']['succeeded']:,} done after the restart: answering {secs:.2f} s after exec "
          f"(bar < 2 s; state loaded in {load_ms}), peak RSS {rss:.0f} MB (bar < 300 MB)")
    return secs < 2 and rss < 300


REPORT_SECS_BAR = 3.0
REPORT_HTML_MB_BAR = 10.0


def time_report(b, run, fmt):
    """Seconds for `scalable report RUN --format FMT --output FILE`, and the file's MB."""
    path = os.path.join(b.dir, f"report-{run}.{fmt}")
    t0 = time.monotonic()
    out = b.cli("report", str(run), "--format", fmt, "--output", path)
    secs = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit(f"report {fmt} failed: {out.stderr}")
    return secs, os.path.getsize(path) / 1e6, path


def bench_report():
    b = Broker(agents=[["--cpus", "2", "--name", "real"]])
    try:
        run = submit(b, 100, ["sh", "-c", "sleep 0.05; test $(($1 % 10)) -ne 0", "sh", "{{ index }}"])
        b.wait_run(run)
        small = {f: time_report(b, run, f) for f in ("text", "json", "html")}
    finally:
        b.stop()
    print(f"7. report: 100-task run: " + ", ".join(
        f"{f} {s:.2f} s ({mb:.2f} MB)" for f, (s, mb, _) in small.items())
        + f"; html at {small['html'][2]}", flush=True)
    n = 100_000
    b = Broker(agents=[["--noop", "--name", f"noop{i}"] for i in (1, 2)])
    try:
        run = submit(b, n, ["/bin/true"])
        b.wait_run(run)
        big = {f: time_report(b, run, f) for f in ("text", "json", "html")}
    finally:
        b.stop()
    secs, mb, path = big["html"]
    print(f"   {n:,}-attempt run: html {secs:.2f} s (bar < {REPORT_SECS_BAR:.0f} s), "
          f"{mb:.2f} MB (bar < {REPORT_HTML_MB_BAR:.0f} MB); text {big['text'][0]:.2f} s, "
          f"json {big['json'][0]:.2f} s ({big['json'][1]:.1f} MB); html at {path}")
    return secs < REPORT_SECS_BAR and mb < REPORT_HTML_MB_BAR


ADVISE_TRAIN_BAR_S = {"linear": 2.0, "random_forest": 2.0, "gradient_boosting": 5.0}


def bench_advise():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    subprocess.run(["cargo", "build", "--release", "-p", "scalable-broker", "--example",
                    "advise_bench"], cwd=root, check=True)
    exe = os.path.join(root, "target", "release", "examples", "advise_bench")
    out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
    ok = True
    for line in out.splitlines():
        r = json.loads(line)
        bar = ADVISE_TRAIN_BAR_S[r["model_type"]]
        good = r["train_s"] < bar and r["recommend_ms"] < 5
        ok &= good
        print(f"8. advise: {r['model_type']}: training on {r['attempts']:,} attempts with "
              f"{r['features']} features {r['train_s']:.2f} s (bar < {bar:.0f} s; cpu "
              f"{r['train_cpu_s']:.2f} s on {os.cpu_count()} cores), one "
              f"recommendation {r['recommend_ms']:.3f} ms (bar < 5 ms); {r['method']}"
              f"{'' if good else '  <-- over the bar'}")
    return ok


def bench_python():
    from bench_python import bench_python as run
    return run(Broker, load_now, BIN)


def bench_scaling():
    from bench_scaling import bench_scaling as run
    return run(Broker, BIN)


def bench_staging():
    from bench_staging import bench_staging as run
    return run(Broker, BIN)


def bench_staging_s3():
    from bench_staging_s3 import bench_staging_s3 as run
    return run(Broker, BIN)


def main():
    which = sys.argv[1:] or ["spawn", "dispatch", "submit", "packing", "restart", "tail", "report", "advise", "python"]
    print(f"machine: {platform.node()}, {os.cpu_count()} cpus, {platform.platform()}")
    ok = True
    for w in which:
        ok &= {"spawn": bench_spawn, "dispatch": bench_dispatch, "submit": bench_submit,
               "packing": bench_packing, "restart": bench_restart, "tail": bench_tail,
               "report": bench_report, "advise": bench_advise,
               "python": bench_python, "scaling": bench_scaling,
               "staging": bench_staging, "staging_s3": bench_staging_s3}[w]()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
