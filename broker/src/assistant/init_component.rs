//! `scalable init-component`'s heuristic: a project directory's files
//! (`setup.py`, `pyproject.toml`, `requirements*.txt`, `environment.yml`,
//! `Dockerfile*`, `README*`, a data directory) read within bounds
//! ([`scan`]), plus the advice from past telemetry of a task of that name if
//! the broker has one, → a component and a task binding in seed 000's shape
//! ([`propose`]).
//!
//! Owns which files are read and what each says. Must not: read more than
//! [`FILE_BYTES_MAX`] of a file or [`FILES_MAX`] files, follow what a file
//! says to other paths, validate, or print.

use std::path::Path;

use serde::Serialize;

use super::yaml::Yaml;
use crate::advisor::Advice;
use scalable_common::input_file::read_input_file;

/// Of each file, at most this much is read.
pub const FILE_BYTES_MAX: usize = 256 << 10;
/// Files looked at in the directory (its top level only).
pub const FILES_MAX: usize = 200;

/// Libraries that make a task a number cruncher (4 cpus, 16G).
const SCIENCE: &[&str] = &[
    "numpy",
    "pandas",
    "scipy",
    "xarray",
    "netcdf4",
    "gdal",
    "rasterio",
    "geopandas",
    "dask",
    "scikit-learn",
    "statsmodels",
    "numba",
];
/// Libraries of model training (8 cpus, 32G; a GPU with CUDA).
const TRAINING: &[&str] = &["torch", "tensorflow", "jax", "keras", "pytorch"];
/// Words of a README that become tags when they appear.
const TAG_WORDS: &[(&str, &str)] = &[
    ("lulc", "lulcc"),
    ("land-use", "lulcc"),
    ("land use", "lulcc"),
    ("downscal", "downscaling"),
    ("gcam", "gcam"),
    ("hydrolog", "hydrology"),
    ("climate", "climate"),
    ("energy", "energy"),
    ("crop", "agriculture"),
    ("agricultur", "agriculture"),
    ("population", "population"),
    ("machine learning", "ml"),
    ("neural", "ml"),
    ("simulat", "simulation"),
    ("netcdf", "netcdf"),
    ("image", "imaging"),
];
const TAGS_MAX: usize = 4;

/// What the files of the directory say.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Findings {
    /// The files read, by name.
    pub files: Vec<String>,
    pub package: Option<String>,
    pub version: Option<String>,
    pub python: Option<String>,
    pub dependencies: Vec<String>,
    /// `owner` of a GitHub URL in the metadata.
    pub owner: Option<String>,
    pub dockerfile: Option<String>,
    pub base_image: Option<String>,
    /// `ENV` keys of the Dockerfile (values are not kept).
    pub env_keys: Vec<String>,
    pub volumes: Vec<String>,
    pub data_dir: Option<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("{0}: not a directory")]
    NotDirectory(String),
    #[error("{0}: cannot read the directory: {1}")]
    Unreadable(String, String),
}

/// Reads what the directory holds (its top level; bounded).
pub fn scan(dir: &Path) -> Result<Findings, ScanError> {
    let shown = dir.display().to_string();
    if !dir.is_dir() {
        return Err(ScanError::NotDirectory(shown));
    }
    let mut names: Vec<(String, bool)> = std::fs::read_dir(dir)
        .map_err(|e| ScanError::Unreadable(shown.clone(), e.to_string()))?
        .filter_map(Result::ok)
        .take(FILES_MAX)
        .map(|e| {
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            (e.file_name().to_string_lossy().into_owned(), is_dir)
        })
        .collect();
    names.sort();
    let mut f = Findings::default();
    let read = |name: &str| read_input_file(&dir.join(name), FILE_BYTES_MAX).ok();
    for (name, is_dir) in &names {
        if *is_dir {
            let lower = name.to_ascii_lowercase();
            if f.data_dir.is_none()
                && (lower == "data" || lower.ends_with("_data") || lower.ends_with("-data"))
            {
                f.data_dir = Some(name.clone());
            }
            continue;
        }
        let Some(text) = read(name) else { continue };
        let lower = name.to_ascii_lowercase();
        let used = if lower == "setup.py" || lower == "setup.cfg" {
            setup_py(&text, &mut f);
            true
        } else if lower == "pyproject.toml" {
            pyproject(&text, &mut f);
            true
        } else if lower.starts_with("requirements") && lower.ends_with(".txt") {
            requirements(&text, &mut f);
            true
        } else if lower == "environment.yml" || lower == "environment.yaml" {
            environment(&text, &mut f);
            true
        } else if lower.starts_with("dockerfile") {
            // Dockerfile.scalable wins over a plain Dockerfile.
            if f.dockerfile.is_none() || lower.ends_with(".scalable") {
                dockerfile(name, &text, &mut f);
            }
            true
        } else if lower.starts_with("readme") {
            readme(&text, &mut f);
            true
        } else {
            false
        };
        if used {
            f.files.push(name.clone());
        }
    }
    f.dependencies.sort();
    f.dependencies.dedup();
    Ok(f)
}

