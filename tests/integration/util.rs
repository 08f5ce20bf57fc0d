//! What every test needs: a temp dir per test, the `idb` binary run as a child
//! process with a clean token environment, a mock Data Bank served in-process on
//! 127.0.0.1:0, and seeded test data.
//!
//! Failures print the command, its exit code, stdout and stderr, so a red test says
//! what the binary did without re-running it.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Read;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use idb_mock::{MockConfig, MockServer};

/// The binary under test.
pub const IDB: &str = env!("CARGO_BIN_EXE_idb");

/// The draft dataset most tests upload into.
pub const DS: &str = "IDB-7000001";
/// Its token: distinctive, so a test can look for it in any output.
pub const TOKEN: &str = "real-tok-Kp44tTq9Zr";

/// Chunk size most tests use (small, so multi-chunk files stay quick).
pub const CHUNK: usize = 64 * 1024;
/// `CHUNK` as the command line spells it.
pub const CHUNK_ARG: &str = "64KiB";

/// The longest any single child process may run before the test calls it a hang.
pub const HANG: Duration = Duration::from_secs(60);

/// Environment variables the binary reads; every command sets or removes each one.
const IDB_ENV: [&str; 4] = ["IDB_TOKEN", "IDB_DATASET", "IDB_SERVER", "IDB_STATE_DIR"];

/// Proxy settings would route 127.0.0.1 requests elsewhere; the tests remove them.
const PROXY_ENV: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

// ---------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------

/// `len` pseudo-random bytes determined by `seed` (blake3's extendable output:
/// incompressible like instrument data, and the same on every run).
pub fn random_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new_derive_key("idb integration tests 2025 data");
    hasher.update(seed.as_bytes());
    let mut bytes = vec![0; len];
    hasher.finalize_xof().fill(&mut bytes);
    bytes
}

/// blake3 of `bytes` as lower-case hex, as `idb` prints it.
pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Asserts two byte strings are equal, reporting lengths and the first difference
/// instead of dumping megabytes.
#[track_caller]
pub fn assert_same_bytes(what: &str, expected: &[u8], actual: &[u8]) {
    if expected == actual {
        return;
    }
    let first = expected.iter().zip(actual).position(|(a, b)| a != b);
    let at = match first {
        Some(i) => format!(
            "first difference at byte {i}: expected {:#04x}, got {:#04x}",
            expected[i], actual[i]
        ),
        None => "one is a prefix of the other".to_owned(),
    };
    panic!(
        "{what}: contents differ: expected {} bytes, got {} bytes; {at}",
        expected.len(),
        actual.len()
    );
}

// ---------------------------------------------------------------------------
// A temp dir per test
// ---------------------------------------------------------------------------

/// A test's own directory, removed when the test ends (pass or fail; the failure
/// message carries what matters).
pub struct Dir {
    root: tempfile::TempDir,
}

impl Dir {
    /// A fresh directory whose name starts with the test's name.
    pub fn new(name: &str) -> Self {
        let root = tempfile::Builder::new()
            .prefix(&format!("idb-it-{name}-"))
            .tempdir()
            .expect("create the test's temp dir");
        Self { root }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// `rel` inside the directory.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.path().join(rel)
    }

    /// Writes `bytes` to `rel` (creating parent directories) and returns its path.
    pub fn write(&self, rel: impl AsRef<Path>, bytes: &[u8]) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Writes `size` seeded random bytes to `rel` (seeded by `rel` itself) and
    /// returns the path and the bytes.
    pub fn random_file(&self, rel: &str, size: usize) -> (PathBuf, Vec<u8>) {
        let bytes = random_bytes(rel, size);
        (self.write(rel, &bytes), bytes)
    }

    /// `idb` with `args`, run in this directory, with IDB_TOKEN, IDB_DATASET and
    /// IDB_SERVER removed (set them with [`TestCommand::env`] or
    /// [`TestCommand::token`]).
    pub fn idb<I, S>(&self, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(IDB);
        cmd.current_dir(self.path()).args(args);
        for name in IDB_ENV.iter().chain(&PROXY_ENV) {
            cmd.env_remove(name);
        }
        // Resume journals go to the test's own directory, never the user's.
        cmd.env("IDB_STATE_DIR", self.path().join("state"));
        TestCommand {
            cmd,
            stderr: None,
            own_stdout: false,
        }
    }

