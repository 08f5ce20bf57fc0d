//! The reader end to end on real files: byte-exact reassembly, change detection,
//! bad inputs, hash continuity. Both read modes run every conformance test.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use idb_read::{
    Change, Chunk, ChunkMemory, ChunkPlan, Delivery, FileKind, FixedChunks, HashState, Look,
    MAX_SETTLES, ReadError, ReadMode, Reader, ReaderConfig, SourceFile, Span,
};
use proptest::prelude::*;

const MODES: [ReadMode; 2] = [ReadMode::Mmap, ReadMode::Positional];

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new_derive_key("idb-read tests")
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    // An old modification time, so that any later write visibly changes it.
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .unwrap();
    path
}

/// Threads always (nothing read in place), per-chunk hashes, hash snapshots.
fn config(prefetch: usize) -> ReaderConfig {
    ReaderConfig {
        prefetch,
        chunk_hashes: true,
        hash_snapshots: true,
        in_place_max: 0,
        ..ReaderConfig::default()
    }
}

/// A reader as a plain iterator of chunks, keeping the hash state it reached.
struct Stream {
    reader: Reader,
    /// The state after the last chunk taken, or at the end.
    state: HashState,
    ended: bool,
}

impl Stream {
    fn new(source: &SourceFile, plan: ChunkPlan, hash: HashState, config: &ReaderConfig) -> Self {
        Self::with_memory(source, plan, hash, config, &ChunkMemory::new(1 << 30))
    }

    fn with_memory(
        source: &SourceFile,
        plan: ChunkPlan,
        hash: HashState,
        config: &ReaderConfig,
        memory: &ChunkMemory,
    ) -> Self {
        Self {
            reader: Reader::start(source, plan, hash.clone(), config, memory),
            state: hash,
            ended: false,
        }
    }

    /// The next chunk; `None` after the end.
    fn recv(&mut self) -> Option<Result<Chunk, ReadError>> {
        if self.ended {
            return None;
        }
        match self.reader.next_blocking() {
            Ok(Delivery::Chunk { chunk, hash_after }) => {
                if let Some(state) = hash_after {
                    self.state = state;
                }
                Some(Ok(chunk))
            }
            Ok(Delivery::End(state)) => {
                self.state = state;
                self.ended = true;
                None
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// The hash state as far as the chunks taken (or the end) got.
    fn finish(self) -> HashState {
        self.state
    }
}

/// Reads everything; returns the reassembled bytes or the first error.
fn read_all(reader: &mut Stream) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    while let Some(chunk) = reader.recv() {
        let chunk = chunk?;
        assert_eq!(
            chunk.offset,
            out.len() as u64,
            "chunks arrive in order, contiguous"
        );
        assert_eq!(chunk.hash, Some(blake3::hash(&chunk.bytes)));
        out.extend_from_slice(&chunk.bytes);
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_files_reassemble_byte_exact(
        size in 0usize..300_000,
        chunk in 1u64..70_000,
        prefetch in 0usize..5,
        seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let bytes = data(size, seed);
        let path = write_file(dir.path(), "f", &bytes);
        for mode in MODES {
            let source = SourceFile::open(&path, mode).unwrap();
            prop_assert_eq!(source.is_mapped(), mode == ReadMode::Mmap && size > 0);
            for in_place_max in [0, u64::MAX] {
                let config = ReaderConfig { in_place_max, ..config(prefetch) };
                let mut reader = Stream::new(
                    &source,
                    ChunkPlan::fixed(source.size(), chunk),
                    HashState::new(size as u64),
                    &config,
                );
                let got = read_all(&mut reader).unwrap();
                prop_assert!(got == bytes, "{:?}: reassembled bytes differ", mode);
                let state = reader.finish();
                prop_assert_eq!(state.finalize(), Some(blake3::hash(&bytes)));
            }
        }
    }
}

#[test]
fn a_reader_started_mid_file_still_hashes_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(100_000, 1);
    let path = write_file(dir.path(), "f", &bytes);
    for mode in MODES {
        let source = SourceFile::open(&path, mode).unwrap();
        // First reader: two chunks, then stopped (as when the engine replans).
        let mut first = Stream::new(
            &source,
            ChunkPlan::fixed(100_000, 7000),
            HashState::new(100_000),
            &config(0),
        );
        for _ in 0..2 {
            first.recv().unwrap().unwrap();
        }
        let state = first.finish();
        assert_eq!(state.upto(), 14_000);
        // Second reader from an offset before and one after where the hash got.
        for from in [7000, 50_000] {
            let plan = ChunkPlan::starting_at(from, 100_000, FixedChunks(9000));
            let mut reader = Stream::new(&source, plan, state.clone(), &config(2));
            let got = read_all_from(&mut reader, from);
            assert_eq!(got, bytes[from as usize..]);
            assert_eq!(
                reader.finish().finalize(),
                Some(blake3::hash(&bytes)),
                "{mode:?} from {from}"
            );
        }
    }
}

fn read_all_from(reader: &mut Stream, from: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = reader.recv() {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.offset, from + out.len() as u64);
        out.extend_from_slice(&chunk.bytes);
    }
    out
}

/// Reads the first chunk, applies `change`, then reads on: the reader must report
/// a change before the plan completes. Returns what the on-demand check says once
/// the change is complete (the reader may catch a write half done, when the times
/// moved but the size not yet, so its kind of change can differ). The reader runs at most `prefetch + 1`
/// chunks ahead, and every change here leaves those chunks inside the file, so no
/// mapped page past a new end is ever touched.
fn change_during_reading(change: impl Fn(&Path)) -> Vec<Change> {
    const CHUNK: u64 = 4096;
    let mut errors = Vec::new();
    // Prefetch 1 reads and hashes on one thread; 4 on two (reader and hasher).
    for (mode, prefetch) in MODES.into_iter().flat_map(|m| [(m, 1), (m, 4)]) {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "f", &data(40 * CHUNK as usize, 2));
        let source = SourceFile::open(&path, mode).unwrap();
        let mut reader = Stream::new(
            &source,
            ChunkPlan::fixed(source.size(), CHUNK),
            HashState::new(source.size()),
            &config(prefetch),
        );
        reader.recv().unwrap().unwrap();
        change(&path);
        let mut result = None;
        while let Some(item) = reader.recv() {
            if let Err(e) = item {
                result = Some(e);
                break;
            }
        }
        let error = result.unwrap_or_else(|| panic!("{mode:?}: the change went unnoticed"));
        assert!(matches!(error, ReadError::Changed { .. }), "{error:?}");
        match source.check_identity() {
            Err(ReadError::Changed { change, .. }) => errors.push(change),
            other => panic!("{mode:?}: the on-demand check gave {other:?}"),
        }
    }
    errors
}

