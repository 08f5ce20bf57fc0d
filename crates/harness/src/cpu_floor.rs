//! The CPU floor: what carrying a file's bytes from one thread to another over
//! loopback TCP costs at least, hashed once on each side, measured on the same
//! machine, in the same run and on the same file as the `latency` scenario's
//! 0 ms point; and blake3 alone on one thread. The engine and the mock together
//! are compared with the first; the engine's client alone with curl sending
//! the file in one request (`curl_upload.rs`) plus the second, and, without a
//! target, with the single-request client plus the second.
//!
//! The sender thread `sendfile(2)`s the file into the connection a step at a
//! time and hashes each step from a map of the file (blake3's `update`); the
//! receiver thread `recv`s into one reused buffer and hashes what it received.
//! Each thread reads its own CPU clock (`CLOCK_THREAD_CPUTIME_ID`) around its
//! system calls and its hashing, so the parts are told apart; the sender's
//! clock also runs while it maps the file and unmaps it (tearing down the page
//! tables its hashing filled costs about as much as filling them, and the
//! engine pays it too). The receiver's hash must equal the file's, or the
//! measurement fails. blake3 alone is timed the same way, map and unmap
//! included.

use std::fs::File;
use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::curl_upload::{self, Curl};
use crate::data::DataFile;
use crate::far_end::{Endpoint, Knobs};
use crate::measure::{median, own_cpu};
use crate::point::Runner;
use crate::results::{CpuFloor, GIB, Point, Ratio, Role, Spread};

/// Bytes the sender hands `sendfile` and then hashes, per step (the engine
/// also hashes what it sends a chunk at a time).
const SEND_STEP: usize = 8 << 20;

/// The receiver's one reused buffer.
const RECV_BUFFER: usize = 256 << 10;

/// Target (shown, never asserted): the engine's and the mock's CPU per GiB
/// together over the floor's, at most.
pub(crate) const FLOOR_TARGET: f64 = 1.15;

/// Target: the engine's client CPU per GiB over curl's, sending the same file
/// in one request, plus blake3 alone, at most.
pub(crate) const CLIENT_TARGET: f64 = 1.10;

/// The stable key of the ratio of the engine and mock to the floor.
pub const FLOOR_RATIO: &str = "cpu:engine+mock/floor";

/// The stable key of the ratio of the engine's client to the single request's
/// client (reqwest, its body built before the clock) plus blake3: shown
/// without a target, which is [`CURL_RATIO`]'s.
pub const CLIENT_RATIO: &str = "cpu:engine-client/ceiling-client+blake3";

/// The stable key of the ratio of the engine's client to curl sending the same
/// file in one request plus blake3 alone (`client_alone_vs_curl`), with an
/// at-most target of 1.10.
pub const CURL_RATIO: &str = "cpu:engine-client/curl+blake3";

/// Why a far end elsewhere has no floor.
pub(crate) const REMOTE_FLOOR: &str = "the CPU floor is measured only against the in-process \
    mock: with --server the far end runs on another host, whose CPU this run cannot see, and \
    a loopback floor here would not be the same path";

/// One run of the floor.
#[derive(Debug)]
struct FloorRun {
    sendfile: Duration,
    sender_hash: Duration,
    /// The sender's mapping of the file and its unmapping.
    sender_map: Duration,
    recv: Duration,
    receiver_hash: Duration,
    wall: Duration,
    receiver_blake3: String,
}

impl FloorRun {
    /// Both threads, every part.
    fn total(&self) -> Duration {
        self.sendfile + self.sender_hash + self.sender_map + self.recv + self.receiver_hash
    }
}

/// Maps `file` read-only.
fn map(file: &DataFile) -> anyhow::Result<(File, memmap2::Mmap)> {
    let open = File::open(&file.path)
        .with_context(|| format!("cannot open {} for the CPU floor", file.path.display()))?;
    // SAFETY: the harness generated the file and nothing writes to it while
    // the run lasts (it is removed with the run's data directory).
    let map = unsafe { memmap2::Mmap::map(&open) }
        .with_context(|| format!("cannot map {} for the CPU floor", file.path.display()))?;
    ensure!(
        map.len() as u64 == file.size,
        "{} is {} bytes, not the {} generated: was it changed during the run?",
        file.path.display(),
        map.len(),
        file.size
    );
    Ok((open, map))
}

