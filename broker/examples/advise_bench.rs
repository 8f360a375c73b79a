//! `scripts/bench.sh advise`: training each learned model on 10,000
//! attempts with 5 features (the synthetic workload: size, kind and three
//! features without signal) and one recommendation, timed; one JSON line
//! per model type on stdout. Wall time is the bar; the process's cpu time
//! beside it tells a loaded machine (other builds) from a slow model.

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
        let (t0, c0) = (Instant::now(), cpu_s());
        let advisor = match train("sim", &samples, &LearnedConfig::new(m)) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{m}: {e}");
                std::process::exit(1);
            }
        };
        let train_s = t0.elapsed().as_secs_f64();
        let train_cpu_s = cpu_s() - c0;
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
                "train_cpu_s": train_cpu_s,
                "recommend_ms": recommend_ms,
                "method": method,
            })
        );
    }
}

/// This process's user + system cpu time so far, in seconds.
fn cpu_s() -> f64 {
    // SAFETY: getrusage writes only into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}
