//! `idb mock-server`: the mock Data Bank as a standalone process.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use idb_mock::{FaultConfig, GeneratedCa, MockConfig, MockServer, Storage, TlsIdentity, WriteMode};
use tokio::net::TcpListener;

use crate::cli::MockServerArgs;
use crate::exit::Exit;
use crate::size::human;

pub async fn run(args: MockServerArgs) -> anyhow::Result<Exit> {
    keep_receive_buffers_mapped();
    let faults = FaultConfig {
        rate: args.fault_rate,
        kinds: args.fault_kinds.clone(),
        seed: args.seed,
        stall: Duration::from_millis(args.stall_ms),
        retry_after: Duration::from_secs(args.retry_after),
    };
    let mut config = MockConfig::new()
        .latency(Duration::from_millis(args.latency_ms))
        .max_chunk(args.max_chunk)
        .mode(args.mode)
        .faults(faults)
        .bandwidth(args.bandwidth)
        .header_read_timeout(Duration::from_secs(args.header_timeout))
        .body_idle_timeout(Duration::from_secs(args.body_timeout))
        .max_connections(args.max_connections)
        .plain_errors(args.plain_errors)
        .bandwidth_total(args.bandwidth_total)
        .tus(args.tus)
        .tus_profile(args.tus_profile);
    if let Some(secs) = args.tus_expiry {
        config = config.tus_expiry(Duration::from_secs(secs));
    }
    if let Some(bytes) = args.disk_full_after {
        config = config.disk_full_after(bytes);
    }
    for spec in &args.datasets {
        let Some((key, token)) = spec.split_once(':') else {
            bail!("--dataset {spec:?} should be KEY:TOKEN, like IDB-1234567:s3cret");
        };
        config = config.dataset(key, token);
    }
    for key in &args.published {
        if !config.dataset_keys().any(|k| k == key) {
            bail!("--published {key}: add the dataset with --dataset {key}:TOKEN too");
        }
        config = config.publish(key);
    }
    if let Some(secs) = args.token_ttl {
        config = config.token_ttl(Duration::from_secs(secs));
    }
    // A temporary store is the server's own (removed when it stops, and no
    // state saved in it: nothing starts again on it).
    config = config.storage(match (&args.store, args.sink) {
        (_, true) => Storage::Sink,
        (Some(dir), false) => Storage::Dir(dir.clone()),
        (None, false) => Storage::TempDir,
    });
    // Request heads go through the caps too: too low a rate, and no head
    // arrives within the header timeout.
    let lowest = args.bandwidth.into_iter().chain(args.bandwidth_total).min();
    if let Some(rate) = lowest
        && rate.saturating_mul(args.header_timeout) < HEAD_BYTES
    {
        eprintln!(
            "warning: at {}/s a request's headers and form fields (about {HEAD_BYTES} bytes) may not \
             arrive within --header-timeout {} s, and such requests are cut; raise the rate \
             or the timeout",
            human(rate),
            args.header_timeout
        );
    }
    let (config, tls_note) = with_tls(config, &args)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // Handlers first: a SIGTERM right after the readiness line must stop the
    // server cleanly, not kill it.
    let mut signals = crate::signals::Signals::install();
    // Loads a --store's saved state (resumed uploads, receipts) before serving.
    let server = MockServer::start_on(listener, config).await?;
    for warning in server.warnings() {
        eprintln!("warning: {warning}");
    }
    let where_stored = match server.store_dir() {
        Some(dir) => format!("{} (as DATASET/FILENAME)", dir.display()),
        None => "nowhere (sink mode: bytes are counted and hashed only)".to_owned(),
    };
    // The first line is the readiness signal scripts and tests wait for.
    println!("listening on {}", server.url());
    eprintln!("storing files in {where_stored}; stop with Ctrl-C");
    eprintln!("{}", describe(&args));
    if let Some(note) = tls_note {
        eprintln!("{note}");
    }
    signals.next().await;
    // Said if it can be: after SIGHUP the terminal may be gone (EIO), and
    // eprintln! would panic.
    let say = |line: &str| {
        let _ = writeln!(std::io::stderr(), "{line}");
    };
    // Requests in flight may finish, for a while: a body under a bandwidth
    // cap may take minutes. Those still going then are cut, as the client's
    // own stop cuts its calls; what they carried is not applied.
    let stats = server.stats();
    let in_flight = stats.requests_in_flight;
    if in_flight > 0 {
        say(&format!(
            "stopping: letting {in_flight} request(s) in flight finish, for up to {} s \
             (Ctrl-C again cuts them at once)",
            SHUTDOWN_GRACE.as_secs()
        ));
    }
    let abort = server.abort_handle();
    let cut = tokio::select! {
        () = server.shutdown() => None,
        () = tokio::time::sleep(SHUTDOWN_GRACE) => Some("requests still in flight were cut"),
        _ = signals.second() => Some("requests in flight were cut"),
    };
    if let Some(said) = cut {
        // Ends the serving task, whose connections go with it (what they
        // carried is undone, as for any body that breaks off).
        if let Some(abort) = abort {
            abort.abort();
        }
        say(said);
    }
    let received = stats.bytes_received;
    if args.sink {
        say(&cpu_per_gib(process_cpu(), received));
    }
    say("stopped");
    Ok(Exit::Success)
}

/// The bytes a request's head may take, for the warning about low caps.
const HEAD_BYTES: u64 = 1024;

