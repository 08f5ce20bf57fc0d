//! `idb clean`: removes stale journals, and says which and why.

use idb_engine::{CleanOutcome, DatasetKey, STALE_AFTER, Scope, Stale};

use crate::cli::CleanArgs;
use crate::console::Console;
use crate::dates::age;
use crate::exit::Exit;
use crate::size::human;
use crate::status::state_dir;
use crate::text::{escape, escaped};

pub fn run(args: CleanArgs) -> anyhow::Result<Exit> {
    let out = Console::plain();
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
            out.error(&format!("error: {}", escape(&format!("{error:#}"))));
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
            escaped(&j.path),
            escape(&j.filename),
            j.dataset,
            j.server,
            human(j.acked),
            human(j.size)
        );
        match &c.outcome {
            CleanOutcome::Removed => {
                removed += 1;
                out.data(&format!("removed {what}: {why}"));
            }
            CleanOutcome::WouldRemove => out.data(&format!("would remove {what}: {why}")),
            CleanOutcome::InUse { pid } => {
                let by = pid.map_or("another idb".to_owned(), |pid| format!("idb (pid {pid})"));
                out.data(&format!(
                    "kept {what}: {why}, but {by} is uploading that name now"
                ));
            }
            CleanOutcome::Failed(reason) => {
                failed += 1;
                out.error(&format!(
                    "error: cannot remove {what} ({}): {}",
                    escaped(&j.journal),
                    escape(reason)
                ));
            }
        }
    }
    if args.dry_run {
        // A journal kept because its name is being uploaded is not one the
        // real run would remove.
        let would = cleaned
            .iter()
            .filter(|c| matches!(c.outcome, CleanOutcome::WouldRemove))
            .count();
        out.error(&format!(
            "{would} stale journals in {} would be removed; nothing was removed (--dry-run)",
            escaped(state.root())
        ));
    } else {
        out.error(&format!(
            "removed {removed} stale journals from {}{}; receipts of verified files are kept",
            escaped(state.root()),
            crate::status::absent_note(state.root())
        ));
    }
    Ok(if out.stdout_closed() {
        Exit::OutputClosed
    } else if failed > 0 {
        Exit::Failure
    } else {
        Exit::Success
    })
}
