//! The checker's building blocks: mappings and their keys, and scalar
//! values (integers, booleans, strings, sizes, durations, choices, lists and
//! string maps) with the messages every section shares.

use super::super::tree::{Entry, Node, Value};
use super::super::{join, Pos};
use super::Ck;
use crate::suggest::did_you_mean_within;
use crate::units::{parse_duration_ms, parse_size_bytes};

pub(super) const SIZE_HINT: &str = "expected e.g. 512M, 16G or 1.5T";
pub(super) const DURATION_HINT: &str = "expected e.g. \"04:00:00\", 90m, 2h or 30s";
pub(super) const NO_VALUE_HINT: &str = "give a value or remove the key";

/// Integer bounds and what to say about a zero.
#[derive(Clone, Copy)]
pub(super) struct IntRule {
    pub min: u32,
    pub max: u32,
    pub zero_hint: Option<&'static str>,
}

pub(super) const fn positive(max: u32) -> IntRule {
    IntRule {
        min: 1,
        max,
        zero_hint: None,
    }
}

pub(super) const fn whole(max: u32) -> IntRule {
    IntRule {
        min: 0,
        max,
        zero_hint: None,
    }
}

/// A mapping being checked: its entries, its path, and where a missing key
/// is reported (the key that holds the mapping, or the mapping itself).
pub(super) struct M<'n> {
    pub entries: &'n [Entry],
    pub path: String,
    pub at: Pos,
    pub origin: Option<u16>,
}

impl<'n> M<'n> {
    pub fn entry(&self, key: &str) -> Option<&'n Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

impl Ck<'_> {
    // --- mappings and keys ----------------------------------------------------

