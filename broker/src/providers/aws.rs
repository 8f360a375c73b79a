//! The `aws` provider through the `aws` CLI (`--output json`), against AWS or
//! any endpoint that speaks its API (`--endpoint-url`, e.g. moto).
//!
//! - ec2: ONE `aws ec2 run-instances --count N` for all pilots of a request,
//!   with the rendered cloud-init as user-data (`file://`, so the text is not
//!   on the command line) and `--instance-initiated-shutdown-behavior
//!   terminate` (a pilot whose agent leaves powers off, and that must end the
//!   instance, not leave it stopped); `describe-instances --filters
//!   Name=instance-id,Values=…` for status (a filter, unlike `--instance-ids`,
//!   does not fail the whole call for one id AWS has forgotten);
//!   `terminate-instances`. The agent's `SCALABLE_PILOT_ID` is the instance id.
//! - fargate: `aws ecs register-task-definition --cli-input-json file://…`
//!   (the rendered task definition) once per request, then one `run-task` per
//!   pilot (each gets its own `SCALABLE_PILOT_ID` through `--overrides`; a
//!   run-task starts at most 10 and shares overrides); `describe-tasks` for
//!   status (100 ARNs a call); `stop-task`, one call per task: ECS has no
//!   batched stop.
//!
//! Tokens: the EC2 user-data fetches the token from SSM at boot; the Fargate
//! task reads it from an ECS secret (`valueFrom`). Neither is ever on a
//! command line or in a rendered file.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use scalable_common::manifest::{Provider, Target};

use crate::render::{PilotProvider, PilotSpec};
use scalable_common::quote::shell_join;

use super::{
    batches, check_request, prices, render_one, states_in_order, write_file, AgentId, Cli,
    CostEstimate, DeploymentProvider, PilotState, ProviderContext, ProviderError, RateLimiter,
    StartRequest, StartedPilot, CLOUD_QUERY_INTERVAL, IDS_PER_CALL_MAX,
};

const HINT: &str = "install the aws CLI (pip install awscli) and give it credentials (AWS_PROFILE or AWS_ACCESS_KEY_ID); for this project's tests, run scripts/moto-testbed.sh start";
/// ECS `describe-tasks` takes at most this many tasks.
const ECS_TASKS_PER_CALL_MAX: usize = 100;
/// The container the rendered task definition runs.
const CONTAINER: &str = "scalable-agent";
/// ECS `startedBy` is at most 36 characters.
const STARTED_BY_CHARS_MAX: usize = 36;

/// What EC2 and Fargate share: the CLI, the region and endpoint, networking.
struct Aws {
    target: String,
    region: String,
    endpoint_url: Option<String>,
    subnet: Option<String>,
    security_groups: Vec<String>,
    pilot_dir: PathBuf,
    cli: Cli,
    query: RateLimiter,
}

impl Aws {
    fn new(target: &Target, ctx: &ProviderContext) -> Aws {
        let (region, subnet, security_groups, endpoint_url) = match &target.provider {
            Provider::Aws {
                region,
                subnet,
                security_groups,
                endpoint_url,
                ..
            } => (
                region.clone(),
                subnet.clone(),
                security_groups.clone(),
                endpoint_url.clone(),
            ),
            _ => (String::new(), None, Vec::new(), None),
        };
        Aws {
            target: target.name.clone(),
            region,
            // The target's own endpoint_url wins over the broker's environment.
            endpoint_url: endpoint_url.or_else(|| ctx.aws_endpoint_url.clone()),
            subnet,
            security_groups,
            pilot_dir: std::path::absolute(&ctx.pilot_dir).unwrap_or(ctx.pilot_dir.clone()),
            cli: ctx.cli("aws", HINT),
            query: ctx.limiter(CLOUD_QUERY_INTERVAL),
        }
    }

    /// `aws --output json --region R [--endpoint-url U] SERVICE OP`.
    fn argv(&self, service: &str, op: &str) -> Vec<String> {
        let mut argv = vec![
            "aws".to_string(),
            "--output".into(),
            "json".into(),
            "--region".into(),
            self.region.clone(),
        ];
        if let Some(url) = &self.endpoint_url {
            argv.push("--endpoint-url".into());
            argv.push(url.clone());
        }
        argv.push(service.into());
        argv.push(op.into());
        argv
    }

    fn config(&self, field: &'static str, reason: impl Into<String>) -> ProviderError {
        ProviderError::Config {
            target: self.target.clone(),
            field,
            reason: reason.into(),
        }
    }

