//! The soak workload, short: `stress soak --seconds 3 --goroutines 1000` (the full run is ten
//! minutes with 10,000; see the README). Everything at once under back-to-back collections
//! with checkmark and poison on: spawning, channels, timers, blocking calls, loops that only
//! the preemption signal can stop, a mutex, panicking goroutines. It must end (a watchdog
//! kills it after two minutes), exit 0 and report no failure.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The integer field `key` of a JSON line.
fn json_int(line: &str, key: &str) -> i64 {
    let pat = format!("\"{key}\":");
    let at = line.find(&pat).unwrap_or_else(|| panic!("no {key} in {line}")) + pat.len();
    let digits: String = line[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap_or_else(|_| panic!("{key} in {line}"))
}

#[test]
fn short_soak_reports_no_failure() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stress"))
        .args(["soak", "--seconds", "3", "--goroutines", "1000"])
        .env_remove("SAFEPOINT_DEBUG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run stress");
    // A failure guard only: a hang (at the end, say, in the runtime's shutdown) fails the test
    // instead of hanging it.
    let t0 = Instant::now();
    while child.try_wait().expect("wait for stress").is_none() {
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("stress soak still running after two minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("stress output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stress soak: {}\n{stdout}\n{stderr}", out.status);
    let json = stdout.lines().last().expect("a JSON line");
    assert!(json.starts_with("{\"workload\":\"soak\""), "{json}");
    assert_eq!(json_int(json, "failures"), 0, "{json}\n{stderr}");
    assert!(json_int(json, "cycles") >= 1, "no collection completed: {json}");
    assert!(json_int(json, "stops") >= 1, "{json}");
    assert!(json_int(json, "goroutines_run") > 1000, "the workers spawned nothing: {json}");
    assert!(json_int(json, "panics_caught") >= 1, "no panic was caught: {json}");
}
