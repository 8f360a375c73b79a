//! `memory: auto`, `cpus: auto`, `walltime: auto` decided for one task: the
//! advisor's advice for the task's features, or the binding's fallback when
//! there is none or it is not confident, as the `TaskSizing` the core keeps.
//!
//! The advice is a model's output: it is checked (a bound of zero, a
//! walltime beyond a year) before it is used. Pure: advice in, sizing out;
//! it must not train, read the store or look at files.

use std::sync::Arc;

use super::advice::Advice;
use crate::core::{RequestSource, SizeRequest, SizingRecord, TaskSizing};

/// Advice under this confidence is not used; the fallback is (the
/// LearnedAdvisor's own threshold).
pub const CONFIDENCE_MIN: f64 = 0.5;

/// `walltime: auto` is the run-time upper bound times this, and at least
/// `WALLTIME_SLACK_MS` more: a walltime kill costs the whole attempt, a
/// memory bound's miss only a retry with more memory.
pub const WALLTIME_FACTOR: f64 = 2.0;
pub const WALLTIME_SLACK_MS: u64 = 60_000;

/// Advised memory is at least this (a bound under the interpreter's own
/// footprint is a model's artefact).
pub const MEMORY_ADVISED_MIN: u64 = 4 << 20;
/// Nothing advised beyond these is believed.
pub const MEMORY_ADVISED_MAX: u64 = 1 << 46;
pub const CPUS_ADVISED_MAX: u32 = 1_024;
pub const WALLTIME_ADVISED_MAX_MS: u64 = 366 * 24 * 3_600_000;

/// The percentile advisor's memory (bytes) and run time (s) bounds for the
/// task type, recorded beside the advice for the report's comparison.
pub type Percentile = Option<(u64, f64)>;

/// The task's sizing from the advisor's answer (`Err`: why there is none).
pub fn size(
    req: &SizeRequest,
    advice: Result<&Advice, String>,
    percentile: Percentile,
) -> TaskSizing {
    let mut s = decide(req, advice);
    if let Some((memory, run_time_s)) = percentile {
        let r = Arc::make_mut(&mut s.record);
        r.percentile_memory_bytes = Some(memory);
        r.percentile_run_time_ms = Some((run_time_s * 1000.0).ceil() as u64);
    }
    s
}

fn decide(req: &SizeRequest, advice: Result<&Advice, String>) -> TaskSizing {
    let a = match advice {
        Ok(a) => a,
        Err(why) => return fallback(req, None, format!("fallback: {why}")),
    };
    let memory = a.evidence.memory_bytes;
    let run_time_ms = a.evidence.run_time_s * 1000.0;
    let usable = memory > 0
        && memory <= MEMORY_ADVISED_MAX
        && run_time_ms.is_finite()
        && (0.0..=WALLTIME_ADVISED_MAX_MS as f64).contains(&run_time_ms);
    if !usable {
        let why = format!(
            "fallback: the advisor's bounds are out of range ({})",
            a.method
        );
        return fallback(req, None, why);
    }
    let record = SizingRecord {
        model: Some(a.model_type.clone()),
        confidence: Some(a.confidence),
        detail: a.method.clone(),
        predicted_memory_bytes: Some(memory),
        predicted_run_time_ms: Some(run_time_ms.ceil() as u64),
        percentile_memory_bytes: None,
        percentile_run_time_ms: None,
    };
    if a.confidence < CONFIDENCE_MIN {
        let why = format!(
            "fallback: confidence {:.2} < {CONFIDENCE_MIN:.2} ({})",
            a.confidence, a.method
        );
        return fallback(req, Some(record), why);
    }
    let mut resources = req.fallback.clone();
    if req.spec.memory {
        resources.memory_bytes = memory
            .div_ceil(1 << 20)
            .saturating_mul(1 << 20)
            .max(MEMORY_ADVISED_MIN);
    }
    if req.spec.cpus {
        let cpus = a.resources.values().map(|r| r.cpus).max().unwrap_or(1);
        resources.cpus = cpus.clamp(1, CPUS_ADVISED_MAX);
    }
    let walltime_ms = match req.spec.walltime {
        true => Some(walltime_for(run_time_ms)),
        false => req.fallback_walltime_ms,
    };
    TaskSizing {
        resources,
        walltime_ms,
        source: RequestSource::Advisor,
        record: Arc::new(record),
    }
}

/// `walltime: auto` from a run-time upper bound in ms.
pub fn walltime_for(run_time_ms: f64) -> u64 {
    let t = run_time_ms.max(0.0).ceil() as u64;
    ((run_time_ms * WALLTIME_FACTOR).ceil() as u64)
        .max(t + WALLTIME_SLACK_MS)
        .min(WALLTIME_ADVISED_MAX_MS)
}

