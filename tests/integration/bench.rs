//! `idb bench` at tiny sizes: every scenario against the in-process mock, and
//! against `idb mock-server --sink` as a separate process (the `--server`
//! path). Behaviour only, never timings: one well-formed JSON document on
//! stdout with every metric present and non-negative, every upload checked by
//! the harness against the server's receipts (a mismatch fails the run), and the
//! plot a valid SVG with one series per side.

use serde_json::Value;

use crate::util::{Dir, ServerProcess};

/// Tiny sizes for every scenario: a few seconds in all.
const TINY: &[&str] = &[
    "--reps",
    "1",
    "--size",
    "3MiB",
    "--sample-size",
    "1MiB",
    "--latencies",
    "0,3",
    "--latency-ms",
    "3",
    "--files",
    "4",
    "--file-size",
    "100KiB",
    "--bandwidth",
    "40MiB",
    "--fault-rate",
    "0.2",
    "--fixed-chunks",
    "1MiB,2MiB",
    "--journal-size",
    "3MiB",
    "--small-files",
    "8",
    "--rtt-probes",
    "3",
    "--json",
];

const ALL: [&str; 9] = [
    "latency",
    "many-files",
    "bandwidth",
    "faults",
    "modes",
    "chunks",
    "journal",
    "small-files",
    "protocols",
];

/// What a far end given with `--server` cannot be asked for.
const NEEDS_MOCK_KNOBS: [&str; 3] = ["bandwidth", "faults", "modes"];

/// The metrics of a repetition (and of a summary), each present; numbers
/// non-negative; `far_end` ones null exactly when the far end is remote.
fn check_metrics(what: &str, rep: &Value, summary: &Value, remote: bool) {
    let number = |v: &Value, key: &str| {
        let x = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: {key} is not a number: {v}"));
        assert!(x >= 0.0 && x.is_finite(), "{what}: {key} = {x}");
        x
    };
    for key in [
        "wall_s",
        "whole_mib_s",
        "sustained_mib_s",
        "request_ms_p50",
        "request_ms_p99",
        "retries",
        "realigned",
        "calls",
        "client_cpu_s",
        "client_cpu_s_per_gib",
        "peak_rss_mib",
    ] {
        number(rep, key);
    }
    assert!(number(rep, "whole_mib_s") > 0.0, "{what}");
    assert!(
        number(rep, "calls") >= 3.0,
        "{what}: setup, transfer, verify"
    );
    for key in ["far_end_cpu_s", "far_end_cpu_s_per_gib"] {
        if remote {
            assert!(rep[key].is_null(), "{what}: {key} remotely: {rep}");
        } else {
            number(rep, key);
        }
    }
    for key in [
        "whole_mib_s",
        "sustained_mib_s",
        "wall_s",
        "client_cpu_s_per_gib",
    ] {
        for stat in ["median", "min", "max"] {
            number(&summary[key], stat);
        }
    }
    for key in [
        "request_ms_p50",
        "request_ms_p99",
        "retries",
        "peak_rss_mib",
    ] {
        number(summary, key);
    }
}

/// The CPU floor of the `latency` scenario: in-process, at its 0 ms point
/// (its parts positive, the receiver's blake3 the file's, both CPU ratios
/// with their at-most targets) and nowhere else; remotely, skipped with the
/// reason.
fn check_cpu_floor(latency: &Value, remote: bool) {
    let points = latency["points"].as_array().unwrap();
    for (i, point) in points.iter().enumerate() {
        let floor = &point["cpu_floor"];
        let ratios: Vec<&Value> = point["ratios"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["key"].as_str().unwrap().starts_with("cpu:"))
            .collect();
        if remote {
            assert!(floor.is_null(), "{floor}");
            let reason = point["cpu_floor_skipped"].as_str().unwrap();
            assert!(reason.contains("--server"), "{reason}");
            assert!(ratios.is_empty(), "{ratios:?}");
            continue;
        }
        assert!(point["cpu_floor_skipped"].is_null(), "{point}");
        if i > 0 {
            assert!(floor.is_null() && ratios.is_empty(), "{}", point["label"]);
            continue;
        }
        assert_eq!(point["latency_ms"], 0.0);
        assert_eq!(floor["blake3"].as_str().unwrap().len(), 64);
        assert_eq!(floor["receiver_blake3"], floor["blake3"], "{floor}");
        for key in [
            "sendfile_cpu_s_per_gib",
            "sender_blake3_cpu_s_per_gib",
            "recv_cpu_s_per_gib",
            "receiver_blake3_cpu_s_per_gib",
            "wall_s",
        ] {
            assert!(floor[key].as_f64().unwrap() > 0.0, "{key}: {floor}");
        }
        for key in ["floor_cpu_s_per_gib", "blake3_cpu_s_per_gib"] {
            for stat in ["median", "min", "max"] {
                assert!(floor[key][stat].as_f64().unwrap() > 0.0, "{key}: {floor}");
            }
        }
        let keys: Vec<&str> = ratios.iter().map(|r| r["key"].as_str().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "cpu:engine+mock/floor",
                "cpu:engine-client/ceiling-client+blake3"
            ]
        );
        for (ratio, target) in ratios.iter().zip([1.15, 1.10]) {
            assert_eq!(ratio["target"], target, "{ratio}");
            assert_eq!(ratio["target_is"], "at-most", "{ratio}");
            let value = ratio["value"].as_f64().unwrap();
            assert_eq!(ratio["meets_target"], value <= target, "{ratio}");
        }
    }
}