    /// `idb upload --server <mock> --dataset <dataset> --chunk-size 64KiB
    /// --max-chunk-size 64KiB` (fixed chunks, so chunk counts are predictable),
    /// with no token yet; add the files with [`TestCommand::arg`].
    pub fn upload(&self, mock: &Mock, dataset: &str) -> TestCommand {
        self.upload_chunked(mock, dataset, CHUNK_ARG)
    }

    /// [`Dir::upload`] with another `--chunk-size`.
    pub fn upload_chunked(&self, mock: &Mock, dataset: &str, chunk_size: &str) -> TestCommand {
        self.upload_to(&mock.url(), dataset, chunk_size)
    }

    /// [`Dir::upload_chunked`] to any server address (a child mock, a URL variant).
    pub fn upload_to(&self, server: &str, dataset: &str, chunk_size: &str) -> TestCommand {
        self.idb([
            "upload",
            "--chunk-size",
            chunk_size,
            "--max-chunk-size",
            chunk_size,
            "--dataset",
            dataset,
            "--server",
            server,
        ])
    }
}

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// A command to run once.
pub struct TestCommand {
    cmd: Command,
    /// Where stderr goes instead of a pipe this test reads (a pseudo-terminal).
    stderr: Option<std::fs::File>,
    /// Stdout is handed to the test ([`Running::take_stdout`]) instead of read
    /// to the end.
    own_stdout: bool,
}

