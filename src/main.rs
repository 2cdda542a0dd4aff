//! The `ap2-mandate` command: serve the roles, play the other parties, inspect, verify and test
//! AP2 mandate chains.

#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // A configuration file fills in options before the command line is read.
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(path) = cli::config::config_path(&raw) {
        if let Err(e) = cli::config::apply(&path) {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    }
    let args = cli::Cli::parse_from(raw);
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
