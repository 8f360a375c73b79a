//! Pilot rendering (SPEC §8): the text a provider submits to start agents
//! (pilots), and what `scalable render --target T` prints.
//!
//! Owns: [`PilotSpec`], a flat description of the pilots that one target and tag
//! need, decoupled from the manifest (the provider maps its target and component
//! onto it); [`render`]; the templates it embeds at compile time
//! (`sbatch-templates/agent.sbatch.j2`, `cloud-init/agent-user-data.yaml.j2`,
//! `cloud-init/k8s-agent.yaml.j2`); the checks that each value can be written
//! safely where it goes; shell and YAML quoting.
//!
//! Must not: run anything, read files, the clock or the environment, or ever see
//! the agent token. Tokens reach agents through a file (slurm and local: on the
//! shared filesystem; EC2/GCP VMs: fetched at boot from the secret store into a
//! 0600 file) or through an environment variable filled from a secret (Fargate,
//! Kubernetes). [`PilotSpec`] has no token field, so nothing rendered can leak
//! one, and no `--token` flag is ever rendered.
//!
//! Templates or builders:
//! - sbatch, cloud-init and Kubernetes are minijinja templates: they are text
//!   that HPC and cluster people read and adjust, and the template shows the
//!   whole file in one place. Quoting is not left to the template author: the
//!   environment's formatter quotes every `{{ value }}` by default, for the shell
//!   (POSIX single quotes) or for YAML (double-quoted, so a YAML 1.1 parser such
//!   as kubectl's never reads `yes`, `on` or `0755` as a bool or number). Only
//!   `#SBATCH` values go in unquoted, after a check, because sbatch splits
//!   directive values at whitespace and strips quotes itself.
//! - The Fargate task definition is built with serde (typed structs written by
//!   serde_json): it is data for `aws ecs register-task-definition
//!   --cli-input-json`, nobody edits it as text, and a JSON template would need
//!   escaping on every value and comma bookkeeping for every optional field.
//!
//! Values: `cpus == 0` and `memory_bytes == None` mean `auto` (the agent
//! measures); `gpus` is always explicit, 0 meaning none. Job and container memory
//! is the agent's memory plus [`AGENT_MEMORY_OVERHEAD_BYTES`] for the agent
//! itself, so a task using all of its request does not get the agent killed by
//! the scheduler's limit.

use std::fmt::Write as _;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::ValueKind;
use minijinja::{context, AutoEscape, Environment, ErrorKind, State, UndefinedBehavior, Value};
use serde::Serialize;

use scalable_common::units::parse_duration_ms;

use scalable_common::quote::{shell_join, shell_quote};

// ------------------------------------------------------------------ limits and fixed names

/// Memory added to the job's (Slurm) or container's (Kubernetes) memory beyond
/// what the agent offers tasks, for the agent process itself.
pub const AGENT_MEMORY_OVERHEAD_BYTES: u64 = 256 << 20;
/// The most a Slurm pilot's lifetime stops short of its walltime, so the agent
/// takes no task it cannot finish and leaves before Slurm kills it.
pub const WALLTIME_MARGIN_SECS_MAX: u64 = 300;
/// Short walltimes keep a margin of a tenth of the walltime instead.
const WALLTIME_MARGIN_DIVISOR: u64 = 10;
/// The most pilots one spec asks for (also Slurm's default array size limit).
pub const PILOT_COUNT_MAX: u32 = 1000;
/// The key of the agent token in the Kubernetes Secret named by
/// `token_env_secret` (`kubectl create secret generic NAME --from-file=token=…`).
pub const KUBE_SECRET_KEY: &str = "token";
/// Where a VM pilot keeps its token file (written at boot, mode 0600).
pub const VM_TOKEN_FILE: &str = "/etc/scalable/agent.token";
/// Where a VM pilot installs a downloaded agent.
pub const VM_AGENT_PATH: &str = "/usr/local/bin/scalable-agent";
/// The agent's work dir on a VM.
const VM_WORKDIR: &str = "/var/lib/scalable/work";
/// Finished pilot Jobs are deleted after this long (their pods' logs with them).
const KUBE_JOB_TTL_SECONDS: u32 = 3600;
/// A Job fails only after this many agent failures at least (twice the pods).
const KUBE_JOB_BACKOFF_MIN: u32 = 6;
/// Time between SIGTERM and SIGKILL for a pod or Fargate container; the agent
/// drains (hands running tasks back) within seconds. Fargate allows at most 120.
const STOP_GRACE_SECS: u32 = 60;
/// Kubernetes names and label values are at most this long.
const KUBE_LABEL_CHARS_MAX: usize = 63;
/// Kubernetes object names of the DNS-subdomain kind (Secret, ServiceAccount).
const KUBE_SUBDOMAIN_CHARS_MAX: usize = 253;
/// ECS task definition families.
const FARGATE_FAMILY_CHARS_MAX: usize = 255;

const SBATCH_TEMPLATE: &str = include_str!("../../sbatch-templates/agent.sbatch.j2");
const USER_DATA_TEMPLATE: &str = include_str!("../../cloud-init/agent-user-data.yaml.j2");
const KUBE_TEMPLATE: &str = include_str!("../../cloud-init/k8s-agent.yaml.j2");

// ------------------------------------------------------------------ input and output

/// The pilots one target and tag need, flat. The provider maps its manifest
/// target and component onto this; `render` checks every field it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PilotSpec {
    /// The manifest target (a label on Kubernetes and Fargate).
    pub target: String,
    /// The tag (component) the pilots serve; `None` is a generic pool.
    pub tag: Option<String>,
    /// `HOST:PORT` of the broker as the compute side reaches it.
    pub broker_address: String,
    /// SHA-256 fingerprint of the broker's certificate (hex, colons allowed).
    pub fingerprint: String,
    /// Slurm and local: the agent token file's path on the compute side (the
    /// broker's `agent.token`, `ADDRESS FINGERPRINT TOKEN`). Unused by cloud pilots.
    pub token_file: Option<String>,
    /// Cloud: where the token (alone, not the `agent.token` line) is kept: the
    /// SSM parameter name or ARN (EC2), the Secret Manager secret (GCP), the
    /// `valueFrom` of an ECS secret (Fargate: SSM or Secrets Manager ARN), the
    /// Secret name whose key [`KUBE_SECRET_KEY`] holds it (Kubernetes).
    pub token_env_secret: Option<String>,
    /// Cpus the agent offers; 0 = `auto`.
    pub cpus: u32,
    /// Memory the agent offers; `None` = `auto`.
    pub memory_bytes: Option<u64>,
    /// Gpus the agent offers (0 = none).
    pub gpus: u32,
    /// The agent's container image (Fargate, Kubernetes); unused elsewhere.
    pub image: Option<String>,
    /// The agent's `--idle-timeout` (e.g. `5m`).
    pub idle_timeout: Option<String>,
    /// The agent's `--lifetime` (e.g. `4h`); Slurm caps it below the walltime.
    pub lifetime: Option<String>,
    /// The agent binary on the compute side: a path (local, Slurm, containers,
    /// VM images that have it), or for VMs an `https://`, `s3://` (EC2) or
    /// `gs://` (GCP) URL to download it from.
    pub agent_path: String,
    /// The target has `shared_fs: false`: the agent stages (`--no-shared-fs`).
    pub no_shared_fs: bool,
    /// The target's `storage:` (`--storage`): staged files go through it.
    pub storage: Option<String>,
    /// How many pilots: a Slurm job array when > 1, Kubernetes replicas or Job
    /// parallelism. Local, VMs and Fargate render one pilot; start it `count` times.
    pub count: u32,
    pub provider: PilotProvider,
}

/// A Kubernetes workload kind for pilots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeKind {
    /// Kept at `count` pods; pods are restarted when they exit, so its agents
    /// must not have an idle timeout or lifetime.
    Deployment,
    /// `count` pods that leave when idle; none is replaced once one has left.
    Job,
}

/// Where the pilots run, with that provider's own options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PilotProvider {
    Local,
    Slurm {
        /// The partition (`--partition`).
        queue: Option<String>,
        account: Option<String>,
        /// `HH:MM:SS`, `D-HH:MM:SS` or `4h`; written as Slurm's form.
        walltime: Option<String>,
        qos: Option<String>,
        constraint: Option<String>,
        /// Whole directives after `#SBATCH `, each starting with `--`.
        extra_directives: Vec<String>,
        /// Shell lines run before the agent (`module load …`), in order.
        setup: Vec<String>,
        job_name: String,
        /// `--output` pattern; default `%x-%j.out` (`%x-%A_%a.out` for arrays),
        /// relative to the directory `sbatch` runs in.
        output: Option<String>,
    },
    Ec2 {
        region: String,
        /// For the launch call; not part of the user-data.
        instance_type: Option<String>,
        /// For the launch call; not part of the user-data.
        ami: Option<String>,
    },
    Fargate {
        region: String,
        /// Task CPU units (1024 = 1 vCPU): 256, 512, 1024, … 16384.
        worker_cpu: u32,
        /// Task memory in MiB, a size Fargate allows for `worker_cpu`.
        worker_mem_mib: u32,
        family: String,
        /// ARN of the task execution role; required, since it is what reads
        /// the token secret (and pulls a private image).
        execution_role: Option<String>,
    },
    Gcp {
        /// For the launch call; not part of the user-data.
        zone: String,
        machine_type: Option<String>,
        image: Option<String>,
    },
    Kubernetes {
        namespace: String,
        kind: KubeKind,
        service_account: Option<String>,
        /// The Deployment's or Job's name (a DNS label, at most 63 characters).
        name: String,
    },
}

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// A shell script, a command line or cloud-init user-data.
    Script {
        name: String,
        text: String,
    },
    Json {
        name: String,
        text: String,
    },
    Yaml {
        name: String,
        text: String,
    },
}

