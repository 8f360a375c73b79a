//! Task templates (SPEC §4): the minijinja expressions in a job's `command`,
//! `inputs`, `outputs`, `env`, `features` and `workdir`, over the variables
//! `item`, `index` and `run_id`.
//!
//! A job is compiled once into [`JobTemplates`] and rendered for every task the
//! broker dispatches, so rendering is the hot path: strings without template
//! syntax are cloned, never parsed or rendered, and a template is looked up
//! by a precomputed name. This module must not expand a job into all of its
//! tasks; it renders one task at a time. Rendering returns errors, it never
//! panics, whatever the job holds (a `JobDef` may come over the network
//! without having been validated).
//!
//! Every render has a budget (`budget`), because the broker renders on its
//! core task and one template must not stall it for every user. The same
//! environment and budget serve `validate`, `submit` and the core, so a
//! template that exceeds its budget fails the same way everywhere.

mod budget;
mod cost;

use std::collections::HashSet;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::workflow::{Item, Items, JobDef};
use budget::{describe, is_over_budget, Budget};
pub use budget::{TEMPLATE_BUDGET_HINT, TEMPLATE_FUEL_MAX, TEMPLATE_OUTPUT_BYTES_MAX};
pub use cost::{is_cheap, CHEAP_TEMPLATE_BYTES_MAX};

/// The variables a task template may use.
pub const TEMPLATE_VARS: [&str; 3] = ["item", "index", "run_id"];

/// Whether `text` holds template syntax; anything else is used as written.
/// `{#` counts too, so a comment is stripped exactly as minijinja would.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// One templated string slot of a job.
#[derive(Debug)]
enum Part {
    /// No template syntax: used verbatim.
    Literal(String),
    /// Compiled into the environment under `name`; `field` says where it came
    /// from (`command[2]`, `env.A`) for error messages.
    Template { name: String, field: String },
}

/// A templated string that failed to render: its field and minijinja's error.
struct Failure<'a> {
    field: &'a str,
    err: minijinja::Error,
}

/// A template problem found while checking a job: the field it is in
/// (`command[0]`, `env.A`, `workdir`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateIssue {
    pub field: String,
    pub message: String,
    /// How to fix it, when there is more to say than the message.
    pub hint: Option<String>,
}

/// The compiled templates of one job. Build once per job with
/// [`JobTemplates::compile`] and share (it is `Send + Sync`, so an `Arc`
/// serves every dispatching thread).
pub struct JobTemplates {
    env: Environment<'static>,
    job: String,
    command: Vec<Part>,
    inputs: Vec<Part>,
    outputs: Vec<Part>,
    env_vars: Vec<(String, Part)>,
    features: Vec<(String, Part)>,
    workdir: Option<Part>,
    /// Some template is not [`is_cheap`]: the broker renders this job's
    /// tasks off its core task.
    costly: bool,
}

impl std::fmt::Debug for JobTemplates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobTemplates")
            .field("job", &self.job)
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

