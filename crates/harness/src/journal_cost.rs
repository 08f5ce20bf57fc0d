//! What the resume journal costs: `journal` (one file in small chunks, so that
//! acknowledgements come fast) and `small-files` (thousands of tiny files, the
//! CLI's defaults), each with the state directory on a local disk, on tmpfs, and
//! with no journal at all, in the same run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use idb_engine::UploadConfig;
use idb_mock::DEFAULT_MAX_CHUNK;

use crate::config::DEFAULT_JOURNAL_CHUNK;
use crate::data::DataFile;
use crate::engine_run;
use crate::report::human;
use crate::results::{Rep, ScenarioResult, Side};
use crate::scenarios::{Mock, Runner, ratio, side, start_mock};

/// Target of `journal`: the journal on disk costs at most 10% of the time.
const JOURNAL_TARGET: f64 = 1.0 / 1.1;

/// Target of `small-files`: the state on disk within 1.5x of the time on tmpfs.
const SMALL_FILES_TARGET: f64 = 1.0 / 1.5;

/// Where tmpfs usually is on Linux.
const TMPFS: &str = "/dev/shm";

/// Where a side keeps its state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No journal (and no name locks).
    None,
    /// Under the run's output directory, on the disk the results go to.
    Disk,
    /// Under `/dev/shm`.
    Tmpfs,
}

impl State {
    fn key(self) -> &'static str {
        match self {
            State::None => "no-journal",
            State::Disk => "journal-disk",
            State::Tmpfs => "journal-tmpfs",
        }
    }

    fn label(self, out: &Path) -> String {
        match self {
            State::None => "engine, no journal".into(),
            State::Disk => format!("engine, state directory on disk (under {})", out.display()),
            State::Tmpfs => format!("engine, state directory on tmpfs ({TMPFS})"),
        }
    }
}

/// Whether `/dev/shm` is there to write into.
fn tmpfs_available() -> bool {
    Path::new(TMPFS).is_dir()
        && tempfile::Builder::new()
            .prefix("idb-bench-")
            .tempdir_in(TMPFS)
            .is_ok()
}