impl Rendered {
    /// A short file name for it (`agent.sbatch`, `user-data.yaml`, …).
    pub fn name(&self) -> &str {
        match self {
            Rendered::Script { name, .. }
            | Rendered::Json { name, .. }
            | Rendered::Yaml { name, .. } => name,
        }
    }

    /// The text, ending in a newline.
    pub fn text(&self) -> &str {
        match self {
            Rendered::Script { text, .. }
            | Rendered::Json { text, .. }
            | Rendered::Yaml { text, .. } => text,
        }
    }
}

/// Why a spec cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A value that cannot be written where it must go; `field` is the
    /// [`PilotSpec`] field (`slurm.queue`, `tag`, …) so the caller can name the
    /// manifest key it came from.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// An embedded template failed: a bug, never the user's input.
    #[error("cannot render {template}: {detail} (this is a bug in scalable, please report it)")]
    Template {
        template: &'static str,
        detail: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> RenderError {
    RenderError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Renders what starts the pilots of `spec`:
/// - local: the agent's command line (`Script` `agent.sh`);
/// - slurm: an sbatch script (`Script` `agent.sbatch`), a job array when `count > 1`;
/// - ec2, gcp: cloud-init user-data (`Script` `user-data.yaml`), the same for every VM;
/// - fargate: a task definition (`Json` `task-definition.json`);
/// - kubernetes: a Deployment or Job (`Yaml` `agent.yaml`).
pub fn render(spec: &PilotSpec) -> Result<Vec<Rendered>, RenderError> {
    check_common(spec)?;
    let rendered = match &spec.provider {
        PilotProvider::Local => render_local(spec)?,
        PilotProvider::Slurm { .. } => render_slurm(spec)?,
        PilotProvider::Ec2 { region, .. } => render_vm(spec, Cloud::Ec2 { region })?,
        PilotProvider::Gcp { .. } => render_vm(spec, Cloud::Gcp)?,
        PilotProvider::Fargate { .. } => render_fargate(spec)?,
        PilotProvider::Kubernetes { .. } => render_kubernetes(spec)?,
    };
    Ok(vec![rendered])
}

// ------------------------------------------------------------------ checks

/// A control character anywhere (a newline above all) would end a line early
/// in a directive, a YAML block or a header, and no name needs one.
fn check_no_control(field: &'static str, value: &str) -> Result<(), RenderError> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(invalid(
            field,
            format!("{value:?} contains the control character {c:?}; write it on one line"),
        ));
    }
    Ok(())
}

fn check_name(field: &'static str, value: &str) -> Result<(), RenderError> {
    if value.trim().is_empty() {
        return Err(invalid(field, "is empty"));
    }
    check_no_control(field, value)
}

/// A value that goes through a shell: anything but NUL, which no program can
/// receive in an argument.
fn check_shell_value(field: &'static str, value: &str) -> Result<(), RenderError> {
    if value.contains('\0') {
        return Err(invalid(
            field,
            format!("{value:?} contains a NUL byte, which no command line can carry"),
        ));
    }
    Ok(())
}

fn check_duration(field: &'static str, value: &str) -> Result<u64, RenderError> {
    // The parser trims, so "5m\n" would pass it and end a YAML line early.
    check_no_control(field, value)?;
    parse_duration_ms(value).map_err(|e| invalid(field, e.to_string()))
}

/// What every provider needs, checked once.
fn check_common(spec: &PilotSpec) -> Result<(), RenderError> {
    check_name("target", &spec.target)?;
    if let Some(tag) = &spec.tag {
        check_name("tag", tag)?;
        // A local target's one pool serves all its tags: `--tags a,b` is
        // what its agents are meant to get (`pilots::plan` joins them).
        let local_pool = matches!(spec.provider, PilotProvider::Local);
        if tag.contains(',') && !(local_pool && tag.split(',').all(|t| !t.trim().is_empty())) {
            // The agent splits --tags / SCALABLE_TAGS at commas.
            return Err(invalid(
                "tag",
                format!("{tag:?} contains a comma, which separates tags for the agent"),
            ));
        }
    }
    check_name("broker_address", &spec.broker_address)?;
    let port_ok = spec
        .broker_address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok || spec.broker_address.chars().any(char::is_whitespace) {
        return Err(invalid(
            "broker_address",
            format!(
                "{:?} is not HOST:PORT (e.g. login01:7420)",
                spec.broker_address
            ),
        ));
    }
    scalable_common::tls::parse_fingerprint(&spec.fingerprint)
        .map_err(|e| invalid("fingerprint", e.to_string()))?;
    if let Some(v) = &spec.idle_timeout {
        check_duration("idle_timeout", v)?;
    }
    if let Some(v) = &spec.lifetime {
        if check_duration("lifetime", v)? == 0 {
            return Err(invalid("lifetime", "must be longer than 0"));
        }
    }
    if spec.memory_bytes == Some(0) {
        return Err(invalid(
            "memory_bytes",
            "must be more than 0 (leave it unset for auto)",
        ));
    }
    if spec.count > PILOT_COUNT_MAX {
        return Err(invalid(
            "count",
            format!(
                "{} pilots is more than the {PILOT_COUNT_MAX} one spec may ask for",
                spec.count
            ),
        ));
    }
    if spec.agent_path.trim().is_empty() {
        return Err(invalid("agent_path", "is empty"));
    }
    check_shell_value("agent_path", &spec.agent_path)?;
    Ok(())
}

fn require<'a>(
    value: &'a Option<String>,
    field: &'static str,
    hint: &str,
) -> Result<&'a str, RenderError> {
    match value.as_deref() {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(invalid(field, format!("is required ({hint})"))),
    }
}

/// An `#SBATCH` value: sbatch splits it at whitespace, strips quotes and
/// backslashes and ends it at `#`, so those cannot be written at all.
fn sbatch_value(field: &'static str, value: &str) -> Result<Value, RenderError> {
    check_name(field, value)?;
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '\'' | '"' | '\\' | '#'))
    {
        return Err(invalid(
            field,
            format!("{value:?} cannot be written in an #SBATCH directive: it contains {c:?}"),
        ));
    }
    Ok(Value::from_safe_string(value.to_string()))
}

