//! Test data: incompressible files generated from blake3's extendable output, with
//! their hashes known before anything is sent.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Bytes generated and written per step.
const GENERATE_BLOCK: usize = 1 << 20;

/// One generated file.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Where it was written.
    pub path: PathBuf,
    /// The base name, as the server knows it.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// blake3 of the contents, as 64 lowercase hex digits.
    pub blake3: String,
}

/// Writes `size` pseudo-random bytes to `dir/name`: the output of blake3 in
/// derive-key mode keyed by `seed`, so files with different seeds differ and none
/// compresses (like real instrument data). Blocking: call it off the async threads.
pub fn generate(dir: &Path, name: &str, size: u64, seed: &str) -> anyhow::Result<DataFile> {
    let path = dir.join(name);
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(GENERATE_BLOCK, file);
    let mut xof =
        blake3::Hasher::new_derive_key(&format!("idb harness data {seed}")).finalize_xof();
    let mut hasher = blake3::Hasher::new();
    let mut block = vec![0u8; GENERATE_BLOCK];
    let mut left = size;
    while left > 0 {
        let n = left.min(GENERATE_BLOCK as u64) as usize;
        xof.fill(&mut block[..n]);
        hasher.update(&block[..n]);
        out.write_all(&block[..n])
            .with_context(|| format!("cannot write {}", path.display()))?;
        left -= n as u64;
    }
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(DataFile {
        path,
        name: name.to_owned(),
        size,
        blake3: hasher.finalize().to_hex().to_string(),
    })
}