impl TestCommand {
    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: &str, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(name, value);
        self
    }

    /// Sets IDB_TOKEN.
    pub fn token(self, token: &str) -> Self {
        self.env("IDB_TOKEN", token)
    }

    /// Runs the command as the user `nobody` when the test runs as root (where
    /// file permissions do not apply), so a test of an unreadable file means
    /// the same for everyone. Whatever the command touches must be open to all.
    pub fn unprivileged(mut self) -> Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: getuid is always safe to call.
        if unsafe { libc::getuid() } != 0 {
            return self;
        }
        const NOBODY: libc::uid_t = 65534;
        // SAFETY: the closure runs in the child between fork and exec and calls
        // only setgroups, setgid and setuid, which are async-signal-safe.
        unsafe {
            self.cmd.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(NOBODY) != 0
                    || libc::setuid(NOBODY) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self
    }

    /// Runs the command with a soft limit of `n` open files (as `ulimit -Sn n`).
    pub fn max_open_files(self, n: u64) -> Self {
        self.open_file_limit(n, false)
    }

    /// Runs the command with a soft and hard limit of `n` open files (as
    /// `ulimit -n n`), which `idb` cannot raise.
    pub fn hard_max_open_files(self, n: u64) -> Self {
        self.open_file_limit(n, true)
    }

    /// Lowers the soft limit of open files to `n`, and with `hard` the hard
    /// limit too.
    fn open_file_limit(mut self, n: u64, hard: bool) -> Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec, and calls
        // only getrlimit and setrlimit, which are async-signal-safe; it touches no
        // memory shared with the parent beyond its own stack.
        unsafe {
            self.cmd.pre_exec(move || {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                limit.rlim_cur = n.min(limit.rlim_max);
                if hard {
                    limit.rlim_max = limit.rlim_cur;
                }
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self
    }

    /// How the command reads in a failure message.
    fn shown(&self) -> String {
        let mut shown = String::new();
        for (name, value) in self.cmd.get_envs() {
            let name = name.to_string_lossy();
            if !IDB_ENV.contains(&name.as_ref()) {
                continue;
            }
            match value {
                Some(value) => write!(shown, "{name}={} ", value.to_string_lossy()),
                None => write!(shown, "-u {name} "),
            }
            .expect("write to a String");
        }
        shown.push_str("idb");
        for arg in self.cmd.get_args() {
            write!(shown, " {}", arg.to_string_lossy()).expect("write to a String");
        }
        shown
    }

    /// Runs the command to the end (at most [`HANG`]) and returns what it did.
    pub fn run(self) -> Run {
        self.spawn().wait()
    }

    /// [`TestCommand::run`] with `stdin` as its standard input.
    pub fn run_with_stdin(self, stdin: std::fs::File) -> Run {
        self.spawn_with(stdin.into()).wait()
    }
}

impl TestCommand {
    /// Sends stderr to `file` (such as a pseudo-terminal) instead of a pipe.
    pub fn stderr_to(mut self, file: std::fs::File) -> Self {
        self.stderr = Some(file);
        self
    }

    /// Leaves stdout to the test: see [`Running::take_stdout`].
    pub fn own_stdout(mut self) -> Self {
        self.own_stdout = true;
        self
    }

    /// Starts the command and returns at once (for tests that stop it midway).
    /// Its output is read as it comes: see [`Running::wait_for_stderr`].
    pub fn spawn(self) -> Running {
        self.spawn_with(Stdio::null())
    }

    /// Starts the command with `stdin` as its standard input.
    fn spawn_with(mut self, stdin: Stdio) -> Running {
        let shown = self.shown();
        let stderr = match self.stderr.take() {
            Some(file) => Stdio::from(file),
            None => Stdio::piped(),
        };
        let mut child = self
            .cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        // The command line is done with the file: the child holds its own copy.
        drop(self.cmd);
        let (closed, pipes_closed) = mpsc::channel();
        let (line, lines) = mpsc::channel();
        let mut pipes = 0;
        let stdout = if self.own_stdout {
            None
        } else {
            pipes += 1;
            Some(drain_pipe(
                child.stdout.take().expect("stdout is piped"),
                closed.clone(),
                None,
            ))
        };
        let stderr = child.stderr.take().map(|pipe| {
            pipes += 1;
            drain_pipe(pipe, closed, Some(line))
        });
        Running {
            child: Some(child),
            shown,
            stdout,
            stderr,
            pipes,
            pipes_closed,
            lines,
        }
    }
}

/// A command started with [`TestCommand::spawn`]; killed if the test ends first.
pub struct Running {
    child: Option<Child>,
    shown: String,
    /// The threads reading stdout and stderr to the end (when piped).
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    /// One message per pipe that closed, out of `pipes`.
    pipes: usize,
    pipes_closed: mpsc::Receiver<()>,
    /// Stderr's lines as they come.
    lines: mpsc::Receiver<String>,
}

impl Running {
    /// Kills it with SIGKILL (no chance to clean up) and collects what it printed.
    pub fn kill9(mut self) -> Run {
        let child = self.child.as_mut().expect("stopped once");
        child
            .kill()
            .unwrap_or_else(|e| panic!("kill {}: {e}", self.shown));
        self.wait()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Its stdout, for a test that reads it itself ([`TestCommand::own_stdout`]).
    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        let child = self.child.as_mut().expect("running");
        child.stdout.take().expect("own_stdout, taken once")
    }

    /// Sends `signal` (like `libc::SIGTERM`) to it, to be waited for.
    pub fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("running");
        // SAFETY: kill only reads its arguments; the pid is our unwaited child,
        // so it cannot belong to anyone else.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(
            sent,
            0,
            "kill {}: {}",
            self.shown,
            std::io::Error::last_os_error()
        );
    }

    /// Waits (at most [`HANG`]) for a line of stderr containing `needle`, and
    /// returns it; the lines before it are skipped (they stay in the [`Run`]).
    pub fn wait_for_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + HANG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("{}: no stderr line with {needle:?} ({e})", self.shown),
            }
        }
    }

    /// Waits for it to end by itself (at most [`HANG`]).
    pub fn wait(self) -> Run {
        self.wait_within(HANG)
    }

    /// Waits for it to end by itself, at most `within` (a test that moves
    /// many gigabytes).
    pub fn wait_within(mut self, within: Duration) -> Run {
        let mut child = self.child.take().expect("waited once");
        let hung = wait_for_pipes(&mut child, &self.pipes_closed, self.pipes, within);
        let status = child
            .wait()
            .unwrap_or_else(|e| panic!("wait for {}: {e}", self.shown));
        let read = |pipe: Option<JoinHandle<String>>| {
            pipe.map(|p| p.join().expect("a pipe reader does not panic"))
                .unwrap_or_default()
        };
        let (stdout, stderr) = (read(self.stdout.take()), read(self.stderr.take()));
        if hung {
            panic!(
                "{} did not finish within {within:?} and was killed\n{}",
                self.shown,
                outputs(&stdout, &stderr)
            );
        }
        Run {
            shown: self.shown.clone(),
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits (at most [`HANG`]) for `pipes` pipes of `child` to close, which they
/// do when it exits; kills it if that takes longer. Whether it hung.
fn wait_for_pipes(
    child: &mut Child,
    closed: &mpsc::Receiver<()>,
    pipes: usize,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    for _ in 0..pipes {
        let left = deadline.saturating_duration_since(Instant::now());
        if closed.recv_timeout(left).is_err() {
            let _ = child.kill();
            return true;
        }
    }
    false
}

/// Reads a pipe to the end on its own thread, so neither pipe can fill and block
/// the child; `lines` gets each line as it comes; `closed` is told when the pipe
/// closed.
fn drain_pipe(
    pipe: impl Read + Send + 'static,
    closed: mpsc::Sender<()>,
    lines: Option<mpsc::Sender<String>>,
) -> JoinHandle<String> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        let mut reader = std::io::BufReader::new(pipe);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line).into_owned();
            if let Some(lines) = &lines {
                let _ = lines.send(text.clone());
            }
            all.push_str(&text);
            line.clear();
        }
        let _ = closed.send(());
        all
    })
}

