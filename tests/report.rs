//! `scalable report` (issue 16): the text and JSON of a made-up run and of
//! a real one against their snapshots (times, sizes and hosts redacted), and
//! the HTML of a real run opened in a real headless Chromium: a screenshot
//! kept under the test's output dir, no console message, no request but the
//! page (and /favicon.ico), and one SVG bar per attempt.
//!
//! Chromium is Debian's `chromium` (`.ci/run` installs it). Without it the
//! browser test fails with the command that installs it, unless
//! `SCALABLE_SKIP_BROWSER=1` says to skip it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use scalable_broker::report::{self, fixtures, Format};

use crate::snapshot::assert_snapshot;
use crate::support::*;

#[test]
fn report_of_a_made_up_run_matches_its_text_and_json_snapshots() {
    let d = fixtures::small();
    assert_snapshot("report-fixture.txt", &report::render(&d, Format::Text));
    assert_snapshot("report-fixture.json", &report::render(&d, Format::Json));
}

/// Text with every time, size and percentage replaced by `#`: a token that
/// holds a digit and a `.`, `%` or a size unit. Counts stay.
fn redact_text(text: &str) -> String {
    let token = |t: &str| {
        let digit = t.chars().any(|c| c.is_ascii_digit());
        let measured = t.contains('.') || t.ends_with(['%', 'K', 'M', 'G', 'T', 'B']);
        if digit && measured {
            "#".to_string()
        } else {
            t.to_string()
        }
    };
    text.lines()
        .map(|l| {
            // Keep the columns' alignment out of it: one space between tokens.
            l.split(' ')
                .filter(|t| !t.is_empty())
                .map(token)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// JSON with measured values and host names replaced by `"#"`.
fn redact_json(v: &mut serde_json::Value) {
    const KEYS: &[&str] = &[
        "agent",
        "hostname",
        "name",
        "cpu_cores_mean",
        "cpu_used_pct_mean",
        "memory_used_pct_mean",
        "memory_used_pct_max",
    ];
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let measured = k.ends_with("_ms") || k.ends_with("_us") || k.ends_with("_bytes");
                if (measured || KEYS.contains(&k.as_str())) && !x.is_null() {
                    *x = serde_json::Value::String("#".into());
                } else {
                    redact_json(x);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

/// A run with three successes, a failure with stderr and a cancelled
/// dependent, on one agent.
fn small_run(b: &mut Broker) -> String {
    b.agent(&["--cpus", "2"]);
    b.wait_agents(1);
    let wf = b.write(
        "report.yaml",
        r#"
workflow: reported
jobs:
  - name: good
    range: "1..=3"
    resources: {memory: 64M}
    command: [sh, -c, "sleep 0.2"]
  - name: bad
    command: [sh, -c, "echo 'model diverged at step 42' >&2; exit 3"]
  - name: after_bad
    after: [bad]
    command: ["true"]
"#,
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    assert_eq!(b.cli(&["wait", &run]).status.code(), Some(1));
    run
}

#[test]
fn report_of_a_real_run_matches_its_redacted_snapshots_and_opens_in_chromium() {
    let mut b = Broker::start();
    let run = small_run(&mut b);
    let text = b.ok(&["report", &run]);
    assert_eq!(
        b.ok(&["report", "--latest"]),
        text,
        "--latest is the newest run"
    );
    assert_snapshot("report-run.txt", &(redact_text(&text) + "\n"));
    let json = b.ok(&["report", "last", "--format", "json"]);
    let mut v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v["attempts"].as_array().map(Vec::len), Some(4), "{json}");
    redact_json(&mut v);
    let pretty = serde_json::to_string_pretty(&v).unwrap() + "\n";
    assert_snapshot("report-run.json", &pretty);

    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&out_dir).unwrap();
    let html = out_dir.join("report.html");
    let out = b.cli(&[
        "report",
        &run,
        "--format",
        "html",
        "--output",
        html.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    open_in_chromium(&out_dir, 4);
}

fn chromium() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("chromium"))
            .find(|c| c.is_file())
    })
}

fn headless(exe: &Path) -> Command {
    let mut c = Command::new(exe);
    c.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
    ]);
    // Its profile and crash dumps stay out of the user's home.
    c.env("HOME", std::env::temp_dir());
    c
}

/// Opens `dir/report.html` in headless Chromium: a screenshot, the console,
/// the requests it made (served by a loopback `http.server` whose log lists
/// them) and the SVG bars of the DOM after it loaded.
fn open_in_chromium(dir: &Path, attempts: usize) {
    let Some(exe) = chromium() else {
        if std::env::var_os("SCALABLE_SKIP_BROWSER").is_some() {
            eprintln!("SCALABLE_SKIP_BROWSER is set: the report was not opened in a browser");
            return;
        }
        panic!("chromium is not on PATH: install it (apt-get install -y chromium) or set SCALABLE_SKIP_BROWSER=1 to skip this check");
    };
    let png = dir.join("report.png");
    let _ = std::fs::remove_file(&png);
    let mut shot = headless(&exe);
    shot.arg("--window-size=1200,3600")
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", dir.join("report.html").display()));
    let (out, _) = run_within(shot, Duration::from_secs(90));
    assert!(out.is_some(), "chromium took over 90 s for a screenshot");
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "no screenshot at {} ({size} bytes)",
        png.display()
    );
    println!("report screenshot: {}", png.display());
    eprintln!("report screenshot: {}", png.display());

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let log_path = dir.join("http.log");
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("python3 -m http.server");
    wait_until(Duration::from_secs(20), "the http server", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut load = headless(&exe);
    load.args([
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=2000",
        "--dump-dom",
    ])
    .arg(format!("http://127.0.0.1:{port}/report.html"));
    let (out, _) = run_within(load, Duration::from_secs(90));
    let _ = server.kill();
    let _ = server.wait();
    let out = out.expect("chromium took over 90 s to load the page");
    let (dom, console) = (stdout(&out), stderr(&out));
    let messages: Vec<&str> = console.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(messages.is_empty(), "console messages: {messages:#?}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let requested: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split('"').nth(1))
        .filter_map(|r| r.split_whitespace().nth(1))
        .collect();
    assert!(requested.contains(&"/report.html"), "{log}");
    for path in &requested {
        assert!(
            matches!(*path, "/report.html" | "/favicon.ico"),
            "requested {path}:\n{log}"
        );
    }
    assert_eq!(
        dom.matches(r#"<rect class="bar""#).count(),
        attempts,
        "bars in the DOM"
    );
}
