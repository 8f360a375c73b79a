//! `scalable agents` and `scalable pilots`: the fleet as tables, one row per
//! connected agent or per pilot the broker submitted.
//!
//! Must not: read a clock; `agents_text` takes `now_ms` for its UP column.

use scalable_common::protocol::{AgentInfo, PilotInfo};
use scalable_common::units::{format_duration_ms, format_size};

use super::table::{Align, Table};
use super::time::short_duration;

/// `scalable pilots`: every pilot with its provider id, state and queue wait.
pub fn pilots_text(pilots: &[PilotInfo]) -> String {
    if pilots.is_empty() {
        return "no pilots\n".to_string();
    }
    let mut table = Table::new(&[
        ("PILOT", Align::Left),
        ("TARGET", Align::Left),
        ("TAG", Align::Left),
        ("PROVIDER_ID", Align::Left),
        ("STATE", Align::Left),
        ("AGENT", Align::Right),
        ("QUEUE_WAIT", Align::Right),
        ("REASON", Align::Left),
    ]);
    for p in pilots {
        table.row(vec![
            p.id.clone(),
            p.target.clone(),
            p.tag.clone().unwrap_or_else(|| "-".into()),
            p.provider_id.clone(),
            p.state.to_string(),
            p.agent.map_or("-".into(), |a| a.to_string()),
            p.connected_at_ms.map_or("-".into(), |c| {
                format_duration_ms(c.saturating_sub(p.submitted_at_ms))
            }),
            p.reason.clone().unwrap_or_default(),
        ]);
    }
    table.lines().join("\n") + "\n"
}

/// `scalable agents`: one row per connected agent; UP is the time since it
/// connected, as of `now_ms`.
pub fn agents_text(agents: &[AgentInfo], now_ms: u64) -> String {
    if agents.is_empty() {
        return "no agents connected\n".to_string();
    }
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("NAME", Align::Left),
        ("HOST", Align::Left),
        ("TAGS", Align::Left),
        ("CPUS", Align::Right),
        ("MEMORY", Align::Right),
        ("GPUS", Align::Right),
        ("FREE_CPUS", Align::Right),
        ("FREE_MEM", Align::Right),
        ("RUNTIMES", Align::Left),
        ("LIMITS", Align::Left),
        ("RUNNING", Align::Right),
        ("QUEUED", Align::Right),
        ("DONE", Align::Right),
        ("UP", Align::Right),
    ]);
    for a in agents {
        let tags = if a.tags.is_empty() {
            "-".to_string()
        } else {
            a.tags.join(",")
        };
        table.row(vec![
            a.id.to_string(),
            a.name.clone(),
            a.hostname.clone(),
            tags,
            a.resources.cpus.to_string(),
            format_size(a.resources.memory_bytes),
            a.resources.gpus.to_string(),
            a.free.cpus.to_string(),
            format_size(a.free.memory_bytes),
            if a.runtimes.is_empty() {
                "-".to_string()
            } else {
                a.runtimes.join(",")
            },
            if a.limit_mode.is_empty() {
                "-".to_string()
            } else {
                a.limit_mode.clone()
            },
            a.running.to_string(),
            a.queued.to_string(),
            a.completed.to_string(),
            if a.connected {
                short_duration(now_ms.saturating_sub(a.connected_at_ms))
            } else {
                "away".to_string()
            },
        ]);
    }
    let mut out = String::new();
    table.render_into(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_fixtures::SUBMITTED_MS;
    use scalable_common::resources::Resources;

    #[test]
    fn agents_snapshot() {
        let now_ms = SUBMITTED_MS + 3 * 3_600_000;
        let agents = vec![
            AgentInfo {
                id: 1,
                name: "a1".into(),
                hostname: "node01.cluster".into(),
                tags: vec!["demeter".into(), "postprocess".into()],
                resources: Resources {
                    cpus: 32,
                    memory_bytes: 128 << 30,
                    gpus: 0,
                    custom: vec![],
                },
                free: Resources {
                    cpus: 4,
                    memory_bytes: 16 << 30,
                    gpus: 0,
                    custom: vec![],
                },
                running: 28,
                queued: 3,
                connected_at_ms: now_ms - 312_000,
                completed: 1204,
                runtimes: vec!["podman".into(), "docker".into()],
                limit_mode: "sampling".into(),
                pilot_id: None,
                connected: true,
            },
            AgentInfo {
                id: 12,
                name: "gpu-7".into(),
                hostname: "gpu07".into(),
                tags: vec![],
                resources: Resources {
                    cpus: 8,
                    memory_bytes: 3 << 29,
                    gpus: 2,
                    custom: vec![],
                },
                free: Resources::cpus(8),
                running: 0,
                queued: 0,
                connected_at_ms: now_ms - 7_500_000,
                completed: 0,
                runtimes: vec![],
                limit_mode: "cgroup-v2".into(),
                pilot_id: None,
                connected: true,
            },
        ];
        let expected = r"ID  NAME   HOST            TAGS                 CPUS  MEMORY  GPUS  FREE_CPUS  FREE_MEM  RUNTIMES       LIMITS     RUNNING  QUEUED  DONE     UP
 1  a1     node01.cluster  demeter,postprocess    32    128G     0          4       16G  podman,docker  sampling        28       3  1204  5m12s
12  gpu-7  gpu07           -                       8    1.5G     2          8        0B  -              cgroup-v2        0       0     0  2h05m
";
        assert_eq!(agents_text(&agents, now_ms), expected);
        assert_eq!(agents_text(&[], now_ms), "no agents connected\n");
    }
}
