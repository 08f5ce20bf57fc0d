//! The open-file limit (`ulimit -n`): its soft limit raised to the hard one at
//! start (the soft default, often 1024, is a guard for old programs), and
//! `--parallel` (and `--window`, when even one file's chunks would not fit)
//! kept within what is left, so that a low limit lowers the files and chunks
//! in flight, said once, naming the option lowered and why, rather than
//! failing files by the thousand with "Too many open files".

/// Descriptors one upload in flight may hold at once besides its `--window`
/// connections (chunks, or tus partials, in flight): the file, another
/// connection while a call is retried, and a journal being written.
const PER_UPLOAD: u64 = 3;

/// Descriptors the run holds besides: the standard streams, the state
/// directory's lock and receipts, the async runtime's, idle pooled
/// connections.
const RESERVE: u64 = 32;

/// Raises the soft limit to the hard one; the soft limit then (`None`: it
/// cannot be read, or is unlimited).
pub fn raise() -> Option<u64> {
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                ..limit
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
    }
}

/// What fits a limit of open files ([`fit`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Fit {
    /// Files in flight at once.
    pub parallel: usize,
    /// Chunks of a file in flight (`None`: the engine's default, which fits).
    pub window: Option<usize>,
    /// A note for each option lowered, naming it and why.
    pub notes: Vec<String>,
}

/// `parallel` files of `window` chunks each (`None`: the default window)
/// kept within a limit of `limit` open files: the window lowered if even one
/// file's chunks would not fit, then the files in flight.
pub fn fit(parallel: usize, window: Option<usize>, limit: u64) -> Fit {
    let mut fit = Fit {
        parallel,
        window,
        notes: Vec::new(),
    };
    let mut each = window.unwrap_or(idb_engine::DEFAULT_OFFSET_WINDOW);
    let room = limit.saturating_sub(RESERVE + PER_UPLOAD).max(1);
    if each as u64 > room {
        // Named as the user gave it, or as the default it is.
        let what = match window {
            Some(_) => format!("--window {each}"),
            None => format!("the window of {each} chunks in flight (the default of --window)"),
        };
        fit.notes.push(format!(
            "note: {what} lowered to {room}: this process may have only {limit} files \
             open at once (ulimit -n), and each chunk of a file in flight holds one; raise that \
             limit to send more chunks of a file at once"
        ));
        each = room as usize;
        fit.window = Some(each);
    }
    if let Some(fits) = parallel_within(parallel, each, limit) {
        let why = match window {
            // The window the user chose is part of what does not fit.
            Some(_) => format!(
                "with --window {each}, each file in flight may hold {} open files, and this \
                 process may have only {limit} open at once (ulimit -n); raise that limit, or \
                 lower --window, to upload more files at once",
                PER_UPLOAD + each as u64
            ),
            None => format!(
                "this process may have only {limit} files open at once (ulimit -n); raise \
                 that limit to upload more files at once"
            ),
        };
        fit.notes.push(format!(
            "note: --parallel {parallel} lowered to {fits}: {why}"
        ));
        fit.parallel = fits;
    }
    fit
}

/// The files that may be in flight at once, `window` calls each, under a
/// limit of `limit` open files, if fewer than `parallel` (at least one: a run
/// always goes on).
fn parallel_within(parallel: usize, window: usize, limit: u64) -> Option<usize> {
    let each = PER_UPLOAD + window.max(1) as u64;
    let room = (limit.saturating_sub(RESERVE) / each).max(1);
    (parallel as u64 > room).then_some(room as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_limit_lowers_the_files_in_flight_to_what_fits() {
        // The default window, 4: 7 descriptors a file.
        assert_eq!(parallel_within(3, 4, 1024), None);
        assert_eq!(parallel_within(500, 4, 1024), Some(141));
        assert_eq!(parallel_within(500, 4, 64), Some(4));
        assert_eq!(parallel_within(4, 4, 64), None);
        // A wide window takes more room a file.
        assert_eq!(parallel_within(8, 16, 64), Some(1));
        assert_eq!(parallel_within(2, 4, 10), Some(1), "one at least");
        assert_eq!(parallel_within(1, 4, 10), None);
    }

    /// Regression (found by an adversarial pass): a wide --window lowered
    /// --parallel with a note that blamed --parallel alone; and a window
    /// wider than the limit itself was left as it was.
    #[test]
    fn a_note_names_the_window_when_it_is_what_does_not_fit() {
        // The default window: the note is about --parallel alone.
        let fit_default = fit(500, None, 1024);
        assert_eq!((fit_default.parallel, fit_default.window), (141, None));
        assert_eq!(
            fit_default.notes,
            [
                "note: --parallel 500 lowered to 141: this process may have only 1024 files open \
              at once (ulimit -n); raise that limit to upload more files at once"
            ]
        );
        // A window given: it is named, with what each file holds.
        let wide = fit(3, Some(64), 200);
        assert_eq!((wide.parallel, wide.window), (2, Some(64)));
        assert_eq!(
            wide.notes,
            [
                "note: --parallel 3 lowered to 2: with --window 64, each file in flight may hold \
              67 open files, and this process may have only 200 open at once (ulimit -n); \
              raise that limit, or lower --window, to upload more files at once"
            ]
        );
        // Not even one file's chunks fit: the window is lowered, and said.
        let narrow = fit(1, Some(64), 60);
        assert_eq!((narrow.parallel, narrow.window), (1, Some(25)));
        assert_eq!(
            narrow.notes,
            [
                "note: --window 64 lowered to 25: this process may have only 60 files open at \
              once (ulimit -n), and each chunk of a file in flight holds one; raise that limit \
              to send more chunks of a file at once"
            ]
        );
        // The default window does not fit: said as the default, not as an
        // option the user did not give.
        let tiny = fit(1, None, 37);
        assert_eq!((tiny.parallel, tiny.window), (1, Some(2)));
        assert_eq!(
            tiny.notes,
            [
                "note: the window of 4 chunks in flight (the default of --window) lowered to 2: \
              this process may have only 37 files open at once (ulimit -n), and each chunk of a \
              file in flight holds one; raise that limit to send more chunks of a file at once"
            ]
        );
        // What fits is left alone, unsaid.
        assert_eq!(
            fit(3, Some(64), 1024),
            Fit {
                parallel: 3,
                window: Some(64),
                notes: Vec::new()
            }
        );
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let soft = raise().expect("a limit");
        // SAFETY: as in `raise`.
        let hard = unsafe {
            let mut limit: libc::rlimit = std::mem::zeroed();
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            limit.rlim_max
        };
        assert_eq!(soft, hard);
    }
}
