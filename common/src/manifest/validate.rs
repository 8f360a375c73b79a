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
//! Here: loading (overlays, expansion, merge) and the sections; `values`:
//! mappings, keys and typed scalars; `providers`: target options per
//! provider; `cross`: components against the targets that serve them.

mod cross;
mod providers;
mod values;

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};

use super::expand::Expander;
use super::overlay::{mark, merge};
use super::schema::*;
use super::section;
use super::tree::{Entry, Node, Value};
use super::{concat, join, Issue, LoadOptions, Pos, GPUS_MAX, NAME_CHARS_MAX, WORKERS_MAX};
use crate::suggest::did_you_mean_within;
use crate::workflow::{CPUS_MAX, RETRIES_MAX};
use values::{positive, whole, IntRule, M};

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

const TOP_KEYS: &[&str] = &[
    "version",
    "project",
    "targets",
    "components",
    "tasks",
    "overlays",
    "workflow",
];
const OVERLAY_KEYS: &[&str] = &["project", "targets", "components", "tasks", "workflow"];
const PROJECT_KEYS: &[&str] = &["name"];
const TARGET_KEYS: &[&str] = &["provider", "max_workers", "containers", "tags", "adaptive"];
const LOCAL_KEYS: &[&str] = &["threads_per_worker", "processes"];
const SLURM_KEYS: &[&str] = &[
    "queue",
    "account",
    "walltime",
    "interface",
    "qos",
    "constraint",
    "extra_directives",
    "setup",
    "worker_cpus",
    "worker_memory",
    "worker_gpus",
];
const AWS_KEYS: &[&str] = &[
    "region",
    "cluster_type",
    "image",
    "instance_type",
    "subnet",
    "security_groups",
    "ami",
    "worker_cpu",
    "worker_mem",
    "endpoint_url",
];
const GCP_KEYS: &[&str] = &[
    "project",
    "zone",
    "machine_type",
    "image",
    "worker_cpus",
    "worker_memory",
    "worker_gpus",
];
const KUBERNETES_KEYS: &[&str] = &[
    "namespace",
    "image",
    "context",
    "service_account",
    "kind",
    "worker_cpus",
    "worker_memory",
    "worker_gpus",
];
const ADAPTIVE_KEYS: &[&str] = &["minimum", "maximum"];
const COMPONENT_KEYS: &[&str] = &["image", "cpus", "memory", "gpus", "tags", "mounts", "env"];
const TASK_KEYS: &[&str] = &["component", "cache", "retries", "walltime"];

const NAME_HINT: &str = "use letters, digits, \"_\", \".\" and \"-\"";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Local,
    Slurm,
    Aws,
    Gcp,
    Kubernetes,
}

const PROVIDERS: &[(&str, Kind)] = &[
    ("local", Kind::Local),
    ("slurm", Kind::Slurm),
    ("aws", Kind::Aws),
    ("gcp", Kind::Gcp),
    ("kubernetes", Kind::Kubernetes),
];

impl Kind {
    fn name(self) -> &'static str {
        PROVIDERS
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("local", |(n, _)| n)
    }

    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Local => LOCAL_KEYS,
            Kind::Slurm => SLURM_KEYS,
            Kind::Aws => AWS_KEYS,
            Kind::Gcp => GCP_KEYS,
            Kind::Kubernetes => KUBERNETES_KEYS,
        }
    }

    /// The option that sizes a worker's `dim` (cpus, memory, gpus).
    fn knob(self, dim: &str) -> &'static str {
        match (self, dim) {
            (Kind::Local, "cpus") => "threads_per_worker",
            (Kind::Aws, "cpus") => "worker_cpu",
            (Kind::Aws, _) => "worker_mem",
            (_, "cpus") => "worker_cpus",
            (_, "memory") => "worker_memory",
            _ => "worker_gpus",
        }
    }
}

/// Words users bring from elsewhere, and the key we call it.
fn synonym(kind: Option<Kind>, key: &str) -> Option<&'static str> {
    Some(match (kind, key) {
        (Some(Kind::Slurm), "partition") => "queue",
        (Some(Kind::Slurm), "time") => "walltime",
        (Some(Kind::Slurm), "project") => "account",
        (Some(Kind::Aws), "cpu" | "cpus" | "worker_cpus") => "worker_cpu",
        (Some(Kind::Aws), "memory" | "mem" | "worker_memory") => "worker_mem",
        (Some(Kind::Gcp), "region") => "zone",
        (Some(Kind::Local), "threads") => "threads_per_worker",
        (Some(Kind::Slurm | Kind::Gcp | Kind::Kubernetes), "cpus" | "cpu") => "worker_cpus",
        (Some(Kind::Slurm | Kind::Gcp | Kind::Kubernetes), "memory" | "mem") => "worker_memory",
        (Some(Kind::Slurm | Kind::Gcp | Kind::Kubernetes), "gpus") => "worker_gpus",
        (_, "workers") => "max_workers",
        (_, "container" | "runtime") => "containers",
        _ => return None,
    })
}

