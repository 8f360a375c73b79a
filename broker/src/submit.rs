//! Turns a submitted workflow into a [`SubmitPlan`]: validated again (the CLI
//! already did, but nothing from the network is trusted), templates compiled,
//! each job's manifest binding (`task:`) resolved, its resources fixed.
//!
//! Binding rules (SPEC §3, §4): a job with `task: T` takes from the manifest's
//! `tasks.T` and its component: the tag (the component's name), cpus, memory,
//! gpus, image (with mounts and env), cache, retries and walltime. What the job
//! sets itself wins: its `tag:`, each `resources:` field, non-zero `retries:`,
//! `walltime:`, `cache: true`.

use std::sync::Arc;

use scalable_common::manifest::{AutoResources, Manifest};
use scalable_common::protocol::{ContainerSpec, SubmitRequest};
use scalable_common::resources::Resources;
use scalable_common::units::format_size;
use scalable_common::workflow::{validate, JobDef, JobTemplates, WorkflowDef};

use crate::core::{PlannedJob, SubmitPlan};
use crate::output_roots::OutputRoots;

/// `broker_manifest` is the manifest the broker was started with; a manifest
/// sent with the request replaces it for this run.
pub fn plan(req: SubmitRequest, broker_manifest: Option<&Manifest>) -> Result<SubmitPlan, String> {
    validate(&req.workflow, &req.source).map_err(|e| e.to_string())?;
    let sent: Option<Manifest> = match &req.manifest_json {
        Some(json) => Some(
            serde_json::from_str(json)
                .map_err(|e| format!("the manifest sent with the submit is malformed: {e}"))?,
        ),
        None => None,
    };
    let manifest = sent.as_ref().or(broker_manifest);
    // Only the broker's own manifest may let outputs out of a task's directory.
    let roots = OutputRoots::from_manifest(broker_manifest);
    let mut jobs = Vec::with_capacity(req.workflow.jobs.len());
    let mut def = req.workflow.clone();
    for (i, j) in req.workflow.jobs.iter().enumerate() {
        let (bound, container, auto) = bind(j, manifest, &req.source, i)?;
        let mut planned = planned_job(bound.clone(), container, &req.source)?;
        planned.auto = auto;
        if let Some(m) = manifest {
            check_fits_some_worker(m, &bound, &planned.resources, &req.source, i)?;
        }
        if let Some(m) = &sent {
            check_target_runs(m, &bound, planned.container.as_ref(), &req.source, i)?;
        }
        roots
            .check_job(&bound, &planned.templates, &req.cwd)
            .map_err(|e| format!("{}: {e}", req.source))?;
        def.jobs[i] = bound;
        jobs.push(planned);
    }
    let stored = StoredDefinition {
        workflow: def.clone(),
        containers: jobs.iter().map(|j| j.container.clone()).collect(),
        auto: jobs.iter().map(|j| j.auto).collect(),
    };
    let definition_json = serde_json::to_string(&stored).map_err(|e| e.to_string())?;
    Ok(SubmitPlan {
        def,
        jobs,
        cwd: req.cwd,
        source: req.source,
        definition_json,
    })
}

/// What the store keeps of a submitted run: the workflow with every manifest
/// binding applied, and each job's container. Enough to rebuild the run after a
/// restart without the manifest it was submitted with.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StoredDefinition {
    pub workflow: WorkflowDef,
    pub containers: Vec<Option<ContainerSpec>>,
    /// Per job, what its binding lets the advisor size (`memory: auto` ...);
    /// absent in runs stored before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auto: Vec<Option<AutoResources>>,
}

