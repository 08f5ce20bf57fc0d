//! The tus request headers, parsed: what each route reads before it acts.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// `Tus-Resumable`, sent with every request but OPTIONS.
pub(crate) const TUS_RESUMABLE: &str = "tus-resumable";
pub(crate) const TUS_VERSION_HEADER: &str = "tus-version";
pub(crate) const UPLOAD_LENGTH: &str = "upload-length";
pub(crate) const UPLOAD_DEFER_LENGTH: &str = "upload-defer-length";
pub(crate) const UPLOAD_OFFSET: &str = "upload-offset";
pub(crate) const UPLOAD_METADATA: &str = "upload-metadata";
pub(crate) const UPLOAD_CONCAT: &str = "upload-concat";
pub(crate) const UPLOAD_CHECKSUM: &str = "upload-checksum";
pub(crate) const UPLOAD_EXPIRES: &str = "upload-expires";
/// The content type of every PATCH body.
pub(crate) const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// A header as text (`None` if missing or not text).
pub(crate) fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A header that must be a non-negative integer: `Ok(None)` if missing,
/// `Err(())` if present but not one.
pub(crate) fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ()> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => {
            let t = v.to_str().map_err(|_| ())?.trim();
            // Digits only: no sign, no spaces inside.
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            t.parse().map(Some).map_err(|_| ())
        }
    }
}

/// The `Upload-Metadata` pairs: `key base64,key base64` (a key may come
/// without a value). `None` when it breaks that form.
pub(crate) fn metadata(value: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let mut pairs = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (key, encoded) = item.split_once(' ').unwrap_or((item, ""));
        if key.is_empty() {
            return None;
        }
        let value = STANDARD.decode(encoded.trim()).ok()?;
        pairs.push((key.to_owned(), value));
    }
    Some(pairs)
}

/// What `Upload-Concat` asks for on creation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ConcatRequest {
    /// `partial`: an upload to be joined later.
    Partial,
    /// `final;<url> <url> ...`: join these uploads, in order.
    Final(Vec<String>),
}

/// Parses `Upload-Concat`; `None` when it is neither form.
pub(crate) fn concat(value: &str) -> Option<ConcatRequest> {
    let value = value.trim();
    if value == "partial" {
        return Some(ConcatRequest::Partial);
    }
    let urls = value.strip_prefix("final;")?;
    let urls: Vec<String> = urls.split_whitespace().map(str::to_owned).collect();
    (!urls.is_empty()).then_some(ConcatRequest::Final(urls))
}

/// The upload id at the end of a URL or path `.../files/<id>` (a trailing
/// slash, query or fragment ignored); `None` when it is not such a URL.
pub(crate) fn upload_id(url: &str) -> Option<&str> {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let (_, id) = url.trim_end_matches('/').rsplit_once("/files/")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs_are_decoded() {
        let pairs = metadata("filename ZGF0YS5iaW4=,is_confidential,filetype dGV4dA==").unwrap();
        assert_eq!(pairs[0], ("filename".to_owned(), b"data.bin".to_vec()));
        assert_eq!(pairs[1], ("is_confidential".to_owned(), Vec::new()));
        assert_eq!(pairs[2].1, b"text");
        assert!(metadata("filename not*base64").is_none());
    }

    #[test]
    fn concat_and_ids_are_read() {
        assert_eq!(concat("partial"), Some(ConcatRequest::Partial));
        assert_eq!(
            concat("final;/files/a http://h/files/b"),
            Some(ConcatRequest::Final(vec![
                "/files/a".into(),
                "http://h/files/b".into()
            ]))
        );
        assert_eq!(concat("final;"), None);
        assert_eq!(upload_id("http://h:1/files/abc"), Some("abc"));
        assert_eq!(upload_id("/files/abc/"), Some("abc"));
        assert_eq!(upload_id("http://h/other/abc"), None);
    }
}