/// `key = "value"` or `key="value"` (setup.py and TOML alike).
fn quoted_value(text: &str, key: &str) -> Option<String> {
    for line in text.lines() {
        let l = line.trim();
        let Some(rest) = l.strip_prefix(key) else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(rest) = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':')) else {
            continue;
        };
        let rest = rest.trim();
        let q = rest.chars().next()?;
        if q == '"' || q == '\'' {
            let v: String = rest[1..].chars().take_while(|c| *c != q).collect();
            if !v.is_empty() {
                return Some(v);
            }
        }
    }
    None
}

fn owner_of(text: &str) -> Option<String> {
    let i = text.find("github.com/")?;
    let owner: String = text[i + 11..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!owner.is_empty()).then(|| owner.to_ascii_lowercase())
}

fn dep_name(spec: &str) -> Option<String> {
    let name: String = spec
        .trim()
        .trim_matches(|c| c == '"' || c == '\'' || c == ',')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    (!name.is_empty() && !name.starts_with('#')).then(|| name.to_ascii_lowercase())
}

fn setup_py(text: &str, f: &mut Findings) {
    f.package = f.package.take().or_else(|| quoted_value(text, "name"));
    f.version = f.version.take().or_else(|| quoted_value(text, "version"));
    f.python = f
        .python
        .take()
        .or_else(|| quoted_value(text, "python_requires"));
    f.owner = f.owner.take().or_else(|| owner_of(text));
    if let Some(i) = text.find("install_requires") {
        let rest = &text[i..];
        if let (Some(s), Some(e)) = (rest.find('['), rest.find(']')) {
            if s < e {
                f.dependencies
                    .extend(rest[s + 1..e].split(',').filter_map(dep_name));
            }
        }
    }
}

fn pyproject(text: &str, f: &mut Findings) {
    f.package = f.package.take().or_else(|| quoted_value(text, "name"));
    f.version = f.version.take().or_else(|| quoted_value(text, "version"));
    f.python = f
        .python
        .take()
        .or_else(|| quoted_value(text, "requires-python"));
    f.owner = f.owner.take().or_else(|| owner_of(text));
    if let Some(i) = text.find("dependencies") {
        let rest = &text[i..];
        if let (Some(s), Some(e)) = (rest.find('['), rest.find(']')) {
            if s < e {
                f.dependencies
                    .extend(rest[s + 1..e].split(',').filter_map(dep_name));
            }
        }
    }
    if let Some(i) = text.find("keywords") {
        let rest = &text[i..];
        if let (Some(s), Some(e)) = (rest.find('['), rest.find(']')) {
            if s < e {
                for k in rest[s + 1..e].split(',').filter_map(dep_name) {
                    add_tag(f, &k);
                }
            }
        }
    }
}

fn requirements(text: &str, f: &mut Findings) {
    f.dependencies.extend(
        text.lines()
            .filter(|l| !l.trim_start().starts_with(['#', '-']))
            .filter_map(dep_name),
    );
}

fn environment(text: &str, f: &mut Findings) {
    let Ok(y) = Yaml::parse(text) else { return };
    if let Some(Yaml::List(deps)) = y.get("dependencies") {
        for d in deps {
            match d {
                Yaml::Str(s) => {
                    let name = s.split(['=', '<', '>']).next().unwrap_or("");
                    if name.starts_with("python") {
                        f.python = f
                            .python
                            .take()
                            .or_else(|| s.strip_prefix("python").map(str::to_string));
                    } else if let Some(n) = dep_name(name) {
                        f.dependencies.push(n);
                    }
                }
                Yaml::Map(_) => {
                    if let Some(Yaml::List(pip)) = d.get("pip") {
                        f.dependencies
                            .extend(pip.iter().filter_map(|p| p.as_str().and_then(dep_name)));
                    }
                }
                _ => {}
            }
        }
    }
}

fn dockerfile(name: &str, text: &str, f: &mut Findings) {
    f.dockerfile = Some(name.to_string());
    for line in text.lines() {
        let l = line.trim();
        let mut parts = l.splitn(2, char::is_whitespace);
        let word = parts.next().unwrap_or("").to_ascii_uppercase();
        let rest = parts.next().unwrap_or("").trim();
        match word.as_str() {
            "FROM" => f.base_image = rest.split_whitespace().next().map(str::to_string),
            "ENV" => {
                let key = rest.split(['=', ' ']).next().unwrap_or("");
                if !key.is_empty() && !f.env_keys.iter().any(|k| k == key) {
                    f.env_keys.push(key.to_string());
                }
            }
            "VOLUME" => f.volumes.extend(
                rest.trim_matches(['[', ']'])
                    .split([',', ' '])
                    .map(|v| v.trim_matches(['"', ' ']).to_string())
                    .filter(|v| v.starts_with('/')),
            ),
            _ => {}
        }
    }
}

