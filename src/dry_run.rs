//! `idb upload --dry-run`: what would be sent, and a rough time from a probe
//! of the round trip. Sends no setup and no transfer (the probe is a `HEAD` of
//! the server's address, without the token).

use std::time::Duration;

use idb_engine::{CheckedFiles, Known, Uploader};
use serde_json::json;

use crate::cli::UploadArgs;
use crate::console::Console;
use crate::dates::utc_minute;
use crate::exit::Exit;
use crate::progress::{JSON_SCHEMA, file_json};
use crate::size::human;
use crate::text::{escape, escaped};

pub async fn run(
    uploader: &Uploader,
    files: &CheckedFiles,
    args: &UploadArgs,
    console: &Console,
) -> Exit {
    let known = match uploader.known_by_receipts(files) {
        Ok(read) => {
            if let Some(damaged) = &read.damaged {
                crate::status::warn_damaged_receipts(console, damaged);
            }
            read.known
        }
        Err(e) => {
            console.error(&format!(
                "warning: {}; every file is counted as to upload",
                escape(&e.to_string())
            ));
            files.iter().map(|_| None).collect()
        }
    };
    let (mut calls, mut total, mut count, mut skipped) = (0, 0, 0, 0);
    for ((path, size), known) in files.iter().zip(known) {
        let (event, line) = match &known {
            Some(Known::Same(receipt)) => {
                skipped += 1;
                let when = utc_minute(receipt.verified_at);
                let line = format!("would skip {}: already uploaded on {when}", escaped(path));
                ("would_skip", line)
            }
            Some(Known::SameSize(receipt)) => {
                let when = utc_minute(receipt.verified_at);
                let line = format!(
                    "would read {} ({}) and skip it if its blake3 is that of the copy \
                     uploaded on {when} (it changed on disk since)",
                    escaped(path),
                    human(size)
                );
                ("would_check", line)
            }
            Some(Known::OtherBytes(receipt)) => {
                let line = format!(
                    "would upload {} ({}), but its name went up on {} with other bytes ({}): \
                     the chunked API refuses a name the dataset holds, tus adds a second file \
                     of that name; remove the old one on the dataset's page first",
                    escaped(path),
                    human(size),
                    utc_minute(receipt.verified_at),
                    human(receipt.size)
                );
                ("would_upload", line)
            }
            None => {
                let line = format!("would upload {} ({})", escaped(path), human(size));
                ("would_upload", line)
            }
        };
        console.data(&line);
        // `path` and `name` (the name it is sent as), as in every file event.
        let mut object = file_json(event, path, json!({ "size": size }));
        if let Some(Known::OtherBytes(receipt)) = &known {
            object["name_verified_at"] = receipt.verified_at.into();
        }
        console.json_line(&object);
        if !matches!(known, Some(Known::Same(_))) {
            count += 1;
            total += size;
            calls += calls_for(size, args.transfer.chunk_size, args.transfer.max_chunk());
        }
    }
    let skipping = match skipped {
        0 => String::new(),
        n => format!(" ({n} more skipped: receipts say they were verified earlier)"),
    };
    console.error(&format!(
        "dry run: {count} file{} to upload, {} in total{skipping}; nothing was sent",
        if count == 1 { "" } else { "s" },
        human(total)
    ));
    let rtt = match uploader.round_trip().await {
        Ok(rtt) => rtt,
        Err(e) => {
            let error = escape(&e.to_string()).into_owned();
            console.error(&format!("error: {error}"));
            // Still the final line a script waits for, saying why it has no
            // estimate.
            let mut object = Summary::of(count, skipped, total, calls).json(None);
            object["error"] = error.into();
            console.json_line(&object);
            return Exit::Failure;
        }
    };
    // One call after another within a file, `parallel` files at once.
    let parallel = args.transfer.parallel.clamp(1, count.max(1)) as u64;
    let round_trips = rtt.mul_f64(calls as f64 / parallel as f64);
    let bytes = match args.transfer.bwlimit {
        Some(rate) => format!(
            "; the bytes themselves take {} at --bwlimit {}/s",
            crate::dates::age(std::time::Duration::from_secs(total.div_ceil(rate))),
            human(rate)
        ),
        None => "; the bytes themselves take what the path's bandwidth allows".to_owned(),
    };
    console.error(&format!(
        "round trip to {}: {:.1} ms; about {calls} calls, {parallel} file{} at once: \
         about {:.1} s of round trips{bytes}",
        args.target.server,
        rtt.as_secs_f64() * 1e3,
        if parallel == 1 { "" } else { "s" },
        round_trips.as_secs_f64(),
    ));
    console.json_line(&Summary::of(count, skipped, total, calls).json(Some((rtt, round_trips))));
    Exit::Success
}

/// The dry run of no files (a shard that holds none): no probe is worth it.
pub fn nothing(console: &Console) {
    console.error("dry run: 0 files to upload, 0 B in total; nothing was sent");
    let mut object = Summary::of(0, 0, 0, 0).json(None);
    object["round_trip_seconds"] = 0.0.into();
    console.json_line(&object);
}

/// What the final `dry_run` object counts.
struct Summary {
    files: usize,
    skipped: usize,
    bytes: u64,
    calls: u64,
}

impl Summary {
    fn of(files: usize, skipped: usize, bytes: u64, calls: u64) -> Self {
        Self {
            files,
            skipped,
            bytes,
            calls,
        }
    }

    /// The object, with the probe's round trip and the round trips' total
    /// when there was one (null otherwise).
    fn json(&self, probed: Option<(Duration, Duration)>) -> serde_json::Value {
        let seconds = crate::progress::json_seconds;
        json!({
            "schema": JSON_SCHEMA,
            "event": "dry_run",
            "files": self.files,
            "skipped": self.skipped,
            "bytes": self.bytes,
            "rtt_ms": probed.map(|(rtt, _)| seconds(rtt.as_secs_f64() * 1e3)),
            "calls": self.calls,
            "round_trip_seconds": probed.map(|(_, total)| seconds(total.as_secs_f64())),
        })
    }
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
