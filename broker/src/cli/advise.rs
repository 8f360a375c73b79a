//! `scalable advise` and `scalable tune`: what a task type should ask for,
//! and the search of a learned model's parameters (SPEC §11).
//!
//! Must not: compute advice (the broker's `advisor` does, off its core);
//! this parses the arguments, asks, and prints text or seed 003's JSON.

use clap::{Args, ValueEnum};
use scalable_common::exit::ExitCode;
use scalable_common::protocol::{AdviseRequest, Request, TuneRequest};

use super::request::{request, AdviceJson};
use super::Context;
use crate::advisor::tune::TuneReport;
use crate::advisor::Advice;
use crate::cli_error::CliError;
use crate::output::print_out;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct AdviseArgs {
    /// The task type: a manifest task binding, else a job name.
    #[arg(long)]
    pub task: String,
    /// Only attempts that ran on this target (default: all).
    #[arg(long)]
    pub target: Option<String>,
    /// linear, random_forest or gradient_boosting (default: gradient_boosting).
    #[arg(long, value_name = "MODEL")]
    pub model_type: Option<String>,
    /// The task's features, K=V (repeatable, or several after one flag).
    #[arg(long = "features", alias = "feature", value_name = "K=V", num_args = 1..)]
    pub features: Vec<String>,
    /// text, or json (seed 003's shape; also --json).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// The task type: a manifest task binding, else a job name.
    #[arg(long)]
    pub task: String,
    /// linear, random_forest or gradient_boosting (default: gradient_boosting).
    #[arg(long, value_name = "MODEL")]
    pub model_type: Option<String>,
    /// Folds of the cross-validation (2-20).
    #[arg(long, default_value_t = 5)]
    pub cv_folds: u32,
    /// text, or json (also --json).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// `K=V` pairs, or the one-line error naming the first that is not.
pub fn parse_features(raw: &[String]) -> Result<Vec<(String, String)>, CliError> {
    raw.iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(CliError::bad_input(format!(
                "--features {f:?}: expected K=V, e.g. size_mb=120"
            ))),
        })
        .collect()
}

fn check_model(m: &Option<String>) -> Result<(), CliError> {
    match m {
        Some(name) => name
            .parse::<crate::advisor::model::ModelType>()
            .map(|_| ())
            .map_err(|e| CliError::bad_input(format!("--model-type: {e}"))),
        None => Ok(()),
    }
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, CliError> {
    serde_json::from_str(json).map_err(|e| {
        CliError::failed(format!(
            "the broker's advice is unreadable ({e}; are the cli and broker the same version?)"
        ))
    })
}

pub async fn exec(ctx: &Context<'_>, args: AdviseArgs) -> Result<ExitCode, CliError> {
    let features = parse_features(&args.features)?;
    check_model(&args.model_type)?;
    let AdviceJson(json) = request(ctx.access, || {
        Ok(Request::Advise(AdviseRequest {
            task: args.task.clone(),
            target: args.target.clone(),
            model_type: args.model_type.clone(),
            features,
        }))
    })
    .await?;
    let advice: Advice = decode(&json)?;
    print_out(&if ctx.json || args.format == Format::Json {
        crate::output::json(&advice)
    } else {
        advice.text()
    });
    Ok(ExitCode::Ok)
}

pub async fn exec_tune(ctx: &Context<'_>, args: TuneArgs) -> Result<ExitCode, CliError> {
    check_model(&args.model_type)?;
    if !(2..=crate::advisor::service::CV_FOLDS_MAX).contains(&args.cv_folds) {
        return Err(CliError::bad_input(format!(
            "--cv-folds {}: expected 2 to {}",
            args.cv_folds,
            crate::advisor::service::CV_FOLDS_MAX
        )));
    }
    let AdviceJson(json) = request(ctx.access, || {
        Ok(Request::Tune(TuneRequest {
            task: args.task.clone(),
            model_type: args.model_type.clone(),
            cv_folds: args.cv_folds,
        }))
    })
    .await?;
    let report: TuneReport = decode(&json)?;
    print_out(&if ctx.json || args.format == Format::Json {
        crate::output::json(&report)
    } else {
        tune_text(&report)
    });
    Ok(ExitCode::Ok)
}

fn tune_text(r: &TuneReport) -> String {
    let p = &r.best_params;
    format!(
        "task: {}\nmodel: {} ({}-fold CV, {} candidates)\nbest parameters: trees {}, max depth {}, min leaf {}, learning rate {}\ncross-validation score: {:.3} (mean over-allocation of held-out memory bounds; lower is better)\nstored: later advise calls for this task and model use them\n",
        r.task,
        r.model_type,
        r.cv_folds,
        r.tried.len(),
        p.trees,
        p.max_depth,
        p.min_leaf,
        p.learning_rate,
        r.best_score
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_k_equals_v() {
        let ok = parse_features(&["size_mb=120".into(), " kind = b ".into()]).unwrap();
        assert_eq!(
            ok,
            vec![
                ("size_mb".into(), "120".into()),
                ("kind".into(), "b".into())
            ]
        );
        let e = parse_features(&["size_mb".into()]).unwrap_err();
        assert_eq!(e.code, ExitCode::BadInput);
        assert!(e.message.contains("expected K=V"), "{}", e.message);
        assert!(parse_features(&["=3".into()]).is_err());
    }
}
