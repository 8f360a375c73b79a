//! Turns a submitted workflow into a [`SubmitPlan`]: validated again (the CLI
//! already did, but nothing from the network is trusted), templates compiled,
//! each job's resources resolved.
//!
//! The manifest binding of `task:` (issue 4) resolves here too; until the
//! broker holds a manifest, a `task:` binding is refused with a hint.

use std::sync::Arc;

use scalable_common::protocol::SubmitRequest;
use scalable_common::resources::Resources;
use scalable_common::workflow::{validate, JobTemplates};

use crate::core::{PlannedJob, SubmitPlan};

pub fn plan(req: SubmitRequest) -> Result<SubmitPlan, String> {
    validate(&req.workflow, &req.source).map_err(|e| e.to_string())?;
    let mut jobs = Vec::with_capacity(req.workflow.jobs.len());
    for j in &req.workflow.jobs {
        if let Some(task) = &j.task {
            return Err(format!(
                "{}: jobs[{}].task: unknown task binding {task:?} (this broker has no manifest; start it with --manifest, or give tag: and resources: directly)",
                req.source, j.name
            ));
        }
        let templates =
            JobTemplates::compile(j).map_err(|e| format!("{}: job {}: {e}", req.source, j.name))?;
        let resources = Resources {
            cpus: j.resources.cpus.unwrap_or(1),
            memory_bytes: j.resources.memory_bytes.unwrap_or(0),
            gpus: j.resources.gpus.unwrap_or(0),
            custom: j.resources.custom.clone(),
        };
        jobs.push(PlannedJob {
            def: Arc::new(j.clone()),
            templates: Arc::new(templates),
            resources,
        });
    }
    let definition_json = serde_json::to_string(&req.workflow).map_err(|e| e.to_string())?;
    Ok(SubmitPlan {
        def: req.workflow,
        jobs,
        cwd: req.cwd,
        source: req.source,
        definition_json,
    })
}
