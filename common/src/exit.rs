//! The exit codes of every Scalable binary (SPEC §7), in one place.
//!
//! 0 ok; 1 the workflow failed or a check failed; 2 bad input (usage, manifest,
//! workflow); 3 broker unreachable or authentication refused.

/// Why a command ended, as the process exit code a user and a script see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    Failed = 1,
    BadInput = 2,
    Unreachable = 3,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c as u8)
    }
}