#[test]
fn appending_during_reading_is_an_error() {
    for change in change_during_reading(|path| {
        OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(b"more")
            .unwrap();
    }) {
        assert!(matches!(change, Change::Grew { .. }), "{change:?}");
    }
}

#[test]
fn truncating_during_reading_is_an_error() {
    for change in change_during_reading(|path| {
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(30 * 4096)
            .unwrap();
    }) {
        assert!(matches!(change, Change::Shrank { .. }), "{change:?}");
    }
}

#[test]
fn rewriting_in_place_during_reading_is_an_error() {
    for change in change_during_reading(|path| {
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .write_all_at(b"XXXX", 100_000)
            .unwrap();
    }) {
        assert!(matches!(change, Change::Modified), "{change:?}");
    }
}

#[test]
fn replacing_the_file_is_noticed() {
    for change in change_during_reading(|path| {
        let other = path.with_extension("new");
        std::fs::write(&other, data(40 * 4096, 3)).unwrap();
        std::fs::rename(&other, path).unwrap();
    }) {
        assert!(matches!(change, Change::Replaced), "{change:?}");
    }
}

#[test]
fn a_change_after_the_last_chunk_is_reported_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "f", &data(1000, 4));
    let source = SourceFile::open(&path, ReadMode::Auto).unwrap();
    let mut reader = Stream::new(
        &source,
        ChunkPlan::fixed(1000, 1000),
        HashState::new(1000),
        &config(0),
    );
    reader.recv().unwrap().unwrap();
    // The reader has handed over its last chunk and goes on to its final check,
    // racing with this append.
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"x")
        .unwrap();
    // Either the final check sees it, or (if it ran first) the on-demand one does.
    let at_end = reader.recv();
    let noticed = matches!(at_end, Some(Err(ReadError::Changed { .. })))
        || matches!(source.check_identity(), Err(ReadError::Changed { .. }));
    assert!(noticed);
    assert!(matches!(
        source.check_identity(),
        Err(ReadError::Changed { .. })
    ));
}

