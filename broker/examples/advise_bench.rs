//! `scripts/bench.sh advise`: training each learned model on 10,000
//! attempts with 5 features (the synthetic workload: size, kind and three
//! features without signal) and one recommendation, timed; one JSON line
//! per model type on stdout.

use std::time::Instant;

use scalable_broker::advisor::learned::{train, LearnedConfig};
use scalable_broker::advisor::model::MODEL_TYPES;
use scalable_broker::advisor::synthetic::Law;

fn main() {
    let attempts: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let law = Law {
        distractors: 3,
        ..Law::default()
    };
    let samples = law.samples("sim", 10, attempts / 10, 1);
    let query = samples[0].features.clone();
    for m in MODEL_TYPES {
        let t0 = Instant::now();
        let advisor = match train("sim", &samples, &LearnedConfig::new(m)) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{m}: {e}");
                std::process::exit(1);
            }
        };
        let train_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let advice = advisor.recommend(Some("local"), &query);
        let recommend_ms = t1.elapsed().as_secs_f64() * 1e3;
        let method = advice.map(|a| a.method).unwrap_or_else(|e| e.to_string());
        println!(
            "{}",
            serde_json::json!({
                "model_type": m.as_str(),
                "attempts": samples.len(),
                "features": 5,
                "train_s": train_s,
                "recommend_ms": recommend_ms,
                "method": method,
            })
        );
    }
}
