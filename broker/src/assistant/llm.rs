//! One LLM round: send the prompt, read the answer as `{"text", "yaml"}`,
//! have the caller validate it, and on rejection send the errors back once
//! (the repair round). Anything else (unreachable, timeout, a reply that is
//! not the API's JSON, a second rejection) ends in [`Outcome::Fallback`]
//! with the one-line notice the CLI prints before the heuristic output.
//!
//! Owns the round and the answer's parsing. Must not: trust the answer (the
//! caller's check decides), print, or read the environment.

use serde::Deserialize;

use super::backend::{Backend, Message};
use super::prompt::{self, Secrets};

/// What the model must answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Answer {
    pub text: String,
    pub yaml: String,
}

/// The result of a round: the validated answer, or why the heuristics speak.
#[derive(Debug)]
pub enum Outcome<T> {
    Model(T),
    Fallback(String),
}

/// How many requests a round sent (tests and the notice use it).
pub const REQUESTS_MAX: usize = 2;

/// Asks `backend`; `check` turns an answer into the caller's value or the
/// list of what is wrong with it.
pub fn ask<T>(
    backend: &Backend,
    mut messages: Vec<Message>,
    secrets: &Secrets,
    check: &dyn Fn(&Answer) -> Result<T, Vec<String>>,
) -> Outcome<T> {
    let fallback = |why: String| {
        Outcome::Fallback(format!(
            "note: the {} backend gave no usable answer ({why}); the heuristic result follows",
            backend.name()
        ))
    };
    for round in 0..REQUESTS_MAX {
        let content = match backend.complete(&messages) {
            Ok(c) => c,
            Err(e) => return fallback(e.to_string()),
        };
        let errors = match parse_answer(&content) {
            Ok(answer) => match check(&answer) {
                Ok(value) => return Outcome::Model(value),
                Err(errors) => errors,
            },
            Err(e) => vec![e],
        };
        if round + 1 == REQUESTS_MAX {
            let first = errors.first().cloned().unwrap_or_default();
            return fallback(format!(
                "still invalid after one repair round: {}",
                one_line(&first)
            ));
        }
        messages.push(Message {
            role: "assistant",
            content: secrets.scrub(&content),
        });
        match prompt::repair(&errors, secrets) {
            Ok(m) => messages.push(m),
            Err(e) => return fallback(e),
        }
    }
    fallback("no answer".into())
}

fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    line.chars().take(200).collect()
}

/// The JSON object in a model's content: the whole content, or the part
/// between the first `{` and the last `}` (models wrap answers in prose or
/// code fences).
pub fn parse_answer(content: &str) -> Result<Answer, String> {
    let trimmed = content.trim();
    if let Ok(a) = serde_json::from_str::<Answer>(trimmed) {
        return Ok(a);
    }
    let (Some(start), Some(end)) = (trimmed.find('{'), trimmed.rfind('}')) else {
        return Err("the answer is not a JSON object {\"text\": ..., \"yaml\": ...}".into());
    };
    if end < start {
        return Err("the answer is not a JSON object".into());
    }
    serde_json::from_str::<Answer>(&trimmed[start..=end])
        .map_err(|e| format!("the answer is not valid JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_found_in_fences_and_prose() {
        let a =
            parse_answer("Sure!\n```json\n{\"text\": \"hi\", \"yaml\": \"a: 1\"}\n```").unwrap();
        assert_eq!(a.text, "hi");
        assert_eq!(a.yaml, "a: 1");
        assert!(parse_answer("no json here").is_err());
        assert!(parse_answer("{not json}").is_err());
    }
}
