//! Text from the store printed safely: a name, a reason or a task's output
//! line written before names were validated (or by a task) may hold a
//! newline, a carriage return or a terminal escape that would forge a line
//! or recolour the screen. Every text formatter passes such data through
//! [`printable`].
//!
//! Owns: the one escaping rule (control and bidirectional-override characters
//! become `\n`, `\u{1b}`, ...). Must not: touch JSON output (serde escapes
//! there) nor raw `logs` bytes, which are the task's own output on request.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal raw: C0 and C1 controls, DEL, and
/// the bidirectional overrides that reorder what a line appears to say.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character escaped as Rust writes it (`\n`,
/// `\u{1b}`); borrowed when there is none, which is almost always.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("demeter-ssp é"), Cow::Borrowed(_)));
        assert_eq!(
            printable("a\nrun 9 fake: finished\r\u{1b}[2J\u{7f}\u{9b}"),
            "a\\nrun 9 fake: finished\\r\\u{1b}[2J\\u{7f}\\u{9b}"
        );
        assert_eq!(printable("x\u{202e}gnp.exe"), "x\\u{202e}gnp.exe");
        assert_eq!(printable("tab\there"), "tab\\there");
    }
}
