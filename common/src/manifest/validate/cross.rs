//! Cross-checks of components against the targets that serve them: worker
//! sizes and container runtimes (see the `manifest` module doc for which
//! targets count).

use std::collections::HashMap;

use super::super::join;
use super::super::schema::*;
use super::super::tree::{Entry, Node};
use super::{Ck, ComponentAt, Kind, PROVIDERS};
use crate::units::format_size;

/// The dimensions of a worker, as indices into [`Offer`]'s arrays.
#[derive(Clone, Copy)]
enum Dim {
    Cpus = 0,
    Memory = 1,
    Gpus = 2,
}

/// What a set of targets offers a component, folded target by target.
#[derive(Clone, Copy, Default)]
struct Offer<'t> {
    count: usize,
    first: Option<&'t Target>,
    /// Per dimension: some worker's size is unknown (it may fit anything).
    unknown: [bool; 3],
    /// Per dimension: the largest known worker and its target.
    largest: [Option<(u64, &'t Target)>; 3],
    /// Some target can run images.
    containers: bool,
}

impl<'t> Offer<'t> {
    fn add(&mut self, t: &'t Target) {
        self.count += 1;
        self.first.get_or_insert(t);
        let w = &t.worker;
        let caps = [w.cpus.map(u64::from), w.memory_bytes, w.gpus.map(u64::from)];
        for (i, cap) in caps.into_iter().enumerate() {
            match cap {
                None => self.unknown[i] = true,
                Some(c) => {
                    if self.largest[i].is_none_or(|(l, _)| c > l) {
                        self.largest[i] = Some((c, t));
                    }
                }
            }
        }
        self.containers |= t.containers != ContainerPolicy::None;
    }
}

impl Ck<'_> {
    /// Each component against the workers of the targets that serve it:
    /// the selected target, or every target (see the `manifest` module doc).
    pub(super) fn fits(
        &mut self,
        components: &[(Component, ComponentAt)],
        targets: &[(Target, &Entry)],
        selected: Option<&str>,
    ) {
        // Untagged targets serve every component; tagged ones only those they
        // name. Folding them first keeps this linear in the manifest's size.
        let mut generic = Offer::default();
        let mut by_tag: HashMap<&str, Vec<&Target>> = HashMap::new();
        for (t, _) in targets {
            if selected.is_some_and(|s| s != t.name) {
                continue;
            }
            if t.tags.is_empty() {
                generic.add(t);
            }
            for tag in &t.tags {
                let list = by_tag.entry(tag.as_str()).or_default();
                // A tag written twice on one target counts once.
                if !list.last().is_some_and(|last| std::ptr::eq(*last, t)) {
                    list.push(t);
                }
            }
        }
        for (c, at) in components {
            let mut offer = generic;
            for t in by_tag.get(c.name.as_str()).into_iter().flatten() {
                offer.add(t);
            }
            if offer.count == 0 {
                if selected.is_none() && !targets.is_empty() {
                    self.at_key(
                        at.key,
                        &join("components", &c.name),
                        format!("no target serves component {:?}", c.name),
                        Some(format!(
                            "every target has tags: add {} to the tags of one",
                            c.name
                        )),
                    );
                }
                continue;
            }
            let path = |k: &str| join(&join("components", &c.name), k);
            if let Some(node) = at.cpus {
                self.dimension(node, &path("cpus"), Dim::Cpus, u64::from(c.cpus), &offer);
            }
            if let (Some(node), Some(v)) = (at.memory, c.memory_bytes) {
                self.dimension(node, &path("memory"), Dim::Memory, v, &offer);
            }
            if let Some(node) = at.gpus.filter(|_| c.gpus > 0) {
                self.dimension(node, &path("gpus"), Dim::Gpus, u64::from(c.gpus), &offer);
            }
            if let Some(node) = at.image.filter(|_| c.image.is_some()) {
                if !offer.containers {
                    let (message, hint) = match offer.first {
                        Some(t) if offer.count == 1 => (
                            format!(
                                "target {:?} has containers: none, so it cannot run images",
                                t.name
                            ),
                            format!(
                                "set containers: auto on targets.{}, or remove the image",
                                t.name
                            ),
                        ),
                        _ => (
                            format!(
                                "every target that serves {:?} has containers: none, so none can run images",
                                c.name
                            ),
                            "set containers: auto on one of them, or remove the image".to_string(),
                        ),
                    };
                    self.at(node, &path("image"), message, Some(hint));
                }
            }
        }
    }

    /// One dimension of a component against what `offer` gives: fine if a
    /// worker is large enough or of unknown size.
    fn dimension(&mut self, node: &Node, path: &str, dim: Dim, value: u64, offer: &Offer) {
        let i = dim as usize;
        if offer.unknown[i] {
            return;
        }
        let Some((cap, t)) = offer.largest[i] else {
            return;
        };
        if cap >= value {
            return;
        }
        let (name, show): (&str, fn(u64) -> String) = match dim {
            Dim::Cpus => ("cpus", |n| n.to_string()),
            Dim::Memory => ("memory", format_size),
            Dim::Gpus => ("gpus", |n| n.to_string()),
        };
        let subject = match (dim, value) {
            (Dim::Memory, _) => format!("{} is", show(value)),
            (Dim::Cpus, 1) => "1 cpu is".to_string(),
            (Dim::Gpus, 1) => "1 gpu is".to_string(),
            _ => format!("{value} {name} are"),
        };
        let message = if offer.count == 1 {
            format!(
                "{subject} more than any worker of target {:?} offers ({})",
                t.name,
                show(cap)
            )
        } else {
            format!(
                "{subject} more than any target's workers offer (the most is {}, on target {:?})",
                show(cap),
                t.name
            )
        };
        let kind = PROVIDERS
            .iter()
            .find(|(n, _)| *n == t.provider.name())
            .map_or(Kind::Local, |(_, k)| *k);
        let hint = format!(
            "raise targets.{}.{} or lower the {name}",
            t.name,
            kind.knob(name)
        );
        self.at(node, path, message, Some(hint));
    }
}