/// Checks the document and returns the scenarios that ran (not skipped).
fn check_document(doc: &Value, remote: bool) -> Vec<String> {
    assert_eq!(doc["schema"], 1);
    for key in ["nproc", "kernel", "cpu_model", "hostname"] {
        assert!(!doc["machine"][key].is_null(), "machine.{key}: {doc}");
    }
    assert!(
        doc["command"].as_str().unwrap().contains("bench"),
        "{}",
        doc["command"]
    );
    assert_eq!(
        doc["far_end"]["kind"],
        if remote { "remote" } else { "in-process" }
    );
    let scenarios = doc["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ALL);
    check_cpu_floor(&scenarios[0], remote);
    let mut ran = Vec::new();
    for scenario in scenarios {
        let name = scenario["name"].as_str().unwrap();
        if let Some(reason) = scenario["skipped"].as_str() {
            assert!(scenario["points"].as_array().unwrap().is_empty());
            assert!(reason.contains("--server"), "{name}: {reason}");
            continue;
        }
        ran.push(name.to_owned());
        let points = scenario["points"].as_array().unwrap();
        assert!(!points.is_empty(), "{name}");
        for point in points {
            assert!(point["rtt_ms"].as_f64().unwrap() > 0.0, "{name}");
            let sides = point["sides"].as_array().unwrap();
            assert!(!sides.is_empty(), "{name}");
            for side in sides {
                let what = format!("{name} {} {}", point["label"], side["key"]);
                let reps = side["reps"].as_array().unwrap();
                assert_eq!(reps.len(), 1, "{what}");
                check_metrics(&what, &reps[0], &side["summary"], remote);
            }
            for ratio in point["ratios"].as_array().unwrap() {
                let value = ratio["value"].as_f64().unwrap();
                assert!(value > 0.0 && value.is_finite(), "{name}: {ratio}");
            }
        }
        // Points with the standard sides have the model bound and its ratio.
        if !["journal", "small-files", "protocols"].contains(&name) {
            for point in points {
                let keys: Vec<&str> = point["sides"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["key"].as_str().unwrap())
                    .collect();
                for key in ["engine", "ceiling", "sample-client"] {
                    assert!(keys.contains(&key), "{name}: {keys:?}");
                }
                assert!(point["model"]["bound_mib_s"].as_f64().unwrap() > 0.0);
                let ratios: Vec<&str> = point["ratios"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["key"].as_str().unwrap())
                    .collect();
                for key in ["engine/ceiling", "engine/sample-client", "engine/model"] {
                    assert!(ratios.contains(&key), "{name}: {ratios:?}");
                }
            }
        }
    }
    ran
}

/// The string `field` of every element of the array `values`.
fn each<'a>(values: &'a Value, field: &str) -> Vec<&'a str> {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[field].as_str().unwrap())
        .collect()
}

