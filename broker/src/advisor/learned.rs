//! The LearnedAdvisor: per task type, a model of peak memory and of run time
//! from the task's features and target, scored by k-fold cross-validation,
//! with upper bounds of a stated coverage (conformal, from the held-out
//! residuals) and a confidence from the CV error and from how far a query
//! lies from the training data. It falls back to the ResourceAdvisor when
//! there are fewer than `runs_min` runs or `attempts_min` measured attempts,
//! or when the confidence is under `confidence_min`, and says so in `method`.
//!
//! Pure: samples in, a `TaskAdvisor` out, then queries in, `Advice` out. It
//! must not read the store or keep state between trainings.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use super::advice::{memory_text, round2, walltime_text, Advice, AdvisedResources, CvScores};
use super::conformal::{calibrate, r2, Bound};
use super::features::FeatureSpace;
use super::model::{self, Fitted, ModelParams, ModelType};
use super::quantile::{self, AdviceError, QuantileConfig, RUNS_MIN};
use super::sample::{Features, Sample};

/// How a LearnedAdvisor is trained and when it steps back.
#[derive(Debug, Clone)]
pub struct LearnedConfig {
    pub model_type: ModelType,
    pub params: ModelParams,
    pub folds: usize,
    /// The coverage the upper bounds state (0.95: 95% of attempts under it).
    pub coverage: f64,
    pub runs_min: usize,
    pub attempts_min: usize,
    pub confidence_min: f64,
    pub seed: u64,
    pub quantile: QuantileConfig,
}

impl LearnedConfig {
    pub fn new(model_type: ModelType) -> LearnedConfig {
        LearnedConfig {
            model_type,
            params: model_type.default_params(),
            folds: 5,
            coverage: 0.95,
            runs_min: RUNS_MIN,
            attempts_min: 20,
            confidence_min: 0.5,
            seed: 0x5ca1ab1e,
            quantile: QuantileConfig::default(),
        }
    }
}

/// One predicted quantity: the model on all rows and its calibrated bound.
struct Target {
    model: Ensemble,
    bound: Bound,
    r2: f64,
    coverage: f64,
    over_allocation: f64,
}

struct Trained {
    space: FeatureSpace,
    memory: Target,
    run_time: Target,
    folds: usize,
}

/// A task type's advisors, trained once and asked many times.
pub struct TaskAdvisor {
    task: String,
    cfg: LearnedConfig,
    /// The ResourceAdvisor's answer per target (`None`: all targets).
    fallback: BTreeMap<Option<String>, Advice>,
    /// The model, or why there is none.
    learned: Result<Trained, String>,
}

/// Trains the advisors of `task` from every sample (other tasks are skipped).
pub fn train(
    task: &str,
    samples: &[Sample],
    cfg: &LearnedConfig,
) -> Result<TaskAdvisor, AdviceError> {
    let mine = quantile::select(samples, task, None)?;
    let mut fallback = BTreeMap::new();
    fallback.insert(None, quantile::recommend(task, &mine, &cfg.quantile));
    let targets: Vec<&str> = mine.iter().map(|s| s.target.as_str()).collect();
    for t in targets {
        if let Entry::Vacant(slot) = fallback.entry(Some(t.to_string())) {
            let on = quantile::select(samples, task, Some(t))?;
            slot.insert(quantile::recommend(task, &on, &cfg.quantile));
        }
    }
    Ok(TaskAdvisor {
        task: task.into(),
        learned: fit_task(&mine, cfg),
        cfg: cfg.clone(),
        fallback,
    })
}

/// The model of one task's samples, or why it would be too thin.
fn fit_task(samples: &[&Sample], cfg: &LearnedConfig) -> Result<Trained, String> {
    let runs = quantile::runs_of(samples);
    if runs < cfg.runs_min {
        return Err(format!("{runs} runs < {}", cfg.runs_min));
    }
    let ok: Vec<&Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.memory_sample().is_some() && s.run_time_us().is_some())
        .collect();
    let needed = cfg.attempts_min.max(2 * cfg.folds);
    if ok.len() < needed {
        return Err(format!("{} measured attempts < {needed}", ok.len()));
    }
    let space = FeatureSpace::fit(ok.iter().map(|s| (s.target.as_str(), &s.features)));
    let rows: Vec<Vec<f64>> = ok
        .iter()
        .map(|s| space.row(&s.target, &s.features))
        .collect();
    let kills: Vec<(Vec<f64>, f64)> = samples
        .iter()
        .filter_map(|s| {
            Some((
                space.row(&s.target, &s.features),
                s.memory_lower_bound()? as f64,
            ))
        })
        .collect();
    let mem: Vec<f64> = ok
        .iter()
        .map(|s| s.memory_sample().unwrap_or(0) as f64)
        .collect();
    let time: Vec<f64> = ok
        .iter()
        .map(|s| s.run_time_us().unwrap_or(0) as f64 / 1e6)
        .collect();
    let folds = cfg.folds.clamp(2, ok.len());
    Ok(Trained {
        memory: fit_target(&rows, &mem, &kills, folds, cfg)?,
        run_time: fit_target(&rows, &time, &[], folds, cfg)?,
        space,
        folds,
    })
}

