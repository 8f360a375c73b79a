//! Named fault-injection points in the real binaries (reliability.md §5.2 L1).
//!
//! Armed only through the environment: `SCALABLE_FAILPOINTS="name=action[@n],..."`
//! where `action` is `error` (the caller fails as if the operation had failed),
//! `abort` (the process exits at once with status 137, like kill -9), `pause`
//! (prints `failpoint <name> reached` on stderr and blocks, so a test can kill
//! the process exactly there) or `delay` (the calling thread sleeps
//! [`DELAY`], then goes on: a race window held open). `@n` fires on the n-th hit only (1-based); without
//! it every hit fires. Unset, a failpoint costs one relaxed atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// How long a `delay` failpoint holds its thread.
pub const DELAY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Error,
    Abort,
    Pause,
    Delay,
}

struct Point {
    action: Action,
    nth: Option<u64>,
    hits: AtomicU64,
}

fn points() -> &'static HashMap<String, Point> {
    static POINTS: OnceLock<HashMap<String, Point>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("SCALABLE_FAILPOINTS")
            .map(|v| parse(&v))
            .unwrap_or_default()
    })
}

fn parse(spec: &str) -> HashMap<String, Point> {
    let mut out = HashMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((name, rest)) = item.split_once('=') else {
            eprintln!("warning: SCALABLE_FAILPOINTS: {item:?} is not name=action; ignored");
            continue;
        };
        let (action, nth) = match rest.split_once('@') {
            Some((a, n)) => (a, n.parse::<u64>().ok()),
            None => (rest, None),
        };
        let action = match action {
            "error" => Action::Error,
            "abort" => Action::Abort,
            "pause" => Action::Pause,
            "delay" => Action::Delay,
            other => {
                eprintln!("warning: SCALABLE_FAILPOINTS: unknown action {other:?} (error, abort, pause, delay); ignored");
                continue;
            }
        };
        out.insert(
            name.to_string(),
            Point {
                action,
                nth,
                hits: AtomicU64::new(0),
            },
        );
    }
    out
}

/// Passes the failpoint `name`. Returns `true` when the caller must fail
/// (`error`); `abort` and `pause` never return to the caller when they fire.
pub fn hit(name: &str) -> bool {
    let points = points();
    if points.is_empty() {
        return false;
    }
    let Some(p) = points.get(name) else {
        return false;
    };
    let n = p.hits.fetch_add(1, Ordering::Relaxed) + 1;
    if p.nth.is_some_and(|want| want != n) {
        return false;
    }
    match p.action {
        Action::Error => true,
        Action::Abort => {
            eprintln!("failpoint {name}: abort");
            std::process::exit(137)
        }
        Action::Pause => {
            eprintln!("failpoint {name} reached");
            loop {
                std::thread::park();
            }
        }
        Action::Delay => {
            eprintln!("failpoint {name}: delay");
            std::thread::sleep(DELAY);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_and_without_a_count() {
        let p = parse("store.commit=error@3, dispatch.after_send=pause,bad,x=nope");
        assert_eq!(p.len(), 2);
        assert_eq!(p["store.commit"].action, Action::Error);
        assert_eq!(p["store.commit"].nth, Some(3));
        assert_eq!(p["dispatch.after_send"].action, Action::Pause);
        assert_eq!(p["dispatch.after_send"].nth, None);
    }

    #[test]
    fn a_delay_holds_the_window_open() {
        let p = parse("fleet.after_start=delay@1");
        assert_eq!(p["fleet.after_start"].action, Action::Delay);
        assert_eq!(p["fleet.after_start"].nth, Some(1));
    }
}