fn outputs(stdout: &str, stderr: &str) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
        stdout.trim_end(),
        stderr.trim_end()
    )
}

/// What a finished command did.
pub struct Run {
    shown: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The exit code (`None` if a signal ended it).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Everything about the run, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nexit: {}\n{}",
            self.shown,
            self.status,
            outputs(&self.stdout, &self.stderr)
        )
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit code {code}\n{}",
            self.describe()
        );
        self
    }

    /// Asserts stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "expected stderr to contain {needle:?}\n{}",
            self.describe()
        );
        self
    }

    /// Asserts stdout contains `needle`.
    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "expected stdout to contain {needle:?}\n{}",
            self.describe()
        );
        self
    }

    /// Asserts `secret` appears in neither stdout nor stderr.
    #[track_caller]
    pub fn never_shows(&self, secret: &str) -> &Self {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "the secret {secret:?} was printed\n{}",
            self.describe()
        );
        self
    }

    /// The `verified ...` lines of stdout.
    pub fn verified_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("verified "))
            .collect()
    }

    /// Asserts stdout has exactly one `verified` line per file, each naming the
    /// file, its size and the blake3 of `contents`, and no other `verified` lines.
    #[track_caller]
    pub fn verified_exactly(&self, files: &[(&Path, &[u8])]) -> &Self {
        let lines = self.verified_lines();
        assert_eq!(
            lines.len(),
            files.len(),
            "expected {} verified lines\n{}",
            files.len(),
            self.describe()
        );
        for (path, contents) in files {
            let expected = format!(
                "verified {} ({} bytes, blake3 {})",
                path.display(),
                contents.len(),
                blake3_hex(contents)
            );
            let found = lines.iter().filter(|l| **l == expected).count();
            assert_eq!(
                found,
                1,
                "expected exactly one line {expected:?}\n{}",
                self.describe()
            );
        }
        self
    }
}

// ---------------------------------------------------------------------------
// The resume journal
// ---------------------------------------------------------------------------