fn component_synonym(key: &str) -> Option<&'static str> {
    Some(match key {
        "mem" | "ram" => "memory",
        "volumes" | "binds" => "mounts",
        "environment" => "env",
        "container" => "image",
        _ => return None,
    })
}

fn task_synonym(key: &str) -> Option<&'static str> {
    Some(match key {
        "max_retries" | "retry" => "retries",
        "time" | "timeout" => "walltime",
        "tag" => "component",
        _ => return None,
    })
}

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
    let mut applied: Vec<usize> = Vec::new();
    for name in opts.overlays {
        match overlays.iter().position(|(n, _)| n == name) {
            Some(i) => applied.push(i),
            None => {
                let mut hint = did_you_mean_within(&budget, name, names_to_suggest(&overlay_names))
                    .map(|h| format!("{h} "))
                    .unwrap_or_default();
                if overlay_names.is_empty() {
                    hint.push_str("this manifest defines no overlays");
                } else {
                    hint.push_str(&format!("overlays are: {}", list_names(&overlay_names)));
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

fn overlays_section(
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

/// An overlay without the targets, components and tasks the manifest does
/// not define: those are errors of the overlay, and merging them would only
/// repeat the error as a half-defined new entry.
fn known_names_only(doc: &Node, base: &BaseNames) -> Node {
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

/// Nodes of a component that cross-checks point at.
struct ComponentAt<'n> {
    key: &'n Entry,
    cpus: Option<&'n Node>,
    memory: Option<&'n Node>,
    gpus: Option<&'n Node>,
    image: Option<&'n Node>,
}

/// The checker: issues so far, overlay names (an error in a node that came
/// from overlay i is reported under `overlays.NAME.`), and in overlay mode
/// the manifest's names.
struct Ck<'a> {
    issues: Vec<Issue>,
    overlay_names: &'a [String],
    base: Option<&'a BaseNames>,
    /// Did-you-mean work left (see [`suggest`]).
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

    // --- the manifest -------------------------------------------------------------

    fn manifest(&mut self, root: &Node, selected: Option<&str>) -> Option<Manifest> {
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
            let task_names = Names::new(tasks.iter().map(|(t, _)| t.name.clone()).collect());
            for (i, job) in def.jobs.iter().enumerate() {
                let Some(task) = &job.task else { continue };
                if task_names.contains(task) {
                    continue;
                }
                let p = format!("jobs[{i}].task");
                let (at, origin) = section::locate(node, &p, false);
                let hint =
                    did_you_mean_within(self.budget, task, names_to_suggest(&task_names.list))
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

        Some(Manifest {
            version,
            project: project.unwrap_or(Project {
                name: String::new(),
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

    fn version(&mut self, node: &Node) -> u32 {
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

    fn project(&mut self, node: &Node) -> Option<Project> {
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
        let node = self.field(&m, "name")?;
        let name = self.string(node, "project.name")?;
        if node.unresolved {
            return Some(Project { name });
        }
        if let Err((message, hint)) = check_name("project", &name) {
            self.at(node, "project.name", message, Some(hint));
            return None;
        }
        Some(Project { name })
    }

    // --- targets ----------------------------------------------------------------------

    fn targets<'n>(&mut self, node: &'n Node) -> Vec<(Target, &'n Entry)> {
        let Some(m) = self.map(
            node,
            "targets",
            Pos::default(),
            "e.g. targets: {local: {provider: local}}".to_string(),
        ) else {
            return Vec::new();
        };
        if m.entries.is_empty() && !self.overlay_mode() {
            self.at(
                node,
                "targets",
                "no targets".to_string(),
                Some("add one, e.g. local: {provider: local}".to_string()),
            );
        }
        let mut out = Vec::new();
        for e in m.entries {
            let path = join("targets", &e.key);
            if let Err((message, hint)) = check_name("target", &e.key) {
                self.at_key(e, &path, message, Some(hint));
                continue;
            }
            if e.value.is_null() {
                if !self.overlay_mode() {
                    self.at_key(
                        e,
                        &path,
                        format!("target {:?} has no settings", e.key),
                        Some(format!("e.g. {}: {{provider: local}}", e.key)),
                    );
                }
                continue;
            }
            if let Some(t) = self.target(e, None) {
                out.push((t, e));
            }
        }
        out
    }

    /// One target. `base_kind`: in an overlay, the provider the manifest gives it.
    fn target(&mut self, e: &Entry, base_kind: Option<Kind>) -> Option<Target> {
        let name = &e.key;
        let path = join("targets", name);
        let m = self.map(
            &e.value,
            &path,
            e.key_at,
            format!("e.g. {name}: {{provider: slurm, queue: batch}}"),
        )?;
        self.require(&m, "provider", "valid: local, slurm, aws, gcp, kubernetes");
        let kind = match self.field(&m, "provider") {
            Some(p) => self.choice(p, &join(&path, "provider"), "provider", PROVIDERS),
            None => base_kind,
        };
        match kind {
            Some(kind) => {
                let mut allowed: Vec<&str> = kind.keys().to_vec();
                allowed.extend_from_slice(TARGET_KEYS);
                let provider = kind.name();
                let budget = self.budget;
                self.keys(&m, &allowed, |k| {
                    let hint = synonym(Some(kind), k)
                        .filter(|s| allowed.contains(s))
                        .map(|s| format!("did you mean {s:?}?"))
                        .or_else(|| did_you_mean_within(budget, k, allowed.iter().copied()))
                        .unwrap_or_else(|| format!("valid: {}", allowed.join(", ")));
                    (format!("unknown key {k:?} for provider {provider}"), hint)
                });
            }
            None => {
                // The provider is unknown or missing: only keys that no
                // provider takes can be called unknown.
                let mut all: Vec<&str> = TARGET_KEYS.to_vec();
                for (_, k) in PROVIDERS {
                    for key in k.keys() {
                        if !all.contains(key) {
                            all.push(key);
                        }
                    }
                }
                let budget = self.budget;
                self.keys(&m, &all, |k| unknown_key(budget, k, &all, synonym(None, k)));
            }
        }

        let max_workers = self.int_field(
            &m,
            "max_workers",
            IntRule {
                zero_hint: Some(
                    "use at least 1; to scale to zero, use adaptive: {minimum: 0, maximum: N}",
                ),
                ..positive(WORKERS_MAX)
            },
        );
        let containers = self.containers(&m);
        let tags = self.list_field(&m, "tags", "[demeter, postprocess]");
        let adaptive = self
            .field(&m, "adaptive")
            .and_then(|n| self.adaptive(n, &join(&path, "adaptive"), max_workers));

        let kind = kind?;
        let (provider, worker) = match kind {
            Kind::Local => self.local(&m),
            Kind::Slurm => self.slurm(&m),
            Kind::Aws => self.aws(&m),
            Kind::Gcp => self.gcp(&m),
            Kind::Kubernetes => self.kubernetes(&m),
        };
        if self.overlay_mode() {
            return None;
        }
        Some(Target {
            name: name.clone(),
            provider,
            max_workers: max_workers.or(adaptive.map(|a| a.maximum)).unwrap_or(1),
            containers: containers.unwrap_or(ContainerPolicy::Auto),
            tags,
            adaptive,
            worker,
        })
    }

    // --- components and tasks -------------------------------------------------------------

    fn components<'n>(&mut self, node: &'n Node) -> Vec<(Component, ComponentAt<'n>)> {
        let Some(m) = self.map(
            node,
            "components",
            Pos::default(),
            "e.g. components: {demeter: {cpus: 4, memory: 16G}}".to_string(),
        ) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in m.entries {
            let path = join("components", &e.key);
            if let Err((message, hint)) = check_name("component", &e.key) {
                self.at_key(e, &path, message, Some(hint));
                continue;
            }
            if e.value.is_null() {
                if !self.overlay_mode() {
                    self.at_key(
                        e,
                        &path,
                        format!("component {:?} has no settings", e.key),
                        Some(format!("e.g. {}: {{cpus: 1, memory: 2G}}", e.key)),
                    );
                }
                continue;
            }
            if let Some(c) = self.component(e) {
                out.push(c);
            }
        }
        out
    }

    fn component<'n>(&mut self, e: &'n Entry) -> Option<(Component, ComponentAt<'n>)> {
        let name = &e.key;
        let path = join("components", name);
        let m = self.map(
            &e.value,
            &path,
            e.key_at,
            format!("e.g. {name}: {{cpus: 4, memory: 16G}}"),
        )?;
        let budget = self.budget;
        self.keys(&m, COMPONENT_KEYS, |k| {
            unknown_key(budget, k, COMPONENT_KEYS, component_synonym(k))
        });
        let image = self.field(&m, "image").and_then(|node| {
            let path = join(&path, "image");
            let image = self.line(node, &path, "image")?;
            if !node.unresolved && image.chars().any(char::is_whitespace) {
                self.at(
                    node,
                    &path,
                    format!("invalid image {image:?}"),
                    Some("an image has no spaces, e.g. ghcr.io/jgcri/demeter:2.0.1".to_string()),
                );
                return None;
            }
            Some(image)
        });
        let cpus = self.int_field(&m, "cpus", positive(CPUS_MAX));
        let memory_bytes = self.size_field(&m, "memory");
        let gpus = self.int_field(&m, "gpus", whole(GPUS_MAX));
        let tags = self.list_field(&m, "tags", "[lulcc, downscaling]");
        let mounts = self
            .pairs_field(&m, "mounts", "{./demeter_data: /data}")
            .into_iter()
            .filter_map(|(e, to)| {
                let p = join(&join(&path, "mounts"), &e.key);
                if e.key.trim().is_empty() {
                    self.at_key(e, &p, "host path is empty".to_string(), None);
                    return None;
                }
                if !e.value.unresolved && !to.starts_with('/') {
                    self.at(
                        &e.value,
                        &p,
                        format!("container path {to:?} must be absolute"),
                        Some(format!("e.g. /{}", to.trim_start_matches("./"))),
                    );
                    return None;
                }
                Some((e.key.clone(), to))
            })
            .collect();
        let env = self
            .pairs_field(&m, "env", "{DEMETER_DATA: /data}")
            .into_iter()
            .filter_map(|(e, value)| {
                if !env_name(&e.key) {
                    self.at_key(
                        e,
                        &join(&join(&path, "env"), &e.key),
                        format!("invalid environment variable name {:?}", e.key),
                        Some(
                            "use letters, digits and \"_\", not starting with a digit".to_string(),
                        ),
                    );
                    return None;
                }
                Some((e.key.clone(), value))
            })
            .collect();
        if self.overlay_mode() {
            return None;
        }
        let at = ComponentAt {
            key: e,
            cpus: self.field_quiet(&m, "cpus"),
            memory: self.field_quiet(&m, "memory"),
            gpus: self.field_quiet(&m, "gpus"),
            image: self.field_quiet(&m, "image"),
        };
        let component = Component {
            name: name.clone(),
            image,
            cpus: cpus.unwrap_or(1),
            memory_bytes,
            gpus: gpus.unwrap_or(0),
            tags,
            mounts,
            env,
        };
        Some((component, at))
    }

    /// A key's value without reporting anything (it was checked already).
    fn field_quiet<'n>(&self, m: &M<'n>, key: &str) -> Option<&'n Node> {
        m.entry(key).map(|e| &e.value).filter(|n| !n.is_null())
    }

    fn tasks<'n>(&mut self, node: &'n Node) -> Vec<(TaskBinding, Option<&'n Node>)> {
        let Some(m) = self.map(
            node,
            "tasks",
            Pos::default(),
            "e.g. tasks: {run_demeter_scenario: {component: demeter}}".to_string(),
        ) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in m.entries {
            let path = join("tasks", &e.key);
            if let Err((message, hint)) = check_name("task", &e.key) {
                self.at_key(e, &path, message, Some(hint));
                continue;
            }
            if e.value.is_null() {
                if !self.overlay_mode() {
                    self.at_key(
                        e,
                        &path,
                        format!("task {:?} has no settings", e.key),
                        Some(format!("e.g. {}: {{component: NAME}}", e.key)),
                    );
                }
                continue;
            }
            if let Some(t) = self.task(e) {
                out.push(t);
            }
        }
        out
    }

    fn task<'n>(&mut self, e: &'n Entry) -> Option<(TaskBinding, Option<&'n Node>)> {
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
    fn known_component(&mut self, node: &Node, path: &str, components: &Names) {
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

    // --- overlays ----------------------------------------------------------------------------

    /// One overlay on its own: what it writes must be valid where it lands.
    fn overlay(&mut self, name: &str, doc: &Node) {
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

fn unknown_top_key(budget: &Cell<u64>, key: &str, allowed: &[&str]) -> (String, String) {
    let hint = match key {
        "jobs" => "jobs belong in the workflow: section (workflow: {workflow: NAME, jobs: [...]})"
            .to_string(),
        "name" => "the project name goes under project: {name: ...}".to_string(),
        _ => did_you_mean_within(budget, key, allowed.iter().copied())
            .unwrap_or_else(|| format!("valid keys: {}", allowed.join(", "))),
    };
    (format!("unknown key {key:?}"), hint)
}

/// `unknown key "x"` with a did-you-mean, a known synonym, or the valid keys.
fn unknown_key(
    budget: &Cell<u64>,
    key: &str,
    allowed: &[&str],
    synonym: Option<&str>,
) -> (String, String) {
    let hint = synonym
        .filter(|s| allowed.contains(s))
        .map(|s| format!("did you mean {s:?}?"))
        .or_else(|| did_you_mean_within(budget, key, allowed.iter().copied()))
        .unwrap_or_else(|| format!("valid keys: {}", allowed.join(", ")));
    (format!("unknown key {key:?}"), hint)
}

fn env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
