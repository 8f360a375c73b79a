//! The `slurm` provider: one batch job per pilot.
//!
//! - start: writes the rendered sbatch script (render.rs, `count` 1) to
//!   `PILOT_DIR/<pilot id>/agent.sbatch` and runs
//!   `sbatch --parsable --chdir=PILOT_DIR/<pilot id> …/agent.sbatch`, so the
//!   job's output file lands next to its script. One job per pilot rather
//!   than an array: each pilot can be cancelled on its own, and `squeue`
//!   lists a pending array as one line until its elements start.
//! - status: ONE `squeue --noheader --states=all --format=%i|%T|%r --jobs=ID,…`
//!   for all ids (per [`super::IDS_PER_CALL_MAX`]), at most every
//!   [`QUERY_INTERVAL`]. A job squeue no longer lists is `Ended`. Not
//!   `squeue --json`: Slurm 22.05 (Debian 12) accepts it but ignores `--jobs`
//!   and `--states` with it, and prints every job of the cluster at about
//!   10 KB each; [`parse_squeue_json`] reads it for `SlurmProvider::with_json`
//!   on Slurm versions that filter (23.02 and later), filtering again here.
//! - stop: `scancel ID …` in one call; Slurm sends SIGTERM (the agent drains),
//!   then SIGKILL after the cluster's KillWait.
//!
//! The token: the script passes `--token-file` (the broker's `agent.token` on
//! the shared filesystem); no token is in the script or on any command line.
//! The agent's `SCALABLE_PILOT_ID` is the job id (the script exports it).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use scalable_common::manifest::Target;

use crate::render::{PilotProvider, PilotSpec};
use scalable_common::quote::shell_join;

use super::{
    batches, check_request, first_line, prices, render_one, states_in_order, write_file, AgentId,
    Cli, CostEstimate, DeploymentProvider, PilotState, ProviderContext, ProviderError, RateLimiter,
    StartRequest, StartedPilot, IDS_PER_CALL_MAX,
};

/// Least time between two `squeue`/`scancel` calls of one provider.
pub const QUERY_INTERVAL: Duration = Duration::from_secs(2);
/// Least time between two `sbatch` calls (one RPC each; sites allow hundreds
/// of submissions a minute).
pub const SUBMIT_INTERVAL: Duration = Duration::from_millis(100);
const HINT: &str = "run it on a Slurm login node with the Slurm client on PATH and the controller up; for this project's tests, run scripts/slurm-testbed.sh start";
const GONE: &str = "no longer known to Slurm";

pub struct SlurmProvider {
    target: String,
    pilot_dir: PathBuf,
    node_hour: Option<f64>,
    sbatch: Cli,
    squeue: Cli,
    scancel: Cli,
    query: RateLimiter,
    submit: RateLimiter,
    json: bool,
}

impl SlurmProvider {
    pub fn new(target: &Target, ctx: &ProviderContext) -> SlurmProvider {
        SlurmProvider {
            target: target.name.clone(),
            pilot_dir: std::path::absolute(&ctx.pilot_dir).unwrap_or(ctx.pilot_dir.clone()),
            node_hour: ctx.slurm_node_hour,
            sbatch: ctx.cli("sbatch", HINT),
            squeue: ctx.cli("squeue", HINT),
            scancel: ctx.cli("scancel", HINT),
            query: ctx.limiter(QUERY_INTERVAL),
            submit: RateLimiter::new(SUBMIT_INTERVAL),
            json: false,
        }
    }

    /// Reads state with `squeue --json` (Slurm 23.02 and later filter it).
    pub fn with_json(mut self, json: bool) -> SlurmProvider {
        self.json = json;
        self
    }

    fn sbatch_argv(&self, pilot_id: &str) -> (PathBuf, Vec<String>) {
        let dir = self.pilot_dir.join(pilot_id);
        let script = dir.join("agent.sbatch");
        let argv = vec![
            "sbatch".to_string(),
            "--parsable".into(),
            format!("--chdir={}", dir.display()),
            script.display().to_string(),
        ];
        (dir, argv)
    }

    fn squeue_argv(&self, ids: &[String]) -> Vec<String> {
        if self.json {
            vec!["squeue".into(), "--json".into(), "--states=all".into()]
        } else {
            vec![
                "squeue".into(),
                "--noheader".into(),
                "--states=all".into(),
                "--format=%i|%T|%r".into(),
                format!("--jobs={}", ids.join(",")),
            ]
        }
    }

