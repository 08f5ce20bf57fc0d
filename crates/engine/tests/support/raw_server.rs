//! A small raw-HTTP/1.1 server on 127.0.0.1:0 that answers as a test tells it,
//! for servers the mock will not play: one that echoes the request's headers
//! in its errors, one that never answers, a plain web server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Requests before this one, on any connection (0 for the first).
    pub index: usize,
    /// The header lines, as sent (`name: value`).
    pub headers: Vec<String>,
    /// The `phase` field of the form (`setup`, `transfer`, `verify`), if any.
    pub phase: Option<String>,
    /// The `previous_size` field of a transfer's form.
    pub previous_size: Option<u64>,
    /// The `filename` field of the form.
    pub filename: Option<String>,
}

/// What the server does with a request.
pub enum Reply {
    /// Answers `status` with this reason phrase, extra headers and body.
    Answer {
        status: u16,
        reason: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Answers as [`Reply::Answer`] once this much (tokio) time has passed.
    Later(Duration, Box<Reply>),
    /// Reads the request and never answers; the connection stays open.
    Silent,
    /// Reads the request and closes the connection without answering (an
    /// answer lost on the way back, or a server that went down).
    Close,
    /// Writes these bytes (no HTTP at all: a broken proxy) and closes.
    Raw(Vec<u8>),
}

impl Reply {
    /// `status` with its usual reason phrase and `body`.
    pub fn status(status: u16, body: &[u8]) -> Self {
        Reply::Answer {
            status,
            reason: "Whatever".into(),
            headers: Vec::new(),
            body: body.to_vec(),
        }
    }
}

/// The server; it stops when dropped.
pub struct RawServer {
    url: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    /// Listens on 127.0.0.1:0 and answers each request with `reply(request)`.
    pub async fn start(reply: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let reply = Arc::new(reply);
        let counter = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (reply, counter) = (Arc::clone(&reply), Arc::clone(&counter));
                tokio::spawn(async move { serve(socket, &*reply, &counter).await });
            }
        });
        Self {
            url,
            requests,
            task,
        }
    }

    /// Its address, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests read so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one connection's requests, one after another.
async fn serve(
    mut socket: TcpStream,
    reply: &(dyn Fn(&Request) -> Reply + Sync),
    count: &AtomicUsize,
) {
    let mut buffer = Vec::new();
    loop {
        let Some(head_end) = read_until_head_end(&mut socket, &mut buffer).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let headers: Vec<String> = head.split("\r\n").skip(1).map(str::to_owned).collect();
        let length: usize = headers
            .iter()
            .find_map(|h| {
                let (name, value) = h.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        let body_end = head_end + 4 + length;
        while buffer.len() < body_end {
            if !read_more(&mut socket, &mut buffer).await {
                return;
            }
        }
        let body = String::from_utf8_lossy(&buffer[head_end + 4..body_end]).into_owned();
        buffer.drain(..body_end);
        let request = Request {
            index: count.fetch_add(1, Ordering::SeqCst),
            headers,
            phase: form_field(&body, "phase"),
            previous_size: form_field(&body, "previous_size").and_then(|s| s.parse().ok()),
            filename: form_field(&body, "filename"),
        };
        let mut answer = reply(&request);
        while let Reply::Later(after, then) = answer {
            // The server's own latency, on the test's (paused) clock.
            tokio::time::sleep(after).await;
            answer = *then;
        }
        let (status, reason, headers, body) = match answer {
            Reply::Answer {
                status,
                reason,
                headers,
                body,
            } => (status, reason, headers, body),
            // Hold the connection open, reading nothing more.
            Reply::Silent => std::future::pending().await,
            Reply::Raw(bytes) => {
                let _ = socket.write_all(&bytes).await;
                return;
            }
            Reply::Close | Reply::Later(..) => return,
        };
        let mut out = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&body);
        if socket.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// Reads until `buffer` holds a whole request head; where it ends.
async fn read_until_head_end(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(end);
        }
        if !read_more(socket, buffer).await {
            return None;
        }
    }
}

async fn read_more(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> bool {
    let mut piece = [0; 64 * 1024];
    match socket.read(&mut piece).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buffer.extend_from_slice(&piece[..n]);
            true
        }
    }
}

/// The value of a multipart form field `name` (enough for the engine's forms).
fn form_field(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("name=\"{name}\""))?;
    let value = &body[start..];
    let value = &value[value.find("\r\n\r\n")? + 4..];
    Some(value[..value.find("\r\n")?].to_owned())
}
