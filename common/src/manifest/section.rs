//! The optional `workflow:` section: a workflow file inside the manifest.
//!
//! It is handed to [`crate::workflow::parse_workflow`] so it means exactly
//! what the same text in a workflow file would. The section is written out
//! as JSON (YAML's flow subset) from the tree, which may have been changed
//! by overlays, and each error is placed back in the manifest through its
//! key path.

use super::tree::{Node, Value};
use super::{concat, Issue, Pos};
use crate::located::Hint;
use crate::workflow::{parse_workflow, WorkflowDef};

/// Parses the section. Errors carry paths under `workflow.` and the overlay
/// the node they point at came from, if any.
pub(super) fn workflow(node: &Node) -> (Option<WorkflowDef>, Vec<(Issue, Option<u16>)>) {
    if !matches!(node.value, Value::Map(_)) {
        let issue = Issue::new(
            node.at,
            "workflow",
            format!("expected a mapping, got {}", node.describe()),
        )
        .hint(
            "e.g. workflow: {workflow: demeter-ssp, jobs: [...]}, as in a workflow file"
                .to_string(),
        );
        return (None, vec![(issue, node.origin)]);
    }
    let mut text = String::new();
    emit(node, &mut text);
    match parse_workflow("", &text) {
        Ok(def) => (Some(def), Vec::new()),
        Err(errors) => {
            let issues = errors
                .0
                .into_iter()
                .map(|e| {
                    let on_key = e.what.starts_with("unknown key");
                    let (at, origin) = locate(node, &e.path, on_key);
                    let hint = e.hint.map(Hint::into_text);
                    let issue = Issue::new(at, concat("workflow", &e.path), e.what).hint(hint);
                    (issue, origin)
                })
                .collect();
            (None, issues)
        }
    }
}

/// Writes `node` as JSON. Numbers and booleans keep their spelling when it
/// is a plain token, so the workflow parser reads them as YAML would.
fn emit(node: &Node, out: &mut String) {
    match &node.value {
        Value::Null => out.push_str("null"),
        Value::Bool(_) | Value::Int(_) | Value::Float(_) => {
            let plain = !node.text.is_empty()
                && node
                    .text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_'));
            if plain {
                out.push_str(&node.text);
            } else {
                match &node.value {
                    Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                    Value::Int(i) => out.push_str(&i.to_string()),
                    Value::Float(x) => out.push_str(&x.to_string()),
                    _ => {}
                }
            }
        }
        Value::Str => out.push_str(&json_string(&node.text)),
        Value::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                emit(item, out);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, e) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&json_string(&e.key));
                out.push_str(": ");
                emit(&e.value, out);
            }
            out.push('}');
        }
    }
}

fn json_string(s: &str) -> String {
    // Serialising a str to JSON cannot fail; the fallback keeps it total.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// Where `path` (`jobs[1].after[0]`, as workflow errors name it) is in the
/// section: at the key when `on_key`, else at the value; the nearest
/// ancestor found when the path goes further than the tree. With the place
/// comes the overlay the node came from.
pub(super) fn locate(section: &Node, path: &str, on_key: bool) -> (Pos, Option<u16>) {
    let mut node = section;
    let mut key_at = None;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            match node.get(key) {
                Some(e) => {
                    key_at = Some(e.key_at);
                    node = &e.value;
                }
                None => return (node.at, node.origin),
            }
        }
        for index in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            let item = index.parse::<usize>().ok().and_then(|i| match &node.value {
                Value::Seq(items) => items.get(i),
                _ => None,
            });
            match item {
                Some(item) => {
                    key_at = None;
                    node = item;
                }
                None => return (node.at, node.origin),
            }
        }
    }
    match key_at {
        Some(at) if on_key => (at, node.origin),
        _ => (node.at, node.origin),
    }
}
