//! A bug is not a user error (STYLE habit 7): a panic prints one line asking
//! for a report instead of a backtrace aimed at developers.

/// Installs the hook; `RUST_BACKTRACE=1` keeps the default output for debugging.
pub fn install_bug_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!(
            "error: internal error{place}: {what} (this is a bug in scalable, please report it; RUST_BACKTRACE=1 shows more)"
        );
    }));
}
