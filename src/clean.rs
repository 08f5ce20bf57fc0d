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
    // Whatever the scope: a damaged journal cannot say whose it was.
    let damaged = state.clean_damaged(args.dry_run)?;
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
        say(&out, &c.outcome, &what, &j.journal, &why);
    }
    for c in &damaged {
        let why = format!("{} (it can never help a resume)", escape(&c.journal.reason));
        let journal = &c.journal.journal;
        say(&out, &c.outcome, "a damaged journal", journal, &why);
    }
    let failed = (cleaned.iter().map(|c| &c.outcome))
        .chain(damaged.iter().map(|c| &c.outcome))
        .any(|outcome| matches!(outcome, CleanOutcome::Failed(_)));
    // A journal kept because its name is being uploaded is not one the real
    // run would remove.
    let gone = if args.dry_run {
        CleanOutcome::WouldRemove
    } else {
        CleanOutcome::Removed
    };
    let stale = cleaned.iter().filter(|c| c.outcome == gone).count();
    let and_damaged = match damaged.iter().filter(|c| c.outcome == gone).count() {
        0 => String::new(),
        n => format!(" and {n} damaged"),
    };
    if args.dry_run {
        out.error(&format!(
            "{stale} stale journals{and_damaged} in {} would be removed; nothing was removed \
             (--dry-run)",
            escaped(state.root())
        ));
    } else {
        out.error(&format!(
            "removed {stale} stale journals{and_damaged} from {}{}; receipts of verified files \
             are kept",
            escaped(state.root()),
            crate::status::absent_note(state.root())
        ));
    }
    Ok(if out.stdout_closed() {
        Exit::OutputClosed
    } else if failed {
        Exit::Failure
    } else {
        Exit::Success
    })
}

/// Says what became of one journal (`what`, stored in `journal`) that goes
/// because of `why`.
fn say(out: &Console, outcome: &CleanOutcome, what: &str, journal: &std::path::Path, why: &str) {
    match outcome {
        CleanOutcome::Removed => out.data(&format!("removed {what}: {why}")),
        CleanOutcome::WouldRemove => out.data(&format!("would remove {what}: {why}")),
        CleanOutcome::InUse { pid } => {
            let by = pid.map_or("another idb".to_owned(), |pid| format!("idb (pid {pid})"));
            out.data(&format!(
                "kept {what}: {why}, but {by} is uploading that name now"
            ));
        }
        CleanOutcome::Failed(reason) => {
            out.error(&format!(
                "error: cannot remove {what} ({}): {}",
                escaped(journal),
                escape(reason)
            ));
        }
    }
}
