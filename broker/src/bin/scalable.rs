//! `scalable`: the user CLI. All the work is in `scalable_broker::cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    scalable_common::panic::install_bug_hook();
    let cli = scalable_broker::cli::Cli::parse();
    scalable_broker::cli::main_with(cli).into()
}
