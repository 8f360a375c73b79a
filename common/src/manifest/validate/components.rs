//! Components: each `components.NAME` mapping (image, resources, tags,
//! mounts, environment) and the nodes that cross-checks point at.
//!
//! It must not decide whether a component fits a target: `cross` does, with
//! the [`ComponentAt`] this module hands over.

use super::super::join;
use super::super::schema::*;
use super::super::tree::{Entry, Node};
use super::super::Pos;
use super::values::{positive, whole, M};
use super::{component_synonym, unknown_key, Ck};
use super::{COMPONENT_KEYS, GPUS_MAX};
use crate::workflow::CPUS_MAX;

/// Nodes of a component that cross-checks point at.
pub(super) struct ComponentAt<'n> {
    pub(super) key: &'n Entry,
    pub(super) cpus: Option<&'n Node>,
    pub(super) memory: Option<&'n Node>,
    pub(super) gpus: Option<&'n Node>,
    pub(super) image: Option<&'n Node>,
}

impl Ck<'_> {
    pub(super) fn components<'n>(&mut self, node: &'n Node) -> Vec<(Component, ComponentAt<'n>)> {
        let Some(m) = self.map(
            node,
            "components",
            Pos::default(),
            "e.g. components: {demeter: {cpus: 4, memory: 16G}}".to_string(),
        ) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in self.named_entries(&m, "components", "component", "cpus: 1, memory: 2G") {
            if let Some(c) = self.component(e) {
                out.push(c);
            }
        }
        out
    }

    pub(super) fn component<'n>(&mut self, e: &'n Entry) -> Option<(Component, ComponentAt<'n>)> {
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
        let mounts = self.mounts(&m, &path);
        let env = self.env(&m, &path);
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

    /// `mounts`: host paths to absolute container paths.
    fn mounts(&mut self, m: &M, path: &str) -> Vec<(String, String)> {
        self.pairs_field(m, "mounts", "{./demeter_data: /data}")
            .into_iter()
            .filter_map(|(e, to)| {
                let p = join(&join(path, "mounts"), &e.key);
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
            .collect()
    }

    /// `env`: variables with valid names.
    fn env(&mut self, m: &M, path: &str) -> Vec<(String, String)> {
        self.pairs_field(m, "env", "{DEMETER_DATA: /data}")
            .into_iter()
            .filter_map(|(e, value)| {
                if !env_name(&e.key) {
                    self.at_key(
                        e,
                        &join(&join(path, "env"), &e.key),
                        format!("invalid environment variable name {:?}", e.key),
                        Some(
                            "use letters, digits and \"_\", not starting with a digit".to_string(),
                        ),
                    );
                    return None;
                }
                Some((e.key.clone(), value))
            })
            .collect()
    }

    /// A key's value without reporting anything (it was checked already).
    pub(super) fn field_quiet<'n>(&self, m: &M<'n>, key: &str) -> Option<&'n Node> {
        m.entry(key).map(|e| &e.value).filter(|n| !n.is_null())
    }
}

pub(super) fn env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
