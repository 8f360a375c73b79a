//! Overlays as the checker sees them: the `overlays:` section taken out of
//! the manifest, each overlay checked on its own (what it writes must be
//! valid where it lands), and the part of it that may be merged.
//!
//! Merging itself is `manifest::overlay`'s; this module must not merge.

use super::super::tree::{Entry, Node, Value};
use super::super::{join, Issue, Pos};
use super::{check_name, list_names, names_to_suggest, BaseNames, Ck};
use super::{OVERLAYS_MAX, OVERLAY_KEYS};
use crate::suggest::did_you_mean_within;

pub(super) fn overlays_section(
    e: Entry,
    overlays: &mut Vec<(String, Node)>,
    names: &mut Vec<String>,
    issues: &mut Vec<Issue>,
) {
    match e.value.value {
        Value::Map(list) => {
            if list.len() > OVERLAYS_MAX {
                issues.push(Issue::new(
                    e.value.at,
                    "overlays",
                    format!("more than {OVERLAYS_MAX} overlays"),
                ));
                return;
            }
            for o in list {
                let path = join("overlays", &o.key);
                // A broken overlay is still an overlay of that name: asking
                // for it is not also an "unknown overlay".
                names.push(o.key.clone());
                let empty = Node::empty_map(o.value.at);
                if let Err((message, hint)) = check_name("overlay", &o.key) {
                    issues.push(Issue::new(o.key_at, path, message).hint(hint));
                    overlays.push((o.key, empty));
                    continue;
                }
                match &o.value.value {
                    Value::Map(_) => overlays.push((o.key, o.value)),
                    _ => {
                        overlays.push((o.key.clone(), empty));
                        issues.push(
                            Issue::new(
                                if o.value.is_null() {
                                    o.key_at
                                } else {
                                    o.value.at
                                },
                                path,
                                format!("expected a mapping, got {}", o.value.describe()),
                            )
                            .hint(format!(
                                "e.g. {}: {{components: {{demeter: {{memory: 24G}}}}}}",
                                o.key
                            )),
                        );
                    }
                }
            }
        }
        _ => issues.push(
            Issue::new(
                if e.value.is_null() {
                    e.key_at
                } else {
                    e.value.at
                },
                "overlays",
                format!("expected a mapping, got {}", e.value.describe()),
            )
            .hint("e.g. overlays: {fix-oom: {components: {demeter: {memory: 24G}}}}".to_string()),
        ),
    }
}

/// An overlay without the targets, components and tasks the manifest does
/// not define: those are errors of the overlay, and merging them would only
/// repeat the error as a half-defined new entry.
pub(super) fn known_names_only(doc: &Node, base: &BaseNames) -> Node {
    let mut doc = doc.clone();
    if let Value::Map(entries) = &mut doc.value {
        for e in entries {
            let known = match e.key.as_str() {
                "targets" => &base.targets,
                "components" => &base.components,
                "tasks" => &base.tasks,
                _ => continue,
            };
            if let Value::Map(list) = &mut e.value.value {
                list.retain(|x| known.contains(&x.key));
            }
        }
    }
    doc
}

impl Ck<'_> {
    /// One overlay on its own: what it writes must be valid where it lands.
    pub(super) fn overlay(&mut self, name: &str, doc: &Node) {
        let Some(base) = self.base else { return };
        let Some(m) = self.map(
            doc,
            "",
            Pos::default(),
            format!("e.g. {name}: {{components: {{demeter: {{memory: 24G}}}}}}"),
        ) else {
            return;
        };
        let budget = self.budget;
        self.keys(&m, OVERLAY_KEYS, |k| {
            let hint =
                did_you_mean_within(budget, k, OVERLAY_KEYS.iter().copied()).unwrap_or_else(|| {
                    "an overlay can change project, targets, components, tasks and workflow"
                        .to_string()
                });
            (format!("unknown key {k:?}"), hint)
        });
        if let Some(n) = self.field(&m, "project") {
            self.project(n);
        }
        for (section, what, names) in [
            ("targets", "target", &base.targets),
            ("components", "component", &base.components),
            ("tasks", "task", &base.tasks),
        ] {
            let Some(node) = self.field(&m, section) else {
                continue;
            };
            let Some(sm) = self.map(
                node,
                section,
                Pos::default(),
                format!("e.g. {section}: {{NAME: {{...}}}}"),
            ) else {
                continue;
            };
            for e in sm.entries {
                let path = join(section, &e.key);
                if !names.contains(&e.key) {
                    let hint =
                        did_you_mean_within(self.budget, &e.key, names_to_suggest(&names.list))
                            .unwrap_or_else(|| {
                                format!(
                                    "an overlay changes the {section} the manifest defines ({})",
                                    if names.list.is_empty() {
                                        "none".to_string()
                                    } else {
                                        list_names(&names.list)
                                    }
                                )
                            });
                    self.at_key(e, &path, format!("unknown {what} {:?}", e.key), Some(hint));
                    continue;
                }
                if e.value.is_null() {
                    continue;
                }
                match section {
                    "targets" => {
                        self.target(e, base.kinds.get(&e.key).copied());
                    }
                    "components" => {
                        self.component(e);
                    }
                    _ => {
                        self.task(e);
                    }
                }
            }
        }
    }
}