/// The environment every task template is compiled in; validation uses the
/// same one so that what passes `validate` renders the same in the broker.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // A misspelt variable must fail loudly, not become an empty argument.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // argv and paths are not HTML; never escape, whatever a name ends with.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // We compose error messages ourselves; debug info only costs memory.
    env.set_debug(false);
    // YAML and `Item`'s Display spell booleans `true`/`false`; Jinja's
    // Python heritage would print `True`, which no command line expects.
    env.set_formatter(|out, state, value| {
        if value.kind() == ValueKind::Bool {
            Ok(out.write_str(if value.is_true() { "true" } else { "false" })?)
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    // A template is user input rendered on the broker's core task.
    env.set_fuel(Some(TEMPLATE_FUEL_MAX));
    env.add_filter("join", budget::bounded_join);
    // An argument ending in a newline keeps it, as the user wrote it.
    if let Ok(syntax) = SyntaxConfig::builder().keep_trailing_newline(true).build() {
        env.set_syntax(syntax);
    }
    env
}

/// The minijinja value of a `foreach` item: numbers stay numbers so that
/// `{{ item + 1 }}` works.
fn item_value(item: &Item) -> Value {
    match item {
        Item::Str(s) => Value::from(s.as_str()),
        Item::Int(i) => Value::from(*i),
        Item::Float(x) => Value::from(*x),
        Item::Bool(b) => Value::from(*b),
    }
}

/// The item of task `index`, checked against the task count (unlike
/// [`Items::get`], which trusts its caller): `Ok(None)` for `Items::One`.
pub(crate) fn item_at(items: &Items, index: u64) -> Result<Option<Item>, String> {
    let count = items.count_saturating();
    if index >= count {
        return Err(format!(
            "task index {index} is out of range ({count} tasks)"
        ));
    }
    Ok(match items {
        Items::One => None,
        Items::List(v) => usize::try_from(index).ok().and_then(|i| v.get(i)).cloned(),
        // In range because index < count = end - start + 1.
        Items::Range { start, .. } => i64::try_from(i128::from(*start) + i128::from(index))
            .ok()
            .map(Item::Int),
    })
}

/// The render context of one task.
fn context(item: Option<&Item>, index: u64, run_id: u64) -> Value {
    match item {
        Some(item) => {
            minijinja::context! { item => item_value(item), index => index, run_id => run_id }
        }
        // No foreach/range: `item` stays undefined, so strict mode reports its use.
        None => minijinja::context! { index => index, run_id => run_id },
    }
}

impl JobTemplates {
    /// Compiles every templated string of `job`; the error names the job, the
    /// field and the minijinja message of the first template that fails.
    pub fn compile(job: &JobDef) -> Result<JobTemplates, String> {
        let (templates, issues) = Self::compile_all(job);
        match issues.into_iter().next() {
            Some(issue) => Err(format!(
                "job \"{}\" {}: bad template: {}",
                job.name, issue.field, issue.message
            )),
            None => Ok(templates),
        }
    }

    /// Compiles what compiles and reports the rest; a failed template renders
    /// as an error.
    fn compile_all(job: &JobDef) -> (JobTemplates, Vec<TemplateIssue>) {
        let mut b = Builder {
            env: environment(),
            issues: Vec::new(),
            next_id: 0,
            costly: false,
        };
        let command = job
            .command
            .iter()
            .enumerate()
            .map(|(i, s)| b.part(format!("command[{i}]"), s))
            .collect();
        let inputs = job
            .inputs
            .iter()
            .enumerate()
            .map(|(i, s)| b.part(format!("inputs[{i}]"), s))
            .collect();
        let outputs = job
            .outputs
            .iter()
            .enumerate()
            .map(|(i, s)| b.part(format!("outputs[{i}]"), s))
            .collect();
        let env_vars = job
            .env
            .iter()
            .map(|(k, v)| (k.clone(), b.part(format!("env.{k}"), v)))
            .collect();
        let features = job
            .features
            .iter()
            .map(|(k, v)| (k.clone(), b.part(format!("features.{k}"), v)))
            .collect();
        let workdir = job
            .workdir
            .as_ref()
            .map(|w| b.part("workdir".to_string(), w));
        let templates = JobTemplates {
            env: b.env,
            job: job.name.clone(),
            command,
            inputs,
            outputs,
            env_vars,
            features,
            workdir,
            costly: b.costly,
        };
        (templates, b.issues)
    }

    /// Whether some template of the job may cost more than the broker's core
    /// should spend ([`is_cheap`]): its tasks render off the core.
    pub fn is_costly(&self) -> bool {
        self.costly
    }

    /// The context of task `index`, or why there is none.
    fn task_context(&self, job: &JobDef, index: u64, run_id: u64) -> Result<Value, String> {
        let item = item_at(&job.items, index).map_err(|e| format!("job \"{}\": {e}", self.job))?;
        Ok(context(item.as_ref(), index, run_id))
    }

    /// Renders one string within `budget`.
    fn try_part<'a>(
        &'a self,
        part: &'a Part,
        ctx: &Value,
        budget: &mut Budget,
    ) -> Result<String, Failure<'a>> {
        match part {
            Part::Literal(s) => Ok(s.clone()),
            Part::Template { name, field } => self
                .env
                .get_template(name)
                .and_then(|t| budget.render(&t, ctx.clone()))
                .map_err(|err| Failure { field, err }),
        }
    }

    /// Renders a list of one task within one budget.
    fn try_list<'a>(&'a self, parts: &'a [Part], ctx: &Value) -> Result<Vec<String>, Failure<'a>> {
        let mut budget = Budget::new();
        parts
            .iter()
            .map(|p| self.try_part(p, ctx, &mut budget))
            .collect()
    }

    /// Renders the values of `KEY: template` pairs of one task within one budget.
    fn try_pairs<'a>(
        &'a self,
        pairs: &'a [(String, Part)],
        ctx: &Value,
    ) -> Result<Vec<(String, String)>, Failure<'a>> {
        let mut budget = Budget::new();
        pairs
            .iter()
            .map(|(k, p)| Ok((k.clone(), self.try_part(p, ctx, &mut budget)?)))
            .collect()
    }

    /// `job "J" FIELD: what went wrong`.
    fn message(&self, f: Failure<'_>) -> String {
        format!("job \"{}\" {}: {}", self.job, f.field, describe(&f.err))
    }

    fn render_list(&self, parts: &[Part], ctx: &Value) -> Result<Vec<String>, String> {
        self.try_list(parts, ctx).map_err(|f| self.message(f))
    }

    fn render_pairs(
        &self,
        pairs: &[(String, Part)],
        ctx: &Value,
    ) -> Result<Vec<(String, String)>, String> {
        self.try_pairs(pairs, ctx).map_err(|f| self.message(f))
    }

    /// Every list of task `index` rendered as the broker does, each within its
    /// budget: the first failure.
    fn try_task(&self, ctx: &Value) -> Result<(), Failure<'_>> {
        for list in [&self.command, &self.inputs, &self.outputs] {
            self.try_list(list, ctx)?;
        }
        for pairs in [&self.env_vars, &self.features] {
            self.try_pairs(pairs, ctx)?;
        }
        if let Some(part) = &self.workdir {
            self.try_part(part, ctx, &mut Budget::new())?;
        }
        Ok(())
    }

    /// argv of task `index` (0-based) of this job in run `run_id`.
    pub fn argv(&self, job: &JobDef, index: u64, run_id: u64) -> Result<Vec<String>, String> {
        if self.command.iter().all(|p| matches!(p, Part::Literal(_))) {
            // Still check the index so a bad one fails the same way everywhere.
            item_at(&job.items, index).map_err(|e| format!("job \"{}\": {e}", self.job))?;
            return self.render_list(&self.command, &Value::UNDEFINED);
        }
        let ctx = self.task_context(job, index, run_id)?;
        self.render_list(&self.command, &ctx)
    }

    /// The declared inputs of task `index`.
    pub fn inputs(&self, job: &JobDef, index: u64, run_id: u64) -> Result<Vec<String>, String> {
        let ctx = self.task_context(job, index, run_id)?;
        self.render_list(&self.inputs, &ctx)
    }

    /// The declared outputs of task `index`.
    pub fn outputs(&self, job: &JobDef, index: u64, run_id: u64) -> Result<Vec<String>, String> {
        let ctx = self.task_context(job, index, run_id)?;
        self.render_list(&self.outputs, &ctx)
    }

    /// The extra environment of task `index`, in the order written.
    pub fn env(
        &self,
        job: &JobDef,
        index: u64,
        run_id: u64,
    ) -> Result<Vec<(String, String)>, String> {
        let ctx = self.task_context(job, index, run_id)?;
        self.render_pairs(&self.env_vars, &ctx)
    }

    /// The features of task `index` stored for the advisors.
    pub fn features(
        &self,
        job: &JobDef,
        index: u64,
        run_id: u64,
    ) -> Result<Vec<(String, String)>, String> {
        let ctx = self.task_context(job, index, run_id)?;
        self.render_pairs(&self.features, &ctx)
    }

    /// The working directory of task `index`, `None` when the job sets none.
    pub fn workdir(&self, job: &JobDef, index: u64, run_id: u64) -> Result<Option<String>, String> {
        match &self.workdir {
            None => Ok(None),
            Some(part) => {
                let ctx = self.task_context(job, index, run_id)?;
                self.try_part(part, &ctx, &mut Budget::new())
                    .map(Some)
                    .map_err(|f| self.message(f))
            }
        }
    }

    /// Every template of the job, for checks: (field, compiled name).
    fn templates(&self) -> impl Iterator<Item = (&str, &str)> {
        let lists = self.command.iter().chain(&self.inputs).chain(&self.outputs);
        let pairs = self.env_vars.iter().chain(&self.features).map(|(_, p)| p);
        lists
            .chain(pairs)
            .chain(self.workdir.as_ref())
            .filter_map(|p| match p {
                Part::Literal(_) => None,
                Part::Template { name, field } => Some((field.as_str(), name.as_str())),
            })
    }
}

