//! One problem at a place in a user's file: the error type that workflow and
//! manifest checks both return, and its one-line form
//! `FILE:LINE:COL: path: message (hint)`.
//!
//! This module owns the shape and the printing of located errors and the cap
//! on how many are reported. It must not decide what is wrong with a file nor
//! find where in it: the workflow and manifest checkers do that and hand over
//! finished errors.

use std::fmt;

/// At most this many errors are reported; the rest are counted.
pub const ERRORS_MAX: usize = 100;

/// One problem in a file, printed as `FILE:LINE:COL: path: what (hint)`, or
/// `FILE: path: what (hint)` when the line is unknown (a definition checked
/// after it came over the network, an unknown `--target`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedError {
    pub file: String,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub col: usize,
    /// Key path such as `jobs[1].after[0]` or `targets.hpc.queue`; empty for
    /// the whole file.
    pub path: String,
    /// What is wrong: lowercase, no trailing period.
    pub what: String,
    pub hint: Option<Hint>,
}

/// What may help, after the message in parentheses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// Printed as it is, ` (did you mean "x"?)`: a suggestion, the valid
    /// values, or (in workflow errors, as they have always read) any hint.
    Plain(String),
    /// Advice, printed as ` (hint: export it, ...)` as the CLI prints its own
    /// hints.
    Advice(String),
}

impl Hint {
    /// The hint's words without the `hint: ` label.
    pub fn text(&self) -> &str {
        match self {
            Hint::Plain(s) | Hint::Advice(s) => s,
        }
    }

    /// The hint's words, owned.
    pub fn into_text(self) -> String {
        match self {
            Hint::Plain(s) | Hint::Advice(s) => s,
        }
    }
}

impl LocatedError {
    /// A problem with the whole file (no line, no key path).
    pub fn whole_file(file: &str, what: impl Into<String>, hint: Option<Hint>) -> LocatedError {
        LocatedError {
            file: file.to_string(),
            line: 0,
            col: 0,
            path: String::new(),
            what: what.into(),
            hint,
        }
    }
}

impl fmt::Display for LocatedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.what)?;
        match &self.hint {
            Some(Hint::Plain(hint)) => write!(f, " ({hint})"),
            Some(Hint::Advice(hint)) => write!(f, " (hint: {hint})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for LocatedError {}

/// Every problem found in a file, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedErrors(pub Vec<LocatedError>);

impl LocatedErrors {
    /// At most [`ERRORS_MAX`] of `errors`, then one line that counts the rest.
    pub(crate) fn capped(file: &str, mut errors: Vec<LocatedError>) -> LocatedErrors {
        if errors.len() > ERRORS_MAX {
            let more = errors.len() - ERRORS_MAX;
            errors.truncate(ERRORS_MAX);
            errors.push(LocatedError::whole_file(
                file,
                format!("{more} more errors not shown"),
                None,
            ));
        }
        LocatedErrors(errors)
    }
}

impl fmt::Display for LocatedErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LocatedErrors {}

/// Lowercase first letter and no trailing period, as all our messages are
/// (for the text of a parser's error).
pub(crate) fn tidy(message: &str) -> String {
    let m = message.trim().trim_end_matches('.');
    let mut chars = m.chars();
    match (chars.next(), chars.next()) {
        // Keep acronyms such as "YAML" as they are.
        (Some(a), Some(b)) if a.is_uppercase() && !b.is_uppercase() => {
            let mut s: String = a.to_lowercase().collect();
            s.push_str(&m[a.len_utf8()..]);
            s
        }
        _ => m.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, path: &str, hint: Option<Hint>) -> LocatedError {
        LocatedError {
            file: "f.yaml".into(),
            line,
            col: 5,
            path: path.into(),
            what: "unknown key \"queu\"".into(),
            hint,
        }
    }

    #[test]
    fn one_line_with_place_path_and_hint() {
        let plain = Some(Hint::Plain("did you mean \"queue\"?".into()));
        assert_eq!(
            at(12, "targets.hpc.queu", plain.clone()).to_string(),
            "f.yaml:12:5: targets.hpc.queu: unknown key \"queu\" (did you mean \"queue\"?)"
        );
        assert_eq!(
            at(0, "", plain).to_string(),
            "f.yaml: unknown key \"queu\" (did you mean \"queue\"?)"
        );
        assert_eq!(
            at(3, "x", Some(Hint::Advice("export it".into()))).to_string(),
            "f.yaml:3:5: x: unknown key \"queu\" (hint: export it)"
        );
        assert_eq!(
            at(3, "x", None).to_string(),
            "f.yaml:3:5: x: unknown key \"queu\""
        );
    }

    #[test]
    fn capped_counts_the_rest() {
        let errors = vec![at(1, "x", None); ERRORS_MAX + 7];
        let e = LocatedErrors::capped("f.yaml", errors);
        assert_eq!(e.0.len(), ERRORS_MAX + 1);
        assert_eq!(
            e.0[ERRORS_MAX].to_string(),
            "f.yaml: 7 more errors not shown"
        );
        let e = LocatedErrors::capped("f.yaml", vec![at(1, "x", None); 2]);
        assert_eq!(e.to_string().lines().count(), 2);
    }

    #[test]
    fn tidy_lowercases_but_keeps_acronyms() {
        assert_eq!(tidy("Invalid thing. "), "invalid thing");
        assert_eq!(tidy("YAML is odd."), "YAML is odd");
    }
}
