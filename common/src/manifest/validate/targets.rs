//! Targets: each `targets.NAME` mapping, its provider, the keys that
//! provider takes, and the options every target has (`max_workers`,
//! `containers`, `tags`, `adaptive`).
//!
//! Provider-specific options are read by `providers`; this module must not
//! compare targets with components (that is `cross`).

use super::super::schema::*;
use super::super::tree::{Entry, Node};
use super::super::{join, Pos};
use super::values::{positive, IntRule, M};
use super::{synonym, unknown_key, Ck, Kind};
use super::{PROVIDERS, TARGET_KEYS, WORKERS_MAX};
use crate::suggest::did_you_mean_within;

impl Ck<'_> {
    pub(super) fn targets<'n>(&mut self, node: &'n Node) -> Vec<(Target, &'n Entry)> {
        let Some(m) = self.map(
            node,
            "targets",
            Pos::default(),
            "e.g. targets: {local: {provider: local}}".to_string(),
        ) else {
            return Vec::new();
        };
        if m.entries.is_empty() && !self.overlay_mode() {
            self.at(
                node,
                "targets",
                "no targets".to_string(),
                Some("add one, e.g. local: {provider: local}".to_string()),
            );
        }
        let mut out = Vec::new();
        for e in self.named_entries(&m, "targets", "target", "provider: local") {
            if let Some(t) = self.target(e, None) {
                out.push((t, e));
            }
        }
        out
    }

    /// One target. `base_kind`: in an overlay, the provider the manifest gives it.
    pub(super) fn target(&mut self, e: &Entry, base_kind: Option<Kind>) -> Option<Target> {
        let name = &e.key;
        let path = join("targets", name);
        let m = self.map(
            &e.value,
            &path,
            e.key_at,
            format!("e.g. {name}: {{provider: slurm, queue: batch}}"),
        )?;
        self.require(&m, "provider", "valid: local, slurm, aws, gcp, kubernetes");
        let kind = match self.field(&m, "provider") {
            Some(p) => self.choice(p, &join(&path, "provider"), "provider", PROVIDERS),
            None => base_kind,
        };
        match kind {
            Some(kind) => {
                let mut allowed: Vec<&str> = kind.keys().to_vec();
                allowed.extend_from_slice(TARGET_KEYS);
                let provider = kind.name();
                let budget = self.budget;
                self.keys(&m, &allowed, |k| {
                    let hint = synonym(Some(kind), k)
                        .filter(|s| allowed.contains(s))
                        .map(|s| format!("did you mean {s:?}?"))
                        .or_else(|| did_you_mean_within(budget, k, allowed.iter().copied()))
                        .unwrap_or_else(|| format!("valid: {}", allowed.join(", ")));
                    (format!("unknown key {k:?} for provider {provider}"), hint)
                });
            }
            None => {
                // The provider is unknown or missing: only keys that no
                // provider takes can be called unknown.
                let mut all: Vec<&str> = TARGET_KEYS.to_vec();
                for (_, k) in PROVIDERS {
                    for key in k.keys() {
                        if !all.contains(key) {
                            all.push(key);
                        }
                    }
                }
                let budget = self.budget;
                self.keys(&m, &all, |k| unknown_key(budget, k, &all, synonym(None, k)));
            }
        }

        let max_workers = self.int_field(
            &m,
            "max_workers",
            IntRule {
                zero_hint: Some(
                    "use at least 1; to scale to zero, use adaptive: {minimum: 0, maximum: N}",
                ),
                ..positive(WORKERS_MAX)
            },
        );
        let containers = self.containers(&m);
        let tags = self.list_field(&m, "tags", "[demeter, postprocess]");
        let adaptive = self
            .field(&m, "adaptive")
            .and_then(|n| self.adaptive(n, &join(&path, "adaptive"), max_workers));

        let shared_fs = self.bool_field(&m, "shared_fs");
        let storage = self.storage(&m, shared_fs);
        let kind = kind?;
        let (provider, worker) = match kind {
            Kind::Local => self.local(&m),
            Kind::Slurm => self.slurm(&m),
            Kind::Aws => self.aws(&m),
            Kind::Gcp => self.gcp(&m),
            Kind::Kubernetes => self.kubernetes(&m),
        };
        if self.overlay_mode() {
            return None;
        }
        Some(Target {
            name: name.clone(),
            provider,
            max_workers: max_workers.or(adaptive.map(|a| a.maximum)).unwrap_or(1),
            containers: containers.unwrap_or(ContainerPolicy::Auto),
            tags,
            adaptive,
            worker,
            shared_fs: shared_fs.unwrap_or(true),
            storage,
        })
    }

    /// `storage: s3://bucket/prefix`, for a target without a shared filesystem.
    fn storage(&mut self, m: &M, shared_fs: Option<bool>) -> Option<String> {
        let node = self.field(m, "storage")?;
        let url = self.line_field(m, "storage")?;
        let path = join(&m.path, "storage");
        if let Err((why, hint)) = check_storage(&url) {
            self.at(node, &path, why, Some(hint.into()));
            return None;
        }
        if shared_fs != Some(false) {
            let hint = "add shared_fs: false to this target, or remove storage";
            self.at(
                node,
                &path,
                "storage is used only by a target with shared_fs: false".into(),
                Some(hint.into()),
            );
            return None;
        }
        Some(url)
    }
}

/// A storage URL: `s3://BUCKET` or `s3://BUCKET/PREFIX`, the bucket named as
/// S3 allows (3-63 of `a-z 0-9 . -`), the prefix plain text.
pub fn check_storage(url: &str) -> Result<(), (String, &'static str)> {
    let hint = "write s3://bucket/prefix";
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err((format!("storage {url:?} is not an s3:// URL"), hint));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'));
    if !bucket_ok {
        return Err((
            format!("storage bucket {bucket:?} is not a valid S3 bucket name"),
            hint,
        ));
    }
    if prefix.split('/').any(|p| p == "..") || prefix.chars().any(|c| c.is_control() || c == ' ') {
        return Err((
            format!("storage prefix {prefix:?} has a space, a control character or .."),
            hint,
        ));
    }
    Ok(())
}
