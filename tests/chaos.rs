//! The bounded chaos test of issue 6 (reliability.md §5.4): a 2,000-task DAG on
//! four agents while agents are killed and replaced, one is stopped past the
//! heartbeat timeout, and the broker is killed twice (once at a fail point,
//! right after a commit and before anything of it was sent). Afterwards the
//! invariants N1–N10 are checked from oracles that do not trust the store: a
//! ground-truth log each task appends to, the agents' event logs, and the
//! output files the tasks write.
//!
//! Seeded: `SCALABLE_SEED=<n>` replays a run; the seed is printed first. Loopback
//! only, bounded to 240 s. `scripts/chaos.sh` runs it for many seeds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::support::*;

/// A small, seeded generator (splitmix64): no dependency, same numbers everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

const LIMIT: Duration = Duration::from_secs(240);
const AGENT_ARGS: [&str; 4] = ["--cpus", "4", "--reconnect-max", "1s"];

/// The workload: fan-out, fan-in and a diamond; 2,000 tasks. Every task logs
/// its start and end, sleeps 20–80 ms (seeded by its index), writes its
/// output through the attempt's stage dir with its attempt id inside; every
/// 97th task of `spread` fails its first attempt (real retries).
fn workflow(seed: u64) -> String {
    let task = |job: &str, fail_once: bool| {
        let fail = if fail_once {
            "if [ \"$SCALABLE_ATTEMPT\" = 1 ] && [ $(( {{ index }} % 97 )) = 13 ]; then echo \"end $SCALABLE_TASK_ID $SCALABLE_ATTEMPT_ID 3\" >> truth.log; exit 3; fi; "
        } else {
            ""
        };
        concat!(
            "echo \"start $SCALABLE_TASK_ID $SCALABLE_ATTEMPT_ID $$\" >> truth.log; ",
            "s=$(( ({{ index }} * 7919 + SEED) % 61 + 20 )); sleep $(printf 0.%03d $s); ",
            "FAIL",
            "mkdir -p \"$SCALABLE_STAGE_DIR/out\"; ",
            "echo $SCALABLE_ATTEMPT_ID > \"$SCALABLE_STAGE_DIR/out/JOB-{{ index }}.tmp\"; ",
            "mv \"$SCALABLE_STAGE_DIR/out/JOB-{{ index }}.tmp\" \"$SCALABLE_STAGE_DIR/out/JOB-{{ index }}.txt\"; ",
            "echo \"end $SCALABLE_TASK_ID $SCALABLE_ATTEMPT_ID 0\" >> truth.log"
        )
        .replace("SEED", &seed.to_string())
        .replace("FAIL", fail)
        .replace("JOB", job)
    };
    let job = |name: &str, range: Option<&str>, after: &[&str], fail_once: bool| {
        let mut s = format!("  - name: {name}\n");
        if let Some(r) = range {
            s.push_str(&format!("    range: \"{r}\"\n"));
        }
        if !after.is_empty() {
            s.push_str(&format!("    after: [{}]\n", after.join(", ")));
        }
        s.push_str("    retries: 2\n");
        s.push_str(&format!(
            "    outputs: [\"out/{name}-{{{{ index }}}}.txt\"]\n"
        ));
        s.push_str(&format!(
            "    command: [sh, -c, {}]\n",
            serde_json::to_string(&task(name, fail_once)).unwrap()
        ));
        s
    };
    let mut wf = String::from("workflow: chaos\njobs:\n");
    wf += &job("source", None, &[], false);
    wf += &job("spread", Some("1..=900"), &["source"], true);
    wf += &job("gather", None, &["spread"], false);
    wf += &job("left", Some("1..=500"), &["gather"], false);
    wf += &job("right", Some("1..=500"), &["gather"], false);
    wf += &job("join", Some("1..=98"), &["left", "right"], false);
    wf
}

#[derive(Debug, Default)]
struct Report {
    broker_restarts: u32,
    restart_to_accept_ms: Vec<u64>,
    agent_kills: u32,
    stops: u32,
    violations: Vec<String>,
}

