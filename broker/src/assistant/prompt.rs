//! The prompts: minijinja templates kept in `broker/assistant-templates/`
//! (compiled into the binary), rendered from facts the assistant chose, then
//! scrubbed so no secret reaches a model: every environment value of
//! [`SECRET_CHARS_MIN`]+ characters and anything shaped like a key or token
//! is replaced by `[redacted]`.
//!
//! Owns the templates, their rendering and the scrub. Must not: send
//! anything, or put a manifest's `env:` values into a context (the callers
//! pass keys only; the scrub is the second line).

use minijinja::{Environment, Value};
use serde::Serialize;

use super::backend::Message;

/// Environment values shorter than this are too common to be secrets (`1`,
/// `/tmp`) and are left alone.
pub const SECRET_CHARS_MIN: usize = 8;
/// A rendered prompt larger than this is cut (the facts are bounded before,
/// this is the last limit).
pub const PROMPT_BYTES_MAX: usize = 48 << 10;

const TEMPLATES: &[(&str, &str)] = &[
    (
        "system",
        include_str!("../../assistant-templates/system.j2"),
    ),
    (
        "diagnose",
        include_str!("../../assistant-templates/diagnose.j2"),
    ),
    (
        "explain",
        include_str!("../../assistant-templates/explain.j2"),
    ),
    (
        "compose",
        include_str!("../../assistant-templates/compose.j2"),
    ),
    (
        "migrate",
        include_str!("../../assistant-templates/migrate.j2"),
    ),
    (
        "init_component",
        include_str!("../../assistant-templates/init_component.j2"),
    ),
    (
        "repair",
        include_str!("../../assistant-templates/repair.j2"),
    ),
];

/// What may not appear in a prompt: the environment's values (and the API
/// key, which is one of them).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: Vec<String>,
}

impl Secrets {
    /// Every value of this process's environment worth hiding.
    pub fn from_process() -> Secrets {
        Secrets::from_values(std::env::vars().map(|(_, v)| v))
    }

    pub fn from_values(values: impl IntoIterator<Item = String>) -> Secrets {
        let mut values: Vec<String> = values
            .into_iter()
            .filter(|v| v.chars().count() >= SECRET_CHARS_MIN)
            .collect();
        // Longest first, so a value containing another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Secrets { values }
    }

    /// `text` with every secret and token-shaped word replaced.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "[redacted]");
            }
        }
        out.split_inclusive(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ','))
            .map(|w| {
                let (word, sep) = split_trailing(w);
                if looks_like_token(word) {
                    format!("[redacted]{sep}")
                } else {
                    w.to_string()
                }
            })
            .collect()
    }
}

fn split_trailing(w: &str) -> (&str, &str) {
    let cut = w
        .char_indices()
        .last()
        .filter(|(_, c)| c.is_whitespace() || matches!(c, '"' | '\'' | ','))
        .map_or(w.len(), |(i, _)| i);
    (&w[..cut], &w[cut..])
}

/// API keys and tokens: `sk-…`, `ghp_…`, `xox…-`, or 32+ characters of
/// letters and digits mixed (hashes, base64 secrets).
fn looks_like_token(word: &str) -> bool {
    let word = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_');
    let prefixed = [
        "sk-",
        "ghp_",
        "gho_",
        "github_pat_",
        "xoxb-",
        "xoxp-",
        "AKIA",
    ]
    .iter()
    .any(|p| word.starts_with(p) && word.len() >= p.len() + 12);
    let long_mixed = word.len() >= 32
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-'))
        && word.chars().any(|c| c.is_ascii_digit())
        && word.chars().any(|c| c.is_ascii_alphabetic());
    prefixed || long_mixed
}

/// The messages of a first request: the system prompt and the command's
/// template rendered with `ctx`, scrubbed.
pub fn messages<C: Serialize>(
    template: &str,
    ctx: C,
    secrets: &Secrets,
) -> Result<Vec<Message>, String> {
    let system = render("system", &serde_json::json!({}))?;
    let ctx = serde_json::to_value(ctx).map_err(|e| format!("prompt context: {e}"))?;
    let user = render(template, &ctx)?;
    Ok(vec![
        Message {
            role: "system",
            content: secrets.scrub(&system),
        },
        Message {
            role: "user",
            content: secrets.scrub(&cap(user)),
        },
    ])
}

/// The repair request's last message: what was wrong with the answer.
pub fn repair(errors: &[String], secrets: &Secrets) -> Result<Message, String> {
    let text = render("repair", &serde_json::json!({ "errors": errors }))?;
    Ok(Message {
        role: "user",
        content: secrets.scrub(&cap(text)),
    })
}

fn cap(mut text: String) -> String {
    if text.len() > PROMPT_BYTES_MAX {
        let mut cut = PROMPT_BYTES_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n[cut]");
    }
    text
}

fn render(name: &str, ctx: &serde_json::Value) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_fuel(Some(100_000));
    for (n, src) in TEMPLATES {
        env.add_template(n, src)
            .map_err(|e| format!("prompt template {n}: {e}"))?;
    }
    env.get_template(name)
        .and_then(|t| t.render(to_value(ctx)))
        .map_err(|e| format!("prompt template {name}: {e}"))
}

/// A JSON value as a template value (minijinja is built without serde here).
fn to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(f)) => Value::from(f),
            _ => Value::from(n.to_string()),
        },
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::from(a.iter().map(to_value).collect::<Vec<_>>()),
        serde_json::Value::Object(o) => Value::from(
            o.iter()
                .map(|(k, v)| (k.clone(), to_value(v)))
                .collect::<std::collections::BTreeMap<String, Value>>(),
        ),
    }
}

/// The messages as `--show-prompt` prints them.
pub fn show(endpoint: &str, model: &str, messages: &[Message]) -> String {
    let mut out = format!("# POST {endpoint} (model {model:?})\n");
    for m in messages {
        out.push_str(&format!("--- {} ---\n{}\n", m.role, m.content.trim_end()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_tokens_are_scrubbed() {
        let s = Secrets::from_values(["hunter2-is-my-password".to_string(), "short".into()]);
        let text = "pw hunter2-is-my-password, key sk-abcdefghijklmnop1234 sha 0123456789abcdef0123456789abcdefXYZ and short /tmp";
        let out = s.scrub(text);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("sk-abc"), "{out}");
        assert!(!out.contains("0123456789abcdef0123"), "{out}");
        assert!(out.contains("short /tmp"), "{out}");
        assert!(out.contains("[redacted],"), "{out}");
    }

    #[test]
    fn every_template_renders() {
        let s = Secrets::default();
        for (name, _) in TEMPLATES {
            if *name == "repair" {
                continue;
            }
            let m = messages(name, serde_json::json!({ "run": 17, "target": "aws" }), &s).unwrap();
            assert_eq!(m.len(), 2);
            if *name == "diagnose" {
                assert!(m[1].content.contains("run 17"), "{}", m[1].content);
            }
        }
        let r = repair(&["x: bad".into()], &s).unwrap();
        assert!(r.content.contains("- x: bad"), "{}", r.content);
    }
}
