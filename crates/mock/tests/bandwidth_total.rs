//! The cap on the whole server (`MockConfig::bandwidth_total`): connections
//! sending at once share one rate, as on a real link, instead of each getting
//! its own. Lower bounds only (a capped server is never faster than its rate),
//! so the tests hold on any machine.

mod support;

use std::time::{Duration, Instant};

use idb_mock::{BANDWIDTH_BURST, MockError, MockServer};
use support::{Api, assert_verified, config, data, start};

/// Two fresh connections sending B bytes each at once to a server capped at R
/// bytes/s in total both finish no sooner than 2B/R (less what the shared
/// bucket saved up while idle, one burst): with a cap per connection only, they
/// would finish in B/R.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_sending_at_once_share_the_total_rate() {
    let rate = 256 * 1024;
    let server = start(config().bandwidth_total(Some(rate))).await;
    let api = Api::new(&server);
    let len = 128 * 1024;
    let (a, b) = (data(len, 31), data(len, 32));
    api.setup("a.bin", len as u64).await.expect(200);
    api.setup("b.bin", len as u64).await.expect(200);

    // Fresh clients, so fresh connections.
    let (first, second) = (Api::new(&server), Api::new(&server));
    let t = Instant::now();
    let (answer_a, answer_b) = tokio::join!(
        first.transfer("a.bin", 0, &a),
        second.transfer("b.bin", 0, &b)
    );
    let took = t.elapsed();
    answer_a.expect(200);
    answer_b.expect(200);

    let least = Duration::from_secs_f64(2.0 * len as f64 / rate as f64) - BANDWIDTH_BURST;
    assert!(
        took >= least,
        "2 x {len} bytes took {took:?}, less than {least:?}"
    );
    for (name, sent) in [("a.bin", &a), ("b.bin", &b)] {
        let answer = api.verify(name).await;
        assert_verified(&server, name, &answer, sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_total_bandwidth_of_zero_is_refused_at_start() {
    let result = MockServer::start(config().bandwidth_total(Some(0))).await;
    assert!(matches!(result, Err(MockError::ZeroBandwidth)));
}
