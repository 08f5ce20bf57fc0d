//! The curl side of the CPU comparison: `curl`, found on `PATH`, as a child
//! process sending a whole file in one `transfer` request to the far end the
//! sides use, between a `setup` and a `verify` the harness sends itself (the
//! receipt must carry the file's size and blake3, or the run fails).
//!
//! The request is the one the single-request side sends: the same multipart
//! form (its fields read back from idb-wire's encoding of a `transfer`, so
//! they follow the wire crate), with the payload streamed from the file by
//! curl (`--form NAME=@FILE`), never held whole in memory. The token reaches
//! curl only through a header file (`--header @FILE`, mode 0600, in a private
//! temporary directory removed after the call): never in its arguments, which
//! other users can read in `/proc`, nor in any output. curl's CPU time is the
//! child's own, user and system, as `wait4` returns it when the harness reaps
//! the child: exact, and no other child's.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use idb_wire::{
    Boundary, MultipartEvent, MultipartParser, Token, VerifyReceipt, summarize_body, transfer_body,
};

use crate::data::{DataFile, Upload, batch};
use crate::engine_run::check_receipt;
use crate::far_end::Endpoint;
use crate::measure::{median, timeval};
use crate::point::Runner;
use crate::results::{CurlCpu, GIB, Spread};

/// The name of the binary looked for on `PATH`.
pub(crate) const CURL: &str = "curl";

/// The header file, in the call's private directory.
const HEADER_FILE: &str = "authorization";

/// Where curl writes the far end's answer.
const ANSWER_FILE: &str = "answer";

/// Where curl writes the HTTP status (`--write-out`).
const STATUS_FILE: &str = "status";

/// Where curl writes its errors.
const ERRORS_FILE: &str = "errors";

/// The certificate authorities curl trusts, with `--ca-cert` (`--cacert`).
const CA_BUNDLE: &str = "ca-bundle.pem";

/// Why a run has no curl side when none is found.
pub(crate) const NO_CURL: &str = "no curl on PATH, so the client's CPU is not compared with \
    curl's (client_alone_vs_curl is null): install curl, or put it on PATH, and run again";

/// The `curl` binary on `PATH`, if there is one (an executable regular file).
pub(crate) fn on_path() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(CURL))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A curl that runs.
#[derive(Debug, Clone)]
pub(crate) struct Curl {
    binary: PathBuf,
    /// The first line of `curl --version`.
    version: String,
}

impl Curl {
    /// The curl at `binary`, if it answers `--version`; otherwise why there is
    /// no curl side (for the results).
    pub(crate) fn probe(binary: Option<&Path>) -> Result<Self, String> {
        let binary = binary.ok_or_else(|| NO_CURL.to_owned())?;
        let output = Command::new(binary)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                format!(
                    "{} did not start ({e}), so the client's CPU is not compared with curl's \
                     (client_alone_vs_curl is null): check that it is a working curl",
                    binary.display()
                )
            })?;
        let text = String::from_utf8_lossy(&output.stdout);
        let version = text.lines().next().unwrap_or_default().trim().to_owned();
        if !output.status.success() || !version.starts_with("curl ") {
            return Err(format!(
                "{} --version answered {} with {:?}, not curl's version, so the client's CPU is \
                 not compared with curl's (client_alone_vs_curl is null): check that it is a \
                 working curl",
                binary.display(),
                output.status,
                version.chars().take(80).collect::<String>()
            ));
        }
        Ok(Self {
            binary: binary.to_owned(),
            version,
        })
    }
}

/// One part of the `transfer` form.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FormPart {
    /// A text field.
    Text { name: String, value: String },
    /// The payload: the file's bytes.
    File {
        name: String,
        filename: String,
        content_type: Option<String>,
    },
}

