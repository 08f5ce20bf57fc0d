//! A real SIGBUS: a mapped file truncated under a chunk that is then read. The
//! faulting address must name the file (what the CLI's handler prints). The
//! fault kills the process it happens in, so it happens in a child: this test
//! binary run again on `fault_in_child` alone.

use std::path::Path;
use std::process::Command;

use idb_read::{
    ChunkMemory, ChunkPlan, Delivery, HashState, ReadMode, Reader, ReaderConfig, SourceFile,
};

/// Set in the child's environment: the file to map and truncate.
const CHILD: &str = "IDB_READ_SIGBUS_FILE";
/// The child's exit code when its handler ran.
const HANDLED: i32 = 42;

extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: a kernel-raised SIGBUS carries the faulting address; the lookup
    // reads atomics and the slot of the faulting map, alive until the process
    // ends here; write and _exit are async-signal-safe.
    unsafe {
        let address = (*info).si_addr() as usize;
        let named = idb_read::mapped_path_at(address).unwrap_or(b"<unnamed>");
        libc::write(2, named.as_ptr().cast(), named.len());
        libc::_exit(HANDLED);
    }
}

#[test]
fn fault_in_child() {
    let Some(path) = std::env::var_os(CHILD) else {
        return; // Only meaningful as the child of the test below.
    };
    // SAFETY: as in the CLI: a zeroed sigaction with SA_SIGINFO and this handler.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
    let path = Path::new(&path);
    let size = std::fs::metadata(path).unwrap().len();
    let source = SourceFile::open(path, ReadMode::Mmap).unwrap();
    let reader = Reader::start(
        &source,
        ChunkPlan::fixed(size, size),
        HashState::new(size),
        &ReaderConfig {
            in_place_max: 0,
            ..ReaderConfig::default()
        },
        &ChunkMemory::new(size),
    );
    let Ok(Delivery::Chunk { chunk, .. }) = reader.next_blocking() else {
        panic!("no chunk");
    };
    // The chunk is a view of the map; the file loses its pages under it.
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let sum: u64 = chunk.bytes.iter().map(|&b| u64::from(b)).sum();
    panic!("read {sum} past the end of a truncated map without a fault");
}

#[test]
fn a_fault_in_a_truncated_map_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated under the map.bin");
    std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fault_in_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD, &path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert_eq!(child.status.code(), Some(HANDLED), "{stderr}");
    assert!(stderr.contains(&*path.to_string_lossy()), "{stderr}");
}
