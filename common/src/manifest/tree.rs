//! YAML text to a tree of nodes with their places and spellings.
//!
//! The manifest is not deserialized straight into structs: overlays merge
//! trees, `${VAR}` rewrites values, and validation wants every error at once
//! (serde stops at the first). So the YAML lands here first, through
//! serde-saphyr with spans, under limits that make hostile input cheap to
//! refuse. The tree keeps how each scalar was written, so `"4"` (a string)
//! and `4` (a number) stay apart and an account `0042` stays `0042`.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, MessageFormatter, Spanned};

use super::{join, Issue, Pos, ALIAS_REPLAY_EVENTS_MAX, MANIFEST_NODES_MAX, NESTING_DEPTH_MAX};

/// What a node holds. Scalars keep their text in [`Node::text`].
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str,
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Node {
    pub value: Value,
    /// A scalar's text: the string for `Str`, the spelling for the others
    /// (`0x10`, `True`, `~`); empty for lists and mappings.
    pub text: String,
    /// Written in quotes: `"4"` is a string that looks like a number.
    pub quoted: bool,
    pub at: Pos,
    /// The overlay this node comes from, as an index into the overlays.
    pub origin: Option<u16>,
    /// Holds a `${VAR}` left unexpanded because VAR is unset (an error where
    /// the manifest uses the value, fine where it does not); such values
    /// are not checked further.
    pub unresolved: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    pub key: String,
    pub key_at: Pos,
    pub value: Node,
}

impl Node {
    pub fn empty_map(at: Pos) -> Node {
        new_node(Value::Map(Vec::new()), String::new(), at, false)
    }

    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(e) => Some(e),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries()?.iter().find(|e| e.key == key)
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// What the node is, for messages: `"four"`, `2.5`, `a list`.
    pub fn describe(&self) -> String {
        const CHARS_MAX: usize = 40;
        match &self.value {
            Value::Null => "nothing".to_string(),
            Value::Seq(_) => "a list".to_string(),
            Value::Map(_) => "a mapping".to_string(),
            Value::Str => {
                if self.text.chars().count() > CHARS_MAX {
                    let short: String = self.text.chars().take(CHARS_MAX).collect();
                    format!("{short:?}...")
                } else {
                    format!("{:?}", self.text)
                }
            }
            _ => self.text.clone(),
        }
    }
}

