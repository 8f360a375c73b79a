//! The README's commands run as typed (issue 13, item 9): every fenced block
//! marked ```` ```sh tested ```` is run, in order, by one bash against a real
//! broker with local agents, in a copy of `examples/`, with the built binaries
//! first on `PATH`. What each command prints is compared with
//! `tests/snapshots/readme.txt` (timestamps, durations and progress lines
//! redacted); every command's exit code is part of it.
//!
//! Blocks marked plain `sh` are for other machines (a Slurm login node, a
//! second host) and are not run here.

use std::path::Path;

use crate::snapshot::{assert_snapshot, repo_root};
use crate::support::*;

/// The `sh tested` blocks of `markdown`, in order, each as its lines.
fn tested_blocks(markdown: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) if info.split_whitespace().eq(["sh", "tested"]) => {
                current = Some(Vec::new())
            }
            (Some(_), Some("")) => blocks.push(current.take().unwrap()),
            (Some(lines), _) => lines.push(line.to_string()),
            (None, _) => {}
        }
    }
    assert!(
        current.is_none(),
        "README.md: an sh tested block is not closed"
    );
    blocks
}

/// A block's commands: lines joined at a trailing `\`, blank lines and
/// whole-line comments dropped.
fn commands(block: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in block {
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let cmd = std::mem::take(&mut pending);
        if !cmd.trim().is_empty() && !cmd.trim_start().starts_with('#') {
            out.push(cmd);
        }
    }
    out
}

/// A command as bash reads it, with the comment people read beside it cut
/// (a `#` after a space outside quotes).
fn without_comment(cmd: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let bytes = cmd.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'#' if !single && !double && i > 0 && bytes[i - 1] == b' ' => {
                return cmd[..i].trim_end()
            }
            _ => {}
        }
    }
    cmd.trim_end()
}

/// Commands whose whole output is timings or this host's resources: run,
/// their exit code kept, their output not compared.
const UNCOMPARED: &[&str] = &["scalable stats", "scalable agents"];

/// The script: each command prints `$ COMMAND`, its output and `[exit N]`
/// into the transcript; a background command (`... &`) has its output kept
/// aside and is waited for as a person would (the broker's access file and
/// its first agent) before the next line. Every background job is stopped
/// at the end.
fn script(commands: &[String], transcript: &Path) -> String {
    let t = scalable_common::quote::shell_quote(&transcript.display().to_string());
    let mut s = String::from(
        "set -u\n\
         trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n\
         __ready() { for _ in $(seq 200); do\n  \
           n=$(scalable agents --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)\n  \
           [ \"$n\" -ge 1 ] && return; sleep 0.1; done; echo 'readme test: no agent connected' >&2; }\n",
    );
    for (i, cmd) in commands.iter().enumerate() {
        let shown = scalable_common::quote::shell_quote(&format!("$ {cmd}"));
        s.push_str(&format!("printf '%s\\n' {shown} >> {t}\n"));
        let run = without_comment(cmd);
        if let Some(bg) = run.strip_suffix('&') {
            s.push_str(&format!("{bg} > background-{i}.log 2>&1 &\n__ready\n"));
        } else if UNCOMPARED.iter().any(|u| run.starts_with(u)) {
            s.push_str(&format!(
                "{run} > uncompared-{i}.log 2>&1 < /dev/null\n\
                 printf '(output not compared: timings and this host)\\n[exit %s]\\n' $? >> {t}\n"
            ));
        } else {
            s.push_str(&format!(
                "{run} >> {t} 2>&1 < /dev/null\nprintf '[exit %s]\\n' $? >> {t}\n"
            ));
        }
    }
    s
}

/// What changes from run to run out of the transcript: dates, durations,
/// the progress lines of `--wait` (their count depends on timing).
fn redact(text: &str) -> String {
    text.lines()
        .filter(|l| !is_progress_line(l))
        .map(|l| redact_durations(&redact_dates(l)))
        .map(|l| l + "\n")
        .collect()
}

