//! The learned models behind the LearnedAdvisor: `linear`,
//! `random_forest`, `gradient_boosting`, all from smartcore (pure Rust,
//! default features off), each fitted on a standardised target.
//!
//! This module owns the model types, their parameters (what `tune`
//! searches) and one fit/predict interface over them. It must not choose
//! parameters, score models or read anything.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::linear_regression::{LinearRegression, LinearRegressionParameters};
use smartcore::xgboost::{XGRegressor, XGRegressorParameters};

/// A learned model's kind, spelled as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelType {
    Linear,
    RandomForest,
    GradientBoosting,
}

pub const MODEL_TYPES: [ModelType; 3] = [
    ModelType::Linear,
    ModelType::RandomForest,
    ModelType::GradientBoosting,
];

impl ModelType {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::Linear => "linear",
            ModelType::RandomForest => "random_forest",
            ModelType::GradientBoosting => "gradient_boosting",
        }
    }

    /// Parameters that work without tuning.
    pub fn default_params(self) -> ModelParams {
        match self {
            ModelType::Linear => ModelParams {
                trees: 0,
                max_depth: 0,
                min_leaf: 0,
                learning_rate: 0.0,
                subsample: 1.0,
            },
            ModelType::RandomForest => ModelParams {
                trees: 40,
                max_depth: 10,
                min_leaf: 3,
                learning_rate: 0.0,
                subsample: 1.0,
            },
            ModelType::GradientBoosting => ModelParams {
                trees: 60,
                max_depth: 4,
                min_leaf: 1,
                learning_rate: 0.15,
                subsample: 0.5,
            },
        }
    }
}

impl fmt::Display for ModelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModelType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        MODEL_TYPES
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown model type {s:?} (hint: linear, random_forest or gradient_boosting)"
                )
            })
    }
}

/// What `tune` searches; fields a model type does not use are 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelParams {
    /// Trees of a forest, boosting rounds.
    pub trees: usize,
    pub max_depth: u16,
    /// Forest: samples per leaf; boosting: minimum child weight.
    pub min_leaf: usize,
    /// Boosting only.
    pub learning_rate: f64,
    /// Boosting only: the share of rows each tree sees (stochastic gradient
    /// boosting: faster, and less prone to fit the noise).
    #[serde(default = "whole")]
    pub subsample: f64,
}

fn whole() -> f64 {
    1.0
}

type Matrix = DenseMatrix<f64>;

enum Inner {
    Linear(LinearRegression<f64, f64, Matrix, Vec<f64>>),
    Forest(RandomForestRegressor<f64, f64, Matrix, Vec<f64>>),
    Boosted(XGRegressor<f64, f64, Matrix, Vec<f64>>),
}

/// A fitted model; predictions come back in the target's units.
pub struct Fitted {
    inner: Inner,
    y_mean: f64,
    y_std: f64,
}

/// The rows as smartcore's matrix.
pub fn matrix(rows: &[Vec<f64>]) -> Result<Matrix, String> {
    DenseMatrix::from_2d_vec(&rows.to_vec())
        .map_err(|e| format!("cannot build the feature matrix: {e}"))
}

/// Fits `kind` on `x` (one row per sample) and `y`.
pub fn fit(
    kind: ModelType,
    params: &ModelParams,
    x: &Matrix,
    y: &[f64],
    seed: u64,
) -> Result<Fitted, String> {
    let n = y.len().max(1) as f64;
    let y_mean = y.iter().sum::<f64>() / n;
    let var = y.iter().map(|v| (v - y_mean).powi(2)).sum::<f64>() / n;
    let y_std = if var > 0.0 { var.sqrt() } else { 1.0 };
    // Standardised so that boosting's base score (0.5) and step sizes mean
    // the same for bytes and seconds.
    let ys: Vec<f64> = y.iter().map(|v| (v - y_mean) / y_std).collect();
    let err = |e: smartcore::error::Failed| format!("{kind} did not fit: {e}");
    let inner = match kind {
        ModelType::Linear => Inner::Linear(
            LinearRegression::fit(x, &ys, LinearRegressionParameters::default()).map_err(err)?,
        ),
        ModelType::RandomForest => {
            let p = RandomForestRegressorParameters {
                max_depth: Some(params.max_depth.max(1)),
                min_samples_leaf: params.min_leaf.max(1),
                min_samples_split: 2 * params.min_leaf.max(1),
                n_trees: params.trees.max(1),
                // Every feature at every split: there are few, and a random
                // subset of them would split on a column without signal.
                m: Some(x.shape().1),
                keep_samples: false,
                seed,
            };
            Inner::Forest(RandomForestRegressor::fit(x, &ys, p).map_err(err)?)
        }
        ModelType::GradientBoosting => {
            let p = XGRegressorParameters::default()
                .with_n_estimators(params.trees.max(1))
                .with_max_depth(params.max_depth.max(1))
                .with_learning_rate(params.learning_rate)
                .with_min_child_weight(params.min_leaf.max(1))
                .with_subsample(params.subsample.clamp(0.05, 1.0))
                .with_base_score(0.0)
                .with_seed(seed);
            Inner::Boosted(XGRegressor::fit(x, &ys, p).map_err(err)?)
        }
    };
    Ok(Fitted {
        inner,
        y_mean,
        y_std,
    })
}

impl Fitted {
    pub fn predict(&self, x: &Matrix) -> Result<Vec<f64>, String> {
        let err = |e: smartcore::error::Failed| format!("prediction failed: {e}");
        let ys = match &self.inner {
            Inner::Linear(m) => m.predict(x).map_err(err)?,
            Inner::Forest(m) => m.predict(x).map_err(err)?,
            Inner::Boosted(m) => m.predict(x).map_err(err)?,
        };
        Ok(ys
            .into_iter()
            .map(|v| v * self.y_std + self.y_mean)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_types_are_spelled_as_on_the_command_line() {
        for m in MODEL_TYPES {
            assert_eq!(m.as_str().parse::<ModelType>().unwrap(), m);
        }
        let e = "xgb".parse::<ModelType>().unwrap_err();
        assert!(
            e.contains("linear, random_forest or gradient_boosting"),
            "{e}"
        );
    }

    #[test]
    fn every_model_learns_a_line() {
        let rows: Vec<Vec<f64>> = (0..200).map(|i| vec![f64::from(i) / 10.0]).collect();
        let y: Vec<f64> = (0..200).map(|i| 1000.0 + 50.0 * f64::from(i)).collect();
        let x = matrix(&rows).unwrap();
        for m in MODEL_TYPES {
            let fitted = fit(m, &m.default_params(), &x, &y, 7).unwrap();
            let p = fitted.predict(&matrix(&[vec![10.0]]).unwrap()).unwrap()[0];
            assert!((p - 6000.0).abs() < 300.0, "{m}: {p}");
        }
    }
}
