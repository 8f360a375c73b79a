//! The `kubernetes` provider through `kubectl` (`-o json`).
//!
//! - start: ONE `kubectl apply -f -` whose input is one rendered object per
//!   pilot: a Job (or a Deployment, for `kind: deployment`) of one agent pod
//!   named `<spec name>-<pilot id>`. Not one Job with `parallelism: N`: a
//!   pilot must be removable on its own (`scale -1` drains an idle agent and
//!   removes its pilot), and lowering a Job's parallelism lets Kubernetes
//!   pick which pods to kill, busy ones included. The agent reports its pod
//!   name, which starts with the object's name and `-`.
//! - status: ONE `kubectl get jobs,deployments,pods -l 'scalable/pilot in (A,B,…)' -o json`
//!   for all ids: a finished Job is `Ended`, a pilot with a Running pod is
//!   `Running`, else `Queued` (pods Pending: unscheduled or pulling); an object
//!   not found is gone.
//! - stop: ONE `kubectl delete jobs,deployments -l 'scalable/pilot in (A,B,…)'
//!   --ignore-not-found --wait=false`;
//!   pods get SIGTERM and `terminationGracePeriodSeconds` to drain.
//!
//! The token: the pod's `SCALABLE_TOKEN` comes from the Secret named by the
//! spec (`secretKeyRef`), which must exist in the namespace; it is not created
//! here and never read.
//!
//! Tested with command-line and object snapshots, offline schema validation
//! (`kubernetes-validate`) and canned `kubectl` answers: no API server here.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use scalable_common::manifest::{Provider, Target};

use crate::render::{KubeKind, PilotProvider, PilotSpec};
use scalable_common::quote::shell_join;

use super::{
    batches, check_request, dns_label, render_one, states_in_order, AgentId, Cli, CostEstimate,
    DeploymentProvider, PilotState, ProviderContext, ProviderError, RateLimiter, StartRequest,
    StartedPilot, CLOUD_QUERY_INTERVAL, IDS_PER_CALL_MAX,
};

const HINT: &str =
    "install kubectl and point it at the cluster (KUBECONFIG, or the target's context)";
/// Object names used as label values: at most 63 characters.
const NAME_CHARS_MAX: usize = 63;
const PILOT_LABEL: &str = "scalable/pilot";

pub struct KubernetesProvider {
    target: String,
    namespace: String,
    context: Option<String>,
    cli: Cli,
    query: RateLimiter,
}

impl KubernetesProvider {
    pub fn new(target: &Target, ctx: &ProviderContext) -> KubernetesProvider {
        let (namespace, context) = match &target.provider {
            Provider::Kubernetes {
                namespace, context, ..
            } => (namespace.clone(), context.clone()),
            _ => (String::new(), None),
        };
        KubernetesProvider {
            target: target.name.clone(),
            namespace,
            context,
            cli: ctx.cli("kubectl", HINT),
            query: ctx.limiter(CLOUD_QUERY_INTERVAL),
        }
    }

    /// `kubectl [--context C] --namespace NS`.
    fn argv(&self) -> Vec<String> {
        let mut argv = vec!["kubectl".to_string()];
        if let Some(c) = &self.context {
            argv.push(format!("--context={c}"));
        }
        argv.push(format!("--namespace={}", self.namespace));
        argv
    }

    fn kind_of(&self, spec: &PilotSpec) -> Result<(KubeKind, String), ProviderError> {
        match &spec.provider {
            PilotProvider::Kubernetes { kind, name, .. } => Ok((*kind, name.clone())),
            _ => Err(ProviderError::Request(format!(
                "target {}: the spec is not a Kubernetes pilot",
                self.target
            ))),
        }
    }

    /// The object name of a pilot: `<spec name>-<pilot id>`, a DNS label.
    pub fn object_name(base: &str, pilot_id: &str) -> String {
        let id = dns_label(pilot_id);
        let room = NAME_CHARS_MAX.saturating_sub(id.len() + 1);
        let mut base = base.to_string();
        base.truncate(room);
        format!("{}-{id}", base.trim_end_matches('-'))
    }

