//! The GC workloads run through the `stress` binary, as `peers/compare` runs them: the
//! canonical binary-trees output, byte for byte, and churn's check.

use std::process::Command;

/// Runs `stress ARGS...`; its stdout lines (the run must succeed).
fn stress(args: &[&str]) -> Vec<String> {
    stress_env("", args)
}

/// Runs `stress ARGS...` with `SAFEPOINT_DEBUG=debug`; its stdout lines (it must succeed).
fn stress_env(debug: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_stress"))
        .args(args)
        .env("SAFEPOINT_DEBUG", debug)
        .output()
        .expect("run stress");
    assert!(
        out.status.success(),
        "stress {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8").lines().map(str::to_owned).collect()
}

/// The integer field `key` of a JSON line (the figures are flat numbers).
fn json_int(line: &str, key: &str) -> i64 {
    let pat = format!("\"{key}\":");
    let at = line.find(&pat).unwrap_or_else(|| panic!("no {key} in {line}")) + pat.len();
    let digits: String = line[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap_or_else(|_| panic!("{key} in {line}"))
}

#[test]
fn binary_trees_10_prints_the_canonical_lines_then_json() {
    let lines = stress(&["binary-trees", "10"]);
    let want = [
        "stretch tree of depth 11\t check: 4095",
        "1024\t trees of depth 4\t check: 31744",
        "256\t trees of depth 6\t check: 32512",
        "64\t trees of depth 8\t check: 32704",
        "16\t trees of depth 10\t check: 32752",
        "long lived tree of depth 10\t check: 2047",
    ];
    assert_eq!(&lines[..6], &want[..], "{lines:#?}");
    let json = lines.last().expect("a JSON line");
    assert!(json.starts_with("{\"workload\":\"binary-trees\",\"args\":\"10\""), "{json}");
    for f in ["wall_ms", "peak_rss_kb", "gc_cycles", "p99_pause_us", "max_pause_us"] {
        assert!(json.contains(&format!("\"{f}\":")), "{f} missing: {json}");
    }
}

#[test]
fn churn_10_checks_g_times_200_times_sum_8() {
    // The peers' tree: sum(0) = 1, sum(h) = h + 2 sum(h - 1).
    let sum8 = (1..=8).fold(1i64, |s, h| h + 2 * s);
    assert_eq!(sum8, 758);
    let lines = stress(&["churn", "10"]);
    let json = lines.last().expect("a JSON line");
    assert_eq!(json_int(json, "check"), 10 * 200 * sum8, "{json}");
    assert!(json.contains("\"gc_cycles\":"), "{json}");
}

/// The compiled-style twins (frames with stack maps, the collector's trusted path), per call
/// and batched, and the safe one on branded sections, print the same lines and checks, in both collector modes and with the
/// collector's own checks on.
#[test]
fn compiled_workloads_match_the_checked_ones() {
    let sum8 = (1..=8).fold(1i64, |s, h| h + 2 * s);
    let want = stress(&["binary-trees", "10"]);
    // Per call in every mode; batched (the same code with small subtrees in one section) in
    // the default one.
    let runs =
        [("", ""), ("gcstoptheworld=1", ""), ("gccheckmark=1,gcpoison=1", ""), ("", "-batched")];
    for (debug, suffix) in runs {
        {
            let lines = stress_env(debug, &[&format!("binary-trees-compiled{suffix}"), "10"]);
            assert_eq!(&lines[..6], &want[..6], "{debug} {suffix}: {lines:#?}");
            let lines = stress_env(debug, &[&format!("churn-compiled{suffix}"), "10"]);
            let json = lines.last().expect("a JSON line");
            assert_eq!(json_int(json, "check"), 10 * 200 * sum8, "{debug} {suffix}: {json}");
        }
    }
    // The safe twin on branded sections, with the collector's checks on too.
    for debug in ["", "gccheckmark=1,gcpoison=1"] {
        let lines = stress_env(debug, &["binary-trees-section", "10"]);
        assert_eq!(&lines[..6], &want[..6], "{debug} section: {lines:#?}");
    }
    // gcbench exits 1 if its long-lived data is lost.
    for w in ["gcbench-compiled", "gcbench-compiled-batched"] {
        let lines = stress(&[w]);
        assert!(lines.last().is_some_and(|l| l.contains("\"gc_cycles\":")), "{w}: {lines:?}");
    }
}