/// The parts of the `transfer` of `filename` from offset 0, in order, as
/// idb-wire encodes them (the single-request side's body, without its
/// payload).
fn transfer_form(filename: &str) -> anyhow::Result<Vec<FormPart>> {
    let boundary = Boundary::from_random(0xc0ff_ee15);
    let body = transfer_body(&boundary, filename, 0, Bytes::new());
    let mut parser = MultipartParser::new(boundary.as_str());
    for segment in body.segments() {
        parser.push(segment);
    }
    let mut parts = Vec::new();
    let mut open: Option<(idb_wire::PartHeaders, Vec<u8>)> = None;
    while let Some(event) = parser.next_event()? {
        match event {
            MultipartEvent::PartStart(headers) => open = Some((headers, Vec::new())),
            MultipartEvent::Data(data) => {
                if let Some((_, value)) = &mut open {
                    value.extend_from_slice(&data);
                }
            }
            MultipartEvent::PartEnd => {
                let (headers, value) = open.take().context("a part ended before it began")?;
                parts.push(match headers.filename {
                    Some(filename) => FormPart::File {
                        name: headers.name,
                        filename,
                        content_type: headers.content_type,
                    },
                    None => FormPart::Text {
                        name: headers.name,
                        value: String::from_utf8(value)
                            .context("a text field of a transfer is not UTF-8")?,
                    },
                });
            }
            MultipartEvent::End => {}
        }
    }
    parser.finish()?;
    let files = parts
        .iter()
        .filter(|p| matches!(p, FormPart::File { .. }))
        .count();
    ensure!(
        files == 1,
        "idb-wire's transfer has {files} file parts, not one"
    );
    Ok(parts)
}

/// A value for curl's `--form` syntax in double quotes (`\` and `"` escaped).
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes `Authorization: Token token=...` into `dir/authorization`, readable
/// by its owner alone (created so, never widened).
fn write_header(dir: &Path, token: &Token) -> anyhow::Result<PathBuf> {
    let path = dir.join(HEADER_FILE);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create curl's header file {}", path.display()))?;
    writeln!(file, "Authorization: {}", token.authorization())
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write curl's header file {}", path.display()))?;
    Ok(path)
}

/// curl's arguments: `upload` in one `transfer` to `url`, the token from
/// `header`, the answer, the status and the errors into files in `dir`.
fn arguments(
    url: &str,
    upload: &Upload,
    header: &Path,
    dir: &Path,
) -> anyhow::Result<Vec<OsString>> {
    let mut args: Vec<OsString> = vec![
        // Ignore the user's ~/.curlrc (it must be the first argument).
        "--disable".into(),
        "--silent".into(),
        "--show-error".into(),
        "--header".into(),
        format!("@{}", header.display()).into(),
        // No `Expect: 100-continue` wait before the body: the harness's other
        // clients send none.
        "--header".into(),
        "Expect:".into(),
        // A far end that stops answering (or taking bytes) fails the side
        // within a minute, as the harness's own calls do, instead of holding
        // the run for ever.
        "--connect-timeout".into(),
        crate::calls::ANSWER_WAIT.as_secs().to_string().into(),
        "--speed-limit".into(),
        "1".into(),
        "--speed-time".into(),
        crate::calls::ANSWER_WAIT.as_secs().to_string().into(),
    ];
    for part in transfer_form(&upload.name)? {
        match part {
            FormPart::Text { name, value } => {
                args.push("--form-string".into());
                args.push(format!("{name}={value}").into());
            }
            FormPart::File {
                name,
                filename,
                content_type,
            } => {
                let path = upload.path.to_str().with_context(|| {
                    format!("curl cannot be given {} (not UTF-8)", upload.path.display())
                })?;
                let mut spec = format!("{name}=@{};filename={}", quoted(path), quoted(&filename));
                if let Some(content_type) = content_type {
                    spec.push_str(&format!(";type={content_type}"));
                }
                args.push("--form".into());
                args.push(spec.into());
            }
        }
    }
    args.extend([
        "--output".into(),
        dir.join(ANSWER_FILE).into_os_string(),
        "--write-out".into(),
        "%{http_code}".into(),
        url.into(),
    ]);
    Ok(args)
}

/// The curl running now, if any: stopped by [`stop_children`].
static RUNNING: std::sync::Mutex<Option<libc::pid_t>> = std::sync::Mutex::new(None);