    fn validate(&self) -> Result<(), ProviderError> {
        if self.region.trim().is_empty() {
            return Err(self.config("region", "is required (e.g. us-east-1)"));
        }
        self.cli.check_installed()
    }

    /// The request's files live in its first pilot's directory.
    fn batch_dir(&self, req: &StartRequest) -> PathBuf {
        self.pilot_dir.join(&req.pilot_ids[0])
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

// ------------------------------------------------------------------ ec2

pub struct Ec2Provider {
    aws: Aws,
    instance_type: Option<String>,
    ami: Option<String>,
}

impl Ec2Provider {
    pub fn new(target: &Target, ctx: &ProviderContext) -> Ec2Provider {
        let (instance_type, ami) = match &target.provider {
            Provider::Aws {
                instance_type, ami, ..
            } => (instance_type.clone(), ami.clone()),
            _ => (None, None),
        };
        Ec2Provider {
            aws: Aws::new(target, ctx),
            instance_type,
            ami,
        }
    }

    /// The instance type and AMI: the spec's, else the target's.
    fn launch(&self, spec: &PilotSpec) -> Result<(String, String), ProviderError> {
        let PilotProvider::Ec2 {
            instance_type, ami, ..
        } = &spec.provider
        else {
            return Err(ProviderError::Request(format!(
                "target {}: the spec is not an EC2 pilot",
                self.aws.target
            )));
        };
        let instance_type = instance_type
            .clone()
            .or_else(|| self.instance_type.clone())
            .ok_or_else(|| {
                self.aws
                    .config("instance_type", "is required (e.g. c6i.2xlarge)")
            })?;
        let ami = ami
            .clone()
            .or_else(|| self.ami.clone())
            .ok_or_else(|| {
                self.aws
                    .config("ami", "is required: an image with cloud-init and the aws CLI (e.g. ami-0abcdef1234567890)")
            })?;
        Ok((instance_type, ami))
    }

    fn run_instances_argv(
        &self,
        req: &StartRequest,
        user_data: &std::path::Path,
    ) -> Result<Vec<String>, ProviderError> {
        let (instance_type, ami) = self.launch(&req.spec)?;
        let mut argv = self.aws.argv("ec2", "run-instances");
        argv.extend([
            "--image-id".into(),
            ami,
            "--instance-type".into(),
            instance_type,
            "--count".into(),
            req.pilot_ids.len().to_string(),
            "--user-data".into(),
            format!("file://{}", user_data.display()),
            "--instance-initiated-shutdown-behavior".into(),
            "terminate".into(),
        ]);
        if let Some(subnet) = &self.aws.subnet {
            argv.extend(["--subnet-id".into(), subnet.clone()]);
        }
        if !self.aws.security_groups.is_empty() {
            argv.push("--security-group-ids".into());
            argv.extend(self.aws.security_groups.iter().cloned());
        }
        let mut tags = vec![
            json!({"Key": "Name", "Value": format!("scalable-{}", self.aws.target)}),
            json!({"Key": "scalable:target", "Value": self.aws.target}),
        ];
        if let Some(tag) = &req.spec.tag {
            tags.push(json!({"Key": "scalable:tag", "Value": tag}));
        }
        argv.extend([
            "--tag-specifications".into(),
            json!([{"ResourceType": "instance", "Tags": tags}]).to_string(),
        ]);
        Ok(argv)
    }
}

/// An EC2 instance state as a pilot state.
pub fn ec2_state(name: &str, reason: Option<&str>) -> PilotState {
    match name {
        "pending" => PilotState::Queued,
        "running" => PilotState::Running,
        "shutting-down" | "terminated" | "stopping" | "stopped" => PilotState::Ended {
            reason: super::state_with_reason(name, reason),
        },
        _ => PilotState::Unknown,
    }
}

/// `describe-instances` output: instance id → state.
pub fn parse_describe_instances(v: &Value) -> HashMap<String, PilotState> {
    let mut out = HashMap::new();
    for r in v["Reservations"].as_array().into_iter().flatten() {
        for i in r["Instances"].as_array().into_iter().flatten() {
            if let Some(id) = i["InstanceId"].as_str() {
                let state = ec2_state(
                    str_at(i, &["State", "Name"]).unwrap_or_default(),
                    str_at(i, &["StateReason", "Message"]),
                );
                out.insert(id.to_string(), state);
            }
        }
    }
    out
}

impl DeploymentProvider for Ec2Provider {
    fn kind(&self) -> &'static str {
        "ec2"
    }

    fn validate(&self) -> Result<(), ProviderError> {
        self.aws.validate()?;
        if self.instance_type.is_none() {
            return Err(self
                .aws
                .config("instance_type", "is required (e.g. c6i.2xlarge)"));
        }
        if self.ami.is_none() {
            return Err(self.aws.config(
                "ami",
                "is required: an image with cloud-init and the aws CLI",
            ));
        }
        Ok(())
    }

    fn start(&self, req: &StartRequest) -> Result<Vec<StartedPilot>, ProviderError> {
        check_request(req)?;
        let user_data = render_one(&req.spec, 1)?;
        let dir = self.aws.batch_dir(req);
        let path = dir.join(user_data.name());
        let argv = self.run_instances_argv(req, &path)?;
        let line = shell_join(&argv);
        if req.dry_run {
            return Ok(dry_run(req, &[line]));
        }
        write_file(&dir, user_data.name(), user_data.text())?;
        let v = self.aws.cli.run_json(&argv, None)?;
        let ids: Vec<String> = v["Instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["InstanceId"].as_str().map(String::from))
            .collect();
        if ids.len() != req.pilot_ids.len() {
            let _ = self.stop(&ids);
            return Err(self.aws.cli.bad_output(
                &argv,
                format!("{} instances for {} pilots", ids.len(), req.pilot_ids.len()),
            ));
        }
        Ok(req
            .pilot_ids
            .iter()
            .zip(ids)
            .map(|(pilot, instance)| StartedPilot {
                pilot_id: pilot.clone(),
                provider_id: instance.clone(),
                agent_id: AgentId::Exact(instance),
                commands: vec![line.clone()],
            })
            .collect())
    }

    fn status(&self, provider_ids: &[String]) -> Result<Vec<(String, PilotState)>, ProviderError> {
        let mut found = HashMap::new();
        for chunk in batches(provider_ids, IDS_PER_CALL_MAX) {
            self.aws.query.wait();
            let mut argv = self.aws.argv("ec2", "describe-instances");
            argv.extend([
                "--filters".into(),
                format!("Name=instance-id,Values={}", chunk.join(",")),
            ]);
            found.extend(parse_describe_instances(
                &self.aws.cli.run_json(&argv, None)?,
            ));
        }
        Ok(states_in_order(
            provider_ids,
            found,
            "no longer known to EC2",
        ))
    }

    fn stop(&self, provider_ids: &[String]) -> Result<(), ProviderError> {
        for chunk in batches(provider_ids, IDS_PER_CALL_MAX) {
            self.aws.query.wait();
            let mut argv = self.aws.argv("ec2", "terminate-instances");
            argv.push("--instance-ids".into());
            argv.extend(chunk);
            self.aws.cli.run(&argv, None)?;
        }
        Ok(())
    }

    fn commands(&self, req: &StartRequest) -> Result<Vec<String>, ProviderError> {
        check_request(req)?;
        let path = self.aws.batch_dir(req).join("user-data.yaml");
        render_one(&req.spec, 1)?;
        Ok(vec![shell_join(&self.run_instances_argv(req, &path)?)])
    }

    fn estimate_cost(&self, spec: &PilotSpec, pilots: u32, hours: f64) -> CostEstimate {
        let Ok((instance_type, _)) = self.launch(spec).or_else(|_| {
            self.instance_type
                .clone()
                .map(|t| (t, String::new()))
                .ok_or(())
        }) else {
            return CostEstimate::unknown(format!(
                "unknown price for target {}: no instance_type",
                self.aws.target
            ));
        };
        let region = &self.aws.region;
        match prices::table().ec2(region, &instance_type) {
            Some(p) => CostEstimate::known(
                p,
                pilots,
                hours,
                format!(
                    "aws ec2 {instance_type} in {region}: {p} {}/h on demand ({}, {})",
                    prices::table().currency(),
                    prices::PRICES_FILE,
                    prices::table().as_of()
                ),
            ),
            None => CostEstimate::unknown(format!(
                "unknown price for aws ec2 {instance_type} in {region} (not in {}; add it there)",
                prices::PRICES_FILE
            )),
        }
    }
}

fn dry_run(req: &StartRequest, lines: &[String]) -> Vec<StartedPilot> {
    req.pilot_ids
        .iter()
        .map(|p| StartedPilot {
            pilot_id: p.clone(),
            provider_id: "(dry run)".into(),
            agent_id: AgentId::Exact("(dry run)".into()),
            commands: lines.to_vec(),
        })
        .collect()
}

// ------------------------------------------------------------------ fargate

pub struct FargateProvider {
    aws: Aws,
    cluster: String,
}

impl FargateProvider {
    pub fn new(target: &Target, ctx: &ProviderContext) -> FargateProvider {
        FargateProvider {
            aws: Aws::new(target, ctx),
            cluster: ctx.ecs_cluster.clone().unwrap_or_else(|| "default".into()),
        }
    }

    fn family<'a>(&self, spec: &'a PilotSpec) -> Result<&'a str, ProviderError> {
        match &spec.provider {
            PilotProvider::Fargate { family, .. } => Ok(family),
            _ => Err(ProviderError::Request(format!(
                "target {}: the spec is not a Fargate pilot",
                self.aws.target
            ))),
        }
    }

