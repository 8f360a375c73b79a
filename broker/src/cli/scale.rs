//! `scalable scale --target T [--tag G] +N|-N|=N`: add or remove pilots of
//! the broker's target.
//!
//! Must not: pick which pilots go; the broker's fleet decides (`plan_scale`)
//! and reports what it did.

use clap::Args;
use scalable_common::exit::ExitCode;
use scalable_common::protocol::{Request, ScaleChange, ScaleReport};

use super::request::request;
use super::Context;
use crate::cli_error::CliError;
use crate::output::{self, print_out};

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// The manifest target whose pilots to scale (the broker's --target).
    #[arg(long)]
    pub target: String,
    /// The tag (component) whose pilots to scale; none = the generic pool.
    #[arg(long)]
    pub tag: Option<String>,
    /// +N, -N or =N.
    #[arg(allow_hyphen_values = true)]
    pub change: String,
    /// Also stop pilots whose agents are busy (their tasks go back to ready).
    #[arg(long)]
    pub force: bool,
    /// Say what would be done (with the exact command lines); do nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn exec(ctx: &Context<'_>, args: ScaleArgs) -> Result<ExitCode, CliError> {
    // The change is checked before connecting: a typo needs no broker.
    let change = parse_scale_change(&args.change)?;
    let req = Request::Scale {
        target: args.target,
        tag: args.tag,
        change,
        force: args.force,
        dry_run: args.dry_run,
    };
    let r: ScaleReport = request(ctx.access, || Ok(req)).await?;
    print_out(&if ctx.json {
        output::json(&r)
    } else {
        output::scale_text(&r)
    });
    Ok(ExitCode::Ok)
}

/// `+N`, `-N` or `=N`.
fn parse_scale_change(s: &str) -> Result<ScaleChange, CliError> {
    let bad = || {
        CliError::bad_input(format!("scale: {s:?} is not +N, -N or =N"))
            .with_hint("e.g. scalable scale --target hpc --tag demeter =2")
    };
    let (op, n) = s.split_at(s.chars().next().map_or(0, char::len_utf8));
    let n: u32 = n.parse().map_err(|_| bad())?;
    match op {
        "+" => Ok(ScaleChange::Add(n)),
        "-" => Ok(ScaleChange::Remove(n)),
        "=" => Ok(ScaleChange::Set(n)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_plus_minus_or_equals_n() {
        assert_eq!(parse_scale_change("+2").unwrap(), ScaleChange::Add(2));
        assert_eq!(parse_scale_change("-1").unwrap(), ScaleChange::Remove(1));
        assert_eq!(parse_scale_change("=0").unwrap(), ScaleChange::Set(0));
        for bad in ["", "2", "x2", "+", "+-1", "é3"] {
            let e = parse_scale_change(bad).unwrap_err();
            assert_eq!(e.code, ExitCode::BadInput, "{bad:?}");
        }
        assert_eq!(
            parse_scale_change("x2").unwrap_err().to_string(),
            "error: scale: \"x2\" is not +N, -N or =N (hint: e.g. scalable scale --target hpc --tag demeter =2)"
        );
    }
}
