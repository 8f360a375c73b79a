//! How `scalable analyze` words a task's transfer (issue 20): the tasks
//! waiting for one now, in a section of their own, and the line a failed
//! task's block gets when its last attempt failed on one.
//!
//! Must not: repeat a failure's error (the task's `reason` line carries it)
//! nor decide which transfers are listed (the broker does).

use scalable_common::protocol::TaskTransfer;
use scalable_common::units::format_size;

use super::escape::printable;
use super::task_name::task_label;

/// The section of tasks waiting for a transfer; empty when none waits.
pub(super) fn waiting_into(transfers: &[TaskTransfer], unlisted: u64, out: &mut String) {
    let waiting: Vec<&TaskTransfer> = transfers.iter().filter(|t| t.error.is_none()).collect();
    if waiting.is_empty() {
        return;
    }
    out.push_str("\n*****Tasks waiting for a transfer*****\n");
    for t in waiting {
        let what = if t.direction == "out" {
            "its process ended; it waits for its outputs"
        } else {
            "it waits for its inputs"
        };
        out.push_str(&format!(
            "{}: {what}{}\n",
            task_label(&t.path, t.item.as_deref()),
            how(t, "so far")
        ));
    }
    if unlisted > 0 {
        out.push_str(&format!("and {unlisted} more transfers\n"));
    }
}

/// `transfer: failed on its inputs through the broker (1 file, 0B of 2M
/// moved) on agent a (h)`: the line of a failed task whose last attempt
/// failed on a transfer.
pub(super) fn failed_line(t: &TaskTransfer) -> String {
    let way = if t.direction == "out" {
        "its outputs"
    } else {
        "its inputs"
    };
    format!("transfer: failed on {way}{}", how(t, "moved"))
}

/// ` through the broker (2 files, 1M of 3M) on agent a (h)`: each part only
/// when known; `moved` ends a count of bytes without a total (`so far`
/// while it waits, `moved` once it failed).
fn how(t: &TaskTransfer, moved: &str) -> String {
    let mut s = String::new();
    match t.via.as_deref() {
        Some("broker") => s.push_str(" through the broker"),
        Some(url) => s.push_str(&format!(" through {}", printable(url))),
        None => {}
    }
    let mut counts = Vec::new();
    if let Some(n) = t.files {
        counts.push(format!("{n} file{}", if n == 1 { "" } else { "s" }));
    }
    match (t.done_bytes, t.total_bytes) {
        (Some(d), Some(total)) => {
            counts.push(format!("{} of {}", format_size(d), format_size(total)))
        }
        (Some(d), None) => counts.push(format!("{} {moved}", format_size(d))),
        (None, Some(total)) => counts.push(format!("{} listed", format_size(total))),
        (None, None) => {}
    }
    if !counts.is_empty() {
        s.push_str(&format!(" ({})", counts.join(", ")));
    }
    if !t.agent.is_empty() {
        s.push_str(&format!(" on agent {}", printable(&t.agent)));
        if !t.host.is_empty() {
            s.push_str(&format!(" ({})", printable(&t.host)));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(direction: &str, via: Option<&str>, error: Option<&str>) -> TaskTransfer {
        TaskTransfer {
            task: 5,
            path: "2/use/0".into(),
            item: None,
            direction: direction.into(),
            agent: "a".into(),
            host: "h".into(),
            via: via.map(Into::into),
            files: Some(1),
            done_bytes: Some(1 << 20),
            total_bytes: Some(3 << 20),
            error: error.map(Into::into),
        }
    }

    #[test]
    fn waiting_tasks_get_a_section_with_what_moves_how_and_where() {
        let mut out_s3 = transfer("out", Some("s3://b/p"), None);
        out_s3.path = "2/make/1".into();
        out_s3.item = Some("x".into());
        (out_s3.files, out_s3.done_bytes) = (Some(2), None);
        let failed = transfer("in", Some("broker"), Some("hash mismatch"));
        let list = [transfer("in", Some("broker"), None), out_s3, failed];
        let mut out = String::new();
        waiting_into(&list, 3, &mut out);
        assert_eq!(
            out,
            "
*****Tasks waiting for a transfer*****
2/use/0: it waits for its inputs through the broker (1 file, 1M of 3M) on agent a (h)
2/make/1 (item x): its process ended; it waits for its outputs through s3://b/p (2 files, 3M listed) on agent a (h)
and 3 more transfers
"
        );
        let mut none = String::new();
        waiting_into(&list[2..], 0, &mut none);
        assert_eq!(none, "");
    }

    #[test]
    fn a_failed_transfer_says_which_way_and_how_when_known() {
        let mut t = transfer("in", Some("broker"), Some("e"));
        (t.done_bytes, t.total_bytes) = (Some(0), None);
        assert_eq!(
            failed_line(&t),
            "transfer: failed on its inputs through the broker (1 file, 0B moved) on agent a (h)"
        );
        let mut forgotten = transfer("out", None, Some("e"));
        (forgotten.files, forgotten.done_bytes, forgotten.total_bytes) = (None, None, None);
        assert_eq!(
            failed_line(&forgotten),
            "transfer: failed on its outputs on agent a (h)"
        );
    }
}
