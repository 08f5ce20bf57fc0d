//! The loopback-only admin route, `POST /admin/tokens`: adds a token to a
//! dataset of a running server, as [`crate::MockServer::add_token`] does in
//! process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use idb_wire::parse_urlencoded;

use crate::app::App;
use crate::body::drain;
use crate::error::MockError;
use crate::reply::Reply;

/// The path of the admin route that adds a token to a running server (loopback
/// peers only; see [`crate::MockServer::add_token`]).
pub const ADMIN_TOKENS_PATH: &str = "/admin/tokens";

/// The largest admin request body read; larger ones get 413.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// The address a connection comes from, for the admin route.
#[derive(Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// Whether the admin route answers this peer: loopback only (127.0.0.0/8, ::1,
/// and 127.0.0.0/8 mapped into IPv6 by a dual-stack listener).
fn admin_allowed(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// `POST /admin/tokens`: adds a token to a dataset of the running server (see
/// [`crate::MockServer::add_token`]). The body is urlencoded or JSON with `dataset`,
/// `token` and optionally `ttl_secs`. Answers 200 `{"dataset", "expires_in"}`
/// (seconds, or null for never; the token is never echoed), 400 for a missing or
/// bad field, 403 to a peer that is not loopback, 404 for an unknown dataset.
pub(crate) async fn admin_tokens(
    State(app): State<Arc<App>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !admin_allowed(peer) {
        drain(body).await;
        return Reply::error(
            403,
            "forbidden",
            "the admin routes answer only connections from this host (loopback)".to_owned(),
        )
        .into_response();
    }
    let bytes = match http_body_util::Limited::new(body, ADMIN_BODY_LIMIT)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Reply::error(
                413,
                "too_large",
                format!("an admin request body is at most {ADMIN_BODY_LIMIT} bytes"),
            )
            .into_response();
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let request = match TokenRequest::parse(content_type, &bytes) {
        Ok(request) => request,
        Err(message) => return Reply::error(400, "bad_request", message).into_response(),
    };
    let ttl = request.ttl_secs.map(Duration::from_secs);
    match app
        .datasets
        .add_token(&request.dataset, &request.token, ttl)
    {
        Ok(()) => Reply {
            status: 200,
            body: serde_json::json!({
                "dataset": request.dataset,
                "expires_in": request.ttl_secs,
            }),
        }
        .into_response(),
        Err(e @ MockError::UnknownDataset { .. }) => {
            Reply::error(404, "unknown_dataset", e.to_string()).into_response()
        }
        Err(e @ MockError::SharedToken { .. }) => {
            Reply::error(409, "token_in_use", e.to_string()).into_response()
        }
        // The token's text is never part of the message.
        Err(e) => Reply::error(400, "bad_token", e.to_string()).into_response(),
    }
}

/// The fields of an admin token request.
struct TokenRequest {
    dataset: String,
    token: String,
    ttl_secs: Option<u64>,
}

impl TokenRequest {
    /// Reads a JSON (`application/json`) or urlencoded body; `Err` says what is
    /// wrong, without quoting the token.
    fn parse(content_type: &str, body: &[u8]) -> Result<Self, String> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        let field = |name: &str, value: Option<String>| {
            value.ok_or_else(|| format!("give the {name} field"))
        };
        let (dataset, token, ttl) = if media.eq_ignore_ascii_case("application/json") {
            let value: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
            let text = |name: &str| match value.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(serde_json::Value::Number(n)) if name == "ttl_secs" => Ok(Some(n.to_string())),
                Some(_) => Err(format!("the {name} field should be a string")),
            };
            (text("dataset")?, text("token")?, text("ttl_secs")?)
        } else if media.eq_ignore_ascii_case("application/x-www-form-urlencoded")
            || media.is_empty()
        {
            let pairs =
                parse_urlencoded(body).map_err(|e| format!("the body is not urlencoded: {e}"))?;
            let text = |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| String::from_utf8(v.to_vec()))
                    .transpose()
                    .map_err(|_| format!("the {name} field is not UTF-8"))
            };
            (text("dataset")?, text("token")?, text("ttl_secs")?)
        } else {
            return Err("send application/x-www-form-urlencoded or application/json".to_owned());
        };
        let ttl_secs = match ttl {
            None => None,
            Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
                "ttl_secs should be a whole number of seconds, like 259200 for 3 days".to_owned()
            })?),
        };
        Ok(Self {
            dataset: field("dataset", dataset)?,
            token: field("token", token)?,
            ttl_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_peers_may_use_the_admin_route() {
        for allowed in [
            "127.0.0.1:5",
            "127.9.8.7:5",
            "[::1]:5",
            "[::ffff:127.0.0.1]:5",
        ] {
            assert!(admin_allowed(allowed.parse().unwrap()), "{allowed}");
        }
        for refused in [
            "192.0.2.2:5",
            "10.0.0.1:5",
            "0.0.0.0:5",
            "[fd00::2]:5",
            "[::ffff:192.0.2.2]:5",
            "[::]:5",
        ] {
            assert!(!admin_allowed(refused.parse().unwrap()), "{refused}");
        }
    }

    #[test]
    fn token_requests_read_both_encodings_and_never_quote_the_token() {
        let form = "application/x-www-form-urlencoded";
        let r = TokenRequest::parse(form, b"dataset=IDB-1&token=t%2B1&ttl_secs=60").unwrap();
        assert_eq!((r.dataset.as_str(), r.token.as_str()), ("IDB-1", "t+1"));
        assert_eq!(r.ttl_secs, Some(60));
        let json = br#"{"dataset":"IDB-1","token":"t1","ttl_secs":"7"}"#;
        let r = TokenRequest::parse("application/json; charset=utf-8", json).unwrap();
        assert_eq!(r.ttl_secs, Some(7));
        let bad = [
            (form, &b"dataset=IDB-1&token=secret-Q&ttl_secs=-1"[..]),
            (form, b"dataset=IDB-1"),
            ("application/json", br#"{"dataset":"IDB-1","token":5}"#),
            (
                "application/json",
                br#"{"dataset":"IDB-1","token":"secret-Q","ttl_secs":1.5}"#,
            ),
            ("text/plain", b"dataset=IDB-1&token=secret-Q"),
        ];
        for (content_type, body) in bad {
            let Err(message) = TokenRequest::parse(content_type, body) else {
                panic!("accepted {content_type} {body:?}");
            };
            assert!(!message.contains("secret-Q"), "{message}");
        }
    }
}