impl Runner<'_> {
    /// The states measured in this run, in the order they alternate.
    fn states(&self) -> Vec<State> {
        let mut states = vec![State::None, State::Disk];
        if tmpfs_available() {
            states.push(State::Tmpfs);
        } else {
            self.note(format!("{TMPFS} is not writable: no tmpfs side"));
        }
        states
    }

    /// A fresh state directory for one repetition, removed when dropped.
    fn state_dir(&self, state: State) -> anyhow::Result<Option<tempfile::TempDir>> {
        let parent = match state {
            State::None => return Ok(None),
            State::Disk => self.config.out_dir.clone(),
            State::Tmpfs => PathBuf::from(TMPFS),
        };
        std::fs::create_dir_all(&parent)?;
        Ok(Some(
            tempfile::Builder::new()
                .prefix("idb-bench-state-")
                .tempdir_in(&parent)
                .with_context(|| {
                    format!("cannot make a state directory in {}", parent.display())
                })?,
        ))
    }

    /// Starts a mock without latency and runs every state on it `reps` times,
    /// alternating, with `tweak` applied.
    async fn state_sides(
        &self,
        scenario: &str,
        files: &[DataFile],
        states: &[State],
        tweak: &(dyn Fn(&mut UploadConfig) + Sync),
    ) -> anyhow::Result<(Mock, Vec<Side>)> {
        let keys: Vec<&str> = states.iter().map(|s| s.key()).collect();
        let mock = start_mock(
            "no latency",
            Duration::ZERO,
            DEFAULT_MAX_CHUNK,
            &keys,
            self.config.reps,
        )
        .await?;
        let mut reps: Vec<Vec<Rep>> = states.iter().map(|_| Vec::new()).collect();
        for rep in 0..self.config.reps {
            // Each repetition starts with another side, so that no side always
            // runs in the same place of the sequence.
            for i in (0..states.len()).map(|i| (i + rep) % states.len()) {
                let (state, results) = (&states[i], &mut reps[i]);
                let dir = self.state_dir(*state)?;
                let state_dir = dir.as_ref().map(|d| d.path().to_path_buf());
                let r = self
                    .engine_rep(&mock, state.key(), rep, files, &|c| {
                        tweak(c);
                        c.state_dir = state_dir.clone();
                    })
                    .await?;
                self.report_rep(scenario, &state.label(&self.config.out_dir), rep, &r);
                results.push(r);
            }
        }
        let sides = states
            .iter()
            .zip(reps)
            .map(|(state, reps)| {
                let mut side = side(
                    state.key(),
                    state.label(&self.config.out_dir),
                    &mock,
                    files,
                    reps,
                );
                side.engine = Some(engine_run::settings(|c| {
                    tweak(c);
                    if *state != State::None {
                        c.state_dir = Some(PathBuf::from("state"));
                    }
                })?);
                Ok(side)
            })
            .collect::<anyhow::Result<Vec<Side>>>()?;
        Ok((mock, sides))
    }

    /// `journal`: one file in fixed 1 MiB chunks, no latency.
    pub(crate) async fn journal(&self) -> anyhow::Result<ScenarioResult> {
        let size = self.config.journal_size;
        self.note(format!("journal: generating a {} file", human(size)));
        let file = self.generate("journal.bin", size, "journal").await?;
        let files = std::slice::from_ref(&file);
        let states = self.states();
        let chunk = DEFAULT_JOURNAL_CHUNK;
        let (mock, sides) = self
            .state_sides("journal", files, &states, &move |c| {
                *c = c.clone().fixed_chunk_size(chunk);
            })
            .await?;
        let mut ratios = vec![ratio(
            "journal on disk / no journal",
            &sides[1],
            &sides[0],
            Some(JOURNAL_TARGET),
        )];
        if let Some(tmpfs) = sides.get(2) {
            ratios.push(ratio(
                "journal on tmpfs / no journal",
                tmpfs,
                &sides[0],
                None,
            ));
        }
        mock.server.shutdown().await;
        Ok(ScenarioResult {
            name: "journal".into(),
            title: format!(
                "journal: {} in fixed {} chunks, no latency",
                human(size),
                human(chunk)
            ),
            mocks: vec![mock.facts],
            sides,
            ratios,
            model: None,
            notes: vec![format!(
                "every acknowledged chunk hands the journal writer the file's newest state; \
                 it writes (temporary file, fsync, rename, fsync of the directory) at most \
                 every {} s or {} acknowledged; the target is at most 10% more time than \
                 without a journal",
                idb_engine::DEFAULT_JOURNAL_INTERVAL.as_secs_f64(),
                human(idb_engine::DEFAULT_JOURNAL_BYTES)
            )],
        })
    }

    /// `small-files`: thousands of tiny files with the defaults, no latency.
    pub(crate) async fn small_files(&self) -> anyhow::Result<ScenarioResult> {
        let (count, size) = (self.config.small_files, self.config.small_file_size);
        self.note(format!(
            "small-files: generating {count} files of {}",
            human(size)
        ));
        let mut files = Vec::with_capacity(count);
        for i in 0..count {
            let name = format!("small-{i:05}.bin");
            files.push(self.generate(&name, size, &name).await?);
        }
        let states = self.states();
        let (mock, sides) = self
            .state_sides("small-files", &files, &states, &|_| {})
            .await?;
        let files_per_s = |side: &Side| side.files as f64 / side.median.wall_s;
        let mut ratios = Vec::new();
        let mut notes = vec![
            sides
                .iter()
                .map(|s| format!("{}: {:.0} files/s", s.label, files_per_s(s)))
                .collect::<Vec<_>>()
                .join("; "),
        ];
        match sides.get(2) {
            Some(tmpfs) => ratios.push(ratio(
                "state on disk / state on tmpfs",
                &sides[1],
                tmpfs,
                Some(SMALL_FILES_TARGET),
            )),
            None => notes.push("no tmpfs side: the target compares disk with tmpfs".into()),
        }
        ratios.push(ratio(
            "state on disk / no journal",
            &sides[1],
            &sides[0],
            None,
        ));
        notes.push(
            "a file that is verified before the journal writer's next write never gets a \
             journal entry; each upload holds a byte-range lock of the state directory's \
             lock file while it runs"
                .into(),
        );
        mock.server.shutdown().await;
        Ok(ScenarioResult {
            name: "small-files".into(),
            title: format!(
                "small-files: {count} x {}, no latency, defaults",
                human(size)
            ),
            mocks: vec![mock.facts],
            sides,
            ratios,
            model: None,
            notes,
        })
    }
}