/// Whether [`stop_children`] was called: no curl starts after it.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lets curl be started again (at the start of a run).
pub(crate) fn allow_children() {
    STOPPING.store(false, std::sync::atomic::Ordering::SeqCst);
}

/// Stops the curl the harness is running, if any, and any it would start: for
/// a caller that abandons a run (Ctrl-C), so the task waiting for curl ends
/// and removes its private directory (with the header file that holds the
/// token) instead of leaving it behind.
pub fn stop_children() {
    STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pid) = *running {
        // SAFETY: `pid` is a child this process started and has not reaped
        // (it is taken out of `RUNNING` under this lock before it is reaped),
        // so the number names no other process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Starts `command`, waits for it to exit and reaps it: its exit status and
/// its own CPU time, user and system. Blocking.
fn run_reaped(command: &mut Command) -> std::io::Result<(ExitStatus, Duration)> {
    let pid = {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        if STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("the run is stopping"));
        }
        let child = command.spawn()?;
        let pid = libc::pid_t::try_from(child.id()).map_err(std::io::Error::other)?;
        // Reaped here, not through `child`, to read the child's own CPU time;
        // dropping `child` neither waits nor kills.
        drop(child);
        *running = Some(pid);
        pid
    };
    let reaped = wait(pid);
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    *running = None;
    drop(running);
    reaped.and_then(|()| reap(pid))
}

