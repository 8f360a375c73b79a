//! The size bounds the core applies to what it sends and what it stores: an
//! assignment's encoded size against the cap of one message, and the argv an
//! attempt row keeps.
//!
//! Pure functions over values (postcard's size count is arithmetic, not
//! I/O). It must not change the core's state: `scheduling` decides what a
//! breach means.

use scalable_common::frame::encoded_len;
use scalable_common::protocol::{Assignment, ASSIGN_BATCH_BYTES_MAX};

/// Bytes of argv (as JSON) an attempt row keeps. Every attempt has a row, so
/// a task with megabytes of argv would otherwise cost megabytes per attempt;
/// `analyze` shows what is kept and says how much was not.
pub const ARGV_STORED_BYTES_MAX: usize = 64 << 10;

/// Room for the note that replaces the argv not kept.
const NOTE_BYTES_MAX: usize = 128;

/// Why this assignment can never be sent (`assignment of N bytes exceeds the
/// cap of M bytes`), or `None` when it fits in a message of its own.
pub(super) fn oversized(a: &Assignment) -> Option<String> {
    let bytes = encoded_len(a);
    (bytes > ASSIGN_BATCH_BYTES_MAX).then(|| {
        format!("assignment of {bytes} bytes exceeds the cap of {ASSIGN_BATCH_BYTES_MAX} bytes")
    })
}

/// The argv as an attempt row keeps it: its JSON when that is at most
/// [`ARGV_STORED_BYTES_MAX`] bytes, else the leading arguments that fit (the
/// last one cut) and a final note of how many bytes were left out.
pub(super) fn stored_argv_json(argv: &[String]) -> String {
    // Escaping only lengthens a string, so an argv whose raw bytes (with
    // quotes and commas) are already over the bound is never serialised
    // whole: on the core task that cost 75% of the broker's cpu during a
    // burst of 1 MB-argv tasks (found by tests/hostile.rs under perf).
    let least_json_bytes = 2 // brackets
        + argv.len().saturating_sub(1) // commas
        + argv.iter().map(|a| a.len() + 2).sum::<usize>(); // quoted arguments
    if least_json_bytes <= ARGV_STORED_BYTES_MAX {
        let full = serde_json::to_string(argv).unwrap_or_default();
        if full.len() <= ARGV_STORED_BYTES_MAX {
            return full;
        }
    }
    // Brackets, the note and its separator stay within NOTE_BYTES_MAX.
    let mut room = ARGV_STORED_BYTES_MAX - NOTE_BYTES_MAX;
    let mut kept: Vec<String> = Vec::new();
    let mut kept_bytes = 0usize;
    for arg in argv {
        // Quotes and a comma around each argument.
        let Some(left) = room.checked_sub(3) else {
            break;
        };
        let (prefix, used) = json_prefix(arg, left);
        room = left - used;
        kept_bytes += prefix.len();
        let whole = prefix.len() == arg.len();
        kept.push(prefix.to_string());
        if !whole {
            break;
        }
    }
    let total: usize = argv.iter().map(String::len).sum();
    kept.push(format!(
        "... ({} more bytes of argv not kept)",
        total - kept_bytes
    ));
    serde_json::to_string(&kept).unwrap_or_default()
}

/// The longest prefix of `s` whose JSON escaping takes at most `room` bytes,
/// and the bytes it takes. Counted by bytes, not chars (a UTF-8 byte of a
/// multi-byte char is copied as it is): decoding chars cost the core real
/// time on megabyte arguments in a debug build.
fn json_prefix(s: &str, room: usize) -> (&str, usize) {
    let mut used = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let n = match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            b if b < 0x20 => 6,
            _ => 1,
        };
        if used + n > room {
            // Cut at a char boundary: drop the partial char's bytes.
            let mut cut = i;
            while !s.is_char_boundary(cut) {
                cut -= 1;
                used -= 1;
            }
            return (&s[..cut], used);
        }
        used += n;
    }
    (s, used)
}