    /// The objects `start` applies: one per pilot, `---` between them.
    pub fn objects(&self, req: &StartRequest) -> Result<String, ProviderError> {
        check_request(req)?;
        let (_, base) = self.kind_of(&req.spec)?;
        let mut docs = Vec::new();
        for id in &req.pilot_ids {
            let mut spec = req.spec.clone();
            if let PilotProvider::Kubernetes { name, .. } = &mut spec.provider {
                *name = Self::object_name(&base, id);
            }
            docs.push(render_one(&spec, 1)?.text().to_string());
        }
        Ok(docs.join("---\n"))
    }

    fn apply_argv(&self) -> Vec<String> {
        let mut argv = self.argv();
        argv.extend([
            "apply".into(),
            "-f".into(),
            "-".into(),
            "-o".into(),
            "name".into(),
        ]);
        argv
    }

    /// What status lists: the pilots' objects (either kind) and their pods.
    const KINDS: &'static str = "jobs,deployments,pods";
}

/// `kubectl get jobs,deployments,pods -o json`: pilot name → state, for the
/// names asked about that have an object.
pub fn parse_get(v: &Value, names: &[String]) -> HashMap<String, PilotState> {
    let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut owner: HashMap<String, Option<String>> = HashMap::new(); // name → ended reason
    let mut running: HashSet<String> = HashSet::new();
    for item in v["items"].as_array().into_iter().flatten() {
        let Some(pilot) = item["metadata"]["labels"][PILOT_LABEL].as_str() else {
            continue;
        };
        if !wanted.contains(pilot) {
            continue;
        }
        match item["kind"].as_str().unwrap_or_default() {
            "Job" => {
                let ended = item["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| {
                        c["status"] == "True"
                            && matches!(c["type"].as_str(), Some("Complete" | "Failed"))
                    })
                    .map(|c| {
                        let t = c["type"].as_str().unwrap_or_default();
                        super::state_with_reason(t, c["reason"].as_str())
                    });
                owner.insert(pilot.to_string(), ended);
            }
            "Deployment" => {
                owner.entry(pilot.to_string()).or_insert(None);
            }
            "Pod" if item["status"]["phase"] == "Running" => {
                running.insert(pilot.to_string());
            }
            _ => {}
        }
    }
    owner
        .into_iter()
        .map(|(name, ended)| {
            let state = match ended {
                Some(reason) => PilotState::Ended { reason },
                None if running.contains(&name) => PilotState::Running,
                None => PilotState::Queued,
            };
            (name, state)
        })
        .collect()
}

impl DeploymentProvider for KubernetesProvider {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn validate(&self) -> Result<(), ProviderError> {
        if self.namespace.trim().is_empty() {
            return Err(ProviderError::Config {
                target: self.target.clone(),
                field: "namespace",
                reason: "is required".into(),
            });
        }
        self.cli.check_installed()
    }

    fn start(&self, req: &StartRequest) -> Result<Vec<StartedPilot>, ProviderError> {
        let objects = self.objects(req)?;
        let (_, base) = self.kind_of(&req.spec)?;
        let argv = self.apply_argv();
        let line = shell_join(&argv);
        if !req.dry_run {
            self.cli.run(&argv, Some(&objects))?;
        }
        Ok(req
            .pilot_ids
            .iter()
            .map(|id| {
                let name = Self::object_name(&base, id);
                StartedPilot {
                    pilot_id: id.clone(),
                    provider_id: if req.dry_run {
                        "(dry run)".into()
                    } else {
                        name.clone()
                    },
                    agent_id: AgentId::Prefix(format!("{name}-")),
                    commands: vec![line.clone()],
                }
            })
            .collect())
    }

