//! `idb`: upload research data to the Illinois Data Bank, fast and resumably.
//!
//! This binary only parses arguments, builds the engine's configuration, renders
//! events and maps results to exit codes; the work is in the `crates/`.

mod bench;
mod clean;
mod cli;
mod console;
mod dates;
mod demo;
mod dry_run;
mod exit;
mod logging;
mod mock_server;
mod open_files;
mod progress;
mod select;
mod sigbus;
mod signals;
mod size;
mod status;
mod text;
mod token;
mod upload;

use std::process::ExitCode;

use std::io::Write;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::exit::Exit;

fn main() -> ExitCode {
    let matches = cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    sigbus::install();
    let open_files = open_files::raise();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the async runtime: {e}"
            );
            return Exit::Failure.into();
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Upload(args) => {
                let token_wait_given = matches
                    .subcommand_matches("upload")
                    .and_then(|upload| upload.value_source("token_wait"))
                    == Some(clap::parser::ValueSource::CommandLine);
                upload::run(*args, open_files, token_wait_given).await
            }
            Command::MockServer(args) => mock_server::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => {
                let given = bench::given_on_command_line(matches.subcommand_matches("bench"));
                bench::run(args, given).await
            }
            Command::Completions(args) => print_completions(args.shell),
            Command::Man(args) => print_man_page(args.dir.as_deref()),
            Command::Status(args) => status::run(args),
            Command::Clean(args) => clean::run(args),
        }
    });
    match result {
        Ok(exit) => exit.into(),
        Err(error) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                text::escape(&format!("{error:#}"))
            );
            Exit::Failure.into()
        }
    }
}

/// `idb completions SHELL`: the script on stdout.
fn print_completions(shell: clap_complete::Shell) -> anyhow::Result<Exit> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "idb", &mut script);
    write_stdout(&script)
}

/// `idb man`: the manual page (roff) on stdout, or with `dir` every page
/// (idb's and one per command, named as `man idb-upload` finds it) there.
fn print_man_page(dir: Option<&std::path::Path>) -> anyhow::Result<Exit> {
    use anyhow::Context as _;
    let mut command = Cli::command();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(command).render(&mut page)?;
        return write_stdout(&page);
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create {}", crate::text::escaped(dir)))?;
    // Built, so that each command's page is named `idb-<command>`.
    command.build();
    let commands = command
        .get_subcommands()
        .filter(|c| c.get_name() != "help")
        .cloned()
        .collect::<Vec<_>>();
    for page in std::iter::once(command).chain(commands) {
        clap_mangen::Man::new(page)
            .generate_to(dir)
            .with_context(|| {
                format!(
                    "cannot write the manual pages into {}",
                    crate::text::escaped(dir)
                )
            })?;
    }
    Ok(Exit::Success)
}

/// Writes all of `bytes` to stdout; a closed stdout is not worth a panic.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(Exit::Success),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Exit::OutputClosed),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}
