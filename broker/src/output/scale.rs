//! `scalable scale`: what was done to a target's pilots (or would be, with
//! `--dry-run`).
//!
//! Must not: decide anything; the broker's fleet did, this only reports it.

use scalable_common::protocol::ScaleReport;

/// `scalable scale`: what was done (or would be, with `--dry-run`).
pub fn scale_text(r: &ScaleReport) -> String {
    let tag = r.tag.as_deref().unwrap_or("(generic pool)");
    let mut out = format!(
        "{}target {} tag {tag}: {} -> {} pilots\n",
        if r.dry_run { "dry run: " } else { "" },
        r.target,
        r.before,
        r.after
    );
    for (pilot, provider_id) in &r.started {
        out.push_str(&format!("  started {pilot} ({provider_id})\n"));
    }
    for (what, list) in [
        ("cancelled (not connected yet)", &r.cancelled),
        ("drained (idle agent leaves)", &r.drained),
        ("stopped (busy, --force)", &r.killed),
    ] {
        if !list.is_empty() {
            out.push_str(&format!("  {what}: {}\n", list.join(", ")));
        }
    }
    if r.kept_busy > 0 {
        out.push_str(&format!(
            "  kept {} busy pilot(s); --force stops them (their tasks go back to ready)\n",
            r.kept_busy
        ));
    }
    if !r.commands.is_empty() {
        out.push_str(if r.dry_run { "would run:\n" } else { "ran:\n" });
        for c in &r.commands {
            out.push_str(&format!("  {c}\n"));
        }
    }
    out
}
