//! The LLM path against a small local HTTP stub (a std `TcpListener` on
//! 127.0.0.1:0; a stand-in for a model server, which the suite cannot run):
//! a good answer is used; a malformed reply, a slow one and an unreachable
//! port fall back to the heuristics with one notice; an invalid answer gets
//! one repair round carrying the validation errors; an Ollama-shaped stub
//! proves that backend; no secret or environment value reaches a prompt.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::assist;
use crate::support::*;

/// What the stub answers to one request.
enum Reply {
    /// An OpenAI-compatible completion whose message content is this.
    OpenAi(String),
    /// An Ollama `/api/chat` reply whose message content is this.
    Ollama(String),
    /// A 200 whose body is this, as it is.
    Raw(&'static str),
    /// Waits this long, then answers like `OpenAi`.
    Slow(Duration, String),
}

/// One request the stub saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: String,
    body: String,
}

struct Stub {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    fn start(script: Vec<Reply>) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for reply in script {
                let Ok((mut s, _)) = listener.accept() else {
                    return;
                };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = String::new();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h == "\r\n" || h.is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    headers.push_str(&h);
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).unwrap();
                log.lock().unwrap().push(Seen {
                    path,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let text = match reply {
                    Reply::OpenAi(c) => openai(&c),
                    Reply::Ollama(c) => json!({"model": "m", "message": {"role": "assistant", "content": c}, "done": true}).to_string(),
                    Reply::Raw(t) => t.to_string(),
                    Reply::Slow(d, c) => {
                        std::thread::sleep(d);
                        openai(&c)
                    }
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        Stub { port, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn openai(content: &str) -> String {
    json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).to_string()
}

const GOOD: &str = "version: 1\nproject: {name: from-model}\ntargets: {local: {provider: local, max_workers: 2}}\ncomponents: {m: {cpus: 1, memory: 1G}}\ntasks: {run_m: {component: m}}\n";
const INVALID: &str =
    "version: 1\nproject: {name: from-model}\ntargets: {local: {provider: nomad}}\n";
const DESCRIPTION: &str = "a local pipeline (1 cpu, 1GB) with token sk-abcdefghijklmnop1234 and hunter2-very-secret-value";
const SECRET: &str = "hunter2-very-secret-value";
const KEY: &str = "sk-stub-key-0123456789abcdef";

fn answer(yaml: &str) -> String {
    json!({"text": "a manifest", "yaml": yaml}).to_string()
}

/// `scalable compose` with the openai backend pointed at the stub.
fn compose(stub_port: u16, extra: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{stub_port}/v1");
    let mut env = vec![
        ("SCALABLE_AI_BACKEND", "openai"),
        ("AI_BASE_URL", base.as_str()),
        ("AI_API_KEY", KEY),
        ("AI_MODEL", "stub-model"),
        ("AI_TIMEOUT", "5"),
        ("SOME_PASSWORD", SECRET),
    ];
    env.extend_from_slice(extra);
    assist(dir.path(), &["compose", "--description", DESCRIPTION], &env)
}

fn no_secrets(seen: &[Seen]) {
    for s in seen {
        assert!(
            !s.body.contains(SECRET),
            "the env value reached a prompt: {}",
            s.body
        );
        assert!(!s.body.contains("sk-abcdefghijklmnop1234"), "{}", s.body);
        assert!(
            !s.body.contains(KEY),
            "the key is a header, never the body: {}",
            s.body
        );
    }
}

#[test]
fn a_good_answer_is_used_after_validation() {
    let stub = Stub::start(vec![Reply::OpenAi(answer(GOOD))]);
    let out = compose(stub.port, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("(a model)") && text.contains("from-model"),
        "{text}"
    );
    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert!(
        seen[0].headers.contains(&format!("Bearer {KEY}")),
        "{}",
        seen[0].headers
    );
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["model"], "stub-model");
    assert!(body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .contains("a local pipeline"));
    no_secrets(&seen);
}

#[test]
fn malformed_slow_and_unreachable_replies_fall_back_with_one_notice() {
    let stub = Stub::start(vec![Reply::Raw("this is not json")]);
    let out = compose(stub.port, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("note: the openai backend gave no usable answer (the model's reply is not the expected JSON"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(stdout(&out).contains("(heuristics)"), "{}", stdout(&out));
    assert_eq!(stub.seen().len(), 1);

    let stub = Stub::start(vec![Reply::Slow(Duration::from_secs(4), answer(GOOD))]);
    let started = Instant::now();
    let out = compose(stub.port, &[("AI_TIMEOUT", "1")]);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("within 1 s"), "{}", stderr(&out));
    assert!(stdout(&out).contains("(heuristics)"));

    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = compose(closed, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach 127.0.0.1"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("(heuristics)"));
}

#[test]
fn an_invalid_answer_gets_one_repair_round_with_the_errors() {
    let stub = Stub::start(vec![
        Reply::OpenAi(answer(INVALID)),
        Reply::OpenAi(answer(GOOD)),
    ]);
    let out = compose(stub.port, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("from-model"), "{}", stdout(&out));
    let seen = stub.seen();
    assert_eq!(seen.len(), 2);
    let second: Value = serde_json::from_str(&seen[1].body).unwrap();
    let msgs = second["messages"].as_array().unwrap();
    assert_eq!(
        msgs.len(),
        4,
        "system, user, the rejected answer, the repair"
    );
    assert_eq!(msgs[2]["role"], "assistant");
    let repair = msgs[3]["content"].as_str().unwrap();
    assert!(
        repair.contains("rejected") && repair.contains("nomad"),
        "{repair}"
    );
    no_secrets(&seen);

    let stub = Stub::start(vec![
        Reply::OpenAi(answer(INVALID)),
        Reply::OpenAi("no json at all".into()),
    ]);
    let out = compose(stub.port, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("still invalid after one repair round"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("(heuristics)"));
    assert_eq!(stub.seen().len(), 2, "exactly one repair round");
}

#[test]
fn the_ollama_backend_speaks_api_chat() {
    let stub = Stub::start(vec![Reply::Ollama(answer(GOOD))]);
    let dir = tempfile::tempdir().unwrap();
    let host = format!("http://127.0.0.1:{}", stub.port);
    let out = assist(
        dir.path(),
        &["compose", "--description", DESCRIPTION],
        &[
            ("SCALABLE_AI_BACKEND", "ollama"),
            ("OLLAMA_HOST", &host),
            ("SOME_PASSWORD", SECRET),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("from-model"), "{}", stdout(&out));
    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/api/chat");
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["stream"], false);
    assert!(!seen[0]
        .headers
        .to_ascii_lowercase()
        .contains("authorization"));
    no_secrets(&seen);
}

#[test]
fn show_prompt_prints_the_scrubbed_prompt_and_sends_nothing() {
    let stub = Stub::start(vec![Reply::OpenAi(answer(GOOD))]);
    let dir = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{}/v1", stub.port);
    let out = assist(
        dir.path(),
        &["compose", "--description", DESCRIPTION, "--show-prompt"],
        &[
            ("SCALABLE_AI_BACKEND", "openai"),
            ("AI_BASE_URL", &base),
            ("AI_API_KEY", KEY),
            ("SOME_PASSWORD", SECRET),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("--- system ---") && text.contains("--- user ---"),
        "{text}"
    );
    assert!(
        text.contains("a local pipeline") && text.contains("[redacted]"),
        "{text}"
    );
    assert!(
        !text.contains(SECRET) && !text.contains(KEY) && !text.contains("sk-abcdefghijklmnop1234"),
        "{text}"
    );
    assert!(stub.seen().is_empty(), "--show-prompt sent a request");
    // --no-ai wins over the environment: no request either.
    let out = assist(
        dir.path(),
        &["compose", "--description", DESCRIPTION, "--no-ai"],
        &[("SCALABLE_AI_BACKEND", "openai"), ("AI_BASE_URL", &base)],
    );
    assert!(stdout(&out).contains("(heuristics)"));
    assert!(stub.seen().is_empty());
}
