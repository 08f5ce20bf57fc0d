//! Limits against slow and many clients: a connection that sends its headers
//! too slowly is closed after the header read timeout, a request body that
//! stops moving is cut after the body idle timeout, and beyond the connection
//! limit a new connection waits until one ends; meanwhile normal requests are
//! answered. Zero limits are refused at start.

mod support;

use std::time::Duration;

use idb_mock::{MockError, MockServer};
use support::{AUTH, Api, DS, HANG, URLENCODED, config, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections that send half a header and then nothing.
const SLOW: usize = 200;

/// Opens a connection and sends the first half of a request's headers.
async fn half_a_header(server: &MockServer) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    let head = format!("POST /api/dataset/{DS}/datafile HTTP/1.1\r\nHost: mock\r\n");
    stream.write_all(head.as_bytes()).await.expect("send");
    stream
}

/// Reads until the server ends the connection (at most [`HANG`]); returns what
/// it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(HANG, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_closed_after_the_header_timeout_while_others_are_answered() {
    let server = start(config().header_read_timeout(Duration::from_secs(2))).await;
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        slow.push(half_a_header(&server).await);
    }
    // The slow ones hold no one up.
    Api::new(&server).setup("normal.bin", 1).await.expect(200);
    for stream in &mut slow {
        let received = until_closed(stream).await;
        // Closed without an answer (hyper writes none on a header timeout).
        assert!(
            received.is_empty(),
            "{}",
            String::from_utf8_lossy(&received)
        );
    }
    assert_eq!(server.stats().requests_arrived, 1);
    server.shutdown().await;
}

/// Regression: `--header-timeout 18446744073709551615` made hyper's timer
/// overflow, and every connection panicked unanswered. A huge limit means
/// never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_limits_mean_never() {
    let server = start(
        config()
            .header_read_timeout(Duration::from_secs(u64::MAX))
            .body_idle_timeout(Duration::MAX),
    )
    .await;
    Api::new(&server).setup("huge.bin", 1).await.expect(200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_moving_is_cut_after_the_idle_timeout() {
    let server = start(config().body_idle_timeout(Duration::from_millis(500))).await;
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    let head = format!(
        "POST /api/dataset/{DS}/datafile HTTP/1.1\r\nHost: mock\r\nAuthorization: {AUTH}\r\n\
         Content-Type: {URLENCODED}\r\nContent-Length: 1000\r\n\r\nphase=setup&"
    );
    stream.write_all(head.as_bytes()).await.expect("send");
    let received = until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    // The server goes on.
    Api::new(&server).setup("after.bin", 1).await.expect(200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_limit_a_connection_waits_for_a_slot() {
    let server = start(config().max_connections(2)).await;
    let first = half_a_header(&server).await;
    let second = half_a_header(&server).await;
    support::until("both connections are served", || {
        server.stats().connections_open == 2
    })
    .await;

    let api = Api::new(&server);
    let third = tokio::spawn(async move { api.setup("third.bin", 1).await.status });
    // A bounded look for what must not happen (an answer while both slots are
    // taken), not a wait for something to happen: a server without the limit
    // answers in milliseconds and fails this.
    let mut third = third;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "the third connection was served beyond the limit"
    );
    assert_eq!(server.stats().requests_arrived, 0);

    // One ends: the waiting connection is taken and answered.
    drop(first);
    let status = tokio::time::timeout(HANG, third)
        .await
        .expect("the third connection is served once a slot frees")
        .expect("the request task");
    assert_eq!(status, 200);
    // Gone before the shutdown, which would wait for its headers.
    drop(second);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_limits_are_refused_at_start() {
    let configs = [
        config().header_read_timeout(Duration::ZERO),
        config().body_idle_timeout(Duration::ZERO),
        config().max_connections(0),
    ];
    for config in configs {
        let result = MockServer::start(config).await;
        assert!(
            matches!(result, Err(MockError::ZeroLimit { .. })),
            "{:?}",
            result.err()
        );
    }
}
