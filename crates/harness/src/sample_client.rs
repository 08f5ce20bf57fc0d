//! The service's sample client, as a pattern: `setup`, then 2 MiB `transfer` calls
//! strictly one after another (each chunk read from the file just before it is
//! sent), then `verify`; urlencoded setup and verify, multipart transfers, one kept
//! connection, no pipelining and no retries. Faithful and simple, not slowed down:
//! it pays exactly one round trip per call, as the original does.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use anyhow::Context;
use idb_wire::VerifyReceipt;

use crate::SAMPLE_CLIENT_CHUNK;
use crate::calls::Calls;
use crate::data::Upload;
use crate::timeline::Timeline;

/// Uploads `file` the way the sample client does, recording each call on
/// `timeline`; returns the verify receipt.
pub(crate) async fn upload(
    calls: &Calls,
    file: &Upload,
    timeline: &Timeline,
) -> anyhow::Result<VerifyReceipt> {
    let source = Arc::new(
        File::open(&file.data.path)
            .with_context(|| format!("cannot open {}", file.data.path.display()))?,
    );
    timeline.call(calls.setup(&file.name, file.data.size).await?);
    timeline.setup_answered();
    let mut previous_size = 0u64;
    while previous_size < file.data.size {
        let len = SAMPLE_CLIENT_CHUNK.min(file.data.size - previous_size) as usize;
        let envelope = calls.envelope(&file.name, previous_size)?;
        let source = Arc::clone(&source);
        let offset = previous_size;
        // A file read is blocking; the sample client reads each chunk right before
        // sending it, so this read is part of what is measured.
        let prepared = tokio::task::spawn_blocking(move || {
            envelope.wrap(len, |buf| source.read_exact_at(buf, offset))
        })
        .await
        .context("the chunk reader panicked")??;
        let took = calls
            .transfer(prepared)
            .await
            .with_context(|| format!("transfer of {} at {previous_size}", file.name))?;
        timeline.call(took);
        timeline.acked(len as u64);
        previous_size += len as u64;
    }
    let (receipt, took) = calls.verify(&file.name).await?;
    timeline.call(took);
    Ok(receipt)
}
