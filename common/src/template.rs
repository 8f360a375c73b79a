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
//! Every render has a budget, because the broker renders on its core task
//! and one template must not stall it for every user: at most
//! [`TEMPLATE_FUEL_MAX`] minijinja instructions (nested loops) and at most
//! [`TEMPLATE_OUTPUT_BYTES_MAX`] bytes of output per templated string. The
//! same environment serves `validate`, `submit` and the core, so a template
//! that exceeds its budget fails the same way everywhere.

use std::collections::HashSet;
use std::io;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};

use crate::workflow::{Item, Items, JobDef};

/// The variables a task template may use.
pub const TEMPLATE_VARS: [&str; 3] = ["item", "index", "run_id"];

/// Instructions one render of one templated string may run. A plain
/// `{{ item }}` takes a handful, a loop a few per iteration; at this budget
/// the worst render costs the core a few milliseconds.
pub const TEMPLATE_FUEL_MAX: u64 = 100_000;

/// Bytes one render of one templated string may produce: well above what
/// an argument can be (Linux caps one argv string at 128 KiB), far below
/// the message cap.
pub const TEMPLATE_OUTPUT_BYTES_MAX: usize = 1 << 20;

/// The hint shown with a template that exceeds its budget.
pub const TEMPLATE_BUDGET_HINT: &str =
    "a task's template must stay small: move loops and long strings into the command it runs";

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
    // An argument ending in a newline keeps it, as the user wrote it.
    if let Ok(syntax) = SyntaxConfig::builder().keep_trailing_newline(true).build() {
        env.set_syntax(syntax);
    }
    env
}

/// `kind: detail` of a minijinja error, without its `(in name:line)` suffix,
/// since our template names are internal ids; a spent budget says which.
fn describe(err: &minijinja::Error) -> String {
    match (err.kind(), err.detail()) {
        (ErrorKind::OutOfFuel, _) => {
            format!("template exceeds its budget of {TEMPLATE_FUEL_MAX} steps")
        }
        (ErrorKind::WriteFailure, _) if is_over_budget(err) => {
            format!("template output exceeds {TEMPLATE_OUTPUT_BYTES_MAX} bytes")
        }
        (kind, Some(detail)) => format!("{kind}: {detail}"),
        (kind, None) => kind.to_string(),
    }
}

/// Whether a minijinja error is a spent budget (steps or output bytes).
fn is_over_budget(err: &minijinja::Error) -> bool {
    match err.kind() {
        ErrorKind::OutOfFuel => true,
        ErrorKind::WriteFailure => std::error::Error::source(err)
            .and_then(|e| e.downcast_ref::<io::Error>())
            .is_some_and(|e| e.get_ref().is_some_and(|inner| inner.is::<OutputFull>())),
        _ => false,
    }
}

/// The error [`BoundedOutput`] returns once the output budget is spent.
#[derive(Debug)]
struct OutputFull;

impl std::fmt::Display for OutputFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "output exceeds {TEMPLATE_OUTPUT_BYTES_MAX} bytes")
    }
}

impl std::error::Error for OutputFull {}

/// A render's output, refusing to grow past [`TEMPLATE_OUTPUT_BYTES_MAX`].
#[derive(Default)]
struct BoundedOutput(Vec<u8>);

impl io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.len() + buf.len() > TEMPLATE_OUTPUT_BYTES_MAX {
            return Err(io::Error::other(OutputFull));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Renders `tmpl` within both budgets.
fn render_bounded(
    tmpl: &minijinja::Template<'_, '_>,
    ctx: Value,
) -> Result<String, minijinja::Error> {
    let mut out = BoundedOutput::default();
    tmpl.render_captured_to(ctx, &mut out)?;
    // minijinja writes whole `str`s, so the bytes are UTF-8; lossy is only a guard.
    Ok(String::from_utf8(out.0)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
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
        };
        (templates, b.issues)
    }

    /// The context of task `index`, or why there is none.
    fn task_context(&self, job: &JobDef, index: u64, run_id: u64) -> Result<Value, String> {
        let item = item_at(&job.items, index).map_err(|e| format!("job \"{}\": {e}", self.job))?;
        Ok(context(item.as_ref(), index, run_id))
    }

