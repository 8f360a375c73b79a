//! Where things are in a workflow file: the key paths' line and column
//! (`Spans`), problems before they have a place (`Issue`), and `finish`, which
//! places, orders and caps them as [`LocatedErrors`].
//!
//! This module must not decide what is wrong: `convert` and `check` find the
//! issues; here they only get their place in the file.

use std::collections::HashMap;

use serde_saphyr::{Location, Spanned};

use crate::located::{Hint, LocatedError, LocatedErrors};

/// A problem before it is given a place in the file.
pub(super) struct Issue {
    path: String,
    message: String,
    hint: Option<String>,
}

impl Issue {
    pub(super) fn new(path: impl Into<String>, message: impl Into<String>) -> Issue {
        Issue {
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub(super) fn hint(mut self, hint: Option<String>) -> Issue {
        self.hint = hint;
        self
    }
}

/// Where each key path's value starts in the file; empty when checking a
/// `WorkflowDef` that has no file behind it.
#[derive(Default)]
pub(super) struct Spans(HashMap<String, (usize, usize)>);

impl Spans {
    pub(super) fn add<T>(&mut self, path: &str, value: &Spanned<T>) {
        self.add_location(path, &value.referenced);
    }

    pub(super) fn add_location(&mut self, path: &str, loc: &Location) {
        if loc.line() > 0 {
            self.0.insert(
                path.to_string(),
                (loc.line() as usize, loc.column() as usize),
            );
        }
    }

    /// The location of `path`, or of its nearest ancestor that has one, so an
    /// error about `jobs[2].command` points at least at job 2.
    pub(super) fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(loc) = self.0.get(p) {
                return Some(*loc);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// Places issues in the file, orders them as they appear and caps their number.
pub(super) fn finish(file: &str, issues: Vec<Issue>, spans: &Spans) -> Result<(), LocatedErrors> {
    if issues.is_empty() {
        return Ok(());
    }
    let mut errors: Vec<LocatedError> = issues
        .into_iter()
        .map(|i| {
            let (line, col) = spans.find(&i.path).unwrap_or((0, 0));
            LocatedError {
                file: file.to_string(),
                line,
                col,
                path: i.path,
                what: i.message,
                // Workflow errors print every hint bare, as they always have.
                hint: i.hint.map(Hint::Plain),
            }
        })
        .collect();
    // Stable: errors without a line keep the order they were found in.
    errors.sort_by_key(|e| (e.line == 0, e.line, e.col));
    Err(LocatedErrors::capped(file, errors))
}
