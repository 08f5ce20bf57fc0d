//! The evidence a run leaves: `results.json` (raw), `report.md` (tables ready for
//! the README), the plot, and `command.txt` (the command and the machine), side by
//! side; and the table for a terminal.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::results::{CpuFloor, CurlCpu, Machine, ModelBound, Point, Results, Side, TargetIs};

/// The raw results file.
pub const RESULTS_FILE: &str = "results.json";

/// The Markdown report.
pub const REPORT_FILE: &str = "report.md";

/// The plot of throughput against round trip (SVG).
pub const PLOT_FILE: &str = "throughput-vs-rtt.svg";

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
    let hostname = read("/proc/sys/kernel/hostname").trim().to_owned();
    Machine {
        hostname: if hostname.is_empty() {
            "unknown".into()
        } else {
            hostname
        },
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

/// The machine in one line, for people.
fn machine_line(m: &Machine) -> String {
    format!(
        "{} x {}, {}, {} ({})",
        m.nproc,
        m.cpu_model,
        m.memory_bytes
            .map_or_else(|| "memory unknown".to_owned(), human),
        m.kernel,
        m.hostname
    )
}

/// Writes `command.txt`.
pub(crate) fn write_command(dir: &Path, results: &Results) -> anyhow::Result<()> {
    let m = &results.machine;
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let text = format!(
        "{}\n\ncwd: {cwd}\nstarted: {}\nharness: {}\nhost: {}\nnproc: {}\nkernel: {}\ncpu: \
         {}\nmemory: {}\nfar end: {}{}\n",
        results.command,
        results.started_utc,
        results.harness,
        m.hostname,
        m.nproc,
        m.kernel,
        m.cpu_model,
        m.memory_bytes.map_or_else(|| "unknown".to_owned(), human),
        results.far_end.kind,
        results
            .far_end
            .url
            .as_deref()
            .map_or_else(String::new, |u| format!(" {u}")),
    );
    write(dir, COMMAND_FILE, &text)
}

/// Writes `results.json`, `report.md` and the plot (again after every scenario,
/// so a run that fails part way keeps what it measured). Returns the report.
pub(crate) fn write_results(dir: &Path, results: &Results) -> anyhow::Result<String> {
    let json = serde_json::to_string_pretty(results).context("cannot encode the results")?;
    write(dir, RESULTS_FILE, &(json + "\n"))?;
    let svg = crate::plot::svg(results)?;
    match &svg {
        Some(svg) => write(dir, PLOT_FILE, svg)?,
        // No plot (yet): one an earlier run left in a reused directory must
        // not pass for this run's.
        None => match std::fs::remove_file(dir.join(PLOT_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot remove an earlier run's {}",
                        dir.join(PLOT_FILE).display()
                    )
                });
            }
            _ => {}
        },
    }
    let report = markdown(results, svg.is_some());
    write(dir, REPORT_FILE, &report)?;
    Ok(report)
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A number or `n/a`.
fn or_na(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

/// One side's row of numbers, as both tables show it.
fn cells(side: &Side) -> [String; 7] {
    let s = &side.summary;
    [
        format!(
            "{:.1} ({:.1}-{:.1})",
            s.whole_mib_s.median, s.whole_mib_s.min, s.whole_mib_s.max
        ),
        or_na(s.sustained_mib_s.map(|x| x.median), 1),
        format!(
            "{} / {}",
            or_na(s.request_ms_p50, 1),
            or_na(s.request_ms_p99, 1)
        ),
        format!("{}", s.retries),
        format!("{:.2}", s.client_cpu_s_per_gib.median),
        or_na(s.far_end_cpu_s_per_gib, 2),
        or_na(s.peak_rss_mib, 0),
    ]
}

const HEADERS: [&str; 9] = [
    "point",
    "side",
    "MiB/s whole (min-max)",
    "MiB/s sustained",
    "call ms p50 / p99",
    "retries",
    "client CPU s/GiB",
    "mock CPU s/GiB",
    "peak RSS MiB",
];

/// The ratios of a point in one line.
fn ratio_line(point: &Point) -> String {
    point
        .ratios
        .iter()
        .map(|r| {
            let op = match r.target_is {
                TargetIs::AtLeast => ">=",
                TargetIs::AtMost => "<=",
            };
            let target = match (r.target, r.meets_target) {
                (Some(t), Some(true)) => format!(" (target {op} {t:.2}: met)"),
                (Some(t), _) => format!(" (target {op} {t:.2}: missed)"),
                _ => String::new(),
            };
            format!("{} {}x{target}", r.key, shown_ratio(r.value, r.target))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A ratio to two decimals, or to as many more as it takes (up to six) not to
/// look equal to its target when it is not: 1.1017 against 1.10 is "1.102".
fn shown_ratio(value: f64, target: Option<f64>) -> String {
    let mut decimals = 2;
    while let Some(target) = target
        && decimals < 6
        && value != target
        && format!("{value:.decimals$}") == format!("{target:.decimals$}")
    {
        decimals += 1;
    }
    format!("{value:.decimals$}")
}

/// The model bound of a point in one line.
fn model_line(model: &ModelBound) -> String {
    let each = if model.bandwidth_per_connection {
        " per connection (the engine's connections together went past one connection's B, \
         so the far end or the path caps each one)"
    } else {
        ""
    };
    format!(
        "model bound: c = {}, RTT = {:.2} ms, B = {:.1} MiB/s{each}, {} file(s) at once: {:.1} \
         MiB/s in steady state, {:.1} MiB/s with setup and verify; the engine reached {:.1} MiB/s",
        human(model.chunk_size),
        model.rtt_ms,
        model.bandwidth_mib_s,
        model.files_at_once,
        model.bound_mib_s,
        model.bound_with_setup_verify_mib_s,
        model.engine_mib_s
    )
}

/// The CPU floor of a point in one line.
fn floor_line(floor: &CpuFloor) -> String {
    format!(
        "CPU floor ({} over loopback TCP, median of {}): sendfile {:.2} + blake3 {:.2} + map \
         and unmap {:.2} on the sender, recv {:.2} + blake3 {:.2} on the receiver = {:.2} \
         CPU-s/GiB ({:.2}-{:.2}); blake3 alone on one thread {:.2} CPU-s/GiB; the receiver's \
         blake3 matched the file's",
        human(floor.bytes),
        floor.reps,
        floor.sendfile_cpu_s_per_gib,
        floor.sender_blake3_cpu_s_per_gib,
        floor.sender_map_cpu_s_per_gib,
        floor.recv_cpu_s_per_gib,
        floor.receiver_blake3_cpu_s_per_gib,
        floor.floor_cpu_s_per_gib.median,
        floor.floor_cpu_s_per_gib.min,
        floor.floor_cpu_s_per_gib.max,
        floor.blake3_cpu_s_per_gib.median,
    )
}

/// The curl side of a point in one line.
fn curl_line(curl: &CurlCpu) -> String {
    format!(
        "curl in one request ({}, {} from the file, median of {}): {:.2} CPU-s/GiB \
         ({:.2}-{:.2}), {:.1} MiB/s; blake3 alone {:.2} CPU-s/GiB; engine client {:.2} \
         CPU-s/GiB; client_alone_vs_curl {}x (engine client / (curl + blake3)); the far \
         end's receipt matched the file ({} bytes, blake3 {})",
        curl.version
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
        human(curl.bytes),
        curl.reps,
        curl.curl_cpu_s_per_gib.median,
        curl.curl_cpu_s_per_gib.min,
        curl.curl_cpu_s_per_gib.max,
        curl.whole_mib_s,
        curl.blake3_cpu_s_per_gib.median,
        curl.engine_client_cpu_s_per_gib,
        shown_ratio(
            curl.client_alone_vs_curl,
            Some(crate::cpu_floor::CLIENT_TARGET)
        ),
        curl.receipt_size,
        &curl.receipt_blake3[..curl.receipt_blake3.len().min(16)],
    )
}

/// What a point says beyond its table: ratios, model bound, CPU floor, curl.
fn point_lines(point: &Point) -> Vec<String> {
    let mut lines = Vec::new();
    if !point.ratios.is_empty() {
        lines.push(ratio_line(point));
    }
    if let Some(model) = &point.model {
        lines.push(model_line(model));
    }
    if let Some(reason) = &point.model_skipped {
        lines.push(format!("model bound skipped: {reason}"));
    }
    if let Some(floor) = &point.cpu_floor {
        lines.push(floor_line(floor));
    }
    if let Some(reason) = &point.cpu_floor_skipped {
        lines.push(format!("CPU floor skipped: {reason}"));
    }
    if let Some(curl) = &point.curl {
        lines.push(curl_line(curl));
    }
    if let Some(reason) = &point.curl_skipped {
        lines.push(format!("curl side skipped: {reason}"));
    }
    for side in &point.skipped_sides {
        lines.push(format!("{} skipped: {}", side.key, side.reason));
    }
    lines
}

/// The terminal table: one block per scenario, columns padded, no colour.
pub fn table(results: &Results) -> String {
    let mut out = String::new();
    for scenario in &results.scenarios {
        let _ = writeln!(out, "{}", scenario.title);
        if let Some(reason) = &scenario.skipped {
            let _ = writeln!(out, "  skipped: {reason}\n");
            continue;
        }
        let mut rows: Vec<Vec<String>> = vec![HEADERS.iter().map(|h| h.to_string()).collect()];
        for point in &scenario.points {
            for (i, side) in point.sides.iter().enumerate() {
                let mut row = vec![
                    if i == 0 {
                        format!("{} (RTT {:.2} ms)", point.label, point.rtt_ms)
                    } else {
                        String::new()
                    },
                    side.label.clone(),
                ];
                row.extend(cells(side));
                rows.push(row);
            }
        }
        let widths: Vec<usize> = (0..HEADERS.len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, w))| {
                    if c < 2 {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect();
            let _ = writeln!(out, "  {}", line.join("  ").trim_end());
        }
        for point in &scenario.points {
            for line in point_lines(point) {
                let _ = writeln!(out, "  {}: {line}", point.label);
            }
        }
        out.push('\n');
    }
    out
}

/// The Markdown report.
pub(crate) fn markdown(results: &Results, plot: bool) -> String {
    let mut out = String::new();
    let far = &results.far_end;
    let _ = writeln!(
        out,
        "# idb bench\n\n`{}`\n\nMachine: {}. Started {}. Far end: {}{}. Median of {} \
         repetition{} per side, sides alternating; every ratio compares numbers from this run; \
         all times are the client's. Client CPU: {}.\n",
        results.command,
        machine_line(&results.machine),
        results.started_utc,
        far.kind,
        far.url
            .as_deref()
            .map_or_else(String::new, |u| format!(" ({u})")),
        results.reps,
        if results.reps == 1 { "" } else { "s" },
        far.client_cpu,
    );
    if let Some(failed) = &results.failed {
        let _ = writeln!(
            out,
            "**The run failed**, so the scenarios after those below were not measured: \
             {failed}\n"
        );
    }
    out.push_str(
        "Whole-run throughput is bytes over the wall time, first setup to last verify. \
         Sustained throughput is the rate over the middle 80% of the bytes (from the moment \
         10% were acknowledged to the moment 90% were, acknowledgements joined by straight \
         lines). Call times are every attempt of every call (the engine's own timing, whole \
         milliseconds). Peak RSS is the whole process (in-process, the mock included). \
         The ceiling's one request is sent by reqwest, the harness's own HTTP client (not \
         curl), its body read into memory before the clock starts. The CPU floor (the \
         `latency` scenario's 0 ms point, in-process only) carries the same file over a \
         loopback TCP connection with a plain `sendfile` -> `recv` loop and hashes it with \
         blake3 once on each side, each thread on its own CPU clock; `cpu:engine+mock/floor` \
         divides the engine's and the mock's CPU per GiB by it. At the same point (remotely, \
         at the one point), `curl` from PATH sends the same file in one multipart request \
         streamed from the file to the same kind of far end, its CPU the child's own (user \
         and system, from `wait4`); `cpu:engine-client/curl+blake3` (`client_alone_vs_curl`) \
         divides the engine's client CPU per GiB by curl's plus blake3 alone on one thread, \
         and `cpu:engine-client/ceiling-client+blake3` (no target) by the reqwest one \
         request's plus blake3.\n\n",
    );
    if plot {
        let _ = writeln!(out, "![throughput against round trip]({PLOT_FILE})\n");
    }
    for scenario in &results.scenarios {
        let _ = writeln!(out, "## {}\n", scenario.title);
        if let Some(reason) = &scenario.skipped {
            let _ = writeln!(out, "Skipped: {reason}\n");
            continue;
        }
        let _ = writeln!(out, "| {} |", HEADERS.join(" | "));
        let _ = writeln!(out, "|---|---|{}", "---:|".repeat(HEADERS.len() - 2));
        for point in &scenario.points {
            for (i, side) in point.sides.iter().enumerate() {
                let first = if i == 0 {
                    format!("{} (RTT {:.2} ms)", point.label, point.rtt_ms)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "| {first} | {} | {} |",
                    side.label,
                    cells(side).join(" | ")
                );
            }
        }
        out.push('\n');
        for point in &scenario.points {
            for line in point_lines(point) {
                let _ = writeln!(out, "- {}: {line}", point.label);
            }
        }
        for note in &scenario.notes {
            let _ = writeln!(out, "- {note}");
        }
        out.push('\n');
    }
    out
}

/// Bytes in the fewest characters, for names: `2MiB`, `512KiB`, `700B`.
pub fn compact(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024 && value.is_multiple_of(1024) && unit < UNITS.len() - 1 {
        value /= 1024;
        unit += 1;
    }
    format!("{value}{}", UNITS[unit])
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
    fn a_ratio_never_looks_equal_to_a_target_it_misses() {
        assert_eq!(shown_ratio(1.1017, Some(1.10)), "1.102");
        assert_eq!(shown_ratio(1.0996, Some(1.10)), "1.0996");
        assert_eq!(shown_ratio(1.10, Some(1.10)), "1.10");
        assert_eq!(shown_ratio(1.1017, None), "1.10");
        assert_eq!(shown_ratio(0.84, Some(1.10)), "0.84");
        // Closer than six decimals: six.
        assert_eq!(shown_ratio(1.100_000_1, Some(1.10)), "1.100000");
    }

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
    fn compact_sizes() {
        assert_eq!(compact(2 << 20), "2MiB");
        assert_eq!(compact(512 << 10), "512KiB");
        assert_eq!(compact(700), "700B");
        assert_eq!(compact((1 << 20) + 1), "1048577B");
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(4 << 20), "4.0 MiB");
        assert_eq!(human(1 << 30), "1.0 GiB");
    }
}