struct Builder {
    env: Environment<'static>,
    issues: Vec<TemplateIssue>,
    next_id: usize,
    costly: bool,
}

impl Builder {
    fn part(&mut self, field: String, text: &str) -> Part {
        if !is_template(text) {
            return Part::Literal(text.to_string());
        }
        // Internal names: field names can repeat in a JobDef that did not come
        // from YAML (two `env` entries with one key), ids cannot.
        let name = format!("t{}", self.next_id);
        self.next_id += 1;
        self.costly |= !is_cheap(text);
        if let Err(e) = self.env.add_template_owned(name.clone(), text.to_string()) {
            self.issues.push(TemplateIssue {
                field: field.clone(),
                message: describe(&e),
                hint: None,
            });
        }
        Part::Template { name, field }
    }
}

/// Checks every template of `job` (SPEC §4, rejected at submit): it must
/// compile, use only `item`, `index`, `run_id` (and `item` only when the job
/// has `foreach`/`range`), and render for the first and the last task with
/// `run_id` 0. `render` is false when the job's items are already known to
/// be broken, so only compilation and names are checked.
pub fn check_job_templates(job: &JobDef, render: bool) -> Vec<TemplateIssue> {
    let (templates, compile_issues) = JobTemplates::compile_all(job);
    let bad = |m: String| format!("bad template in job \"{}\": {m}", job.name);
    let mut issues: Vec<TemplateIssue> = compile_issues
        .into_iter()
        .map(|i| TemplateIssue {
            field: i.field,
            message: bad(i.message),
            hint: i.hint,
        })
        .collect();
    let globals: HashSet<&str> = templates.env.globals().map(|(k, _)| k).collect();
    let count = job.items.count_saturating();
    let mut tasks = Vec::new();
    if render && count > 0 {
        tasks.push(0);
        if count > 1 {
            tasks.push(count - 1);
        }
    }
    for (field, name) in templates.templates() {
        let Ok(tmpl) = templates.env.get_template(name) else {
            continue; // failed to compile: already reported
        };
        let names = name_issues(job, field, &tmpl, &globals);
        if !names.is_empty() {
            issues.extend(names);
            continue;
        }
        for &index in &tasks {
            let item = match item_at(&job.items, index) {
                Ok(item) => item,
                Err(_) => break,
            };
            let ctx = context(item.as_ref(), index, 0);
            if let Err(e) = Budget::new().render(&tmpl, ctx) {
                let at = task_label(index, item.as_ref());
                issues.push(TemplateIssue {
                    field: field.to_string(),
                    message: bad(format!("{} for {at}", describe(&e))),
                    hint: is_over_budget(&e).then(|| TEMPLATE_BUDGET_HINT.to_string()),
                });
                break;
            }
        }
    }
    if issues.is_empty() {
        issues.extend(check_whole_tasks(&templates, job, &tasks));
    }
    issues
}

