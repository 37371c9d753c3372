//! The `throng` gateway binary: parse the configuration, run, exit.

use std::process::ExitCode;

use clap::Parser;
use throng::gateway::config::Cli;

fn main() -> ExitCode {
    match throng::gateway::run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("throng: error: {e}");
            ExitCode::from(2)
        }
    }
}