/// The journal files (`*.json`, not the lock file) in a test's state directory.
pub fn journals(dir: &Dir) -> Vec<PathBuf> {
    match std::fs::read_dir(dir.join("state/journal")) {
        Ok(entries) => entries
            .map(|e| e.expect("list the journal directory").path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Watches a test's journal directory: [`JournalWatch::wait_for_write`] returns
/// once a journal file has been written into place (a readiness signal from the
/// running `idb`, instead of sleeping). Start it before the command.
pub struct JournalWatch {
    inotify: inotify::Inotify,
}

impl JournalWatch {
    pub fn new(dir: &Dir) -> Self {
        let journal = dir.join("state/journal");
        std::fs::create_dir_all(&journal).expect("create the journal directory");
        let inotify = inotify::Inotify::init().expect("inotify");
        // Journal files are written to a temporary name and renamed into place.
        inotify
            .watches()
            .add(&journal, inotify::WatchMask::MOVED_TO)
            .expect("watch the journal directory");
        Self { inotify }
    }

    /// Blocks until a journal file is renamed into place (at most [`HANG`]).
    pub fn wait_for_write(&mut self) {
        use std::os::fd::AsRawFd;
        let deadline = Instant::now() + HANG;
        let mut buffer = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no journal was written within {HANG:?}");
            let mut poll = libc::pollfd {
                fd: self.inotify.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, for the call's duration.
            let ready = unsafe { libc::poll(&mut poll, 1, left.as_millis() as libc::c_int) };
            if ready <= 0 {
                continue;
            }
            let events = self.inotify.read_events(&mut buffer).expect("read inotify");
            if events
                .filter_map(|e| e.name)
                .any(|name| Path::new(name).extension().is_some_and(|x| x == "json"))
            {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The mock, in-process
// ---------------------------------------------------------------------------

/// A mock Data Bank on 127.0.0.1:0, served by its own tokio runtime (two worker
/// threads) so a plain `#[test]` can run `idb` synchronously while it answers.
///
/// Dereferences to [`MockServer`] for `url()`, `stored_file(..)`, `receipt(..)`
/// and `stats()`. Dropping it shuts the server down and waits for it.
pub struct Mock {
    /// Always `Some` until dropped; dropped before the runtime that serves it.
    server: Option<MockServer>,
    runtime: tokio::runtime::Runtime,
}

impl Mock {
    /// Starts a mock with `config`.
    pub fn start(config: MockConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build the mock's runtime");
        let server = runtime
            .block_on(MockServer::start(config))
            .expect("start the mock server");
        Self {
            server: Some(server),
            runtime,
        }
    }

    /// Runs `future` on the mock's runtime (for its async methods).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Stops the server (as a crash or a redeploy would) and starts a new one with
    /// `config` on the same address.
    pub fn restart(&mut self, config: MockConfig) {
        let old = self.server.take().expect("the server is running");
        let addr = old.addr();
        self.runtime.block_on(old.shutdown());
        let server = self
            .runtime
            .block_on(MockServer::start(config.listen(addr)))
            .expect("restart the mock server on the same address");
        self.server = Some(server);
    }

    /// A mock with the one draft dataset [`DS`] that accepts [`TOKEN`].
    pub fn standard() -> Self {
        Self::start(MockConfig::new().dataset(DS, TOKEN))
    }

    /// The bytes of the server's stored copy of a verified file.
    #[track_caller]
    pub fn stored(&self, dataset: &str, filename: &str) -> Vec<u8> {
        let path = self
            .stored_file(dataset, filename)
            .unwrap_or_else(|| panic!("the mock has no verified file {dataset}/{filename}"));
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("read the stored copy {}: {e}", path.display()))
    }

    /// Asserts the server holds `filename` byte-identical to `expected`, with a
    /// matching receipt.
    #[track_caller]
    pub fn assert_stored(&self, dataset: &str, filename: &str, expected: &[u8]) {
        let stored = self.stored(dataset, filename);
        assert_same_bytes(
            &format!("stored copy of {dataset}/{filename}"),
            expected,
            &stored,
        );
        let receipt = self
            .receipt(dataset, filename)
            .unwrap_or_else(|| panic!("no receipt for {dataset}/{filename}"));
        assert_eq!(
            receipt.size,
            expected.len() as u64,
            "receipt size of {filename}"
        );
        assert_eq!(
            receipt.blake3,
            blake3_hex(expected),
            "receipt blake3 of {filename}"
        );
    }
}

impl Deref for Mock {
    type Target = MockServer;

    fn deref(&self) -> &MockServer {
        self.server
            .as_ref()
            .expect("the server lives as long as the Mock")
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

// ---------------------------------------------------------------------------
// `idb mock-server` as a child process
// ---------------------------------------------------------------------------

/// `idb mock-server ...` running as a child; killed if the test ends without
/// stopping it.
pub struct ServerProcess {
    child: Option<Child>,
    shown: String,
    /// The address from its first stdout line.
    pub url: String,
    /// The rest of stdout, read after the first line.
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    /// One message per pipe that closed.
    pipes_closed: mpsc::Receiver<()>,
}

impl ServerProcess {
    /// Starts `idb mock-server` with `args` in `dir`, and waits for its first line
    /// (`listening on http://ADDR`, or `https://`), the readiness signal.
    pub fn start(dir: &Dir, args: &[&str]) -> Self {
        let mut cmd = dir.idb(["mock-server"]).args(args);
        let shown = cmd.shown();
        let mut child = cmd
            .cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let (closed, pipes_closed) = mpsc::channel();
        let stderr = drain_pipe(
            child.stderr.take().expect("stderr is piped"),
            closed.clone(),
            None,
        );
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut first = String::new();
        let read = std::io::BufRead::read_line(&mut stdout, &mut first);
        let stdout = drain_pipe(stdout, closed, None);
        let mut server = Self {
            child: Some(child),
            shown,
            url: String::new(),
            stdout: Some(stdout),
            stderr: Some(stderr),
            pipes_closed,
        };
        match (read, first.trim_end().strip_prefix("listening on ")) {
            // https:// when it serves TLS.
            (Ok(_), Some(url))
                if url.starts_with("http://127.0.0.1:")
                    || url.starts_with("https://127.0.0.1:") =>
            {
                server.url = url.to_owned();
                server
            }
            _ => {
                let (status, stdout, stderr) = server.stop_with("-KILL");
                panic!(
                    "{} did not print `listening on http://127.0.0.1:PORT` first; it printed \
                     {first:?} and ended with {status}\n{}",
                    server.shown,
                    outputs(&stdout, &stderr)
                );
            }
        }
    }

    /// [`ServerProcess::start`] in sink mode with the dataset `IDB-X` and token
    /// `tok-x`, on a free port, with `extra` arguments.
    pub fn sink(dir: &Dir, extra: &[&str]) -> Self {
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--dataset",
            "IDB-X:tok-x",
            "--sink",
        ];
        args.extend_from_slice(extra);
        Self::start(dir, &args)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Sends SIGTERM (with the `kill` command, to this child's pid only) and waits
    /// for the exit. Returns the status, the rest of stdout, and stderr.
    pub fn terminate(self) -> (ExitStatus, String, String) {
        self.signal("-TERM")
    }

    /// Sends `signal` (like `-BUS`) and waits for the exit, as [`Self::terminate`].
    pub fn signal(mut self, signal: &str) -> (ExitStatus, String, String) {
        self.stop_with(signal)
    }

    /// Sends `signal` to the child (still a process, if only a zombie, until
    /// waited for, so the pid cannot be anyone else's) and waits for it.
    fn stop_with(&mut self, signal: &str) -> (ExitStatus, String, String) {
        let mut child = self.child.take().expect("stopped once");
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("run `kill {signal}`: {e}"));
        assert!(
            sent.success(),
            "`kill {signal} {}` failed: {sent}",
            child.id()
        );
        let hung = wait_for_pipes(&mut child, &self.pipes_closed, 2, HANG);
        let status = child
            .wait()
            .unwrap_or_else(|e| panic!("wait for {}: {e}", self.shown));
        let stdout = self
            .stdout
            .take()
            .map(|t| t.join().expect("reader"))
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .map(|t| t.join().expect("reader"))
            .unwrap_or_default();
        assert!(
            !hung,
            "{} did not exit within {HANG:?} of `kill {signal}` and was killed\n{}",
            self.shown,
            outputs(&stdout, &stderr)
        );
        (status, stdout, stderr)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Only if the test did not stop it (it panicked): never leave it running.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asserts the run left nothing in `tmp` (its TMPDIR or data directory).
#[track_caller]
pub fn assert_nothing_left(tmp: &Path, run: &Run) {
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}\n{}", run.describe());
}
