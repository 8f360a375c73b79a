//! `scalable`: the user CLI. All the work is in `scalable_broker::cli`.

fn main() -> std::process::ExitCode {
    scalable_common::panic::install_bug_hook();
    scalable_broker::cli::main_from(std::env::args_os()).into()
}
