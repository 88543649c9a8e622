//! CI smoke test of `magnetar bench`: a seconds-long workload through the
//! runner on a standalone topology it starts itself, then the report
//! generator on its result. Checks that the result file, the report and
//! its PNG charts are produced and that verification found nothing lost;
//! no figure is held to a threshold.

use std::path::{Path, PathBuf};
use std::process::Command;

fn magnetar() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_magnetar"));
    command.env("MAGNETAR_LOG", "warn");
    command
}

fn workload(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../bench/workloads")
        .join(name)
}

fn run_ok(command: &mut Command) -> String {
    let out = command.output().expect("magnetar runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("result written");
    serde_json::from_str(&text).expect("result is JSON")
}

#[test]
fn a_smoke_workload_runs_verifies_and_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let result = dir.path().join("results/smoke-standalone.json");
    run_ok(
        magnetar()
            .args(["bench", "run"])
            .arg(workload("smoke.yaml"))
            .args(["--topology", "standalone", "--sample-interval", "1s"])
            .arg("--output")
            .arg(&result),
    );

    let json = read_json(&result);
    for field in [
        "publishRate",
        "consumeRate",
        "backlog",
        "publishLatency99pct",
        "publishDelayLatency99pct",
        "endToEndLatency99pct",
        "aggregatedPublishLatencyQuantiles",
        "aggregatedEndToEndLatencyQuantiles",
    ] {
        assert!(json.get(field).is_some(), "{field} missing from {json}");
    }
    let m = &json["magnetar"];
    let v = &m["verification"];
    assert_eq!(v["passed"], true, "verification: {v}");
    let acknowledged = v["acknowledged"].as_u64().expect("acknowledged count");
    assert!(acknowledged > 0, "nothing was acknowledged: {v}");
    for sub in v["subscriptions"].as_array().expect("subscriptions") {
        assert_eq!(sub["lost"], 0, "{sub}");
    }
    assert_eq!(m["topology"]["kind"], "standalone");
    assert!(m["machine"]["cores"].as_u64().unwrap_or(0) > 0);
    assert!(
        !m["samples"]["processes"]
            .as_array()
            .expect("samples")
            .is_empty(),
        "no process was sampled"
    );

    let report = dir.path().join("report");
    run_ok(
        magnetar()
            .args(["bench", "report"])
            .arg(&result)
            .arg("--output")
            .arg(&report),
    );
    let markdown = std::fs::read_to_string(report.join("report.md")).expect("report.md");
    let pngs: Vec<PathBuf> = std::fs::read_dir(&report)
        .expect("report dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    assert!(pngs.len() >= 4, "charts: {pngs:?}");
    for png in &pngs {
        let bytes = std::fs::read(png).expect("png");
        assert_eq!(&bytes[1..4], b"PNG", "{}", png.display());
        let name = png.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(markdown.contains(name), "report.md does not show {name}");
    }
}

/// The same workload on a decoupled cluster the runner starts (etcd, three
/// bookies for the default 3/3/2 policy, one broker), so that the topology
/// code path runs in CI too.
#[test]
fn a_decoupled_cluster_runs_the_smoke_workload() {
    let etcd_installed = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("etcd").is_file()));
    assert!(
        etcd_installed,
        "etcd is not installed (scripts/setup.sh installs etcd-server)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let result = dir.path().join("smoke-decoupled.json");
    run_ok(
        magnetar()
            .args(["bench", "run"])
            .arg(workload("smoke.yaml"))
            .args([
                "--topology",
                "decoupled",
                "--brokers",
                "1",
                "--bookies",
                "3",
            ])
            .args(["--sample-interval", "1s", "--output"])
            .arg(&result),
    );
    let json = read_json(&result);
    let m = &json["magnetar"];
    assert_eq!(m["verification"]["passed"], true, "{}", m["verification"]);
    assert_eq!(m["topology"]["kind"], "decoupled");
    assert_eq!(m["topology"]["bookies"], 3);
    let names: Vec<&str> = m["samples"]["processes"]
        .as_array()
        .expect("samples")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for expected in ["etcd", "bookie0", "broker0", "bench-client"] {
        assert!(
            names.contains(&expected),
            "{expected} not sampled: {names:?}"
        );
    }
}
