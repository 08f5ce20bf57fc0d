//! The ceiling: `setup`, ONE `transfer` carrying the whole file from offset 0, then
//! `verify`. The body is built in memory before the clock starts, so what is timed
//! is only what the path (client, network, server) costs.

use std::time::Duration;

use anyhow::Context;
use idb_wire::VerifyReceipt;

use crate::calls::{Calls, PreparedTransfer};
use crate::data::Upload;
use crate::timeline::Timeline;

/// Reads the whole file into one transfer body (untimed).
pub(crate) async fn prepare(calls: &Calls, file: &Upload) -> anyhow::Result<PreparedTransfer> {
    let envelope = calls.envelope(&file.name, 0)?;
    let (path, len) = (file.data.path.clone(), file.data.size as usize);
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
    file: &Upload,
    prepared: PreparedTransfer,
    timeline: &Timeline,
) -> anyhow::Result<SingleRequest> {
    timeline.call(calls.setup(&file.name, file.data.size).await?);
    timeline.setup_answered();
    let transfer = calls
        .transfer(prepared)
        .await
        .with_context(|| format!("the single transfer of {}", file.name))?;
    timeline.call(transfer);
    timeline.acked(file.data.size);
    let (receipt, took) = calls.verify(&file.name).await?;
    timeline.call(took);
    Ok(SingleRequest { receipt, transfer })
}
