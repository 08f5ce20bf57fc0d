//! A TCP proxy on 127.0.0.1:0 in front of a mock that loses the answer to one
//! kind of request: the request reaches the server (and is applied), its
//! answer never reaches the client. How a test models a lost answer at an
//! exact call (the mock's own faults are drawn at random).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// No rule matched the request in flight.
const NONE: usize = usize::MAX;

/// What happens to the answer of a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lose {
    /// The client's connection is closed instead (a reset after the call).
    Drop,
    /// The answer is held back for as long as the proxy lives (a process
    /// killed while waiting for it).
    Hold,
    /// The client gets a bare answer of this status instead (404: a server
    /// without that call; 502: a gateway that gave up on a call the server
    /// applied), and the connection is closed.
    Status(u16),
    /// The client gets this JSON body with status 200 instead (a server
    /// whose answers are of its own shape), and the connection is closed.
    Json(&'static str),
}

/// The proxy; dropping it closes every connection and stops it.
pub struct Proxy {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    /// Every socket it opened, shut down on drop so no thread blocks forever.
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    /// The index of the rule each time one lost an answer (after the server
    /// answered).
    lost: mpsc::Receiver<usize>,
}

struct Rule {
    /// Lower-case bytes whose presence in a request marks it.
    needle: Vec<u8>,
    lose: Lose,
    /// Answers still to lose.
    left: AtomicUsize,
}

/// The rules of one proxy, and where losses are told.
struct Rules {
    rules: Vec<Rule>,
    lost: Mutex<mpsc::Sender<usize>>,
}

impl Proxy {
    /// A proxy to `upstream` that loses the answers of the first `times`
    /// requests containing `needle` (matched without regard to case).
    pub fn start(upstream: SocketAddr, needle: &str, lose: Lose, times: usize) -> Self {
        Self::with_rules(upstream, &[(needle, lose, times)])
    }

    /// A proxy with several rules `(needle, lose, times)`; the first that
    /// matches a request applies.
    pub fn with_rules(upstream: SocketAddr, rules: &[(&str, Lose, usize)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let stopping = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let (tx, lost) = mpsc::channel();
        let rule = Arc::new(Rules {
            rules: rules
                .iter()
                .map(|&(needle, lose, times)| Rule {
                    needle: needle.to_ascii_lowercase().into_bytes(),
                    lose,
                    left: AtomicUsize::new(times),
                })
                .collect(),
            lost: Mutex::new(tx),
        });
        let (stop, all) = (Arc::clone(&stopping), Arc::clone(&sockets));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut all = all.lock().unwrap();
                    all.extend(client.try_clone().ok());
                    all.extend(server.try_clone().ok());
                }
                relay(client, server, Arc::clone(&rule));
            }
        });
        Self {
            addr,
            stopping,
            sockets,
            lost,
        }
    }

    /// Its base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (at most `within`) until an answer was lost: the server answered
    /// a matching request, and the client did not get it. Which rule lost it.
    pub fn wait_for_loss(&self, within: Duration) -> usize {
        self.lost
            .recv_timeout(within)
            .expect("no matching request was answered by the server in time")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Wakes the accept loop so it sees the stop.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Relays one connection both ways on two threads.
fn relay(client: TcpStream, server: TcpStream, rule: Arc<Rules>) {
    // Set by the request direction to the rule a request matched when it went
    // up: the next answer bytes are its (HTTP/1.1, one request at a time).
    let marked = Arc::new(AtomicUsize::new(NONE));
    let (mut from_client, mut to_server) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (up_mark, up_rule) = (Arc::clone(&marked), Arc::clone(&rule));
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        // The tail of the last read, so a needle split across reads is found.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match from_client.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut window = std::mem::take(&mut tail);
            window.extend(buffer[..n].iter().map(u8::to_ascii_lowercase));
            let matched = up_rule.rules.iter().position(|rule| {
                let needle = &rule.needle;
                window.windows(needle.len()).any(|w| w == needle.as_slice())
                    && rule
                        .left
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                        .is_ok()
            });
            if let Some(index) = matched {
                up_mark.store(index, Ordering::Relaxed);
            }
            let longest = up_rule
                .rules
                .iter()
                .map(|r| r.needle.len())
                .max()
                .unwrap_or(0);
            let keep = window.len().min(longest);
            tail = window[window.len() - keep..].to_vec();
            if to_server.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match from_server.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let index = marked.load(Ordering::Relaxed);
            if index != NONE {
                let _ = rule.lost.lock().unwrap().send(index);
                match rule.rules[index].lose {
                    Lose::Status(status) => {
                        let _ = to_client.write_all(
                            format!(
                                "HTTP/1.1 {status} Lost\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            )
                            .as_bytes(),
                        );
                        let _ = to_client.shutdown(Shutdown::Both);
                        let _ = from_server.shutdown(Shutdown::Both);
                    }
                    Lose::Json(body) => {
                        let _ = to_client.write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        );
                        let _ = to_client.shutdown(Shutdown::Both);
                        let _ = from_server.shutdown(Shutdown::Both);
                    }
                    Lose::Drop => {
                        let _ = to_client.shutdown(Shutdown::Both);
                        let _ = from_server.shutdown(Shutdown::Both);
                    }
                    // Nothing more goes to the client; the sockets stay open
                    // until the proxy is dropped.
                    Lose::Hold => {
                        let mut sink = [0u8; 4096];
                        while matches!(from_server.read(&mut sink), Ok(n) if n > 0) {}
                    }
                }
                return;
            }
            if to_client.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to_client.shutdown(Shutdown::Write);
    });
}
