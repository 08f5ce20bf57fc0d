//! Test data for the benchmarks: large files of incompressible bytes, made once
//! (by the harness's generator) and kept in the target directory between runs.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A file of `size` pseudo-random bytes under `target/tmp`, created if missing.
pub fn data_file(name: &str, size: u64) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(name);
    if std::fs::metadata(&path).map(|m| m.len()).ok() == Some(size) {
        return path;
    }
    eprintln!("creating {} ({size} bytes)", path.display());
    idb_harness::generate_data(dir, name, size, "bench")
        .expect("write the data file")
        .path
}

/// Reads the file once so the runs that follow find it in the page cache.
pub fn warm(path: &PathBuf) {
    let mut file = File::open(path).expect("open the data file");
    let mut buf = vec![0u8; 8 << 20];
    while file.read(&mut buf).expect("read the data file") > 0 {}
}