    fn status(&self, provider_ids: &[String]) -> Result<Vec<(String, PilotState)>, ProviderError> {
        let mut found = HashMap::new();
        for chunk in batches(provider_ids, IDS_PER_CALL_MAX) {
            self.query.wait();
            let mut argv = self.argv();
            argv.extend([
                "get".into(),
                Self::KINDS.into(),
                "-l".into(),
                format!("{PILOT_LABEL} in ({})", chunk.join(",")),
                "-o".into(),
                "json".into(),
            ]);
            found.extend(parse_get(&self.cli.run_json(&argv, None)?, &chunk));
        }
        Ok(states_in_order(
            provider_ids,
            found,
            "no longer in the cluster",
        ))
    }

    fn stop(&self, provider_ids: &[String]) -> Result<(), ProviderError> {
        for chunk in batches(provider_ids, IDS_PER_CALL_MAX) {
            self.query.wait();
            let mut argv = self.argv();
            argv.extend([
                "delete".into(),
                "jobs,deployments".into(),
                "-l".into(),
                format!("{PILOT_LABEL} in ({})", chunk.join(",")),
                "--ignore-not-found".into(),
                "--wait=false".into(),
            ]);
            self.cli.run(&argv, None)?;
        }
        Ok(())
    }

    fn commands(&self, req: &StartRequest) -> Result<Vec<String>, ProviderError> {
        self.objects(req)?;
        Ok(vec![shell_join(&self.apply_argv())])
    }

