//! Tokens of a running server: `add_token` works at once and for its dataset only,
//! each token has its own expiry, `expire_tokens` ends the tokens known so far and
//! `expire_token` one token, and the standalone server's `POST /admin/tokens` adds
//! tokens for loopback peers only, never echoing the token.

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use idb_mock::{ADMIN_TOKENS_PATH, MockConfig, MockError, MockServer};
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use support::{Answer, Api, DS, HANG, TOKEN, client_with_timeout, config, start};

const DS2: &str = "IDB-2";
const TOKEN2: &str = "tok-2";

fn two_datasets() -> MockConfig {
    config().dataset(DS2, TOKEN2)
}

/// The status of a setup on `dataset` with `token`.
async fn setup_status(server: &MockServer, dataset: &str, token: &str) -> u16 {
    Api::for_dataset(server, dataset, token)
        .setup("t.bin", 1)
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_token_works_at_once_and_for_its_dataset_only() {
    let server = start(two_datasets()).await;
    assert_eq!(setup_status(&server, DS, "tok-new").await, 401);
    server.add_token(DS, "tok-new", None).unwrap();
    assert_eq!(setup_status(&server, DS, "tok-new").await, 200);
    assert_eq!(setup_status(&server, DS2, "tok-new").await, 401);
    // The configured tokens still work.
    assert_eq!(setup_status(&server, DS, TOKEN).await, 200);
    assert_eq!(setup_status(&server, DS2, TOKEN2).await, 200);

    assert!(matches!(
        server.add_token("IDB-404", "tok-x", None),
        Err(MockError::UnknownDataset { dataset }) if dataset == "IDB-404"
    ));
    assert!(matches!(
        server.add_token(DS, "has a space", None),
        Err(MockError::BadToken { dataset, .. }) if dataset == DS
    ));
    // A token opens one dataset only: the other dataset's token is refused,
    // naming both, and still opens its own dataset only.
    match server.add_token(DS, TOKEN2, None) {
        Err(MockError::SharedToken { first, second }) => {
            assert_eq!((first.as_str(), second.as_str()), (DS2, DS));
        }
        other => panic!("expected SharedToken, got {other:?}"),
    }
    assert_eq!(setup_status(&server, DS, TOKEN2).await, 401);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_given_twice_or_a_token_given_to_two_datasets_is_refused_at_start() {
    let twice = MockServer::start(config().dataset(DS, "tok-other")).await;
    match twice {
        Err(e @ MockError::DuplicateDataset { .. }) => {
            assert!(e.to_string().contains(DS), "{e}");
        }
        other => panic!("expected DuplicateDataset, got {:?}", other.err()),
    }
    let published_too = MockServer::start(config().published_dataset(DS, "tok-other")).await;
    assert!(matches!(
        published_too,
        Err(MockError::DuplicateDataset { key }) if key == DS
    ));
    let shared = MockServer::start(config().dataset(DS2, TOKEN)).await;
    match shared {
        Err(e @ MockError::SharedToken { .. }) => {
            let text = e.to_string();
            assert!(text.contains(DS) && text.contains(DS2), "{text}");
            assert!(!text.contains(TOKEN), "the token leaked: {text}");
        }
        other => panic!("expected SharedToken, got {:?}", other.err()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_or_token_at_start_is_said_once() {
    let errors = [
        MockServer::start(MockConfig::new().dataset("", "tok"))
            .await
            .err(),
        MockServer::start(MockConfig::new().dataset("IDB-1", "a b"))
            .await
            .err(),
    ];
    for error in errors {
        let error = error.expect("the start is refused");
        // The whole chain, as the CLI prints it.
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        let reason = match &error {
            MockError::BadDatasetKey { reason, .. } | MockError::BadToken { reason, .. } => *reason,
            other => panic!("expected a bad key or token, got {other:?}"),
        };
        assert_eq!(
            text.matches(reason).count(),
            1,
            "said more than once: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_has_its_own_expiry() {
    // The configured token is born expired, as after three days.
    let server = start(config().token_ttl(Duration::ZERO)).await;
    assert_eq!(setup_status(&server, DS, TOKEN).await, 401);
    server
        .add_token(DS, "tok-day", Some(Duration::from_secs(86_400)))
        .unwrap();
    server
        .add_token(DS, "tok-gone", Some(Duration::ZERO))
        .unwrap();
    assert_eq!(setup_status(&server, DS, "tok-day").await, 200);
    assert_eq!(setup_status(&server, DS, "tok-gone").await, 401);
    assert_eq!(setup_status(&server, DS, TOKEN).await, 401);
    // Giving an expired token again renews it.
    server.add_token(DS, TOKEN, None).unwrap();
    assert_eq!(setup_status(&server, DS, TOKEN).await, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_tokens_ends_the_tokens_known_so_far_only() {
    let server = start(two_datasets()).await;
    server.add_token(DS, "tok-added", None).unwrap();
    server.expire_tokens();
    for (dataset, token) in [(DS, TOKEN), (DS2, TOKEN2), (DS, "tok-added")] {
        assert_eq!(setup_status(&server, dataset, token).await, 401, "{token}");
    }
    server.add_token(DS, "tok-fresh", None).unwrap();
    assert_eq!(setup_status(&server, DS, "tok-fresh").await, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_token_ends_that_token_only() {
    let server = start(two_datasets()).await;
    server.add_token(DS, "tok-new", None).unwrap();
    assert!(server.expire_token(TOKEN));
    assert!(!server.expire_token("tok-never-given"));
    assert_eq!(setup_status(&server, DS, TOKEN).await, 401);
    assert_eq!(setup_status(&server, DS, "tok-new").await, 200);
    assert_eq!(setup_status(&server, DS2, TOKEN2).await, 200);
    server.shutdown().await;
}

/// POSTs `body` with `content_type` to the admin route of `base` (a URL).
async fn admin(base: &str, content_type: &str, body: String) -> Answer {
    let response = client_with_timeout(HANG)
        .post(format!("{base}{ADMIN_TOKENS_PATH}"))
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .expect("the admin route answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("read the answer").to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_route_adds_tokens_for_loopback_peers_without_echoing_them() {
    let server = start(two_datasets()).await;
    let url = server.url();
    let answer = admin(
        &url,
        FORM,
        format!("dataset={DS}&token=tok-admin-Zq7&ttl_secs=3600"),
    )
    .await;
    answer.expect(200);
    assert_eq!(answer.json(), json!({ "dataset": DS, "expires_in": 3600 }));
    assert!(!answer.text().contains("tok-admin-Zq7"));
    assert_eq!(setup_status(&server, DS, "tok-admin-Zq7").await, 200);
    assert_eq!(setup_status(&server, DS2, "tok-admin-Zq7").await, 401);

    let body = json!({ "dataset": DS2, "token": "tok-json-Zq8" }).to_string();
    let answer = admin(&url, "application/json", body).await;
    answer.expect(200);
    assert_eq!(
        answer.json(),
        json!({ "dataset": DS2, "expires_in": Value::Null })
    );
    assert_eq!(setup_status(&server, DS2, "tok-json-Zq8").await, 200);

    let body = json!({ "dataset": DS, "token": "tok-zero", "ttl_secs": 0 }).to_string();
    admin(&url, "application/json", body).await.expect(200);
    assert_eq!(setup_status(&server, DS, "tok-zero").await, 401);

    // Refusals, none of which quotes the token.
    let answer = admin(&url, FORM, "dataset=IDB-404&token=tok-Zq9".into()).await;
    answer.expect(404);
    assert_eq!(answer.json()["error"], "unknown_dataset");
    assert!(!answer.text().contains("tok-Zq9"));
    let answer = admin(&url, FORM, format!("dataset={DS}&token=bad%22tok-Zq9")).await;
    answer.expect(400);
    assert_eq!(answer.json()["error"], "bad_token");
    assert!(!answer.text().contains("tok-Zq9"));
    for body in [
        format!("dataset={DS}"),
        "token=tok-Zq9".to_owned(),
        format!("dataset={DS}&token=tok-Zq9&ttl_secs=soon"),
    ] {
        let answer = admin(&url, FORM, body.clone()).await;
        answer.expect(400);
        assert!(
            !answer.text().contains("tok-Zq9"),
            "{body}: {}",
            answer.text()
        );
    }
    admin(&url, "application/json", "{not json".into())
        .await
        .expect(400);
    // The admin route is not a datafile request: not counted.
    assert_eq!(server.stats().requests, 4);
    server.shutdown().await;
}

/// An address of this host that is not loopback, if it has one (the local end
/// of a UDP socket "connected" to a documentation address: nothing is sent).
fn non_loopback_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_route_refuses_a_peer_that_is_not_loopback() {
    let Some(ip) = non_loopback_address() else {
        // The rule itself is unit-tested in admin.rs; this host has no other
        // address to come from.
        eprintln!("skipped: this host has no address other than loopback");
        return;
    };
    let server = start(config().listen(SocketAddr::from(([0, 0, 0, 0], 0)))).await;
    let url = format!("http://{}", SocketAddr::new(ip, server.addr().port()));
    let answer = admin(&url, FORM, format!("dataset={DS}&token=tok-remote")).await;
    answer.expect(403);
    assert_eq!(answer.json()["error"], "forbidden");
    assert_eq!(setup_status(&server, DS, "tok-remote").await, 401);
    // The same server answers loopback.
    let local = format!("http://127.0.0.1:{}", server.addr().port());
    admin(&local, FORM, format!("dataset={DS}&token=tok-local"))
        .await
        .expect(200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_example_adds_a_token_read_from_a_file() {
    let found = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: no curl on this host");
        return;
    }
    let server = start(config()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new-token.txt");
    // As a token file usually is: one line.
    std::fs::write(&file, "tok-from-file-Zq1\n").unwrap();
    let url = format!("{}{ADMIN_TOKENS_PATH}", server.url());
    let token_arg = format!("token@{}", file.display());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--fail", "--noproxy", "*", "--max-time", "60"])
            .args(["--data-urlencode", &format!("dataset={DS}")])
            .args(["--data-urlencode", &token_arg])
            .args(["--data-urlencode", "ttl_secs=259200"])
            .arg(&url)
            .output()
            .expect("run curl")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer, json!({ "dataset": DS, "expires_in": 259200 }));
    assert_eq!(setup_status(&server, DS, "tok-from-file-Zq1").await, 200);
    server.shutdown().await;
}