    fn check_spec(&self, spec: &PilotSpec) -> Result<(), ProviderError> {
        if !matches!(spec.provider, PilotProvider::Slurm { .. }) {
            return Err(ProviderError::Request(format!(
                "target {}: the spec is not a Slurm pilot",
                self.target
            )));
        }
        Ok(())
    }

    /// Best effort, after a failed start: no pilot is left that nobody records.
    fn cancel_quietly(&self, ids: &[String]) {
        if !ids.is_empty() {
            let _ = self.stop(ids);
        }
    }
}

impl DeploymentProvider for SlurmProvider {
    fn kind(&self) -> &'static str {
        "slurm"
    }

    fn validate(&self) -> Result<(), ProviderError> {
        self.sbatch.check_installed()?;
        self.squeue.check_installed()?;
        self.scancel.check_installed()
    }

    fn start(&self, req: &StartRequest) -> Result<Vec<StartedPilot>, ProviderError> {
        check_request(req)?;
        self.check_spec(&req.spec)?;
        let script = render_one(&req.spec, 1)?;
        let mut started: Vec<StartedPilot> = Vec::new();
        for pilot_id in &req.pilot_ids {
            let (dir, argv) = self.sbatch_argv(pilot_id);
            let line = shell_join(&argv);
            if req.dry_run {
                started.push(StartedPilot {
                    pilot_id: pilot_id.clone(),
                    provider_id: "(dry run)".into(),
                    agent_id: AgentId::Exact("(dry run)".into()),
                    commands: vec![line],
                });
                continue;
            }
            let submitted = write_file(&dir, script.name(), script.text()).and_then(|_| {
                self.submit.wait();
                let out = self.sbatch.run(&argv, None)?;
                parse_sbatch_parsable(&out).ok_or_else(|| {
                    self.sbatch
                        .bad_output(&argv, format!("not a job id: {out:?}"))
                })
            });
            match submitted {
                Ok(job) => started.push(StartedPilot {
                    pilot_id: pilot_id.clone(),
                    provider_id: job.clone(),
                    agent_id: AgentId::Exact(job),
                    commands: vec![line],
                }),
                Err(e) => {
                    let ids: Vec<String> = started.iter().map(|p| p.provider_id.clone()).collect();
                    self.cancel_quietly(&ids);
                    return Err(e);
                }
            }
        }
        Ok(started)
    }

    fn status(&self, provider_ids: &[String]) -> Result<Vec<(String, PilotState)>, ProviderError> {
        let mut found = HashMap::new();
        for chunk in batches(provider_ids, IDS_PER_CALL_MAX) {
            self.query.wait();
            let argv = self.squeue_argv(&chunk);
            let out = self.squeue.run_raw(&argv, None)?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                // squeue fails when none of the ids is known (any more).
                if first_line(&out.stderr).contains("Invalid job id specified") {
                    continue;
                }
                return Err(self.squeue.failed(&argv, &out));
            }
            let rows = if self.json {
                parse_squeue_json(&stdout).map_err(|e| self.squeue.bad_output(&argv, e))?
            } else {
                parse_squeue_format(&stdout)
            };
            for (id, state) in rows {
                if chunk.contains(&id) {
                    found.insert(id, state);
                }
            }
        }
        Ok(states_in_order(provider_ids, found, GONE))
    }

    fn stop(&self, provider_ids: &[String]) -> Result<(), ProviderError> {
        for chunk in batches(provider_ids, IDS_PER_CALL_MAX) {
            self.query.wait();
            let mut argv = vec!["scancel".to_string()];
            argv.extend(chunk);
            // scancel exits 0 for ids that are already gone (22.05), and
            // reports the others on stderr; a failure here is the controller's.
            self.scancel.run(&argv, None)?;
        }
        Ok(())
    }

    fn commands(&self, req: &StartRequest) -> Result<Vec<String>, ProviderError> {
        let dry = StartRequest {
            dry_run: true,
            ..req.clone()
        };
        Ok(self
            .start(&dry)?
            .into_iter()
            .flat_map(|p| p.commands)
            .collect())
    }

    fn estimate_cost(&self, _spec: &PilotSpec, pilots: u32, hours: f64) -> CostEstimate {
        match self.node_hour {
            Some(price) => CostEstimate::known(
                price,
                pilots,
                hours,
                format!(
                    "slurm target {}: the site's node-hour price {price:.2} {}",
                    self.target,
                    prices::table().currency()
                ),
            ),
            None => {
                let price = prices::table().slurm_node_hour();
                CostEstimate::known(
                    price,
                    pilots,
                    hours,
                    format!(
                        "slurm: the default node-hour price {price:.2} {} of {} (no price for target {} in the manifest)",
                        prices::table().currency(),
                        prices::PRICES_FILE,
                        self.target
                    ),
                )
            }
        }
    }
}