    fn estimate_cost(&self, _spec: &PilotSpec, _pilots: u32, _hours: f64) -> CostEstimate {
        CostEstimate::unknown(format!(
            "unknown price for kubernetes target {}: pods run on the cluster's own nodes",
            self.target
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use scalable_common::manifest;

    use super::super::testing::{self, FakeRunner};
    use super::*;

    fn target() -> Target {
        testing::target(
            "k8s",
            Provider::Kubernetes {
                namespace: "demeter-prod".into(),
                image: None,
                context: Some("lab".into()),
                service_account: None,
                kind: manifest::KubeKind::Job,
            },
            2,
        )
    }

    fn req() -> StartRequest {
        let mut spec = testing::spec(PilotProvider::Kubernetes {
            namespace: "demeter-prod".into(),
            kind: KubeKind::Job,
            service_account: None,
            name: "scalable-k8s-demeter".into(),
        });
        spec.target = "k8s".into();
        StartRequest {
            pilot_ids: vec!["p-1".into(), "p-2".into()],
            spec,
            dry_run: false,
        }
    }

    fn provider(answers: &[(i32, &str, &str)]) -> (Arc<FakeRunner>, KubernetesProvider) {
        let fake = Arc::new(FakeRunner::answering(answers));
        let mut ctx = ProviderContext::new("/tmp/pilots");
        ctx.runner = fake.clone();
        ctx.query_interval = Some(Duration::ZERO);
        (fake, KubernetesProvider::new(&target(), &ctx))
    }

    #[test]
    fn commands_and_objects_snapshot() {
        let (_, p) = provider(&[]);
        assert_eq!(
            p.commands(&req()).unwrap(),
            vec!["kubectl --context=lab --namespace=demeter-prod apply -f - -o name"]
        );
        let objects = p.objects(&req()).unwrap();
        let docs: Vec<&str> = objects.split("---\n").collect();
        assert_eq!(docs.len(), 2);
        assert!(docs[0].contains("kind: Job\nmetadata:\n  name: \"scalable-k8s-demeter-p-1\"\n  namespace: \"demeter-prod\"\n"), "{}", docs[0]);
        assert!(docs[0].contains("  parallelism: 1\n"));
        assert!(docs[1].contains("scalable/pilot: \"scalable-k8s-demeter-p-2\""));
        assert!(docs[0].contains("secretKeyRef:\n                  name: \"demeter-agent-token\""));
        assert!(!objects.contains("--token"));
        assert_eq!(
            KubernetesProvider::object_name(&"x".repeat(80), "p-1234"),
            format!("{}-p-1234", "x".repeat(56))
        );
    }

    /// Every object of the stream passes the offline schema check
    /// (kubernetes-validate, installed by .ci/run), as render.rs's do.
    #[test]
    fn objects_pass_offline_schema_validation() {
        let (_, p) = provider(&[]);
        crate::render::tests::kubernetes_validate(&p.objects(&req()).unwrap());
    }

    #[test]
    fn start_status_stop_with_canned_answers() {
        let listing = r#"{"kind":"List","items":[
          {"kind":"Job","metadata":{"name":"scalable-k8s-demeter-p-1","labels":{"scalable/pilot":"scalable-k8s-demeter-p-1"}},"status":{"active":1}},
          {"kind":"Pod","metadata":{"name":"scalable-k8s-demeter-p-1-abcde","labels":{"scalable/pilot":"scalable-k8s-demeter-p-1"}},"status":{"phase":"Running"}},
          {"kind":"Job","metadata":{"name":"scalable-k8s-demeter-p-2","labels":{"scalable/pilot":"scalable-k8s-demeter-p-2"}},"status":{"active":1}},
          {"kind":"Pod","metadata":{"name":"scalable-k8s-demeter-p-2-fghij","labels":{"scalable/pilot":"scalable-k8s-demeter-p-2"}},"status":{"phase":"Pending"}},
          {"kind":"Job","metadata":{"name":"scalable-k8s-demeter-p-3","labels":{"scalable/pilot":"scalable-k8s-demeter-p-3"}},"status":{"succeeded":1,"conditions":[{"type":"Complete","status":"True"}]}}
        ]}"#;
        let (fake, p) = provider(&[
            (
                0,
                "job.batch/scalable-k8s-demeter-p-1\njob.batch/scalable-k8s-demeter-p-2\n",
                "",
            ),
            (0, listing, ""),
            (0, "", ""),
        ]);
        let started = p.start(&req()).unwrap();
        assert_eq!(started[1].provider_id, "scalable-k8s-demeter-p-2");
        assert!(started[1]
            .agent_id
            .matches("scalable-k8s-demeter-p-2-fghij"));
        assert!(!started[1]
            .agent_id
            .matches("scalable-k8s-demeter-p-1-abcde"));
        let names: Vec<String> = (1..=4)
            .map(|i| format!("scalable-k8s-demeter-p-{i}"))
            .collect();
        let st = p.status(&names).unwrap();
        assert_eq!(st[0].1, PilotState::Running);
        assert_eq!(st[1].1, PilotState::Queued);
        assert_eq!(
            st[2].1,
            PilotState::Ended {
                reason: "Complete".into()
            }
        );
        assert_eq!(
            st[3].1,
            PilotState::Ended {
                reason: "no longer in the cluster".into()
            }
        );
        p.stop(&names[..2]).unwrap();
        let calls = fake.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 3, "one call each");
        assert_eq!(
            calls[0].stdin.as_deref(),
            Some(p.objects(&req()).unwrap().as_str())
        );
        assert_eq!(
            calls[1].line,
            "kubectl --context=lab --namespace=demeter-prod get jobs,deployments,pods -l 'scalable/pilot in (scalable-k8s-demeter-p-1,scalable-k8s-demeter-p-2,scalable-k8s-demeter-p-3,scalable-k8s-demeter-p-4)' -o json"
        );
        assert_eq!(
            calls[2].line,
            "kubectl --context=lab --namespace=demeter-prod delete jobs,deployments -l 'scalable/pilot in (scalable-k8s-demeter-p-1,scalable-k8s-demeter-p-2)' --ignore-not-found --wait=false"
        );
        let e = p.estimate_cost(&req().spec, 2, 1.0);
        assert_eq!(e.total, None);
        assert!(e.source.starts_with("unknown price for kubernetes"));
    }
}