/// The `protocols` scenario of a document: its one point measured the
/// sides the far end serves, each engine side speaking the protocol its key
/// names (the ceiling protocol 1), and left out exactly the `skipped` ones,
/// each with a reason naming `needs`; the ratios of the sides measured.
fn check_protocols(doc: &Value, skipped: &[&str], needs: &str) {
    let scenario = doc["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "protocols")
        .expect("a protocols scenario");
    assert!(scenario["skipped"].is_null(), "{scenario}");
    let points = scenario["points"].as_array().unwrap();
    assert_eq!(points.len(), 1, "{scenario}");
    let point = &points[0];
    let expected: Vec<&str> = ["chunked", "tus-in-order", "tus-concat", "ceiling"]
        .into_iter()
        .filter(|k| !skipped.contains(k))
        .collect();
    assert_eq!(each(&point["sides"], "key"), expected);
    for side in point["sides"].as_array().unwrap() {
        let protocol = &side["reps"][0]["protocol"];
        match side["key"].as_str().unwrap() {
            "chunked" => assert_eq!(protocol, "chunked", "{side}"),
            "ceiling" => assert!(protocol.is_null(), "{side}"),
            _ => assert_eq!(protocol, "tus", "{side}"),
        }
    }
    assert_eq!(each(&point["skipped_sides"], "key"), skipped);
    for reason in each(&point["skipped_sides"], "reason") {
        assert!(reason.contains(needs), "{reason}");
    }
    let wanted: Vec<&str> = [
        ("tus-concat/chunked", "tus-concat"),
        ("tus-in-order/chunked", "tus-in-order"),
        ("tus-concat/ceiling", "tus-concat"),
    ]
    .into_iter()
    .filter(|(_, side)| !skipped.contains(side))
    .map(|(ratio, _)| ratio)
    .collect();
    assert_eq!(each(&point["ratios"], "key"), wanted);
}

/// The plot parses as SVG and has one series per side of `latency` (its
/// label in the legend, its own colour of line) and one for the model bound.
fn check_plot(svg: &str, doc: &Value) {
    let xml = roxmltree::Document::parse(svg).expect("the plot is well-formed XML");
    assert_eq!(xml.root_element().tag_name().name(), "svg");
    let texts: Vec<String> = xml
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or_default().trim().to_owned())
        .collect();
    let sides = doc["scenarios"][0]["points"][0]["sides"]
        .as_array()
        .unwrap();
    for side in sides {
        let label = side["label"].as_str().unwrap();
        assert_eq!(
            texts.iter().filter(|t| *t == label).count(),
            1,
            "{label}: {texts:?}"
        );
    }
    assert!(
        texts.iter().any(|t| t.starts_with("model bound")),
        "{texts:?}"
    );
    let strokes: std::collections::HashSet<&str> = xml
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter_map(|n| n.attribute("stroke"))
        .collect();
    assert_eq!(strokes.len(), sides.len() + 1, "{strokes:?}");
}

#[test]
fn every_scenario_in_process_gives_json_a_report_and_a_plot() {
    let dir = Dir::new("every_scenario_in_process_gives_json_a_report_and_a_plot");
    let report = dir.join("report");
    let run = dir
        .idb(["bench", "--report"])
        .arg(&report)
        .arg("--data-dir")
        .arg(dir.path())
        .args(TINY)
        .run();
    run.expect_code(0);
    let doc: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document: {e}\n{}", run.describe()));
    assert_eq!(check_document(&doc, false), ALL);
    // The report files, and the same document in results.json.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(saved, doc);
    let markdown = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(markdown.contains("| point | side |"), "{markdown}");
    assert!(markdown.contains("0 ms: CPU floor ("), "{markdown}");
    assert!(markdown.contains("cpu:engine+mock/floor "), "{markdown}");
    check_plot(
        &std::fs::read_to_string(report.join("throughput-vs-rtt.svg")).unwrap(),
        &doc,
    );
    // Progress went to stderr.
    run.stderr_has("latency 0 ms 1/1: engine");
    check_protocols(&doc, &[], "");
    assert!(markdown.contains("tus-concat/chunked "), "{markdown}");
}

#[test]
fn every_scenario_against_a_mock_server_process_runs_or_says_why_not() {
    let dir = Dir::new("every_scenario_against_a_mock_server_process_runs_or_says_why_not");
    let server = ServerProcess::sink(&dir, &[]);
    let report = dir.join("report");
    let run = dir
        .idb(["bench", "--server", &server.url, "--dataset", "IDB-X"])
        .arg("--report")
        .arg(&report)
        .arg("--data-dir")
        .arg(dir.path())
        .args(TINY)
        .token("tok-x")
        .run();
    run.expect_code(0).never_shows("tok-x");
    let doc: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document: {e}\n{}", run.describe()));
    let ran = check_document(&doc, true);
    let expected: Vec<&str> = ALL
        .into_iter()
        .filter(|s| !NEEDS_MOCK_KNOBS.contains(s))
        .collect();
    assert_eq!(ran, expected);
    assert_eq!(doc["far_end"]["url"], server.url.trim_end_matches('/'));
    // The remote sweep is one point, at the path's own round trip.
    let latency = &doc["scenarios"][0]["points"];
    assert_eq!(latency.as_array().unwrap().len(), 1);
    assert!(latency[0]["latency_ms"].is_null());
    for name in NEEDS_MOCK_KNOBS {
        run.stderr_has(&format!("{name}: skipped:"));
    }
    // A far end without tus: protocol 1 alone, the tus sides said why not.
    check_protocols(&doc, &["tus-in-order", "tus-concat"], "--tus");
    run.stderr_has("protocols: tus-in-order skipped:");
    check_plot(
        &std::fs::read_to_string(report.join("throughput-vs-rtt.svg")).unwrap(),
        &doc,
    );
    let markdown = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(markdown.contains("CPU floor skipped: "), "{markdown}");
    for file in ["results.json", "report.md", "command.txt"] {
        let text = std::fs::read_to_string(report.join(file)).unwrap();
        assert!(!text.contains("tok-x"), "{file} shows the token");
    }
    let (status, _, _) = server.terminate();
    assert!(status.success());
}

