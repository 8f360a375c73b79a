//! The manifest schema as checks over the tree: every key and value, the
//! provider-specific options, and the cross-checks between targets,
//! components and tasks. Every problem is collected; nothing stops at the
//! first.
//!
//! The same checks run in two modes: on the merged manifest (required keys,
//! typed result, cross-checks) and on each overlay on its own (only what the
//! overlay writes; `null` there removes a key; a target's provider comes from
//! the manifest when the overlay does not set it).
//!
//! Here: loading (overlays, expansion, merge), `--target`, names and the
//! checker itself with its reporting. Then, one concept each: `keys` (which
//! keys exist where, providers, synonyms), `document` (the top level and the
//! assembled manifest), `targets`, `components`, `tasks`, `overlays` (each
//! overlay on its own), `values` (mappings, keys and typed scalars),
//! `providers` (target options per provider) and `cross` (components against
//! the targets that serve them).

mod components;
mod cross;
mod document;
mod keys;
mod overlays;
mod providers;
mod targets;
mod tasks;
mod values;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use super::expand::Expander;
use super::overlay::{mark, merge};
use super::schema::*;
use super::tree::{Entry, Node, Value};
use super::{concat, join, Issue, LoadOptions, Pos, GPUS_MAX, NAME_CHARS_MAX, WORKERS_MAX};
use crate::suggest::did_you_mean_within;
use components::ComponentAt;
use keys::*;
use overlays::{known_names_only, overlays_section};
pub use targets::check_storage;

/// At most this many overlays in a manifest.
const OVERLAYS_MAX: usize = 1_000;
/// Did-you-mean compares against at most this many names, so a manifest
/// with thousands of components stays cheap to check.
const SUGGEST_NAMES_MAX: usize = 500;
/// A hint lists at most this many names.
const LIST_NAMES_MAX: usize = 20;
/// Did-you-mean work over a whole manifest, in character pairs compared: a
/// file of thousands of misspelt names stays cheap to check, and the hints
/// that do not fit fall back to listing the valid names.
const SUGGEST_WORK_MAX: u64 = 2_000_000;

/// Names in the order written, with a set for lookups.
#[derive(Default)]
struct Names {
    list: Vec<String>,
    set: HashSet<String>,
}

impl Names {
    fn new(list: Vec<String>) -> Names {
        let set = list.iter().cloned().collect();
        Names { list, set }
    }

    fn contains(&self, name: &str) -> bool {
        self.set.contains(name)
    }
}

/// What overlays may refer to: the manifest's own names, and the provider
/// of each target.
struct BaseNames {
    targets: Names,
    kinds: HashMap<String, Kind>,
    components: Names,
    tasks: Names,
}

impl BaseNames {
    fn of(root: &Node) -> BaseNames {
        let entries = |key: &str| root.get(key).and_then(|e| e.value.entries()).unwrap_or(&[]);
        let names = |key: &str| Names::new(entries(key).iter().map(|e| e.key.clone()).collect());
        let kinds = entries("targets")
            .iter()
            .filter_map(|t| {
                let p = t.value.get("provider")?;
                let kind = PROVIDERS.iter().find(|(n, _)| *n == p.value.text)?.1;
                Some((t.key.clone(), kind))
            })
            .collect();
        BaseNames {
            targets: names("targets"),
            kinds,
            components: names("components"),
            tasks: names("tasks"),
        }
    }
}

/// Loads the manifest tree: overlays, expansion, merge, checks. Returns the
/// manifest when it could be built; it is valid only if no issue was added.
pub(super) fn load(
    mut root: Node,
    opts: &LoadOptions,
    issues: &mut Vec<Issue>,
) -> Option<Manifest> {
    let Value::Map(entries) = &mut root.value else {
        issues.push(
            Issue::new(
                root.at,
                "",
                format!("a manifest is a mapping, got {}", root.describe()),
            )
            .hint("start with version: 1".to_string()),
        );
        return None;
    };

    // Overlays come out of the manifest: they are merged onto it, not part of it.
    let overlays_entry = entries
        .iter()
        .position(|e| e.key == "overlays")
        .map(|i| entries.remove(i));
    let mut overlays: Vec<(String, Node)> = Vec::new();
    let mut overlay_names: Vec<String> = Vec::new();
    if let Some(e) = overlays_entry {
        overlays_section(e, &mut overlays, &mut overlay_names, issues);
    }

    let budget = Cell::new(SUGGEST_WORK_MAX);
    let selected = select_target(&root, opts.target, issues, &budget);
    let applied = applied_overlays(opts.overlays, &overlays, &overlay_names, &budget, issues);

    let mut expander = Expander::new(opts.env);
    expander.document(&mut root, "", true, selected.as_deref());
    for (i, (name, doc)) in overlays.iter_mut().enumerate() {
        // OVERLAYS_MAX keeps the index in a u16.
        mark(doc, u16::try_from(i).unwrap_or(u16::MAX));
        let strict = applied.contains(&i);
        expander.document(doc, &join("overlays", name), strict, selected.as_deref());
    }
    issues.append(&mut expander.issues);

    let base = BaseNames::of(&root);
    for (name, doc) in &overlays {
        let mut ck = Ck::new(&overlay_names, Some(&base), &budget);
        ck.overlay(name, doc);
        issues.append(&mut ck.issues);
    }

    for &i in &applied {
        if let Some((_, doc)) = overlays.get(i) {
            merge(&mut root, &known_names_only(doc, &base));
        }
    }

    let mut ck = Ck::new(&overlay_names, None, &budget);
    let mut manifest = ck.manifest(&root, selected.as_deref());
    issues.append(&mut ck.issues);
    if let Some(m) = &mut manifest {
        m.overlays_applied = applied
            .iter()
            .filter_map(|&i| overlay_names.get(i).cloned())
            .collect();
    }
    manifest
}