#[test]
fn bad_inputs_each_get_their_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let open = |p: &Path| SourceFile::open(p, ReadMode::Auto).unwrap_err();

    assert!(matches!(
        open(&dir.path().join("missing")),
        ReadError::NotFound { .. }
    ));
    assert!(matches!(
        open(dir.path()),
        ReadError::NotAFile {
            kind: FileKind::Directory,
            ..
        }
    ));
    assert!(matches!(
        open(Path::new("/dev/null")),
        ReadError::NotAFile {
            kind: FileKind::Device,
            ..
        }
    ));

    let fifo = dir.path().join("fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    assert!(matches!(
        open(&fifo),
        ReadError::NotAFile {
            kind: FileKind::Fifo,
            ..
        }
    ));

    let socket = dir.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    assert!(matches!(
        open(&socket),
        ReadError::NotAFile {
            kind: FileKind::Socket,
            ..
        }
    ));

    // A path through a regular file cannot be opened (works as root too, unlike
    // permission bits).
    let file = write_file(dir.path(), "plain", b"x");
    assert!(matches!(
        open(&file.join("child")),
        ReadError::Unreadable { .. }
    ));

    // Over 2 TiB, checked from the size alone (a sparse file: no disk used).
    let huge = dir.path().join("huge");
    File::create(&huge)
        .unwrap()
        .set_len(idb_read::MAX_FILE_SIZE + 1)
        .unwrap();
    assert!(
        matches!(open(&huge), ReadError::TooLarge { size, .. } if size == idb_read::MAX_FILE_SIZE + 1)
    );
    // Exactly 2 TiB is allowed (and mapping it costs only address space).
    File::options()
        .write(true)
        .open(&huge)
        .unwrap()
        .set_len(idb_read::MAX_FILE_SIZE)
        .unwrap();
    assert!(SourceFile::open(&huge, ReadMode::Auto).is_ok());

    // A file whose size says 0 but that reads as bytes would be sent empty.
    assert!(matches!(
        open(Path::new("/proc/self/status")),
        ReadError::SizeUnknown { .. }
    ));
    // An empty file is empty.
    let empty = write_file(dir.path(), "empty", b"");
    assert!(SourceFile::open(&empty, ReadMode::Auto).is_ok());
}

#[test]
fn an_empty_file_has_no_chunks_and_the_empty_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "empty", b"");
    for mode in MODES {
        let source = SourceFile::open(&path, mode).unwrap();
        for config in [config(1), ReaderConfig::default()] {
            let mut reader =
                Stream::new(&source, ChunkPlan::fixed(0, 10), HashState::new(0), &config);
            assert!(reader.recv().is_none());
            assert_eq!(reader.finish().finalize(), Some(blake3::hash(b"")));
        }
    }
}

#[test]
fn dropping_chunks_releases_nothing_the_consumer_still_holds() {
    // Chunks kept alive after later ones were dropped must still read correctly
    // (their pages come back from the page cache after a release).
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(64 * 1024 + 17, 5);
    let path = write_file(dir.path(), "f", &bytes);
    let source = SourceFile::open(&path, ReadMode::Mmap).unwrap();
    let mut reader = Stream::new(
        &source,
        ChunkPlan::fixed(source.size(), 1000),
        HashState::new(source.size()),
        &config(3),
    );
    let kept: Vec<_> = std::iter::from_fn(|| reader.recv())
        .map(Result::unwrap)
        .step_by(2)
        .collect();
    for chunk in kept {
        assert_eq!(
            chunk.bytes,
            bytes[chunk.offset as usize..chunk.end() as usize]
        );
    }
}

/// Takes every chunk, dropping each at once, and returns the bytes and the state.
fn drain(reader: &mut Stream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = reader.recv() {
        out.extend_from_slice(&chunk.unwrap().bytes);
    }
    out
}

#[test]
fn read_ahead_is_bounded_in_bytes_whatever_the_prefetch() {
    const CHUNK: u64 = 8192;
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(200 * CHUNK as usize, 6);
    let path = write_file(dir.path(), "f", &bytes);
    for mode in MODES {
        for prefetch in [1, 4, 64] {
            let source = SourceFile::open(&path, mode).unwrap();
            let memory = ChunkMemory::new(1 << 30);
            let config = ReaderConfig {
                read_ahead_bytes: 2 * CHUNK,
                ..config(prefetch)
            };
            let mut reader = Stream::with_memory(
                &source,
                ChunkPlan::fixed(source.size(), CHUNK),
                HashState::new(source.size()),
                &config,
                &memory,
            );
            assert_eq!(drain(&mut reader), bytes);
            // Two chunks read ahead, and the one just taken (still alive while
            // the next is read): never more, however deep the prefetch.
            assert!(
                memory.peak_bytes() <= 3 * CHUNK,
                "{mode:?} prefetch {prefetch}: peak {}",
                memory.peak_bytes()
            );
            assert_eq!(memory.live_bytes(), 0, "every chunk was dropped");
        }
    }
}

