//! What a newcomer types that `scalable` does not have, and what to type
//! instead: commands and options from the seeds' Python CLI (`--objective`, `--latest` on commands other than `report`) and from other tools (`run`, `ps`,
//! `kill`), and clap's own unknown-command and unknown-option errors turned
//! into one line whose hint names the right command.
//!
//! Why not clap's tips: its did-you-mean goes by spelling alone (it offered
//! `agents` for `diagnose`), and for any command with a positional argument
//! it tips `-- --objective`, which passes the option as a file or a run name.
//!
//! Owns the table of known mistaken names. Must not: parse arguments (clap
//! does) or print (the caller prints the `CliError`).

use clap::error::{ContextKind, ContextValue, ErrorKind};

use crate::cli_error::CliError;

/// Commands a newcomer reaches for and what does that job here.
const COMMANDS: &[(&str, &str)] = &[
    (
        "advise",
        "resource advice is not in this version; scalable stats RUN shows what a run's tasks used",
    ),
    (
        "run",
        "scalable submit workflow.yaml, or scalable submit -- CMD ARGS...",
    ),
    ("ps", "scalable status lists the runs"),
    ("list", "scalable status lists the runs"),
    ("ls", "scalable status lists the runs"),
    (
        "kill",
        "scalable cancel RUN, or scalable cancel RUN/JOB/INDEX",
    ),
    (
        "retry",
        "scalable resume RUN re-runs what failed or was cancelled",
    ),
    (
        "rescue",
        "scalable resume RUN re-runs what failed or was cancelled",
    ),
    ("workers", "scalable agents lists the connected agents"),
    ("check", "scalable validate FILE checks a manifest"),
    ("version", "scalable --version"),
];

/// Options a newcomer reaches for (on any command) and what to do instead;
/// `{cmd}` stands for the command typed (`scalable status`).
const OPTIONS: &[(&str, &str)] = &[
    (
        "--objective",
        "objectives are for planning: scalable plan FILE --target T --objective \"minimize cost\"|\"minimize time\"|balance",
    ),
    (
        "--policy",
        "policies are for planning: scalable plan FILE --target T --policy safe|aggressive|manual; scalable scale --target T +N|-N|=N sets the pilots by hand",
    ),
    ("--latest", "the newest run is called last: {cmd} last"),
    ("--run", "give the run as an argument: {cmd} RUN, or {cmd} last"),
    ("--format", "--json prints JSON"),
    ("--output", "--json prints JSON"),
];

/// A clap error about an unknown command or option as one line whose hint
/// names what to type; `None` for any other error (clap's own text is right).
pub(super) fn from_clap(err: &clap::Error, argv: &[String]) -> Option<CliError> {
    match err.kind() {
        ErrorKind::InvalidSubcommand => {
            let name = context_string(err, ContextKind::InvalidSubcommand)?;
            Some(unknown_command(
                &name,
                suggested(err, ContextKind::SuggestedSubcommand),
            ))
        }
        ErrorKind::UnknownArgument => {
            let arg = context_string(err, ContextKind::InvalidArg)?;
            let command = subcommand_of(argv);
            Some(unknown_argument(
                &arg,
                command.as_deref(),
                suggested(err, ContextKind::SuggestedArg),
            ))
        }
        _ => None,
    }
}

fn unknown_command(name: &str, similar: Option<String>) -> CliError {
    let err = CliError::bad_input(format!("scalable has no command {name:?}"));
    if let Some((_, hint)) = COMMANDS.iter().find(|(n, _)| *n == name) {
        return err.with_hint(*hint);
    }
    err.with_hint(match similar {
        Some(s) => format!("did you mean {s}? scalable --help lists the commands"),
        None => "scalable --help lists the commands".to_string(),
    })
}

