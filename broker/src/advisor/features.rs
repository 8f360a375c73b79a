//! Samples as a numeric matrix for the learned models, and how far a query
//! lies from what was trained on.
//!
//! A feature whose every training value is a number is one standardised
//! column; any other is one-hot over the values seen; the target is one more
//! categorical feature. A query is encoded the same way: a value never seen
//! (or a feature never trained on, or one missing) is reported, never
//! guessed silently. This module is pure; it must not fit a model.

use std::collections::BTreeMap;

use super::sample::{Feature, Features};

/// The name the target takes among the features.
const TARGET: &str = "target";

#[derive(Debug, Clone)]
struct Numeric {
    name: String,
    mean: f64,
    std: f64,
    min: f64,
    max: f64,
}

#[derive(Debug, Clone)]
struct Categorical {
    name: String,
    values: Vec<String>,
}

/// The encoding learned from training samples.
#[derive(Debug, Clone, Default)]
pub struct FeatureSpace {
    numeric: Vec<Numeric>,
    categorical: Vec<Categorical>,
}

/// How unlike the training data a query is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Novelty {
    /// One line per feature value, feature or missing feature never seen.
    pub unseen: Vec<String>,
    /// Summed distance outside the training range, in ranges.
    pub out_of_range: f64,
}

fn text_of(f: &Feature) -> String {
    match f {
        Feature::Number(n) => n.to_string(),
        Feature::Text(t) => t.clone(),
    }
}

impl FeatureSpace {
    /// Learns the encoding from `(target, features)` of the training rows.
    pub fn fit<'a>(rows: impl Iterator<Item = (&'a str, &'a Features)> + Clone) -> FeatureSpace {
        let mut seen: BTreeMap<String, Vec<&Feature>> = BTreeMap::new();
        let mut targets: Vec<String> = Vec::new();
        for (target, features) in rows {
            targets.push(target.to_string());
            for (k, v) in features {
                seen.entry(k.clone()).or_default().push(v);
            }
        }
        let mut space = FeatureSpace::default();
        for (name, values) in seen {
            let numbers: Option<Vec<f64>> = values
                .iter()
                .map(|v| match v {
                    Feature::Number(n) => Some(*n),
                    Feature::Text(_) => None,
                })
                .collect();
            match numbers {
                Some(ns) => space.numeric.push(numeric(name, &ns)),
                None => space.categorical.push(categorical(
                    name,
                    values.iter().map(|v| text_of(v)).collect(),
                )),
            }
        }
        space
            .categorical
            .push(categorical(TARGET.to_string(), targets));
        space
    }

    /// The number of columns of an encoded row (at least one).
    pub fn width(&self) -> usize {
        let w = self.numeric.len()
            + self
                .categorical
                .iter()
                .map(|c| c.values.len())
                .sum::<usize>();
        w.max(1)
    }

    /// The names of the features trained on.
    pub fn names(&self) -> Vec<String> {
        let numeric = self.numeric.iter().map(|n| n.name.clone());
        let cats = self.categorical.iter().map(|c| c.name.clone());
        numeric.chain(cats).filter(|n| n != TARGET).collect()
    }

    /// One encoded row; missing numbers take the training mean (the caller
    /// learns of it from `novelty`).
    pub fn row(&self, target: &str, features: &Features) -> Vec<f64> {
        let mut row = Vec::with_capacity(self.width());
        for n in &self.numeric {
            let v = match features.get(&n.name) {
                Some(Feature::Number(v)) => *v,
                _ => n.mean,
            };
            row.push((v - n.mean) / n.std);
        }
        for c in &self.categorical {
            let value = if c.name == TARGET {
                Some(target.to_string())
            } else {
                features.get(&c.name).map(text_of)
            };
            for known in &c.values {
                row.push(f64::from(u8::from(
                    value.as_deref() == Some(known.as_str()),
                )));
            }
        }
        if row.is_empty() {
            row.push(0.0);
        }
        row
    }

    /// What in the query the training data never showed.
    pub fn novelty(&self, target: &str, features: &Features) -> Novelty {
        let mut out = Novelty::default();
        for n in &self.numeric {
            match features.get(&n.name) {
                Some(Feature::Number(v)) => {
                    let range = (n.max - n.min).max(n.std * 1e-3).max(f64::EPSILON);
                    out.out_of_range += ((v - n.max) / range).max((n.min - v) / range).max(0.0);
                }
                Some(Feature::Text(t)) => out
                    .unseen
                    .push(format!("{}={t} (trained on numbers)", n.name)),
                None => out.unseen.push(format!("{} missing", n.name)),
            }
        }
        for c in &self.categorical {
            let value = if c.name == TARGET {
                Some(target.to_string())
            } else {
                features.get(&c.name).map(text_of)
            };
            match value {
                Some(v) if c.values.contains(&v) => {}
                Some(v) => out.unseen.push(format!("{}={v}", c.name)),
                None => out.unseen.push(format!("{} missing", c.name)),
            }
        }
        let known = |k: &String| {
            self.numeric.iter().any(|n| &n.name == k)
                || self.categorical.iter().any(|c| &c.name == k)
        };
        for k in features.keys().filter(|k| !known(k)) {
            out.unseen.push(format!("{k} (no attempt had it)"));
        }
        out
    }
}

fn numeric(name: String, values: &[f64]) -> Numeric {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Numeric {
        name,
        mean,
        std: if var > 0.0 { var.sqrt() } else { 1.0 },
        min,
        max,
    }
}

fn categorical(name: String, mut values: Vec<String>) -> Categorical {
    values.sort();
    values.dedup();
    Categorical { name, values }
}

#[cfg(test)]
mod tests {
    use super::super::sample::features_of;
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Features {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        features_of(&owned)
    }

    #[test]
    fn numbers_are_standardised_and_categories_one_hot() {
        let a = f(&[("size", "10"), ("kind", "x")]);
        let b = f(&[("size", "30"), ("kind", "y")]);
        let space = FeatureSpace::fit([("local", &a), ("local", &b)].into_iter());
        assert_eq!(space.names(), vec!["size", "kind"]);
        // size (z-score), kind=x, kind=y, target=local
        assert_eq!(space.row("local", &a), vec![-1.0, 1.0, 0.0, 1.0]);
        assert_eq!(space.row("local", &b), vec![1.0, 0.0, 1.0, 1.0]);
        assert_eq!(space.width(), 4);
    }

    #[test]
    fn what_training_never_showed_is_reported() {
        let a = f(&[("size", "10"), ("kind", "x")]);
        let b = f(&[("size", "30"), ("kind", "x")]);
        let space = FeatureSpace::fit([("local", &a), ("local", &b)].into_iter());
        assert_eq!(
            space.novelty("local", &f(&[("size", "20"), ("kind", "x")])),
            Novelty::default()
        );
        let n = space.novelty("hpc", &f(&[("size", "50"), ("kind", "z"), ("extra", "1")]));
        assert_eq!(
            n.unseen,
            vec!["kind=z", "target=hpc", "extra (no attempt had it)"]
        );
        assert!((n.out_of_range - 1.0).abs() < 1e-9, "{}", n.out_of_range);
        assert_eq!(
            space.novelty("local", &f(&[("kind", "x")])).unseen,
            vec!["size missing"]
        );
    }
}
