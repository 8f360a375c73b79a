//! Tasks: each `tasks.NAME` binding (component, cache, retries, walltime,
//! the `auto` sizing keys `memory`/`cpus`/`walltime: auto` and their
//! `fallback:`) and the check that a binding names a component that exists.
//!
//! It must not check the component itself: `components` does.

use super::super::join;
use super::super::schema::*;
use super::super::tree::{Entry, Node, Value};
use super::super::Pos;
use super::values::whole;
use super::values::M;
use super::{list_names, names_to_suggest, task_synonym, unknown_key, Ck, Names};
use super::{FALLBACK_KEYS, TASK_KEYS};
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
        let auto = self.auto_keys(&m);
        let walltime_ms = match auto.walltime {
            true => None,
            false => self.duration_field(&m, "walltime"),
        };
        let fallback = self.fallback(&m);
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
            auto,
            fallback,
        };
        Some((binding, component_node))
    }

    /// `memory: auto`, `cpus: auto`, `walltime: auto`: a binding sizes
    /// nothing itself (its component does), so `memory` and `cpus` take only
    /// `auto`; `walltime` takes `auto` or a duration (read by the caller).
    fn auto_keys(&mut self, m: &M) -> AutoResources {
        let mut auto = AutoResources::default();
        for key in ["memory", "cpus", "walltime"] {
            let Some(node) = self.field(m, key) else {
                continue;
            };
            let is_auto = !node.unresolved && node.text.trim() == "auto";
            match key {
                "memory" => auto.memory = is_auto,
                "cpus" => auto.cpus = is_auto,
                _ => auto.walltime = is_auto,
            }
            if !is_auto && key != "walltime" && !node.unresolved {
                self.at(
                    node,
                    &join(&m.path, key),
                    format!("a task binding's {key} takes only auto, got {}", node.describe()),
                    Some(format!(
                        "set the size on the component, or write {key}: auto with fallback: {{{key}: ...}}"
                    )),
                );
            }
        }
        auto
    }

    /// `fallback: {memory, cpus, walltime}`: what an auto quantity asks for
    /// while the advisor is not confident.
    fn fallback(&mut self, m: &M) -> AutoFallback {
        let Some(node) = self.field(m, "fallback") else {
            return AutoFallback::default();
        };
        let path = join(&m.path, "fallback");
        let example = "e.g. fallback: {memory: 2G, walltime: 10m}".to_string();
        let Some(f) = self.map(node, &path, Pos::default(), example) else {
            return AutoFallback::default();
        };
        let budget = self.budget;
        self.keys(&f, FALLBACK_KEYS, |k| {
            unknown_key(budget, k, FALLBACK_KEYS, None)
        });
        AutoFallback {
            memory_bytes: self.size_field(&f, "memory"),
            cpus: self.int_field(&f, "cpus", super::values::positive(u32::MAX)),
            walltime_ms: self.duration_field(&f, "walltime"),
        }
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