/// `run 3: 2/6 done (...)`: one line per second while a run goes.
fn is_progress_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("run ") else {
        return false;
    };
    let Some((run, rest)) = rest.split_once(": ") else {
        return false;
    };
    run.chars().all(|c| c.is_ascii_digit()) && rest.contains(" done (")
}

/// `2026-12-06 13:53:18 UTC` → `[TIME]`.
fn redact_dates(line: &str) -> String {
    let mut out = line.to_string();
    while let Some(at) = out.find(" UTC") {
        let start = at.saturating_sub(19);
        let stamp = &out[start..at];
        let shape = stamp.len() == 19
            && stamp.chars().enumerate().all(|(i, c)| match i {
                4 | 7 => c == '-',
                10 => c == ' ',
                13 | 16 => c == ':',
                _ => c.is_ascii_digit(),
            });
        if !shape {
            break;
        }
        out.replace_range(start..at + 4, "[TIME]");
    }
    out
}

/// A number followed by `sec`, `secs`, `s` or `ms` → `[DURATION]`; the
/// numbers of tables whose rows are timings (`stats`) go as well.
fn redact_durations(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let number = !w.is_empty() && w.chars().all(|c| c.is_ascii_digit() || c == '.');
        let unit = words
            .get(i + 1)
            .map(|u| u.trim_end_matches([',', ')']))
            .is_some_and(|u| matches!(u, "sec" | "secs" | "s" | "ms"));
        if number && unit {
            let tail = &words[i + 1][words[i + 1].trim_end_matches([',', ')']).len()..];
            out.push(format!("[DURATION]{tail}"));
            i += 2;
        } else {
            out.push(w.to_string());
            i += 1;
        }
    }
    out.join(" ")
}

/// Copies `from` into `to`, leaving out what a run of the examples made.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if ["out", "summary.csv", "__pycache__", ".scalable"]
            .iter()
            .any(|s| name == *s)
        {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn the_readme_commands_run_as_typed() {
    let _shared = shared_broker_guard();
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let blocks = tested_blocks(&readme);
    assert!(
        blocks.len() >= 2,
        "README.md has {} sh tested blocks",
        blocks.len()
    );
    let commands: Vec<String> = blocks.iter().flat_map(|b| commands(b)).collect();
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&repo_root().join("examples"), &dir.path().join("examples"));
    let transcript = dir.path().join("transcript.txt");
    let bin = cli_exe().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg(script(&commands, &transcript))
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("SCALABLE_ACCESS")
        .env_remove("SCALABLE_STATE_DIR")
        .env_remove("SCALABLE_LISTEN")
        .env_remove("SCALABLE_LOCAL_AGENTS")
        .env_remove("SCALABLE_AGENT_EXE");
    let (out, took) = run_within(cmd, std::time::Duration::from_secs(240));
    let out = out.unwrap_or_else(|| panic!("the README's commands took over {took:?}"));
    let text = std::fs::read_to_string(&transcript).unwrap_or_default();
    assert!(out.status.success(), "{}\n{text}", stderr(&out));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut text = redact_agent(&text)
        .replace(&dir.path().display().to_string(), "[DIR]")
        .replace(&format!("({})", host.trim()), "([HOST])");
    // Which of the two local agents took a task is the broker's choice.
    for n in 1..=2 {
        text = text.replace(&format!("agent local-{n} "), "agent local-N ");
    }
    assert_snapshot("readme.txt", &redact(&text));
}

#[test]
fn readme_blocks_and_redactions_read_as_meant() {
    let md = "x\n```sh tested\ncd a   # go\nls \\\n  -l\n\n# note\n```\n```sh\nno\n```\n";
    let blocks = tested_blocks(md);
    assert_eq!(commands(&blocks[0]), ["cd a   # go", "ls   -l"]);
    assert_eq!(without_comment("echo '#' x  # why"), "echo '#' x");
    assert_eq!(
        redact("run 1: 2/6 done (succeeded 2)\nrun 1 x: (submitted 2026-12-06 13:53:18 UTC, finished after 0.921 secs)\n"),
        "run 1 x: (submitted [TIME], finished after [DURATION])\n"
    );
}
