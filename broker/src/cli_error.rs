//! The one error type of the CLI: a one-line message, an optional hint and the
//! exit code (SPEC §7, codes from `scalable_common::exit`).

use scalable_common::exit::ExitCode;

#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(code: i32, message: String, hint: Option<String>) -> CliError {
        CliError {
            code,
            message,
            hint,
        }
    }
    pub fn bad_input(message: impl Into<String>) -> CliError {
        CliError::new(ExitCode::BadInput.code(), message.into(), None)
    }
    pub fn unreachable(message: String) -> CliError {
        CliError::new(ExitCode::Unreachable.code(), message, None)
    }
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError::new(ExitCode::Failed.code(), message.into(), None)
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