/// The names `tmpl` (in `field` of `job`) uses that no task defines: `item`
/// in a job without items, anything but `item`, `index`, `run_id` and the
/// environment's globals.
fn name_issues(
    job: &JobDef,
    field: &str,
    tmpl: &minijinja::Template<'_, '_>,
    globals: &HashSet<&str>,
) -> Vec<TemplateIssue> {
    let mut issues = Vec::new();
    let used = tmpl.undeclared_variables(false);
    if matches!(job.items, Items::One) && used.contains("item") {
        issues.push(TemplateIssue {
            field: field.to_string(),
            message: format!(
                "job \"{}\" has no foreach or range, so {{{{ item }}}} is undefined",
                job.name
            ),
            hint: None,
        });
    }
    let mut unknown: Vec<&String> = used
        .iter()
        .filter(|v| !TEMPLATE_VARS.contains(&v.as_str()) && !globals.contains(v.as_str()))
        .collect();
    unknown.sort();
    if !unknown.is_empty() {
        let list = unknown
            .iter()
            .map(|v| format!("\"{v}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let noun = if unknown.len() == 1 {
            "variable"
        } else {
            "variables"
        };
        issues.push(TemplateIssue {
            field: field.to_string(),
            message: format!(
                "bad template in job \"{}\": undefined {noun} {list} \
                 (templates know item, index and run_id)",
                job.name
            ),
            hint: None,
        });
    }
    issues
}

/// `task 3 (item ssp1)`, or `task 3` for a job without items.
fn task_label(index: u64, item: Option<&Item>) -> String {
    match item {
        Some(item) => format!("task {index} (item {item})"),
        None => format!("task {index}"),
    }
}

/// Each template renders within its budget on its own; the lists of a task
/// (its argv, its env, ...) must also fit one budget together.
fn check_whole_tasks(
    templates: &JobTemplates,
    job: &JobDef,
    tasks: &[u64],
) -> Option<TemplateIssue> {
    for &index in tasks {
        let item = item_at(&job.items, index).ok()?;
        let ctx = context(item.as_ref(), index, 0);
        if let Err(f) = templates.try_task(&ctx) {
            let at = task_label(index, item.as_ref());
            return Some(TemplateIssue {
                field: f.field.to_string(),
                message: format!(
                    "bad template in job \"{}\": {} for {at}",
                    job.name,
                    describe(&f.err)
                ),
                hint: is_over_budget(&f.err).then(|| TEMPLATE_BUDGET_HINT.to_string()),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests;
