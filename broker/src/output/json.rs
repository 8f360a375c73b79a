//! The `--json` form of any response: pretty JSON of the protocol value.
//!
//! Must not: reshape a value; what a tool reads is the protocol type itself.

use serde::Serialize;

/// Any response as pretty JSON (`--json`).
pub fn json<T: Serialize>(v: &T) -> String {
    match serde_json::to_string_pretty(v) {
        Ok(text) => text,
        // Protocol types only hold strings, numbers, sequences and structs, so this
        // cannot happen; still, a tool reading stdout gets JSON rather than a panic.
        Err(e) => serde_json::json!({ "error": format!("cannot encode as json: {e}") }).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_fixtures::run_status;

    #[test]
    fn json_of_a_run_status_is_pretty_json() {
        let mut run = run_status();
        run.state = "succeeded".into();
        let text = json(&run);
        assert!(text.contains("\"succeeded\""), "{text}");
        assert!(text.contains("\n  \"run\": 3,"), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        assert_eq!(back["counts"]["succeeded"], 989);
    }
}
