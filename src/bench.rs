//! `idb bench`: the harness's scenarios against an in-process mock; the summary on
//! stdout, progress on stderr, the evidence in `--out`.

use std::path::PathBuf;
use std::time::SystemTime;

use idb_harness::{BenchConfig, Scenario};

use crate::cli::BenchArgs;
use crate::exit::Exit;

/// Where runs go by default: `target/harness/<UTC timestamp>`.
const DEFAULT_OUT_PARENT: &str = "target/harness";

pub async fn run(args: BenchArgs) -> anyhow::Result<Exit> {
    let out_dir = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(DEFAULT_OUT_PARENT).join(idb_harness::utc_timestamp(SystemTime::now()))
    });
    let mut config = BenchConfig::new(out_dir);
    // clap allows only the scenario names, so this cannot fail.
    config.scenarios = Scenario::select(&args.scenario)?;
    config.reps = args.reps as usize;
    config.size = args.size;
    config.sample_size = args.sample_size;
    config.files = args.files as usize;
    config.file_size = args.file_size;
    config.parallel = args.parallel as usize;
    config.command_line = command_line();
    if let Err(problem) = config.validate() {
        eprintln!("error: {problem}");
        return Ok(Exit::BadInput);
    }
    let outcome = idb_harness::run(&config, &|line: &str| eprintln!("{line}")).await?;
    print!("{}", outcome.summary);
    eprintln!(
        "results, summary and command written to {}",
        outcome.out_dir.display()
    );
    Ok(Exit::Success)
}

/// The command line as typed (arguments with spaces quoted), for `command.txt`.
fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", arg.replace('\'', r"'\''"))
            } else {
                arg
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
