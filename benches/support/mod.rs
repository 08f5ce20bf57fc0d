//! Test data for the benchmarks: large files of incompressible bytes, made once
//! and kept in the target directory between runs.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;

/// A file of `size` pseudo-random bytes under `target/tmp`, created if missing.
pub fn data_file(name: &str, size: u64) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    if std::fs::metadata(&path).map(|m| m.len()).ok() == Some(size) {
        return path;
    }
    eprintln!("creating {} ({size} bytes)", path.display());
    let mut out = BufWriter::new(File::create(&path).expect("create the data file"));
    let mut xof = blake3::Hasher::new_derive_key("idb bench data").finalize_xof();
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        xof.fill(&mut block[..n]);
        out.write_all(&block[..n]).expect("write the data file");
        left -= n as u64;
    }
    out.flush().expect("write the data file");
    path
}

/// Reads the file once so the runs that follow find it in the page cache.
pub fn warm(path: &PathBuf) {
    let mut file = File::open(path).expect("open the data file");
    let mut buf = vec![0u8; 8 << 20];
    while file.read(&mut buf).expect("read the data file") > 0 {}
}
