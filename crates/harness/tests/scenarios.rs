//! Every scenario at tiny sizes: behaviour only (every upload verified, the three
//! files written and readable, ratios finite and positive), never timings.

use std::sync::Mutex;
use std::time::Duration;

use idb_harness::{BenchConfig, COMMAND_FILE, RESULTS_FILE, SUMMARY_FILE, Scenario, run};

const MIB: u64 = 1 << 20;

fn tiny(out: &std::path::Path, data: &std::path::Path) -> BenchConfig {
    let mut config = BenchConfig::new(out.to_path_buf());
    config.scenarios = Scenario::ALL.to_vec();
    config.reps = 1;
    config.size = 2 * MIB;
    config.sample_size = Some(MIB + 12_345);
    config.latency = Duration::from_millis(2);
    config.files = 5;
    config.file_size = 2 * MIB + 7;
    config.many_files_latency = Duration::from_millis(2);
    config.parallel = 4;
    config.journal_size = 3 * MIB;
    config.small_files = 20;
    config.small_file_size = 700;
    config.rtt_probes = 3;
    config.data_dir = Some(data.to_path_buf());
    config.command_line = "idb bench --scenario all --reps 1 (test)".into();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_verifies_and_writes_its_evidence() {
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

    // Every side of every scenario verified every file, once per repetition.
    let results = &outcome.results;
    let names: Vec<_> = results.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["ceiling", "latency", "many-files", "journal", "small-files"]
    );
    for scenario in &results.scenarios {
        assert!(!scenario.sides.is_empty());
        for side in &scenario.sides {
            assert!(!side.reps.is_empty(), "{}", side.key);
            assert!(side.reps.iter().all(|r| r.rep == 0), "{}", side.key);
            for rep in &side.reps {
                assert_eq!(rep.verified_files, side.files, "{}", side.key);
                assert!(rep.mib_per_s.is_finite() && rep.mib_per_s > 0.0);
                assert!(rep.requests >= 3 * side.files as u64, "{}", side.key);
            }
        }
        assert!(!scenario.ratios.is_empty());
        for ratio in &scenario.ratios {
            assert!(
                ratio.value.is_finite() && ratio.value > 0.0,
                "{}: {}",
                ratio.name,
                ratio.value
            );
        }
    }
    let many = &results.scenarios[2];
    assert_eq!(
        many.sides.len(),
        3,
        "parallel 4, the default 3, the sample client"
    );
    assert_eq!(many.sides[0].files, 5);
    let model = results.scenarios[1]
        .model
        .as_ref()
        .expect("latency has a model");
    for value in [
        model.bound_mib_s,
        model.bandwidth_mib_s,
        model.ratio,
        model.rtt_ms,
    ] {
        assert!(value.is_finite() && value > 0.0, "{model:?}");
    }
    // The sample client ran on the smaller prefix and says so.
    let sample = results.scenarios[1]
        .sides
        .iter()
        .find(|s| s.key == "sample-client")
        .expect("latency has a sample-client side");
    assert_eq!(sample.bytes, MIB + 12_345);
    assert!(sample.label.contains("prefix"), "{}", sample.label);

    // The three files, side by side, parseable.
    assert_eq!(outcome.out_dir, dir);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(RESULTS_FILE)).unwrap()).unwrap();
    assert_eq!(json["scenarios"].as_array().unwrap().len(), 5);
    // The journal scenarios measure with and without a journal, and leave no
    // state directory behind.
    for name in ["journal", "small-files"] {
        let scenario = results.scenarios.iter().find(|s| s.name == name).unwrap();
        let keys: Vec<_> = scenario.sides.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys[..2], ["no-journal", "journal-disk"], "{name}");
        assert_eq!(
            scenario.sides[1].engine.as_ref().map(|e| e.journal),
            Some(true)
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("idb-bench-state-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(json["reps"], 1);
    let summary = std::fs::read_to_string(dir.join(SUMMARY_FILE)).unwrap();
    assert_eq!(summary, outcome.summary);
    assert!(summary.contains("| scenario | side | MiB/s |"), "{summary}");
    assert!(summary.contains("engine / sample client"), "{summary}");
    let command = std::fs::read_to_string(dir.join(COMMAND_FILE)).unwrap();
    assert!(command.starts_with("idb bench --scenario all --reps 1 (test)"));
    for fact in ["nproc:", "kernel:", "cpu:"] {
        assert!(command.contains(fact), "{command}");
    }

    // Progress went to the sink; generated data was cleaned up.
    assert!(!lines.lock().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}

#[test]
fn scenario_names() {
    assert_eq!(Scenario::select("all").unwrap(), Scenario::ALL);
    assert_eq!(
        Scenario::select("many-files").unwrap(),
        [Scenario::ManyFiles]
    );
    assert!(Scenario::select("fast").is_err());
}
