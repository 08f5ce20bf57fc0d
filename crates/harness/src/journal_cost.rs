//! What the resume journal costs: `journal` (one file in small chunks, so that
//! acknowledgements come fast) and `small-files` (thousands of tiny files, the
//! CLI's defaults), each with the state directory on a local disk, on tmpfs, and
//! with no journal at all, in the same run.

use std::path::Path;
use std::time::Duration;

use crate::config::DEFAULT_JOURNAL_CHUNK;
use crate::data::DataFile;
use crate::far_end::Knobs;
use crate::point::{PointSpec, Runner, SideSpec, StateAt, TMPFS};
use crate::report::human;
use crate::results::{Point, ScenarioResult};

/// Target of `journal`: the journal on disk costs at most 10% of the time.
const JOURNAL_TARGET: f64 = 1.0 / 1.1;

/// Target of `small-files`: the state on disk within 1.5x of the time on tmpfs.
const SMALL_FILES_TARGET: f64 = 1.0 / 1.5;

impl StateAt {
    fn key(self) -> &'static str {
        match self {
            StateAt::None => "no-journal",
            StateAt::Disk => "journal-disk",
            StateAt::Tmpfs => "journal-tmpfs",
        }
    }

    fn label(self, out: &Path) -> String {
        match self {
            StateAt::None => "engine, no journal".into(),
            StateAt::Disk => format!("engine, state directory on disk (under {})", out.display()),
            StateAt::Tmpfs => format!("engine, state directory on tmpfs ({TMPFS})"),
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
    fn states(&self) -> Vec<StateAt> {
        let mut states = vec![StateAt::None, StateAt::Disk];
        if tmpfs_available() {
            states.push(StateAt::Tmpfs);
        } else {
            self.note(format!("{TMPFS} is not writable: no tmpfs side"));
        }
        states
    }

    /// One point, no latency, an engine side per state with `chunk` fixed (or
    /// the defaults).
    async fn state_point(
        &self,
        scenario: &str,
        files: &[DataFile],
        chunk: Option<u64>,
        ratios: Vec<(String, String, Option<f64>)>,
    ) -> anyhow::Result<Point> {
        let (label, latency) = if self.far.is_remote() {
            ("the path".to_owned(), None)
        } else {
            ("no latency".to_owned(), Some(Duration::ZERO))
        };
        let largest = files.iter().map(|f| f.size).max().unwrap_or(0);
        let endpoint = self
            .far
            .endpoint(&label, &Knobs::plain(Duration::ZERO, largest))
            .await?;
        let sides = self
            .states()
            .into_iter()
            .map(|state| {
                SideSpec::engine_with(
                    state.key(),
                    state.label(&self.config.out_dir),
                    files.to_vec(),
                    move |c| {
                        if let Some(chunk) = chunk {
                            *c = c.clone().fixed_chunk_size(chunk);
                        }
                    },
                )
                .state(state)
            })
            .collect();
        let mut spec = PointSpec::on(label, latency, endpoint, sides);
        spec.ratios = ratios;
        self.point(scenario, spec).await
    }

    /// `journal`: one file in fixed 1 MiB chunks, no latency.
    pub(crate) async fn journal(&self) -> anyhow::Result<ScenarioResult> {
        let size = self.config.journal_size;
        let file = self.data("journal.bin", size, "journal").await?;
        let chunk = DEFAULT_JOURNAL_CHUNK;
        let ratios = vec![
            (
                "journal-disk".into(),
                "no-journal".into(),
                Some(JOURNAL_TARGET),
            ),
            ("journal-tmpfs".into(), "no-journal".into(), None),
        ];
        let point = self
            .state_point("journal", &[file], Some(chunk), ratios)
            .await?;
        Ok(ScenarioResult {
            name: "journal".into(),
            title: format!(
                "journal: {} in fixed {} chunks, no latency",
                human(size),
                human(chunk)
            ),
            skipped: None,
            points: vec![point],
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
        let files = self
            .many_data(count, size, |i| format!("small-{i:05}.bin"))
            .await?;
        let ratios = vec![
            (
                "journal-disk".into(),
                "journal-tmpfs".into(),
                Some(SMALL_FILES_TARGET),
            ),
            ("journal-disk".into(), "no-journal".into(), None),
        ];
        let point = self
            .state_point("small-files", &files, None, ratios)
            .await?;
        let notes = vec![
            point
                .sides
                .iter()
                .map(|s| {
                    format!(
                        "{}: {:.0} files/s",
                        s.label,
                        s.files as f64 / s.summary.wall_s.median
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            "a file that is verified before the journal writer's next write never gets a \
             journal entry; each upload holds a byte-range lock of the state directory's \
             lock file while it runs"
                .into(),
        ];
        Ok(ScenarioResult {
            name: "small-files".into(),
            title: format!(
                "small-files: {count} x {}, no latency, the CLI's defaults",
                human(size)
            ),
            skipped: None,
            points: vec![point],
            notes,
        })
    }
}
