//! The budget of rendering one task's templates: a template is user input
//! that the broker renders on its core task, so no render may run long or
//! produce much, whatever the template does (nested loops, string
//! repetition, joins, macro recursion).
//!
//! Owns the limits and their accounting: at most [`TEMPLATE_FUEL_MAX`]
//! minijinja instructions per templated string (minijinja's fuel) and over
//! all the strings of one list of one task (argv, env, outputs, ...), and at
//! most [`TEMPLATE_OUTPUT_BYTES_MAX`] bytes of output per list (a bounded
//! writer), so a job with many templated arguments is bounded too.
//!
//! Fuel counts instructions, not their cost: one builtin call over a huge
//! lazy sequence is one instruction that minijinja's own caps (range 100k
//! items, repetition 100 MB / 100M items, recursion 500) bound but do not
//! make cheap. `join`, the builtin a command line reaches for, is replaced by
//! [`bounded_join`], which stops at the output budget; the others (`list`,
//! `sum`, `sort`, `~` on a huge sequence) are not. Must not: know jobs,
//! fields or tasks; `template` names them in its errors.

use std::fmt::Write as _;
use std::io;

use minijinja::value::ValueKind;
use minijinja::{ErrorKind, Value};

/// Instructions one templated string, and one list of a task's templated
/// strings together, may run. `{{ item }}` takes a handful, a loop a few per
/// iteration; at this budget a render costs the core milliseconds.
pub const TEMPLATE_FUEL_MAX: u64 = 100_000;

/// Bytes one list of a task's templated strings (its argv, its env, ...) may
/// render to: well above what an argument can be (Linux caps one argv string
/// at 128 KiB), far below the message cap.
pub const TEMPLATE_OUTPUT_BYTES_MAX: usize = 1 << 20;

/// The hint shown with a template that exceeds its budget.
pub const TEMPLATE_BUDGET_HINT: &str =
    "a task's template must stay small: move loops and long strings into the command it runs";

/// What is left of one list's budget; start one per list of one task.
pub(super) struct Budget {
    fuel_left: u64,
    bytes_left: usize,
}

impl Budget {
    pub(super) fn new() -> Budget {
        Budget {
            fuel_left: TEMPLATE_FUEL_MAX,
            bytes_left: TEMPLATE_OUTPUT_BYTES_MAX,
        }
    }

    /// Renders `tmpl` (whose environment caps one render at
    /// [`TEMPLATE_FUEL_MAX`]) within what is left, and charges it.
    pub(super) fn render(
        &mut self,
        tmpl: &minijinja::Template<'_, '_>,
        ctx: Value,
    ) -> Result<String, minijinja::Error> {
        let mut out = BoundedOutput {
            bytes: Vec::new(),
            max_bytes: self.bytes_left,
        };
        let captured = tmpl.render_captured_to(ctx, &mut out)?;
        let spent = captured.state().fuel_levels().map_or(0, |(used, _)| used);
        if spent > self.fuel_left {
            return Err(minijinja::Error::from(ErrorKind::OutOfFuel));
        }
        self.fuel_left -= spent;
        self.bytes_left -= out.bytes.len();
        // minijinja writes whole `str`s, so the bytes are UTF-8; lossy is a guard.
        Ok(String::from_utf8(out.bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }
}

/// `kind: detail` of a minijinja error, without its `(in name:line)` suffix,
/// since our template names are internal ids; a spent budget says which.
pub(super) fn describe(err: &minijinja::Error) -> String {
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
pub(super) fn is_over_budget(err: &minijinja::Error) -> bool {
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

/// A render's output, refusing to grow past `max_bytes`.
struct BoundedOutput {
    bytes: Vec<u8>,
    max_bytes: usize,
}

impl io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > self.max_bytes {
            return Err(io::Error::other(OutputFull));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `join` within the output budget: the items of `value` (the characters of
/// a string) with `joiner` between them, refusing once the result would pass
/// [`TEMPLATE_OUTPUT_BYTES_MAX`] bytes or items, however long `value` is.
/// Unlike minijinja's builtin it takes no `attribute=` and joins only
/// scalars (strings, numbers, booleans): task items are scalars.
pub(super) fn bounded_join(
    value: &Value,
    joiner: Option<&str>,
) -> Result<String, minijinja::Error> {
    let joiner = joiner.unwrap_or("");
    let too_large = || {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("join result exceeds {TEMPLATE_OUTPUT_BYTES_MAX} bytes"),
        )
    };
    let mut out = CappedString(String::new());
    for (i, item) in value.try_iter()?.enumerate() {
        if i >= TEMPLATE_OUTPUT_BYTES_MAX {
            return Err(too_large());
        }
        if i > 0 {
            out.write_str(joiner).map_err(|_| too_large())?;
        }
        // Booleans as YAML and the task formatter spell them, not `True`.
        match (item.as_str(), item.kind()) {
            (Some(s), _) => out.write_str(s),
            (None, ValueKind::Bool) => out.write_str(if item.is_true() { "true" } else { "false" }),
            (None, ValueKind::Number | ValueKind::None | ValueKind::Undefined) => {
                write!(out, "{item}")
            }
            // A nested sequence's text has no bound of its own to stop at.
            (None, kind) => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("join takes strings, numbers and booleans, not a {kind}"),
                ))
            }
        }
        .map_err(|_| too_large())?;
    }
    Ok(out.0)
}

/// A string that refuses to grow past [`TEMPLATE_OUTPUT_BYTES_MAX`], so an
/// item's `Display` stops early too.
struct CappedString(String);

impl std::fmt::Write for CappedString {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.0.len() + s.len() > TEMPLATE_OUTPUT_BYTES_MAX {
            return Err(std::fmt::Error);
        }
        self.0.push_str(s);
        Ok(())
    }
}
