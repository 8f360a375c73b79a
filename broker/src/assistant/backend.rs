//! Which model answers, chosen by `SCALABLE_AI_BACKEND`: `none` (the
//! heuristics; the default), `openai` (any OpenAI-compatible
//! `/v1/chat/completions`: `AI_API_KEY`, `AI_BASE_URL`, `AI_MODEL`) or
//! `ollama` (`OLLAMA_HOST`, `/api/chat`, `AI_MODEL`); `AI_TIMEOUT` (seconds)
//! bounds one request.
//!
//! Owns reading those variables and one chat exchange per backend: the
//! request body, the reply's shape, the content's size cap. Must not: build
//! a prompt, validate what the model says, or fall back (the `llm` round
//! does).

use std::time::Duration;

use serde_json::{json, Value};

use super::http::{post_json, HttpError, Url};

/// Default OpenAI-compatible base URL (the path `/chat/completions` is added).
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const OPENAI_MODEL: &str = "gpt-4o-mini";
pub const OLLAMA_HOST: &str = "http://127.0.0.1:11434";
pub const OLLAMA_MODEL: &str = "llama3.2";
/// One request's limit unless `AI_TIMEOUT` says otherwise.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
pub const TIMEOUT_MAX: Duration = Duration::from_secs(600);
/// The most of a model's answer that is looked at.
pub const CONTENT_BYTES_MAX: usize = 64 << 10;
/// Asked of the model; what it may generate per answer.
pub const ANSWER_TOKENS_MAX: u32 = 2048;

/// A configured backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    None,
    OpenAi {
        base_url: String,
        api_key: Option<String>,
        model: String,
        timeout: Duration,
    },
    Ollama {
        host: String,
        model: String,
        timeout: Duration,
    },
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("SCALABLE_AI_BACKEND={0:?} is not a backend (valid: none, openai, ollama)")]
    Unknown(String),
    #[error("AI_TIMEOUT={0:?} is not a number of seconds between 1 and 600")]
    Timeout(String),
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("the model's reply is not the expected JSON: {0}")]
    Shape(String),
}

impl Backend {
    /// The backend the environment names (`get` reads a variable).
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Backend, BackendError> {
        let name = get("SCALABLE_AI_BACKEND").unwrap_or_default();
        let timeout = match get("AI_TIMEOUT") {
            None => TIMEOUT_DEFAULT,
            Some(t) => t
                .trim()
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs)
                .filter(|d| !d.is_zero() && *d <= TIMEOUT_MAX)
                .ok_or(BackendError::Timeout(t))?,
        };
        let non_empty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        match name.trim() {
            "" | "none" => Ok(Backend::None),
            "openai" => Ok(Backend::OpenAi {
                base_url: non_empty("AI_BASE_URL").unwrap_or_else(|| OPENAI_BASE_URL.into()),
                api_key: non_empty("AI_API_KEY"),
                model: non_empty("AI_MODEL").unwrap_or_else(|| OPENAI_MODEL.into()),
                timeout,
            }),
            "ollama" => Ok(Backend::Ollama {
                host: non_empty("OLLAMA_HOST").unwrap_or_else(|| OLLAMA_HOST.into()),
                model: non_empty("AI_MODEL").unwrap_or_else(|| OLLAMA_MODEL.into()),
                timeout,
            }),
            other => Err(BackendError::Unknown(other.to_string())),
        }
    }

    /// `none`, `openai` or `ollama`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::None => "none",
            Backend::OpenAi { .. } => "openai",
            Backend::Ollama { .. } => "ollama",
        }
    }

    /// The endpoint a request goes to (shown by `--show-prompt`).
    pub fn endpoint(&self) -> String {
        match self {
            Backend::None => "(none: heuristics)".into(),
            Backend::OpenAi { base_url, .. } => {
                format!("{}/chat/completions", base_url.trim_end_matches('/'))
            }
            Backend::Ollama { host, .. } => {
                let host = if host.contains("://") {
                    host.clone()
                } else {
                    format!("http://{host}")
                };
                format!("{}/api/chat", host.trim_end_matches('/'))
            }
        }
    }

    pub fn model(&self) -> &str {
        match self {
            Backend::None => "",
            Backend::OpenAi { model, .. } | Backend::Ollama { model, .. } => model,
        }
    }

    /// The request body for `messages` (never holds the key: that is a header).
    pub fn body(&self, messages: &[Message]) -> Value {
        match self {
            Backend::Ollama { model, .. } => json!({
                "model": model,
                "messages": messages,
                "stream": false,
                "format": "json",
                "options": {"temperature": 0, "num_predict": ANSWER_TOKENS_MAX},
            }),
            _ => json!({
                "model": self.model(),
                "messages": messages,
                "temperature": 0,
                "max_tokens": ANSWER_TOKENS_MAX,
            }),
        }
    }

    /// One chat exchange: the assistant message's content, capped.
    pub fn complete(&self, messages: &[Message]) -> Result<String, BackendError> {
        let (timeout, bearer) = match self {
            Backend::None => return Err(BackendError::Shape("no backend".into())),
            Backend::OpenAi {
                timeout, api_key, ..
            } => (*timeout, api_key.as_deref()),
            Backend::Ollama { timeout, .. } => (*timeout, None),
        };
        let url = Url::parse(&self.endpoint())?;
        let reply = post_json(&url, bearer, &self.body(messages).to_string(), timeout)?;
        let v: Value = serde_json::from_str(&reply)
            .map_err(|e| BackendError::Shape(format!("not JSON ({e})")))?;
        let content = match self {
            Backend::Ollama { .. } => v.pointer("/message/content"),
            _ => v.pointer("/choices/0/message/content"),
        };
        let content = content
            .and_then(Value::as_str)
            .ok_or_else(|| BackendError::Shape("no message content".into()))?;
        if content.len() > CONTENT_BYTES_MAX {
            return Err(BackendError::Shape(format!(
                "the answer is over {CONTENT_BYTES_MAX} bytes"
            )));
        }
        Ok(content.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_environment_selects_the_backend() {
        assert_eq!(Backend::from_env(&env(&[])).unwrap(), Backend::None);
        let b = Backend::from_env(&env(&[
            ("SCALABLE_AI_BACKEND", "openai"),
            ("AI_BASE_URL", "http://127.0.0.1:9/v1/"),
            ("AI_TIMEOUT", "3"),
        ]))
        .unwrap();
        assert_eq!(b.endpoint(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(b.model(), OPENAI_MODEL);
        let b = Backend::from_env(&env(&[
            ("SCALABLE_AI_BACKEND", "ollama"),
            ("OLLAMA_HOST", "127.0.0.1:11434"),
        ]))
        .unwrap();
        assert_eq!(b.endpoint(), "http://127.0.0.1:11434/api/chat");
        assert!(matches!(
            Backend::from_env(&env(&[("SCALABLE_AI_BACKEND", "gpt")])),
            Err(BackendError::Unknown(_))
        ));
        assert!(Backend::from_env(&env(&[("AI_TIMEOUT", "0")])).is_err());
    }

    #[test]
    fn the_key_is_never_in_the_body() {
        let b = Backend::from_env(&env(&[
            ("SCALABLE_AI_BACKEND", "openai"),
            ("AI_API_KEY", "sk-test-secret-123"),
        ]))
        .unwrap();
        let body = b
            .body(&[Message {
                role: "user",
                content: "hi".into(),
            }])
            .to_string();
        assert!(!body.contains("sk-test-secret-123"), "{body}");
    }
}