#[test]
fn chaos_nothing_is_lost() {
    let seed = std::env::var("SCALABLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000
        });
    eprintln!("chaos seed={seed} (replay with SCALABLE_SEED={seed})");
    let mut rng = Rng(seed);
    let abort_at = rng.range(60, 200);
    let flags = [
        "--heartbeat-timeout",
        "2",
        "--heartbeat-interval-ms",
        "500",
        "--reclaim-window",
        "4",
    ];
    // SCALABLE_CHAOS_BASELINE=1: the same run without faults, for the
    // fault-free makespan (scripts/chaos.sh).
    let baseline = std::env::var_os("SCALABLE_CHAOS_BASELINE").is_some();
    let failpoint = if baseline {
        String::new()
    } else {
        format!("store.after_commit=abort@{abort_at}")
    };
    let mut b = Broker::start_env(&flags, &[("SCALABLE_FAILPOINTS", &failpoint)]);
    let dir = b.dir.path().to_path_buf();
    let events = |n: usize| b_events(&dir, n);
    let mut n_agents = 0usize;
    for _ in 0..4 {
        let ev = events(n_agents);
        b.agent(&[&AGENT_ARGS[..], &["--event-log", &ev]].concat());
        n_agents += 1;
    }
    b.wait_agents(4);
    let wf = b.write("chaos.yaml", &workflow(seed));
    let started = Instant::now();
    let run = b.ok(&["submit", &wf]).trim().to_string();
    assert!(run.parse::<u64>().is_ok(), "submit acknowledged: {run}");

    // The fault plan, in seconds after submit.
    let mut plan: Vec<(u64, &str)> = vec![
        (rng.range(1_000, 6_000), "kill-agent"),
        (rng.range(3_000, 9_000), "kill-agent"),
        (rng.range(2_000, 8_000), "stop-agent"),
        (rng.range(5_000, 12_000), "kill-broker"),
    ];
    plan.sort();
    if baseline {
        plan.clear();
    }
    eprintln!("chaos plan: failpoint abort at commit {abort_at}, {plan:?}");
    let mut rep = Report::default();
    let mut stopped: Option<(usize, Instant)> = None;
    let mut alive: Vec<usize> = (0..4).collect();
    loop {
        assert!(
            started.elapsed() < LIMIT,
            "chaos seed={seed}: the run did not finish within {LIMIT:?}\n{}",
            b.log()
        );
        // The fail point (or a kill) took the broker down: restart it.
        if let Ok(Some(_)) = b.child.try_wait() {
            rep.broker_restarts += 1;
            check_integrity(&b, &mut rep);
            let t = Instant::now();
            b.restart(&[]);
            rep.restart_to_accept_ms
                .push(t.elapsed().as_millis() as u64);
        }
        let now = started.elapsed().as_millis() as u64;
        while plan.first().is_some_and(|(at, _)| *at <= now) {
            let (_, what) = plan.remove(0);
            match what {
                "kill-agent" if alive.len() > 1 => {
                    let i = alive.remove((rng.next() % alive.len() as u64) as usize);
                    let _ = b.agents[i].kill();
                    let _ = b.agents[i].wait();
                    rep.agent_kills += 1;
                    let ev = events(n_agents);
                    b.agent(&[&AGENT_ARGS[..], &["--event-log", &ev]].concat());
                    alive.push(n_agents);
                    n_agents += 1;
                }
                "stop-agent" if stopped.is_none() => {
                    let i = alive[(rng.next() % alive.len() as u64) as usize];
                    signal(b.agents[i].id(), nix::sys::signal::Signal::SIGSTOP);
                    stopped = Some((i, Instant::now()));
                    rep.stops += 1;
                }
                "kill-broker" => b.kill9(),
                _ => {}
            }
        }
        if let Some((i, since)) = stopped {
            // Past the 2 s heartbeat timeout, then it wakes as a zombie.
            if since.elapsed() > Duration::from_millis(3_500) {
                signal(b.agents[i].id(), nix::sys::signal::Signal::SIGCONT);
                stopped = None;
            }
        }
        if plan.is_empty() && stopped.is_none() {
            let out = b.cli(&["status", &run, "--json"]);
            if out.status.success() {
                let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                if st[0]["state"] != "running" {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let makespan = started.elapsed();
    // Quiesce: let late results and acks settle before reading the logs.
    std::thread::sleep(Duration::from_millis(1_500));
    check_integrity(&b, &mut rep);
    check_invariants(&b, &run, n_agents, &mut rep);
    let st: serde_json::Value = serde_json::from_str(&b.ok(&["stats", &run, "--json"])).unwrap();
    let line = format!(
        "chaos{} seed={seed} tasks={} succeeded={} attempts={} lost={} retries_spent={} stale_ignored={} \
         crashes={} broker_restarts={} restart_to_accept_ms={:?} agent_kills={} stops={} \
         violations={} makespan_s={:.1}",
        if baseline { "-baseline" } else { "" },
        st["tasks"],
        st["succeeded"],
        st["attempts"],
        st["lost_attempts"],
        st["retries"],
        st["stale_results"],
        st["crashes"],
        rep.broker_restarts,
        rep.restart_to_accept_ms,
        rep.agent_kills,
        rep.stops,
        rep.violations.len(),
        makespan.as_secs_f64()
    );
    eprintln!("{line}");
    std::fs::write(b.dir.path().join("chaos-report.txt"), &line).unwrap();
    assert!(
        rep.violations.is_empty(),
        "chaos seed={seed}: {} violations:\n{}\n{line}",
        rep.violations.len(),
        rep.violations.join("\n")
    );
    assert!(
        baseline || rep.broker_restarts >= 2,
        "both broker crashes happened: {line}"
    );
}

fn b_events(dir: &std::path::Path, n: usize) -> String {
    dir.join(format!("agent-{n}.events"))
        .to_string_lossy()
        .into_owned()
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// N10: the store is intact after every crash.
fn check_integrity(b: &Broker, rep: &mut Report) {
    let db = b.db();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap_or_else(|e| e.to_string());
    if check != "ok" {
        rep.violations
            .push(format!("N10: integrity_check says {check}"));
    }
}

fn check_invariants(b: &Broker, run: &str, n_agents: usize, rep: &mut Report) {
    let v = &mut rep.violations;
    // Ground truth: one line per start and per end, in the order they happened.
    let truth = std::fs::read_to_string(b.work().join("truth.log")).unwrap_or_default();
    let mut starts: HashMap<u64, Vec<u64>> = HashMap::new(); // task -> attempts started
    let mut ok_end: HashMap<u64, Vec<u64>> = HashMap::new(); // task -> attempts that ended 0
    let mut order: HashMap<(u64, &str, u64), usize> = HashMap::new(); // (attempt, kind) -> line
    for (i, line) in truth.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(kind), Some(task), Some(attempt)) = (
            f.first().copied(),
            f.get(1).and_then(|x| x.parse::<u64>().ok()),
            f.get(2).and_then(|x| x.parse::<u64>().ok()),
        ) else {
            v.push(format!("ground truth: torn line {i}: {line:?}"));
            continue;
        };
        match kind {
            "start" => starts.entry(task).or_default().push(attempt),
            "end" if f.get(3) == Some(&"0") => ok_end.entry(task).or_default().push(attempt),
            _ => {}
        }
        order.insert(
            (attempt, if kind == "start" { "start" } else { "end" }, task),
            i,
        );
    }
    let db = b.db();
    let run_id: i64 = run.parse().unwrap();
    // N1: every task succeeded.
    let st: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(&b.ok(&["status", run, "--json"])).unwrap()[0]
            .clone();
    if st["state"] != "succeeded" || st["counts"]["succeeded"] != 2000 {
        v.push(format!(
            "N1: run is {} with counts {}",
            st["state"], st["counts"]
        ));
    }
    // N2: exactly one counted success per task.
    let mut counted: BTreeMap<u64, u64> = BTreeMap::new(); // task -> attempt
    let mut jobs_of: BTreeMap<u64, (String, u64)> = BTreeMap::new(); // task -> (job, index)
    {
        let mut q = db
            .prepare(
                "SELECT a.task_id, a.id, j.name, a.idx FROM attempts a JOIN jobs j ON j.id = a.job_id
                 WHERE a.run_id = ?1 AND a.end_class = 'SUCCESS'",
            )
            .unwrap();
        let rows = q
            .query_map([run_id], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)? as u64,
                ))
            })
            .unwrap();
        for row in rows {
            let (task, attempt, job, idx) = row.unwrap();
            if let Some(prev) = counted.insert(task, attempt) {
                v.push(format!(
                    "N2: task {task} counted twice (attempts {prev} and {attempt})"
                ));
            }
            jobs_of.insert(task, (job, idx));
        }
    }
    if counted.len() != 2000 {
        v.push(format!(
            "N2: {} tasks have a counted success, not 2000",
            counted.len()
        ));
    }
    // N3: every execution the tasks logged is an attempt the store knows.
    let known: BTreeSet<u64> = db
        .prepare("SELECT id FROM attempts WHERE run_id = ?1")
        .unwrap()
        .query_map([run_id], |r| Ok(r.get::<_, i64>(0)? as u64))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for (task, atts) in &starts {
        for a in atts {
            if !known.contains(a) {
                v.push(format!(
                    "N3: task {task} ran as attempt {a}, unknown to the store"
                ));
            }
        }
    }
    for (task, attempt) in &counted {
        if !ok_end.get(task).is_some_and(|a| a.contains(attempt)) {
            v.push(format!(
                "N3: task {task}'s counted attempt {attempt} never logged a successful end"
            ));
        }
    }
    // N5: each output holds the counted attempt's id (a stale attempt never
    // clobbers it), and no agent promoted an attempt that was not counted. The
    // broker promotes a counted attempt's outputs itself (shared filesystem),
    // so a counted output survives even an agent killed before its ack.
    let mut promoted: BTreeSet<u64> = BTreeSet::new();
    for n in 0..n_agents {
        let ev = std::fs::read_to_string(b_events(b.dir.path(), n)).unwrap_or_default();
        for line in ev.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let (Some(&"promote"), Some(a)) =
                (f.first(), f.get(1).and_then(|x| x.parse::<u64>().ok()))
            {
                promoted.insert(a);
            }
        }
    }
    for p in &promoted {
        if !counted.values().any(|c| c == p) {
            v.push(format!(
                "N5: attempt {p} was promoted but is not the counted one"
            ));
        }
    }
    for (task, attempt) in &counted {
        let (job, idx) = &jobs_of[task];
        let path = b.work().join(format!("out/{job}-{idx}.txt"));
        match std::fs::read_to_string(&path) {
            Ok(s) if s.trim() == attempt.to_string() => {}
            Ok(s) => v.push(format!(
                "N5: {} holds attempt {}, the counted one is {attempt}",
                path.display(),
                s.trim()
            )),
            Err(e) => v.push(format!("N5: {}: {e}", path.display())),
        }
    }
    // N6: honest accounting, compared with the ground truth.
    let stats: serde_json::Value = serde_json::from_str(&b.ok(&["stats", run, "--json"])).unwrap();
    let failed_execs = truth.lines().filter(|l| l.ends_with(" 3")).count() as u64;
    let retries = stats["retries"].as_u64().unwrap_or(u64::MAX);
    if retries > failed_execs {
        v.push(format!(
            "N6: {retries} retries spent but only {failed_execs} executions failed"
        ));
    }
    if failed_execs > 0 && retries == 0 {
        v.push("N6: failures happened but no retry is counted".into());
    }
    let attempts: u64 = stats["attempts"].as_u64().unwrap_or(0);
    if attempts != known.len() as u64 {
        v.push(format!(
            "N6: stats says {attempts} attempts, the store lists {}",
            known.len()
        ));
    }
    // N7: dependency order from the ground truth's own line order: a counted
    // attempt starts after every counted attempt of its parent jobs ended.
    let parents: HashMap<&str, Vec<&str>> = [
        ("spread", vec!["source"]),
        ("gather", vec!["spread"]),
        ("left", vec!["gather"]),
        ("right", vec!["gather"]),
        ("join", vec!["left", "right"]),
    ]
    .into_iter()
    .collect();
    let mut last_end: HashMap<&str, usize> = HashMap::new();
    let mut first_start: HashMap<&str, usize> = HashMap::new();
    for (task, attempt) in &counted {
        let job = jobs_of[task].0.as_str();
        let job: &str = ["source", "spread", "gather", "left", "right", "join"]
            .into_iter()
            .find(|j| *j == job)
            .unwrap_or("?");
        if let Some(&e) = order.get(&(*attempt, "end", *task)) {
            let x = last_end.entry(job).or_insert(0);
            *x = (*x).max(e);
        }
        if let Some(&s) = order.get(&(*attempt, "start", *task)) {
            let x = first_start.entry(job).or_insert(usize::MAX);
            *x = (*x).min(s);
        }
    }
    for (child, ps) in &parents {
        for p in ps {
            if let (Some(s), Some(e)) = (first_start.get(child), last_end.get(p)) {
                if s < e {
                    v.push(format!(
                        "N7: {child} started (line {s}) before {p} ended (line {e})"
                    ));
                }
            }
        }
    }
    // N8: the acknowledged submit is whole.
    let tasks: i64 = db
        .query_row(
            "SELECT SUM(task_count) FROM jobs WHERE run_id = ?1",
            [run_id],
            |r| r.get(0),
        )
        .unwrap_or(0);
    if tasks != 2000 {
        v.push(format!(
            "N8: the acknowledged run has {tasks} tasks, not 2000"
        ));
    }
    // N9: no attempt process survives; every agent's resources are free again.
    let work = b.work();
    let mut survivors = 0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let p = e.path();
            let Ok(env) = std::fs::read(p.join("environ")) else {
                continue;
            };
            let cwd = std::fs::read_link(p.join("cwd")).unwrap_or_default();
            if cwd == work && env.windows(19).any(|w| w == b"SCALABLE_ATTEMPT_ID") {
                survivors += 1;
            }
        }
    }
    if survivors > 0 {
        v.push(format!(
            "N9: {survivors} attempt processes survive quiescence"
        ));
    }
    let agents: serde_json::Value = serde_json::from_str(&b.ok(&["agents", "--json"])).unwrap();
    for a in agents.as_array().unwrap() {
        if a["free"]["cpus"] != a["resources"]["cpus"] && a["running"] == 0 && a["queued"] == 0 {
            v.push(format!(
                "N9: agent {} has resources committed with nothing on it",
                a["id"]
            ));
        }
    }
}