/// k-fold predictions for every row and the bound calibrated on them; the
/// fold models together are the predictor (CV+: no refit on all rows, so
/// the bound was measured on the very models that predict).
fn fit_target(
    rows: &[Vec<f64>],
    y: &[f64],
    lower: &[(Vec<f64>, f64)],
    folds: usize,
    cfg: &LearnedConfig,
) -> Result<Target, String> {
    let (held_out, models) = cross_val(rows, y, folds, cfg)?;
    let model = Ensemble(models);
    let pairs: Vec<(f64, f64)> = held_out.iter().copied().zip(y.iter().copied()).collect();
    let lower_pairs: Vec<(f64, f64)> = if lower.is_empty() {
        Vec::new()
    } else {
        let lx: Vec<Vec<f64>> = lower.iter().map(|(r, _)| r.clone()).collect();
        let preds = model.predict(&lx)?;
        preds
            .into_iter()
            .zip(lower.iter().map(|(_, b)| *b))
            .collect()
    };
    let c = calibrate(&pairs, &lower_pairs, cfg.coverage).ok_or("no held-out attempts")?;
    Ok(Target {
        model,
        bound: c.bound,
        r2: r2(&pairs),
        coverage: c.coverage,
        over_allocation: c.over_allocation,
    })
}

/// The fold models of a k-fold run; a prediction is their mean.
struct Ensemble(Vec<Fitted>);

impl Ensemble {
    fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<f64>, String> {
        let x = model::matrix(rows)?;
        let mut sum = vec![0.0; rows.len()];
        for m in &self.0 {
            for (s, p) in sum.iter_mut().zip(m.predict(&x)?) {
                *s += p;
            }
        }
        let n = self.0.len().max(1) as f64;
        Ok(sum.into_iter().map(|s| s / n).collect())
    }
}

/// Every row predicted by a model that did not see it (k folds, shuffled
/// with the config's seed), and the k models. Folds are fitted on as many
/// threads as there are cores.
fn cross_val(
    rows: &[Vec<f64>],
    y: &[f64],
    folds: usize,
    cfg: &LearnedConfig,
) -> Result<(Vec<f64>, Vec<Fitted>), String> {
    let fold_of = fold_assignment(rows.len(), folds, cfg.seed);
    let fit_fold = |k: usize| -> Result<(Vec<usize>, Vec<f64>, Fitted), String> {
        let (train, test): (Vec<usize>, Vec<usize>) =
            (0..rows.len()).partition(|&i| fold_of[i] != k);
        let pick = |idx: &[usize]| idx.iter().map(|&i| rows[i].clone()).collect::<Vec<_>>();
        let ty: Vec<f64> = train.iter().map(|&i| y[i]).collect();
        let x = model::matrix(&pick(&train))?;
        let m = model::fit(cfg.model_type, &cfg.params, &x, &ty, cfg.seed)?;
        let p = m.predict(&model::matrix(&pick(&test))?)?;
        Ok((test, p, m))
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut results = Vec::with_capacity(folds);
    let ks: Vec<usize> = (0..folds).collect();
    for chunk in ks.chunks(threads.max(1)) {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|&k| s.spawn(move || fit_fold(k)))
                .collect();
            for h in handles {
                results.push(
                    h.join()
                        .unwrap_or_else(|_| Err("a fold's training panicked".into())),
                );
            }
        });
    }
    let mut out = vec![0.0; rows.len()];
    let mut models = Vec::with_capacity(folds);
    for r in results {
        let (test, preds, m) = r?;
        for (i, p) in test.into_iter().zip(preds) {
            out[i] = p;
        }
        models.push(m);
    }
    Ok((out, models))
}

