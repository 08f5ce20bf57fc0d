//! The ceiling: `setup`, ONE `transfer` carrying the whole file from offset 0, then
//! `verify`. The body is built in memory before the clock starts, so what is timed
//! is only what the path (client, loopback, mock) costs.

use std::time::{Duration, Instant};

use anyhow::Context;
use idb_wire::VerifyReceipt;

use crate::calls::{Calls, PreparedTransfer};
use crate::data::DataFile;

/// Reads the whole file into one transfer body (untimed).
pub(crate) async fn prepare(calls: &Calls, file: &DataFile) -> anyhow::Result<PreparedTransfer> {
    let envelope = calls.envelope(&file.name, 0)?;
    let (path, len) = (file.path.clone(), file.size as usize);
    tokio::task::spawn_blocking(move || {
        envelope.wrap(len, |buf| {
            use std::io::Read;
            let mut source = std::fs::File::open(&path)?;
            source.read_exact(buf)
        })
    })
    .await
    .context("the file reader panicked")?
}

/// What the single request took.
pub(crate) struct SingleRequest {
    pub(crate) receipt: VerifyReceipt,
    /// The transfer call alone (request out, answer in).
    pub(crate) transfer: Duration,
}

/// Sends setup, the prepared transfer and verify, one after another.
pub(crate) async fn send(
    calls: &Calls,
    file: &DataFile,
    prepared: PreparedTransfer,
) -> anyhow::Result<SingleRequest> {
    calls.setup(&file.name, file.size).await?;
    let started = Instant::now();
    calls
        .transfer(prepared)
        .await
        .with_context(|| format!("the single transfer of {}", file.name))?;
    let transfer = started.elapsed();
    let receipt = calls.verify(&file.name).await?;
    Ok(SingleRequest { receipt, transfer })
}