/// serde's view of a YAML node, before places are attached.
enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> serde::Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                <Raw as serde::Deserialize>::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                Ok(Raw::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
                i128::try_from(v)
                    .map(Raw::Int)
                    .map_err(|_| E::custom("integer is too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Raw, E> {
                Err(E::custom("binary values are not supported in a manifest"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(Raw::Seq(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Raw::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `text` into a tree. A YAML syntax error, a limit or an alias bomb
/// is one issue; duplicate and malformed keys are issues beside the tree.
pub(super) fn parse(text: &str) -> Result<(Node, Vec<Issue>), Issue> {
    use serde_saphyr::options::DuplicateKeyPolicy;
    let options = serde_saphyr::options! {
        with_snippet: false,
        // Reported here with their path, and reading goes on.
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        // YAML 1.2 booleans only: `no`, `off` and `n` stay strings (the
        // Norway problem), and `cache: yes` gets a clear error.
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_nodes: MANIFEST_NODES_MAX,
            max_depth: NESTING_DEPTH_MAX,
            max_events: MANIFEST_NODES_MAX * 3,
            max_aliases: 10_000,
            max_anchors: 10_000,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: ALIAS_REPLAY_EVENTS_MAX,
        },
    };
    let raw: Spanned<Raw> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| parse_error(&e))?;
    let mut issues = Vec::new();
    let root = convert(text, raw, "", &mut issues);
    Ok((root, issues))
}

fn pos(loc: &Location) -> Pos {
    Pos {
        line: usize::try_from(loc.line()).unwrap_or(usize::MAX),
        col: usize::try_from(loc.column()).unwrap_or(usize::MAX),
    }
}

/// The source text of a node, from where it is defined (an alias's target,
/// not the `*alias`).
fn source<'t>(text: &'t str, loc: &Location) -> Option<&'t str> {
    let span = loc.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    text.get(start..start.checked_add(len)?)
}

fn new_node(value: Value, text: String, at: Pos, quoted: bool) -> Node {
    Node {
        value,
        text,
        quoted,
        at,
        origin: None,
        unresolved: false,
    }
}

fn convert(text: &str, raw: Spanned<Raw>, path: &str, issues: &mut Vec<Issue>) -> Node {
    let at = pos(&raw.referenced);
    let src = source(text, &raw.defined).map(str::trim);
    // Spelling of a plain scalar, or its value when the source is not at hand.
    let spelled = |fallback: String| src.map_or(fallback, str::to_string);
    match raw.value {
        Raw::Null => new_node(Value::Null, spelled(String::new()), at, false),
        Raw::Bool(b) => new_node(Value::Bool(b), spelled(b.to_string()), at, false),
        Raw::Int(i) => new_node(Value::Int(i), spelled(i.to_string()), at, false),
        Raw::Float(x) => new_node(Value::Float(x), spelled(x.to_string()), at, false),
        Raw::Str(s) => {
            let quoted = src.is_some_and(|t| t.starts_with(['"', '\'']));
            new_node(Value::Str, s, at, quoted)
        }
        Raw::Seq(items) => {
            let items = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| convert(text, item, &format!("{path}[{i}]"), issues))
                .collect();
            new_node(Value::Seq(items), String::new(), at, false)
        }
        Raw::Map(pairs) => {
            let mut entries: Vec<Entry> = Vec::with_capacity(pairs.len());
            let mut first: HashMap<String, Pos> = HashMap::new();
            for (k, v) in pairs {
                let key_at = pos(&k.referenced);
                let key_node = convert(text, k, path, issues);
                let key = match key_node.value {
                    Value::Seq(_) | Value::Map(_) => {
                        issues.push(
                            Issue::new(key_at, path, "a key must be a name, not a list or mapping")
                                .hint("write key: value".to_string()),
                        );
                        continue;
                    }
                    Value::Null => {
                        issues.push(
                            Issue::new(key_at, path, "a key is empty or null")
                                .hint("write key: value".to_string()),
                        );
                        continue;
                    }
                    _ => key_node.text,
                };
                if let Some(prev) = first.get(&key) {
                    issues.push(
                        Issue::new(key_at, path, format!("duplicate key {key:?}")).hint(format!(
                            "each key may appear once; the first is at line {}",
                            prev.line
                        )),
                    );
                    continue;
                }
                first.insert(key.clone(), key_at);
                let value = convert(text, v, &join(path, &key), issues);
                entries.push(Entry { key, key_at, value });
            }
            new_node(Value::Map(entries), String::new(), at, false)
        }
    }
}

/// A YAML error as one issue, in words a manifest author knows.
fn parse_error(err: &serde_saphyr::Error) -> Issue {
    use serde_saphyr::budget::BudgetBreach as B;
    use serde_saphyr::Error as E;
    let mut inner = err;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let at = err.location().map(|l| pos(&l)).unwrap_or_default();
    let alias_hint =
        "anchors and aliases may repeat small parts of a manifest, not build a huge one";
    let nesting = || {
        Issue::new(
            at,
            "",
            format!("nesting is deeper than {NESTING_DEPTH_MAX} levels"),
        )
    };
    match inner {
        E::Budget { breach, .. } => match breach {
            B::Nodes { .. } | B::Events { .. } => Issue::new(
                at,
                "",
                format!("manifest has more than {MANIFEST_NODES_MAX} values"),
            )
            .hint("long lists belong in a workflow file (use range: for sweeps)".to_string()),
            B::Depth { .. } => nesting(),
            B::Documents { .. } => multiple_documents(at),
            B::Aliases { .. }
            | B::Anchors { .. }
            | B::AliasAnchorRatio { .. }
            | B::RecordedAnchorEvents { .. }
            | B::MergeKeys { .. } => Issue::new(at, "", "too many anchors, aliases or merge keys")
                .hint(alias_hint.to_string()),
            other => Issue::new(at, "", format!("manifest exceeds a YAML limit ({other:?})")),
        },
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => Issue::new(
            at,
            "",
            format!(
                "aliases expand to more than {ALIAS_REPLAY_EVENTS_MAX} values (an alias bomb?)"
            ),
        )
        .hint(alias_hint.to_string()),
        E::MultipleDocuments { .. } => multiple_documents(at),
        E::InvalidUtf8Input => Issue::new(at, "", "manifest is not UTF-8 text"),
        _ => {
            let message = serde_saphyr::UserMessageFormatter.format_message(inner);
            let message = crate::located::tidy(&message);
            if message.contains("recursion limit") {
                return nesting();
            }
            Issue::new(at, "", message)
        }
    }
}

fn multiple_documents(at: Pos) -> Issue {
    Issue::new(at, "", "a manifest is one YAML document")
        .hint("remove the --- line that starts a second one".to_string())
}
