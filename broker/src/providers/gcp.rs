//! The `gcp` provider through `gcloud compute` (`--format=json`).
//!
//! - start: ONE `gcloud compute instances create NAME… --metadata-from-file
//!   user-data=FILE` for all pilots of a request (the rendered cloud-init, read
//!   from a file so it is not on the command line). The instance of pilot
//!   `p-17` of target `gcp` is `scalable-gcp-p-17`; its agent reports the
//!   numeric instance id (cloud-init's `instance-id` on GCE), which the create
//!   call's JSON gives.
//! - status: ONE `gcloud compute instances list --zones=Z
//!   --filter=name=( 'A' 'B' … )` for all ids; an instance not listed is gone.
//! - stop: ONE `gcloud compute instances delete NAME… --quiet`.
//!
//! The token: the user-data reads it at boot from Secret Manager
//! (`gcloud secrets versions access`) into a 0600 file, so the VM needs the
//! `cloud-platform` scope and a service account allowed to read that secret.
//! A pilot whose agent leaves powers its VM off; GCE keeps a powered-off VM
//! (TERMINATED, its disk still billed) until `stop` deletes it.
//!
//! Tested with command-line snapshots and canned `gcloud` answers only: there
//! is no GCP endpoint here.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;

use scalable_common::manifest::{Provider, Target};

use crate::render::{PilotProvider, PilotSpec};
use scalable_common::quote::shell_join;

use super::{
    batches, check_request, dns_label, prices, render_one, states_in_order, write_file,
    zone_region, AgentId, Cli, CostEstimate, DeploymentProvider, PilotState, ProviderContext,
    ProviderError, RateLimiter, StartRequest, StartedPilot, CLOUD_QUERY_INTERVAL, IDS_PER_CALL_MAX,
};

const HINT: &str =
    "install the Google Cloud CLI and log in (gcloud auth login, gcloud config set project P)";
/// GCE instance names are DNS labels of at most this many characters.
const NAME_CHARS_MAX: usize = 63;
/// The image when neither the spec nor the target names one.
const DEFAULT_IMAGE: [&str; 2] = ["--image-family=debian-12", "--image-project=debian-cloud"];

pub struct GcpProvider {
    target: String,
    project: Option<String>,
    zone: String,
    machine_type: Option<String>,
    image: Option<String>,
    pilot_dir: PathBuf,
    cli: Cli,
    query: RateLimiter,
}

impl GcpProvider {
    pub fn new(target: &Target, ctx: &ProviderContext) -> GcpProvider {
        let (project, zone, machine_type, image) = match &target.provider {
            Provider::Gcp {
                project,
                zone,
                machine_type,
                image,
            } => (
                project.clone(),
                zone.clone(),
                machine_type.clone(),
                image.clone(),
            ),
            _ => (None, String::new(), None, None),
        };
        GcpProvider {
            target: target.name.clone(),
            project,
            zone,
            machine_type,
            image,
            pilot_dir: std::path::absolute(&ctx.pilot_dir).unwrap_or(ctx.pilot_dir.clone()),
            cli: ctx.cli("gcloud", HINT),
            query: ctx.limiter(CLOUD_QUERY_INTERVAL),
        }
    }

    /// The instance name of a pilot.
    pub fn instance_name(&self, pilot_id: &str) -> String {
        let mut name = dns_label(&format!("scalable-{}-{pilot_id}", self.target));
        name.truncate(NAME_CHARS_MAX);
        name.trim_end_matches('-').to_string()
    }

    fn argv(&self, op: &[&str]) -> Vec<String> {
        let mut argv = vec!["gcloud".to_string(), "compute".into(), "instances".into()];
        argv.extend(op.iter().map(|s| s.to_string()));
        argv
    }

    fn scope(&self, argv: &mut Vec<String>, zones: bool) {
        if let Some(p) = &self.project {
            argv.push(format!("--project={p}"));
        }
        argv.push(if zones {
            format!("--zones={}", self.zone)
        } else {
            format!("--zone={}", self.zone)
        });
    }