/// Row i's fold: a seeded shuffle dealt round-robin, so folds differ in size
/// by at most one.
fn fold_assignment(n: usize, folds: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed;
    for i in (1..n).rev() {
        state = splitmix(state);
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let mut fold_of = vec![0; n];
    for (pos, &i) in order.iter().enumerate() {
        fold_of[i] = pos % folds.max(1);
    }
    fold_of
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl TaskAdvisor {
    /// The advice for one task of this type on `target` with `features`.
    pub fn recommend(
        &self,
        target: Option<&str>,
        features: &Features,
    ) -> Result<Advice, AdviceError> {
        let base = self.fallback_for(target)?;
        let trained = match &self.learned {
            Ok(t) => t,
            Err(reason) => return Ok(fell_back(base, reason)),
        };
        let on = target
            .map(str::to_string)
            .unwrap_or_else(|| most_common_target(&self.fallback));
        let novelty = trained.space.novelty(&on, features);
        // Memory's held-out R²: memory is what kills a task. The run-time
        // bound keeps its stated coverage whatever its R² (it is only wider
        // when run time is noisy, as short tasks on a loaded host are).
        let cv = trained.memory.r2.clamp(0.0, 1.0);
        let confidence =
            cv * 0.5f64.powi(novelty.unseen.len() as i32) * (-novelty.out_of_range).exp();
        if confidence < self.cfg.confidence_min {
            let mut why = format!(
                "confidence {confidence:.2} < {:.2}",
                self.cfg.confidence_min
            );
            if !novelty.unseen.is_empty() {
                why.push_str(&format!("; never seen: {}", novelty.unseen.join(", ")));
            }
            let mut a = fell_back(base, &why);
            a.confidence = round2(confidence.min(a.confidence));
            return Ok(a);
        }
        let x = [trained.space.row(&on, features)];
        let predict = |t: &Target| t.model.predict(&x).ok().and_then(|p| p.first().copied());
        let (Some(mem), Some(time)) = (predict(&trained.memory), predict(&trained.run_time)) else {
            return Ok(fell_back(base, "the model could not predict"));
        };
        Ok(self.learned_advice(base, trained, mem, time, confidence))
    }

    fn learned_advice(
        &self,
        base: &Advice,
        t: &Trained,
        mem: f64,
        time: f64,
        confidence: f64,
    ) -> Advice {
        let memory = t.memory.bound.apply(mem).max(1.0).ceil() as u64;
        let run_time = t.run_time.bound.apply(time).max(0.0);
        let pct = (self.cfg.coverage * 100.0).round() as u32;
        let kind = self.cfg.model_type.as_str();
        let method = format!("{kind} ({}-fold CV, P{pct} conformal upper bound)", t.folds);
        let mut a = base.clone();
        for r in a.resources.values_mut() {
            *r = AdvisedResources {
                cpus: r.cpus,
                memory: memory_text(memory),
                walltime: walltime_text(run_time),
            };
        }
        a.confidence = round2(confidence);
        a.model_type = kind.into();
        a.method = method.clone();
        a.evidence.method = method;
        a.evidence.percentile = pct;
        a.evidence.memory_bytes = memory;
        a.evidence.run_time_s = run_time;
        a.evidence.cv = self.cv();
        a
    }

    fn fallback_for(&self, target: Option<&str>) -> Result<&Advice, AdviceError> {
        let key = target.map(str::to_string);
        self.fallback.get(&key).ok_or_else(|| {
            let known: Vec<&str> = self.fallback.keys().flatten().map(String::as_str).collect();
            AdviceError::NoTelemetryOnTarget {
                task: self.task.clone(),
                target: target.unwrap_or_default().into(),
                known: known.join(", "),
            }
        })
    }

    /// The cross-validated scores of the model, when there is one.
    pub fn cv(&self) -> Option<CvScores> {
        let t = self.learned.as_ref().ok()?;
        Some(CvScores {
            folds: t.folds,
            memory_r2: round3(t.memory.r2),
            run_time_r2: round3(t.run_time.r2),
            memory_coverage: round3(t.memory.coverage),
            memory_over_allocation: round3(t.memory.over_allocation),
            bound: t.memory.bound.name().into(),
        })
    }

    /// Sets the model aside (its recent coverage fell short): advice comes
    /// from the ResourceAdvisor and says why.
    pub fn demote(&mut self, reason: String) {
        if self.learned.is_ok() {
            self.learned = Err(reason);
        }
    }

    /// The ResourceAdvisor's memory (bytes) and run-time (s) bounds over
    /// all targets: what the plain percentile would have asked.
    pub fn percentile(&self) -> Option<(u64, f64)> {
        let e = &self.fallback.get(&None)?.evidence;
        Some((e.memory_bytes, e.run_time_s))
    }

    /// The coverage its upper bounds state (0.95).
    pub fn coverage_target(&self) -> f64 {
        self.cfg.coverage
    }

    /// Why there is no model, when there is none.
    pub fn thin_reason(&self) -> Option<&str> {
        self.learned.as_ref().err().map(String::as_str)
    }
}

fn fell_back(base: &Advice, reason: &str) -> Advice {
    let mut a = base.clone();
    a.method = format!("quantile (fallback: {reason})");
    a.evidence.method = a.method.clone();
    a
}

/// The target with the most attempts: a query naming none is asked there.
fn most_common_target(fallback: &BTreeMap<Option<String>, Advice>) -> String {
    fallback
        .iter()
        .filter_map(|(k, a)| Some((k.as_ref()?, a.evidence.attempts_analyzed)))
        .max_by_key(|(_, n)| *n)
        .map(|(k, _)| k.clone())
        .unwrap_or_default()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
#[path = "learned_tests.rs"]
mod tests;