fn unknown_argument(arg: &str, command: Option<&str>, similar: Option<String>) -> CliError {
    let flag = arg.split_once('=').map_or(arg, |(f, _)| f);
    let shown = command.map_or("scalable".to_string(), |c| format!("scalable {c}"));
    let what = if flag.starts_with('-') {
        format!("{shown} has no option {flag}")
    } else {
        format!("{shown} takes no argument {arg:?} here")
    };
    let err = CliError::bad_input(what);
    if let Some((_, hint)) = OPTIONS.iter().find(|(n, _)| *n == flag) {
        return err.with_hint(hint.replace("{cmd}", &shown));
    }
    let mut help = format!("{shown} --help lists its options");
    if command == Some("submit") {
        help.push_str(
            "; a quick submit's command goes after --: scalable submit [OPTIONS] -- CMD ARGS...",
        );
    }
    err.with_hint(match similar {
        Some(s) => format!("did you mean {s}? {help}"),
        None => help,
    })
}

/// The subcommand a command line names: its first word that is not an
/// option (`--access FILE` is the one global option with a value).
fn subcommand_of(argv: &[String]) -> Option<String> {
    let mut words = argv.iter().skip(1);
    while let Some(w) = words.next() {
        if w == "--access" {
            words.next();
        } else if w == "--" {
            return None;
        } else if !w.starts_with('-') {
            return Some(w.clone());
        }
    }
    None
}

fn context_string(err: &clap::Error, kind: ContextKind) -> Option<String> {
    match err.get(kind)? {
        ContextValue::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// clap's spelling suggestions, quoted: `"status"` or `"status" or "stats"`.
fn suggested(err: &clap::Error, kind: ContextKind) -> Option<String> {
    let quoted = |s: &String| {
        if s.starts_with('-') {
            s.clone()
        } else {
            format!("{s:?}")
        }
    };
    match err.get(kind)? {
        ContextValue::String(s) => Some(quoted(s)),
        ContextValue::Strings(v) if !v.is_empty() => {
            Some(v.iter().map(quoted).collect::<Vec<_>>().join(" or "))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    /// The one line `scalable ARGV...` fails with.
    fn line(argv: &[&str]) -> String {
        let argv: Vec<String> = std::iter::once("scalable")
            .chain(argv.iter().copied())
            .map(String::from)
            .collect();
        let err = Cli::try_parse_from(&argv).expect_err("a mistake");
        from_clap(&err, &argv).expect("known kind").to_string()
    }

    #[test]
    fn known_mistaken_names_point_to_the_right_command() {
        assert_eq!(
            line(&["rescue", "1"]),
            "error: scalable has no command \"rescue\" (hint: scalable resume RUN re-runs what failed or was cancelled)"
        );
        assert_eq!(
            line(&["agents", "--objective", "minimize cost"]),
            "error: scalable agents has no option --objective (hint: objectives are for planning: scalable plan FILE --target T --objective \"minimize cost\"|\"minimize time\"|balance)"
        );
        assert_eq!(
            line(&["--json", "status", "--latest"]),
            "error: scalable status has no option --latest (hint: the newest run is called last: scalable status last)"
        );
    }

    #[test]
    fn other_mistakes_keep_a_spelling_suggestion_and_never_tip_double_dash() {
        assert_eq!(
            line(&["stauts"]),
            "error: scalable has no command \"stauts\" (hint: did you mean \"status\" or \"stats\"? scalable --help lists the commands)"
        );
        assert_eq!(
            line(&["--access", "a.json", "submit", "--wiat", "wf.yaml"]),
            "error: scalable submit has no option --wiat (hint: did you mean --wait? scalable submit --help lists its options; a quick submit's command goes after --: scalable submit [OPTIONS] -- CMD ARGS...)"
        );
        let quick = line(&["submit", "--array", "1-3", "./model", "--fast"]);
        assert!(!quick.contains("'-- --fast'"), "{quick}");
        assert!(quick.ends_with("-- CMD ARGS...)"), "{quick}");
    }
}