/// `sbatch --parsable` prints `JOBID` or `JOBID;CLUSTER`.
pub fn parse_sbatch_parsable(out: &str) -> Option<String> {
    let id = out.trim().split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| id.to_string())
}

/// A Slurm job state (`%T`, `job_state`) and reason as a pilot state.
pub fn slurm_state(state: &str, reason: &str) -> PilotState {
    match state {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
        | "RESV_DEL_HOLD" => PilotState::Queued,
        "RUNNING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT" | "RESIZING" | "SUSPENDED"
        | "STOPPED" => PilotState::Running,
        "COMPLETED" | "CANCELLED" | "FAILED" | "TIMEOUT" | "NODE_FAIL" | "PREEMPTED"
        | "BOOT_FAIL" | "DEADLINE" | "OUT_OF_MEMORY" | "SPECIAL_EXIT" | "REVOKED" => {
            let reason = reason.trim();
            PilotState::Ended {
                reason: if reason.is_empty() || reason == "None" || reason == "(null)" {
                    state.to_string()
                } else {
                    format!("{state} ({reason})")
                },
            }
        }
        _ => PilotState::Unknown,
    }
}

/// `squeue --noheader --format=%i|%T|%r` output: job id → state.
pub fn parse_squeue_format(text: &str) -> HashMap<String, PilotState> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().splitn(3, '|');
            let id = parts.next()?.trim();
            let state = parts.next()?.trim();
            let reason = parts.next().unwrap_or("").trim();
            (!id.is_empty()).then(|| (id.to_string(), slurm_state(state, reason)))
        })
        .collect()
}

