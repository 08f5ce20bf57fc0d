//! `idb clean`: removes stale journals, and says which and why.

use idb_engine::{CleanOutcome, DatasetKey, STALE_AFTER, Scope, Stale};

use crate::cli::CleanArgs;
use crate::dates::age;
use crate::exit::Exit;
use crate::size::human;
use crate::status::state_dir;

pub fn run(args: CleanArgs) -> anyhow::Result<Exit> {
    let configured = (|| {
        let scope = Scope {
            server: args.server.clone(),
            dataset: args.dataset.as_deref().map(DatasetKey::new).transpose()?,
        };
        anyhow::Ok((scope, state_dir(args.state_dir.as_deref())?))
    })();
    let (scope, state) = match configured {
        Ok(configured) => configured,
        Err(error) => {
            eprintln!("error: {error:#}");
            return Ok(Exit::BadInput);
        }
    };
    let cleaned = state.clean(&scope, STALE_AFTER, args.dry_run)?;
    let (mut removed, mut failed) = (0, 0);
    for c in &cleaned {
        let j = &c.journal;
        let why = match c.why {
            Stale::FileVanished => "the local file is gone".to_owned(),
            Stale::FileChanged => {
                "the local file changed since (a re-run starts it over anyway)".to_owned()
            }
            Stale::Old { age: old } => format!(
                "not written for {} (a token lives {})",
                age(old),
                age(STALE_AFTER)
            ),
        };
        let what = format!(
            "the journal of {} ({} into {} on {}, {} of {} acknowledged)",
            j.path.display(),
            j.filename,
            j.dataset,
            j.server,
            human(j.acked),
            human(j.size)
        );
        match &c.outcome {
            CleanOutcome::Removed => {
                removed += 1;
                println!("removed {what}: {why}");
            }
            CleanOutcome::WouldRemove => println!("would remove {what}: {why}"),
            CleanOutcome::InUse { pid } => {
                let by = pid.map_or("another idb".to_owned(), |pid| format!("idb (pid {pid})"));
                println!("kept {what}: {why}, but {by} is uploading that name now");
            }
            CleanOutcome::Failed(reason) => {
                failed += 1;
                eprintln!(
                    "error: cannot remove {what} ({}): {reason}",
                    j.journal.display()
                );
            }
        }
    }
    if args.dry_run {
        eprintln!(
            "{} stale journals in {}; nothing was removed (--dry-run)",
            cleaned.len(),
            state.root().display()
        );
    } else {
        eprintln!(
            "removed {removed} stale journals from {}; receipts of verified files are kept",
            state.root().display()
        );
    }
    Ok(if failed > 0 {
        Exit::Failure
    } else {
        Exit::Success
    })
}
