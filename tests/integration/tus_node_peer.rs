//! The `@tus/server` peer (`tus_peer`) itself, over raw HTTP (reqwest): what
//! it advertises, a byte-exact create / PATCH / HEAD round trip, the token on
//! every request, a PATCH cut short (a prefix kept, the upload goes on from
//! what HEAD says, after a 409 if HEAD answered before the last write landed),
//! concatenation refused (it does not advertise it), the
//! registration stub, 404 for protocol 1 calls, and its exit when its stdin
//! closes. The engine's tests against this peer rely on each of these. Each
//! test skips, saying why, when `.ci/run` could not install the peer.

use std::io::Write as _;
use std::net::{Shutdown, TcpStream};

use reqwest::header::HeaderMap;
use reqwest::{Client, Method, StatusCode};
use url::Url;

use crate::tus_peer::{NodeTus, start_node_tus};
use crate::util::{DS, Dir, HANG, TOKEN, assert_same_bytes, random_bytes};

/// What `Tus-Extension` lists: @tus/file-store's extensions (no concatenation,
/// no checksum).
const EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,termination,expiration";

/// How many HEADs in a row may answer an offset the file store has already
/// passed (each followed by a 409) before the test calls it a bug: one write
/// is in flight at most, so one stale answer is the most expected.
const MAX_STALE_HEADS: u32 = 3;

/// A started peer with its directory (the store is `dir/store`).
struct Peer {
    dir: Dir,
    node: NodeTus,
    client: Client,
}

impl Peer {
    /// `None` (the test skips) without Node or the packages.
    fn start(name: &str) -> Option<Self> {
        let dir = Dir::new(name);
        let node = start_node_tus(&dir.join("store"), TOKEN)?;
        // Only http:// URLs are used, but a rustls-backed client may still
        // want a provider at build time.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::builder()
            .no_proxy()
            .timeout(HANG)
            .build()
            .expect("build the HTTP client");
        Some(Self { dir, node, client })
    }

    /// Where the file store keeps the bytes of the upload at `url`.
    fn stored_path(&self, url: &str) -> std::path::PathBuf {
        self.dir.join("store").join(upload_id(url))
    }

    /// Sends a tus request with `Tus-Resumable: 1.0.0` and `auth` (if any).
    async fn tus(
        &self,
        method: Method,
        url: &str,
        auth: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap) {
        let mut request = self
            .client
            .request(method, url)
            .header("tus-resumable", "1.0.0");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let answer = request
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        (answer.status(), answer.headers().clone())
    }

    /// Creates an upload of `length` bytes; its URL.
    async fn create(&self, length: usize) -> String {
        let (status, headers) = self
            .tus(
                Method::POST,
                self.node.tus_endpoint().as_str(),
                Some(&auth()),
                &[
                    ("upload-length", &length.to_string()),
                    // base64 of "data.bin"
                    ("upload-metadata", "filename ZGF0YS5iaW4="),
                ],
                Vec::new(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{headers:?}");
        let location = header(&headers, "location").expect("a Location");
        let endpoint = self.node.tus_endpoint();
        assert!(
            location.starts_with(endpoint.as_str()),
            "{location} is not under {endpoint}"
        );
        location
    }

    /// PATCHes `bytes` at `offset`; the status and the answered `Upload-Offset`.
    async fn patch(&self, url: &str, offset: usize, bytes: &[u8]) -> (StatusCode, Option<u64>) {
        let (status, headers) = self
            .tus(
                Method::PATCH,
                url,
                Some(&auth()),
                &[
                    ("upload-offset", &offset.to_string()),
                    ("content-type", "application/offset+octet-stream"),
                ],
                bytes.to_vec(),
            )
            .await;
        (status, number(&headers, "upload-offset"))
    }

    /// HEAD of an upload: `(Upload-Offset, Upload-Length)`.
    async fn head(&self, url: &str) -> (u64, u64) {
        let (status, headers) = self
            .tus(Method::HEAD, url, Some(&auth()), &[], Vec::new())
            .await;
        assert_eq!(status, StatusCode::OK, "HEAD {url}: {headers:?}");
        (
            number(&headers, "upload-offset").expect("Upload-Offset"),
            number(&headers, "upload-length").expect("Upload-Length"),
        )
    }

    /// An upload of `bytes`, sent whole; its URL.
    async fn complete_upload(&self, bytes: &[u8]) -> String {
        let url = self.create(bytes.len()).await;
        let (status, offset) = self.patch(&url, 0, bytes).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(offset, Some(bytes.len() as u64));
        url
    }

    /// POSTs a registration as a multipart form; the status and the body.
    async fn register(
        &self,
        auth: Option<&str>,
        fields: &[(&str, String)],
    ) -> (StatusCode, String) {
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in fields {
            form = form.text(name.to_string(), value.clone());
        }
        let mut request = self.client.post(self.node.datafile_url(DS)).multipart(form);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let answer = request.send().await.expect("register");
        (
            answer.status(),
            answer.text().await.expect("the answer's body"),
        )
    }

    /// POSTs `body` of `content_type` to the datafile URL with the token.
    async fn post_datafile(&self, content_type: &str, body: Vec<u8>) -> StatusCode {
        self.client
            .post(self.node.datafile_url(DS))
            .header("authorization", auth())
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST to the datafile URL")
            .status()
    }
}

/// The `Authorization` value of [`TOKEN`].
fn auth() -> String {
    format!("Token token={TOKEN}")
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| v.to_str().expect("a text header").to_owned())
}

fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    header(headers, name).map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: {v}")))
}

