//! A traced Pebble run (`SAFEPOINT_TRACE=FILE`): the file parses as Chrome trace-event JSON,
//! has every phase of every cycle on the GC track (of the last, those it finished before the
//! program ended), and no overlapping goroutine spans on a P's track. (Its own binary: it sets the environment variable for itself.)

use safepoint_lang::{Options, run};
use serde_json::Value;

const PROGRAM: &str = r#"
fn make(d) {
    if d == 0 { return [nil, nil] }
    return [make(d - 1), make(d - 1)]
}
fn check(t) {
    if t[0] == nil { return 1 }
    return 1 + check(t[0]) + check(t[1])
}
let results = chan()
for w in 0..4 {
    go fn() {
        let total = 0
        for i in 0..60 { total = total + check(make(10)) }
        results <- total
    }()
}
let sum = 0
for i in 0..4 { sum = sum + <-results }
if sum != 4 * 60 * 2047 { exit(3) }
"#;

fn ns(v: &Value) -> u64 {
    (v.as_f64().expect("microseconds") * 1000.0).round() as u64
}

#[test]
fn a_traced_pebble_run_writes_every_phase_of_every_cycle_and_no_overlaps() {
    let dir = std::env::temp_dir().join(format!("pebble-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("trace.json");
    // SAFETY: this test binary runs this one test; no other thread reads the environment.
    unsafe { std::env::set_var("SAFEPOINT_TRACE", &file) };
    // Field by field, so that it builds whether or not `Options` is `#[non_exhaustive]`.
    #[allow(clippy::field_reassign_with_default)]
    let opts = {
        let mut o = Options::default();
        o.procs = 2;
        o
    };
    assert_eq!(run("trace.pb", PROGRAM, &opts), 0);

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("the trace was written"))
            .expect("the trace parses as JSON");
    let events = json["traceEvents"].as_array().unwrap();
    let track = |name: &str| {
        events
            .iter()
            .find(|e| e["name"] == "thread_name" && e["args"]["name"] == name)
            .and_then(|e| e["tid"].as_u64())
            .unwrap_or_else(|| panic!("no track {name}"))
    };
    let spans: Vec<(u64, u64, u64, &str, u64)> = events
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| {
            let from = ns(&e["ts"]);
            let arg = e["args"].as_object().unwrap().values().next().unwrap().as_u64().unwrap();
            (
                e["tid"].as_u64().unwrap(),
                from,
                from + ns(&e["dur"]),
                e["cat"].as_str().unwrap(),
                arg,
            )
        })
        .collect();
    let gc = track("GC");
    let cycles = spans.iter().filter(|s| s.0 == gc).map(|s| s.4).max().unwrap_or(0);
    assert!(cycles >= 2, "{cycles} cycles traced");
    for c in 1..=cycles {
        let names: Vec<&str> = events
            .iter()
            .filter(|e| e["ph"] == "X" && e["tid"] == gc && e["args"]["cycle"] == c)
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        let all = ["quiesce", "mark", "mark termination", "sweep"];
        if c == cycles {
            // The last cycle may still be running when the program ends (its driver stops
            // with the runtime): the phases it finished, in order.
            assert!(!names.is_empty() && all.starts_with(&names), "cycle {c}: {names:?}");
        } else {
            assert_eq!(names, all, "cycle {c}");
        }
    }
    for p in 0..2 {
        let tid = track(&format!("P{p}"));
        let mut runs: Vec<_> = spans.iter().filter(|s| s.0 == tid && s.3 == "run").collect();
        assert!(!runs.is_empty(), "P{p} ran nothing");
        runs.sort_by_key(|s| s.1);
        for w in runs.windows(2) {
            assert!(w[0].2 <= w[1].1, "P{p}: {:?} overlaps {:?}", w[0], w[1]);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
