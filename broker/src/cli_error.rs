//! The one error type of the CLI: a one-line message, an optional hint and the
//! exit code (SPEC §7, codes from `scalable_common::exit`).
//!
//! Must not: print; `cli::main_with` writes the one line and exits with `code`.

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
}
