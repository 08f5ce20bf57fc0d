//! `idb`: upload research data to the Illinois Data Bank, fast and resumably.
//!
//! This binary only parses arguments, builds the engine's configuration, renders
//! events and maps results to exit codes; the work is in the `crates/`.

mod bench;
mod clean;
mod cli;
mod dates;
mod demo;
mod exit;
mod mock_server;
mod progress;
mod sigbus;
mod size;
mod status;
mod token;
mod upload;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::Exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    sigbus::install();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Upload(args) => upload::run(args).await,
            Command::MockServer(args) => mock_server::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Status(args) => status::run(args),
            Command::Clean(args) => clean::run(args),
        }
    });
    match result {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            Exit::Failure.into()
        }
    }
}