/// Rebuilds the planned jobs of a stored run (broker restart).
pub fn replan(
    definition_json: &str,
    source: &str,
) -> Result<(WorkflowDef, Vec<PlannedJob>), String> {
    let stored: StoredDefinition = serde_json::from_str(definition_json)
        .map_err(|e| format!("stored definition of {source} is unreadable: {e}"))?;
    if stored.containers.len() != stored.workflow.jobs.len() {
        return Err(format!(
            "stored definition of {source}: jobs and containers differ in number"
        ));
    }
    let mut jobs = stored
        .workflow
        .jobs
        .iter()
        .cloned()
        .zip(stored.containers)
        .map(|(j, c)| planned_job(j, c, source))
        .collect::<Result<Vec<_>, _>>()?;
    for (j, auto) in jobs.iter_mut().zip(stored.auto) {
        j.auto = auto;
    }
    Ok((stored.workflow, jobs))
}

/// A bound job with its templates compiled and its request fixed.
fn planned_job(
    bound: JobDef,
    container: Option<ContainerSpec>,
    source: &str,
) -> Result<PlannedJob, String> {
    let templates =
        JobTemplates::compile(&bound).map_err(|e| format!("{source}: job {}: {e}", bound.name))?;
    let resources = Resources {
        cpus: bound.resources.cpus.unwrap_or(1),
        memory_bytes: bound.resources.memory_bytes.unwrap_or(0),
        gpus: bound.resources.gpus.unwrap_or(0),
        custom: bound.resources.custom.clone(),
    };
    Ok(PlannedJob {
        def: Arc::new(bound),
        templates: Arc::new(templates),
        resources,
        container,
        auto: None,
    })
}

/// A job bound to its manifest task: the job, its container, and what the
/// advisor sizes.
type Bound = (JobDef, Option<ContainerSpec>, Option<AutoResources>);

/// Applies the job's `task:` binding, if any. An `auto` quantity the job
/// sets itself is not auto (what the job sets wins); the others ask for
/// the binding's `fallback:`, else the component's value, until the
/// advisor is confident.
fn bind(
    job: &JobDef,
    manifest: Option<&Manifest>,
    source: &str,
    i: usize,
) -> Result<Bound, String> {
    let Some(task) = &job.task else {
        return Ok((job.clone(), None, None));
    };
    let Some(m) = manifest else {
        return Err(format!(
            "{source}: jobs[{i}].task: unknown task binding {task:?} (hint: this broker has no manifest; pass --manifest to scalable submit or to scalable-broker, or give tag: and resources: directly)"
        ));
    };
    let Some((binding, component)) = m.binding(task) else {
        let known: Vec<&str> = m.tasks.keys().map(String::as_str).collect();
        return Err(format!(
            "{source}: jobs[{i}].task: unknown task binding {task:?} (the manifest's tasks are: {})",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ));
    };
    let mut j = job.clone();
    j.tag = j.tag.or_else(|| Some(component.name.clone()));
    let auto = AutoResources {
        memory: binding.auto.memory && j.resources.memory_bytes.is_none(),
        cpus: binding.auto.cpus && j.resources.cpus.is_none(),
        walltime: binding.auto.walltime && j.walltime_ms.is_none(),
    };
    let fallback = &binding.fallback;
    let r = &mut j.resources;
    r.cpus = r
        .cpus
        .or(fallback.cpus.filter(|_| auto.cpus))
        .or(Some(component.cpus));
    r.memory_bytes = r
        .memory_bytes
        .or(fallback.memory_bytes.filter(|_| auto.memory))
        .or(component.memory_bytes);
    r.gpus = r.gpus.or(Some(component.gpus));
    if j.retries == 0 {
        j.retries = binding.retries;
    }
    j.walltime_ms = j
        .walltime_ms
        .or(fallback.walltime_ms.filter(|_| auto.walltime))
        .or(binding.walltime_ms);
    j.cache = j.cache || binding.cache;
    let mut env = component.env.clone();
    env.extend(j.env.iter().cloned());
    let container = component.image.as_ref().map(|image| ContainerSpec {
        image: image.clone(),
        mounts: component.mounts.clone(),
        env: env.clone(),
    });
    if container.is_none() {
        j.env = env;
    }
    Ok((j, container, auto.any().then_some(auto)))
}