#[test]
fn chunk_bytes_alive_never_exceed_the_memory_budget() {
    const CHUNK: u64 = 4096;
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(100 * CHUNK as usize, 7);
    let path = write_file(dir.path(), "f", &bytes);
    for mode in MODES {
        let source = SourceFile::open(&path, mode).unwrap();
        let memory = ChunkMemory::new(5 * CHUNK);
        let mut reader = Stream::with_memory(
            &source,
            ChunkPlan::fixed(source.size(), CHUNK),
            HashState::new(source.size()),
            &config(16),
            &memory,
        );
        // The consumer keeps the last four chunks it took: with the reader's own
        // chunks, more than five would be alive if the budget were not enforced.
        let mut held = std::collections::VecDeque::new();
        let mut out = Vec::new();
        while let Some(chunk) = reader.recv() {
            let chunk = chunk.unwrap();
            out.extend_from_slice(&chunk.bytes);
            held.push_back(chunk);
            if held.len() > 4 {
                held.pop_front();
            }
        }
        assert_eq!(out, bytes);
        assert!(
            memory.peak_bytes() <= 5 * CHUNK,
            "{mode:?}: peak {}",
            memory.peak_bytes()
        );
    }
}

#[test]
fn a_reader_thread_that_panics_is_an_error_never_an_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "f", &data(100_000, 8));
    for prefetch in [1, 4] {
        let source = SourceFile::open(&path, ReadMode::Auto).unwrap();
        let mut calls = 0;
        let policy = move |_, _| {
            calls += 1;
            assert!(calls < 3, "a broken chunk policy");
            10_000
        };
        let mut reader = Stream::new(
            &source,
            ChunkPlan::starting_at(0, source.size(), policy),
            HashState::new(source.size()),
            &config(prefetch),
        );
        let error = std::iter::from_fn(|| reader.recv())
            .find_map(Result::err)
            .expect("the panic is reported");
        match error {
            ReadError::ReaderFailed {
                path: failed,
                reason,
            } => {
                assert_eq!(failed, path);
                assert!(reason.contains("a broken chunk policy"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn resuming_from_a_saved_hash_reads_only_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let size = 3 * 65536 + 500;
    let bytes = data(size, 9);
    let path = write_file(dir.path(), "f", &bytes);
    for mode in MODES {
        let source = SourceFile::open(&path, mode).unwrap();
        // A first run hashes two chunks; its state is saved as text.
        let mut first = Stream::new(
            &source,
            ChunkPlan::fixed(size as u64, 65536),
            HashState::new(size as u64),
            &config(1),
        );
        first.recv().unwrap().unwrap();
        first.recv().unwrap().unwrap();
        let saved = first.finish().encode();
        // A second one goes on from it.
        let memory = ChunkMemory::new(1 << 30);
        let state = HashState::decode(&saved).unwrap();
        let plan = ChunkPlan::starting_at(2 * 65536, size as u64, FixedChunks(65536));
        let mut second = Stream::with_memory(&source, plan, state, &config(4), &memory);
        assert_eq!(drain(&mut second), bytes[2 * 65536..]);
        assert_eq!(memory.bytes_read(), (size - 2 * 65536) as u64, "{mode:?}");
        assert_eq!(second.finish().finalize(), Some(blake3::hash(&bytes)));
    }
}

#[test]
fn a_lagging_hash_is_caught_up_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(50_000, 10);
    let path = write_file(dir.path(), "f", &bytes);
    let source = SourceFile::open(&path, ReadMode::Auto).unwrap();
    for config in [config(1), config(4), ReaderConfig::default()] {
        let memory = ChunkMemory::new(1 << 30);
        // The hash is at 0; the plan starts at 40000 (or at the end).
        for from in [40_000, 50_000] {
            let plan = ChunkPlan::starting_at(from, 50_000, FixedChunks(30_000));
            let mut reader =
                Stream::with_memory(&source, plan, HashState::new(50_000), &config, &memory);
            assert_eq!(drain(&mut reader), bytes[from as usize..]);
            assert_eq!(reader.finish().finalize(), Some(blake3::hash(&bytes)));
        }
    }
}

#[test]
fn files_are_checked_without_opening_then_opened_when_their_turn_comes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "f", &data(1000, 11));
    let identity = SourceFile::inspect(&path).unwrap();
    assert_eq!(identity.size, 1000);
    assert!(SourceFile::open_expecting(&path, ReadMode::Auto, &identity).is_ok());
    assert!(matches!(
        SourceFile::inspect(dir.path()),
        Err(ReadError::NotAFile {
            kind: FileKind::Directory,
            ..
        })
    ));
    assert!(matches!(
        SourceFile::inspect(&path.join("child")),
        Err(ReadError::Unreadable { .. })
    ));

    // Changed between the check and the turn: named as such.
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"more")
        .unwrap();
    assert!(matches!(
        SourceFile::open_expecting(&path, ReadMode::Auto, &identity),
        Err(ReadError::ChangedSinceCheck {
            change: Change::Grew { .. },
            ..
        })
    ));
    // Deleted: it disappeared, and the message says so.
    std::fs::remove_file(&path).unwrap();
    let error = SourceFile::open_expecting(&path, ReadMode::Auto, &identity).unwrap_err();
    assert!(matches!(error, ReadError::Vanished { .. }), "{error:?}");
    assert!(error.to_string().contains("it disappeared since the check"));
}

