//! The exit codes of every Scalable binary (SPEC §7), in one place.
//!
//! 0 ok; 1 the workflow failed or a check failed; 2 bad input (usage, manifest,
//! workflow); 3 broker unreachable or authentication refused.
//!
//! Must not: hold messages or decide which code a situation deserves; callers
//! pick the variant, this module only names and numbers them.

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

    /// The code a broker sent in `Response::Error`; a number this build does
    /// not know (a newer broker) reads as `Failed`, never as success.
    pub fn from_code(code: i32) -> ExitCode {
        match code {
            0 => ExitCode::Ok,
            2 => ExitCode::BadInput,
            3 => ExitCode::Unreachable,
            _ => ExitCode::Failed,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::ExitCode;

    #[test]
    fn codes_round_trip_and_unknown_codes_fail() {
        for c in [
            ExitCode::Ok,
            ExitCode::Failed,
            ExitCode::BadInput,
            ExitCode::Unreachable,
        ] {
            assert_eq!(ExitCode::from_code(c.code()), c);
        }
        assert_eq!(ExitCode::from_code(7), ExitCode::Failed);
        assert_eq!(ExitCode::from_code(-1), ExitCode::Failed);
    }
}
