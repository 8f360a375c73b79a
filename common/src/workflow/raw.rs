//! The workflow YAML as serde reads it, before it becomes a `WorkflowDef`:
//! the raw shapes (with spans where an error may need to point), their
//! custom deserializers, and YAML syntax and type errors in a user's words.
//!
//! The public types do not map 1:1 to YAML (`env` is ordered pairs, `foreach`
//! and `range` are one `Items`, sizes are strings), so YAML lands here first
//! and `convert` turns it into the public types. Numbers and booleans are
//! read through `strict` (a quoted `"2"` is a string, refused). This module
//! must not check meaning (names, references, limits): that is `check`'s.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{MessageFormatter, Spanned};

use super::def::Item;
use super::strict;
use crate::located::{tidy, Hint, LocatedError, LocatedErrors};
use crate::suggest::did_you_mean;

/// Reads the YAML into the raw shapes; a syntax or type error stops at the
/// first.
pub(super) fn read(file: &str, text: &str) -> Result<RawWorkflow, LocatedErrors> {
    let options = serde_saphyr::options! { with_snippet: false };
    let mut error_path = String::new();
    let raw: Result<RawWorkflow, _> =
        serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                error_path = clean_path(e.path());
                e.into_inner()
            })
        });
    raw.map_err(|e| LocatedErrors(vec![yaml_error(file, error_path, &e)]))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkflow {
    pub(super) workflow: Spanned<String>,
    #[serde(default, deserialize_with = "strict::opt_u64")]
    pub(super) max_fails: Option<u64>,
    pub(super) jobs: Spanned<Vec<Spanned<RawJob>>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) task: Option<String>,
    pub(super) command: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) foreach: Option<Spanned<Vec<Spanned<RawItem>>>>,
    #[serde(default)]
    pub(super) range: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) inputs: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) outputs: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) tag: Option<String>,
    #[serde(default)]
    pub(super) resources: Option<Spanned<RawResources>>,
    #[serde(default, deserialize_with = "strict::opt_spanned_u32")]
    pub(super) retries: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) walltime: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "strict::opt_i32")]
    pub(super) priority: Option<i32>,
    #[serde(default)]
    pub(super) env: Option<Pairs<Spanned<String>>>,
    #[serde(default)]
    pub(super) workdir: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) features: Option<Pairs<Spanned<String>>>,
    #[serde(default, deserialize_with = "strict::opt_spanned_u32")]
    pub(super) max_running: Option<Spanned<u32>>,
    #[serde(default, deserialize_with = "strict::opt_u64")]
    pub(super) max_fails: Option<u64>,
    #[serde(default, deserialize_with = "strict::opt_bool")]
    pub(super) cache: Option<bool>,
    #[serde(default)]
    pub(super) after: Option<Spanned<After>>,
    #[serde(default)]
    pub(super) checkpoint: Vec<Spanned<String>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResources {
    #[serde(default, deserialize_with = "strict::opt_spanned_u32")]
    pub(super) cpus: Option<Spanned<u32>>,
    /// A size (`8G`) or a number of bytes; numbers arrive as their text.
    #[serde(default)]
    pub(super) memory: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "strict::opt_u32")]
    pub(super) gpus: Option<u32>,
    #[serde(default, deserialize_with = "strict::opt_pairs_u64")]
    pub(super) custom: Option<Pairs<u64>>,
}

/// A `foreach` value: any scalar but null, keeping its YAML type.
pub(super) struct RawItem(pub(super) Item);

