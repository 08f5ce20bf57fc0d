//! The open-file limit (`ulimit -n`): its soft limit raised to the hard one at
//! start (the soft default, often 1024, is a guard for old programs), and
//! `--parallel` kept within what is left, so that a low limit lowers the
//! files in flight, said once, rather than failing files by the thousand with
//! "Too many open files".

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

/// The files that may be in flight at once, `window` calls each, under a
/// limit of `limit` open files, if fewer than `parallel` (at least one: a run
/// always goes on).
pub fn parallel_within(parallel: usize, window: usize, limit: u64) -> Option<usize> {
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
