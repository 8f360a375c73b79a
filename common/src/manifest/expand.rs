//! `${VAR}` and `${VAR:-default}` in manifest values (SPEC §3).
//!
//! `$$` is a literal `$`; a `$` not followed by `{` or `$` stays as it is.
//! `:-` uses the default when VAR is unset or empty, as the shell does, and
//! a default may itself hold `${...}`. Keys are never expanded. A value
//! holding `${...}` that expands to a number or boolean becomes one, so
//! `max_workers: ${WORKERS:-4}` (or `"${WORKERS:-4}"`, as a flow mapping
//! needs) is the integer 4; a string option takes it as text all the same.

use super::tree::{Node, Value};
use super::{join, Issue, EXPANDED_BYTES_MAX};

/// Defaults inside defaults nest at most this deep.
const DEFAULT_DEPTH_MAX: usize = 8;

pub(super) struct Expander<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Bytes still allowed out of [`EXPANDED_BYTES_MAX`].
    bytes_left: usize,
    pub issues: Vec<Issue>,
}

enum Failure {
    /// Syntax: a message and a hint.
    Bad(String, String),
    TooLarge,
}

impl<'a> Expander<'a> {
    pub fn new(env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Expander {
            env,
            bytes_left: EXPANDED_BYTES_MAX,
            issues: Vec::new(),
        }
    }

    /// Expands a whole document (the manifest or one overlay) at `path`.
    /// `strict`: an unset variable is an error; otherwise the value is left
    /// as written and marked unresolved. Only `selected` of the targets is
    /// strict when a target is selected. `workflow:` is left alone (module
    /// doc of `manifest`), as is `overlays:` (each is expanded on its own).
    pub fn document(&mut self, doc: &mut Node, path: &str, strict: bool, selected: Option<&str>) {
        let Value::Map(entries) = &mut doc.value else {
            return;
        };
        for e in entries {
            let p = join(path, &e.key);
            match e.key.as_str() {
                "workflow" | "overlays" => {}
                "targets" => match &mut e.value.value {
                    Value::Map(targets) => {
                        for t in targets {
                            let in_use = selected.is_none_or(|s| s == t.key);
                            self.node(&mut t.value, &join(&p, &t.key), strict && in_use);
                        }
                    }
                    _ => self.node(&mut e.value, &p, strict),
                },
                _ => self.node(&mut e.value, &p, strict),
            }
        }
    }

    pub fn node(&mut self, node: &mut Node, path: &str, strict: bool) {
        match &mut node.value {
            Value::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.node(item, &format!("{path}[{i}]"), strict);
                }
            }
            Value::Map(entries) => {
                for e in entries {
                    self.node(&mut e.value, &join(path, &e.key), strict);
                }
            }
            Value::Str if node.text.contains('$') => self.scalar(node, path, strict),
            _ => {}
        }
    }

    fn scalar(&mut self, node: &mut Node, path: &str, strict: bool) {
        let mut out = String::new();
        let mut unset = None;
        match self.expand(&node.text, &mut out, 0, &mut unset) {
            Err(Failure::Bad(message, hint)) => {
                self.issues
                    .push(Issue::new(node.at, path, message).hint(hint));
                return;
            }
            Err(Failure::TooLarge) => {
                self.issues.push(
                    Issue::new(
                        node.at,
                        path,
                        format!(
                            "${{...}} values expand to more than {} MiB in all",
                            EXPANDED_BYTES_MAX >> 20
                        ),
                    )
                    .hint("is an environment variable much larger than meant?".to_string()),
                );
                return;
            }
            Ok(()) => {}
        }
        if let Some(var) = unset {
            if strict {
                self.issues.push(
                    Issue::new(
                        node.at,
                        path,
                        format!("environment variable {var} is not set"),
                    )
                    .hint(format!("export it, or write ${{{var}:-default}}")),
                );
            }
            // Either way the value is unknown: checks skip it rather than
            // complain about the `${...}` text.
            node.unresolved = true;
            return;
        }
        // A value made by an expansion takes its type from what it expands
        // to, quoted or not: a flow mapping forces `"${N:-4}"` to be quoted.
        if node.text.contains("${") {
            node.value = plain_value(&out);
        }
        node.text = out;
    }

    /// Appends the expansion of `s` to `out`. The first unset variable goes
    /// to `unset`; the rest is still read so every syntax error is found.
    fn expand(
        &mut self,
        s: &str,
        out: &mut String,
        depth: usize,
        unset: &mut Option<String>,
    ) -> Result<(), Failure> {
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            self.push(out, &rest[..i])?;
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                self.push(out, "$")?;
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = closing_brace(body) else {
                    return Err(Failure::Bad(
                        "unterminated ${".to_string(),
                        "close it with }, or write $$ for a literal $".to_string(),
                    ));
                };
                let inner = &body[..end];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                if !valid_var_name(name) {
                    return Err(Failure::Bad(
                        format!("invalid variable ${{{inner}}}"),
                        "write ${NAME} or ${NAME:-default}; names are letters, digits and _"
                            .to_string(),
                    ));
                }
                let value = (self.env)(name);
                match (value, default) {
                    (Some(v), Some(_)) if !v.is_empty() => self.push(out, &v)?,
                    (Some(v), None) => self.push(out, &v)?,
                    (_, Some(d)) => {
                        if depth >= DEFAULT_DEPTH_MAX {
                            return Err(Failure::Bad(
                                format!("defaults nest deeper than {DEFAULT_DEPTH_MAX} levels"),
                                "simplify the ${...:-default} chain".to_string(),
                            ));
                        }
                        self.expand(d, out, depth + 1, unset)?;
                    }
                    (None, None) => {
                        if unset.is_none() {
                            *unset = Some(name.to_string());
                        }
                    }
                }
                rest = &body[end + 1..];
            } else {
                self.push(out, "$")?;
                rest = after;
            }
        }
        self.push(out, rest)
    }

    fn push(&mut self, out: &mut String, s: &str) -> Result<(), Failure> {
        self.bytes_left = self
            .bytes_left
            .checked_sub(s.len())
            .ok_or(Failure::TooLarge)?;
        out.push_str(s);
        Ok(())
    }
}

/// The index in `body` (the text after `${`) of the `}` that closes it,
/// counting nested `${...}` in defaults.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = body.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' if i > 0 && bytes[i - 1] == b'$' => depth += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What YAML would make of an unquoted scalar spelled `s` (the core schema:
/// decimal integers, floats, true/false); anything else is a string.
fn plain_value(s: &str) -> Value {
    let t = s.trim();
    match t {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = t.parse::<i128>() {
            return Value::Int(i);
        }
    }
    let looks_numeric = digits.bytes().any(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_numeric {
        if let Ok(x) = t.parse::<f64>() {
            return Value::Float(x);
        }
    }
    Value::Str
}
