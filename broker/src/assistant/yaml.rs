//! An ordered YAML tree for what the assistants read and write: manifests
//! parsed with their key order kept (serde-saphyr into [`Yaml`]) and printed
//! back in block style with every string quoted where YAML could misread it.
//!
//! Owns the tree, its printer and its parser. Must not: check what a
//! manifest means (`scalable_common::manifest` does, through the CLI's
//! validation glue).

use std::fmt::Write as _;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A YAML node with its map keys in the order written.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    pub fn str(s: impl Into<String>) -> Yaml {
        Yaml::Str(s.into())
    }

    pub fn map() -> Yaml {
        Yaml::Map(Vec::new())
    }

    /// A list of strings.
    pub fn strs<S: AsRef<str>>(items: &[S]) -> Yaml {
        Yaml::List(items.iter().map(|s| Yaml::str(s.as_ref())).collect())
    }

    /// The value under `key` of a map.
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets `key` (in place when present, appended otherwise); a non-map
    /// becomes a map first.
    pub fn set(&mut self, key: &str, value: Yaml) -> &mut Yaml {
        if !matches!(self, Yaml::Map(_)) {
            *self = Yaml::map();
        }
        let Yaml::Map(entries) = self else {
            unreachable!("made a map above")
        };
        match entries.iter().position(|(k, _)| k == key) {
            Some(i) => {
                entries[i].1 = value;
                &mut entries[i].1
            }
            None => {
                entries.push((key.to_string(), value));
                &mut entries.last_mut().expect("pushed").1
            }
        }
    }

    /// The map under `key`, created when missing.
    pub fn entry(&mut self, key: &str) -> &mut Yaml {
        if self.get(key).is_none() {
            self.set(key, Yaml::map());
        }
        self.get_mut(key).expect("set above")
    }

    pub fn remove(&mut self, key: &str) -> Option<Yaml> {
        match self {
            Yaml::Map(entries) => {
                let i = entries.iter().position(|(k, _)| k == key)?;
                Some(entries.remove(i).1)
            }
            _ => None,
        }
    }

    pub fn entries(&self) -> &[(String, Yaml)] {
        match self {
            Yaml::Map(entries) => entries,
            _ => &[],
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A scalar as text (numbers and booleans too), as a user wrote it.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Yaml::Str(s) => Some(s.clone()),
            Yaml::Int(i) => Some(i.to_string()),
            Yaml::Float(f) => Some(f.to_string()),
            Yaml::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Yaml::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }

    /// Block-style YAML text, ending in a newline.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        match self {
            Yaml::Map(_) | Yaml::List(_) => write_block(&mut out, self, 0),
            scalar => {
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
        out
    }

    /// Parses YAML text (one document) keeping key order.
    pub fn parse(text: &str) -> Result<Yaml, String> {
        serde_saphyr::from_str::<Yaml>(text).map_err(|e| first_line(&e.to_string()))
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn is_empty_collection(v: &Yaml) -> bool {
    matches!(v, Yaml::Map(m) if m.is_empty()) || matches!(v, Yaml::List(l) if l.is_empty())
}

fn write_block(out: &mut String, v: &Yaml, indent: usize) {
    let pad = " ".repeat(indent);
    match v {
        Yaml::Map(entries) => {
            for (k, val) in entries {
                let key = quote_if_needed(k);
                match val {
                    Yaml::Map(_) | Yaml::List(_) if !is_empty_collection(val) => {
                        let _ = writeln!(out, "{pad}{key}:");
                        write_block(out, val, indent + 2);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{key}: {}", scalar_text(val));
                    }
                }
            }
        }
        Yaml::List(items) => {
            for item in items {
                match item {
                    Yaml::Map(_) | Yaml::List(_) if !is_empty_collection(item) => {
                        // The first line of the item follows the dash.
                        let mut inner = String::new();
                        write_block(&mut inner, item, indent + 2);
                        let rest = inner.get(indent + 2..).unwrap_or("");
                        let _ = write!(out, "{pad}- {rest}");
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}- {}", scalar_text(item));
                    }
                }
            }
        }
        scalar => {
            let _ = writeln!(out, "{pad}{}", scalar_text(scalar));
        }
    }
}

fn scalar_text(v: &Yaml) -> String {
    match v {
        Yaml::Null => "null".into(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Int(i) => i.to_string(),
        Yaml::Float(f) => f.to_string(),
        Yaml::Str(s) => quote_if_needed(s),
        Yaml::Map(_) => "{}".into(),
        Yaml::List(_) => "[]".into(),
    }
}

/// A string as a plain scalar when YAML reads it back as the same string,
/// else double-quoted (JSON escaping is valid YAML).
fn quote_if_needed(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '@' | '+')
        })
        && !s.starts_with(['-', ':', '@', '.'])
        && !s.contains(": ")
        && !s.ends_with(':')
        && !looks_like_other_scalar(s);
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    }
}

/// Strings YAML would read as a number, boolean, null or time.
fn looks_like_other_scalar(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~" | "y" | "n"
    ) || s.parse::<f64>().is_ok()
        || s.starts_with(|c: char| c.is_ascii_digit()) && s.contains(':')
        || s.starts_with("0x")
        || s.starts_with("0o")
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Yaml, D::Error> {
        d.deserialize_any(YamlVisitor)
    }
}

struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Yaml, D::Error> {
        Yaml::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Yaml, E> {
        Ok(Yaml::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Yaml, E> {
        Ok(i64::try_from(v).map_or(Yaml::Float(v as f64), Yaml::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Yaml, E> {
        Ok(Yaml::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Yaml, E> {
        Ok(Yaml::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Yaml, E> {
        Ok(Yaml::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Yaml, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Yaml>()? {
            items.push(v);
        }
        Ok(Yaml::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Yaml, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Yaml, Yaml>()? {
            let key = k
                .scalar_text()
                .ok_or_else(|| de::Error::custom("a map key must be a scalar"))?;
            entries.push((key, v));
        }
        Ok(Yaml::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_with_order_and_quoting() {
        let text = "version: 1\nproject:\n  name: demo\ntargets:\n  hpc:\n    provider: slurm\n    walltime: \"04:00:00\"\n    tags: [a, b]\ncomponents:\n  m:\n    memory: 16G\n    env: {K: \"yes\"}\n    mounts: {./data: /data}\n";
        let y = Yaml::parse(text).unwrap();
        let out = y.to_text();
        assert_eq!(Yaml::parse(&out).unwrap(), y, "{out}");
        assert!(
            out.starts_with("version: 1\nproject:\n  name: demo\ntargets:"),
            "{out}"
        );
        assert!(out.contains("walltime: \"04:00:00\""), "{out}");
        assert!(out.contains("K: \"yes\""), "{out}");
        assert!(out.contains("- a\n"), "{out}");
    }

    #[test]
    fn lists_of_maps_print_after_the_dash() {
        let mut job = Yaml::map();
        job.set("name", Yaml::str("a"));
        job.set("command", Yaml::strs(&["true"]));
        let mut root = Yaml::map();
        root.set("jobs", Yaml::List(vec![job]));
        let out = root.to_text();
        assert_eq!(out, "jobs:\n  - name: a\n    command:\n      - \"true\"\n");
        assert_eq!(Yaml::parse(&out).unwrap(), root);
    }
}