    fn register_argv(&self, path: &std::path::Path) -> Vec<String> {
        let mut argv = self.aws.argv("ecs", "register-task-definition");
        argv.extend([
            "--cli-input-json".into(),
            format!("file://{}", path.display()),
        ]);
        argv
    }

    fn run_task_argv(&self, family: &str, pilot_id: &str) -> Result<Vec<String>, ProviderError> {
        let subnet = self.aws.subnet.clone().ok_or_else(|| {
            self.aws.config(
                "subnet",
                "is required for Fargate tasks (awsvpc networking)",
            )
        })?;
        let mut network = json!({"subnets": [subnet], "assignPublicIp": "ENABLED"});
        if !self.aws.security_groups.is_empty() {
            network["securityGroups"] = json!(self.aws.security_groups);
        }
        let started_by: String = format!("scalable-{pilot_id}")
            .chars()
            .take(STARTED_BY_CHARS_MAX)
            .collect();
        let mut argv = self.aws.argv("ecs", "run-task");
        argv.extend([
            "--cluster".into(),
            self.cluster.clone(),
            "--launch-type".into(),
            "FARGATE".into(),
            "--task-definition".into(),
            family.to_string(),
            "--count".into(),
            "1".into(),
            "--started-by".into(),
            started_by,
            "--network-configuration".into(),
            json!({ "awsvpcConfiguration": network }).to_string(),
            "--overrides".into(),
            json!({"containerOverrides": [{
                "name": CONTAINER,
                "environment": [{"name": "SCALABLE_PILOT_ID", "value": pilot_id}],
            }]})
            .to_string(),
        ]);
        Ok(argv)
    }