#[test]
fn a_file_deleted_while_it_is_read_is_said_to_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "f", &data(10_000, 12));
    let source = SourceFile::open(&path, ReadMode::Positional).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        source.check_identity(),
        Err(ReadError::Changed {
            change: Change::Removed,
            ..
        })
    ));
}

#[test]
fn a_small_file_is_read_in_place_with_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(700, 13);
    let path = write_file(dir.path(), "small", &bytes);
    let source = SourceFile::open(&path, ReadMode::Positional).unwrap();
    let memory = ChunkMemory::new(1 << 20);
    let reader = Reader::start(
        &source,
        ChunkPlan::fixed(700, 8 << 20),
        HashState::new(700),
        &ReaderConfig::default(),
        &memory,
    );
    // Everything is ready when `start` returns: read on this thread.
    assert_eq!(memory.bytes_read(), 700);
    match reader.next_blocking().unwrap() {
        Delivery::Chunk { chunk, .. } => assert_eq!(chunk.bytes, bytes),
        other => panic!("{other:?}"),
    }
    match reader.next_blocking().unwrap() {
        Delivery::End(state) => assert_eq!(state.finalize(), Some(blake3::hash(&bytes))),
        other => panic!("{other:?}"),
    }
    // Asking again is an error, not another end.
    assert!(matches!(
        reader.next_blocking(),
        Err(ReadError::ReaderFailed { .. })
    ));
    let _ = Span { offset: 0, len: 1 };
}

/// Sets `path`'s permissions to `mode`: its change time moves, nothing else.
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Writes `bytes` at `offset` in place, then puts the modification time back
/// (as `touch -r` or a tool that keeps times would): only the change time
/// tells.
fn write_and_put_the_time_back(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    let modified = file.metadata().unwrap().modified().unwrap();
    file.write_all_at(bytes, offset).unwrap();
    file.set_modified(modified).unwrap();
}

/// Regression (found by an adversarial pass): a `chmod` during an upload
/// failed the file as "written to", and everything sent was sent again. A
/// change of the status alone is now settled by the bytes: the ones read are
/// hashed again, and the same.
#[test]
fn a_status_change_is_settled_by_the_bytes_read() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(20_000, 21);
    let path = write_file(dir.path(), "f", &bytes);
    let source = SourceFile::open(&path, ReadMode::Auto).unwrap();
    let mut read = HashState::new(20_000);
    read.absorb(0, &bytes[..12_000]);
    assert_eq!(source.look().unwrap(), Look::Same);

    chmod(&path, 0o600);
    source.check_identity().unwrap();
    let Look::StatusChanged(status) = source.look().unwrap() else {
        panic!("a chmod is a change of the status alone");
    };
    // Not taken until settled: a reader dropped before it settles loses
    // nothing, the next look says it again.
    assert_eq!(source.look().unwrap(), Look::StatusChanged(status));
    assert!(source.settle(&read, status, &|| false).unwrap());
    // Taken as the file's: no change any more.
    assert_eq!(source.look().unwrap(), Look::Same);

    // A write inside what was read, its time put back: the bytes tell.
    write_and_put_the_time_back(&path, 11_000, b"X");
    let Look::StatusChanged(status) = source.look().unwrap() else {
        panic!("only the change time moved");
    };
    // A settle told to stop reads nothing and takes nothing.
    assert!(!source.settle(&read, status, &|| true).unwrap());
    assert!(matches!(
        source.settle(&read, status, &|| false),
        Err(ReadError::Changed {
            change: Change::Modified,
            ..
        })
    ));
    assert_eq!(source.look().unwrap(), Look::StatusChanged(status));
}

