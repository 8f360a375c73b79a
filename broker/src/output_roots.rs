//! Where a task's declared outputs may be: inside the task's own directory
//! (its `workdir:`, else the directory `submit` ran in), or under a root the
//! broker's manifest allows (`project.output_roots`).
//!
//! The rule is checked at submit (the first and last task of every job, so a
//! workflow that breaks it is refused with exit 2 before anything is stored)
//! and again by the broker before it restores or saves a cached output, since
//! a task in the middle of a `foreach` may render another path. Paths are
//! compared after resolving `.` and `..` by their text: a symlink inside the
//! task's directory is the user's own redirection, as `workdir:` is.
//!
//! Only the broker's own manifest can allow a root: the broker is the one that
//! writes there, so a manifest sent with `submit` cannot widen it.
//!
//! This module decides; it must not read or write files.

use std::path::{Component, Path, PathBuf};

use scalable_common::manifest::Manifest;
use scalable_common::workflow::{JobDef, JobTemplates};

/// The directories outside a task's own where outputs are allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputRoots {
    roots: Vec<PathBuf>,
}

impl OutputRoots {
    /// The roots of the broker's manifest (none without one).
    pub fn from_manifest(manifest: Option<&Manifest>) -> OutputRoots {
        let roots = manifest
            .map(|m| {
                m.project
                    .output_roots
                    .iter()
                    .filter_map(|r| resolve(Path::new(r)))
                    .collect()
            })
            .unwrap_or_default();
        OutputRoots { roots }
    }

    /// Where output `declared` of a task running in `task_dir` is, if the
    /// rule allows it there; else one line saying why not, with the fix.
    pub fn check(&self, task_dir: &Path, declared: &str) -> Result<PathBuf, String> {
        let refuse = |why: &str| {
            let allowed = if self.roots.is_empty() {
                "no output_roots in the broker's manifest".to_string()
            } else {
                let shown: Vec<String> =
                    self.roots.iter().map(|r| r.display().to_string()).collect();
                format!("output_roots: {}", shown.join(", "))
            };
            Err(format!(
                "output {declared:?} {why} (declare outputs inside the task's directory {}; {allowed})",
                task_dir.display()
            ))
        };
        if declared.is_empty() {
            return refuse("is empty");
        }
        let Some(dir) = resolve(task_dir) else {
            return refuse("has no place: the task's directory is not absolute");
        };
        let Some(full) = resolve(&dir.join(declared)) else {
            return refuse("climbs above /");
        };
        if full != dir && full.starts_with(&dir) {
            return Ok(full);
        }
        if self.roots.iter().any(|r| full != *r && full.starts_with(r)) {
            return Ok(full);
        }
        if full == dir {
            return refuse("is the task's directory itself");
        }
        refuse("is outside the task's directory")
    }

    /// The submit-time check of one job: its first and last task's outputs,
    /// against their directories (`run_cwd`, or the job's `workdir:`).
    /// Templates that do not render are left to the template checks.
    pub fn check_job(
        &self,
        job: &JobDef,
        templates: &JobTemplates,
        run_cwd: &str,
    ) -> Result<(), String> {
        if job.outputs.is_empty() {
            return Ok(());
        }
        let count = job.items.count_saturating();
        let sample = [0, count.saturating_sub(1)];
        for index in sample.into_iter().take(count.min(2) as usize) {
            let Ok(outputs) = templates.outputs(job, index, 0) else {
                continue;
            };
            let dir = match templates.workdir(job, index, 0) {
                Ok(Some(w)) => Path::new(run_cwd).join(w),
                Ok(None) => PathBuf::from(run_cwd),
                Err(_) => continue,
            };
            for o in &outputs {
                self.check(&dir, o)
                    .map_err(|e| format!("job \"{}\" task {index}: {e}", job.name))?;
            }
        }
        Ok(())
    }
}

/// `p` made absolute-looking with `.` and `..` resolved by text; `None` for
/// a relative path or one whose `..` climbs above `/`.
fn resolve(p: &Path) -> Option<PathBuf> {
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(r: &[&str]) -> OutputRoots {
        OutputRoots {
            roots: r.iter().map(PathBuf::from).collect(),
        }
    }

    #[test]
    fn outputs_stay_inside_the_task_directory() {
        let none = OutputRoots::default();
        let dir = Path::new("/work/run");
        assert_eq!(
            none.check(dir, "out/a.txt").unwrap(),
            Path::new("/work/run/out/a.txt")
        );
        assert_eq!(
            none.check(dir, "./out/../b.txt").unwrap(),
            Path::new("/work/run/b.txt")
        );
        assert_eq!(
            none.check(dir, "/work/run/c").unwrap(),
            Path::new("/work/run/c")
        );
        for bad in [
            "../escape.txt",
            "out/../../x",
            "/etc/passwd",
            ".",
            "",
            "../../../../../../x",
        ] {
            assert!(none.check(dir, bad).is_err(), "{bad}");
        }
        assert_eq!(
            none.check(dir, "../escape.txt").unwrap_err(),
            "output \"../escape.txt\" is outside the task's directory (declare outputs inside the task's directory /work/run; no output_roots in the broker's manifest)"
        );
    }

    #[test]
    fn a_root_of_the_manifest_allows_paths_under_it() {
        let r = roots(&["/data/shared"]);
        let dir = Path::new("/work/run");
        assert!(r.check(dir, "/data/shared/x/y.nc").is_ok());
        assert!(r.check(dir, "../../data/shared/z").is_ok());
        assert!(
            r.check(dir, "/data/shared").is_err(),
            "the root itself is a directory"
        );
        assert!(r.check(dir, "/data/shared/../other/x").is_err());
        let e = r.check(dir, "/data/sharedx/a").unwrap_err();
        assert!(e.ends_with("output_roots: /data/shared)"), "{e}");
    }
}