/// Waits for the child `pid` to exit without reaping it (`waitid` with
/// `WNOWAIT`), so it cannot be stopped by mistake after it was reaped.
fn wait(pid: libc::pid_t) -> std::io::Result<()> {
    loop {
        // SAFETY: `siginfo_t` is a plain C struct for which all-zero bytes are
        // a valid value; `waitid` writes only into it.
        let waited = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if waited == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Waits for the child `pid` to exit and reaps it: its exit status and its
/// own CPU time, user and system.
fn reap(pid: libc::pid_t) -> std::io::Result<(ExitStatus, Duration)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `rusage` is a plain C struct for which all-zero bytes are a
        // valid value; `wait4` writes only into the two values we pass.
        let (reaped, usage) = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            (libc::wait4(pid, &mut status, 0, &mut usage), usage)
        };
        if reaped == pid {
            let cpu = timeval(usage.ru_utime) + timeval(usage.ru_stime);
            return Ok((ExitStatus::from_raw(status), cpu));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// What curl's one request cost.
#[derive(Debug)]
struct CurlTransfer {
    /// The child's CPU time, user and system.
    cpu: Duration,
    /// From before its start to its exit.
    wall: Duration,
    args: Vec<String>,
}

/// Runs curl once: `upload` in one `transfer` to `url`, trusting the
/// certificate authorities of the PEM files `trusted` (then only them: curl
/// takes one bundle). Blocking.
fn transfer(
    curl: &Curl,
    (url, trusted): (&str, &[PathBuf]),
    token: &Token,
    upload: &Upload,
) -> anyhow::Result<CurlTransfer> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::Builder::new()
        .prefix("idb-bench-curl-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .context("cannot create a private directory for curl's header file")?;
    let header = write_header(dir.path(), token)?;
    let mut args = arguments(url, upload, &header, dir.path())?;
    if !trusted.is_empty() {
        let bundle = dir.path().join(CA_BUNDLE);
        let mut pem = Vec::new();
        for file in trusted {
            pem.extend(
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?,
            );
            pem.push(b'\n');
        }
        std::fs::write(&bundle, pem)
            .with_context(|| format!("cannot write {}", bundle.display()))?;
        // Before the URL, which is last.
        let at = args.len() - 1;
        args.splice(at..at, ["--cacert".into(), bundle.into_os_string()]);
    }
    let output = |name: &str| -> anyhow::Result<File> {
        let path = dir.path().join(name);
        File::create(&path).with_context(|| format!("cannot create {}", path.display()))
    };
    let mut command = Command::new(&curl.binary);
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(output(STATUS_FILE)?)
        .stderr(output(ERRORS_FILE)?);
    let started = Instant::now();
    let (status, cpu) = run_reaped(&mut command)
        .with_context(|| format!("cannot run {}", curl.binary.display()))?;
    let wall = started.elapsed();
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap_or_default();
    let http = String::from_utf8_lossy(&read(STATUS_FILE))
        .trim()
        .to_owned();
    if !status.success() || http != "200" {
        let errors = String::from_utf8_lossy(&read(ERRORS_FILE))
            .trim()
            .to_owned();
        bail!(
            "curl's transfer of {} to {url} failed ({status}, HTTP {}): {}{}; run {} by hand \
             against the far end to see why",
            upload.name,
            if http.is_empty() { "none" } else { &http },
            errors.chars().take(300).collect::<String>(),
            summarize_body(&read(ANSWER_FILE)),
            curl.binary.display()
        );
    }
    Ok(CurlTransfer {
        cpu,
        wall,
        args: args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    })
}

/// One repetition of the curl side.
#[derive(Debug)]
pub(crate) struct CurlRun {
    transfer: CurlTransfer,
    receipt: VerifyReceipt,
}

impl CurlRun {
    /// curl's CPU seconds per GiB sent.
    pub(crate) fn cpu_s_per_gib(&self, bytes: u64) -> f64 {
        self.transfer.cpu.as_secs_f64() / (bytes as f64 / GIB).max(f64::MIN_POSITIVE)
    }

    /// Bytes over curl's wall time, MiB/s.
    pub(crate) fn mib_s(&self, bytes: u64) -> f64 {
        bytes as f64 / (1u64 << 20) as f64 / self.transfer.wall.as_secs_f64().max(1e-9)
    }
}

impl Runner<'_> {
    /// Uploads `file` once with curl to `endpoint`, under a name of its own
    /// (`label` and `rep` in it): `setup`, curl's one `transfer`, `verify`,
    /// and the receipt checked against the file.
    pub(crate) async fn curl_once(
        &self,
        curl: &Curl,
        endpoint: &Endpoint,
        file: &DataFile,
        label: &str,
        rep: usize,
    ) -> anyhow::Result<CurlRun> {
        let prefix = format!(
            "{}-latency-{}-curl-r{rep}",
            self.run_id,
            crate::point::slug(label)
        );
        let links = batch(self.data, &prefix, std::slice::from_ref(file))?;
        let upload = links.uploads.first().context("no file for curl")?.clone();
        let calls = endpoint.calls()?;
        calls.setup(&upload.name, file.size).await?;
        let (owned, url, token) = (
            curl.clone(),
            calls.endpoint().to_owned(),
            endpoint.token.clone(),
        );
        let (sending, trusted) = (upload.clone(), endpoint.trust.files.clone());
        let transfer = tokio::task::spawn_blocking(move || {
            transfer(&owned, (&url, &trusted), &token, &sending)
        })
        .await
        .context("the curl side panicked")??;
        let (receipt, _) = calls.verify(&upload.name).await?;
        check_receipt(&upload, &receipt)?;
        Ok(CurlRun { transfer, receipt })
    }
}

/// The curl side's results from its runs, the blake3-alone times of the same
/// repetitions, and the engine's client CPU per GiB.
pub(crate) fn summarise(
    curl: &Curl,
    file: &DataFile,
    runs: &[CurlRun],
    blake3: &[Duration],
    engine_client_cpu_s_per_gib: f64,
) -> anyhow::Result<CurlCpu> {
    let gib = (file.size as f64 / GIB).max(f64::MIN_POSITIVE);
    let last = runs.last().context("no curl run")?;
    let curl_cpu = Spread::of(runs.iter().map(|r| r.cpu_s_per_gib(file.size)))
        .context("no curl CPU measured")?;
    let blake3_cpu =
        Spread::of(blake3.iter().map(|h| h.as_secs_f64() / gib)).context("no blake3 measured")?;
    let base = (curl_cpu.median + blake3_cpu.median).max(f64::MIN_POSITIVE);
    Ok(CurlCpu {
        binary: curl.binary.display().to_string(),
        version: curl.version.clone(),
        args: last.transfer.args.clone(),
        bytes: file.size,
        reps: runs.len(),
        curl_cpu_s_per_gib: curl_cpu,
        blake3_cpu_s_per_gib: blake3_cpu,
        engine_client_cpu_s_per_gib,
        client_alone_vs_curl: engine_client_cpu_s_per_gib / base,
        wall_s: Spread::of(runs.iter().map(|r| r.transfer.wall.as_secs_f64()))
            .context("no curl wall time")?,
        whole_mib_s: median(runs.iter().map(|r| r.mib_s(file.size))).unwrap_or(0.0),
        blake3: file.blake3.clone(),
        receipt_size: last.receipt.size,
        receipt_blake3: last.receipt.blake3.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(dir: &Path, name: &str) -> Upload {
        let data = crate::data::generate(dir, name, 10, "curl").unwrap();
        Upload {
            name: name.to_owned(),
            path: data.path.clone(),
            data,
        }
    }

    #[test]
    fn the_form_is_the_wire_crates_transfer() {
        let parts = transfer_form("a b.bin").unwrap();
        let text: Vec<(&str, &str)> = parts
            .iter()
            .filter_map(|p| match p {
                FormPart::Text { name, value } => Some((name.as_str(), value.as_str())),
                FormPart::File { .. } => None,
            })
            .collect();
        assert_eq!(
            text,
            [
                ("filename", "a b.bin"),
                ("phase", "transfer"),
                ("previous_size", "0")
            ]
        );
        assert!(
            matches!(parts.last(), Some(FormPart::File { name, .. }) if name == "bytechunk"),
            "{parts:?}"
        );
    }

    #[test]
    fn the_token_reaches_curl_only_through_a_private_header_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let token = Token::new("s3cret-bench-token").unwrap();
        let header = write_header(dir.path(), &token).unwrap();
        let mode = std::fs::metadata(&header).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&header).unwrap(),
            "Authorization: Token token=s3cret-bench-token\n"
        );
        let file = upload(dir.path(), "x\"y.bin");
        let args = arguments("http://127.0.0.1:9/d", &file, &header, dir.path()).unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
        assert!(!args.iter().any(|a| a.contains("s3cret")), "{args:?}");
        assert_eq!(
            args[0], "--disable",
            "~/.curlrc is read unless it comes first"
        );
        assert!(args.contains(&format!("@{}", header.display())), "{args:?}");
        let after = |flag: &str| {
            let at = args.iter().position(|a| a == flag).unwrap();
            args[at + 1].clone()
        };
        assert_eq!(after("--speed-time"), "60");
        assert_eq!(after("--speed-limit"), "1");
        assert_eq!(after("--connect-timeout"), "60");
        let spec = args.iter().find(|a| a.starts_with("bytechunk=@")).unwrap();
        assert!(
            spec.contains("x\\\"y.bin\";filename=\"bytechunk\""),
            "{spec}"
        );
        // A second header file in the same directory is refused, not shared.
        assert!(write_header(dir.path(), &token).is_err());
    }

    #[test]
    fn a_missing_or_broken_curl_gives_a_reason_not_a_failure() {
        let missing = Curl::probe(None).unwrap_err();
        assert!(missing.contains("no curl on PATH"), "{missing}");
        let dir = tempfile::tempdir().unwrap();
        let absent = Curl::probe(Some(&dir.path().join("curl"))).unwrap_err();
        assert!(absent.contains("did not start"), "{absent}");
        let not_curl = Curl::probe(Some(Path::new("/bin/true"))).unwrap_err();
        assert!(not_curl.contains("not curl's version"), "{not_curl}");
    }

    #[test]
    fn reaping_a_child_gives_its_own_cpu_time() {
        // A child that spins for a while in user space.
        let (status, cpu) = run_reaped(
            Command::new("/bin/sh")
                .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"]),
        )
        .unwrap();
        assert!(status.success());
        assert!(cpu > Duration::ZERO, "{cpu:?}");
    }
}
