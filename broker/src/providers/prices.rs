//! The price table shipped in the repo (`prices/prices.json`, embedded at
//! build time) and its lookups. Prices are on-demand list prices; every
//! estimate says which row it used.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

const PRICES_JSON: &str = include_str!("../../../prices/prices.json");
/// Where the table lives, for the `source` of an estimate.
pub const PRICES_FILE: &str = "prices/prices.json";

/// Region → instance/machine type → price per hour.
type PerType = BTreeMap<String, BTreeMap<String, f64>>;

#[derive(Debug, Deserialize)]
pub struct Prices {
    currency: String,
    as_of: String,
    aws_ec2: PerType,
    aws_fargate: BTreeMap<String, FargateRate>,
    gcp_compute: PerType,
    slurm: SlurmRate,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct FargateRate {
    pub vcpu_hour: f64,
    pub gb_hour: f64,
}

#[derive(Debug, Deserialize)]
struct SlurmRate {
    node_hour: f64,
}

/// The embedded table, parsed once.
pub fn table() -> &'static Prices {
    static TABLE: OnceLock<Prices> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(PRICES_JSON).unwrap_or_else(|e| {
            panic!("{PRICES_FILE} does not parse: {e} (this is a bug in scalable)")
        })
    })
}

/// A price by region and type.
fn lookup(table: &PerType, region: &str, kind: &str) -> Option<f64> {
    table.get(region)?.get(kind).copied()
}

impl Prices {
    pub fn currency(&self) -> &'static str {
        // The table is 'static; its currency is one fixed word.
        match self.currency.as_str() {
            "USD" => "USD",
            "EUR" => "EUR",
            _ => "?",
        }
    }

    pub fn as_of(&self) -> &str {
        &self.as_of
    }

    pub fn ec2(&self, region: &str, instance_type: &str) -> Option<f64> {
        lookup(&self.aws_ec2, region, instance_type)
    }

    pub fn fargate(&self, region: &str) -> Option<FargateRate> {
        self.aws_fargate.get(region).copied()
    }

    pub fn gcp(&self, region: &str, machine_type: &str) -> Option<f64> {
        lookup(&self.gcp_compute, region, machine_type)
    }

    pub fn slurm_node_hour(&self) -> f64 {
        self.slurm.node_hour
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_parses_and_has_the_common_rows() {
        let t = table();
        assert_eq!(t.currency(), "USD");
        assert_eq!(t.ec2("us-east-1", "c5.xlarge"), Some(0.17));
        assert!(t.ec2("us-west-2", "m5.xlarge").is_some());
        assert!(t.ec2("us-east-1", "c6i.2xlarge").is_some());
        assert!(t.ec2("eu-west-1", "c5.xlarge").is_none());
        assert!(t.fargate("us-east-1").is_some_and(|r| r.vcpu_hour > 0.0));
        assert!(t.gcp("us-central1", "n2-standard-4").is_some());
        assert!(t.slurm_node_hour() > 0.0);
    }
}