impl<'de> serde::Deserialize<'de> for RawItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawItem, E> {
                Ok(RawItem(Item::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawItem, E> {
                Ok(RawItem(Item::Int(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawItem, E> {
                i64::try_from(v)
                    .map(|v| RawItem(Item::Int(v)))
                    .map_err(|_| {
                        E::custom(format!("integer {v} is too large (at most {})", i64::MAX))
                    })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawItem, E> {
                Ok(RawItem(Item::Float(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawItem, E> {
                Ok(RawItem(Item::Str(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<RawItem, E> {
                Ok(RawItem(Item::Str(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A YAML mapping kept in the order written (`env`, `features`, `custom`).
pub(super) struct Pairs<V>(pub(super) Vec<(String, V)>);

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for Pairs<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor<V>(PhantomData<V>);
        impl<'de, V: serde::Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
            type Value = Pairs<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs<V>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(PairsVisitor(PhantomData))
    }
}

/// `after: a` or `after: [a, {job: b, per: item}]`.
pub(super) enum After {
    One(String),
    Many(Vec<Spanned<AfterEntry>>),
}

/// One element of an `after` list: a job name (wait for the whole job) or a
/// per-item entry; `per` stays text here, `convert` judges it.
pub(super) enum AfterEntry {
    Job(String),
    Per { job: String, per: String },
}

impl<'de> serde::Deserialize<'de> for After {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = After;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a job name or a list of job names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<After, E> {
                Ok(After::One(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<After, E> {
                Ok(After::One(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<After, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = seq.next_element::<Spanned<AfterEntry>>()? {
                    out.push(entry);
                }
                Ok(After::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::Deserialize<'de> for AfterEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AfterEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a job name or {job: NAME, per: item|index}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AfterEntry, E> {
                Ok(AfterEntry::Job(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<AfterEntry, E> {
                Ok(AfterEntry::Job(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AfterEntry, A::Error> {
                let (mut job, mut per) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "job" if job.is_none() => job = Some(map.next_value::<String>()?),
                        "per" if per.is_none() => per = Some(map.next_value::<String>()?),
                        "job" | "per" => {
                            return Err(de::Error::custom(format!("duplicate key `{key}`")))
                        }
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown key `{other}` in an after entry, expected `job` and `per`"
                            )))
                        }
                    }
                }
                match (job, per) {
                    (Some(job), Some(per)) => Ok(AfterEntry::Per { job, per }),
                    (None, _) => Err(de::Error::missing_field("job")),
                    (_, None) => Err(de::Error::missing_field("per")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The key path of a serde error as users write it: `jobs[1].after[0]`.
/// `Spanned` shows up as an extra `value` key and duplicate keys as `?`; both
/// are dropped, except `value` as a user's own key in `env`, `features` or
/// `custom` (those maps are never `Spanned` themselves, so a `value` right
/// after them is the user's).
fn clean_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    let mut prev_key: Option<&str> = None;
    for seg in path.iter() {
        let key = match seg {
            Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                prev_key = None;
                continue;
            }
            Segment::Map { key } => key.as_str(),
            Segment::Enum { variant } => variant.as_str(),
            Segment::Unknown => continue,
        };
        if key == "value" && !matches!(prev_key, Some("env" | "features" | "custom")) {
            continue;
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(key);
        prev_key = Some(key);
    }
    out
}

/// serde-saphyr's terse type errors in words a workflow author knows.
fn plain_type_message(message: &str) -> String {
    match message {
        "invalid u32" => format!("expected a whole number from 0 to {}", u32::MAX),
        "invalid u64" => format!("expected a whole number from 0 to {}", u64::MAX),
        "invalid i32" => format!("expected a whole number from {} to {}", i32::MIN, i32::MAX),
        "invalid boolean" => "expected true or false".to_string(),
        "expected string scalar" => "expected a string".to_string(),
        "expected sequence start" => "expected a list".to_string(),
        "expected mapping start" => "expected a mapping".to_string(),
        other => other.to_string(),
    }
}

/// A YAML syntax or type error as a located error.
fn yaml_error(file: &str, path: String, err: &serde_saphyr::Error) -> LocatedError {
    use serde_saphyr::Error as E;
    let mut inner = err;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let (line, col) = err
        .location()
        .map(|l| (l.line() as usize, l.column() as usize))
        .unwrap_or((0, 0));
    let (path, message, hint) = match inner {
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            let hint = match did_you_mean(field, expected.iter().copied()) {
                Some(h) => h,
                None if expected.is_empty() => "this mapping takes no keys".to_string(),
                None => format!("valid keys: {}", expected.join(", ")),
            };
            // serde_path_to_error already ends the path with the unknown key.
            (
                path,
                format!("unknown key {field:?}"),
                Some(Hint::Plain(hint)),
            )
        }
        E::SerdeMissingField { field, .. } => (path, format!("missing key {field:?}"), None),
        E::DuplicateMappingKey { key, .. } => {
            let message = match key {
                Some(k) => format!("duplicate key {k:?}"),
                None => "duplicate key".to_string(),
            };
            let hint = Hint::Plain("each key may appear once".to_string());
            (path, message, Some(hint))
        }
        _ => {
            let message = serde_saphyr::UserMessageFormatter.format_message(inner);
            let (message, hint) = strict::split_hint(&message);
            // A quoted number's hint is advice, worded as the manifest's.
            (
                path,
                plain_type_message(&tidy(&message)),
                hint.map(Hint::Advice),
            )
        }
    };
    LocatedError {
        file: file.to_string(),
        line,
        col,
        path,
        what: message,
        hint,
    }
}
