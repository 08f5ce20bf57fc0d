//! A real tus peer for the tests: `@tus/server` with `@tus/file-store` (npm),
//! run by Node through `tests/peers/tus-node/server.mjs`, with a stub of the
//! Data Bank's registration call.
//!
//! `.ci/run` installs the packages (pinned by that directory's lock) into a
//! cache directory and names its `node_modules` in `IDB_TUS_NODE_MODULES`.
//! Without Node 20.19+ or the packages, [`start_node_tus`] says why on stderr
//! (visible even when the test passes) and returns `None`: the test skips.
//!
//! Layout of a started peer, from [`NodeTus::url`] (the server root):
//! tus 1.0 at `<url>/files/`, registration at
//! `<url>/api/dataset/<KEY>/datafile`, the accepted registrations at
//! `<url>/registrations`.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use url::Url;

use crate::util::HANG;

/// The wrapper script Node runs.
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/peers/tus-node/server.mjs"
);

/// The manifest that pins the packages' versions.
const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/peers/tus-node/package.json"
);

/// The packages the script loads, each checked to be installed at its pinned version.
const PACKAGES: [&str; 2] = ["@tus/server", "@tus/file-store"];

/// The oldest Node the pinned packages run on (their `engines`).
const NODE_MIN: (u64, u64) = (20, 19);

/// The readiness line's prefix; the server's root URL follows it.
const READY: &str = "listening ";

/// A running peer; killed (and reaped) on drop. Its stdin is a pipe this
/// process holds, so the peer also exits when the test process dies.
pub struct NodeTus {
    /// The server root (`http://127.0.0.1:PORT/`): tus at `url/files/`,
    /// registration at `url/api/dataset/<KEY>/datafile`.
    pub url: Url,
    /// `None` once stopped.
    child: Option<Child>,
    /// Held open for the peer's life: closing it tells the peer to exit.
    stdin: Option<ChildStdin>,
    /// What the peer wrote on stderr so far (filled by `_stderr_reader`).
    stderr: Arc<Mutex<Vec<u8>>>,
    _stderr_reader: JoinHandle<()>,
}

/// One registration the peer accepted, as `GET /registrations` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The `<KEY>` of the registration's URL.
    pub dataset: String,
    /// The `tus_url` field, as sent.
    pub tus_url: String,
    /// The upload's id (the last path segment of `tus_url`).
    pub id: String,
    /// The `filename` field.
    pub filename: String,
    /// The `size` field (equal to the upload's length: the peer refuses others).
    pub size: u64,
    /// The upload's bytes on disk, in the directory given to [`start_node_tus`].
    pub path: PathBuf,
    /// sha256 of those bytes at registration, lower-case hex.
    pub sha256: String,
}

/// Starts the peer storing uploads in `dir`, accepting only `token`; waits for
/// its readiness line (at most [`HANG`]). `None`, with the reason on stderr,
/// when Node or the packages are missing. Panics (with the peer's stderr) if
/// they are there but the peer does not start.
pub fn start_node_tus(dir: &Path, token: &str) -> Option<NodeTus> {
    let modules = match node_modules() {
        Ok(modules) => modules,
        Err(reason) => {
            skip(&reason);
            return None;
        }
    };
    let mut child = Command::new("node")
        .arg(SCRIPT)
        .arg(dir)
        .env("IDB_TUS_NODE_MODULES", &modules)
        .env("IDB_PEER_TOKEN", token)
        .env_remove("NODE_OPTIONS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node (it ran a moment ago)");
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("the peer's stdout");
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let stderr_reader = {
        let mut from = child.stderr.take().expect("the peer's stderr");
        let into = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                into.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    // The first line of stdout, or None at end of file. The reader goes on
    // reading (and dropping) so the peer never writes into a closed pipe.
    let (line_tx, line_rx) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = line_tx.send(lines.next().and_then(Result::ok));
        lines.for_each(drop);
    });
    let mut peer = NodeTus {
        url: Url::parse("http://127.0.0.1/").expect("a placeholder URL"),
        child: Some(child),
        stdin,
        stderr,
        _stderr_reader: stderr_reader,
    };
    let line = match line_rx.recv_timeout(HANG) {
        Ok(Some(line)) => line,
        Ok(None) => panic!(
            "the @tus/server peer exited before it listened; its stderr:\n{}",
            peer.stderr()
        ),
        Err(_) => panic!(
            "the @tus/server peer did not say it listens within {HANG:?}; its stderr:\n{}",
            peer.stderr()
        ),
    };
    peer.url = line
        .strip_prefix(READY)
        .and_then(|url| Url::parse(url).ok())
        .unwrap_or_else(|| panic!("the peer's first line is not `{READY}URL`: {line:?}"));
    Some(peer)
}

impl NodeTus {
    /// The tus endpoint, `<url>/files/`.
    pub fn tus_endpoint(&self) -> Url {
        self.url.join("files/").expect("a relative path joins")
    }