/// Sends `map`'s bytes (the contents of `source`) into `to` with `sendfile`,
/// hashing each step after it is sent; returns the CPU time of each part and
/// the hash.
fn send(
    source: &File,
    map: &[u8],
    to: TcpStream,
) -> anyhow::Result<(Duration, Duration, blake3::Hash)> {
    let (mut sendfile, mut hash) = (Duration::ZERO, Duration::ZERO);
    let mut hasher = blake3::Hasher::new();
    let mut offset: libc::off_t = 0;
    for step in map.chunks(SEND_STEP) {
        let started = own_cpu();
        let mut left = step.len();
        while left > 0 {
            // SAFETY: both descriptors are open for the whole call (owned by
            // `source` and `to`), and `offset` is a valid `off_t` it updates.
            let sent =
                unsafe { libc::sendfile(to.as_raw_fd(), source.as_raw_fd(), &mut offset, left) };
            if sent < 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error).context("sendfile into the loopback connection failed");
            }
            if sent == 0 {
                bail!("sendfile sent nothing at offset {offset}: was the file truncated?");
            }
            left -= sent as usize;
        }
        let sent = own_cpu();
        hasher.update(step);
        hash += own_cpu().saturating_sub(sent);
        sendfile += sent.saturating_sub(started);
    }
    to.shutdown(Shutdown::Write)
        .context("cannot close the loopback connection's sending side")?;
    Ok((sendfile, hash, hasher.finalize()))
}

/// Receives until the sender closes, hashing what arrives; returns the CPU
/// time of each part, the bytes and their blake3.
fn receive(mut from: TcpStream) -> anyhow::Result<(Duration, Duration, u64, String)> {
    let (mut recv, mut hash) = (Duration::ZERO, Duration::ZERO);
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; RECV_BUFFER];
    let mut bytes = 0u64;
    loop {
        let started = own_cpu();
        let n = match from.read(&mut buffer) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("recv from the loopback connection failed"),
        };
        let received = own_cpu();
        recv += received.saturating_sub(started);
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        hash += own_cpu().saturating_sub(received);
        bytes += n as u64;
    }
    Ok((recv, hash, bytes, hasher.finalize().to_hex().to_string()))
}

/// One run of the floor on `file`: a sender (this thread) and a receiver
/// thread, over a fresh loopback connection. Blocking.
fn floor_once(file: &DataFile) -> anyhow::Result<FloorRun> {
    let mapping = own_cpu();
    let (source, map) = map(file)?;
    let mapped = own_cpu().saturating_sub(mapping);
    let listener =
        TcpListener::bind("127.0.0.1:0").context("cannot listen on loopback for the CPU floor")?;
    let address = listener.local_addr()?;
    let sender = TcpStream::connect(address).context("cannot connect over loopback")?;
    let (receiver, _) = listener.accept().context("cannot accept over loopback")?;
    let started = Instant::now();
    let (sent, received) = std::thread::scope(|scope| {
        let receiving = scope.spawn(|| receive(receiver));
        let sent = send(&source, &map, sender);
        let received = receiving.join();
        (sent, received)
    });
    let wall = started.elapsed();
    let unmapping = own_cpu();
    drop(map);
    drop(source);
    let sender_map = mapped + own_cpu().saturating_sub(unmapping);
    let (sendfile, sender_hash, sender_blake3) = sent?;
    ensure!(
        sender_blake3.to_hex().as_str() == file.blake3,
        "the CPU floor's sender hashed {} to {sender_blake3}, not the {} it was generated \
         with: was it changed during the run?",
        file.path.display(),
        file.blake3
    );
    let received = match received {
        Ok(r) => r?,
        Err(_) => bail!("the CPU floor's receiving thread panicked"),
    };
    let (recv, receiver_hash, bytes, receiver_blake3) = received;
    ensure!(
        bytes == file.size && receiver_blake3 == file.blake3,
        "the CPU floor's receiver got {bytes} bytes hashing to {receiver_blake3}, not the {} \
         bytes of {} ({}): loopback lost or changed bytes, so no floor is reported",
        file.size,
        file.path.display(),
        file.blake3
    );
    Ok(FloorRun {
        sendfile,
        sender_hash,
        sender_map,
        recv,
        receiver_hash,
        wall,
        receiver_blake3,
    })
}