/// How long requests in flight may go on after a stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One line on how the server behaves: mode, faults, bandwidth caps.
fn describe(args: &MockServerArgs) -> String {
    let mut line = match args.mode {
        WriteMode::Strict => "strict mode (transfers in order)".to_owned(),
        WriteMode::Offset => "offset mode (chunks at any offset, in any order)".to_owned(),
    };
    if args.fault_rate > 0.0 {
        let kinds: Vec<_> = args.fault_kinds.iter().map(|k| k.as_str()).collect();
        line.push_str(&format!(
            "; faults on {}% of requests ({}), seed {}",
            args.fault_rate * 100.0,
            kinds.join(", "),
            args.seed
        ));
    }
    if let Some(rate) = args.bandwidth {
        line.push_str(&format!("; at most {}/s per connection", human(rate)));
    }
    if let Some(rate) = args.bandwidth_total {
        line.push_str(&format!(
            "; at most {}/s for all connections together",
            human(rate)
        ));
    }
    if args.tus {
        line.push_str(&format!(
            "; tus 1.0 at /files/ ({})",
            match args.tus_profile {
                idb_mock::TusProfile::Plain if args.sink => {
                    "every PATCH byte counted and hashed; no concatenation, a sink keeps nothing to join"
                }
                idb_mock::TusProfile::Plain => "every PATCH byte stored",
                idb_mock::TusProfile::S3 => {
                    "s3 profile: a body shorter than one part that does not end the file dropped"
                }
            }
        ));
    }
    if args.plain_errors {
        line.push_str("; errors as plain HTML pages (no JSON, no offsets, no 200 for a repeat)");
    }
    if let Some(bytes) = args.disk_full_after {
        line.push_str(&format!(
            "; the disk is full after {} of payload (then 507)",
            human(bytes)
        ));
    }
    line
}

// ---------------------------------------------------------------------------
// The far end's own cost (`--sink`): CPU seconds per GiB received
// ---------------------------------------------------------------------------

/// glibc's `M_MMAP_THRESHOLD` for this process: 32 MiB, the most it takes.
/// Receive buffers (a few hundred KiB each) then come from the heap, not from
/// a fresh `mmap` each.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// glibc's `M_TRIM_THRESHOLD` for this process: 256 MiB of free memory at the
/// top of a heap is kept before any is given back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 256 << 20;

/// Keeps freed receive buffers mapped for the next ones. The mock copies each
/// read of a connection into its multipart parser, whose buffer the payload's
/// worker shares until it has hashed the piece, so every read takes a new
/// buffer of about its size; with glibc's defaults those were fresh pages
/// (mapped, or trimmed and faulted in again), and page faults took a quarter
/// of a sink's CPU (148k faults for 1.5 GiB received, against 4.5k with these
/// settings). A whole-process setting, so only the standalone server makes
/// it; the memory it keeps is bounded by the server's peak use.
fn keep_receive_buffers_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes the allocator's tuning parameters; it is
    // called before the server allocates its buffers. A refusal (0) leaves
    // the defaults, which are slower but correct.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// This process's CPU time so far, user and system, every thread (`getrusage`);
/// `None` if it cannot be read.
fn process_cpu() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` only writes into the struct it is given, and an
    // all-zero `rusage` is a valid value of it.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: zero-initialised above, and filled by `getrusage`.
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(Duration::from_secs_f64(
        (seconds(usage.ru_utime) + seconds(usage.ru_stime)).max(0.0),
    ))
}

/// The line a sink says at shutdown: its CPU time over its life, the payload
/// bytes it received, and the ratio (the far end's cost of a benchmark).
fn cpu_per_gib(cpu: Option<Duration>, received: u64) -> String {
    let Some(cpu) = cpu else {
        return "cpu: unknown (getrusage failed)".to_owned();
    };
    let cpu = cpu.as_secs_f64();
    if received == 0 {
        return format!("cpu: {cpu:.3} s; no payload received");
    }
    let gib = received as f64 / (1u64 << 30) as f64;
    format!(
        "cpu: {cpu:.3} s for {received} payload bytes ({gib:.3} GiB): {:.3} CPU-s/GiB",
        cpu / gib
    )
}

// ---------------------------------------------------------------------------
// HTTPS: `--tls-cert`/`--tls-key`, `--tls-self-signed`
// ---------------------------------------------------------------------------

/// Adds the certificate to serve, if one was asked for, and says what a client
/// needs to trust it. A generated authority's certificate is written to its
/// file before the readiness line, so a client started on that line finds it.
fn with_tls(
    config: MockConfig,
    args: &MockServerArgs,
) -> anyhow::Result<(MockConfig, Option<String>)> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let identity = TlsIdentity::from_pem_files(cert, key)?;
        let note = format!("serving HTTPS with the certificate in {}", cert.display());
        return Ok((config.tls(identity), Some(note)));
    }
    let Some(ca_file) = &args.tls_self_signed else {
        return Ok((config, None));
    };
    // The listen address too, when it names one interface other than loopback.
    let ip = args.listen.ip();
    let hosts: Vec<String> = if ip.is_unspecified() || ip.is_loopback() {
        Vec::new()
    } else {
        vec![ip.to_string()]
    };
    let generated = GeneratedCa::generate(&hosts)?;
    std::fs::write(ca_file, &generated.ca_pem).with_context(|| {
        format!(
            "cannot write the certificate authority to {} (--tls-self-signed)",
            ca_file.display()
        )
    })?;
    let mut names: Vec<&str> = idb_mock::LOOPBACK_NAMES.to_vec();
    names.extend(hosts.iter().map(String::as_str));
    let note = format!(
        "serving HTTPS with a throwaway certificate for {}; clients trust it with \
         --ca-cert {}",
        names.join(", "),
        ca_file.display()
    );
    Ok((config.tls(generated.identity()), Some(note)))
}