    fn render_part(&self, part: &Part, ctx: &Value) -> Result<String, String> {
        match part {
            Part::Literal(s) => Ok(s.clone()),
            Part::Template { name, field } => self
                .env
                .get_template(name)
                .and_then(|t| render_bounded(&t, ctx.clone()))
                .map_err(|e| format!("job \"{}\" {field}: {}", self.job, describe(&e))),
        }
    }

    fn render_list(&self, parts: &[Part], ctx: &Value) -> Result<Vec<String>, String> {
        parts.iter().map(|p| self.render_part(p, ctx)).collect()
    }

    fn render_pairs(
        &self,
        pairs: &[(String, Part)],
        ctx: &Value,
    ) -> Result<Vec<(String, String)>, String> {
        pairs
            .iter()
            .map(|(k, p)| Ok((k.clone(), self.render_part(p, ctx)?)))
            .collect()
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
                self.render_part(part, &ctx).map(Some)
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
    let has_items = !matches!(job.items, Items::One);
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
        let mut unknown: Vec<String> = tmpl
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !TEMPLATE_VARS.contains(&v.as_str()) && !globals.contains(v.as_str()))
            .collect();
        unknown.sort();
        let mut bad_names = false;
        if !has_items && tmpl.undeclared_variables(false).contains("item") {
            issues.push(TemplateIssue {
                field: field.to_string(),
                message: format!(
                    "job \"{}\" has no foreach or range, so {{{{ item }}}} is undefined",
                    job.name
                ),
                hint: None,
            });
            bad_names = true;
        }
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
                message: bad(format!(
                    "undefined {noun} {list} (templates know item, index and run_id)"
                )),
                hint: None,
            });
            bad_names = true;
        }
        if bad_names {
            continue;
        }
        for &index in &tasks {
            let item = match item_at(&job.items, index) {
                Ok(item) => item,
                Err(_) => break,
            };
            let ctx = context(item.as_ref(), index, 0);
            if let Err(e) = render_bounded(&tmpl, ctx) {
                let at = match &item {
                    Some(item) => format!("task {index} (item {item})"),
                    None => format!("task {index}"),
                };
                issues.push(TemplateIssue {
                    field: field.to_string(),
                    message: bad(format!("{} for {at}", describe(&e))),
                    hint: is_over_budget(&e).then(|| TEMPLATE_BUDGET_HINT.to_string()),
                });
                break;
            }
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::quick_job;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn job_templates_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<JobTemplates>();
    }

    #[test]
    fn literal_strings_are_not_rendered() {
        let job = quick_job(
            "a",
            strings(&["echo", "{ not a template }", "}}"]),
            Items::One,
        );
        let t = JobTemplates::compile(&job).unwrap();
        assert_eq!(
            t.argv(&job, 0, 7).unwrap(),
            strings(&["echo", "{ not a template }", "}}"])
        );
        assert!(t.argv(&job, 1, 7).unwrap_err().contains("out of range"));
    }

    #[test]
    fn range_items_are_integers() {
        let job = quick_job(
            "r",
            strings(&["run", "{{ item + 1 }}", "{{ index }}-{{ run_id }}"]),
            Items::Range { start: 10, end: 20 },
        );
        let t = JobTemplates::compile(&job).unwrap();
        assert_eq!(t.argv(&job, 0, 3).unwrap(), strings(&["run", "11", "0-3"]));
        assert_eq!(
            t.argv(&job, 10, 3).unwrap(),
            strings(&["run", "21", "10-3"])
        );
        assert!(t.argv(&job, 11, 3).is_err());
    }

    #[test]
    fn list_items_keep_their_types() {
        let mut job = quick_job(
            "l",
            strings(&["{{ item }}"]),
            Items::List(vec![
                Item::Str("ssp1".into()),
                Item::Int(3),
                Item::Float(4.5),
                Item::Bool(true),
            ]),
        );
        job.env = vec![
            ("A".into(), "{{ item }}x".into()),
            ("B".into(), "plain".into()),
        ];
        job.features = vec![("size".into(), "{{ index * 2 }}".into())];
        job.workdir = Some("w/{{ item }}".into());
        job.inputs = vec!["in/{{ item }}.csv".into()];
        job.outputs = vec!["out/{{ item }}.nc\n".into()];
        let t = JobTemplates::compile(&job).unwrap();
        let all: Vec<String> = (0..4)
            .map(|i| t.argv(&job, i, 0).unwrap().remove(0))
            .collect();
        assert_eq!(all, strings(&["ssp1", "3", "4.5", "true"]));
        assert_eq!(
            t.env(&job, 1, 0).unwrap(),
            vec![
                ("A".to_string(), "3x".to_string()),
                ("B".to_string(), "plain".to_string())
            ]
        );
        assert_eq!(
            t.features(&job, 3, 0).unwrap(),
            vec![("size".to_string(), "6".to_string())]
        );
        assert_eq!(t.workdir(&job, 0, 0).unwrap().as_deref(), Some("w/ssp1"));
        assert_eq!(t.inputs(&job, 0, 0).unwrap(), strings(&["in/ssp1.csv"]));
        // The trailing newline is kept: the user wrote it.
        assert_eq!(t.outputs(&job, 0, 0).unwrap(), strings(&["out/ssp1.nc\n"]));
    }

    #[test]
    fn render_errors_name_job_and_field() {
        let job = quick_job("j", strings(&["x", "{{ nope }}"]), Items::One);
        let t = JobTemplates::compile(&job).unwrap();
        let err = t.argv(&job, 0, 0).unwrap_err();
        assert!(
            err.starts_with("job \"j\" command[1]: undefined value"),
            "{err}"
        );

        let job = quick_job("j", strings(&["{{ item "]), Items::One);
        let err = JobTemplates::compile(&job).unwrap_err();
        assert!(
            err.starts_with("job \"j\" command[0]: bad template: syntax error"),
            "{err}"
        );
    }

    #[test]
    fn hostile_items_do_not_panic() {
        // A JobDef from the network need not have been validated.
        let jobs = [
            Items::Range {
                start: i64::MIN,
                end: i64::MAX,
            },
            Items::Range { start: 5, end: 1 },
            Items::Range {
                start: i64::MAX - 1,
                end: i64::MAX,
            },
            Items::List(vec![]),
        ];
        for items in jobs {
            let job = quick_job("h", strings(&["{{ item }}"]), items);
            let t = JobTemplates::compile(&job).unwrap();
            for index in [0, 1, u64::MAX] {
                let _ = t.argv(&job, index, u64::MAX);
            }
            let _ = check_job_templates(&job, true);
        }
        let job = quick_job(
            "h",
            strings(&["{{ item }}"]),
            Items::Range {
                start: i64::MAX - 1,
                end: i64::MAX,
            },
        );
        let t = JobTemplates::compile(&job).unwrap();
        assert_eq!(t.argv(&job, 1, 0).unwrap(), vec![i64::MAX.to_string()]);
    }

    #[test]
    fn many_renders_stay_correct() {
        // Not a timed benchmark: 100k renders of a 3-element templated argv, the
        // broker's hot path, must all succeed and stay correct.
        let job = quick_job(
            "bench",
            strings(&["python", "sim.py", "--seed={{ item }}"]),
            Items::Range {
                start: 1,
                end: 100_000,
            },
        );
        let t = std::sync::Arc::new(JobTemplates::compile(&job).unwrap());
        let mut last = Vec::new();
        for index in 0..100_000 {
            last = t.argv(&job, index, 42).unwrap();
            if index == 4_999 {
                assert_eq!(last, strings(&["python", "sim.py", "--seed=5000"]));
            }
        }
        assert_eq!(last, strings(&["python", "sim.py", "--seed=100000"]));
    }

    #[test]
    fn checks_report_names_and_item_use() {
        let job = quick_job("one", strings(&["{{ item }}", "{{ index }}"]), Items::One);
        let issues = check_job_templates(&job, true);
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].field, "command[0]");
        assert_eq!(
            issues[0].message,
            "job \"one\" has no foreach or range, so {{ item }} is undefined"
        );

        let job = quick_job(
            "ok",
            strings(&[
                "{% for x in range(3) %}{{ x }}{{ loop.index }}{% endfor %}",
                "{% set y = item %}{{ y }}",
                "{{ item | upper }}",
            ]),
            Items::List(vec![Item::Str("a".into())]),
        );
        assert_eq!(check_job_templates(&job, true), vec![]);

        let job = quick_job("u", strings(&["{{ undefined_var }}"]), Items::One);
        let issues = check_job_templates(&job, true);
        assert_eq!(
            issues[0].message,
            "bad template in job \"u\": undefined variable \"undefined_var\" \
             (templates know item, index and run_id)"
        );

        // Fails only for the last item: 10 / (item - 5) with item 5.
        let job = quick_job(
            "last",
            strings(&["{{ 10 // (item - 5) }}"]),
            Items::Range { start: 1, end: 5 },
        );
        let issues = check_job_templates(&job, true);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(
            issues[0].message.ends_with("for task 4 (item 5)"),
            "{issues:?}"
        );
    }

    /// Regression (issue 12, defect 2): templates whose cost multiplies
    /// (nested loops, string repetition, joins, macro recursion) rendered
    /// unbounded on the broker's core task; each now fails within its budget.
    #[test]
    fn hostile_templates_fail_within_their_budget() {
        let shapes = [
            "{% for a in range(1000) %}{% for b in range(1000) %}{{ b }}{% endfor %}{% endfor %}",
            "{% for a in range(300) %}{% for b in range(300) %}{% for c in range(3) %}\
             {% endfor %}{% endfor %}{% endfor %}",
            "{{ 'x' * 2000000 }}",
            "{{ 'abc' * (item * 1000000) }}",
            "{{ range(100000) | join('xxxxxxxxxx') }}",
            "{% for a in range(100) %}{{ range(100000) | join(',') }}{% endfor %}",
            "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}\
             {{ f(16) }}",
            "{% macro g(n) %}{{ n }}{{ g(n) }}{% endmacro %}{{ g(1) }}",
        ];
        for shape in shapes {
            let job = quick_job(
                "h",
                strings(&["run", shape]),
                Items::Range { start: 1, end: 3 },
            );
            let t = JobTemplates::compile(&job).unwrap();
            let started = std::time::Instant::now();
            let err = t.argv(&job, 1, 0).unwrap_err();
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "{shape}: {:?}",
                started.elapsed()
            );
            assert!(err.starts_with("job \"h\" command[1]: "), "{shape}: {err}");
            let issues = check_job_templates(&job, true);
            assert_eq!(issues.len(), 1, "{shape}: {issues:?}");
            assert!(
                issues[0].message.ends_with("for task 0 (item 1)"),
                "{shape}: {issues:?}"
            );
        }
    }

    #[test]
    fn budget_errors_say_which_budget_and_how_to_fix() {
        let job = quick_job(
            "loops",
            strings(&[
                "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
            ]),
            Items::One,
        );
        let issues = check_job_templates(&job, true);
        assert_eq!(
            issues[0].message,
            format!(
                "bad template in job \"loops\": template exceeds its budget of \
                 {TEMPLATE_FUEL_MAX} steps for task 0"
            )
        );
        assert_eq!(issues[0].hint.as_deref(), Some(TEMPLATE_BUDGET_HINT));

        let job = quick_job("big", strings(&["{{ 'x' * 2000000 }}"]), Items::One);
        let issues = check_job_templates(&job, true);
        assert_eq!(
            issues[0].message,
            format!(
                "bad template in job \"big\": template output exceeds \
                 {TEMPLATE_OUTPUT_BYTES_MAX} bytes for task 0"
            )
        );
        assert_eq!(issues[0].hint.as_deref(), Some(TEMPLATE_BUDGET_HINT));

        // Other errors keep their text and get no budget hint.
        let job = quick_job("div", strings(&["{{ 1 // 0 }}"]), Items::One);
        let issues = check_job_templates(&job, true);
        assert_eq!(issues[0].hint, None, "{issues:?}");
    }

    #[test]
    fn templates_within_budget_still_render() {
        let job = quick_job(
            "fine",
            strings(&[
                "{% for x in range(1000) %}{{ x }},{% endfor %}",
                "{{ 'x' * 100000 }}",
                "{{ range(10000) | join(',') }}",
            ]),
            Items::One,
        );
        let t = JobTemplates::compile(&job).unwrap();
        let argv = t.argv(&job, 0, 0).unwrap();
        assert!(argv[0].starts_with("0,1,2,") && argv[0].ends_with("999,"));
        assert_eq!(argv[1].len(), 100_000);
        assert!(argv[2].ends_with(",9999"));
        assert_eq!(check_job_templates(&job, true), vec![]);
    }
}