    fn all_argv(&self, req: &StartRequest) -> Result<Vec<Vec<String>>, ProviderError> {
        let family = self.family(&req.spec)?;
        let path = self.aws.batch_dir(req).join("task-definition.json");
        let mut all = vec![self.register_argv(&path)];
        for id in &req.pilot_ids {
            all.push(self.run_task_argv(family, id)?);
        }
        Ok(all)
    }
}

/// An ECS task's `lastStatus` as a pilot state.
pub fn ecs_state(last: &str, stopped_reason: Option<&str>) -> PilotState {
    match last {
        "PROVISIONING" | "PENDING" | "ACTIVATING" => PilotState::Queued,
        "RUNNING" => PilotState::Running,
        "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" | "STOPPED" | "DELETED" => {
            PilotState::Ended {
                reason: super::state_with_reason(last, stopped_reason),
            }
        }
        _ => PilotState::Unknown,
    }
}

/// `describe-tasks` output: task ARN → state (failures are gone).
pub fn parse_describe_tasks(v: &Value) -> HashMap<String, PilotState> {
    let mut out = HashMap::new();
    for t in v["tasks"].as_array().into_iter().flatten() {
        if let Some(arn) = t["taskArn"].as_str() {
            let state = ecs_state(
                t["lastStatus"].as_str().unwrap_or_default(),
                t["stoppedReason"].as_str(),
            );
            out.insert(arn.to_string(), state);
        }
    }
    for f in v["failures"].as_array().into_iter().flatten() {
        if let Some(arn) = f["arn"].as_str() {
            let reason = f["reason"].as_str().unwrap_or("MISSING");
            out.insert(
                arn.to_string(),
                PilotState::Ended {
                    reason: format!("no longer known to ECS ({reason})"),
                },
            );
        }
    }
    out
}

