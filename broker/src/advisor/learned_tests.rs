//! The LearnedAdvisor on the synthetic workload: held-out coverage and
//! over-allocation against the percentile advisor, the fallbacks, and the
//! confidence of queries unlike the training data.

use super::super::model::MODEL_TYPES;
use super::super::quantile;
use super::super::sample::{Feature, Features, Sample};
use super::super::synthetic::Law;
use super::*;

fn split(samples: Vec<Sample>, train_runs: u64) -> (Vec<Sample>, Vec<Sample>) {
    samples.into_iter().partition(|s| s.run <= train_runs)
}

fn query(size: f64, kind: &str) -> Features {
    Features::from([
        ("size_mb".to_string(), Feature::Number(size)),
        ("kind".to_string(), Feature::Text(kind.into())),
    ])
}

/// (coverage, mean over-allocation) of advised memory over held-out attempts.
fn score(held_out: &[Sample], advise: impl Fn(&Sample) -> u64) -> (f64, f64) {
    let mut covered = 0;
    let mut over = 0.0;
    for s in held_out {
        let peak = s.peak_memory_bytes.unwrap() as f64;
        let bound = advise(s) as f64;
        covered += usize::from(peak <= bound);
        over += (bound - peak) / peak;
    }
    let n = held_out.len() as f64;
    (covered as f64 / n, over / n)
}

#[test]
fn learned_bounds_cover_95_percent_of_held_out_attempts_and_beat_the_percentile() {
    for seed in [11, 29, 47] {
        held_out_check(seed);
    }
}

fn held_out_check(seed: u64) {
    let (train_set, held_out) = split(Law::default().samples("sim", 8, 40, seed), 5);
    let q = quantile::recommend(
        "sim",
        &train_set.iter().collect::<Vec<_>>(),
        &QuantileConfig::default(),
    );
    let (q_cov, q_over) = score(&held_out, |_| q.evidence.memory_bytes);
    assert!(q_cov >= 0.95, "the percentile covers too: {q_cov}");
    for m in MODEL_TYPES {
        let advisor = train("sim", &train_set, &LearnedConfig::new(m)).unwrap();
        let advise = |s: &Sample| {
            let a = advisor.recommend(Some("local"), &s.features).unwrap();
            assert_eq!(a.model_type, m.as_str(), "{}", a.method);
            a.evidence.memory_bytes
        };
        let (cov, over) = score(&held_out, advise);
        eprintln!(
            "seed {seed} {m}: coverage {cov:.3} over {over:.3} (percentile {q_cov:.3} {q_over:.3})"
        );
        assert!(cov >= 0.95, "{m}: held-out coverage {cov}");
        if m != ModelType::Linear {
            assert!(over <= 0.25, "{m}: over-allocation {over}");
        }
        assert!(
            over < q_over,
            "{m}: {over} against the percentile's {q_over}"
        );
        let a = advisor
            .recommend(Some("local"), &query(100.0, "a"))
            .unwrap();
        assert_eq!(a.evidence.percentile, 95);
        let cv = a.evidence.cv.expect("cv scores");
        assert_eq!(cv.folds, 5);
        assert!(cv.memory_r2 > 0.9, "{m}: {cv:?}");
        assert!(a.confidence >= 0.5, "{m}: {}", a.confidence);
    }
}

#[test]
fn three_runs_fall_back_to_the_percentile_and_say_so() {
    let samples = Law::default().samples("sim", 3, 40, 3);
    let advisor = train(
        "sim",
        &samples,
        &LearnedConfig::new(ModelType::GradientBoosting),
    )
    .unwrap();
    let a = advisor.recommend(None, &query(100.0, "a")).unwrap();
    assert_eq!(a.method, "quantile (fallback: 3 runs < 5)");
    assert_eq!(a.evidence.method, a.method);
    assert_eq!(a.model_type, "quantile");
    assert_eq!(a.evidence.runs_analyzed, 3);
    assert_eq!(advisor.thin_reason(), Some("3 runs < 5"));
}

#[test]
fn too_few_attempts_fall_back_too() {
    let samples = Law::default().samples("sim", 5, 2, 3);
    let advisor = train("sim", &samples, &LearnedConfig::new(ModelType::Linear)).unwrap();
    let a = advisor.recommend(None, &query(100.0, "a")).unwrap();
    assert_eq!(a.method, "quantile (fallback: 10 measured attempts < 20)");
}

#[test]
fn a_feature_value_never_seen_gets_lower_confidence() {
    let samples = Law::default().samples("sim", 5, 40, 5);
    let advisor = train(
        "sim",
        &samples,
        &LearnedConfig::new(ModelType::RandomForest),
    )
    .unwrap();
    let seen = advisor.recommend(None, &query(200.0, "a")).unwrap();
    let unseen = advisor.recommend(None, &query(200.0, "c")).unwrap();
    assert!(
        unseen.confidence < seen.confidence,
        "{} vs {}",
        unseen.confidence,
        seen.confidence
    );
    assert!(
        unseen.method.contains("never seen: kind=c"),
        "{}",
        unseen.method
    );
    let far = advisor.recommend(None, &query(5000.0, "a")).unwrap();
    assert!(
        far.confidence < seen.confidence,
        "{} vs {}",
        far.confidence,
        seen.confidence
    );
    let mut extra = query(200.0, "a");
    extra.insert("colour".into(), Feature::Text("red".into()));
    assert!(advisor.recommend(None, &extra).unwrap().confidence < seen.confidence);
}

#[test]
fn an_unknown_task_or_target_is_an_error() {
    let samples = Law::default().samples("sim", 5, 40, 5);
    assert!(matches!(
        train("other", &samples, &LearnedConfig::new(ModelType::Linear)),
        Err(AdviceError::NoTelemetry { .. })
    ));
    let advisor = train("sim", &samples, &LearnedConfig::new(ModelType::Linear)).unwrap();
    let e = advisor
        .recommend(Some("hpc"), &query(1.0, "a"))
        .unwrap_err();
    assert!(e.to_string().contains("targets with history: local"), "{e}");
}

#[test]
fn memory_kills_raise_the_learned_bound() {
    let mut samples = Law::default().samples("sim", 5, 40, 9);
    let plain = train("sim", &samples, &LearnedConfig::new(ModelType::Linear)).unwrap();
    let q = query(100.0, "a");
    let before = plain.recommend(None, &q).unwrap().evidence.memory_bytes;
    let mut killed = samples[0].clone();
    killed.features = q.clone();
    killed.outcome = super::super::sample::Outcome::MemoryKilled;
    killed.peak_memory_bytes = Some(before * 3);
    samples.push(killed);
    let after = train("sim", &samples, &LearnedConfig::new(ModelType::Linear)).unwrap();
    let a = after.recommend(None, &q).unwrap();
    assert!(
        a.evidence.memory_bytes > before,
        "{} <= {before}",
        a.evidence.memory_bytes
    );
    assert_eq!(a.evidence.memory_kills, 1);
}
