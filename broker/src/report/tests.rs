//! The renderers on fixtures: what each format must hold, and bounds on
//! the HTML's size at scale.

use super::fixtures::{many, small};
use super::html::GANTT_BARS_MAX;
use super::{render, summarize, Format};

#[test]
fn text_starts_with_the_seeds_workers_block() {
    let text = render(&small(), Format::Text);
    let head: Vec<&str> = text.lines().take(5).collect();
    assert_eq!(
        head,
        [
            "Run 3 (demo): failed",
            "Workers:",
            "  post: 1 started, 1 removed, 0 final",
            "  untagged: 1 started, 0 removed, 1 final",
            "Scaling events: 1 scale-up, 1 scale-down",
        ],
        "{text}"
    );
    assert!(text.contains("  MEMORY_EXHAUSTION         1"), "{text}");
    assert!(
        text.contains("3/sim/1 attempt 1: EXIT_CODE (exit code 3)"),
        "{text}"
    );
}

#[test]
fn the_summary_separates_badput_and_queue_wait() {
    let s = summarize(&small());
    // Failed or lost: 1500 + 900 + 2500 + 400 ms.
    assert_eq!(s.badput_ms, 5_300);
    assert_eq!(
        s.cumulative_run_time_ms,
        5_300 + 2_000 + 3_000 + 1_800 + 700
    );
    assert_eq!(
        (s.queue_wait.from.as_str(), s.queue_wait.max_ms),
        ("assigned", 30)
    );
    let sim = &s.jobs[0];
    assert_eq!(sim.attempts, 6);
    let rt = sim.run_time_ms.unwrap();
    assert_eq!((rt.min, rt.max), (1_800, 3_000));
    // The memory kill peaked at 130M of a 100M request.
    assert!((sim.memory_used_pct_max.unwrap() - 130.0).abs() < 1e-9);
    assert!((sim.cpu_cores_mean.unwrap() - 0.8).abs() < 1e-9);
}

#[test]
fn json_is_one_valid_document_with_one_row_per_attempt() {
    let d = small();
    let text = render(&d, Format::Json);
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["attempts"].as_array().unwrap().len(), d.attempts.len());
    assert_eq!(
        v["format"], 3,
        "REPORT_FORMAT 3: attempts carry what staging moved"
    );
    assert_eq!(v["workers"][0]["final"], 0);
    assert!(v["scaling_decisions"].as_array().unwrap().is_empty());
    // Absent values are null, never a missing key.
    assert!(v["attempts"][0]
        .as_object()
        .unwrap()
        .contains_key("ready_at_ms"));
    assert_eq!(
        text.lines().filter(|l| l.contains("\"task_id\":")).count(),
        8
    );
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn html_is_self_contained_with_one_bar_per_attempt() {
    let d = small();
    let html = render(&d, Format::Html);
    assert_eq!(count(&html, r#"<rect class="bar""#), d.attempts.len());
    for fetching in ["<script", " src=", " href=", "url(", "@import", "<link"] {
        assert!(!html.contains(fetching), "{fetching} in the page");
    }
    // Stored text is escaped.
    assert!(html.contains("Traceback: &lt;boom&gt; &amp; more"));
    assert!(!html.contains("<boom>"));
    assert_eq!(
        count(&html, "none recorded"),
        2,
        "scaling decisions and predictions"
    );
    for title in [
        "cpus requested",
        "memory request",
        "walltime",
        "time since submit (s)",
    ] {
        assert!(html.contains(title), "{title}");
    }
}

#[test]
fn a_large_run_bins_its_gantt_chart_and_stays_small() {
    let d = many(100_000, 8);
    let started = std::time::Instant::now();
    let html = render(&d, Format::Html);
    let took = started.elapsed();
    assert_eq!(count(&html, r#"<rect class="bar""#), 0);
    assert!(html.contains("more than 5000"), "the page says it binned");
    assert!(html.len() < 2 << 20, "{} bytes", html.len());
    // Generous: a debug build on a loaded machine.
    assert!(took.as_secs() < 20, "{took:?}");
    let small_run = many(GANTT_BARS_MAX as u64, 2);
    let html = render(&small_run, Format::Html);
    assert_eq!(count(&html, r#"<rect class="bar""#), GANTT_BARS_MAX);
}

#[test]
fn staged_transfers_show_in_text_and_html_only_when_something_was_staged() {
    use scalable_common::staging::Transfers;
    let shared = small();
    assert!(!render(&shared, Format::Text).contains("Staged:"));
    assert!(!render(&shared, Format::Html).contains("Staged in"));
    let mut private = small();
    for (i, a) in private.attempts.iter_mut().enumerate().take(2) {
        a.transfers = Some(Transfers {
            in_bytes: 1 << 20,
            in_ms: 250 * (i as u64 + 1),
            out_bytes: 2 << 20,
            out_ms: 100,
            checkpoint_bytes: 0,
            checkpoint_ms: 0,
        });
    }
    let text = render(&private, Format::Text);
    assert!(
        text.contains("Staged:               2M in (0.750 s), 4M out (0.200 s), 0B of checkpoints (0.000 s) over 2 attempts"),
        "{text}"
    );
    let html = render(&private, Format::Html);
    assert!(
        html.contains("<b>2M in 0.750 s</b><span>Staged in</span>"),
        "{html}"
    );
    assert!(html.contains("<b>4M in 0.200 s</b><span>Staged out</span>"));
}