fn sbatch_opt(field: &'static str, value: &Option<String>) -> Result<Value, RenderError> {
    match value {
        Some(v) => sbatch_value(field, v),
        None => Ok(Value::from(())),
    }
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// A Kubernetes label value: alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric, at most 63 characters.
fn check_label_value(field: &'static str, value: &str) -> Result<(), RenderError> {
    let ends_ok = value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if value.len() > KUBE_LABEL_CHARS_MAX || !ends_ok || !value.chars().all(is_label_char) {
        return Err(invalid(
            field,
            format!(
                "{value:?} is not a Kubernetes label value (letters, digits, '-', '_', '.', starting and ending with a letter or digit, at most {KUBE_LABEL_CHARS_MAX})"
            ),
        ));
    }
    Ok(())
}

/// A Kubernetes DNS name: lowercase alphanumerics and `-` (and `.` between
/// labels for a subdomain), starting and ending alphanumeric.
fn check_dns_name(
    field: &'static str,
    value: &str,
    max: usize,
    dots: bool,
) -> Result<(), RenderError> {
    let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .split('.')
            .all(|part| part.starts_with(lower_alnum) && part.ends_with(lower_alnum))
        && (dots || !value.contains('.'))
        && value
            .chars()
            .all(|c| lower_alnum(c) || c == '-' || c == '.');
    if !ok {
        let what = if dots { "DNS subdomain" } else { "DNS label" };
        return Err(invalid(
            field,
            format!(
                "{value:?} is not a Kubernetes {what} (lowercase letters, digits and '-'{}, starting and ending with a letter or digit, at most {max})",
                if dots { ", '.'" } else { "" }
            ),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------ agent settings

/// Memory as the agent reads it: the largest binary unit that is exact.
fn agent_size(bytes: u64) -> String {
    for (unit, mult) in [
        ("T", 1u64 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ] {
        if bytes.is_multiple_of(mult) {
            return format!("{}{unit}", bytes / mult);
        }
    }
    bytes.to_string()
}

/// Whole MiB, rounded up, of the agent's memory plus its own overhead.
fn memory_with_overhead_mib(bytes: u64) -> u64 {
    bytes
        .saturating_add(AGENT_MEMORY_OVERHEAD_BYTES)
        .div_ceil(1 << 20)
}

/// A duration in Slurm's `HH:MM:SS` / `D-HH:MM:SS` form, which the agent also reads.
fn slurm_time(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        (secs % 86_400) / 3600,
        (secs % 3600) / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// One agent setting, as a flag (command lines) and as its env var (containers).
struct Setting {
    flag: &'static str,
    env: &'static str,
    value: String,
}

/// The agent's settings other than its token, in a fixed order. `lifetime`
/// overrides the spec's (Slurm caps it below the walltime).
fn agent_settings(spec: &PilotSpec, lifetime: Option<String>) -> Vec<Setting> {
    let mut out = Vec::new();
    let mut push = |flag, env, value: String| out.push(Setting { flag, env, value });
    push("--connect", "SCALABLE_BROKER", spec.broker_address.clone());
    push(
        "--fingerprint",
        "SCALABLE_FINGERPRINT",
        spec.fingerprint.trim().to_string(),
    );
    if let Some(tag) = &spec.tag {
        push("--tags", "SCALABLE_TAGS", tag.clone());
    }
    if spec.cpus > 0 {
        push("--cpus", "SCALABLE_CPUS", spec.cpus.to_string());
    }
    if let Some(bytes) = spec.memory_bytes {
        push("--memory", "SCALABLE_MEMORY", agent_size(bytes));
    }
    // Explicit even at 0: a node's gpus that this pilot did not ask for are not its to offer.
    push("--gpus", "SCALABLE_GPUS", spec.gpus.to_string());
    if let Some(v) = &spec.idle_timeout {
        push("--idle-timeout", "SCALABLE_IDLE_TIMEOUT", v.clone());
    }
    if let Some(v) = lifetime.or_else(|| spec.lifetime.clone()) {
        push("--lifetime", "SCALABLE_LIFETIME", v);
    }
    if spec.no_shared_fs {
        push("--no-shared-fs", "SCALABLE_NO_SHARED_FS", "true".into());
    }
    if let Some(url) = spec.storage.as_ref().filter(|_| spec.no_shared_fs) {
        push("--storage", "SCALABLE_STORAGE", url.clone());
    }
    out
}

/// Command-line flags: connection first, then the token file, then the rest.
fn agent_flags(spec: &PilotSpec, token_file: &str, lifetime: Option<String>) -> Vec<[String; 2]> {
    let mut flags: Vec<[String; 2]> = agent_settings(spec, lifetime)
        .into_iter()
        .map(|s| [s.flag.to_string(), s.value])
        .collect();
    flags.insert(2, ["--token-file".into(), token_file.to_string()]);
    flags
}

// ------------------------------------------------------------------ templates

const ESCAPE_SH: &str = "sh";
const ESCAPE_YAML: &str = "yaml";

/// `s` as a YAML double-quoted scalar, valid for YAML 1.1 and 1.2 parsers:
/// escapes what PyYAML and go-yaml would refuse or read as a line break.
pub fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{FEFF}' | '\u{FFFE}' | '\u{FFFF}'
                ) =>
            {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `{{ value }}`: quoted for the template's escape mode unless render.rs
/// marked it safe (checked `#SBATCH` values). Anything but a string or number
/// (a `none`, a list) is a template bug and fails rather than print `none`.
fn format_value(
    out: &mut minijinja::Output<'_>,
    state: &mut State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    let bug = |what: String| minijinja::Error::new(ErrorKind::InvalidOperation, what);
    let (text, is_number) = match value.kind() {
        ValueKind::String => (value.as_str().unwrap_or_default().to_string(), false),
        ValueKind::Number => (value.to_string(), true),
        kind => return Err(bug(format!("cannot write a {kind} value"))),
    };
    let written = if value.is_safe() {
        text
    } else {
        match state.auto_escape() {
            AutoEscape::Custom(mode) if mode == ESCAPE_SH => shell_quote(&text),
            AutoEscape::Custom(mode) if mode == ESCAPE_YAML => {
                if is_number {
                    text
                } else {
                    yaml_quote(&text)
                }
            }
            other => return Err(bug(format!("no quoting for escape mode {other:?}"))),
        }
    };
    out.write_str(&written)
        .map_err(|e| bug(format!("cannot write: {e}")))
}

/// Renders one embedded template; every `{{ value }}` is quoted for `escape`.
fn render_template(
    template: &'static str,
    source: &'static str,
    escape: &'static str,
    ctx: Value,
) -> Result<String, RenderError> {
    let bug = |e: minijinja::Error| RenderError::Template {
        template,
        detail: e.to_string(),
    };
    let mut env = Environment::new();
    // A misspelt variable in a template must fail its tests, not print nothing.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(move |_| AutoEscape::Custom(escape.into()));
    env.set_formatter(format_value);
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .map_err(bug)?,
    );
    env.add_template(template, source).map_err(bug)?;
    env.get_template(template)
        .and_then(|t| t.render(ctx))
        .map_err(bug)
}

/// `[name, value]` pairs for a template; each name is a fixed word of this
/// module (a flag, an env var, a resource), so it is written bare.
fn pairs(items: &[[String; 2]]) -> Value {
    Value::from(
        items
            .iter()
            .map(|[name, value]| {
                Value::from(vec![
                    Value::from_safe_string(name.clone()),
                    Value::from(value.as_str()),
                ])
            })
            .collect::<Vec<_>>(),
    )
}

// ------------------------------------------------------------------ local

fn render_local(spec: &PilotSpec) -> Result<Rendered, RenderError> {
    let token_file = require(
        &spec.token_file,
        "token_file",
        "local pilots read the token from a file, e.g. the broker's .scalable/agent.token",
    )?;
    check_shell_value("token_file", token_file)?;
    let mut argv = vec![spec.agent_path.clone()];
    argv.extend(agent_flags(spec, token_file, None).into_iter().flatten());
    Ok(Rendered::Script {
        name: "agent.sh".into(),
        text: format!("{}\n", shell_join(&argv)),
    })
}

// ------------------------------------------------------------------ slurm

fn render_slurm(spec: &PilotSpec) -> Result<Rendered, RenderError> {
    let PilotProvider::Slurm {
        queue,
        account,
        walltime,
        qos,
        constraint,
        extra_directives,
        setup,
        job_name,
        output,
    } = &spec.provider
    else {
        return Err(invalid("provider", "is not slurm"));
    };
    let token_file = require(
        &spec.token_file,
        "token_file",
        "Slurm pilots read the token from a file on the shared filesystem, e.g. ~/.scalable/agent.token",
    )?;
    check_shell_value("token_file", token_file)?;
    if spec.count == 0 {
        return Err(invalid("count", "must be at least 1 for a Slurm pilot job"));
    }

    let walltime_secs = match walltime {
        Some(w) => {
            let secs = check_duration("slurm.walltime", w)?.div_ceil(1000);
            if secs == 0 {
                // `--time=0` would mean no limit at all, not what was asked.
                return Err(invalid("slurm.walltime", "must be longer than 0"));
            }
            Some(secs)
        }
        None => None,
    };
    // The agent must leave (and take no task it cannot finish) before Slurm
    // kills the job at its walltime.
    let lifetime = match (walltime_secs, &spec.lifetime) {
        (Some(wall), user) => {
            let margin = (wall / WALLTIME_MARGIN_DIVISOR).min(WALLTIME_MARGIN_SECS_MAX);
            let cap_secs = (wall - margin).max(1);
            match user {
                Some(u) if check_duration("lifetime", u)? <= cap_secs * 1000 => Some(u.clone()),
                _ => Some(slurm_time(cap_secs)),
            }
        }
        (None, user) => user.clone(),
    };

    let mut extra = Vec::new();
    for d in extra_directives {
        check_no_control("slurm.extra_directives", d)?;
        if !d.starts_with("--") {
            return Err(invalid(
                "slurm.extra_directives",
                format!("{d:?} must be a long option starting with --, e.g. --mail-type=END"),
            ));
        }
        extra.push(Value::from_safe_string(d.clone()));
    }
    for line in setup {
        check_shell_value("slurm.setup", line)?;
    }
    let array = (spec.count > 1).then(|| format!("1-{}", spec.count));
    let output = match output {
        Some(o) => sbatch_value("slurm.output", o)?,
        None if array.is_some() => Value::from_safe_string("%x-%A_%a.out".into()),
        None => Value::from_safe_string("%x-%j.out".into()),
    };
    let mut srun_args = vec!["--ntasks=1".to_string()];
    if spec.cpus > 0 {
        srun_args.push(format!("--cpus-per-task={}", spec.cpus));
    }
    if spec.gpus > 0 {
        srun_args.push(format!("--gres=gpu:{}", spec.gpus));
    }

    let ctx = context! {
        job_name => sbatch_value("slurm.job_name", job_name)?,
        queue => sbatch_opt("slurm.queue", queue)?,
        account => sbatch_opt("slurm.account", account)?,
        qos => sbatch_opt("slurm.qos", qos)?,
        constraint => sbatch_opt("slurm.constraint", constraint)?,
        walltime => walltime_secs.map(slurm_time),
        cpus => (spec.cpus > 0).then_some(spec.cpus),
        mem_mib => spec.memory_bytes.map(memory_with_overhead_mib),
        gpus => (spec.gpus > 0).then_some(spec.gpus),
        array => array,
        output => output,
        extra_directives => extra,
        setup => setup,
        srun_args => srun_args,
        agent => &spec.agent_path,
        agent_flags => pairs(&agent_flags(spec, token_file, lifetime)),
    };
    let text = render_template("agent.sbatch.j2", SBATCH_TEMPLATE, ESCAPE_SH, ctx)?;
    Ok(Rendered::Script {
        name: "agent.sbatch".into(),
        text,
    })
}

// ------------------------------------------------------------------ ec2 / gcp

enum Cloud<'a> {
    Ec2 { region: &'a str },
    Gcp,
}

fn render_vm(spec: &PilotSpec, cloud: Cloud<'_>) -> Result<Rendered, RenderError> {
    let (provider, region, store) = match cloud {
        Cloud::Ec2 { region } => {
            check_name("ec2.region", region)?;
            ("ec2", region, "an SSM parameter name or ARN")
        }
        Cloud::Gcp => ("gcp", "", "a Secret Manager secret name"),
    };
    let secret = require(&spec.token_env_secret, "token_env_secret", store)?;
    // Every value below sits in a YAML literal block: one line each.
    check_name("token_env_secret", secret)?;
    check_no_control("agent_path", &spec.agent_path)?;

    let path = spec.agent_path.as_str();
    let (source, agent) = if path.starts_with("https://") {
        ("https", VM_AGENT_PATH)
    } else if path.starts_with("s3://") && provider == "ec2" {
        ("s3", VM_AGENT_PATH)
    } else if path.starts_with("gs://") && provider == "gcp" {
        ("gs", VM_AGENT_PATH)
    } else if path.starts_with('/') {
        ("path", path)
    } else {
        let remote = if provider == "ec2" { "s3://" } else { "gs://" };
        return Err(invalid(
            "agent_path",
            format!(
                "{path:?} is neither an https:// or {remote} URL to download the agent from nor an absolute path on the VM image"
            ),
        ));
    };
    let mut flags = agent_flags(spec, VM_TOKEN_FILE, None);
    flags.push(["--workdir".into(), VM_WORKDIR.into()]);
    let ctx = context! {
        provider => provider,
        region => region,
        secret => secret,
        agent_source => source,
        agent_url => path,
        agent => agent,
        broker => &spec.broker_address,
        fingerprint => spec.fingerprint.trim(),
        agent_flags => pairs(&flags),
    };
    let text = render_template(
        "agent-user-data.yaml.j2",
        USER_DATA_TEMPLATE,
        ESCAPE_SH,
        ctx,
    )?;
    Ok(Rendered::Script {
        name: "user-data.yaml".into(),
        text,
    })
}

// ------------------------------------------------------------------ fargate

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskDefinition<'a> {
    family: &'a str,
    requires_compatibilities: [&'static str; 1],
    network_mode: &'static str,
    cpu: String,
    memory: String,
    execution_role_arn: &'a str,
    container_definitions: [ContainerDefinition<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerDefinition<'a> {
    name: &'static str,
    image: &'a str,
    essential: bool,
    /// The container's hard limit: the task's memory. Optional for Fargate,
    /// but moto (the API mock the aws provider is tested against) cannot run
    /// a task whose containers lack it.
    memory: u32,
    entry_point: [&'a str; 1],
    environment: Vec<NameValue>,
    secrets: [NameValueFrom<'a>; 1],
    stop_timeout: u32,
    docker_labels: std::collections::BTreeMap<&'static str, &'a str>,
}

#[derive(Serialize)]
struct NameValue {
    name: &'static str,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NameValueFrom<'a> {
    name: &'static str,
    value_from: &'a str,
}

/// Fargate's allowed memory (MiB) for a task's CPU units: (min, max, step).
fn fargate_memory_range(cpu: u32) -> Option<(u32, u32, u32)> {
    match cpu {
        256 => Some((512, 2048, 512)),
        512 => Some((1024, 4096, 1024)),
        1024 => Some((2048, 8192, 1024)),
        2048 => Some((4096, 16384, 1024)),
        4096 => Some((8192, 30720, 1024)),
        8192 => Some((16384, 61440, 4096)),
        16384 => Some((32768, 122880, 8192)),
        _ => None,
    }
}

/// A container path for the agent: absolute, not a URL to download.
fn container_agent_path(spec: &PilotSpec) -> Result<&str, RenderError> {
    let path = spec.agent_path.as_str();
    check_no_control("agent_path", path)?;
    if !path.starts_with('/') {
        return Err(invalid(
            "agent_path",
            format!("{path:?} must be the agent's absolute path inside the image, e.g. /usr/local/bin/scalable-agent"),
        ));
    }
    Ok(path)
}

fn render_fargate(spec: &PilotSpec) -> Result<Rendered, RenderError> {
    let PilotProvider::Fargate {
        region,
        worker_cpu,
        worker_mem_mib,
        family,
        execution_role,
    } = &spec.provider
    else {
        return Err(invalid("provider", "is not fargate"));
    };
    check_name("fargate.region", region)?;
    if family.is_empty()
        || family.len() > FARGATE_FAMILY_CHARS_MAX
        || !family
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            "fargate.family",
            format!("{family:?} is not a task definition family (letters, digits, '-' and '_', at most {FARGATE_FAMILY_CHARS_MAX})"),
        ));
    }
    let Some((mem_min, mem_max, mem_step)) = fargate_memory_range(*worker_cpu) else {
        return Err(invalid(
            "fargate.worker_cpu",
            format!("{worker_cpu} is not a Fargate task size (256, 512, 1024, 2048, 4096, 8192 or 16384 CPU units)"),
        ));
    };
    let mem = *worker_mem_mib;
    if mem < mem_min || mem > mem_max || !(mem - mem_min).is_multiple_of(mem_step) {
        return Err(invalid(
            "fargate.worker_mem_mib",
            format!("{mem} MiB is not a Fargate memory size for {worker_cpu} CPU units (from {mem_min} to {mem_max} in steps of {mem_step})"),
        ));
    }
    if spec.gpus > 0 {
        return Err(invalid(
            "gpus",
            "Fargate tasks have no gpus (hint: use an ec2 or kubernetes target for gpu components)",
        ));
    }
    if u64::from(spec.cpus) * 1024 > u64::from(*worker_cpu) {
        return Err(invalid(
            "cpus",
            format!(
                "{} cpus do not fit in a task of {worker_cpu} CPU units (1024 per cpu)",
                spec.cpus
            ),
        ));
    }
    if let Some(bytes) = spec.memory_bytes {
        if memory_with_overhead_mib(bytes) > u64::from(mem) {
            return Err(invalid(
                "memory_bytes",
                format!(
                    "{} and {} MiB for the agent do not fit in a task of {mem} MiB",
                    agent_size(bytes),
                    AGENT_MEMORY_OVERHEAD_BYTES >> 20
                ),
            ));
        }
    }
    let image = require(&spec.image, "image", "the agent's container image")?;
    check_no_control("image", image)?;
    let role = require(
        execution_role,
        "fargate.execution_role",
        "the task execution role ARN; it is what reads the token secret",
    )?;
    if !role.starts_with("arn:") {
        return Err(invalid(
            "fargate.execution_role",
            format!("{role:?} is not an ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
        ));
    }
    let secret = require(
        &spec.token_env_secret,
        "token_env_secret",
        "the SSM parameter or Secrets Manager ARN that holds the agent token",
    )?;
    check_no_control("token_env_secret", secret)?;

    let mut labels = std::collections::BTreeMap::new();
    labels.insert("scalable.target", spec.target.as_str());
    if let Some(tag) = &spec.tag {
        labels.insert("scalable.tag", tag.as_str());
    }
    let def = TaskDefinition {
        family,
        requires_compatibilities: ["FARGATE"],
        network_mode: "awsvpc",
        cpu: worker_cpu.to_string(),
        memory: mem.to_string(),
        execution_role_arn: role,
        container_definitions: [ContainerDefinition {
            name: "scalable-agent",
            image,
            essential: true,
            memory: mem,
            entry_point: [container_agent_path(spec)?],
            environment: agent_settings(spec, None)
                .into_iter()
                .map(|s| NameValue {
                    name: s.env,
                    value: s.value,
                })
                .collect(),
            secrets: [NameValueFrom {
                name: "SCALABLE_TOKEN",
                value_from: secret,
            }],
            stop_timeout: STOP_GRACE_SECS,
            docker_labels: labels,
        }],
    };
    let text = serde_json::to_string_pretty(&def).map_err(|e| RenderError::Template {
        template: "task-definition.json",
        detail: e.to_string(),
    })?;
    Ok(Rendered::Json {
        name: "task-definition.json".into(),
        text: text + "\n",
    })
}

// ------------------------------------------------------------------ kubernetes

fn render_kubernetes(spec: &PilotSpec) -> Result<Rendered, RenderError> {
    let PilotProvider::Kubernetes {
        namespace,
        kind,
        service_account,
        name,
    } = &spec.provider
    else {
        return Err(invalid("provider", "is not kubernetes"));
    };
    check_dns_name("kubernetes.name", name, KUBE_LABEL_CHARS_MAX, false)?;
    check_dns_name(
        "kubernetes.namespace",
        namespace,
        KUBE_LABEL_CHARS_MAX,
        false,
    )?;
    if let Some(sa) = service_account {
        check_dns_name(
            "kubernetes.service_account",
            sa,
            KUBE_SUBDOMAIN_CHARS_MAX,
            true,
        )?;
    }
    check_label_value("target", &spec.target)?;
    if let Some(tag) = &spec.tag {
        check_label_value("tag", tag)?;
    }
    let secret = require(
        &spec.token_env_secret,
        "token_env_secret",
        "the Secret whose key \"token\" holds the agent token",
    )?;
    check_dns_name("token_env_secret", secret, KUBE_SUBDOMAIN_CHARS_MAX, true)?;
    let image = require(&spec.image, "image", "the agent's container image")?;
    check_no_control("image", image)?;
    let agent = container_agent_path(spec)?;
    if *kind == KubeKind::Deployment {
        // A Deployment restarts a pod whose agent left, so an agent that leaves
        // on its own would only restart in a loop (and back off as a crash).
        for (field, set) in [
            ("idle_timeout", spec.idle_timeout.is_some()),
            ("lifetime", spec.lifetime.is_some()),
        ] {
            if set {
                return Err(invalid(
                    field,
                    "a Deployment restarts agents that leave; use kind Job for pilots that leave on their own, or leave it unset",
                ));
            }
        }
    }

    let env: Vec<[String; 2]> = agent_settings(spec, None)
        .into_iter()
        .map(|s| [s.env.to_string(), s.value])
        .collect();
    let mut resources: Vec<[String; 2]> = Vec::new();
    if spec.cpus > 0 {
        resources.push(["cpu".into(), spec.cpus.to_string()]);
    }
    if let Some(bytes) = spec.memory_bytes {
        resources.push([
            "memory".into(),
            format!("{}Mi", memory_with_overhead_mib(bytes)),
        ]);
    }
    if spec.gpus > 0 {
        resources.push(["nvidia.com/gpu".into(), spec.gpus.to_string()]);
    }
    let (kind_name, restart_policy) = match kind {
        KubeKind::Deployment => ("Deployment", "Always"),
        // OnFailure: a crashed agent restarts in place; one that left (exit 0) does not.
        KubeKind::Job => ("Job", "OnFailure"),
    };
    let ctx = context! {
        kind => kind_name,
        name => name,
        namespace => namespace,
        target => &spec.target,
        tag => &spec.tag,
        count => spec.count,
        // Failures of any pod count against the Job; a few per pod before all stop.
        backoff_limit => spec.count.saturating_mul(2).max(KUBE_JOB_BACKOFF_MIN),
        ttl_seconds => KUBE_JOB_TTL_SECONDS,
        restart_policy => Value::from_safe_string(restart_policy.into()),
        service_account => service_account,
        grace_seconds => STOP_GRACE_SECS,
        image => image,
        agent => agent,
        env => pairs(&env),
        secret_name => secret,
        secret_key => Value::from_safe_string(KUBE_SECRET_KEY.into()),
        resources => pairs(&resources),
    };
    let text = render_template("k8s-agent.yaml.j2", KUBE_TEMPLATE, ESCAPE_YAML, ctx)?;
    Ok(Rendered::Yaml {
        name: "agent.yaml".into(),
        text,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const FP: &str = "abababababababababababababababababababababababababababababababab";

    fn spec(provider: PilotProvider) -> PilotSpec {
        PilotSpec {
            target: "hpc".into(),
            tag: Some("demeter".into()),
            broker_address: "login01:7420".into(),
            fingerprint: FP.into(),
            token_file: Some("/home/alice/.scalable/agent.token".into()),
            token_env_secret: Some("scalable-agent-token".into()),
            cpus: 4,
            memory_bytes: Some(16 << 30),
            gpus: 0,
            image: Some("ghcr.io/example/scalable-agent:0.1".into()),
            idle_timeout: Some("5m".into()),
            lifetime: None,
            agent_path: "/opt/scalable/bin/scalable-agent".into(),
            no_shared_fs: false,
            storage: None,
            count: 1,
            provider,
        }
    }

    fn slurm() -> PilotProvider {
        PilotProvider::Slurm {
            queue: Some("batch".into()),
            account: Some("GCIMS".into()),
            walltime: Some("04:00:00".into()),
            qos: None,
            constraint: None,
            extra_directives: vec![],
            setup: vec!["module load gcc/12".into()],
            job_name: "scalable-hpc-demeter".into(),
            output: None,
        }
    }

    fn one(spec: &PilotSpec) -> Rendered {
        let mut all = render(spec).expect("renders");
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    fn local() -> PilotProvider {
        PilotProvider::Local
    }

    fn ec2() -> PilotProvider {
        PilotProvider::Ec2 {
            region: "us-east-1".into(),
            instance_type: Some("c6i.2xlarge".into()),
            ami: None,
        }
    }

    fn gcp() -> PilotProvider {
        PilotProvider::Gcp {
            zone: "us-central1-a".into(),
            machine_type: None,
            image: None,
        }
    }

    fn fargate() -> PilotProvider {
        PilotProvider::Fargate {
            region: "us-east-1".into(),
            worker_cpu: 4096,
            worker_mem_mib: 20480,
            family: "scalable-demeter".into(),
            execution_role: Some("arn:aws:iam::123456789012:role/ecsTaskExecutionRole".into()),
        }
    }

    fn kube(kind: KubeKind) -> PilotProvider {
        PilotProvider::Kubernetes {
            namespace: "demeter-prod".into(),
            kind,
            service_account: None,
            name: "scalable-k8s-demeter".into(),
        }
    }

    /// A spec each provider accepts as it is.
    fn spec_for(provider: PilotProvider) -> PilotSpec {
        let mut s = spec(provider);
        match &s.provider {
            PilotProvider::Ec2 { .. } | PilotProvider::Gcp { .. } => {
                s.agent_path = "https://downloads.example.org/scalable-agent".into();
            }
            PilotProvider::Kubernetes {
                kind: KubeKind::Deployment,
                ..
            } => s.idle_timeout = None,
            _ => {}
        }
        s
    }

    fn all_providers() -> Vec<PilotProvider> {
        vec![
            local(),
            slurm(),
            ec2(),
            gcp(),
            fargate(),
            kube(KubeKind::Deployment),
            kube(KubeKind::Job),
        ]
    }

    fn slurm_with(edit: impl FnOnce(&mut PilotProvider)) -> PilotSpec {
        let mut s = spec(slurm());
        edit(&mut s.provider);
        s
    }

    fn err(spec: &PilotSpec) -> RenderError {
        render(spec).expect_err("must be refused")
    }

    fn field_of(e: &RenderError) -> &'static str {
        match e {
            RenderError::Invalid { field, .. } => field,
            RenderError::Template { .. } => panic!("a template bug, not a refusal: {e}"),
        }
    }

    /// `bash -n` on `text`; panics with bash's message when it fails.
    fn bash_n(text: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script.sh");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new("bash")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "bash -n failed: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs an sbatch script with stubs of `srun` and `module` on PATH; `srun` records
    /// `$SCALABLE_PILOT_ID` and its argv (NUL-separated); returns them.
    fn run_with_stub_srun(script: &str, env: &[(&str, &str)]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let srun = bin.join("srun");
        std::fs::write(
            &srun,
            "#!/bin/sh\nprintf '%s\\0' \"$SCALABLE_PILOT_ID\" \"$@\" > \"$STUB_OUT\"\n",
        )
        .unwrap();
        // `module load` in the default setup: a no-op here.
        let module = bin.join("module");
        std::fs::write(&module, "#!/bin/sh\nexit 0\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        for stub in [&srun, &module] {
            std::fs::set_permissions(stub, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = dir.path().join("agent.sbatch");
        std::fs::write(&path, script).unwrap();
        let stub_out = dir.path().join("argv");
        let search = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("bash")
            .arg(&path)
            .env("PATH", search)
            .env("STUB_OUT", &stub_out)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "script failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
        let raw = std::fs::read(&stub_out).expect("srun stub ran");
        let mut args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8(a.to_vec()).unwrap())
            .collect();
        assert_eq!(args.pop().as_deref(), Some(""), "NUL-terminated");
        args
    }

    /// Strings that break naive quoting in a shell.
    const HOSTILE: [&str; 8] = [
        "it's",
        "say \"hi\"",
        "two words",
        "$(rm -rf /)",
        "`reboot`",
        "line1\nline2",
        "back\\slash $HOME ~ * ? ; & | < > ( ) { } [ ] ! #",
        "",
    ];

    // ---------------------------------------------------------------- snapshots

    /// Issue 20: a target with `shared_fs: false` starts agents that stage.
    #[test]
    fn pilots_of_a_target_without_a_shared_filesystem_stage() {
        let mut s = spec(local());
        s.no_shared_fs = true;
        assert!(one(&s)
            .text()
            .ends_with(" --idle-timeout 5m --no-shared-fs true\n"));
        s.storage = Some("s3://bucket/runs".into());
        assert!(one(&s)
            .text()
            .ends_with(" --no-shared-fs true --storage s3://bucket/runs\n"));
    }

    #[test]
    fn local_command_line_snapshot() {
        let r = one(&spec(local()));
        assert_eq!(r.name(), "agent.sh");
        assert_eq!(
            r.text(),
            "/opt/scalable/bin/scalable-agent --connect login01:7420 --fingerprint abababababababababababababababababababababababababababababababab --token-file /home/alice/.scalable/agent.token --tags demeter --cpus 4 --memory 16G --gpus 0 --idle-timeout 5m\n"
        );
    }

    #[test]
    fn local_generic_pool_with_auto_resources_snapshot() {
        let mut s = spec(local());
        s.tag = None;
        s.cpus = 0;
        s.memory_bytes = None;
        s.idle_timeout = None;
        s.token_file = Some("/home/alice/my tokens/agent.token".into());
        assert_eq!(
            one(&s).text(),
            "/opt/scalable/bin/scalable-agent --connect login01:7420 --fingerprint abababababababababababababababababababababababababababababababab --token-file '/home/alice/my tokens/agent.token' --gpus 0\n"
        );
    }

    #[test]
    fn sbatch_snapshot() {
        let r = one(&spec(slurm()));
        assert_eq!(r.name(), "agent.sbatch");
        assert_eq!(
            r.text(),
            r#"#!/bin/bash
#SBATCH --job-name=scalable-hpc-demeter
#SBATCH --partition=batch
#SBATCH --account=GCIMS
#SBATCH --time=04:00:00
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16640M
#SBATCH --output=%x-%j.out
# A Scalable pilot: one scalable-agent that dials out to the broker and runs
# tasks until it is idle, its lifetime ends or the walltime is near. It reads
# its token from --token-file; the token is never written in this script.
# --mem is the agent's --memory plus room for the agent itself.
set -euo pipefail
eval 'module load gcc/12'
export SCALABLE_PILOT_ID="$SLURM_JOB_ID"
exec srun --ntasks=1 --cpus-per-task=4 /opt/scalable/bin/scalable-agent \
  --connect login01:7420 \
  --fingerprint abababababababababababababababababababababababababababababababab \
  --token-file /home/alice/.scalable/agent.token \
  --tags demeter \
  --cpus 4 \
  --memory 16G \
  --gpus 0 \
  --idle-timeout 5m \
  --lifetime 03:55:00
"#
        );
    }

    // ---------------------------------------------------------------- slurm

    #[test]
    fn sbatch_passes_bash_n_and_has_queue_account_walltime_cpus_memory() {
        let mut s = slurm_with(|p| {
            if let PilotProvider::Slurm {
                qos,
                constraint,
                extra_directives,
                ..
            } = p
            {
                *qos = Some("high".into());
                *constraint = Some("intel&(ib|opa)".into());
                *extra_directives = vec!["--mail-type=END".into(), "--exclusive".into()];
            }
        });
        s.gpus = 2;
        let text = one(&s).text().to_string();
        bash_n(&text);
        for line in [
            "#SBATCH --partition=batch\n",
            "#SBATCH --account=GCIMS\n",
            "#SBATCH --time=04:00:00\n",
            "#SBATCH --cpus-per-task=4\n",
            "#SBATCH --mem=16640M\n",
            "#SBATCH --gres=gpu:2\n",
            "#SBATCH --qos=high\n",
            "#SBATCH --constraint=intel&(ib|opa)\n",
            "#SBATCH --mail-type=END\n",
            "#SBATCH --exclusive\n",
            "exec srun --ntasks=1 --cpus-per-task=4 --gres=gpu:2 ",
            "  --gpus 2 \\\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // All directives come before the first command, or sbatch ignores them.
        let first_command = text.find("set -euo").unwrap();
        assert!(text.rfind("#SBATCH").unwrap() < first_command);
    }

    #[test]
    fn sbatch_quotes_hostile_values_and_srun_gets_them_back() {
        let tag = "it's \"x\" $(rm -rf /) `reboot` ; two words";
        let agent = "/opt/it's a \"dir\"/$(rm -rf /)/`reboot`/new\nline/scalable-agent";
        let token_file = "/home/o'brien/$(id)/`id`/line\nbreak/agent.token";
        let mut s = spec(slurm());
        s.tag = Some(tag.into());
        s.agent_path = agent.into();
        s.token_file = Some(token_file.into());
        s.lifetime = Some("1h".into());
        let text = one(&s).text().to_string();
        bash_n(&text);
        let argv = run_with_stub_srun(&text, &[("SLURM_JOB_ID", "4242")]);
        let expected: Vec<String> = [
            "4242",
            "--ntasks=1",
            "--cpus-per-task=4",
            agent,
            "--connect",
            "login01:7420",
            "--fingerprint",
            FP,
            "--token-file",
            token_file,
            "--tags",
            tag,
            "--cpus",
            "4",
            "--memory",
            "16G",
            "--gpus",
            "0",
            "--idle-timeout",
            "5m",
            "--lifetime",
            "1h",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        assert_eq!(argv, expected);
    }

    #[test]
    fn shell_quote_round_trips_through_bash() {
        for value in HOSTILE {
            let script = format!("printf %s {}", shell_quote(value));
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(&script)
                .output()
                .expect("bash runs");
            assert!(out.status.success(), "{script}");
            assert_eq!(String::from_utf8(out.stdout).unwrap(), value, "{script}");
        }
    }

    #[test]
    fn setup_lines_run_as_written_and_cannot_break_the_script() {
        let broken = slurm_with(|p| {
            if let PilotProvider::Slurm { setup, .. } = p {
                *setup = vec!["echo \"unterminated".into(), "fi; done; }".into()];
            }
        });
        // A broken setup line fails when it runs, never the script's structure.
        bash_n(one(&broken).text());

        let working = slurm_with(|p| {
            if let PilotProvider::Slurm { setup, .. } = p {
                *setup = vec![
                    "export ANSWER=$((6 * 7))".into(),
                    "if [ \"$ANSWER\" = 42 ]; then\n  export SCALABLE_PILOT_ID=\"it's $ANSWER\"\nfi"
                        .into(),
                ];
            }
        });
        let text = one(&working).text().to_string();
        bash_n(&text);
        let argv = run_with_stub_srun(&text, &[("SLURM_JOB_ID", "7")]);
        // The setup ran (ANSWER was 42) and the pilot id was then set as always.
        assert_eq!(argv[0], "7");
        let text = text.replace(
            "export SCALABLE_PILOT_ID=\"$SLURM_JOB_ID\"\n",
            "printf %s \"$ANSWER\" > answer\n",
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sh");
        std::fs::write(&path, text.split("exec srun").next().unwrap()).unwrap();
        let status = std::process::Command::new("bash")
            .arg(&path)
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("answer")).unwrap(),
            "42"
        );
    }

    #[test]
    fn sbatch_refuses_values_no_directive_can_hold() {
        for bad in [
            "batch\n#SBATCH --account=evil",
            "two words",
            "it's",
            "a\"b",
            "a#b",
            "a\\b",
            "",
        ] {
            let e = err(&slurm_with(|p| {
                if let PilotProvider::Slurm { queue, .. } = p {
                    *queue = Some(bad.into());
                }
            }));
            assert_eq!(field_of(&e), "slurm.queue", "{bad:?}: {e}");
        }
        let e = err(&slurm_with(|p| {
            if let PilotProvider::Slurm { queue, .. } = p {
                *queue = Some("batch\n#SBATCH --account=evil".into());
            }
        }));
        assert_eq!(
            e.to_string(),
            r#"slurm.queue: "batch\n#SBATCH --account=evil" contains the control character '\n'; write it on one line"#
        );
        let e = err(&slurm_with(|p| {
            if let PilotProvider::Slurm { account, .. } = p {
                *account = Some("my account".into());
            }
        }));
        assert_eq!(
            e.to_string(),
            r#"slurm.account: "my account" cannot be written in an #SBATCH directive: it contains ' '"#
        );
        for (name, field) in [("job name", "slurm.job_name"), ("x\ny", "slurm.job_name")] {
            let e = err(&slurm_with(|p| {
                if let PilotProvider::Slurm { job_name, .. } = p {
                    *job_name = name.into();
                }
            }));
            assert_eq!(field_of(&e), field);
        }
        for (directive, message) in [
            (
                "mail-type=END",
                r#"slurm.extra_directives: "mail-type=END" must be a long option starting with --, e.g. --mail-type=END"#,
            ),
            (
                "--mail-type=END\nrm -rf /",
                r#"slurm.extra_directives: "--mail-type=END\nrm -rf /" contains the control character '\n'; write it on one line"#,
            ),
        ] {
            let e = err(&slurm_with(|p| {
                if let PilotProvider::Slurm {
                    extra_directives, ..
                } = p
                {
                    *extra_directives = vec![directive.into()];
                }
            }));
            assert_eq!(e.to_string(), message);
        }
        for (walltime, message) in [
            ("0", "slurm.walltime: must be longer than 0"),
            (
                "4 hours",
                r#"slurm.walltime: invalid duration "4 hours" (expected e.g. "04:00:00", 90m, 2h or 30s)"#,
            ),
        ] {
            let e = err(&slurm_with(|p| {
                if let PilotProvider::Slurm { walltime: w, .. } = p {
                    *w = Some(walltime.into());
                }
            }));
            assert_eq!(e.to_string(), message);
        }
        let mut s = spec(slurm());
        s.token_file = None;
        assert_eq!(field_of(&err(&s)), "token_file");
        s = spec(slurm());
        s.count = 0;
        assert_eq!(field_of(&err(&s)), "count");
    }

    #[test]
    fn slurm_lifetime_stops_short_of_the_walltime() {
        let lifetime_of = |walltime: &str, user: Option<&str>| {
            let mut s = slurm_with(|p| {
                if let PilotProvider::Slurm { walltime: w, .. } = p {
                    *w = Some(walltime.into());
                }
            });
            s.lifetime = user.map(String::from);
            let text = one(&s).text().to_string();
            let time = text
                .lines()
                .find_map(|l| l.strip_prefix("#SBATCH --time="))
                .unwrap()
                .to_string();
            let life = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("--lifetime "))
                .unwrap()
                .to_string();
            (time, life)
        };
        // Long walltimes keep WALLTIME_MARGIN_SECS_MAX, short ones a tenth.
        assert_eq!(
            lifetime_of("04:00:00", None),
            ("04:00:00".into(), "03:55:00".into())
        );
        assert_eq!(
            lifetime_of("00:10:00", None),
            ("00:10:00".into(), "00:09:00".into())
        );
        assert_eq!(
            lifetime_of("2h", None),
            ("02:00:00".into(), "01:55:00".into())
        );
        assert_eq!(
            lifetime_of("2-00:00:00", None),
            ("2-00:00:00".into(), "1-23:55:00".into())
        );
        // A shorter lifetime of the user's stays; a longer one is capped.
        assert_eq!(
            lifetime_of("04:00:00", Some("90m")),
            ("04:00:00".into(), "90m".into())
        );
        assert_eq!(
            lifetime_of("04:00:00", Some("8h")),
            ("04:00:00".into(), "03:55:00".into())
        );
    }

    #[test]
    fn slurm_array_for_several_pilots() {
        let mut s = spec(slurm());
        s.count = 5;
        let text = one(&s).text().to_string();
        bash_n(&text);
        assert!(text.contains("#SBATCH --array=1-5\n"));
        assert!(text.contains("#SBATCH --output=%x-%A_%a.out\n"));
        let argv = run_with_stub_srun(
            &text,
            &[("SLURM_ARRAY_JOB_ID", "100"), ("SLURM_ARRAY_TASK_ID", "3")],
        );
        assert_eq!(
            argv[0], "100_3",
            "the pilot id is what squeue and scancel name"
        );
    }

    // ---------------------------------------------------------------- common checks

    #[test]
    fn common_fields_are_checked_with_the_field_named() {
        // Each edit makes one field bad; the message names that field.
        type Edit = fn(&mut PilotSpec);
        let cases: [(Edit, &str); 9] = [
            (|s| s.tag = Some("a,b".into()), "tag: \"a,b\" contains a comma, which separates tags for the agent"),
            (|s| s.tag = Some("a\nb".into()), "tag: \"a\\nb\" contains the control character '\\n'; write it on one line"),
            (|s| s.tag = Some(" ".into()), "tag: is empty"),
            (|s| s.broker_address = "login01".into(), "broker_address: \"login01\" is not HOST:PORT (e.g. login01:7420)"),
            (|s| s.idle_timeout = Some("soon".into()), "idle_timeout: invalid duration \"soon\" (expected e.g. \"04:00:00\", 90m, 2h or 30s)"),
            (|s| s.lifetime = Some("4h\n".into()), "lifetime: \"4h\\n\" contains the control character '\\n'; write it on one line"),
            (|s| s.memory_bytes = Some(0), "memory_bytes: must be more than 0 (leave it unset for auto)"),
            (|s| s.count = PILOT_COUNT_MAX + 1, "count: 1001 pilots is more than the 1000 one spec may ask for"),
            (|s| s.agent_path = "/bin/a\0b".into(), "agent_path: \"/bin/a\\0b\" contains a NUL byte, which no command line can carry"),
        ];
        for (i, (edit, message)) in cases.into_iter().enumerate() {
            // A comma is refused where a pilot serves one tag; a local
            // target's one pool serves all its tags (`--tags a,b`).
            let mut s = spec(if i == 0 { slurm() } else { local() });
            edit(&mut s);
            assert_eq!(err(&s).to_string(), message);
        }
        let mut pool = spec(local());
        pool.tag = Some("a,b".into());
        assert!(render(&pool).is_ok(), "a local pool serving tags a and b");
        pool.tag = Some("a,".into());
        assert_eq!(
            err(&pool).to_string(),
            "tag: \"a,\" contains a comma, which separates tags for the agent"
        );
        let mut s = spec(local());
        s.fingerprint = "not-hex".into();
        assert_eq!(field_of(&err(&s)), "fingerprint");
    }

    // ---------------------------------------------------------------- ec2 / gcp

    /// The user-data as YAML, and the start script and unit it writes.
    fn user_data_parts(text: &str) -> (serde_json::Value, String, String) {
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        let doc: serde_json::Value = serde_saphyr::from_str(text).expect("user-data is YAML");
        let files = doc["write_files"].as_array().expect("write_files");
        let content = |path: &str| {
            files
                .iter()
                .find(|f| f["path"] == path)
                .and_then(|f| f["content"].as_str())
                .unwrap_or_else(|| panic!("no {path}"))
                .to_string()
        };
        let script = content("/usr/local/sbin/scalable-agent-start");
        let unit = content("/etc/systemd/system/scalable-agent.service");
        (doc, script, unit)
    }

    #[test]
    fn ec2_user_data_fetches_the_token_from_ssm_into_a_private_file() {
        let text = one(&spec_for(ec2())).text().to_string();
        let (doc, script, unit) = user_data_parts(&text);
        bash_n(&script);
        assert!(script.starts_with("#!/bin/bash\nset -euo pipefail\numask 077\n"));
        assert!(script.contains(
            "aws ssm get-parameter --region us-east-1 --name scalable-agent-token --with-decryption --query Parameter.Value --output text\n"
        ));
        assert!(script.contains("} > /etc/scalable/agent.token.part\n"));
        assert!(script.contains(
            "curl -fsSL --proto =https --retry 5 -o /usr/local/bin/scalable-agent.part https://downloads.example.org/scalable-agent\n"
        ));
        assert!(script.contains("exec /usr/local/bin/scalable-agent \\\n"));
        assert!(script.contains("--token-file /etc/scalable/agent.token \\\n"));
        assert!(unit.contains("ExecStart=/usr/local/sbin/scalable-agent-start\n"));
        assert_eq!(doc["runcmd"][1][1], "enable");

        let mut s = spec_for(ec2());
        s.agent_path = "s3://bucket/bin/scalable-agent".into();
        let (_, script, _) = user_data_parts(one(&s).text());
        assert!(script.contains(
            "aws s3 cp --only-show-errors --region us-east-1 s3://bucket/bin/scalable-agent /usr/local/bin/scalable-agent.part\n"
        ));
        s.agent_path = "/opt/baked/scalable-agent".into();
        let (_, script, _) = user_data_parts(one(&s).text());
        assert!(!script.contains("curl"));
        assert!(script.contains("exec /opt/baked/scalable-agent \\\n"));
    }

    #[test]
    fn gcp_user_data_fetches_the_token_from_secret_manager() {
        let mut s = spec_for(gcp());
        s.agent_path = "gs://bucket/scalable-agent".into();
        let (_, script, _) = user_data_parts(one(&s).text());
        bash_n(&script);
        assert!(script
            .contains("gcloud secrets versions access latest --secret scalable-agent-token\n"));
        assert!(script.contains("gcloud storage cp --quiet gs://bucket/scalable-agent /usr/local/bin/scalable-agent.part\n"));
        assert!(!script.contains("aws "));
    }

    #[test]
    fn user_data_quotes_hostile_values_and_refuses_multi_line_ones() {
        let mut s = spec_for(ec2());
        let tag = "it's \"x\" $(rm -rf /) `reboot`: # {{ y }}";
        s.tag = Some(tag.into());
        s.token_env_secret = Some("/scalable/it's $(id)".into());
        let (_, script, _) = user_data_parts(one(&s).text());
        bash_n(&script);
        assert!(script.contains(&format!("--tags {} \\\n", shell_quote(tag))));
        assert!(script.contains("--name '/scalable/it'\\''s $(id)' --with-decryption"));

        s = spec_for(ec2());
        s.token_env_secret = Some("a\nb".into());
        assert_eq!(field_of(&err(&s)), "token_env_secret");
        s = spec_for(ec2());
        s.agent_path = "https://x/agent\n  - path: /etc/evil".into();
        assert_eq!(field_of(&err(&s)), "agent_path");
        for bad in ["http://plain.example/agent", "gs://bucket/agent", "agent"] {
            s = spec_for(ec2());
            s.agent_path = bad.into();
            assert_eq!(field_of(&err(&s)), "agent_path", "{bad}");
        }
        s = spec_for(gcp());
        s.token_env_secret = None;
        assert_eq!(
            err(&s).to_string(),
            "token_env_secret: is required (a Secret Manager secret name)"
        );
    }

    // ---------------------------------------------------------------- fargate

    #[test]
    fn fargate_task_definition_has_the_expected_fields() {
        let r = one(&spec_for(fargate()));
        assert_eq!(r.name(), "task-definition.json");
        let v: serde_json::Value = serde_json::from_str(r.text()).expect("JSON");
        assert_eq!(v["family"], "scalable-demeter");
        assert_eq!(v["requiresCompatibilities"], serde_json::json!(["FARGATE"]));
        assert_eq!(v["networkMode"], "awsvpc");
        assert_eq!(v["cpu"], "4096");
        assert_eq!(v["memory"], "20480");
        assert_eq!(
            v["executionRoleArn"],
            "arn:aws:iam::123456789012:role/ecsTaskExecutionRole"
        );
        let c = &v["containerDefinitions"][0];
        assert_eq!(c["image"], "ghcr.io/example/scalable-agent:0.1");
        assert_eq!(c["essential"], true);
        assert_eq!(c["memory"], 20480);
        assert_eq!(c["entryPoint"][0], "/opt/scalable/bin/scalable-agent");
        let env: std::collections::BTreeMap<&str, &str> = c["environment"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
            .collect();
        let expected: std::collections::BTreeMap<&str, &str> = [
            ("SCALABLE_BROKER", "login01:7420"),
            ("SCALABLE_FINGERPRINT", FP),
            ("SCALABLE_TAGS", "demeter"),
            ("SCALABLE_CPUS", "4"),
            ("SCALABLE_MEMORY", "16G"),
            ("SCALABLE_GPUS", "0"),
            ("SCALABLE_IDLE_TIMEOUT", "5m"),
        ]
        .into_iter()
        .collect();
        assert_eq!(env, expected);
        assert_eq!(
            c["secrets"],
            serde_json::json!([{"name": "SCALABLE_TOKEN", "valueFrom": "scalable-agent-token"}])
        );
    }

    #[test]
    fn fargate_refuses_what_fargate_cannot_run() {
        let with = |edit: &dyn Fn(&mut PilotSpec)| {
            let mut s = spec_for(fargate());
            edit(&mut s);
            err(&s)
        };
        let set = |cpu: u32, mem: u32| {
            move |s: &mut PilotSpec| {
                if let PilotProvider::Fargate {
                    worker_cpu,
                    worker_mem_mib,
                    ..
                } = &mut s.provider
                {
                    *worker_cpu = cpu;
                    *worker_mem_mib = mem;
                }
            }
        };
        assert_eq!(field_of(&with(&set(3000, 8192))), "fargate.worker_cpu");
        assert_eq!(
            with(&set(4096, 8000)).to_string(),
            "fargate.worker_mem_mib: 8000 MiB is not a Fargate memory size for 4096 CPU units (from 8192 to 30720 in steps of 1024)"
        );
        assert_eq!(
            with(&set(2048, 16384)).to_string(),
            "cpus: 4 cpus do not fit in a task of 2048 CPU units (1024 per cpu)"
        );
        assert_eq!(
            with(&set(4096, 16384)).to_string(),
            "memory_bytes: 16G and 256 MiB for the agent do not fit in a task of 16384 MiB"
        );
        assert_eq!(field_of(&with(&|s| s.gpus = 1)), "gpus");
        assert_eq!(field_of(&with(&|s| s.image = None)), "image");
        assert_eq!(
            field_of(&with(&|s| s.token_env_secret = None)),
            "token_env_secret"
        );
        assert_eq!(
            field_of(&with(&|s| s.agent_path = "https://x/agent".into())),
            "agent_path"
        );
        assert_eq!(
            field_of(&with(
                &|s| if let PilotProvider::Fargate { execution_role, .. } = &mut s.provider {
                    *execution_role = None;
                }
            )),
            "fargate.execution_role"
        );
    }

    // ---------------------------------------------------------------- kubernetes

    const KUBE_VALIDATE_MISSING: &str =
        "kubernetes-validate is missing: pip install kubernetes-validate (the CI script .ci/run installs it)";

    /// Offline schema validation with PyPI `kubernetes-validate`, strict (unknown
    /// fields are errors). Missing validator fails the test rather than skip it.
    pub(crate) fn kubernetes_validate(yaml: &str) {
        let have = std::process::Command::new("python3")
            .args(["-c", "import kubernetes_validate"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(have, "{KUBE_VALIDATE_MISSING}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = std::process::Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "-k", "1.31.0"])
            .arg(&path)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "kubernetes-validate refused it:\n{}{}\n{yaml}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn env_of(
        container: &serde_json::Value,
    ) -> std::collections::BTreeMap<String, serde_json::Value> {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
            .collect()
    }

    #[test]
    fn kubernetes_deployment_parses_and_validates() {
        let mut s = spec_for(kube(KubeKind::Deployment));
        s.count = 3;
        s.gpus = 1;
        let r = one(&s);
        assert_eq!(r.name(), "agent.yaml");
        let v: serde_json::Value = serde_saphyr::from_str(r.text()).expect("YAML");
        assert_eq!(v["apiVersion"], "apps/v1");
        assert_eq!(v["kind"], "Deployment");
        assert_eq!(v["metadata"]["namespace"], "demeter-prod");
        assert_eq!(v["metadata"]["labels"]["app"], "scalable-agent");
        assert_eq!(v["metadata"]["labels"]["scalable/target"], "hpc");
        assert_eq!(v["metadata"]["labels"]["scalable/tag"], "demeter");
        assert_eq!(v["spec"]["replicas"], 3);
        let pod = &v["spec"]["template"];
        for (k, val) in v["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(
                &pod["metadata"]["labels"][k], val,
                "selector matches the pods"
            );
        }
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["image"], "ghcr.io/example/scalable-agent:0.1");
        assert_eq!(c["command"][0], "/opt/scalable/bin/scalable-agent");
        for limits in ["requests", "limits"] {
            let res = &c["resources"][limits];
            assert_eq!(res["cpu"], "4");
            assert_eq!(res["memory"], "16640Mi");
            assert_eq!(res["nvidia.com/gpu"], "1");
        }
        let env = env_of(c);
        assert_eq!(env["SCALABLE_BROKER"]["value"], "login01:7420");
        assert_eq!(env["SCALABLE_TAGS"]["value"], "demeter");
        assert_eq!(env["SCALABLE_GPUS"]["value"], "1");
        assert_eq!(
            env["SCALABLE_TOKEN"]["valueFrom"]["secretKeyRef"],
            serde_json::json!({"name": "scalable-agent-token", "key": "token"})
        );
        assert!(env["SCALABLE_TOKEN"].get("value").is_none());
        assert_eq!(
            env["SCALABLE_PILOT_ID"]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        kubernetes_validate(r.text());
    }

    #[test]
    fn kubernetes_job_parses_and_validates() {
        let mut s = spec_for(kube(KubeKind::Job));
        s.count = 10;
        s.tag = None;
        s.cpus = 0;
        s.memory_bytes = None;
        s.lifetime = Some("4h".into());
        if let PilotProvider::Kubernetes {
            service_account, ..
        } = &mut s.provider
        {
            *service_account = Some("scalable-agents".into());
        }
        let r = one(&s);
        let v: serde_json::Value = serde_saphyr::from_str(r.text()).expect("YAML");
        assert_eq!(v["apiVersion"], "batch/v1");
        assert_eq!(v["kind"], "Job");
        assert_eq!(v["spec"]["parallelism"], 10);
        assert_eq!(v["spec"]["backoffLimit"], 20);
        assert!(v["spec"].get("completions").is_none());
        assert!(v["metadata"]["labels"].get("scalable/tag").is_none());
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "OnFailure");
        assert_eq!(pod["serviceAccountName"], "scalable-agents");
        let c = &pod["containers"][0];
        assert!(
            c.get("resources").is_none(),
            "auto resources request nothing"
        );
        let env = env_of(c);
        assert_eq!(env["SCALABLE_LIFETIME"]["value"], "4h");
        assert!(!env.contains_key("SCALABLE_TAGS"));
        assert!(!env.contains_key("SCALABLE_CPUS"));
        kubernetes_validate(r.text());
    }

    #[test]
    fn kubernetes_refuses_names_it_cannot_use() {
        let with = |edit: &dyn Fn(&mut PilotSpec)| {
            let mut s = spec_for(kube(KubeKind::Job));
            edit(&mut s);
            err(&s)
        };
        let name = |n: &'static str| {
            move |s: &mut PilotSpec| {
                if let PilotProvider::Kubernetes { name, .. } = &mut s.provider {
                    *name = n.into();
                }
            }
        };
        assert_eq!(
            with(&name("Scalable_Agents")).to_string(),
            "kubernetes.name: \"Scalable_Agents\" is not a Kubernetes DNS label (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63)"
        );
        assert_eq!(field_of(&with(&name("a.b"))), "kubernetes.name");
        assert_eq!(
            field_of(&with(&|s| s.tag = Some("two words".into()))),
            "tag"
        );
        assert_eq!(field_of(&with(&|s| s.target = "-x".into())), "target");
        assert_eq!(
            field_of(&with(&|s| s.token_env_secret = Some("My Secret".into()))),
            "token_env_secret"
        );
        assert_eq!(field_of(&with(&|s| s.image = None)), "image");
        let mut s = spec(kube(KubeKind::Deployment));
        s.idle_timeout = Some("5m".into());
        assert_eq!(
            err(&s).to_string(),
            "idle_timeout: a Deployment restarts agents that leave; use kind Job for pilots that leave on their own, or leave it unset"
        );
    }

    #[test]
    fn yaml_quote_round_trips_through_yaml_1_1_and_1_2_parsers() {
        let values: Vec<&str> = HOSTILE
            .iter()
            .copied()
            .chain([
                "yes",
                "on",
                "0755",
                "1e3",
                "null",
                "~",
                "- a",
                "{a: b}",
                "a: b",
                "tab\there",
                "cr\rlf",
                "nel\u{85}x",
                "ls\u{2028}ps\u{2029}",
                "bom\u{feff}",
                "del\u{7f}",
                "bell\u{7}",
                "é ✓ 😀",
            ])
            .collect();
        let doc: String = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("k{i}: {}\n", yaml_quote(v)))
            .collect();
        // YAML 1.2 (serde-saphyr, what we parse with).
        let parsed: std::collections::BTreeMap<String, String> =
            serde_saphyr::from_str(&doc).expect("YAML 1.2");
        for (i, v) in values.iter().enumerate() {
            assert_eq!(parsed[&format!("k{i}")], *v);
        }
        // YAML 1.1 (PyYAML, as kubectl's go-yaml and cloud-init read it); it
        // comes with kubernetes-validate.
        let have = std::process::Command::new("python3")
            .args(["-c", "import yaml, kubernetes_validate"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(have, "{KUBE_VALIDATE_MISSING}");
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, json, yaml; sys.stdout.write(json.dumps(yaml.safe_load(sys.stdin.read())))",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(doc.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let parsed: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(&out.stdout).expect("PyYAML gave strings");
        for (i, v) in values.iter().enumerate() {
            assert_eq!(parsed[&format!("k{i}")], *v);
        }
    }

    // ---------------------------------------------------------------- tokens

    #[test]
    fn no_token_is_ever_rendered() {
        // The token is no input of `render`; what is checked is that no output
        // carries one by any other road: no --token flag, SCALABLE_TOKEN only
        // from a secret, the VM token file only from the secret store.
        for provider in all_providers() {
            let s = spec_for(provider);
            for r in render(&s).unwrap() {
                let text = r.text();
                assert!(
                    !text.contains("--token ") && !text.contains("--token="),
                    "{text}"
                );
                assert!(
                    !text.contains("--token\n") && !text.contains("--token \\"),
                    "{text}"
                );
                match &r {
                    Rendered::Json { text, .. } => {
                        let v: serde_json::Value = serde_json::from_str(text).unwrap();
                        let c = &v["containerDefinitions"][0];
                        assert!(c["environment"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .all(|e| e["name"] != "SCALABLE_TOKEN"));
                        assert_eq!(c["secrets"][0]["name"], "SCALABLE_TOKEN");
                    }
                    Rendered::Yaml { text, .. } => {
                        let v: serde_json::Value = serde_saphyr::from_str(text).unwrap();
                        let env = env_of(&v["spec"]["template"]["spec"]["containers"][0]);
                        assert!(env["SCALABLE_TOKEN"].get("value").is_none());
                        assert!(env["SCALABLE_TOKEN"]["valueFrom"]["secretKeyRef"].is_object());
                    }
                    Rendered::Script { text, .. } => {
                        assert!(!text.contains("SCALABLE_TOKEN"), "{text}");
                        assert!(text.contains("--token-file "), "{text}");
                    }
                }
            }
        }
    }
}