/// `submit --manifest M --target T`: the user named the target that runs
/// the workflow, so a job whose tag its agents do not serve, whose image they
/// cannot run, or whose walltime outlives them is refused (exit 2) rather than
/// left waiting forever. (Sizes are `check_fits_some_worker`'s.)
fn check_target_runs(
    m: &Manifest,
    job: &JobDef,
    container: Option<&ContainerSpec>,
    source: &str,
    i: usize,
) -> Result<(), String> {
    let Some(t) = m.target_selected.as_ref().and_then(|n| m.target(n)) else {
        return Ok(());
    };
    let shapes = crate::shapes::of_target(m, t);
    let serving: Vec<_> = shapes
        .iter()
        .filter(|s| s.tags.is_empty() || job.tag.as_ref().is_some_and(|g| s.tags.contains(g)))
        .collect();
    let served: Vec<&str> = shapes
        .iter()
        .flat_map(|s| s.tags.iter().map(String::as_str))
        .collect();
    if serving.is_empty() {
        let what = match &job.tag {
            Some(tag) => format!("tag {tag}"),
            None => "no tag".to_string(),
        };
        return Err(format!(
            "{source}: jobs[{i}].tag: job {} has {what}, and the agents of target {} serve only tags {} (hint: give the job one of those tags, or submit to a target that serves it)",
            job.name,
            t.name,
            served.join(", ")
        ));
    }
    if let Some(c) = container {
        if !serving.iter().any(|s| s.container_runtime) {
            return Err(format!(
                "{source}: jobs[{i}]: job {} runs image {}, and target {} has no container runtime (containers: none, or none on this host) (hint: set containers: auto on targets.{}, or submit to a target that has one)",
                job.name, c.image, t.name, t.name
            ));
        }
    }
    if let Some(w) = job.walltime_ms {
        if serving.iter().all(|s| s.lifetime_ms.is_some_and(|l| w > l)) {
            let longest = serving
                .iter()
                .filter_map(|s| s.lifetime_ms)
                .max()
                .unwrap_or(0);
            return Err(format!(
                "{source}: jobs[{i}].walltime: job {} needs {}, longer than the agents of target {} live ({}) (hint: lower the walltime, or raise the target's walltime)",
                job.name,
                scalable_common::units::format_duration_ms(w),
                t.name,
                scalable_common::units::format_duration_ms(longest)
            ));
        }
    }
    Ok(())
}

/// SPEC §4: a request larger than every worker any target of the manifest can
/// give is refused at submit. Targets whose worker size is unknown fit anything.
fn check_fits_some_worker(
    m: &Manifest,
    job: &JobDef,
    need: &Resources,
    source: &str,
    i: usize,
) -> Result<(), String> {
    let tag = job.tag.as_deref().unwrap_or_default();
    let targets: Vec<_> = m
        .targets
        .values()
        .filter(|t| m.target_selected.as_ref().is_none_or(|s| *s == t.name))
        .filter(|t| tag.is_empty() || t.serves(tag))
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let fits = |t: &&scalable_common::manifest::Target| {
        t.worker.cpus.is_none_or(|c| need.cpus <= c)
            && t.worker
                .memory_bytes
                .is_none_or(|mem| need.memory_bytes <= mem)
            && t.worker.gpus.is_none_or(|g| need.gpus <= g)
    };
    if targets.iter().any(fits) {
        return Ok(());
    }
    let largest = targets
        .iter()
        .filter_map(|t| t.worker.memory_bytes)
        .max()
        .map(format_size)
        .unwrap_or_else(|| "?".into());
    Err(format!(
        "{source}: jobs[{i}].resources: job {} needs {need}, more than any worker of {} offers (largest memory {largest}) (hint: lower the request or use a target with larger workers)",
        job.name,
        targets
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