/// The upload id in a tus URL (its last path segment).
fn upload_id(url: &str) -> String {
    let url = Url::parse(url).expect("an absolute upload URL");
    let id = url.path_segments().and_then(|mut s| s.next_back());
    id.expect("a path").to_owned()
}

#[tokio::test]
async fn node_peer_advertises_tus_1_0_with_file_store_extensions_only() {
    let Some(peer) = Peer::start("node-options") else {
        return;
    };
    let endpoint = peer.node.tus_endpoint();
    let (status, headers) = peer
        .tus(
            Method::OPTIONS,
            endpoint.as_str(),
            Some(&auth()),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{headers:?}");
    assert_eq!(header(&headers, "tus-version").as_deref(), Some("1.0.0"));
    assert_eq!(
        header(&headers, "tus-extension").as_deref(),
        Some(EXTENSIONS),
        "the engine's tests assume this profile: no concatenation, no checksum"
    );
    assert_eq!(
        number(&headers, "tus-max-size"),
        Some(idb_wire::MAX_FILE_SIZE)
    );
    assert_eq!(header(&headers, "tus-checksum-algorithm"), None);
}

#[tokio::test]
async fn node_peer_refuses_every_tus_request_without_the_token() {
    let Some(peer) = Peer::start("node-token") else {
        return;
    };
    let endpoint = peer.node.tus_endpoint();
    let url = peer.create(10).await;
    let wrong = "Token token=not-the-token";
    for (method, url, auth) in [
        (Method::OPTIONS, endpoint.as_str(), None),
        (Method::POST, endpoint.as_str(), None),
        (Method::HEAD, url.as_str(), None),
        (Method::HEAD, url.as_str(), Some(wrong)),
        (Method::PATCH, url.as_str(), Some(wrong)),
        (Method::DELETE, url.as_str(), Some("Bearer")),
    ] {
        let headers = [
            ("upload-length", "10"),
            ("upload-offset", "0"),
            ("content-type", "application/offset+octet-stream"),
        ];
        let (status, answer) = peer
            .tus(method.clone(), url, auth, &headers, b"0123456789".to_vec())
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {url}");
        assert_eq!(
            header(&answer, "www-authenticate").as_deref(),
            Some(idb_wire::WWW_AUTHENTICATE)
        );
    }
    // Nothing of the refused PATCH arrived; the quoted form of the header works.
    let quoted = format!("Token token=\"{TOKEN}\"");
    let (status, headers) = peer
        .tus(Method::HEAD, &url, Some(&quoted), &[], Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(number(&headers, "upload-offset"), Some(0));
    assert!(!peer.node.stderr().contains(TOKEN));
}

#[tokio::test]
async fn node_peer_stores_a_create_two_patches_and_head_byte_exact() {
    let Some(peer) = Peer::start("node-roundtrip") else {
        return;
    };
    let bytes = random_bytes("node-roundtrip", 300_007);
    let url = peer.create(bytes.len()).await;
    let cut = 131_072;
    assert_eq!(
        peer.patch(&url, 0, &bytes[..cut]).await,
        (StatusCode::NO_CONTENT, Some(cut as u64))
    );
    assert_eq!(peer.head(&url).await, (cut as u64, bytes.len() as u64));
    // A PATCH at the wrong offset changes nothing.
    assert_eq!(
        peer.patch(&url, 0, &bytes[..cut]).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        peer.patch(&url, cut, &bytes[cut..]).await,
        (StatusCode::NO_CONTENT, Some(bytes.len() as u64))
    );
    assert_eq!(
        peer.head(&url).await,
        (bytes.len() as u64, bytes.len() as u64)
    );
    let stored = std::fs::read(peer.stored_path(&url)).expect("the upload's file in the store");
    assert_same_bytes("the upload on the peer's disk", &bytes, &stored);
}

#[tokio::test]
async fn node_peer_keeps_a_prefix_of_a_patch_cut_short_and_the_upload_goes_on() {
    let Some(peer) = Peer::start("node-cut-patch") else {
        return;
    };
    let bytes = random_bytes("node-cut-patch", 200_000);
    let url = peer.create(bytes.len()).await;
    let sent = 120_000;
    // The whole length announced, part of the body sent, then the connection
    // closed: a client killed mid-PATCH.
    {
        let base = &peer.node.url;
        let addr = (base.host_str().unwrap(), base.port().unwrap());
        let mut stream = TcpStream::connect(addr).expect("connect to the peer");
        let head = format!(
            "PATCH {} HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: {}\r\nTus-Resumable: 1.0.0\r\n\
             Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n\
             Content-Length: {}\r\n\r\n",
            Url::parse(&url).unwrap().path(),
            addr.0,
            addr.1,
            auth(),
            bytes.len()
        );
        stream.write_all(head.as_bytes()).expect("send the head");
        stream
            .write_all(&bytes[..sent])
            .expect("send part of the body");
        stream
            .shutdown(Shutdown::Both)
            .expect("close the connection");
    }
    // What the peer kept is a prefix of what was sent. HEAD may answer before
    // the file store's last write lands (the cut PATCH gives up its lock with
    // a write still in flight): a PATCH at that offset then gets 409, and a
    // new HEAD gives the offset to go on from, as a client must do.
    let store = peer.stored_path(&url);
    let mut conflicts = 0;
    loop {
        let (offset, length) = peer.head(&url).await;
        assert_eq!(length, bytes.len() as u64);
        assert!(offset <= sent as u64, "{offset} of {sent} sent");
        let at = offset as usize;
        match peer.patch(&url, at, &bytes[at..]).await {
            (StatusCode::NO_CONTENT, Some(end)) if end == bytes.len() as u64 => break,
            (StatusCode::CONFLICT, _) if conflicts < MAX_STALE_HEADS => conflicts += 1,
            other => panic!("PATCH at {offset} after {conflicts} conflicts: {other:?}"),
        }
        let stored = std::fs::read(&store).unwrap();
        assert!(stored.len() <= sent, "{} bytes stored", stored.len());
        assert_same_bytes(
            "what the peer kept of the cut PATCH",
            &bytes[..stored.len()],
            &stored,
        );
    }
    assert_same_bytes(
        "the resumed upload",
        &bytes,
        &std::fs::read(&store).unwrap(),
    );
}

#[tokio::test]
async fn node_peer_refuses_concatenation_it_does_not_advertise() {
    let Some(peer) = Peer::start("node-concat") else {
        return;
    };
    let (status, _) = peer
        .tus(
            Method::POST,
            peer.node.tus_endpoint().as_str(),
            Some(&auth()),
            &[("upload-length", "10"), ("upload-concat", "partial")],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
}

#[tokio::test]
async fn node_peer_registers_a_complete_upload_and_lists_each_registration() {
    let Some(peer) = Peer::start("node-register") else {
        return;
    };
    let bytes = random_bytes("node-register", 70_001);
    let complete = peer.complete_upload(&bytes).await;
    let incomplete = peer.create(bytes.len()).await;
    assert_eq!(
        peer.patch(&incomplete, 0, &bytes[..1000]).await.0,
        StatusCode::NO_CONTENT
    );
    let fields = |url: &str, size: usize| {
        vec![
            ("tus_url", url.to_owned()),
            ("filename", "data.bin".to_owned()),
            ("size", size.to_string()),
        ]
    };
    let unknown = format!("{}0123abcd", peer.node.tus_endpoint());
    for (auth, fields, expected) in [
        (
            Some(auth()),
            fields(&incomplete, bytes.len()),
            StatusCode::CONFLICT,
        ),
        (
            Some(auth()),
            fields(&complete, bytes.len() + 1),
            StatusCode::CONFLICT,
        ),
        (
            Some(auth()),
            fields(&unknown, bytes.len()),
            StatusCode::NOT_FOUND,
        ),
        (
            None,
            fields(&complete, bytes.len()),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let (status, body) = peer.register(auth.as_deref(), &fields).await;
        assert_eq!(status, expected, "{fields:?}: {body}");
    }
    assert_eq!(peer.node.registrations(), []);

    let (status, body) = peer
        .register(Some(&auth()), &fields(&complete, bytes.len()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("a JSON answer");
    assert_eq!(answer["filename"], "data.bin");
    assert_eq!(answer["size"], bytes.len() as u64);
    let registrations = peer.node.registrations();
    assert_eq!(registrations.len(), 1, "{registrations:?}");
    let first = &registrations[0];
    assert_eq!(
        (
            first.dataset.as_str(),
            first.tus_url.as_str(),
            first.filename.as_str()
        ),
        (DS, complete.as_str(), "data.bin")
    );
    assert_eq!(first.size, bytes.len() as u64);
    assert_eq!(answer["sha256"], first.sha256.as_str());
    assert_eq!(
        first.path.canonicalize().unwrap(),
        peer.stored_path(&complete).canonicalize().unwrap()
    );
    let stored = std::fs::read(&first.path).expect("the registered upload's file");
    assert_same_bytes("the registered upload", &bytes, &stored);

    // Like the service, a second registration is accepted; the list shows it,
    // so a test can tell "registered exactly once". This one is urlencoded.
    let body = idb_wire::encode_urlencoded(&[
        ("tus_url", complete.as_bytes()),
        ("filename", b"data.bin"),
        ("size", bytes.len().to_string().as_bytes()),
    ]);
    let status = peer
        .post_datafile("application/x-www-form-urlencoded", body.into_bytes())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(peer.node.registrations().len(), 2);
}

#[tokio::test]
async fn node_peer_answers_protocol_1_calls_404() {
    let Some(peer) = Peer::start("node-protocol-1") else {
        return;
    };
    // The setup call exactly as the engine sends it, then urlencoded.
    let setup = idb_wire::setup_body(&idb_wire::Boundary::from_random(7), "data.bin", 10);
    let content_type = setup.content_type().to_owned();
    let body: Vec<u8> = setup.into_segments().concat();
    assert_eq!(
        peer.post_datafile(&content_type, body).await,
        StatusCode::NOT_FOUND
    );
    let body = b"phase=setup&filename=data.bin&filesize=10".to_vec();
    assert_eq!(
        peer.post_datafile("application/x-www-form-urlencoded", body)
            .await,
        StatusCode::NOT_FOUND
    );
    for method in [Method::OPTIONS, Method::GET, Method::PUT] {
        let status = peer
            .client
            .request(method.clone(), peer.node.datafile_url(DS))
            .header("authorization", auth())
            .send()
            .await
            .expect("a request to the datafile URL")
            .status();
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
    }
    assert_eq!(peer.node.registrations(), []);
}

#[test]
fn node_peer_exits_when_its_stdin_closes() {
    let dir = Dir::new("node-stdin");
    let Some(node) = start_node_tus(&dir.join("store"), TOKEN) else {
        return;
    };
    let status = node.close_stdin_and_wait();
    assert!(status.success(), "{status}");
}
