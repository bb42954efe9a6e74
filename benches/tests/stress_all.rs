//! `stress all` runs on after a workload fails and then exits 1 naming it; with every workload
//! passing it exits 0. The workloads are chosen and small (`stress all W:ARGS ...`), and the
//! failures real ones of the child: an argument that is not a number, a workload that does
//! not exist.

use std::process::{Command, Output};

fn stress_all(specs: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stress"))
        .arg("all")
        .args(specs)
        .env_remove("SAFEPOINT_DEBUG")
        .output()
        .expect("run stress")
}

/// The `"workload"` of each JSON line on standard output.
fn workloads_run(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["workload"].as_str().expect("a workload name").to_string()
        })
        .collect()
}

#[test]
fn stress_all_exits_1_when_a_workload_fails_and_runs_the_rest() {
    let out = stress_all(&["binary-trees:4", "churn:nope", "nosuch", "spawn:1000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("argument 1 is \"nope\", not a whole number"), "{stderr}");
    assert!(stderr.contains("stress all: failed: churn:nope nosuch\n"), "{stderr}");
    // The workloads before and after the failures ran.
    assert_eq!(workloads_run(&out), ["binary-trees", "spawn"], "{stderr}");
}

#[test]
fn stress_all_exits_0_when_every_workload_passes() {
    let out = stress_all(&["binary-trees:4", "spawn:1000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert_eq!(workloads_run(&out), ["binary-trees", "spawn"], "{stderr}");
}