/// `squeue --json` output: job id → state. `job_state` is a string up to
/// Slurm 23.02 and a list of flags (first the state) after.
pub fn parse_squeue_json(text: &str) -> Result<HashMap<String, PilotState>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let jobs = v
        .get("jobs")
        .and_then(|j| j.as_array())
        .ok_or("no \"jobs\" list")?;
    let mut out = HashMap::new();
    for job in jobs {
        let id = match job.get("job_id") {
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => return Err("a job without a job_id".into()),
        };
        let state = match job.get("job_state") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(a)) => a
                .first()
                .and_then(|s| s.as_str())
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        let reason = job
            .get("state_reason")
            .and_then(|r| r.as_str())
            .unwrap_or_default();
        out.insert(id, slurm_state(&state, reason));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use scalable_common::manifest::Provider;

    use super::super::testing::{self, FakeRunner};
    use super::*;

    fn target() -> Target {
        testing::target(
            "hpc",
            Provider::Slurm {
                queue: None,
                account: None,
                walltime_ms: Some(600_000),
                interface: None,
                qos: None,
                constraint: None,
                extra_directives: vec![],
                setup: vec![],
            },
            2,
        )
    }

    fn slurm_spec(job_name: &str) -> PilotSpec {
        testing::spec(PilotProvider::Slurm {
            queue: None,
            account: None,
            walltime: Some("00:10:00".into()),
            qos: None,
            constraint: None,
            extra_directives: vec![],
            setup: vec![],
            job_name: job_name.into(),
            output: None,
        })
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn squeue_format_parsing() {
        let text = "17|PENDING|Resources\n18|RUNNING|None\n19|CANCELLED|None\n20|TIMEOUT|TimeLimit\n21|WEIRD|x\n\n";
        let m = parse_squeue_format(text);
        assert_eq!(m["17"], PilotState::Queued);
        assert_eq!(m["18"], PilotState::Running);
        assert_eq!(
            m["19"],
            PilotState::Ended {
                reason: "CANCELLED".into()
            }
        );
        assert_eq!(
            m["20"],
            PilotState::Ended {
                reason: "TIMEOUT (TimeLimit)".into()
            }
        );
        assert_eq!(m["21"], PilotState::Unknown);
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn squeue_json_parsing_22_05_and_23_02_shapes() {
        // Trimmed from this machine's Slurm 22.05.8 `squeue --json`.
        let old = r#"{"meta":{"Slurm":{"release":"22.05.8"}},"errors":[],"jobs":[
            {"job_id":1,"job_state":"RUNNING","state_reason":"None","array_job_id":0},
            {"job_id":2,"job_state":"PENDING","state_reason":"Resources","array_job_id":2}]}"#;
        let m = parse_squeue_json(old).unwrap();
        assert_eq!(m["1"], PilotState::Running);
        assert_eq!(m["2"], PilotState::Queued);
        let new = r#"{"jobs":[{"job_id":7,"job_state":["CANCELLED"],"state_reason":"None"}]}"#;
        assert_eq!(
            parse_squeue_json(new).unwrap()["7"],
            PilotState::Ended {
                reason: "CANCELLED".into()
            }
        );
        assert!(parse_squeue_json("{}").is_err());
    }

    #[test]
    fn sbatch_parsable_output() {
        assert_eq!(parse_sbatch_parsable("42\n"), Some("42".into()));
        assert_eq!(parse_sbatch_parsable("42;cluster\n"), Some("42".into()));
        assert_eq!(parse_sbatch_parsable("Submitted batch job 42"), None);
    }

    #[test]
    fn status_is_one_squeue_call_for_all_ids_and_rate_limited() {
        let fake = Arc::new(FakeRunner::answering(&[
            (0, "1|RUNNING|None\n2|PENDING|Priority\n", ""),
            (1, "", "slurm_load_jobs error: Invalid job id specified"),
        ]));
        let mut ctx = ProviderContext::new("/tmp/pilots");
        ctx.runner = fake.clone();
        ctx.query_interval = Some(Duration::from_millis(300));
        let p = SlurmProvider::new(&target(), &ctx);
        let t0 = Instant::now();
        let got = p.status(&ids(&["1", "2", "3"])).unwrap();
        assert_eq!(
            got,
            vec![
                ("1".into(), PilotState::Running),
                ("2".into(), PilotState::Queued),
                (
                    "3".into(),
                    PilotState::Ended {
                        reason: GONE.into()
                    }
                ),
            ]
        );
        // None known any more: squeue fails, every id is Ended.
        let gone = p.status(&ids(&["3"])).unwrap();
        assert!(matches!(gone[0].1, PilotState::Ended { .. }));
        assert!(t0.elapsed() >= Duration::from_millis(300), "rate limited");
        assert_eq!(
            fake.lines(),
            vec![
                "squeue --noheader --states=all '--format=%i|%T|%r' --jobs=1,2,3",
                "squeue --noheader --states=all '--format=%i|%T|%r' --jobs=3",
            ]
        );
    }

    #[test]
    fn commands_and_dry_run_snapshot() {
        let ctx = ProviderContext::new("/home/alice/.scalable/pilots");
        let p = SlurmProvider::new(&target(), &ctx);
        let req = StartRequest {
            pilot_ids: ids(&["p-1", "p-2"]),
            spec: slurm_spec("scalable-hpc-demeter"),
            dry_run: false,
        };
        assert_eq!(
            p.commands(&req).unwrap(),
            vec![
                "sbatch --parsable --chdir=/home/alice/.scalable/pilots/p-1 /home/alice/.scalable/pilots/p-1/agent.sbatch",
                "sbatch --parsable --chdir=/home/alice/.scalable/pilots/p-2 /home/alice/.scalable/pilots/p-2/agent.sbatch",
            ]
        );
        let est = p.estimate_cost(&req.spec, 2, 3.0);
        assert_eq!(est.total, Some(6.0));
        assert!(
            est.source
                .contains("default node-hour price 1.00 USD of prices/prices.json"),
            "{}",
            est.source
        );
        let mut ctx = ctx;
        ctx.slurm_node_hour = Some(0.5);
        let est = SlurmProvider::new(&target(), &ctx).estimate_cost(&req.spec, 2, 3.0);
        assert_eq!(est.total, Some(3.0));
        assert!(
            est.source.contains("site's node-hour price 0.50"),
            "{}",
            est.source
        );
    }

    // ------------------------------------------------------------ real Slurm

    const TESTBED: &str =
        "these tests need a real Slurm: run scripts/slurm-testbed.sh start (as root) first";

    /// Against the real one-node Slurm of scripts/slurm-testbed.sh (`.ci/run`
    /// starts it): two pilots whose "agent" is a stand-in that records its
    /// environment and sleeps (the real agent's end-to-end is the integration
    /// tests'), through the real sbatch, squeue and scancel.
    #[test]
    fn real_slurm_start_status_stop() {
        let dir = tempfile::tempdir().unwrap();
        let fake_agent = testing::fake_agent(
            dir.path(),
            "#!/bin/sh\n# stands in for scalable-agent: records what it got, then idles\nprintf '%s\\n' \"$SCALABLE_PILOT_ID\" > pilot-id\nprintf '%s\\n' \"$*\" > args\nexec sleep 300\n",
        );
        let token_file = dir.path().join("agent.token");
        std::fs::write(&token_file, "127.0.0.1:7420 ab SECRET-TOKEN-VALUE\n").unwrap();

        let mut ctx = ProviderContext::new(dir.path().join("pilots"));
        ctx.query_interval = Some(Duration::from_millis(500));
        let p = provider_for_target(&ctx);
        p.validate().unwrap_or_else(|e| panic!("{e}\n{TESTBED}"));

        let mut spec = slurm_spec("scalable-provider-test");
        spec.agent_path = fake_agent.display().to_string();
        spec.token_file = Some(token_file.display().to_string());
        spec.cpus = 1;
        spec.memory_bytes = Some(64 << 20);
        let req = StartRequest {
            pilot_ids: ids(&["p-1", "p-2"]),
            spec,
            dry_run: false,
        };
        let started = p.start(&req).unwrap_or_else(|e| panic!("{e}\n{TESTBED}"));
        assert_eq!(started.len(), 2);
        let jobs: Vec<String> = started.iter().map(|s| s.provider_id.clone()).collect();
        let guard = CancelOnDrop(&*p, jobs.clone());
        for s in &started {
            assert!(parse_sbatch_parsable(&s.provider_id).is_some(), "{s:?}");
            assert!(!s.commands.join(" ").contains("SECRET"));
            let script = std::fs::read_to_string(
                dir.path()
                    .join("pilots")
                    .join(&s.pilot_id)
                    .join("agent.sbatch"),
            )
            .unwrap();
            assert!(!script.contains("SECRET-TOKEN-VALUE"));
            assert!(script.contains("--token-file"));
        }

        // Queued or running, and at least one runs (the node has room for both).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let states = p.status(&jobs).unwrap();
            assert_eq!(states.len(), 2);
            for (_, st) in &states {
                assert!(
                    matches!(st, PilotState::Queued | PilotState::Running),
                    "{states:?}"
                );
            }
            if states.iter().all(|(_, s)| *s == PilotState::Running) {
                break;
            }
            assert!(Instant::now() < deadline, "pilots never ran: {states:?}");
        }
        // The stand-in agent ran through srun with the job id as its pilot id.
        for s in &started {
            let id_file = dir.path().join("pilots").join(&s.pilot_id).join("pilot-id");
            let deadline = Instant::now() + Duration::from_secs(20);
            while !id_file.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            let reported = std::fs::read_to_string(&id_file).unwrap();
            assert!(s.agent_id.matches(reported.trim()), "{reported:?} vs {s:?}");
            let args =
                std::fs::read_to_string(dir.path().join("pilots").join(&s.pilot_id).join("args"))
                    .unwrap();
            assert!(args.contains("--token-file"), "{args}");
            assert!(args.contains("--lifetime 00:09:00"), "{args}");
        }

        p.stop(&jobs).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let states = p.status(&jobs).unwrap();
            if states
                .iter()
                .all(|(_, s)| matches!(s, PilotState::Ended { .. }))
            {
                for (_, s) in &states {
                    let PilotState::Ended { reason } = s else {
                        unreachable!()
                    };
                    assert!(
                        reason.starts_with("CANCELLED") || reason == GONE,
                        "{reason}"
                    );
                }
                break;
            }
            assert!(Instant::now() < deadline, "pilots never ended: {states:?}");
        }
        drop(guard);
        // An id Slurm never had is Ended, not an error.
        let none = p.status(&ids(&["999999999"])).unwrap();
        assert!(matches!(none[0].1, PilotState::Ended { .. }), "{none:?}");
    }

    fn provider_for_target(ctx: &ProviderContext) -> Box<dyn DeploymentProvider> {
        Box::new(SlurmProvider::new(&target(), ctx))
    }

    /// Cancels the test's jobs even when an assertion fails.
    struct CancelOnDrop<'a>(&'a dyn DeploymentProvider, Vec<String>);

    impl Drop for CancelOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.stop(&self.1);
        }
    }
}