/// `idb bench --scenario protocols` against `server` (dataset `IDB-X`,
/// token `tok-x`), with a file large enough for concatenation: its JSON.
fn bench_protocols(dir: &Dir, server: &ServerProcess, extra: &[&str]) -> (Value, crate::util::Run) {
    let run = dir
        .idb(["bench", "--server", &server.url, "--dataset", "IDB-X"])
        .arg("--report")
        .arg(dir.join("report"))
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--scenario",
            "protocols",
            "--reps",
            "1",
            "--size",
            "12MiB",
            "--rtt-probes",
            "3",
            "--json",
        ])
        .args(extra)
        .token("tok-x")
        .run();
    run.expect_code(0).never_shows("tok-x");
    let doc: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document: {e}\n{}", run.describe()));
    (doc, run)
}

#[test]
fn protocols_against_a_tus_sink_skips_concatenation_saying_it_cannot_join() {
    let dir = Dir::new("protocols_against_a_tus_sink_skips_concatenation_saying_it_cannot_join");
    let server = ServerProcess::sink(&dir, &["--tus"]);
    let (doc, run) = bench_protocols(&dir, &server, &[]);
    check_protocols(&doc, &["tus-concat"], "cannot join partial uploads");
    run.stderr_has("protocols: tus-concat skipped: the far end cannot join partial uploads")
        .stderr_has("without --sink");
    let markdown = std::fs::read_to_string(dir.join("report").join("report.md")).unwrap();
    assert!(markdown.contains("tus-concat skipped: "), "{markdown}");
    // A cap per connection is a knob of the in-process mock only.
    let (doc, run) = bench_protocols(&dir, &server, &["--protocols-bandwidth", "10MiB"]);
    let reason = doc["scenarios"][0]["skipped"].as_str().unwrap();
    assert!(reason.contains("--server"), "{reason}");
    run.stderr_has("protocols: skipped:");
    let (status, _, _) = server.terminate();
    assert!(status.success());
}

#[test]
fn protocols_against_a_tus_server_with_a_store_measure_every_side() {
    let dir = Dir::new("protocols_against_a_tus_server_with_a_store_measure_every_side");
    let store = dir.join("store");
    let server = ServerProcess::start(
        &dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--dataset",
            "IDB-X:tok-x",
            "--tus",
            "--store",
            store.to_str().unwrap(),
        ],
    );
    let (doc, _) = bench_protocols(&dir, &server, &[]);
    check_protocols(&doc, &[], "");
    // Remotely the far end's uploads are not counted.
    let sides = doc["scenarios"][0]["points"][0]["sides"]
        .as_array()
        .unwrap();
    assert!(sides.iter().all(|s| s["reps"][0]["tus_uploads"].is_null()));
    // Every side's file is in the far end's store, verified (the harness
    // checked each receipt's blake3 against the generated bytes).
    let stored = std::fs::read_dir(store.join("IDB-X")).unwrap().count();
    assert_eq!(stored, sides.len());
    let (status, _, _) = server.terminate();
    assert!(status.success());
}

#[test]
fn a_far_end_without_a_token_is_refused_before_anything_is_sent() {
    let dir = Dir::new("a_far_end_without_a_token_is_refused_before_anything_is_sent");
    let run = dir
        .idb([
            "bench",
            "--server",
            "http://127.0.0.1:9",
            "--dataset",
            "IDB-X",
        ])
        .run();
    run.expect_code(2).stderr_has("no token: set IDB_TOKEN");
    let run = dir.idb(["bench", "--dataset", "IDB-X"]).run();
    run.expect_code(2).stderr_has("--server");
}