/// `--overlay` names as indices into `overlays`, in the order given; an
/// unknown name is an issue.
fn applied_overlays(
    asked: &[String],
    overlays: &[(String, Node)],
    overlay_names: &[String],
    budget: &Cell<u64>,
    issues: &mut Vec<Issue>,
) -> Vec<usize> {
    let mut applied: Vec<usize> = Vec::new();
    for name in asked {
        match overlays.iter().position(|(n, _)| n == name) {
            Some(i) => applied.push(i),
            None => {
                let mut hint = did_you_mean_within(budget, name, names_to_suggest(overlay_names))
                    .map(|h| format!("{h} "))
                    .unwrap_or_default();
                if overlay_names.is_empty() {
                    hint.push_str("this manifest defines no overlays");
                } else {
                    hint.push_str(&format!("overlays are: {}", list_names(overlay_names)));
                }
                issues.push(
                    Issue::new(
                        Pos::default(),
                        "overlays",
                        format!("unknown overlay {name:?}"),
                    )
                    .hint(hint),
                );
            }
        }
    }
    applied
}

/// `--target T`: T must be one of the manifest's targets.
fn select_target(
    root: &Node,
    target: Option<&str>,
    issues: &mut Vec<Issue>,
    budget: &Cell<u64>,
) -> Option<String> {
    let name = target?;
    let names: Vec<String> = root
        .get("targets")
        .and_then(|e| e.value.entries())
        .map(|es| es.iter().map(|e| e.key.clone()).collect())
        .unwrap_or_default();
    if names.iter().any(|n| n == name) {
        return Some(name.to_string());
    }
    let mut hint = did_you_mean_within(budget, name, names_to_suggest(&names))
        .map(|h| format!("{h} "))
        .unwrap_or_default();
    if names.is_empty() {
        hint.push_str("this manifest defines no targets");
    } else {
        hint.push_str(&format!("targets are: {}", list_names(&names)));
    }
    issues.push(
        Issue::new(
            Pos::default(),
            "targets",
            format!("unknown target {name:?}"),
        )
        .hint(hint),
    );
    None
}

fn names_to_suggest(names: &[String]) -> impl Iterator<Item = &str> {
    names.iter().take(SUGGEST_NAMES_MAX).map(String::as_str)
}

fn list_names(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(LIST_NAMES_MAX)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LIST_NAMES_MAX {
        s.push_str(&format!(", ... ({} in all)", names.len()));
    }
    s
}

/// Target, component, task and overlay names: identifiers in the CLI, tags
/// and pilot names.
fn check_name(what: &str, name: &str) -> Result<(), (String, String)> {
    if name.is_empty() {
        return Err((
            format!("{what} name is empty"),
            "give it a name, e.g. demeter-lulcc".to_string(),
        ));
    }
    if name.chars().count() > NAME_CHARS_MAX {
        return Err((
            format!("{what} name is longer than {NAME_CHARS_MAX} characters"),
            "use a shorter name".to_string(),
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err((
            format!("invalid {what} name {name:?}"),
            NAME_HINT.to_string(),
        ));
    }
    Ok(())
}

/// The checker: issues so far, overlay names (an error in a node that came
/// from overlay i is reported under `overlays.NAME.`), and in overlay mode
/// the manifest's names.
struct Ck<'a> {
    issues: Vec<Issue>,
    overlay_names: &'a [String],
    base: Option<&'a BaseNames>,
    /// Did-you-mean work left (see `crate::suggest::did_you_mean_within`).
    budget: &'a Cell<u64>,
}

impl<'a> Ck<'a> {
    fn new(
        overlay_names: &'a [String],
        base: Option<&'a BaseNames>,
        budget: &'a Cell<u64>,
    ) -> Self {
        Ck {
            issues: Vec::new(),
            overlay_names,
            base,
            budget,
        }
    }

    fn overlay_mode(&self) -> bool {
        self.base.is_some()
    }

    // --- reporting -----------------------------------------------------------

    fn push(
        &mut self,
        at: Pos,
        origin: Option<u16>,
        path: &str,
        message: String,
        hint: Option<String>,
    ) {
        let overlay = origin.and_then(|o| self.overlay_names.get(usize::from(o)));
        let path = match overlay {
            Some(name) => concat(&join("overlays", name), path),
            None => path.to_string(),
        };
        self.issues.push(Issue::new(at, path, message).hint(hint));
    }

    /// An error about a value, at the value.
    fn at(&mut self, node: &Node, path: &str, message: String, hint: Option<String>) {
        self.push(node.at, node.origin, path, message, hint);
    }

    /// An error about a key, at the key.
    fn at_key(&mut self, e: &Entry, path: &str, message: String, hint: Option<String>) {
        self.push(e.key_at, e.value.origin, path, message, hint);
    }
}