#[cfg(test)]
mod tests {
    use scalable_common::resources::Resources;

    use super::*;

    fn assignment(argv: Vec<String>) -> Assignment {
        Assignment {
            attempt: 1,
            task: 1,
            run: 1,
            attempt_number: 1,
            argv,
            env: Vec::new(),
            cwd: "/w".into(),
            resources: Resources::default(),
            walltime_ms: None,
            outputs: Vec::new(),
            container: None,
            inputs: Vec::new(),
        }
    }

    #[test]
    fn a_small_argv_is_kept_whole() {
        let argv = vec!["echo".to_string(), "a \"quoted\" word".to_string()];
        let json = stored_argv_json(&argv);
        assert_eq!(serde_json::from_str::<Vec<String>>(&json).unwrap(), argv);
    }

    #[test]
    fn a_huge_argv_is_cut_to_the_bound_and_says_how_much_is_missing() {
        let argv: Vec<String> = (0..10).map(|i| format!("{i}").repeat(100_000)).collect();
        let json = stored_argv_json(&argv);
        assert!(json.len() <= ARGV_STORED_BYTES_MAX, "{}", json.len());
        let kept: Vec<String> = serde_json::from_str(&json).unwrap();
        assert!(kept[0].starts_with("000"), "the first argument leads");
        let note = kept.last().unwrap();
        let kept_bytes: usize = kept[..kept.len() - 1].iter().map(String::len).sum();
        assert_eq!(
            note,
            &format!(
                "... ({} more bytes of argv not kept)",
                1_000_000 - kept_bytes
            )
        );
    }

    #[test]
    fn an_argv_exactly_at_the_bound_is_kept_whole() {
        // `["x...x"]` is the argument plus 4 bytes.
        let argv = vec!["x".repeat(ARGV_STORED_BYTES_MAX - 4)];
        assert_eq!(stored_argv_json(&argv).len(), ARGV_STORED_BYTES_MAX);
        assert!(!stored_argv_json(&argv).contains("not kept"));
        let argv = vec!["x".repeat(ARGV_STORED_BYTES_MAX - 3)];
        assert!(stored_argv_json(&argv).contains("not kept"));
    }

    #[test]
    fn escapes_count_towards_the_bound() {
        let argv = vec!["\u{1}".repeat(200_000), "\"".repeat(200_000)];
        let json = stored_argv_json(&argv);
        assert!(json.len() <= ARGV_STORED_BYTES_MAX, "{}", json.len());
        let kept: Vec<String> = serde_json::from_str(&json).unwrap();
        assert_eq!(kept.len(), 2, "a cut first argument and the note");
    }

    #[test]
    fn a_cut_never_splits_a_multi_byte_char() {
        for filler in ["é", "€", "😀"] {
            let argv = vec![format!("a{}", filler.repeat(ARGV_STORED_BYTES_MAX))];
            let json = stored_argv_json(&argv);
            assert!(json.len() <= ARGV_STORED_BYTES_MAX, "{}", json.len());
            let kept: Vec<String> = serde_json::from_str(&json).expect("valid JSON");
            assert!(
                kept[0].starts_with('a') && kept[0][1..].chars().all(|c| c.to_string() == filler)
            );
        }
    }

    #[test]
    fn an_assignment_is_oversized_only_past_the_batch_cap() {
        assert_eq!(oversized(&assignment(vec!["x".repeat(1 << 20)])), None);
        let big = assignment(vec!["x".repeat(ASSIGN_BATCH_BYTES_MAX)]);
        let why = oversized(&big).expect("over the cap");
        let bytes = encoded_len(&big);
        assert_eq!(
            why,
            format!(
                "assignment of {bytes} bytes exceeds the cap of {ASSIGN_BATCH_BYTES_MAX} bytes"
            )
        );
    }
}
