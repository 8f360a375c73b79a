//! The manifest as a whole: its top-level keys, `version`, `project`, the
//! sections put together into a [`Manifest`], and the cross-checks that need
//! them all (task bindings, workflow tasks, fits).
//!
//! It must not check a single target, component or task itself: `targets`,
//! `components` and `tasks` do.

use std::collections::BTreeMap;

use super::super::schema::*;
use super::super::section;
use super::super::tree::{Node, Value};
use super::super::{join, Pos};
use super::values::M;
use super::{check_name, list_names, names_to_suggest, unknown_key, unknown_top_key, Ck, Names};
use super::{PROJECT_KEYS, TOP_KEYS};
use crate::suggest::did_you_mean_within;
use crate::workflow::WorkflowDef;

impl Ck<'_> {
    pub(super) fn manifest(&mut self, root: &Node, selected: Option<&str>) -> Option<Manifest> {
        let m = self.map(root, "", root.at, "start with version: 1".to_string())?;
        let budget = self.budget;
        self.keys(&m, TOP_KEYS, |k| unknown_top_key(budget, k, TOP_KEYS));

        self.require(&m, "version", "start the manifest with version: 1");
        let version = self.field(&m, "version").map_or(1, |n| self.version(n));
        self.require(&m, "project", "e.g. project: {name: demeter-lulcc}");
        let project = self.field(&m, "project").and_then(|n| self.project(n));
        self.require(&m, "targets", "e.g. targets: {local: {provider: local}}");
        let targets = self
            .field(&m, "targets")
            .map(|n| self.targets(n))
            .unwrap_or_default();
        let components = self
            .field(&m, "components")
            .map(|n| self.components(n))
            .unwrap_or_default();
        let tasks = self
            .field(&m, "tasks")
            .map(|n| self.tasks(n))
            .unwrap_or_default();

        let workflow = self.field(&m, "workflow").and_then(|n| {
            let (def, issues) = section::workflow(n);
            for (i, origin) in issues {
                self.push(i.at, origin, &i.path, i.message, i.hint);
            }
            def.map(|d| (d, n))
        });

        // Cross-checks.
        let component_names = Names::new(components.iter().map(|(c, _)| c.name.clone()).collect());
        for (t, component_node) in &tasks {
            if let Some(node) = component_node {
                let path = join(&join("tasks", &t.name), "component");
                self.known_component(node, &path, &component_names);
            }
        }
        self.fits(&components, &targets, selected);
        if let Some((def, node)) = &workflow {
            self.workflow_tasks(def, node, &tasks);
        }

        Some(Manifest {
            version,
            project: project.unwrap_or(Project {
                name: String::new(),
                output_roots: Vec::new(),
            }),
            targets: targets
                .into_iter()
                .map(|(t, _)| (t.name.clone(), t))
                .collect(),
            components: components
                .into_iter()
                .map(|(c, _)| (c.name.clone(), c))
                .collect(),
            tasks: tasks
                .into_iter()
                .map(|(t, _)| (t.name.clone(), t))
                .collect::<BTreeMap<_, _>>(),
            overlays_applied: Vec::new(),
            target_selected: selected.map(str::to_string),
            workflow: workflow.map(|(d, _)| d),
        })
    }

    /// Each `task:` of a workflow job must name a task binding.
    fn workflow_tasks(
        &mut self,
        def: &WorkflowDef,
        node: &Node,
        tasks: &[(TaskBinding, Option<&Node>)],
    ) {
        let task_names = Names::new(tasks.iter().map(|(t, _)| t.name.clone()).collect());
        for (i, job) in def.jobs.iter().enumerate() {
            let Some(task) = &job.task else { continue };
            if task_names.contains(task) {
                continue;
            }
            let p = format!("jobs[{i}].task");
            let (at, origin) = section::locate(node, &p, false);
            let hint = did_you_mean_within(self.budget, task, names_to_suggest(&task_names.list))
                .unwrap_or_else(|| {
                    if task_names.list.is_empty() {
                        "define it under tasks:".to_string()
                    } else {
                        format!("tasks are: {}", list_names(&task_names.list))
                    }
                });
            self.push(
                at,
                origin,
                &format!("workflow.{p}"),
                format!("unknown task {task:?}"),
                Some(hint),
            );
        }
    }

    pub(super) fn version(&mut self, node: &Node) -> u32 {
        if node.unresolved {
            return 1;
        }
        let (message, hint) = match &node.value {
            Value::Int(1) => return 1,
            Value::Int(n) => (
                format!("unsupported version {n}"),
                "this scalable reads version: 1".to_string(),
            ),
            Value::Str if node.quoted && node.text.trim() == "1" => (
                "version must be 1".to_string(),
                "write 1 without quotes".to_string(),
            ),
            _ => (
                "version must be 1".to_string(),
                format!("got {}", node.describe()),
            ),
        };
        self.at(node, "version", message, Some(hint));
        1
    }

    pub(super) fn project(&mut self, node: &Node) -> Option<Project> {
        let example = match &node.value {
            Value::Str => format!("write project: {{name: {}}}", node.text),
            _ => "e.g. project: {name: demeter-lulcc}".to_string(),
        };
        let m = self.map(node, "project", Pos::default(), example)?;
        let budget = self.budget;
        self.keys(&m, PROJECT_KEYS, |k| {
            unknown_key(budget, k, PROJECT_KEYS, None)
        });
        self.require(&m, "name", "e.g. name: demeter-lulcc");
        let output_roots = self.output_roots(&m);
        let node = self.field(&m, "name")?;
        let name = self.string(node, "project.name")?;
        if node.unresolved {
            return Some(Project { name, output_roots });
        }
        if let Err((message, hint)) = check_name("project", &name) {
            self.at(node, "project.name", message, Some(hint));
            return None;
        }
        Some(Project { name, output_roots })
    }

    /// `project.output_roots`: absolute directories, each without `..`.
    fn output_roots(&mut self, m: &M) -> Vec<String> {
        let roots = self.list_field(m, "output_roots", "[/data/shared]");
        let bad = roots.iter().find(|r| {
            let p = std::path::Path::new(r.as_str());
            !p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir)
        });
        if let (Some(bad), Some(node)) = (bad, self.field(m, "output_roots")) {
            self.at(
                node,
                "project.output_roots",
                format!("{bad:?} is not an absolute directory"),
                Some("write absolute paths without \"..\", e.g. [/data/shared]".into()),
            );
        }
        roots
    }
}
