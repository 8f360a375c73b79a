//! Whether what a binary writes goes to a person's terminal: colour in log
//! lines only then (a redirected broker or agent log stays plain text).
//!
//! Owns the one rule for colour. Must not write anything itself.

use std::io::IsTerminal;

/// Colour on stderr: only on a terminal, and never when `NO_COLOR` is set
/// (no-color.org) or `TERM=dumb`.
pub fn stderr_colour() -> bool {
    colour_for(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
        std::env::var("TERM").is_ok_and(|t| t == "dumb"),
    )
}

fn colour_for(terminal: bool, no_color: bool, dumb: bool) -> bool {
    terminal && !no_color && !dumb
}

#[cfg(test)]
mod tests {
    use super::colour_for;

    #[test]
    fn colour_only_on_a_terminal_that_wants_it() {
        assert!(colour_for(true, false, false));
        assert!(!colour_for(false, false, false), "redirected");
        assert!(!colour_for(true, true, false), "NO_COLOR");
        assert!(!colour_for(true, false, true), "TERM=dumb");
    }
}