impl DeploymentProvider for FargateProvider {
    fn kind(&self) -> &'static str {
        "fargate"
    }

    fn validate(&self) -> Result<(), ProviderError> {
        self.aws.validate()?;
        if self.aws.subnet.is_none() {
            return Err(self.aws.config(
                "subnet",
                "is required for Fargate tasks (awsvpc networking)",
            ));
        }
        Ok(())
    }

    fn start(&self, req: &StartRequest) -> Result<Vec<StartedPilot>, ProviderError> {
        check_request(req)?;
        let def = render_one(&req.spec, 1)?;
        let all = self.all_argv(req)?;
        let lines: Vec<String> = all.iter().map(|a| shell_join(a)).collect();
        if req.dry_run {
            return Ok(req
                .pilot_ids
                .iter()
                .enumerate()
                .map(|(i, p)| StartedPilot {
                    pilot_id: p.clone(),
                    provider_id: "(dry run)".into(),
                    agent_id: AgentId::Exact(p.clone()),
                    commands: vec![lines[0].clone(), lines[i + 1].clone()],
                })
                .collect());
        }
        write_file(&self.aws.batch_dir(req), def.name(), def.text())?;
        self.aws.cli.run_json(&all[0], None)?;
        let mut started: Vec<StartedPilot> = Vec::new();
        for (i, pilot) in req.pilot_ids.iter().enumerate() {
            let argv = &all[i + 1];
            let arn = self.aws.cli.run_json(argv, None).and_then(|v| {
                if let Some(f) = v["failures"].as_array().and_then(|f| f.first()) {
                    return Err(ProviderError::Failed {
                        command: shell_join(argv),
                        status: "exit 0".into(),
                        stderr: format!(
                            "ECS could not start the task: {} {}",
                            f["reason"].as_str().unwrap_or("?"),
                            f["detail"].as_str().unwrap_or("")
                        )
                        .trim()
                        .to_string(),
                        hint: "check the cluster, subnet and task size".into(),
                    });
                }
                v["tasks"][0]["taskArn"]
                    .as_str()
                    .map(String::from)
                    .ok_or_else(|| self.aws.cli.bad_output(argv, "no tasks[0].taskArn"))
            });
            match arn {
                Ok(arn) => started.push(StartedPilot {
                    pilot_id: pilot.clone(),
                    provider_id: arn,
                    agent_id: AgentId::Exact(pilot.clone()),
                    commands: vec![lines[0].clone(), lines[i + 1].clone()],
                }),
                Err(e) => {
                    let arns: Vec<String> = started.iter().map(|p| p.provider_id.clone()).collect();
                    let _ = self.stop(&arns);
                    return Err(e);
                }
            }
        }
        Ok(started)
    }

    fn status(&self, provider_ids: &[String]) -> Result<Vec<(String, PilotState)>, ProviderError> {
        let mut found = HashMap::new();
        for chunk in batches(provider_ids, ECS_TASKS_PER_CALL_MAX) {
            self.aws.query.wait();
            let mut argv = self.aws.argv("ecs", "describe-tasks");
            argv.extend(["--cluster".into(), self.cluster.clone(), "--tasks".into()]);
            argv.extend(chunk);
            found.extend(parse_describe_tasks(&self.aws.cli.run_json(&argv, None)?));
        }
        Ok(states_in_order(
            provider_ids,
            found,
            "no longer known to ECS",
        ))
    }

    fn stop(&self, provider_ids: &[String]) -> Result<(), ProviderError> {
        // ECS has no batched stop: one call per task, spaced by the limiter.
        for arn in batches(provider_ids, 1).into_iter().flatten() {
            self.aws.query.wait();
            let mut argv = self.aws.argv("ecs", "stop-task");
            argv.extend([
                "--cluster".into(),
                self.cluster.clone(),
                "--task".into(),
                arn,
                "--reason".into(),
                "stopped by scalable".into(),
            ]);
            self.aws.cli.run(&argv, None)?;
        }
        Ok(())
    }

    fn commands(&self, req: &StartRequest) -> Result<Vec<String>, ProviderError> {
        check_request(req)?;
        render_one(&req.spec, 1)?;
        Ok(self.all_argv(req)?.iter().map(|a| shell_join(a)).collect())
    }

    fn estimate_cost(&self, spec: &PilotSpec, pilots: u32, hours: f64) -> CostEstimate {
        let region = &self.aws.region;
        let PilotProvider::Fargate {
            worker_cpu,
            worker_mem_mib,
            ..
        } = &spec.provider
        else {
            return CostEstimate::unknown(format!(
                "unknown price for target {}: not a Fargate spec",
                self.aws.target
            ));
        };
        let vcpu = f64::from(*worker_cpu) / 1024.0;
        let gb = f64::from(*worker_mem_mib) / 1024.0;
        match prices::table().fargate(region) {
            Some(r) => CostEstimate::known(
                vcpu * r.vcpu_hour + gb * r.gb_hour,
                pilots,
                hours,
                format!(
                    "aws fargate in {region}: {vcpu} vCPU × {} + {gb} GB × {} {}/h ({}, {})",
                    r.vcpu_hour,
                    r.gb_hour,
                    prices::table().currency(),
                    prices::PRICES_FILE,
                    prices::table().as_of()
                ),
            ),
            None => CostEstimate::unknown(format!(
                "unknown price for aws fargate in {region} (not in {}; add it there)",
                prices::PRICES_FILE
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against moto_server (scripts/moto-testbed.sh, started by `.ci/run`).
    //! moto only mocks the AWS API: it records the calls and the user-data and
    //! task definitions it was given, but no instance boots, no cloud-init and
    //! no container runs. What these tests check is what the provider sends
    //! (read back from moto) and how it reads AWS's answers.

    use std::time::Duration;

    use scalable_common::manifest::AwsClusterType;

    use super::super::testing;
    use super::*;

    const ENDPOINT: &str = "http://127.0.0.1:5000";
    const TESTBED: &str =
        "these tests need moto_server and the aws CLI: run scripts/moto-testbed.sh start first";

    fn target(kind: AwsClusterType, subnet: Option<String>, sgs: Vec<String>) -> Target {
        testing::target(
            "aws",
            Provider::Aws {
                region: "us-east-1".into(),
                cluster_type: kind,
                image: Some("ghcr.io/example/scalable-agent:0.1".into()),
                instance_type: Some("c5.xlarge".into()),
                subnet,
                security_groups: sgs,
                ami: Some("ami-12c6146b".into()),
                worker_cpu_units: Some(1024),
                worker_mem_mib: Some(4096),
                // moto, named by the target as a user would (endpoint_url:)
                endpoint_url: Some(ENDPOINT.into()),
            },
            2,
        )
    }

    fn ctx(dir: &std::path::Path) -> ProviderContext {
        let mut ctx = ProviderContext::new(dir);
        ctx.env = vec![
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ];
        ctx.query_interval = Some(Duration::from_millis(10));
        ctx
    }

    fn ec2_spec() -> PilotSpec {
        testing::spec(PilotProvider::Ec2 {
            region: "us-east-1".into(),
            instance_type: None,
            ami: None,
        })
    }

    fn fargate_spec() -> PilotSpec {
        let mut s = testing::spec(PilotProvider::Fargate {
            region: "us-east-1".into(),
            worker_cpu: 1024,
            worker_mem_mib: 4096,
            family: "scalable-aws-demeter-test".into(),
            execution_role: Some("arn:aws:iam::123456789012:role/ecsTaskExecutionRole".into()),
        });
        s.cpus = 1;
        s.memory_bytes = Some(2 << 30);
        s.token_env_secret =
            Some("arn:aws:ssm:us-east-1:123456789012:parameter/demeter-agent-token".into());
        s
    }

    /// Runs the aws CLI against moto (for reading back what it stored).
    fn aws(args: &[&str]) -> Value {
        let c = ctx(std::path::Path::new("/tmp"));
        let cli = c.cli("aws", HINT);
        let mut argv: Vec<String> = [
            "aws",
            "--output",
            "json",
            "--region",
            "us-east-1",
            "--endpoint-url",
            ENDPOINT,
        ]
        .map(String::from)
        .to_vec();
        argv.extend(args.iter().map(|s| s.to_string()));
        cli.run_json(&argv, None)
            .unwrap_or_else(|e| panic!("{e}\n{TESTBED}"))
    }

    fn b64decode(s: &str) -> Vec<u8> {
        const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
            let v = ABC.iter().position(|x| *x == c).expect("base64") as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }

    fn ids(started: &[StartedPilot]) -> Vec<String> {
        started.iter().map(|p| p.provider_id.clone()).collect()
    }

    #[test]
    fn real_moto_ec2_start_list_terminate() {
        let dir = tempfile::tempdir().unwrap();
        let p = Ec2Provider::new(&target(AwsClusterType::Ec2, None, vec![]), &ctx(dir.path()));
        p.validate().unwrap_or_else(|e| panic!("{e}\n{TESTBED}"));
        let req = StartRequest {
            pilot_ids: vec!["e-1".into(), "e-2".into()],
            spec: ec2_spec(),
            dry_run: false,
        };
        let started = p.start(&req).unwrap_or_else(|e| panic!("{e}\n{TESTBED}"));
        assert_eq!(started.len(), 2);
        assert_eq!(started[0].commands, p.commands(&req).unwrap());
        let line = &started[0].commands[0];
        assert!(
            line.contains("run-instances") && line.contains("--count 2"),
            "{line}"
        );
        assert!(
            line.contains("--endpoint-url http://127.0.0.1:5000"),
            "{line}"
        );
        assert!(
            !line.contains("SECRET") && !line.contains("token "),
            "{line}"
        );

        for s in &started {
            assert!(s.provider_id.starts_with("i-"), "{s:?}");
            assert!(s.agent_id.matches(&s.provider_id));
            // What moto stored as user-data is the rendered cloud-init.
            let attr = aws(&[
                "ec2",
                "describe-instance-attribute",
                "--instance-id",
                &s.provider_id,
                "--attribute",
                "userData",
            ]);
            let b64 = attr["UserData"]["Value"]
                .as_str()
                .expect("user data stored");
            let text = String::from_utf8(b64decode(b64)).unwrap();
            assert!(text.starts_with("#cloud-config\n"), "{text}");
            assert!(
                text.contains(
                    "exec /usr/local/bin/scalable-agent \\\n        --connect login01:7420"
                ),
                "{text}"
            );
            assert!(
                text.contains("--token-file /etc/scalable/agent.token"),
                "{text}"
            );
            assert!(text.contains("--tags demeter"), "{text}");
            assert!(text
                .contains("aws ssm get-parameter --region us-east-1 --name demeter-agent-token"));
            assert!(!text.contains("--token "), "no token flag: {text}");
            assert!(text.contains("SCALABLE_PILOT_ID=$(cat /var/lib/cloud/data/instance-id)"));
        }

        let states = p.status(&ids(&started)).unwrap();
        for (id, st) in &states {
            assert!(
                matches!(st, PilotState::Queued | PilotState::Running),
                "{id}: {st:?}"
            );
        }
        p.stop(&ids(&started)).unwrap();
        let states = p.status(&ids(&started)).unwrap();
        for (id, st) in &states {
            assert!(matches!(st, PilotState::Ended { .. }), "{id}: {st:?}");
        }
        // An id EC2 never had: Ended, and the call did not fail for it.
        let mixed = p
            .status(&[ids(&started)[0].clone(), "i-0000000000000dead".into()])
            .unwrap();
        assert!(
            matches!(mixed[1].1, PilotState::Ended { ref reason } if reason == "no longer known to EC2")
        );
    }

    #[test]
    fn real_moto_fargate_register_run_describe_stop() {
        let dir = tempfile::tempdir().unwrap();
        let subnet = aws(&["ec2", "describe-subnets"])["Subnets"][0]["SubnetId"]
            .as_str()
            .unwrap()
            .to_string();
        let sg = aws(&["ec2", "describe-security-groups"])["SecurityGroups"][0]["GroupId"]
            .as_str()
            .unwrap()
            .to_string();
        aws(&["ecs", "create-cluster", "--cluster-name", "scalable-test"]);
        // moto moves an ECS task towards STOPPED on every describe unless told
        // to keep it (its "state manager"); real tasks stay RUNNING.
        let keep = std::process::Command::new("curl")
            .args([
                "-sf",
                "-X",
                "POST",
                "http://127.0.0.1:5000/moto-api/state-manager/set-transition",
                "-d",
                r#"{"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000000}}"#,
            ])
            .status()
            .expect("curl runs");
        assert!(keep.success(), "{TESTBED}");

        let mut c = ctx(dir.path());
        c.ecs_cluster = Some("scalable-test".into());
        let p = FargateProvider::new(&target(AwsClusterType::Fargate, Some(subnet), vec![sg]), &c);
        p.validate().unwrap_or_else(|e| panic!("{e}\n{TESTBED}"));
        let req = StartRequest {
            pilot_ids: vec!["f-1".into(), "f-2".into()],
            spec: fargate_spec(),
            dry_run: false,
        };
        let started = p.start(&req).unwrap_or_else(|e| panic!("{e}\n{TESTBED}"));
        assert_eq!(started.len(), 2);
        let all: Vec<String> = p.commands(&req).unwrap();
        assert_eq!(all.len(), 3);
        assert!(all[0].contains("ecs register-task-definition --cli-input-json file://"));
        assert!(
            all[1].contains("SCALABLE_PILOT_ID") && all[1].contains("f-1"),
            "{}",
            all[1]
        );
        for s in &started {
            assert!(s.provider_id.starts_with("arn:aws:ecs:"), "{s:?}");
            assert!(s.agent_id.matches(&s.pilot_id));
            assert!(!s.commands.join(" ").contains("SCALABLE_TOKEN="));
        }

        // The task definition moto stored: SCALABLE_* env, the token only as
        // a secret reference.
        let td = aws(&[
            "ecs",
            "describe-task-definition",
            "--task-definition",
            "scalable-aws-demeter-test",
        ]);
        let c0 = &td["taskDefinition"]["containerDefinitions"][0];
        let env: HashMap<&str, &str> = c0["environment"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
            .collect();
        assert_eq!(env["SCALABLE_BROKER"], "login01:7420");
        assert_eq!(env["SCALABLE_TAGS"], "demeter");
        assert_eq!(env["SCALABLE_CPUS"], "1");
        assert!(!env.contains_key("SCALABLE_TOKEN"), "{env:?}");
        assert_eq!(c0["entryPoint"][0], "/opt/scalable/bin/scalable-agent");
        assert_eq!(c0["secrets"][0]["name"], "SCALABLE_TOKEN");
        assert!(c0["secrets"][0]["valueFrom"]
            .as_str()
            .unwrap()
            .ends_with("parameter/demeter-agent-token"));

        // Each task got its own pilot id.
        let tasks = aws(&[
            "ecs",
            "describe-tasks",
            "--cluster",
            "scalable-test",
            "--tasks",
            &started[0].provider_id,
        ]);
        let over = &tasks["tasks"][0]["overrides"]["containerOverrides"][0]["environment"][0];
        assert_eq!(over["name"], "SCALABLE_PILOT_ID");
        assert_eq!(over["value"], "f-1");

        let states = p.status(&ids(&started)).unwrap();
        for (id, st) in &states {
            assert!(
                matches!(st, PilotState::Queued | PilotState::Running),
                "{id}: {st:?}"
            );
        }
        p.stop(&ids(&started)).unwrap();
        let states = p.status(&ids(&started)).unwrap();
        for (id, st) in &states {
            assert!(
                matches!(st, PilotState::Ended { reason } if reason.contains("STOPPED")),
                "{id}: {st:?}"
            );
        }
    }

    #[test]
    fn describe_outputs_parse() {
        let v: Value = serde_json::from_str(
            r#"{"Reservations":[{"Instances":[
                {"InstanceId":"i-1","State":{"Name":"pending"}},
                {"InstanceId":"i-2","State":{"Name":"running"}},
                {"InstanceId":"i-3","State":{"Name":"terminated"},"StateReason":{"Message":"Client.UserInitiatedShutdown: User initiated shutdown"}}]}]}"#,
        )
        .unwrap();
        let m = parse_describe_instances(&v);
        assert_eq!(m["i-1"], PilotState::Queued);
        assert_eq!(m["i-2"], PilotState::Running);
        assert_eq!(
            m["i-3"],
            PilotState::Ended {
                reason: "terminated: Client.UserInitiatedShutdown: User initiated shutdown".into()
            }
        );
        let v: Value = serde_json::from_str(
            r#"{"tasks":[{"taskArn":"a1","lastStatus":"PROVISIONING"},{"taskArn":"a2","lastStatus":"STOPPED","stoppedReason":"Essential container in task exited"}],
                "failures":[{"arn":"a3","reason":"MISSING"}]}"#,
        )
        .unwrap();
        let m = parse_describe_tasks(&v);
        assert_eq!(m["a1"], PilotState::Queued);
        assert_eq!(
            m["a2"],
            PilotState::Ended {
                reason: "STOPPED: Essential container in task exited".into()
            }
        );
        assert!(matches!(&m["a3"], PilotState::Ended { reason } if reason.contains("MISSING")));
    }

    #[test]
    fn costs_name_their_price_row() {
        let c = ProviderContext::new("/tmp");
        let ec2 = Ec2Provider::new(&target(AwsClusterType::Ec2, None, vec![]), &c);
        let e = ec2.estimate_cost(&ec2_spec(), 2, 10.0);
        assert_eq!(e.per_pilot_hour, Some(0.17));
        assert!((e.total.unwrap() - 3.4).abs() < 1e-9);
        assert!(
            e.source
                .contains("aws ec2 c5.xlarge in us-east-1: 0.17 USD/h"),
            "{}",
            e.source
        );
        let fg = FargateProvider::new(&target(AwsClusterType::Fargate, None, vec![]), &c);
        let e = fg.estimate_cost(&fargate_spec(), 1, 1.0);
        // 1 vCPU and 4 GB.
        assert!((e.total.unwrap() - (0.04048 + 4.0 * 0.004445)).abs() < 1e-9);
        let mut odd = ec2_spec();
        odd.provider = PilotProvider::Ec2 {
            region: "us-east-1".into(),
            instance_type: Some("x9.huge".into()),
            ami: None,
        };
        let e = ec2.estimate_cost(&odd, 1, 1.0);
        assert_eq!(e.total, None);
        assert!(
            e.source.starts_with("unknown price for aws ec2 x9.huge"),
            "{}",
            e.source
        );
    }
}
