//! Tasks: each `tasks.NAME` binding (component, cache, retries, walltime)
//! and the check that a binding names a component that exists.
//!
//! It must not check the component itself: `components` does.

use super::super::join;
use super::super::schema::*;
use super::super::tree::{Entry, Node, Value};
use super::super::Pos;
use super::values::whole;
use super::TASK_KEYS;
use super::{list_names, names_to_suggest, task_synonym, unknown_key, Ck, Names};
use crate::suggest::did_you_mean_within;
use crate::workflow::RETRIES_MAX;

impl Ck<'_> {
    pub(super) fn tasks<'n>(&mut self, node: &'n Node) -> Vec<(TaskBinding, Option<&'n Node>)> {
        let Some(m) = self.map(
            node,
            "tasks",
            Pos::default(),
            "e.g. tasks: {run_demeter_scenario: {component: demeter}}".to_string(),
        ) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in self.named_entries(&m, "tasks", "task", "component: NAME") {
            if let Some(t) = self.task(e) {
                out.push(t);
            }
        }
        out
    }

    pub(super) fn task<'n>(&mut self, e: &'n Entry) -> Option<(TaskBinding, Option<&'n Node>)> {
        let name = &e.key;
        let path = join("tasks", name);
        let example = match &e.value.value {
            Value::Str => format!("write {name}: {{component: {}}}", e.value.text),
            _ => format!("e.g. {name}: {{component: demeter, retries: 2}}"),
        };
        let m = self.map(&e.value, &path, e.key_at, example)?;
        let budget = self.budget;
        self.keys(&m, TASK_KEYS, |k| {
            unknown_key(budget, k, TASK_KEYS, task_synonym(k))
        });
        self.require(&m, "component", "name the component that runs it");
        let component_node = self.field(&m, "component");
        let component =
            component_node.and_then(|n| self.line(n, &join(&path, "component"), "component"));
        let cache = self.bool_field(&m, "cache");
        let retries = self.int_field(&m, "retries", whole(u32::MAX));
        if let (Some(r), Some(node)) = (retries, self.field_quiet(&m, "retries")) {
            if r > RETRIES_MAX {
                self.at(
                    node,
                    &join(&path, "retries"),
                    format!("retries {r} is more than the limit of {RETRIES_MAX}"),
                    None,
                );
            }
        }
        let walltime_ms = self.duration_field(&m, "walltime");
        if let (Some(base), Some(node), Some(c)) = (self.base, component_node, &component) {
            // An overlay may rebind a task, but only to a component that exists.
            if !base.components.contains(c) {
                self.known_component(node, &join(&path, "component"), &base.components);
            }
        }
        if self.overlay_mode() {
            return None;
        }
        let binding = TaskBinding {
            name: name.clone(),
            component: component.unwrap_or_default(),
            cache: cache.unwrap_or(false),
            retries: retries.unwrap_or(0),
            walltime_ms,
        };
        Some((binding, component_node))
    }

    /// A task's `component:` (at `path`) must name a component.
    pub(super) fn known_component(&mut self, node: &Node, path: &str, components: &Names) {
        let name = node.text.trim();
        if node.unresolved || name.is_empty() || components.contains(name) {
            return;
        }
        let hint = did_you_mean_within(self.budget, name, names_to_suggest(&components.list))
            .unwrap_or_else(|| {
                if components.list.is_empty() {
                    "define it under components:".to_string()
                } else {
                    format!("components are: {}", list_names(&components.list))
                }
            });
        self.at(
            node,
            path,
            format!("unknown component {name:?}"),
            Some(hint),
        );
    }
}
