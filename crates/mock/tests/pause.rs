//! Test controls that let a test act at a known moment without sleeping:
//! `pause` holds datafile requests as they arrive until `resume` (or shutdown),
//! and `wait_for_requests` resolves once requests have arrived, held ones too.
//! That something is still blocked is shown with `now_or_never`, never a sleep.

mod support;

use std::pin::pin;

use futures_util::FutureExt;
use idb_mock::{ADMIN_TOKENS_PATH, FaultConfig, FaultKind};
use reqwest::header::CONTENT_TYPE;
use support::{Api, DS, HANG, client_with_timeout, config, data, start};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_holds_a_setup_until_resume() {
    let server = start(config()).await;
    server.pause();
    // Its token is not valid yet: it becomes valid while the setup is held,
    // which is checked only after the hold (a token given at a known moment).
    let late = Api::for_dataset(&server, DS, "tok-late");
    let mut setup = tokio::spawn({
        let late = late.clone();
        async move { late.setup("p.bin", 10).await }
    });
    timeout(HANG, server.wait_for_requests(1))
        .await
        .expect("the setup arrives");
    // It arrived and is held: no answer yet, none counted.
    assert!((&mut setup).now_or_never().is_none());
    assert_eq!(server.stats().requests, 0);
    server.add_token(DS, "tok-late", None).unwrap();

    server.resume();
    let answer = timeout(HANG, setup)
        .await
        .expect("the setup is answered after resume")
        .unwrap();
    answer.expect(200);
    assert_eq!(server.stats().requests, 1);
    // Resumed: requests go straight through again.
    late.transfer("p.bin", 0, &data(10, 1)).await.expect(200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_is_held_before_its_body_is_read_and_its_fault_drawn() {
    let server = start(config().faults(FaultConfig::new(0.0, [FaultKind::ServerError]))).await;
    let api = Api::new(&server);
    api.setup("b.bin", 100).await.expect(200);
    server.pause();
    let transfer = tokio::spawn({
        let api = api.clone();
        async move { api.transfer("b.bin", 0, &data(100, 2)).await }
    });
    timeout(HANG, server.wait_for_requests(2))
        .await
        .expect("the transfer arrives");
    assert_eq!(server.stats().bytes_received, 0, "the body was read");
    // Faults are drawn after the hold: this one gets the rate set now.
    server.set_fault_rate(1.0).unwrap();
    server.resume();
    let answer = timeout(HANG, transfer).await.expect("answered").unwrap();
    answer.expect(500);
    let stats = server.stats();
    assert_eq!(stats.faults.server_error, 1);
    assert_eq!((stats.bytes_received, stats.chunks_accepted), (100, 0));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_requests_counts_arrivals_including_held_ones_and_not_the_admin_route() {
    let server = start(config()).await;
    let api = Api::new(&server);
    server
        .wait_for_requests(0)
        .now_or_never()
        .expect("zero requests are there already");
    {
        let mut first = pin!(server.wait_for_requests(1));
        assert!(first.as_mut().now_or_never().is_none());
        api.setup("a.bin", 4).await.expect(200);
        first
            .now_or_never()
            .expect("the answered setup has arrived");
    }

    server.pause();
    // The admin route is neither held nor counted.
    let admin = timeout(
        HANG,
        client_with_timeout(HANG)
            .post(format!("{}{ADMIN_TOKENS_PATH}", server.url()))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!("dataset={DS}&token=tok-paused"))
            .send(),
    )
    .await
    .expect("a paused server still answers the admin route")
    .unwrap();
    assert_eq!(admin.status().as_u16(), 200);
    assert!(server.wait_for_requests(2).now_or_never().is_none());

    let mut held = tokio::spawn({
        let api = api.clone();
        async move { api.setup("b.bin", 4).await }
    });
    {
        // A waiter already pending is woken by the arrival, while the request is held.
        let second = pin!(server.wait_for_requests(2));
        timeout(HANG, second).await.expect("the held setup arrived");
    }
    assert!((&mut held).now_or_never().is_none());
    assert_eq!(server.stats().requests, 1, "only the first was answered");
    assert!(server.wait_for_requests(3).now_or_never().is_none());
    server.resume();
    timeout(HANG, held)
        .await
        .expect("answered")
        .unwrap()
        .expect(200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_paused_lets_held_requests_go_and_finishes() {
    let server = start(config()).await;
    let api = Api::new(&server);
    server.pause();
    let held = tokio::spawn({
        let api = api.clone();
        async move { api.setup("s.bin", 4).await }
    });
    timeout(HANG, server.wait_for_requests(1))
        .await
        .expect("the setup arrives");
    timeout(HANG, server.shutdown())
        .await
        .expect("shutdown does not wait for a resume");
    // Let go by the shutdown, the request was answered as usual.
    let answer = timeout(HANG, held).await.expect("answered").unwrap();
    answer.expect(200);
}
