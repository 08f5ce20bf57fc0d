//! `idb upload --dry-run`: what would be sent, and a rough time from one probe
//! of the round trip. Sends no setup and no transfer (the probe is a `HEAD` of
//! the server's address, without the token).

use idb_engine::{CheckedFiles, Uploader};
use serde_json::json;

use crate::cli::UploadArgs;
use crate::console::Console;
use crate::exit::Exit;
use crate::progress::{JSON_SCHEMA, duration};
use crate::size::human;
use crate::text::{escape, escaped};

pub async fn run(
    uploader: &Uploader,
    files: &CheckedFiles,
    args: &UploadArgs,
    console: &Console,
) -> Exit {
    let mut calls = 0;
    for (path, size) in files.iter() {
        console.data(&format!("would upload {} ({})", escaped(path), human(size)));
        console.json_line(&json!({
            "schema": JSON_SCHEMA,
            "event": "would_upload",
            "path": escaped(path),
            "size": size,
        }));
        calls += calls_for(size, args.transfer.chunk_size, args.transfer.max_chunk_size);
    }
    let total = files.total_bytes();
    console.error(&format!(
        "dry run: {} files, {} in total; nothing was sent",
        files.len(),
        human(total)
    ));
    let rtt = match uploader.round_trip().await {
        Ok(rtt) => rtt,
        Err(e) => {
            console.error(&format!("error: {}", escape(&e.to_string())));
            return Exit::Failure;
        }
    };
    // One call after another within a file, `parallel` files at once.
    let parallel = args.transfer.parallel.clamp(1, files.len().max(1)) as u64;
    let round_trips = rtt.mul_f64(calls as f64 / parallel as f64);
    let bytes = match args.transfer.bwlimit {
        Some(rate) => format!(
            "; the bytes themselves take {} at --bwlimit {}/s",
            duration(total.div_ceil(rate)),
            human(rate)
        ),
        None => "; the bytes themselves take what the path's bandwidth allows".to_owned(),
    };
    console.error(&format!(
        "round trip to {}: {:.1} ms; about {calls} calls, {parallel} file{} at once: \
         about {:.1} s of round trips{bytes}",
        args.server,
        rtt.as_secs_f64() * 1e3,
        if parallel == 1 { "" } else { "s" },
        round_trips.as_secs_f64(),
    ));
    console.json_line(&json!({
        "schema": JSON_SCHEMA,
        "event": "dry_run",
        "files": files.len(),
        "bytes": total,
        "rtt_ms": rtt.as_secs_f64() * 1e3,
        "calls": calls,
        "round_trip_seconds": round_trips.as_secs_f64(),
    }));
    Exit::Success
}

/// Calls for one file: setup, its chunks (the chunk size doubling from `first`
/// up to `max`, as it does while round trips dominate), verify.
fn calls_for(size: u64, first: u64, max: u64) -> u64 {
    let (mut chunk, mut left, mut calls) = (first.max(1), size, 2);
    while left > 0 {
        left = left.saturating_sub(chunk);
        chunk = (chunk * 2).min(max.max(first));
        calls += 1;
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_count_setup_chunks_and_verify() {
        assert_eq!(calls_for(0, 8, 64), 2);
        assert_eq!(calls_for(8, 8, 64), 3);
        // 8 + 16 + 32 + 64 + 64 = 184 >= 150
        assert_eq!(calls_for(150, 8, 64), 7);
        // Fixed chunks.
        assert_eq!(calls_for(100, 10, 10), 12);
    }
}
