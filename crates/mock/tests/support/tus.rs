//! A small tus 1.0 client over reqwest for the mock's tus tests: every request
//! sends `Tus-Resumable: 1.0.0` and the default token unless told otherwise.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use idb_mock::MockServer;
use reqwest::Method;

use super::{AUTH, Answer, Api, HANG, client_with_timeout};

/// The content type of every PATCH body.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// A tus client of one mock.
pub struct Tus {
    client: reqwest::Client,
    /// `<base>/files/`.
    pub endpoint: String,
}

impl Tus {
    pub fn new(server: &MockServer) -> Self {
        Self {
            client: client_with_timeout(HANG),
            endpoint: server.tus_url(),
        }
    }

    /// Sends `method` to `url` with `headers` (and the default
    /// `Tus-Resumable` and `Authorization`, unless `headers` name them; a
    /// header given with an empty value is left out).
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let mut request = self.client.request(method, url);
        let named = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if !named("tus-resumable") {
            request = request.header("tus-resumable", "1.0.0");
        }
        if !named("authorization") {
            request = request.header("authorization", AUTH);
        }
        for (name, value) in headers {
            if !value.is_empty() {
                request = request.header(*name, *value);
            }
        }
        Api::try_request(request.body(body))
            .await
            .expect("the tus request reaches the mock and gets an answer")
    }

    pub async fn options(&self) -> Answer {
        self.request(
            Method::OPTIONS,
            &self.endpoint,
            &[("tus-resumable", "")],
            Vec::new(),
        )
        .await
    }

    /// POST with `headers`, as is.
    pub async fn create_with(&self, headers: &[(&str, &str)]) -> Answer {
        self.request(Method::POST, &self.endpoint, headers, Vec::new())
            .await
    }

    /// Creates an upload of `length` bytes named `filename`; its URL.
    pub async fn create(&self, length: u64, filename: &str) -> String {
        let length = length.to_string();
        let metadata = metadata(filename);
        let answer = self
            .create_with(&[("upload-length", &length), ("upload-metadata", &metadata)])
            .await;
        location(&answer)
    }

    /// Creates a partial upload of `length` bytes; its URL.
    pub async fn create_partial(&self, length: u64) -> String {
        let length = length.to_string();
        let answer = self
            .create_with(&[("upload-length", &length), ("upload-concat", "partial")])
            .await;
        location(&answer)
    }

    /// PATCHes `body` at `offset`.
    pub async fn patch(&self, url: &str, offset: u64, body: &[u8]) -> Answer {
        self.patch_with(url, offset, body, &[]).await
    }

    /// PATCHes `body` at `offset` with more headers.
    pub async fn patch_with(
        &self,
        url: &str,
        offset: u64,
        body: &[u8],
        extra: &[(&str, &str)],
    ) -> Answer {
        let offset = offset.to_string();
        let mut headers = vec![
            ("upload-offset", offset.as_str()),
            ("content-type", OFFSET_OCTET_STREAM),
        ];
        headers.extend_from_slice(extra);
        self.request(Method::PATCH, url, &headers, body.to_vec())
            .await
    }

    /// Sends `data` in PATCHes of `chunk` bytes from 0, each answered 204.
    pub async fn send_all(&self, url: &str, data: &[u8], chunk: usize) {
        let mut offset = 0u64;
        for piece in data.chunks(chunk) {
            let answer = self.patch(url, offset, piece).await;
            answer.expect(204);
            offset += piece.len() as u64;
            assert_eq!(offset_of(&answer), offset);
        }
    }

    pub async fn head(&self, url: &str) -> Answer {
        self.request(Method::HEAD, url, &[], Vec::new()).await
    }

    pub async fn delete(&self, url: &str) -> Answer {
        self.request(Method::DELETE, url, &[], Vec::new()).await
    }
}

/// `filename <base64>`, an `Upload-Metadata` value.
pub fn metadata(filename: &str) -> String {
    format!("filename {}", STANDARD.encode(filename))
}

/// The `Location` of a 201.
#[track_caller]
pub fn location(answer: &Answer) -> String {
    answer.expect(201);
    answer.header("location").expect("a 201 gives a Location")
}

/// The `Upload-Offset` of an answer.
#[track_caller]
pub fn offset_of(answer: &Answer) -> u64 {
    answer
        .header("upload-offset")
        .expect("the answer gives Upload-Offset")
        .parse()
        .expect("Upload-Offset is a number")
}

/// `<algorithm> <base64 digest>` of `body`, an `Upload-Checksum` value, in
/// the service's formats (crc32: the base64 of its decimal text).
pub fn checksum(algorithm: &str, body: &[u8]) -> String {
    use md5::Digest as _;
    let kind = match algorithm {
        "sha1" => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        "sha256" => &ring::digest::SHA256,
        "sha384" => &ring::digest::SHA384,
        "sha512" => &ring::digest::SHA512,
        "md5" => {
            let digest = md5::Md5::digest(body);
            return format!("md5 {}", STANDARD.encode(digest.as_slice()));
        }
        "crc32" => {
            let crc = crc32fast::hash(body).to_string();
            return format!("crc32 {}", STANDARD.encode(crc));
        }
        other => panic!("no {other} here"),
    };
    let digest = ring::digest::digest(kind, body);
    format!("{algorithm} {}", STANDARD.encode(digest.as_ref()))
}

/// Registers `url` as `filename` of the default dataset, declaring `size`.
pub async fn register(api: &Api, url: &str, filename: &str, size: u64) -> Answer {
    let size = size.to_string();
    api.urlencoded(&[("tus_url", url), ("filename", filename), ("size", &size)])
        .await
}