/// blake3 of `file` once, on this thread: its CPU time, mapping and unmapping
/// the file included. Blocking.
fn blake3_once(file: &DataFile) -> anyhow::Result<Duration> {
    let started = own_cpu();
    let (source, map) = map(file)?;
    let hash = blake3::Hasher::new().update(&map).finalize();
    drop(map);
    drop(source);
    let spent = own_cpu().saturating_sub(started);
    ensure!(
        hash.to_hex().as_str() == file.blake3,
        "{} hashes to {hash}, not the {} it was generated with: was it changed during the run?",
        file.path.display(),
        file.blake3
    );
    Ok(spent)
}

impl Runner<'_> {
    /// The CPU comparisons of `point` (whose sides uploaded `file` with the
    /// far end's `knobs`): the floor (with `floor`: in-process), blake3 alone,
    /// and curl sending the file in one request to a far end with the same
    /// knobs (a fresh mock in-process), `reps` times each, alternating; then
    /// the CPU ratios. Without a usable curl the point says why.
    pub(crate) async fn cpu_comparisons(
        &self,
        file: &DataFile,
        knobs: &Knobs,
        floor: bool,
        curl: &Result<Curl, String>,
        point: &mut Point,
    ) -> anyhow::Result<()> {
        match curl {
            Err(reason) => {
                point.curl_skipped = Some(reason.clone());
                if floor {
                    self.cpu_costs(file, true, None, point).await?;
                }
                Ok(())
            }
            Ok(curl) => {
                let endpoint = self.far.endpoint(&point.label, knobs).await?;
                let measured = self
                    .cpu_costs(file, floor, Some((curl, &endpoint)), point)
                    .await;
                endpoint.shutdown().await;
                measured
            }
        }
    }

    /// Measures the floor (with `floor`), blake3 alone and curl (when given)
    /// on `file` `reps` times each, alternating, and adds them and their
    /// ratios to `point`.
    async fn cpu_costs(
        &self,
        file: &DataFile,
        floor: bool,
        curl: Option<(&Curl, &Endpoint)>,
        point: &mut Point,
    ) -> anyhow::Result<()> {
        let reps = self.config.reps;
        let gib = file.size as f64 / GIB;
        let mut floors = Vec::with_capacity(reps);
        let mut hashes = Vec::with_capacity(reps);
        let mut curls = Vec::with_capacity(reps);
        for rep in 0..reps {
            self.go_on()?;
            let owned = file.clone();
            let (run, hash) = tokio::task::spawn_blocking(move || {
                let run = if floor {
                    Some(floor_once(&owned)?)
                } else {
                    None
                };
                anyhow::Ok((run, blake3_once(&owned)?))
            })
            .await
            .context("the CPU floor panicked")??;
            let mut line = format!("latency {} {}/{reps}:", point.label, rep + 1);
            if let Some(run) = &run {
                line.push_str(&format!(
                    " CPU floor {:.2} CPU-s/GiB,",
                    run.total().as_secs_f64() / gib
                ));
            }
            line.push_str(&format!(
                " blake3 alone {:.2} CPU-s/GiB",
                hash.as_secs_f64() / gib
            ));
            if let Some((curl, endpoint)) = curl {
                let sent = self
                    .curl_once(curl, endpoint, file, &point.label, rep)
                    .await
                    .with_context(|| {
                        format!(
                            "latency {}: curl in one request, repetition {}",
                            point.label,
                            rep + 1
                        )
                    })?;
                line.push_str(&format!(
                    ", curl in one request {:.2} CPU-s/GiB ({:.1} MiB/s)",
                    sent.cpu_s_per_gib(file.size),
                    sent.mib_s(file.size)
                ));
                curls.push(sent);
            }
            self.note(line);
            floors.extend(run);
            hashes.push(hash);
        }
        if floor {
            let measured = summarise(file, &floors, &hashes)?;
            add_ratios(point, &measured);
            point.cpu_floor = Some(measured);
        }
        if let Some((curl, _)) = curl {
            let engine = point
                .sides
                .iter()
                .find(|s| s.key == "engine")
                .context("the point has no engine side to compare with curl")?;
            let measured = curl_upload::summarise(
                curl,
                file,
                &curls,
                &hashes,
                engine.summary.client_cpu_s_per_gib.median,
            )?;
            point.ratios.push(Ratio::at_most(
                CURL_RATIO.into(),
                "CPU per GiB: engine client / (curl sending the file in one request + blake3 \
                 alone)"
                    .into(),
                measured.client_alone_vs_curl,
                Some(CLIENT_TARGET),
            ));
            point.client_alone_vs_curl = Some(measured.client_alone_vs_curl);
            point.curl = Some(measured);
        }
        Ok(())
    }
}

