//! A file that arrived by another protocol (a tus upload, `tus/register.rs`)
//! becoming a verified file, as [`Sessions::apply`]'s verify makes one.

use std::fs;
use std::io;
use std::path::Path;

use idb_wire::VerifyReceipt;

use super::{Done, Sessions, not_saved};
use crate::lock::lock;
use crate::persist::{ReceiptRecord, capped_log};
use crate::reply::Reply;

impl Sessions {
    /// Records `receipt` as the file `filename` of `dataset`, its bytes put in
    /// place by `place` (given where they go; not called in sink mode), and
    /// counts it verified. A name the dataset has already is a further
    /// datafile: counted, not stored. Returns which datafile of the name it
    /// is (1 for the first).
    pub(crate) fn register_done(
        &self,
        dataset: &str,
        filename: &str,
        receipt: VerifyReceipt,
        log: Vec<(u64, u64)>,
        place: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<u64, Reply> {
        let key = (dataset.to_owned(), filename.to_owned());
        let name = self.name(&key);
        // Held to the end of the call (see `names`).
        let _one_call_at_a_time = lock(&name);
        if lock(&self.done).contains_key(&key) {
            let nth = {
                let mut extra = lock(&self.extra_datafiles);
                let n = extra.entry(key).or_insert(1);
                *n += 1;
                *n
            };
            self.counters.verified();
            return Ok(nth);
        }
        let dest = self.final_path(dataset, filename);
        if let Some(dest) = &dest {
            let placed = dest
                .parent()
                .map_or(Ok(()), fs::create_dir_all)
                .and_then(|()| place(dest));
            if let Err(e) = placed {
                return Err(Reply::error(500, "storage", format!("cannot store: {e}")));
            }
        }
        let record = ReceiptRecord {
            dataset: key.0.clone(),
            filename: key.1.clone(),
            size: receipt.size,
            blake3: receipt.blake3.clone(),
            accepted: capped_log(&log).into(),
        };
        // No protocol 1 session is replaced: session ids start at 1.
        if let Err(e) = self.save(|m| m.verify(&key, 0, record)) {
            if let Some(dest) = &dest {
                let _ = fs::remove_file(dest);
            }
            return Err(not_saved(&e));
        }
        lock(&self.done).insert(key, Done { receipt, log });
        self.counters.verified();
        Ok(1)
    }
}