fn add_tag(f: &mut Findings, tag: &str) {
    if f.tags.len() < TAGS_MAX && !f.tags.iter().any(|t| t == tag) {
        f.tags.push(tag.to_string());
    }
}

fn readme(text: &str, f: &mut Findings) {
    let lower = text.to_ascii_lowercase();
    f.owner = f.owner.take().or_else(|| owner_of(text));
    for (word, tag) in TAG_WORDS {
        if lower.contains(word) {
            add_tag(f, tag);
        }
    }
}

/// The proposal: a component and its task, with why for each choice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proposal {
    pub name: String,
    pub image: Option<String>,
    pub cpus: u32,
    pub memory: String,
    pub gpus: u32,
    pub tags: Vec<String>,
    pub mounts: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    pub task: String,
    pub cache: bool,
    pub retries: u32,
    pub reasons: Vec<String>,
}

pub fn propose(name: &str, f: &Findings, history: Option<&Advice>) -> Proposal {
    let mut reasons = Vec::new();
    let has = |set: &[&str]| f.dependencies.iter().any(|d| set.contains(&d.as_str()));
    let (mut cpus, mut memory, mut gpus) = if has(TRAINING) {
        reasons.push("model-training libraries among the dependencies: 8 cpus, 32G".to_string());
        (
            8,
            "32G".to_string(),
            u32::from(f.dependencies.iter().any(|d| d.contains("cuda"))),
        )
    } else if has(SCIENCE) {
        reasons.push("scientific Python libraries among the dependencies: 4 cpus, 16G".to_string());
        (4, "16G".to_string(), 0)
    } else {
        reasons.push("no heavy dependency found: 1 cpu, 2G".to_string());
        (1, "2G".to_string(), 0)
    };
    if let Some(a) = history {
        if let Some(r) = a.resources.values().next() {
            cpus = r.cpus;
            memory = r.memory.clone();
            gpus = 0;
            reasons.push(format!(
                "past telemetry of task {} ({} attempts, {}): cpus {cpus}, memory {memory}",
                a.task, a.evidence.attempts_analyzed, a.method
            ));
        }
    }
    let image = f.dockerfile.as_ref().map(|d| {
        let owner = f.owner.clone().unwrap_or_else(|| "OWNER".into());
        let version = f.version.clone().unwrap_or_else(|| "latest".into());
        reasons.push(format!(
            "{d} found: an image built from it, tagged with the package version"
        ));
        format!("ghcr.io/{owner}/{name}:{version}")
    });
    let mut mounts = Vec::new();
    let mut env = Vec::new();
    if let Some(d) = &f.data_dir {
        mounts.push((format!("./{d}"), "/data".to_string()));
        env.push((format!("{}_DATA", env_name(name)), "/data".to_string()));
        reasons.push(format!("data directory {d}/ mounted at /data"));
    }
    for v in f.volumes.iter().filter(|v| v.as_str() != "/data") {
        mounts.push((
            format!("./{}", v.trim_start_matches('/').replace('/', "_")),
            v.clone(),
        ));
    }
    let mut tags = f.tags.clone();
    if tags.is_empty() {
        tags.push(name.to_string());
    }
    Proposal {
        name: name.into(),
        image,
        cpus,
        memory,
        gpus,
        tags,
        mounts,
        env,
        task: format!("run_{}", env_name(name).to_ascii_lowercase()),
        cache: true,
        retries: history.map_or(1, |_| 2),
        reasons,
    }
}

fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The fragment to paste: `components:` and `tasks:`.
pub fn fragment(p: &Proposal) -> Yaml {
    let mut root = Yaml::map();
    let c = root.entry("components").entry(&p.name);
    if let Some(i) = &p.image {
        c.set("image", Yaml::str(i));
    }
    c.set("cpus", Yaml::Int(i64::from(p.cpus)));
    c.set("memory", Yaml::str(&p.memory));
    if p.gpus > 0 {
        c.set("gpus", Yaml::Int(i64::from(p.gpus)));
    }
    c.set("tags", Yaml::strs(&p.tags));
    if !p.mounts.is_empty() {
        let m = c.entry("mounts");
        for (h, k) in &p.mounts {
            m.set(h, Yaml::str(k));
        }
    }
    if !p.env.is_empty() {
        let e = c.entry("env");
        for (k, v) in &p.env {
            e.set(k, Yaml::str(v));
        }
    }
    let t = root.entry("tasks").entry(&p.task);
    t.set("component", Yaml::str(&p.name));
    t.set("cache", Yaml::Bool(p.cache));
    t.set("retries", Yaml::Int(i64::from(p.retries)));
    root
}
