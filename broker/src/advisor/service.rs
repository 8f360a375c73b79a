//! The advisors inside the broker: `advise` and `tune` requests answered on
//! a blocking thread from samples read beside the store's writer, with the
//! trained advisors cached per task type and model type and retrained when
//! enough new attempts arrived; the parameters `tune` found are kept in
//! `<state>/advisor-params.json` and used by every later training.
//!
//! It must not be called on the core's task or the store's writer thread
//! (training takes seconds), and it never writes the store.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use scalable_common::protocol::{AdviseRequest, TuneRequest};

use super::advice::Advice;
use super::coverage;
use super::history;
use super::learned::{train, LearnedConfig, TaskAdvisor};
use super::model::{ModelParams, ModelType};
use super::sample::{features_of, Sample};
use super::tune::{tune, TuneReport};

/// The model `advise` uses when none is named.
pub const DEFAULT_MODEL: ModelType = ModelType::GradientBoosting;

/// Retrain when a task type's attempts grew by this share since its training.
const RETRAIN_GROWTH: f64 = 0.10;

/// Folds `tune` uses at most (and at least 2).
pub const CV_FOLDS_MAX: u32 = 20;

struct Cached {
    attempts: usize,
    advisor: Arc<TaskAdvisor>,
}

/// Tuned parameters per task type and model type, as stored.
type Tuned = BTreeMap<String, BTreeMap<ModelType, ModelParams>>;

pub struct AdvisorService {
    db: PathBuf,
    params_file: PathBuf,
    cache: Mutex<HashMap<(String, ModelType), Cached>>,
}

impl AdvisorService {
    pub fn new(state_dir: &Path) -> AdvisorService {
        AdvisorService {
            db: state_dir.join("broker.db"),
            params_file: state_dir.join("advisor-params.json"),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `scalable advise`; blocking.
    pub fn advise(&self, req: &AdviseRequest) -> Result<Advice, String> {
        let model_type = model_type_of(req.model_type.as_deref())?;
        let samples = self.samples()?;
        let mine = samples.iter().filter(|s| s.task_type == req.task).count();
        let advisor = self.advisor(&req.task, model_type, &samples, mine)?;
        advisor
            .recommend(req.target.as_deref(), &features_of(&req.features))
            .map_err(|e| e.to_string())
    }

    /// `scalable tune`; blocking. The best parameters are stored and the
    /// cached advisor of that model dropped.
    pub fn tune(&self, req: &TuneRequest) -> Result<TuneReport, String> {
        let model_type = model_type_of(req.model_type.as_deref())?;
        let folds = req.cv_folds.clamp(2, CV_FOLDS_MAX) as usize;
        let samples = self.samples()?;
        let report = tune(&req.task, &samples, model_type, folds).map_err(|e| e.to_string())?;
        let mut tuned = self.tuned();
        tuned
            .entry(req.task.clone())
            .or_default()
            .insert(model_type, report.best_params.clone());
        let text = serde_json::to_string_pretty(&tuned).map_err(|e| e.to_string())?;
        scalable_common::access::write_private(&self.params_file, text.as_bytes()).map_err(
            |e| {
                format!(
                    "cannot store the tuned parameters in {}: {e}",
                    self.params_file.display()
                )
            },
        )?;
        self.lock().remove(&(req.task.clone(), model_type));
        Ok(report)
    }

    /// Every sample in the store (blocking: a read of up to `SAMPLES_MAX`
    /// attempts and their runs' definitions).
    pub(crate) fn samples(&self) -> Result<Vec<Sample>, String> {
        if !self.db.exists() {
            return Ok(Vec::new());
        }
        history::load(&history::open(&self.db)?)
    }

    /// The cached advisor, or a new one when none is cached or enough new
    /// attempts arrived since.
    fn advisor(
        &self,
        task: &str,
        m: ModelType,
        samples: &[Sample],
        mine: usize,
    ) -> Result<Arc<TaskAdvisor>, String> {
        let key = (task.to_string(), m);
        if let Some(c) = self.lock().get(&key) {
            if (mine as f64) < c.attempts as f64 * (1.0 + RETRAIN_GROWTH) {
                return Ok(c.advisor.clone());
            }
        }
        let advisor = Arc::new(self.train(task, m, samples)?);
        self.lock().insert(
            key,
            Cached {
                attempts: mine,
                advisor: advisor.clone(),
            },
        );
        Ok(advisor)
    }

    /// A task type's advisors trained with its tuned parameters, set aside
    /// for the ResourceAdvisor when the attempts it sized lately fell short
    /// of its coverage (`coverage`). Blocking: seconds.
    pub(crate) fn train(
        &self,
        task: &str,
        m: ModelType,
        samples: &[Sample],
    ) -> Result<TaskAdvisor, String> {
        let mut cfg = LearnedConfig::new(m);
        if let Some(p) = self.tuned().get(task).and_then(|t| t.get(&m)) {
            cfg.params = p.clone();
        }
        let mut advisor = train(task, samples, &cfg).map_err(|e| e.to_string())?;
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.task_type == task).collect();
        if let Some(why) = coverage::shortfall(&mine, advisor.coverage_target()) {
            advisor.demote(why);
        }
        Ok(advisor)
    }

    /// The store this service reads.
    pub(crate) fn db(&self) -> &Path {
        &self.db
    }

    /// The stored tuned parameters; an unreadable file counts as none (the
    /// defaults work), with a warning.
    fn tuned(&self) -> Tuned {
        let Ok(text) = std::fs::read_to_string(&self.params_file) else {
            return Tuned::new();
        };
        serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(file = %self.params_file.display(), "ignoring unreadable tuned parameters: {e}");
            Tuned::new()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, ModelType), Cached>> {
        // A panic while holding it leaves only a cache behind: keep using it.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn model_type_of(name: Option<&str>) -> Result<ModelType, String> {
    name.map_or(Ok(DEFAULT_MODEL), str::parse)
}

#[cfg(test)]
mod tests {
    use super::super::sample::{Feature, Features};
    use super::super::synthetic::Law;
    use super::*;

    /// Issue 17: an advisor whose recent advised attempts fell short of
    /// its coverage steps back to the ResourceAdvisor and says why.
    #[test]
    fn an_advisor_whose_recent_coverage_fell_short_steps_back() {
        let dir = tempfile::tempdir().unwrap();
        let service = AdvisorService::new(dir.path());
        let mut samples = Law::default().samples("sim", 5, 40, 7);
        let query = Features::from([
            ("size_mb".to_string(), Feature::Number(100.0)),
            ("kind".to_string(), Feature::Text("a".into())),
        ]);
        let trained = service.train("sim", DEFAULT_MODEL, &samples).unwrap();
        let fine = trained.recommend(None, &query).unwrap();
        assert_eq!(fine.model_type, "gradient_boosting", "{}", fine.method);
        // The newest 40 attempts it sized all outgrew what they asked for.
        for s in samples.iter_mut().rev().take(40) {
            s.advised_memory_bytes = Some(s.peak_memory_bytes.unwrap() / 2);
        }
        samples.reverse(); // newest first, as `history` reads them
        let demoted = service.train("sim", DEFAULT_MODEL, &samples).unwrap();
        let a = demoted.recommend(None, &query).unwrap();
        assert_eq!(
            a.method,
            "quantile (fallback: recent coverage 0.00 < 0.95 over the last 40 advised attempts)"
        );
    }
}
