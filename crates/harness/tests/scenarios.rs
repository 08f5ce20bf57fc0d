//! The harness as a library, in-process, at tiny sizes: behaviour only (every
//! upload verified, the evidence written, every metric there, the plot valid
//! SVG with one series per side), never timings. Every scenario runs through the
//! `idb bench` binary in the root package's tests (`tests/integration/bench.rs`),
//! in-process and against `idb mock-server` as a separate process.

use std::sync::Mutex;
use std::time::Duration;

use idb_harness::{
    BenchConfig, CLIENT_RATIO, COMMAND_FILE, CURL_RATIO, EngineDefaults, FLOOR_RATIO, PLOT_FILE,
    REPORT_FILE, RESULTS_FILE, Role, Scenario, TargetIs, run, table,
};

const MIB: u64 = 1 << 20;

fn tiny(out: &std::path::Path, data: &std::path::Path) -> BenchConfig {
    let mut config = BenchConfig::new(out.to_path_buf());
    config.scenarios = vec![Scenario::Latency];
    config.reps = 1;
    config.size = 2 * MIB + 5;
    config.sample_size = MIB + 12_345;
    config.latencies = vec![Duration::ZERO, Duration::from_millis(3)];
    config.rtt_probes = 3;
    config.data_dir = Some(data.to_path_buf());
    config.command_line = "idb bench --scenario latency --reps 1 (test)".into();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_sweep_verifies_every_upload_and_plots_every_side() {
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let config = tiny(&dir, data.path());
    let lines = Mutex::new(Vec::new());
    let outcome = run(&config, &|line: &str| {
        lines.lock().unwrap().push(line.to_owned())
    })
    .await
    .expect("the harness runs");

    let results = &outcome.results;
    assert_eq!(results.scenarios.len(), 1);
    let latency = &results.scenarios[0];
    assert_eq!(latency.skipped, None);
    let labels: Vec<_> = latency.points.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(labels, ["0 ms", "3 ms"]);
    for point in &latency.points {
        let keys: Vec<_> = point.sides.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["engine", "ceiling", "sample-client"]);
        assert!(point.rtt_ms > 0.0);
        for side in &point.sides {
            assert_eq!(side.reps.len(), 1, "{}", side.key);
            let rep = &side.reps[0];
            assert!(rep.whole_mib_s > 0.0 && rep.wall_s > 0.0, "{rep:?}");
            assert!(rep.sustained_mib_s.is_some_and(|s| s > 0.0), "{rep:?}");
            assert!(rep.request_ms_p50.is_some_and(|v| v >= 0.0), "{rep:?}");
            assert!(rep.request_ms_p99 >= rep.request_ms_p50, "{rep:?}");
            assert!(rep.client_cpu_s_per_gib >= 0.0, "{rep:?}");
            assert!(rep.far_end_cpu_s.is_some_and(|c| c >= 0.0), "{rep:?}");
            assert!(rep.peak_rss_mib.is_some_and(|m| m > 0.0), "{rep:?}");
        }
        // The engine runs with its journal, in a temporary state directory.
        let engine = &point.sides[0];
        assert_eq!(engine.role, Role::Engine);
        assert!(engine.engine.as_ref().is_some_and(|e| e.journal));
        // The sample client runs on the prefix and says so.
        assert_eq!(point.sides[2].bytes, MIB + 12_345);
        assert!(point.sides[2].label.contains("first"));
        let model = point.model.as_ref().expect("a model bound");
        assert!(model.bound_mib_s > 0.0 && model.bandwidth_mib_s > 0.0);
        let ratio_keys: Vec<_> = point.ratios.iter().map(|r| r.key.as_str()).collect();
        for key in ["engine/ceiling", "engine/sample-client", "engine/model"] {
            assert!(ratio_keys.contains(&key), "{ratio_keys:?}");
        }
        assert_eq!(point.cpu_floor_skipped, None);
    }
    // The CPU floor is measured at 0 ms only, on the same file, and its
    // receiver got the file's bytes.
    let floor = latency.points[0]
        .cpu_floor
        .as_ref()
        .expect("a CPU floor at 0 ms");
    assert!(latency.points[1].cpu_floor.is_none());
    assert_eq!(floor.bytes, latency.points[0].sides[1].bytes);
    assert_eq!(floor.reps, 1);
    assert_eq!(floor.blake3.len(), 64);
    assert_eq!(floor.receiver_blake3, floor.blake3);
    for (what, value) in [
        ("sendfile", floor.sendfile_cpu_s_per_gib),
        ("sender blake3", floor.sender_blake3_cpu_s_per_gib),
        ("sender map and unmap", floor.sender_map_cpu_s_per_gib),
        ("recv", floor.recv_cpu_s_per_gib),
        ("receiver blake3", floor.receiver_blake3_cpu_s_per_gib),
        ("floor", floor.floor_cpu_s_per_gib.median),
        ("blake3 alone", floor.blake3_cpu_s_per_gib.median),
        ("wall", floor.wall_s),
    ] {
        assert!(value > 0.0 && value.is_finite(), "{what}: {floor:?}");
    }
    // The client against curl when there is one (its target; the reqwest
    // one request's ratio is shown without one).
    let with_curl = config.curl.is_some();
    let mut targeted = vec![(FLOOR_RATIO, Some(1.15)), (CLIENT_RATIO, None)];
    if with_curl {
        targeted.push((CURL_RATIO, Some(1.10)));
    }
    for (key, target) in targeted {
        let ratio = latency.points[0]
            .ratios
            .iter()
            .find(|r| r.key == key)
            .unwrap_or_else(|| panic!("{key}: {:?}", latency.points[0].ratios));
        assert!(ratio.value > 0.0 && ratio.value.is_finite(), "{ratio:?}");
        assert_eq!(ratio.target, target);
        assert_eq!(ratio.target_is, TargetIs::AtMost);
        assert_eq!(ratio.meets_target, target.map(|t| ratio.value <= t));
        assert!(
            !latency.points[1].ratios.iter().any(|r| r.key == key),
            "{key} at 3 ms"
        );
    }
    let zero = &latency.points[0];
    if with_curl {
        let curl = zero.curl.as_ref().expect("curl is on PATH: a curl side");
        assert_eq!(zero.curl_skipped, None);
        assert_eq!(zero.client_alone_vs_curl, Some(curl.client_alone_vs_curl));
        // Byte-exact: the far end received the file's bytes.
        assert_eq!(curl.bytes, zero.sides[1].bytes);
        assert_eq!(
            (curl.receipt_size, curl.receipt_blake3.as_str()),
            (curl.bytes, floor.blake3.as_str())
        );
        assert_eq!(curl.blake3, floor.blake3);
        assert_eq!(curl.reps, 1);
        assert!(curl.version.starts_with("curl "), "{curl:?}");
        for (what, value) in [
            ("curl", curl.curl_cpu_s_per_gib.median),
            ("blake3", curl.blake3_cpu_s_per_gib.median),
            ("engine", curl.engine_client_cpu_s_per_gib),
            ("ratio", curl.client_alone_vs_curl),
            ("wall", curl.wall_s.median),
            ("throughput", curl.whole_mib_s),
        ] {
            assert!(value > 0.0 && value.is_finite(), "{what}: {curl:?}");
        }
        let expected = curl.engine_client_cpu_s_per_gib
            / (curl.curl_cpu_s_per_gib.median + curl.blake3_cpu_s_per_gib.median);
        assert!(
            (curl.client_alone_vs_curl - expected).abs() < 1e-12,
            "{curl:?}"
        );
        // The token went through a header file, never an argument.
        assert!(
            curl.args.iter().any(|a| a.starts_with('@')),
            "{:?}",
            curl.args
        );
        assert!(
            !curl.args.iter().any(|a| a.contains("token")),
            "{:?}",
            curl.args
        );
    } else {
        assert!(zero.curl.is_none() && zero.client_alone_vs_curl.is_none());
        assert!(
            zero.curl_skipped
                .as_deref()
                .is_some_and(|r| r.contains("curl"))
        );
    }
    let three = &latency.points[1];
    assert!(three.curl.is_none() && three.curl_skipped.is_none());
    assert!(three.client_alone_vs_curl.is_none());
    let table = table(results);
    assert!(table.contains("CPU floor ("), "{table}");
    assert!(table.contains(&format!("{FLOOR_RATIO} ")), "{table}");
    let curl_line = if with_curl {
        "curl in one request ("
    } else {
        "curl side skipped: "
    };
    assert!(table.contains(curl_line), "{table}");
    // No state directory is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("idb-bench-state-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The evidence, side by side.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(RESULTS_FILE)).unwrap()).unwrap();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["far_end"]["kind"], "in-process");
    let report = std::fs::read_to_string(dir.join(REPORT_FILE)).unwrap();
    assert_eq!(report, outcome.report);
    assert!(report.contains(PLOT_FILE), "{report}");
    assert!(report.contains("CPU floor ("), "{report}");
    assert!(report.contains("reqwest"), "{report}");
    assert!(report.contains(curl_line), "{report}");
    let floor = &json["scenarios"][0]["points"][0]["cpu_floor"];
    assert_eq!(floor["receiver_blake3"], floor["blake3"]);
    assert!(floor["floor_cpu_s_per_gib"]["median"].as_f64().unwrap() > 0.0);
    let command = std::fs::read_to_string(dir.join(COMMAND_FILE)).unwrap();
    assert!(command.starts_with("idb bench --scenario latency --reps 1 (test)"));

    // The plot: valid SVG, one series (a line in the legend, named) per side
    // and one for the model bound.
    let svg = std::fs::read_to_string(dir.join(PLOT_FILE)).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the plot is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or_default().trim().to_owned())
        .collect();
    let point = &latency.points[0];
    for side in &point.sides {
        assert_eq!(
            texts.iter().filter(|t| **t == side.label).count(),
            1,
            "{}: {texts:?}",
            side.label
        );
    }
    assert!(
        texts.iter().any(|t| t.starts_with("model bound")),
        "{texts:?}"
    );
    let strokes: std::collections::HashSet<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter_map(|n| n.attribute("stroke"))
        .collect();
    assert_eq!(strokes.len(), point.sides.len() + 1, "{strokes:?}");

    // Progress went to the sink; generated data was cleaned up.
    assert!(!lines.lock().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_curl_the_client_is_not_compared_with_curl_and_the_report_says_why() {
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let mut config = tiny(&dir, data.path());
    config.latencies = vec![Duration::ZERO];
    config.curl = None;
    let outcome = run(&config, &|_: &str| {}).await.expect("the harness runs");
    let point = &outcome.results.scenarios[0].points[0];
    // The floor is still measured; only the curl side is missing, with why.
    assert!(point.cpu_floor.is_some());
    assert!(point.curl.is_none() && point.client_alone_vs_curl.is_none());
    let reason = point.curl_skipped.as_deref().expect("a reason");
    assert!(reason.contains("no curl on PATH"), "{reason}");
    assert!(
        !point.ratios.iter().any(|r| r.key == CURL_RATIO),
        "{:?}",
        point.ratios
    );
    let table = table(&outcome.results);
    assert!(
        table.contains(&format!("curl side skipped: {reason}")),
        "{table}"
    );
    assert!(
        outcome
            .report
            .contains(&format!("curl side skipped: {reason}"))
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(RESULTS_FILE)).unwrap()).unwrap();
    let point = &json["scenarios"][0]["points"][0];
    assert!(
        point
            .get("client_alone_vs_curl")
            .is_some_and(|v| v.is_null()),
        "{point}"
    );
    assert_eq!(point["curl_skipped"], reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocols_send_one_file_by_each_protocol_to_one_mock_and_join_partials() {
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let mut config = tiny(&dir, data.path());
    config.scenarios = vec![Scenario::Protocols];
    // Past the engine's smallest file for concatenation (two 5 MiB parts).
    config.size = 12 * MIB + 7;
    config.latency = Duration::from_millis(3);
    // Chunks of one part at most, so the file goes as three partials.
    config.engine_defaults = EngineDefaults::new(|c| c.max_chunk_size = 5 * MIB);
    // Each connection capped (the whole file in well under a second).
    config.protocols_bandwidth = Some(256 * MIB);
    let outcome = run(&config, &|_: &str| {}).await.expect("the harness runs");

    let scenario = &outcome.results.scenarios[0];
    assert_eq!(
        (scenario.name.as_str(), &scenario.skipped),
        ("protocols", &None)
    );
    let [point] = &scenario.points[..] else {
        panic!("one point: {:?}", scenario.points)
    };
    assert!(point.skipped_sides.is_empty(), "{:?}", point.skipped_sides);
    let keys: Vec<_> = point.sides.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["chunked", "tus-in-order", "tus-concat", "ceiling"]);
    // One mock for every side, serving both protocols and keeping the bytes.
    let [mock] = &point.mocks[..] else {
        panic!("one mock: {:?}", point.mocks)
    };
    assert_eq!(mock.tus_profile.as_deref(), Some("s3"));
    assert_eq!(mock.storage.as_deref(), Some("temporary directory"));
    assert_eq!(mock.bandwidth, Some(256 * MIB));
    assert_eq!(point.label, "256.0 MiB/s per connection, 3 ms");
    for (side, protocol, concat) in [
        (&point.sides[0], Some("chunked"), true),
        (&point.sides[1], Some("tus"), false),
        (&point.sides[2], Some("tus"), true),
        (&point.sides[3], None, true),
    ] {
        assert_eq!(side.bytes, 12 * MIB + 7, "{}", side.key);
        let rep = &side.reps[0];
        assert!(rep.whole_mib_s > 0.0 && rep.wall_s > 0.0, "{rep:?}");
        assert!(rep.far_end_cpu_s.is_some_and(|c| c >= 0.0), "{rep:?}");
        assert_eq!(rep.protocol.as_deref(), protocol, "{}", side.key);
        if let Some(engine) = &side.engine {
            assert_eq!(engine.tus_concat, concat, "{}", side.key);
        }
    }
    assert_eq!(point.sides[0].engine.as_ref().unwrap().protocol, "chunked");
    assert_eq!(point.sides[2].engine.as_ref().unwrap().protocol, "tus");
    // Protocol 1 makes no tus upload, tus in order one, concatenation its
    // three partials and the joined one.
    let uploads: Vec<_> = point.sides.iter().map(|s| s.reps[0].tus_uploads).collect();
    assert_eq!(uploads, [Some(0), Some(1), Some(4), Some(0)]);
    let ratios: Vec<_> = point.ratios.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        ratios,
        [
            "tus-concat/chunked",
            "tus-in-order/chunked",
            "tus-concat/ceiling"
        ]
    );
    // The 3x target is stated at 50 ms only.
    assert!(point.ratios.iter().all(|r| r.target.is_none()));
    assert!(
        scenario.notes.iter().any(|n| n.contains("partial uploads")),
        "{:?}",
        scenario.notes
    );
    let table = table(&outcome.results);
    assert!(table.contains("tus-concat/chunked "), "{table}");
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}

#[test]
fn scenario_names() {
    assert_eq!(Scenario::select("all").unwrap(), Scenario::ALL);
    assert_eq!(
        Scenario::select("many-files, latency,many-files").unwrap(),
        [Scenario::ManyFiles, Scenario::Latency]
    );
    assert!(Scenario::select("fast").is_err());
    assert!(Scenario::select(",").is_err());
}