/// Each settle reads what was read again: a file whose status changes again
/// and again (a tool setting its ACLs in a loop) fails after MAX_SETTLES,
/// rather than be read for ever.
#[test]
fn a_status_that_keeps_changing_fails_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(4096, 24);
    let path = write_file(dir.path(), "f", &bytes);
    let source = SourceFile::open(&path, ReadMode::Auto).unwrap();
    let mut read = HashState::new(4096);
    read.absorb(0, &bytes);
    for i in 0..MAX_SETTLES {
        chmod(&path, if i % 2 == 0 { 0o600 } else { 0o644 });
        let Look::StatusChanged(status) = source.look().unwrap() else {
            panic!("change {i} was seen");
        };
        assert!(source.settle(&read, status, &|| false).unwrap());
    }
    chmod(&path, 0o640);
    assert!(matches!(
        source.look(),
        Err(ReadError::Changed {
            change: Change::StatusKeptChanging { .. },
            ..
        })
    ));
}

/// A file whose status changes while it is read (a `chmod` between chunks) is
/// read to its end, in every mode and on one thread or two, with the hash of
/// its bytes; one written to inside what was read, its time put back, fails.
#[test]
fn a_status_change_during_reading_goes_on_and_a_hidden_write_fails() {
    const CHUNK: u64 = 4096;
    for (mode, prefetch) in MODES.into_iter().flat_map(|m| [(m, 1), (m, 4)]) {
        for write in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let bytes = data(40 * CHUNK as usize, 22);
            let path = write_file(dir.path(), "f", &bytes);
            let source = SourceFile::open(&path, mode).unwrap();
            let mut reader = Stream::new(
                &source,
                ChunkPlan::fixed(source.size(), CHUNK),
                HashState::new(source.size()),
                &config(prefetch),
            );
            let mut got = reader.recv().unwrap().unwrap().bytes.to_vec();
            if write {
                // Inside the first chunk, read and hashed already.
                write_and_put_the_time_back(&path, 100, b"XXXX");
            } else {
                chmod(&path, 0o600);
            }
            let mut failed = None;
            while let Some(item) = reader.recv() {
                match item {
                    Ok(chunk) => got.extend_from_slice(&chunk.bytes),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let what = format!("{mode:?}, prefetch {prefetch}, write {write}");
            if write {
                assert!(
                    matches!(
                        failed,
                        Some(ReadError::Changed {
                            change: Change::Modified,
                            ..
                        })
                    ),
                    "{what}: {failed:?}"
                );
            } else {
                assert!(failed.is_none(), "{what}: {failed:?}");
                assert_eq!(got, bytes, "{what}");
                assert_eq!(
                    reader.state.finalize(),
                    Some(blake3::hash(&bytes)),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn a_status_change_between_the_check_and_the_open_is_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "f", &data(1000, 23));
    let identity = SourceFile::inspect(&path).unwrap();
    chmod(&path, 0o600);
    assert!(SourceFile::open_expecting(&path, ReadMode::Auto, &identity).is_ok());
}

/// A status taken by a settle that hashed a shorter prefix does not vouch
/// for a longer one (found by a review): a settle of the same status with
/// more bytes hashed hashes them again.
#[test]
fn a_status_taken_over_fewer_bytes_is_settled_again_over_more() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(20_000, 25);
    let path = write_file(dir.path(), "f", &bytes);
    let source = SourceFile::open(&path, ReadMode::Auto).unwrap();
    let (mut short, mut long) = (HashState::new(20_000), HashState::new(20_000));
    short.absorb(0, &bytes[..4_000]);
    long.absorb(0, &bytes[..12_000]);
    chmod(&path, 0o600);
    let Look::StatusChanged(status) = source.look().unwrap() else {
        panic!("a chmod is a change of the status alone");
    };
    assert!(source.settle(&short, status, &|| false).unwrap());
    // Bytes past the short prefix change: the same status over the long one
    // must not pass unread.
    write_and_put_the_time_back(&path, 8_000, b"X");
    assert!(matches!(
        source.settle(&long, status, &|| false),
        Err(ReadError::Changed {
            change: Change::Modified,
            ..
        })
    ));
}