    fn machine(&self, spec: &PilotSpec) -> Result<(String, Option<String>), ProviderError> {
        let PilotProvider::Gcp {
            machine_type,
            image,
            ..
        } = &spec.provider
        else {
            return Err(ProviderError::Request(format!(
                "target {}: the spec is not a GCP pilot",
                self.target
            )));
        };
        let machine_type = machine_type
            .clone()
            .or_else(|| self.machine_type.clone())
            .ok_or_else(|| ProviderError::Config {
                target: self.target.clone(),
                field: "machine_type",
                reason: "is required (e.g. n2-standard-4)".into(),
            })?;
        Ok((machine_type, image.clone().or_else(|| self.image.clone())))
    }

    fn create_argv(
        &self,
        req: &StartRequest,
        user_data: &std::path::Path,
    ) -> Result<Vec<String>, ProviderError> {
        let (machine_type, image) = self.machine(&req.spec)?;
        let mut argv = self.argv(&["create"]);
        argv.extend(req.pilot_ids.iter().map(|p| self.instance_name(p)));
        self.scope(&mut argv, false);
        argv.push(format!("--machine-type={machine_type}"));
        match image {
            Some(i) => argv.push(format!("--image={i}")),
            None => argv.extend(DEFAULT_IMAGE.map(String::from)),
        }
        // The VM reads the token from Secret Manager with its service account.
        argv.push("--scopes=cloud-platform".into());
        argv.push(format!(
            "--metadata-from-file=user-data={}",
            user_data.display()
        ));
        let mut labels = format!("scalable-target={}", dns_label(&self.target));
        if let Some(tag) = &req.spec.tag {
            labels.push_str(&format!(",scalable-tag={}", dns_label(tag)));
        }
        argv.push(format!("--labels={labels}"));
        argv.push("--format=json".into());
        Ok(argv)
    }

    fn user_data_path(&self, req: &StartRequest) -> PathBuf {
        self.pilot_dir
            .join(&req.pilot_ids[0])
            .join("user-data.yaml")
    }
}

/// A GCE instance status as a pilot state.
pub fn gce_state(status: &str) -> PilotState {
    match status {
        "PROVISIONING" | "STAGING" => PilotState::Queued,
        "RUNNING" | "REPAIRING" => PilotState::Running,
        "STOPPING" | "STOPPED" | "SUSPENDING" | "SUSPENDED" | "TERMINATED" => PilotState::Ended {
            reason: status.to_string(),
        },
        _ => PilotState::Unknown,
    }
}

/// `instances list --format=json`: name → state.
pub fn parse_instances(v: &Value) -> HashMap<String, PilotState> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            Some((
                i["name"].as_str()?.to_string(),
                gce_state(i["status"].as_str().unwrap_or_default()),
            ))
        })
        .collect()
}

