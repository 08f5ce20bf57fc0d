//! `idb status`: what the state directory knows of one dataset, on stdout.

use std::time::SystemTime;

use anyhow::Context;
use idb_engine::{DamagedReceipts, DatasetKey, LocalFile, ReadReceipts, Scope, StateDir};
use url::Url;

use crate::cli::StatusArgs;
use crate::console::Console;
use crate::dates::{age, utc_minute};
use crate::exit::Exit;
use crate::size::human;
use crate::text::{escape, escaped};

/// Hex digits of a receipt's blake3 shown (enough to compare by eye).
const BLAKE3_PREFIX: usize = 12;

pub fn run(args: StatusArgs) -> anyhow::Result<Exit> {
    let out = Console::plain();
    let (server, dataset, state) = match configure(&args) {
        Ok(configured) => configured,
        Err(error) => {
            out.error(&format!("error: {}", escape(&format!("{error:#}"))));
            return Ok(Exit::BadInput);
        }
    };
    let ReadReceipts { receipts, damaged } = state.read_receipts(&server, &dataset)?;
    if let Some(damaged) = &damaged {
        warn_damaged_receipts(&out, damaged);
    }
    let unfinished = state.unfinished(&Scope {
        server: Some(server.clone()),
        dataset: Some(dataset.clone()),
    })?;
    out.data(&format!(
        "state directory: {}{}",
        escaped(state.root()),
        absent_note(state.root())
    ));
    out.data(&format!(
        "unfinished uploads into {dataset} on {server}: {}",
        unfinished.len()
    ));
    let now = SystemTime::now();
    for journal in &unfinished {
        let local = match &journal.local {
            LocalFile::Unchanged => String::new(),
            LocalFile::Changed => {
                "; the local file changed since (a re-run starts it over)".to_owned()
            }
            LocalFile::StatusChanged => format!(
                "; the local file's status changed since (a chmod, a chown, a new link, or a \
                 write that put its time back): a re-run hashes again what it read before (at \
                 least the {} the server holds) and resumes if they are the same",
                human(journal.acked)
            ),
            LocalFile::Vanished => "; the local file is gone".to_owned(),
            LocalFile::Unknown(why) => {
                format!("; the local file cannot be looked at ({})", escape(why))
            }
        };
        out.data(&format!(
            "  {}  {}  {} of {} acknowledged, saved {} ago{local}",
            escape(&journal.filename),
            escaped(&journal.path),
            human(journal.acked),
            human(journal.size),
            age(now.duration_since(journal.saved_at).unwrap_or_default()),
        ));
    }
    // Not of this dataset alone: a damaged journal cannot say whose it was.
    let unusable = state.unusable_journals()?;
    if !unusable.is_empty() {
        out.data(&format!(
            "journals that cannot be used (of any dataset): {}",
            unusable.len()
        ));
    }
    for journal in &unusable {
        let what = if journal.damaged {
            "it can never help a resume; `idb clean` removes it"
        } else {
            "not used by this idb; `idb clean` keeps it"
        };
        out.data(&format!("  {} ({what})", escape(&journal.reason)));
    }
    out.data(&format!("verified uploads (receipts): {}", receipts.len()));
    for receipt in &receipts {
        out.data(&format!(
            "  {}  {}  verified {}  blake3 {}",
            escape(&receipt.filename),
            human(receipt.size),
            utc_minute(receipt.verified_at),
            receipt
                .blake3
                .get(..BLAKE3_PREFIX)
                .unwrap_or(&receipt.blake3),
        ));
    }
    if !unfinished.is_empty() {
        out.error(
            "the same `idb upload` command resumes the unfinished files; `idb clean` removes \
             journals that can no longer help",
        );
    } else if let Some(note) = elsewhere(&state, &server, &dataset) {
        out.error(&note);
    }
    Ok(if out.stdout_closed() {
        Exit::OutputClosed
    } else {
        Exit::Success
    })
}

/// Warns, on stderr, of the damaged lines of a receipts file, in the words a
/// run uses (`warning: FILE: ...`).
pub fn warn_damaged_receipts(out: &Console, damaged: &DamagedReceipts) {
    out.error(&format!(
        "warning: {}: {}",
        escaped(&damaged.file),
        damaged.reason()
    ));
}

/// When nothing of `dataset` is unfinished on `server`: a note naming the
/// other server addresses the state directory has unfinished uploads of it
/// for (journals are kept per address: a proxy, another port or a mistyped
/// `--server` finds none of them). A note only: none when the journals cannot
/// be listed.
fn elsewhere(state: &StateDir, server: &Url, dataset: &DatasetKey) -> Option<String> {
    let others: std::collections::BTreeSet<String> = state
        .unfinished(&Scope {
            server: None,
            dataset: Some(dataset.clone()),
        })
        .ok()?
        .into_iter()
        .map(|journal| journal.server)
        .filter(|other| other != server.as_str())
        .collect();
    (!others.is_empty()).then(|| {
        format!(
            "note: unfinished uploads into {dataset} are recorded for another server address: \
             {}; journals and receipts are kept per address, so give the --server those \
             uploads used",
            escape(&others.into_iter().collect::<Vec<_>>().join(", "))
        )
    })
}

/// The server and dataset asked about, and the state directory.
fn configure(args: &StatusArgs) -> anyhow::Result<(Url, DatasetKey, StateDir)> {
    let target = &args.target;
    let dataset = target.dataset_key()?;
    Ok((
        target.server.clone(),
        dataset,
        state_dir(target.state_dir.as_deref())?,
    ))
}

/// The state directory `idb upload` would use.
/// What to add after a state directory's name when it is not there (a
/// mistyped --state-dir, or no upload yet): that nothing is recorded in it.
pub fn absent_note(root: &std::path::Path) -> &'static str {
    if root.exists() {
        ""
    } else {
        " (it does not exist: no upload has recorded anything there)"
    }
}

pub fn state_dir(given: Option<&std::path::Path>) -> anyhow::Result<StateDir> {
    let root = crate::upload::state_dir(given).context(
        "no state directory: set --state-dir (or IDB_STATE_DIR, XDG_STATE_HOME or HOME)",
    )?;
    Ok(StateDir::new(root))
}