    /// `node` as a mapping, or an error showing `example`.
    /// The entries of a section of named items (`targets`, `components`,
    /// `tasks`) whose name is valid and that have settings; each bad one is
    /// reported once (an empty entry is fine in an overlay, which may only
    /// name it). `settings` is the example shown for an empty entry.
    pub(super) fn named_entries<'n>(
        &mut self,
        m: &M<'n>,
        section: &str,
        kind: &str,
        settings: &str,
    ) -> Vec<&'n Entry> {
        let mut out = Vec::new();
        for e in m.entries {
            let path = join(section, &e.key);
            if let Err((message, hint)) = super::check_name(kind, &e.key) {
                self.at_key(e, &path, message, Some(hint));
                continue;
            }
            if e.value.is_null() {
                if !self.overlay_mode() {
                    self.at_key(
                        e,
                        &path,
                        format!("{kind} {:?} has no settings", e.key),
                        Some(format!("e.g. {}: {{{settings}}}", e.key)),
                    );
                }
                continue;
            }
            out.push(e);
        }
        out
    }

    pub(super) fn map<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        at: Pos,
        example: String,
    ) -> Option<M<'n>> {
        match &node.value {
            Value::Map(entries) => Some(M {
                entries,
                path: path.to_string(),
                at: if at.line > 0 { at } else { node.at },
                origin: node.origin,
            }),
            _ if node.unresolved => None,
            _ => {
                self.at(
                    node,
                    path,
                    format!("expected a mapping, got {}", node.describe()),
                    Some(example),
                );
                None
            }
        }
    }

    /// Unknown keys of `m`; `explain(key)` gives the message and hint.
    pub(super) fn keys(
        &mut self,
        m: &M,
        allowed: &[&str],
        explain: impl Fn(&str) -> (String, String),
    ) {
        for e in m.entries {
            if !allowed.contains(&e.key.as_str()) {
                let (message, hint) = explain(&e.key);
                self.at_key(e, &join(&m.path, &e.key), message, Some(hint));
            }
        }
    }

    /// The value of `key`, if given and not null. A null is an error in the
    /// manifest and a removal in an overlay.
    pub(super) fn field<'n>(&mut self, m: &M<'n>, key: &str) -> Option<&'n Node> {
        let e = m.entry(key)?;
        if e.value.is_null() {
            if !self.overlay_mode() {
                self.at_key(
                    e,
                    &join(&m.path, key),
                    format!("{key} has no value"),
                    Some(NO_VALUE_HINT.to_string()),
                );
            }
            return None;
        }
        Some(&e.value)
    }

    /// A required key (not checked in overlays, which change what is there).
    pub(super) fn require(&mut self, m: &M, key: &str, hint: &str) {
        if !self.overlay_mode() && m.entry(key).is_none() {
            let hint = (!hint.is_empty()).then(|| hint.to_string());
            self.push(
                m.at,
                m.origin,
                &m.path,
                format!("missing key {key:?}"),
                hint,
            );
        }
    }

    // --- scalar values ----------------------------------------------------------

    pub(super) fn int(
        &mut self,
        node: &Node,
        path: &str,
        name: &str,
        rule: IntRule,
    ) -> Option<u32> {
        if node.unresolved {
            return None;
        }
        let must = if rule.min >= 1 {
            format!("{name} must be a positive integer")
        } else {
            format!("{name} must be a whole number")
        };
        let hint = match &node.value {
            Value::Int(n) if *n >= i128::from(rule.min) && *n <= i128::from(rule.max) => {
                return u32::try_from(*n).ok();
            }
            Value::Int(n) if *n > i128::from(rule.max) => {
                self.at(
                    node,
                    path,
                    format!(
                        "{name} {} is more than the limit of {}",
                        node.text, rule.max
                    ),
                    None,
                );
                return None;
            }
            Value::Int(0) => rule
                .zero_hint
                .map_or_else(|| "got 0".to_string(), str::to_string),
            Value::Str if node.quoted && node.text.trim().parse::<i64>().is_ok() => {
                format!("write {} without quotes", node.text.trim())
            }
            _ => format!("got {}", node.describe()),
        };
        self.at(node, path, must, Some(hint));
        None
    }

    pub(super) fn int_field(&mut self, m: &M, key: &str, rule: IntRule) -> Option<u32> {
        let node = self.field(m, key)?;
        self.int(node, &join(&m.path, key), key, rule)
    }

    pub(super) fn bool_field(&mut self, m: &M, key: &str) -> Option<bool> {
        let node = self.field(m, key)?;
        if node.unresolved {
            return None;
        }
        let hint = match &node.value {
            Value::Bool(b) => return Some(*b),
            Value::Str if node.quoted && matches!(node.text.trim(), "true" | "false") => {
                format!("write {} without quotes", node.text.trim())
            }
            Value::Str
                if matches!(
                    node.text.to_ascii_lowercase().as_str(),
                    "yes" | "no" | "on" | "off" | "y" | "n"
                ) =>
            {
                format!("got {}; write true or false", node.describe())
            }
            _ => format!("got {}", node.describe()),
        };
        self.at(
            node,
            &join(&m.path, key),
            format!("{key} must be true or false"),
            Some(hint),
        );
        None
    }

    /// A scalar as text (numbers as spelled). Lists and mappings are errors.
    pub(super) fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Seq(_) | Value::Map(_) => {
                self.at(
                    node,
                    path,
                    format!("expected a string, got {}", node.describe()),
                    None,
                );
                None
            }
            _ => Some(node.text.clone()),
        }
    }

    /// A one-line, non-empty string: what ends up in job scripts and
    /// command lines, where a line break would be an injection.
    pub(super) fn line(&mut self, node: &Node, path: &str, name: &str) -> Option<String> {
        let s = self.string(node, path)?;
        if node.unresolved {
            return Some(s);
        }
        if s.trim().is_empty() {
            self.at(
                node,
                path,
                format!("{name} is empty"),
                Some(NO_VALUE_HINT.to_string()),
            );
            return None;
        }
        if s.chars().any(char::is_control) {
            self.at(node, path, format!("{name} must be one line"), None);
            return None;
        }
        Some(s)
    }

    pub(super) fn line_field(&mut self, m: &M, key: &str) -> Option<String> {
        let node = self.field(m, key)?;
        self.line(node, &join(&m.path, key), key)
    }

    pub(super) fn size_field(&mut self, m: &M, key: &str) -> Option<u64> {
        let node = self.field(m, key)?;
        self.size(node, &join(&m.path, key), key)
    }

    pub(super) fn size(&mut self, node: &Node, path: &str, name: &str) -> Option<u64> {
        if node.unresolved {
            return None;
        }
        let (message, hint) = match &node.value {
            Value::Seq(_) | Value::Map(_) | Value::Bool(_) => (
                format!("expected a size, got {}", node.describe()),
                SIZE_HINT.to_string(),
            ),
            _ => {
                let t = node.text.trim();
                if t.parse::<f64>().is_ok() {
                    (
                        format!("{name} {t} has no unit"),
                        format!("{SIZE_HINT}; a bare number would be bytes"),
                    )
                } else {
                    match parse_size_bytes(t) {
                        Ok(0) => (
                            format!("{name} must be more than 0"),
                            "leave it out for no limit".to_string(),
                        ),
                        Ok(bytes) => return Some(bytes),
                        Err(_) => (
                            format!("invalid size {:?}", node.text),
                            SIZE_HINT.to_string(),
                        ),
                    }
                }
            }
        };
        self.at(node, path, message, Some(hint));
        None
    }

    pub(super) fn duration_field(&mut self, m: &M, key: &str) -> Option<u64> {
        let node = self.field(m, key)?;
        let path = join(&m.path, key);
        if node.unresolved {
            return None;
        }
        let (message, hint) = match &node.value {
            Value::Seq(_) | Value::Map(_) | Value::Bool(_) => (
                format!("expected a duration, got {}", node.describe()),
                DURATION_HINT.to_string(),
            ),
            _ => {
                let t = node.text.trim();
                if t.parse::<f64>().is_ok() {
                    (
                        format!("{key} {t} has no unit"),
                        format!("{DURATION_HINT}; a bare number would be seconds"),
                    )
                } else {
                    match parse_duration_ms(t) {
                        Ok(0) => (
                            format!("{key} must be more than 0"),
                            "leave it out for no limit".to_string(),
                        ),
                        Ok(ms) => return Some(ms),
                        Err(_) => (
                            format!("invalid duration {:?}", node.text),
                            DURATION_HINT.to_string(),
                        ),
                    }
                }
            }
        };
        self.at(node, &path, message, Some(hint));
        None
    }

    /// One of `options` by name.
    pub(super) fn choice<T: Copy>(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        if node.unresolved {
            return None;
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        if matches!(node.value, Value::Seq(_) | Value::Map(_)) {
            self.at(
                node,
                path,
                format!(
                    "expected one of {}, got {}",
                    names.join(", "),
                    node.describe()
                ),
                None,
            );
            return None;
        }
        let t = node.text.trim();
        if let Some((_, v)) = options.iter().find(|(n, _)| *n == t) {
            return Some(*v);
        }
        let hint = did_you_mean_within(self.budget, t, names.iter().copied())
            .unwrap_or_else(|| format!("valid: {}", names.join(", ")));
        self.at(node, path, format!("unknown {what} {t:?}"), Some(hint));
        None
    }

    /// A list of one-line strings (`tags`, `security_groups`).
    pub(super) fn list_field(&mut self, m: &M, key: &str, example: &str) -> Vec<String> {
        let Some(node) = self.field(m, key) else {
            return Vec::new();
        };
        let path = join(&m.path, key);
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let p = format!("{path}[{i}]");
                    if item.is_null() {
                        self.at(item, &p, "list item is empty".to_string(), None);
                        return None;
                    }
                    self.line(item, &p, "list item")
                })
                .collect(),
            _ if node.unresolved => Vec::new(),
            _ => {
                let example = match &node.value {
                    Value::Str => format!("write {key}: [{}]", node.text),
                    _ => format!("e.g. {key}: {example}"),
                };
                self.at(
                    node,
                    &path,
                    format!("expected a list, got {}", node.describe()),
                    Some(example),
                );
                Vec::new()
            }
        }
    }

    /// A mapping of strings to strings (`mounts`, `env`), in the order written.
    pub(super) fn pairs_field<'n>(
        &mut self,
        m: &M<'n>,
        key: &str,
        example: &str,
    ) -> Vec<(&'n Entry, String)> {
        let Some(node) = self.field(m, key) else {
            return Vec::new();
        };
        let path = join(&m.path, key);
        let Value::Map(entries) = &node.value else {
            if !node.unresolved {
                self.at(
                    node,
                    &path,
                    format!("expected a mapping, got {}", node.describe()),
                    Some(format!("e.g. {key}: {example}")),
                );
            }
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries {
            let p = join(&path, &e.key);
            if e.value.is_null() {
                if !self.overlay_mode() {
                    self.at_key(
                        e,
                        &p,
                        format!("{} has no value", e.key),
                        Some(NO_VALUE_HINT.to_string()),
                    );
                }
                continue;
            }
            if let Some(v) = self.string(&e.value, &p) {
                out.push((e, v));
            }
        }
        out
    }
}