impl DeploymentProvider for GcpProvider {
    fn kind(&self) -> &'static str {
        "gcp"
    }

    fn validate(&self) -> Result<(), ProviderError> {
        if self.zone.trim().is_empty() {
            return Err(ProviderError::Config {
                target: self.target.clone(),
                field: "zone",
                reason: "is required (e.g. us-central1-a)".into(),
            });
        }
        if self.machine_type.is_none() {
            return Err(ProviderError::Config {
                target: self.target.clone(),
                field: "machine_type",
                reason: "is required (e.g. n2-standard-4)".into(),
            });
        }
        self.cli.check_installed()
    }

    fn start(&self, req: &StartRequest) -> Result<Vec<StartedPilot>, ProviderError> {
        check_request(req)?;
        let user_data = render_one(&req.spec, 1)?;
        let path = self.user_data_path(req);
        let argv = self.create_argv(req, &path)?;
        let line = shell_join(&argv);
        if req.dry_run {
            return Ok(req
                .pilot_ids
                .iter()
                .map(|p| StartedPilot {
                    pilot_id: p.clone(),
                    provider_id: "(dry run)".into(),
                    agent_id: AgentId::Exact("(dry run)".into()),
                    commands: vec![line.clone()],
                })
                .collect());
        }
        let dir = path.parent().expect("a pilot dir");
        write_file(dir, user_data.name(), user_data.text())?;
        let v = self.cli.run_json(&argv, None)?;
        let ids: HashMap<String, String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                let id = match &i["id"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                Some((i["name"].as_str()?.to_string(), id))
            })
            .collect();
        let mut started = Vec::new();
        for p in &req.pilot_ids {
            let name = self.instance_name(p);
            let Some(id) = ids.get(&name) else {
                let names: Vec<String> = req
                    .pilot_ids
                    .iter()
                    .map(|p| self.instance_name(p))
                    .collect();
                let _ = self.stop(&names);
                return Err(self
                    .cli
                    .bad_output(&argv, format!("instance {name} is not in the answer")));
            };
            started.push(StartedPilot {
                pilot_id: p.clone(),
                provider_id: name,
                agent_id: AgentId::Exact(id.clone()),
                commands: vec![line.clone()],
            });
        }
        Ok(started)
    }

    fn status(&self, provider_ids: &[String]) -> Result<Vec<(String, PilotState)>, ProviderError> {
        let mut found = HashMap::new();
        for chunk in batches(provider_ids, IDS_PER_CALL_MAX) {
            self.query.wait();
            let mut argv = self.argv(&["list"]);
            self.scope(&mut argv, true);
            let names: Vec<String> = chunk.iter().map(|n| format!("'{n}'")).collect();
            argv.push(format!("--filter=name=( {} )", names.join(" ")));
            argv.push("--format=json".into());
            found.extend(parse_instances(&self.cli.run_json(&argv, None)?));
        }
        Ok(states_in_order(
            provider_ids,
            found,
            "no longer known to GCE",
        ))
    }

    fn stop(&self, provider_ids: &[String]) -> Result<(), ProviderError> {
        for chunk in batches(provider_ids, IDS_PER_CALL_MAX) {
            self.query.wait();
            let mut argv = self.argv(&["delete"]);
            argv.extend(chunk);
            self.scope(&mut argv, false);
            argv.push("--quiet".into());
            self.cli.run(&argv, None)?;
        }
        Ok(())
    }

    fn commands(&self, req: &StartRequest) -> Result<Vec<String>, ProviderError> {
        check_request(req)?;
        render_one(&req.spec, 1)?;
        Ok(vec![shell_join(
            &self.create_argv(req, &self.user_data_path(req))?,
        )])
    }

    fn estimate_cost(&self, spec: &PilotSpec, pilots: u32, hours: f64) -> CostEstimate {
        let region = zone_region(&self.zone);
        let Ok((machine_type, _)) = self.machine(spec) else {
            return CostEstimate::unknown(format!(
                "unknown price for target {}: no machine_type",
                self.target
            ));
        };
        match prices::table().gcp(region, &machine_type) {
            Some(p) => CostEstimate::known(
                p,
                pilots,
                hours,
                format!(
                    "gcp {machine_type} in {region}: {p} {}/h on demand ({}, {})",
                    prices::table().currency(),
                    prices::PRICES_FILE,
                    prices::table().as_of()
                ),
            ),
            None => CostEstimate::unknown(format!(
                "unknown price for gcp {machine_type} in {region} (not in {}; add it there)",
                prices::PRICES_FILE
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::testing::{self, FakeRunner};
    use super::*;

    fn target() -> Target {
        testing::target(
            "gcp",
            Provider::Gcp {
                project: Some("demeter-lab".into()),
                zone: "us-central1-a".into(),
                machine_type: Some("n2-standard-4".into()),
                image: None,
            },
            2,
        )
    }

    fn spec() -> PilotSpec {
        testing::spec(PilotProvider::Gcp {
            zone: "us-central1-a".into(),
            machine_type: None,
            image: None,
        })
    }

    fn req(dry_run: bool) -> StartRequest {
        StartRequest {
            pilot_ids: vec!["p-1".into(), "p-2".into()],
            spec: spec(),
            dry_run,
        }
    }

    fn fake(answers: &[(i32, &str, &str)]) -> (Arc<FakeRunner>, GcpProvider) {
        let fake = Arc::new(FakeRunner::answering(answers));
        let mut ctx = ProviderContext::new("/home/alice/.scalable/pilots");
        ctx.runner = fake.clone();
        ctx.query_interval = Some(Duration::ZERO);
        (fake, GcpProvider::new(&target(), &ctx))
    }

    #[test]
    fn create_command_snapshot() {
        let (_, p) = fake(&[]);
        assert_eq!(
            p.commands(&req(false)).unwrap(),
            vec!["gcloud compute instances create scalable-gcp-p-1 scalable-gcp-p-2 --project=demeter-lab --zone=us-central1-a --machine-type=n2-standard-4 --image-family=debian-12 --image-project=debian-cloud --scopes=cloud-platform --metadata-from-file=user-data=/home/alice/.scalable/pilots/p-1/user-data.yaml --labels=scalable-target=gcp,scalable-tag=demeter --format=json"]
        );
        let dry = p.start(&req(true)).unwrap();
        assert_eq!(dry.len(), 2);
        assert_eq!(dry[0].commands, p.commands(&req(false)).unwrap());
    }

    #[test]
    fn start_status_stop_with_canned_answers() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeRunner::answering(&[
            (
                0,
                r#"[{"name":"scalable-gcp-p-1","id":"4411","status":"PROVISIONING"},{"name":"scalable-gcp-p-2","id":"4412","status":"PROVISIONING"}]"#,
                "",
            ),
            (
                0,
                r#"[{"name":"scalable-gcp-p-1","status":"RUNNING"},{"name":"scalable-gcp-p-2","status":"STAGING"}]"#,
                "",
            ),
            (0, "", ""),
        ]));
        let mut ctx = ProviderContext::new(dir.path());
        ctx.runner = fake.clone();
        ctx.query_interval = Some(Duration::ZERO);
        let p = GcpProvider::new(&target(), &ctx);
        let started = p.start(&req(false)).unwrap();
        assert_eq!(started[0].provider_id, "scalable-gcp-p-1");
        assert!(started[0].agent_id.matches("4411"));
        let ud = std::fs::read_to_string(dir.path().join("p-1/user-data.yaml")).unwrap();
        assert!(ud.contains("gcloud secrets versions access latest --secret demeter-agent-token"));
        let names = vec![
            "scalable-gcp-p-1".to_string(),
            "scalable-gcp-p-2".into(),
            "scalable-gcp-p-3".into(),
        ];
        let st = p.status(&names).unwrap();
        assert_eq!(st[0].1, PilotState::Running);
        assert_eq!(st[1].1, PilotState::Queued);
        assert!(matches!(st[2].1, PilotState::Ended { .. }));
        p.stop(&names).unwrap();
        let lines = fake.lines();
        assert_eq!(lines.len(), 3, "one call each: {lines:#?}");
        assert_eq!(
            lines[1],
            "gcloud compute instances list --project=demeter-lab --zones=us-central1-a '--filter=name=( '\\''scalable-gcp-p-1'\\'' '\\''scalable-gcp-p-2'\\'' '\\''scalable-gcp-p-3'\\'' )' --format=json"
        );
        assert_eq!(
            lines[2],
            "gcloud compute instances delete scalable-gcp-p-1 scalable-gcp-p-2 scalable-gcp-p-3 --project=demeter-lab --zone=us-central1-a --quiet"
        );
    }

    #[test]
    fn cost_from_the_zone_region() {
        let (_, p) = fake(&[]);
        let e = p.estimate_cost(&spec(), 3, 2.0);
        assert_eq!(e.per_pilot_hour, Some(0.194236));
        assert!(
            e.source
                .starts_with("gcp n2-standard-4 in us-central1: 0.194236 USD/h"),
            "{}",
            e.source
        );
    }
}