/// The medians of the runs.
fn summarise(
    file: &DataFile,
    floors: &[FloorRun],
    hashes: &[Duration],
) -> anyhow::Result<CpuFloor> {
    let gib = (file.size as f64 / GIB).max(f64::MIN_POSITIVE);
    let per_gib = |f: fn(&FloorRun) -> Duration| {
        median(floors.iter().map(|r| f(r).as_secs_f64() / gib)).unwrap_or(0.0)
    };
    Ok(CpuFloor {
        bytes: file.size,
        reps: floors.len(),
        blake3: file.blake3.clone(),
        receiver_blake3: floors
            .first()
            .map(|r| r.receiver_blake3.clone())
            .context("no CPU floor measured")?,
        sendfile_cpu_s_per_gib: per_gib(|r| r.sendfile),
        sender_blake3_cpu_s_per_gib: per_gib(|r| r.sender_hash),
        sender_map_cpu_s_per_gib: per_gib(|r| r.sender_map),
        recv_cpu_s_per_gib: per_gib(|r| r.recv),
        receiver_blake3_cpu_s_per_gib: per_gib(|r| r.receiver_hash),
        floor_cpu_s_per_gib: Spread::of(floors.iter().map(|r| r.total().as_secs_f64() / gib))
            .context("no CPU floor measured")?,
        blake3_cpu_s_per_gib: Spread::of(hashes.iter().map(|h| h.as_secs_f64() / gib))
            .context("no blake3 measured")?,
        wall_s: median(floors.iter().map(|r| r.wall.as_secs_f64())).unwrap_or(0.0),
    })
}

/// The two CPU ratios, when the point has the sides they need.
fn add_ratios(point: &mut Point, floor: &CpuFloor) {
    let engine = point.sides.iter().find(|s| s.key == "engine");
    let ceiling = point.sides.iter().find(|s| s.role == Role::Ceiling);
    if let Some(engine) = engine {
        let together = median(engine.reps.iter().filter_map(|r| {
            r.far_end_cpu_s_per_gib
                .map(|mock| r.client_cpu_s_per_gib + mock)
        }));
        if let Some(together) = together {
            point.ratios.push(Ratio::at_most(
                FLOOR_RATIO.into(),
                "CPU per GiB: engine + mock / floor (sendfile -> recv over loopback, blake3 on \
                 each side)"
                    .into(),
                together / floor.floor_cpu_s_per_gib.median,
                Some(FLOOR_TARGET),
            ));
        }
        if let Some(ceiling) = ceiling {
            let base =
                ceiling.summary.client_cpu_s_per_gib.median + floor.blake3_cpu_s_per_gib.median;
            point.ratios.push(Ratio::at_most(
                CLIENT_RATIO.into(),
                "CPU per GiB: engine client / (one-request client, reqwest, + blake3 alone)".into(),
                engine.summary.client_cpu_s_per_gib.median / base,
                None,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::generate;

    #[test]
    fn the_floor_carries_every_byte_and_counts_each_part() {
        let dir = tempfile::tempdir().unwrap();
        // More than one send step, and not a multiple of the receive buffer.
        let file = generate(dir.path(), "floor.bin", SEND_STEP as u64 + 12_345, "floor").unwrap();
        let run = floor_once(&file).unwrap();
        assert_eq!(run.receiver_blake3, file.blake3);
        for part in [
            run.sendfile,
            run.sender_hash,
            run.sender_map,
            run.recv,
            run.receiver_hash,
        ] {
            assert!(part > Duration::ZERO, "{part:?}");
        }
        assert!(blake3_once(&file).unwrap() > Duration::ZERO);
    }

    #[test]
    fn a_file_that_does_not_hash_to_its_recorded_blake3_gives_no_floor() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = generate(dir.path(), "floor.bin", 100_000, "floor").unwrap();
        file.blake3 = blake3::hash(b"something else").to_hex().to_string();
        let error = format!("{:#}", floor_once(&file).unwrap_err());
        assert!(error.contains("not the"), "{error}");
        assert!(blake3_once(&file).is_err());
    }
}