fn fallback(req: &SizeRequest, record: Option<SizingRecord>, detail: String) -> TaskSizing {
    let record = match record {
        Some(r) => SizingRecord { detail, ..r },
        None => SizingRecord {
            model: None,
            confidence: None,
            detail,
            predicted_memory_bytes: None,
            predicted_run_time_ms: None,
            percentile_memory_bytes: None,
            percentile_run_time_ms: None,
        },
    };
    TaskSizing {
        resources: req.fallback.clone(),
        walltime_ms: req.fallback_walltime_ms,
        source: RequestSource::Manifest,
        record: Arc::new(record),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use scalable_common::manifest::AutoResources;
    use scalable_common::resources::Resources;
    use scalable_common::workflow::{quick_job, Items, JobTemplates};

    use super::super::advice::{AdvisedResources, Evidence};
    use super::*;
    use crate::core::RenderRequest;

    fn request(spec: AutoResources) -> SizeRequest {
        let def = quick_job("sim", vec!["true".into()], Items::One);
        SizeRequest {
            task: RenderRequest {
                job: 1,
                index: 0,
                run: 1,
                run_cwd: "/tmp".into(),
                templates: Arc::new(JobTemplates::compile(&def).unwrap()),
                def: Arc::new(def),
            },
            task_type: "sim".into(),
            spec,
            fallback: Resources {
                cpus: 1,
                memory_bytes: 2 << 30,
                gpus: 0,
                custom: vec![],
            },
            fallback_walltime_ms: Some(600_000),
        }
    }

    fn advice(confidence: f64, memory_bytes: u64) -> Advice {
        Advice {
            task: "sim".into(),
            workers: BTreeMap::new(),
            resources: BTreeMap::from([(
                "sim".into(),
                AdvisedResources {
                    cpus: 3,
                    memory: "1M".into(),
                    walltime: "00:00:01".into(),
                },
            )]),
            confidence,
            model_type: "gradient_boosting".into(),
            method: "gradient_boosting (5-fold CV, P95 conformal upper bound)".into(),
            evidence: Evidence {
                runs_analyzed: 5,
                attempts_analyzed: 200,
                memory_kills: 0,
                method: String::new(),
                percentile: 95,
                memory_bytes,
                run_time_s: 10.0,
                used_cores: 2.5,
                cv: None,
            },
        }
    }

    const ALL: AutoResources = AutoResources {
        memory: true,
        cpus: true,
        walltime: true,
    };

    #[test]
    fn confident_advice_sizes_each_auto_quantity() {
        let s = size(
            &request(ALL),
            Ok(&advice(0.9, (300 << 20) + 5)),
            Some((400 << 20, 12.5)),
        );
        assert_eq!(s.source, RequestSource::Advisor);
        assert_eq!(s.resources.memory_bytes, 301 << 20, "rounded up to MiB");
        assert_eq!(s.resources.cpus, 3);
        assert_eq!(s.walltime_ms, Some(70_000), "10 s bound: +60 s beats x2");
        assert_eq!(s.record.predicted_memory_bytes, Some((300 << 20) + 5));
        assert_eq!(s.record.predicted_run_time_ms, Some(10_000));
        assert_eq!(s.record.model.as_deref(), Some("gradient_boosting"));
        assert_eq!(s.record.percentile_memory_bytes, Some(400 << 20));
        assert_eq!(s.record.percentile_run_time_ms, Some(12_500));
        let only_memory = AutoResources {
            memory: true,
            ..AutoResources::default()
        };
        let s = size(&request(only_memory), Ok(&advice(0.9, 300 << 20)), None);
        assert_eq!((s.resources.cpus, s.walltime_ms), (1, Some(600_000)));
    }

    #[test]
    fn low_confidence_or_no_advice_falls_back_and_says_why() {
        let s = size(&request(ALL), Ok(&advice(0.3, 300 << 20)), None);
        assert_eq!(s.source, RequestSource::Manifest);
        assert_eq!(s.resources.memory_bytes, 2 << 30);
        assert!(
            s.record
                .detail
                .starts_with("fallback: confidence 0.30 < 0.50"),
            "{}",
            s.record.detail
        );
        assert_eq!(
            s.record.predicted_memory_bytes,
            Some(300 << 20),
            "kept for the retry"
        );
        let s = size(&request(ALL), Err("no attempt yet".into()), None);
        assert_eq!(s.record.detail, "fallback: no attempt yet");
        assert_eq!(s.walltime_ms, Some(600_000));
        let s = size(&request(ALL), Ok(&advice(0.9, 0)), None);
        assert_eq!(
            s.source,
            RequestSource::Manifest,
            "a zero bound is not believed"
        );
    }

    #[test]
    fn a_walltime_is_twice_a_long_bound() {
        assert_eq!(walltime_for(3_600_000.0), 7_200_000);
        assert_eq!(walltime_for(100.0), 60_100);
    }
}
