//! The evidence a run leaves: `results.json` (raw), `summary.md` (a table ready for
//! the README) and `command.txt` (the command and the machine), side by side.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::results::{Machine, Results};

/// The raw results file.
pub const RESULTS_FILE: &str = "results.json";

/// The Markdown summary.
pub const SUMMARY_FILE: &str = "summary.md";

/// The command and machine facts.
pub const COMMAND_FILE: &str = "command.txt";

/// `YYYYMMDDTHHMMSSZ` for a moment (UTC), for directory names and records.
pub fn utc_timestamp(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `YYYY-MM-DD HH:MM UTC` for `secs` since the epoch, for people.
pub fn utc_minute(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) of the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// What this machine is.
pub(crate) fn machine() -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let memory_bytes = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kib| kib * 1024);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    Machine {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: if kernel.is_empty() {
            std::env::consts::OS.to_owned()
        } else {
            format!("Linux {kernel}")
        },
        cpu_model,
        memory_bytes,
    }
}

/// Writes `command.txt`.
pub(crate) fn write_command(dir: &Path, results: &Results) -> anyhow::Result<()> {
    let m = &results.machine;
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let text = format!(
        "{}\n\ncwd: {cwd}\nstarted: {}\nharness: {}\nnproc: {}\nkernel: {}\ncpu: {}\nmemory: {}\n",
        results.command,
        results.started_utc,
        results.harness,
        m.nproc,
        m.kernel,
        m.cpu_model,
        m.memory_bytes.map_or_else(|| "unknown".to_owned(), human),
    );
    write(dir, COMMAND_FILE, &text)
}

/// Writes `results.json` and `summary.md` (again after every scenario, so a run
/// that fails part way keeps what it measured).
pub(crate) fn write_results(dir: &Path, results: &Results) -> anyhow::Result<String> {
    let json = serde_json::to_string_pretty(results).context("cannot encode the results")?;
    write(dir, RESULTS_FILE, &(json + "\n"))?;
    let summary = summary(results);
    write(dir, SUMMARY_FILE, &summary)?;
    Ok(summary)
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The Markdown summary: one table of sides, one of ratios, the model, the notes.
pub(crate) fn summary(results: &Results) -> String {
    let m = &results.machine;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`{}` on {} x {} ({}), {}: in-process mock, sink storage, strict mode; median of {} \
         repetition{} per side, sides alternating; every ratio compares numbers from this run. \
         CPU time and peak RSS are the whole process, mock included.\n",
        results.command,
        m.nproc,
        m.cpu_model,
        m.kernel,
        results.started_utc,
        results.reps,
        if results.reps == 1 { "" } else { "s" },
    );
    out.push_str("| scenario | side | MiB/s | wall s | CPU s | peak RSS MiB | retries |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for scenario in &results.scenarios {
        for (i, side) in scenario.sides.iter().enumerate() {
            let md = &side.median;
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.2} | {:.2} | {} | {} |",
                if i == 0 { scenario.title.as_str() } else { "" },
                side.label,
                md.mib_per_s,
                md.wall_s,
                md.cpu_s,
                md.peak_rss_mib
                    .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0}")),
                md.retries,
            );
        }
    }
    out.push_str("\n| ratio (same run) | value | target |\n|---|---:|---|\n");
    for scenario in &results.scenarios {
        for ratio in &scenario.ratios {
            let target = match (ratio.target, ratio.meets_target) {
                (Some(t), Some(true)) => format!(">= {t}x (met)"),
                (Some(t), _) => format!(">= {t}x (missed)"),
                (None, _) => "(reported)".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {}: {} | {:.2}x | {target} |",
                scenario.name, ratio.name, ratio.value
            );
        }
    }
    for scenario in &results.scenarios {
        if let Some(model) = &scenario.model {
            let _ = writeln!(
                out,
                "\nModel bound ({}): c = {} (the engine's final chunk size), RTT = {:.0} ms \
                 latency + {:.2} ms empty call, B = {:.0} MiB/s (transfer calls carrying \
                 the file's first c bytes, no latency, each less one empty call; the row above \
                 times setup to verify): c / (RTT + c/B) = {:.1} MiB/s; the engine reached \
                 {:.1} MiB/s ({:.2}).",
                scenario.name,
                human(model.chunk_size),
                model.latency_ms,
                model.empty_call_ms,
                model.bandwidth_mib_s,
                model.bound_mib_s,
                model.engine_mib_s,
                model.ratio,
            );
        }
    }
    let notes: Vec<_> = results
        .scenarios
        .iter()
        .flat_map(|s| s.notes.iter().map(move |n| (s.name.as_str(), n)))
        .collect();
    if !notes.is_empty() {
        out.push('\n');
        for (name, note) in notes {
            let _ = writeln!(out, "- {name}: {note}");
        }
    }
    out
}

/// Bytes for people: `256.0 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_minutes_of_known_instants() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        // A leap day of a century divisible by 400, one second before midnight.
        assert_eq!(utc_minute(951_868_799), "2000-02-29 23:59 UTC");
        assert_eq!(utc_minute(1_700_000_000), "2023-11-14 22:13 UTC");
        // 2100 is not a leap year.
        assert_eq!(utc_minute(4_107_542_400), "2100-03-01 00:00 UTC");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(256 << 20), "256.0 MiB");
        assert_eq!(human(3 << 40), "3.0 TiB");
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |secs| utc_timestamp(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "19700101T000000Z");
        // 2000-02-29 12:34:56 UTC, a leap day.
        assert_eq!(at(951_827_696), "20000229T123456Z");
        // 2024-12-31 23:59:59 UTC.
        assert_eq!(at(1_735_689_599), "20241231T235959Z");
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(4 << 20), "4.0 MiB");
        assert_eq!(human(1 << 30), "1.0 GiB");
    }
}
