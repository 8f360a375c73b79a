//! POSIX shell quoting: an argv as a line a user could paste into a shell.
//!
//! Owns: `shell_quote` and `shell_join`, used wherever a command line is shown
//! or written into a script (the CLI's output, `render`'s sbatch and cloud-init
//! templates, the providers' command lines).
//!
//! Must not: decide whether a value is allowed at all (`render` refuses what
//! it cannot quote safely); this module only quotes.

/// Quotes `s` for a POSIX shell: bare when it only has safe characters,
/// otherwise in single quotes with each `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:,+=@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A command line as a user could paste it into a shell.
pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_safe_words_bare() {
        assert_eq!(shell_quote("sim.py"), "sim.py");
        assert_eq!(shell_quote("--seed=7"), "--seed=7");
        assert_eq!(shell_quote("/data/x_1,2:3"), "/data/x_1,2:3");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote("~"), "'~'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn shell_join_quotes_each_word() {
        let argv = ["python".to_string(), "it's hot".into(), "-x".into()];
        assert_eq!(shell_join(&argv), r"python 'it'\''s hot' -x");
        assert_eq!(shell_join(&[]), "");
    }
}