    /// The registration URL of `dataset`: `<url>/api/dataset/<dataset>/datafile`.
    pub fn datafile_url(&self, dataset: &str) -> Url {
        self.url
            .join(&format!("api/dataset/{dataset}/datafile"))
            .expect("a relative path joins")
    }

    /// Every registration the peer accepted so far, in order.
    pub fn registrations(&self) -> Vec<Registration> {
        let body = get(&self.url, "/registrations");
        let list: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET /registrations is not JSON ({e}): {body}"));
        let list = list.as_array().expect("GET /registrations is an array");
        list.iter().map(registration).collect()
    }

    /// What the peer wrote on stderr so far (its errors; never the token).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Closes the peer's stdin, as the death of the test process would, and
    /// waits (at most [`HANG`]) for it to exit.
    pub fn close_stdin_and_wait(mut self) -> ExitStatus {
        drop(self.stdin.take());
        let mut child = self.child.take().expect("a running peer");
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let pid = child.id();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = done_tx.send(());
            status
        });
        if done_rx.recv_timeout(HANG).is_err() {
            // Not exited: end it so the test leaves nothing behind.
            // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our
            // child, not reaped yet (the waiter still waits), so not reused.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = waiter.join();
            panic!("the peer did not exit within {HANG:?} of its stdin closing");
        }
        waiter
            .join()
            .expect("the waiter thread")
            .expect("wait for the peer")
    }
}

impl Drop for NodeTus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Prints why the peer's tests skip: through `eprintln!` (shown with a failing
/// test's output) and straight to the process's stderr, which the test harness
/// does not capture, so the reason shows when the test passes too.
fn skip(reason: &str) {
    // The harness names each test's thread after the test.
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let line = format!(
        "SKIPPED {test} (no @tus/server peer): {reason}; .ci/run installs it (npm ci \
         of tests/peers/tus-node) and names it in IDB_TUS_NODE_MODULES"
    );
    eprintln!("{line}");
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The `node_modules` directory with the pinned packages, or why there is none.
fn node_modules() -> Result<PathBuf, String> {
    let version = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run node: {e}"))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let mut numbers = version
        .trim_start_matches('v')
        .split('.')
        .map(|n| n.parse::<u64>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if (major, minor) < NODE_MIN {
        return Err(format!(
            "node {version:?} is older than the {}.{} the pinned packages need",
            NODE_MIN.0, NODE_MIN.1
        ));
    }
    let modules = match std::env::var_os("IDB_TUS_NODE_MODULES") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").ok_or("IDB_TUS_NODE_MODULES and HOME are unset")?;
            PathBuf::from(home).join(".cache/idb-ci/tus-node/node_modules")
        }
    };
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(MANIFEST).expect("read the peer's package.json"),
    )
    .expect("the peer's package.json is JSON");
    for package in PACKAGES {
        let pinned = manifest["dependencies"][package]
            .as_str()
            .unwrap_or_else(|| panic!("{MANIFEST} pins {package}"));
        let installed = std::fs::read_to_string(modules.join(package).join("package.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|json| json["version"].as_str().map(str::to_owned));
        match installed {
            Some(v) if v == pinned => {}
            Some(v) => {
                return Err(format!(
                    "{} has {package} {v}, the tests pin {pinned}",
                    modules.display()
                ));
            }
            None => return Err(format!("{} has no {package}", modules.display())),
        }
    }
    Ok(modules)
}

/// One entry of `GET /registrations`.
fn registration(entry: &serde_json::Value) -> Registration {
    let text = |name: &str| {
        entry[name]
            .as_str()
            .unwrap_or_else(|| panic!("registration without {name}: {entry}"))
            .to_owned()
    };
    Registration {
        dataset: text("dataset"),
        tus_url: text("tus_url"),
        id: text("id"),
        filename: text("filename"),
        size: entry["size"]
            .as_u64()
            .unwrap_or_else(|| panic!("registration without size: {entry}")),
        path: PathBuf::from(text("path")),
        sha256: text("sha256"),
    }
}

/// The body of a 200 answer to `GET <path>` on `base` (one HTTP/1.1 request
/// with `Connection: close`, read to its end, at most [`HANG`]). Plain
/// `std::net`, so it works from sync and async tests alike.
fn get(base: &Url, path: &str) -> String {
    let host = base.host_str().expect("a host");
    let port = base.port().expect("a port");
    let mut stream =
        TcpStream::connect((host, port)).unwrap_or_else(|e| panic!("connect {base}: {e}"));
    stream.set_read_timeout(Some(HANG)).expect("set a timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("send GET {path} to {base}: {e}"));
    let mut received = Vec::new();
    if let Err(e) = stream.read_to_end(&mut received) {
        assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "no answer to GET {path} from {base} within {HANG:?}"
        );
        panic!("read the answer to GET {path} from {base}: {e}");
    }
    let text = String::from_utf8_lossy(&received);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer to GET {path}: {text:?}"));
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "GET {path} on {base}: {head}"
    );
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "GET {path}: a chunked answer this reader does not decode"
    );
    body.to_owned()
}
