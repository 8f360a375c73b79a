//! The one error type of the CLI: a one-line message, an optional hint and the
//! exit code (SPEC §7, codes from `scalable_common::exit`).
//!
//! Must not: print; `cli::main_with` writes the one line (or, under
//! `--json`, the one JSON object of [`CliError::json`]) and exits with `code`.

use scalable_common::exit::ExitCode;

#[derive(Debug)]
pub struct CliError {
    pub code: ExitCode,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(code: ExitCode, message: String, hint: Option<String>) -> CliError {
        CliError {
            code,
            message,
            hint,
        }
    }
    pub fn bad_input(message: impl Into<String>) -> CliError {
        CliError::new(ExitCode::BadInput, message.into(), None)
    }
    pub fn unreachable(message: String) -> CliError {
        CliError::new(ExitCode::Unreachable, message, None)
    }
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError::new(ExitCode::Failed, message.into(), None)
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    /// The error as one JSON object, `{"error": ..., "hint": ...}` (`hint`
    /// null when there is none), for `--json`. A message of several errors
    /// (one per line in text) keeps them one per line, without the `error: `
    /// label text gives each.
    pub fn json(&self) -> String {
        serde_json::json!({
            "error": self.message.replace("\nerror: ", "\n"),
            "hint": self.hint,
        })
        .to_string()
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_the_hint_in_parentheses() {
        let e =
            CliError::bad_input("\"x\" is not a run").with_hint("scalable status lists the runs");
        assert_eq!(e.code, ExitCode::BadInput);
        assert_eq!(
            e.to_string(),
            "error: \"x\" is not a run (hint: scalable status lists the runs)"
        );
        assert_eq!(
            CliError::unreachable("gone".into()).to_string(),
            "error: gone"
        );
    }

    #[test]
    fn json_is_one_object_with_error_and_hint() {
        let e =
            CliError::bad_input("\"x\" is not a run").with_hint("scalable status lists the runs");
        assert_eq!(
            e.json(),
            r#"{"error":"\"x\" is not a run","hint":"scalable status lists the runs"}"#
        );
        let many = CliError::bad_input("a.yaml:1:1: one\nerror: a.yaml:2:1: two");
        assert_eq!(
            many.json(),
            r#"{"error":"a.yaml:1:1: one\na.yaml:2:1: two","hint":null}"#
        );
    }
}
