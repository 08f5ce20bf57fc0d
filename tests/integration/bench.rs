//! `idb bench` at tiny sizes: every scenario against the in-process mock, and
//! against `idb mock-server --sink` as a separate process (the `--server`
//! path). Behaviour only, never timings: one well-formed JSON document on
//! stdout with every metric present and non-negative, every upload checked by
//! the harness against the server's receipts (a mismatch fails the run), and the
//! plot a valid SVG with one series per side.

use serde_json::Value;

use crate::util::{Dir, ServerProcess, TestCommand, assert_nothing_left};

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

/// The `key` of each element of an array (sides, ratios).
fn keys(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v["key"].as_str().unwrap())
        .collect()
}

/// Whether this test's PATH has a `curl` (the `idb` it runs inherits it).
fn curl_on_path() -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join("curl"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The curl side of the point that compares CPU: with curl on PATH, its
/// metrics present and positive, its upload byte-exact (the far end's receipt
/// is the file's size and blake3), `client_alone_vs_curl` the engine's client
/// over curl's plus blake3's, the token (`secret`) in no argument and the
/// header file that carried it gone; without, null with the reason.
fn check_curl(point: &Value, secret: &str) {
    let curl = &point["curl"];
    let ratio = point["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "cpu:engine-client/curl+blake3");
    if !curl_on_path() {
        assert!(curl.is_null() && ratio.is_none(), "{point}");
        assert!(point["client_alone_vs_curl"].is_null(), "{point}");
        let reason = point["curl_skipped"].as_str().unwrap();
        assert!(reason.contains("no curl on PATH"), "{reason}");
        return;
    }
    assert!(point["curl_skipped"].is_null(), "{point}");
    let ceiling = point["sides"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "ceiling")
        .unwrap();
    assert_eq!(curl["bytes"], ceiling["bytes"], "{curl}");
    assert_eq!(curl["blake3"].as_str().unwrap().len(), 64, "{curl}");
    assert_eq!(curl["receipt_size"], curl["bytes"], "{curl}");
    assert_eq!(curl["receipt_blake3"], curl["blake3"], "{curl}");
    assert!(
        curl["version"].as_str().unwrap().starts_with("curl "),
        "{curl}"
    );
    for key in ["curl_cpu_s_per_gib", "blake3_cpu_s_per_gib", "wall_s"] {
        for stat in ["median", "min", "max"] {
            let x = curl[key][stat].as_f64().unwrap();
            assert!(x > 0.0 && x.is_finite(), "{key}.{stat}: {curl}");
        }
    }
    let number = |key: &str| curl[key].as_f64().unwrap();
    for key in [
        "engine_client_cpu_s_per_gib",
        "client_alone_vs_curl",
        "whole_mib_s",
    ] {
        assert!(
            number(key) > 0.0 && number(key).is_finite(),
            "{key}: {curl}"
        );
    }
    let expected = number("engine_client_cpu_s_per_gib")
        / (curl["curl_cpu_s_per_gib"]["median"].as_f64().unwrap()
            + curl["blake3_cpu_s_per_gib"]["median"].as_f64().unwrap());
    assert!(
        (number("client_alone_vs_curl") - expected).abs() < 1e-9,
        "{curl}"
    );
    assert_eq!(point["client_alone_vs_curl"], curl["client_alone_vs_curl"]);
    let ratio = ratio.expect("the curl ratio");
    assert_eq!(ratio["value"], curl["client_alone_vs_curl"]);
    assert_eq!(ratio["target"], 1.10, "{ratio}");
    assert_eq!(ratio["target_is"], "at-most", "{ratio}");
    let args: Vec<&str> = curl["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(!args.iter().any(|a| a.contains(secret)), "{args:?}");
    let header = args
        .iter()
        .find_map(|a| a.strip_prefix('@'))
        .expect("the token comes from a header file");
    assert!(
        !std::path::Path::new(header).exists(),
        "{header} is left behind"
    );
}

/// The CPU comparisons of the `latency` scenario. In-process, at its 0 ms
/// point only: the floor (its parts positive, the receiver's blake3 the
/// file's), its ratio and the reqwest one request's (no target), and curl's
/// (see [`check_curl`]). Remotely, at the one point: the floor skipped with
/// the reason, curl's side as in-process.
fn check_cpu_floor(latency: &Value, remote: bool, secret: &str) {
    let points = latency["points"].as_array().unwrap();
    let curl_key = curl_on_path().then_some("cpu:engine-client/curl+blake3");
    for (i, point) in points.iter().enumerate() {
        let floor = &point["cpu_floor"];
        let ratios: Vec<&Value> = point["ratios"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["key"].as_str().unwrap().starts_with("cpu:"))
            .collect();
        let keys: Vec<&str> = ratios.iter().map(|r| r["key"].as_str().unwrap()).collect();
        if i > 0 {
            assert!(floor.is_null() && ratios.is_empty(), "{}", point["label"]);
            assert!(point["curl"].is_null() && point["curl_skipped"].is_null());
            assert!(point["client_alone_vs_curl"].is_null(), "{point}");
            continue;
        }
        check_curl(point, secret);
        if remote {
            assert!(floor.is_null(), "{floor}");
            let reason = point["cpu_floor_skipped"].as_str().unwrap();
            assert!(reason.contains("--server"), "{reason}");
            assert_eq!(keys, curl_key.into_iter().collect::<Vec<_>>());
            continue;
        }
        assert!(point["cpu_floor_skipped"].is_null(), "{point}");
        assert_eq!(point["latency_ms"], 0.0);
        assert_eq!(floor["blake3"].as_str().unwrap().len(), 64);
        assert_eq!(floor["receiver_blake3"], floor["blake3"], "{floor}");
        for key in [
            "sendfile_cpu_s_per_gib",
            "sender_blake3_cpu_s_per_gib",
            "sender_map_cpu_s_per_gib",
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
        if !point["curl"].is_null() {
            assert_eq!(point["curl"]["blake3"], floor["blake3"]);
        }
        let mut expected = vec![
            "cpu:engine+mock/floor",
            "cpu:engine-client/ceiling-client+blake3",
        ];
        expected.extend(curl_key);
        assert_eq!(keys, expected);
        for (ratio, target) in ratios.iter().zip([Some(1.15), None, Some(1.10)]) {
            assert_eq!(ratio["target_is"], "at-most", "{ratio}");
            let value = ratio["value"].as_f64().unwrap();
            match target {
                Some(target) => {
                    assert_eq!(ratio["target"], target, "{ratio}");
                    assert_eq!(ratio["meets_target"], value <= target, "{ratio}");
                }
                None => assert!(ratio["target"].is_null() && ratio["meets_target"].is_null()),
            }
        }
    }
}

/// Checks the document and returns the scenarios that ran (not skipped).
fn check_document(doc: &Value, remote: bool, secret: &str) -> Vec<String> {
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
    check_cpu_floor(&scenarios[0], remote, secret);
    let mut ran = Vec::new();
    for scenario in scenarios {
        let name = scenario["name"].as_str().unwrap();
        if let Some(reason) = scenario["skipped"].as_str() {
            assert!(scenario["points"].as_array().unwrap().is_empty());
            assert!(reason.contains("--server"), "{name}: {reason}");
            // A far end started with faults fails the baselines: not advised.
            assert_eq!(
                reason.contains("start the far end with that option"),
                name != "faults",
                "{name}: {reason}"
            );
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
                let sides = keys(&point["sides"]);
                for key in ["engine", "ceiling", "sample-client"] {
                    assert!(sides.contains(&key), "{name}: {sides:?}");
                }
                assert!(point["model"]["bound_mib_s"].as_f64().unwrap() > 0.0);
                assert!(point["model_skipped"].is_null(), "{name}: {point}");
                let ratios = keys(&point["ratios"]);
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
    // Each number labels at most one tick of each axis (a path of 0.1 ms
    // drew every round-trip tick as "0").
    for number in texts.iter().filter(|t| t.parse::<f64>().is_ok()) {
        assert!(
            texts.iter().filter(|t| *t == number).count() <= 2,
            "{number}: {texts:?}"
        );
    }
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
    // The in-process mock's token is not a secret, but no argument carries it.
    assert_eq!(check_document(&doc, false, "idb-harness-token"), ALL);
    // The report files, and the same document in results.json.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(saved, doc);
    let markdown = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(markdown.contains("| point | side |"), "{markdown}");
    assert!(markdown.contains("0 ms: CPU floor ("), "{markdown}");
    assert!(markdown.contains("cpu:engine+mock/floor "), "{markdown}");
    let curl_line = if curl_on_path() {
        "0 ms: curl in one request (curl "
    } else {
        "0 ms: curl side skipped: no curl on PATH"
    };
    assert!(markdown.contains(curl_line), "{markdown}");
    check_plot(
        &std::fs::read_to_string(report.join("throughput-vs-rtt.svg")).unwrap(),
        &doc,
    );
    // Progress went to stderr, a set of files announced once.
    run.stderr_has("latency 0 ms 1/1: engine");
    run.stderr_has("generating 4 files of 100.0 KiB (many-00000.bin to many-00003.bin)");
    assert!(
        !run.stderr.contains("generating many-0"),
        "{}",
        run.describe()
    );
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
    let ran = check_document(&doc, true, "tok-x");
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
    // The mock's knobs in TINY are not taken for having done anything.
    for flag in ["--latencies", "--latency-ms", "--bandwidth", "--fault-rate"] {
        run.stderr_has(&format!("note: {flag} has no effect with --server: "));
    }
    assert!(
        !run.stderr.contains("note: --protocols-bandwidth"),
        "not given"
    );
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

/// `idb bench` against `server`'s dataset `IDB-X`, its report and data in `dir`.
fn bench_against(dir: &Dir, server: &ServerProcess) -> TestCommand {
    bench_to(dir, &server.url)
}

/// [`bench_against`] a far end at `url`.
fn bench_to(dir: &Dir, url: &str) -> TestCommand {
    dir.idb(["bench", "--server", url, "--dataset", "IDB-X"])
        .arg("--report")
        .arg(dir.join("report"))
        .arg("--data-dir")
        .arg(dir.path())
}

/// `idb bench --scenario protocols` against `server` (dataset `IDB-X`,
/// token `tok-x`), with a file large enough for concatenation: its JSON.
fn bench_protocols(dir: &Dir, server: &ServerProcess, extra: &[&str]) -> (Value, crate::util::Run) {
    let run = bench_against(dir, server)
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
fn protocols_against_a_tus_sink_skips_concatenation_saying_it_is_not_served() {
    let dir = Dir::new("protocols_against_a_tus_sink_skips_concatenation_saying_it_is_not_served");
    // A sink keeps no bytes to join: it does not offer concatenation.
    let server = ServerProcess::sink(&dir, &["--tus"]);
    let (doc, run) = bench_protocols(&dir, &server, &[]);
    check_protocols(&doc, &["tus-concat"], "does not serve concatenation");
    run.stderr_has("protocols: tus-concat skipped: the far end's tus at");
    let markdown = std::fs::read_to_string(dir.join("report").join("report.md")).unwrap();
    assert!(markdown.contains("tus-concat skipped: "), "{markdown}");
    // A cap per connection is a knob of the in-process mock only: the
    // scenario runs on the far end as it is, and a note says the cap did
    // nothing.
    let (doc, run) = bench_protocols(&dir, &server, &["--protocols-bandwidth", "10MiB"]);
    assert!(doc["scenarios"][0]["skipped"].is_null(), "{doc}");
    check_protocols(&doc, &["tus-concat"], "does not serve concatenation");
    run.stderr_has("note: --protocols-bandwidth has no effect with --server: ");
    let (status, _, stderr) = server.terminate();
    assert!(status.success());
    // Its banner does not say it stores what it only counts.
    assert!(
        stderr
            .contains("tus 1.0 at /files/ (every PATCH byte counted and hashed; no concatenation"),
        "{stderr}"
    );
}

#[test]
fn latency_against_a_tus_far_end_has_no_one_chunk_model_bound_and_says_why() {
    let dir = Dir::new("latency_against_a_tus_far_end_has_no_one_chunk_model_bound_and_says_why");
    let server = ServerProcess::sink(&dir, &["--tus"]);
    let run = bench_against(&dir, &server)
        .args(["--scenario", "latency", "--reps", "1", "--size", "3MiB"])
        .args(["--sample-size", "1MiB", "--rtt-probes", "3", "--json"])
        .token("tok-x")
        .run();
    run.expect_code(0).never_shows("tok-x");
    let doc: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document: {e}\n{}", run.describe()));
    let point = &doc["scenarios"][0]["points"][0];
    let engine = &point["sides"][0];
    assert_eq!(engine["key"], "engine");
    assert_eq!(engine["reps"][0]["protocol"], "tus", "{doc}");
    assert!(point["model"].is_null(), "{point}");
    let reason = point["model_skipped"].as_str().unwrap();
    assert!(reason.contains("the engine spoke tus"), "{reason}");
    assert!(
        !keys(&point["ratios"])
            .iter()
            .any(|k| k.starts_with("engine/model")),
        "{point}"
    );
    let markdown = std::fs::read_to_string(dir.join("report").join("report.md")).unwrap();
    assert!(markdown.contains("model bound skipped: "), "{markdown}");
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
fn without_curl_on_path_the_client_is_not_compared_with_curl_and_the_report_says_why() {
    let dir = Dir::new(
        "without_curl_on_path_the_client_is_not_compared_with_curl_and_the_report_says_why",
    );
    let empty = dir.join("no-curl-here");
    std::fs::create_dir(&empty).unwrap();
    let report = dir.join("report");
    let run = dir
        .idb([
            "bench",
            "--scenario",
            "latency",
            "--latencies",
            "0",
            "--report",
        ])
        .arg(&report)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--reps", "1", "--size", "3MiB", "--sample-size", "1MiB"])
        .args(["--rtt-probes", "3", "--json"])
        .env("PATH", &empty)
        .run();
    run.expect_code(0);
    let doc: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document: {e}\n{}", run.describe()));
    let point = &doc["scenarios"][0]["points"][0];
    // The rest of the CPU comparison is still there.
    assert!(
        point["cpu_floor"]["floor_cpu_s_per_gib"]["median"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(point["curl"].is_null(), "{point}");
    assert!(
        point
            .get("client_alone_vs_curl")
            .is_some_and(Value::is_null),
        "{point}"
    );
    let reason = point["curl_skipped"].as_str().unwrap();
    assert!(reason.contains("no curl on PATH"), "{reason}");
    let ratios = keys(&point["ratios"]);
    assert!(
        !ratios.contains(&"cpu:engine-client/curl+blake3"),
        "{ratios:?}"
    );
    let markdown = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        markdown.contains(&format!("0 ms: curl side skipped: {reason}")),
        "{markdown}"
    );
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

/// `--latencies 0,0` ran two points both labelled 0 ms: refused at once.
#[test]
fn a_latency_given_twice_is_refused() {
    let dir = Dir::new("a_latency_given_twice_is_refused");
    let run = dir.idb(["bench", "--latencies", "0,50,0"]).run();
    run.expect_code(2)
        .stderr_has("--latencies gives 0 ms twice");
}

#[test]
fn a_far_end_that_refuses_the_token_exits_3_as_upload_does() {
    let dir = Dir::new("a_far_end_that_refuses_the_token_exits_3_as_upload_does");
    let server = ServerProcess::sink(&dir, &[]);
    let run = bench_against(&dir, &server)
        .args(TINY)
        .token("tok-not-the-far-ends")
        .run();
    run.expect_code(3)
        .never_shows("tok-not-the-far-ends")
        .stderr_has("the far end refused the token (HTTP 401)");
    // The report says why it holds no scenario.
    let report = dir.join("report");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("results.json")).unwrap())
            .unwrap();
    let failed = saved["failed"].as_str().expect("why the run failed");
    assert!(failed.contains("refused the token (HTTP 401)"), "{failed}");
    let markdown = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(markdown.contains("**The run failed**"), "{markdown}");
    let (status, _, _) = server.terminate();
    assert!(status.success());
}

/// `--server https://` to a far end in plain HTTP is said as upload says it,
/// with the address to try (it was a library's "received corrupt message of
/// type InvalidContentType").
#[test]
fn a_far_end_of_the_other_scheme_is_said_as_upload_says_it() {
    let dir = Dir::new("a_far_end_of_the_other_scheme_is_said_as_upload_says_it");
    let server = ServerProcess::sink(&dir, &[]);
    let https = server.url.replacen("http://", "https://", 1);
    let run = bench_to(&dir, &https).args(TINY).token("tok-x").run();
    run.expect_code(1)
        .stderr_has("does not speak TLS (it answered the TLS handshake in plain HTTP)")
        .stderr_has(&format!("try {}/", server.url));
    let (status, _, _) = server.terminate();
    assert!(status.success());
}

/// Starts an in-process `idb bench` whose curl is a stand-in that never ends
/// by itself (and, with `deaf`, ignores SIGTERM), and returns once that curl is
/// sending: the run, the directory it uses as TMPDIR and for its data, and
/// the file holding the stand-in's pid.
fn bench_with_a_stuck_curl(
    dir: &Dir,
    deaf: bool,
) -> (crate::util::Running, std::path::PathBuf, std::path::PathBuf) {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;

    let tmp = dir.join("tmp");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let ready = dir.join("curl-started");
    let made = std::ffi::CString::new(ready.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `made` is a valid C string; mkfifo only reads it.
    assert_eq!(unsafe { libc::mkfifo(made.as_ptr(), 0o600) }, 0);
    let pid = dir.join("curl.pid");
    let curl = bin.join("curl");
    std::fs::write(
        &curl,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'curl 8.0.0 (stand-in)'; exit 0; fi\n\
             {}echo $$ > '{}'\necho sending > '{}'\nexec sleep 600\n",
            if deaf { "trap '' TERM\n" } else { "" },
            pid.display(),
            ready.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&curl, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The stand-in first, then the rest (`sleep`).
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let path = std::iter::once(bin.clone()).chain(std::env::split_paths(&inherited));
    let running = dir
        .idb(["bench", "--scenario", "latency", "--latencies", "0"])
        .arg("--report")
        .arg(dir.join("report"))
        .arg("--data-dir")
        .arg(&tmp)
        .args(["--reps", "1", "--size", "3MiB", "--sample-size", "1MiB"])
        .args(["--rtt-probes", "3"])
        .env("PATH", std::env::join_paths(path).unwrap())
        .env("TMPDIR", &tmp)
        .spawn();
    // Blocks until the stand-in opens the pipe: curl is sending.
    let mut line = String::new();
    std::io::BufReader::new(std::fs::File::open(&ready).unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "sending");
    (running, tmp, pid)
}

/// Ctrl-C while curl sends: the run stops (130), curl is stopped, and nothing
/// it made is left in the temporary directory: not the generated data, not
/// curl's private directory with the header file that holds the token.
#[test]
fn ctrl_c_mid_run_stops_curl_and_leaves_no_temporary_data_or_token() {
    let dir = Dir::new("ctrl_c_mid_run_stops_curl_and_leaves_no_temporary_data_or_token");
    let (running, tmp, _) = bench_with_a_stuck_curl(&dir, false);
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(
        left.iter().any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with("idb-bench-curl-")),
        "curl's private directory exists while it runs: {left:?}"
    );
    running.signal(libc::SIGINT);
    let run = running.wait_within(std::time::Duration::from_secs(60));
    run.expect_code(130).stderr_has("stopped by Ctrl-C");
    assert_nothing_left(&tmp, &run);
}

/// Ctrl-C while an engine side uploads, its journal written: the report
/// directory holds the report alone (the side's state directory is gone) and
/// TMPDIR nothing. (The race this was written for, a journal writer that
/// outlived a dropped run and made the directory again, needs the signal to
/// fall between two saves with progress unsaved; this test does not place it
/// there reliably.)
#[test]
fn ctrl_c_during_an_engine_side_leaves_no_state_directory() {
    use std::os::fd::AsRawFd;

    let dir = Dir::new("ctrl_c_during_an_engine_side_leaves_no_state_directory");
    let (tmp, report) = (dir.join("tmp"), dir.join("report"));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::create_dir_all(&report).unwrap();
    let mut inotify = inotify::Inotify::init().expect("inotify");
    inotify
        .watches()
        .add(&report, inotify::WatchMask::CREATE)
        .expect("watch the report directory");
    // The engine side goes first; at 200 ms a round trip it lasts seconds,
    // and saves its journal every second (the CLI's default).
    let running = dir
        .idb(["bench", "--scenario", "latency", "--latencies", "200"])
        .arg("--report")
        .arg(&report)
        .arg("--data-dir")
        .arg(&tmp)
        .args(["--reps", "1", "--size", "256MiB", "--sample-size", "1MiB"])
        .args(["--rtt-probes", "3"])
        .env("TMPDIR", &tmp)
        .spawn();
    // Blocks until the engine side has written its journal once (in its
    // state directory, made for the side: watched as it appears).
    let mut buffer = [0u8; 4096];
    let mut journal_watch = None;
    'written: loop {
        let mut poll = libc::pollfd {
            fd: inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the call's duration.
        let ready = unsafe { libc::poll(&mut poll, 1, 120_000) };
        assert!(ready > 0, "no journal was written within 120 s");
        let events: Vec<(inotify::WatchDescriptor, String)> = inotify
            .read_events(&mut buffer)
            .expect("read inotify")
            .filter_map(|e| Some((e.wd, e.name?.to_string_lossy().into_owned())))
            .collect();
        for (watch, name) in events {
            if Some(&watch) == journal_watch.as_ref() && name.ends_with(".json") {
                break 'written;
            }
            if name.starts_with("idb-bench-state-") && journal_watch.is_none() {
                // Its journal directory, made when the first journal is.
                let journal = report.join(&name).join("journal");
                std::fs::create_dir_all(&journal).unwrap();
                journal_watch = Some(
                    inotify
                        .watches()
                        .add(&journal, inotify::WatchMask::MOVED_TO)
                        .expect("watch the journal directory"),
                );
            }
        }
    }
    running.signal(libc::SIGINT);
    let run = running.wait_within(std::time::Duration::from_secs(60));
    run.expect_code(130).stderr_has("stopped by Ctrl-C");
    assert_nothing_left(&tmp, &run);
    let mut kept: Vec<String> = std::fs::read_dir(&report)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        ["command.txt", "report.md", "results.json"],
        "{}",
        run.describe()
    );
}

/// A second Ctrl-C while the run winds down (here held up by a curl that
/// ignores SIGTERM) quits at once, saying what it may leave.
#[test]
fn a_second_ctrl_c_quits_at_once() {
    let dir = Dir::new("a_second_ctrl_c_quits_at_once");
    let (running, _, pid) = bench_with_a_stuck_curl(&dir, true);
    running.signal(libc::SIGINT);
    running.wait_for_stderr("a second Ctrl-C or SIGTERM quits at once");
    running.signal(libc::SIGINT);
    let run = running.wait_within(std::time::Duration::from_secs(60));
    run.expect_code(130)
        .stderr_has("quit at once: temporary directories may be left behind");
    // The stand-in outlives the run: stop it.
    let pid: libc::pid_t = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill only reads its arguments; the stand-in is still running
    // (it ignores SIGTERM and sleeps for ten minutes), so the pid is its own.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

/// An HTTPS far end whose certificate a private authority issued: refused
/// without `--ca-cert`, measured with it by every side (the engine, the
/// harness's own calls, and curl when there is one).
#[test]
fn an_https_far_end_of_a_private_authority_is_measured_with_ca_cert() {
    let dir = Dir::new("an_https_far_end_of_a_private_authority_is_measured_with_ca_cert");
    let ca = dir.join("mock-ca.pem");
    let server = ServerProcess::sink(&dir, &["--tls-self-signed", ca.to_str().unwrap()]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let latency = ["--scenario", "latency", "--reps", "1", "--size", "3MiB"];
    let refused = bench_against(&dir, &server)
        .args(latency)
        .args(["--sample-size", "1MiB", "--rtt-probes", "3"])
        .token("tok-x")
        .run();
    refused
        .expect_code(1)
        .stderr_has("the far end's certificate was refused")
        .stderr_has("pass --ca-cert");
    let run = bench_against(&dir, &server)
        .args(latency)
        .args(["--sample-size", "1MiB", "--rtt-probes", "3", "--json"])
        .arg("--ca-cert")
        .arg(&ca)
        .token("tok-x")
        .run();
    run.expect_code(0).never_shows("tok-x");
    let doc: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document: {e}\n{}", run.describe()));
    assert_eq!(doc["far_end"]["url"], server.url.trim_end_matches('/'));
    let point = &doc["scenarios"][0]["points"][0];
    assert_eq!(
        keys(&point["sides"]),
        ["engine", "ceiling", "sample-client"],
        "{point}"
    );
    check_curl(point, "tok-x");
    let (status, _, _) = server.terminate();
    assert!(status.success());
}

/// A reader of stdout that goes away (`idb bench | true`) stops the run
/// at once, as Ctrl-C does (141, as for SIGPIPE), instead of after minutes of
/// measuring for nobody; nothing is left in the temporary directory.
#[test]
fn a_closed_stdout_stops_the_run_at_once_and_leaves_nothing() {
    let dir = Dir::new("a_closed_stdout_stops_the_run_at_once_and_leaves_nothing");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let report = dir.join("report");
    // An earlier run's plot in the reused report directory.
    let stale = dir.write("report/throughput-vs-rtt.svg", b"<svg/>");
    let mut running = dir
        .idb([
            "bench",
            "--scenario",
            "latency",
            "--reps",
            "3",
            "--size",
            "64MiB",
        ])
        .arg("--report")
        .arg(&report)
        .arg("--data-dir")
        .arg(&tmp)
        .env("TMPDIR", &tmp)
        .own_stdout()
        .spawn();
    drop(running.take_stdout());
    let run = running.wait_within(std::time::Duration::from_secs(60));
    run.expect_code(141)
        .stderr_has("stopped as standard output was closed");
    assert_nothing_left(&tmp, &run);
    // Stopped before its one scenario ended (4 latencies x 3 sides x 3
    // repetitions of 64 MiB), not after.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(
        saved["scenarios"],
        serde_json::json!([]),
        "{}",
        run.describe()
    );
    // It plotted nothing, so no plot passes for its own.
    assert!(!stale.exists(), "an earlier run's plot is still there");
}
