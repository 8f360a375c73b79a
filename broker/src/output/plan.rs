//! `scalable plan`: the per-tag table of a target's workers and what they
//! cost, as text or JSON.
//!
//! Must not: size or price anything; `pilots::plan` and `pilots::plan_costs`
//! do, this only lays their rows out.

use crate::pilots::{PlanCost, PlanRow};

use super::json::json;

/// `scalable plan`: the manifest's shape of `target` per tag, then one line
/// per row with what its workers cost.
pub fn plan_text(target: &str, provider: &str, rows: &[PlanRow], costs: &[PlanCost]) -> String {
    let mut out = format!("plan for target {target} ({provider}), from the manifest:\n");
    let header = [
        "TAG", "WORKERS", "MIN", "MAX", "CPUS", "MEMORY", "GPUS", "IMAGE",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.tag.clone(),
                r.workers.to_string(),
                r.min_workers.to_string(),
                r.max_workers.to_string(),
                if r.cpus == 0 {
                    "auto".into()
                } else {
                    r.cpus.to_string()
                },
                r.memory.clone(),
                r.gpus.to_string(),
                r.image.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cols: Vec<&str>| {
        cols.iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    out.push_str(&line(header.to_vec()));
    out.push('\n');
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out.push_str("(the manifest's own shape; --objective and --policy weigh other counts)\n");
    for c in costs {
        out.push_str(&cost_line(c));
    }
    out
}

/// `cost demeter: 32 worker(s) x 4.00 h x 1.000 USD/h = 128.00 USD (source)`,
/// or `cost TAG: unknown (source)` without a price.
fn cost_line(c: &PlanCost) -> String {
    let (tag, w, hours) = (&c.tag, c.workers, c.hours);
    match c.cost.total {
        Some(total) => format!(
            "cost {tag}: {w} worker(s) x {hours:.2} h x {:.3} {cur}/h = {total:.2} {cur} ({})\n",
            c.cost.per_pilot_hour.unwrap_or(0.0),
            c.cost.source,
            cur = c.cost.currency
        ),
        None => format!("cost {tag}: unknown ({})\n", c.cost.source),
    }
}

/// `scalable --json plan`: `{"cost": [...], "rows": [...]}`, keys sorted as
/// `serde_json::Value` orders them.
pub fn plan_json(rows: &[PlanRow], costs: &[PlanCost]) -> String {
    json(&serde_json::json!({"rows": rows, "cost": costs}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::CostEstimate;

    fn row(tag: &str) -> PlanRow {
        PlanRow {
            tag: tag.into(),
            workers: 2,
            min_workers: 1,
            max_workers: 2,
            cpus: 0,
            memory: "16G".into(),
            gpus: 0,
            image: None,
        }
    }

    fn cost(tag: &str, total: Option<f64>) -> PlanCost {
        PlanCost {
            tag: tag.into(),
            workers: 2,
            hours: 1.5,
            cost: CostEstimate {
                total,
                currency: "USD",
                per_pilot_hour: total.map(|t| t / 3.0),
                source: "test prices".into(),
            },
        }
    }

    #[test]
    fn plan_snapshot_with_a_known_and_an_unknown_price() {
        let rows = [row("sim"), row("post")];
        let costs = [cost("sim", Some(3.0)), cost("post", None)];
        let expected = "plan for target t (slurm), from the manifest:
TAG   WORKERS  MIN  MAX  CPUS  MEMORY  GPUS  IMAGE
sim   2        1    2    auto  16G     0     -
post  2        1    2    auto  16G     0     -
(the manifest's own shape; --objective and --policy weigh other counts)
cost sim: 2 worker(s) x 1.50 h x 1.000 USD/h = 3.00 USD (test prices)
cost post: unknown (test prices)
";
        assert_eq!(plan_text("t", "slurm", &rows, &costs), expected);
    }

    #[test]
    fn plan_json_sorts_keys() {
        let text = plan_json(&[row("sim")], &[cost("sim", None)]);
        let cost_at = text.find("\"cost\"").expect("cost key");
        let rows_at = text.find("\"rows\"").expect("rows key");
        assert!(cost_at < rows_at, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        assert_eq!(v["cost"][0]["hours"], 1.5);
        assert_eq!(v["rows"][0]["tag"], "sim");
    }
}
