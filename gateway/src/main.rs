//! The `throng` gateway binary: parse the configuration, run, exit.

use std::process::ExitCode;

use throng_gateway::config::Cli;

fn main() -> ExitCode {
    let cli = match Cli::parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        // Usage errors and --help/--version: clap prints them and exits 2 or 0.
        Err(e) => e.exit(),
    };
    match throng_gateway::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("throng: error: {e}");
            ExitCode::from(2)
        }
    }
}
