//! The execution trace (`Builder::trace`, `SAFEPOINT_TRACE=FILE`): a traced run of goroutines
//! building trees through several collections writes a file that parses as Chrome trace-event
//! JSON, has every phase of every cycle on the GC track, stack scans inside goroutine spans,
//! the stops, and no overlapping spans on one P's track.

mod height;

use std::collections::{BTreeMap, BTreeSet};

use height::{build, check, expected, node_type};
use safepoint_gc::{Gc, Mutator};
use safepoint_sched::Runtime;
use serde_json::Value;

/// A span: track, start and end in nanoseconds, name, category, its argument.
#[derive(Debug, Clone)]
struct Span {
    tid: u64,
    from: u64,
    to: u64,
    name: String,
    cat: String,
    arg: u64,
}

fn ns(v: &Value) -> u64 {
    (v.as_f64().expect("a number of microseconds") * 1000.0).round() as u64
}

#[test]
fn a_traced_run_has_every_phase_of_every_cycle_and_no_overlaps_on_a_p() {
    let dir = std::env::temp_dir().join(format!("safepoint-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("trace.json");
    let procs = 2;
    let rt = Runtime::builder().procs(procs).trace(Some(file.clone())).build().unwrap();
    let gc = Gc::builder().min_heap(1 << 20).build(&rt).unwrap();
    let ty = node_type(&gc);
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let gc = gc.clone();
            rt.spawn(move || {
                let mut m = Mutator::new(&gc).unwrap();
                m.scope(|m, [keep, t]| {
                    build(m, ty, 8, keep);
                    for i in 0..30 {
                        build(m, ty, 8, t);
                        assert_eq!(check(m, t), expected(8));
                        if i % 10 == 0 {
                            m.collect();
                        }
                        // A blocking call hands the P on: the goroutine's span must end there.
                        // Some last long enough for sysmon to hand the P to another thread.
                        safepoint_sched::blocking(|| {
                            if i % 7 == 0 {
                                std::thread::sleep(std::time::Duration::from_micros(300));
                            }
                        });
                    }
                    assert_eq!(check(m, keep), expected(8));
                });
            })
            .unwrap()
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let cycles = gc.cycles();
    assert!(cycles >= 4, "only {cycles} cycles");
    drop(gc);
    drop(rt);

    let text = std::fs::read_to_string(&file).expect("the trace file was written");
    let json: Value = serde_json::from_str(&text).expect("the trace parses as JSON");
    let events = json["traceEvents"].as_array().expect("a traceEvents array");
    assert_eq!(json["otherData"]["dropped"], 0);
    let mut tracks = BTreeMap::new();
    let mut spans = Vec::new();
    for e in events {
        assert_eq!(e["pid"], 1, "one process: {e}");
        match e["ph"].as_str().unwrap() {
            "M" => {
                if e["name"] == "thread_name" {
                    tracks.insert(
                        e["tid"].as_u64().unwrap(),
                        e["args"]["name"].as_str().unwrap().to_string(),
                    );
                }
            }
            "X" => {
                let from = ns(&e["ts"]);
                let args = e["args"].as_object().unwrap();
                assert_eq!(args.len(), 1, "{e}");
                spans.push(Span {
                    tid: e["tid"].as_u64().unwrap(),
                    from,
                    to: from + ns(&e["dur"]),
                    name: e["name"].as_str().unwrap().to_string(),
                    cat: e["cat"].as_str().unwrap().to_string(),
                    arg: args.values().next().unwrap().as_u64().unwrap(),
                })
            }
            ph => panic!("unexpected phase {ph}: {e}"),
        }
    }
    let tid_of = |name: &str| *tracks.iter().find(|(_, n)| *n == name).expect(name).0;
    for p in 0..procs {
        assert_eq!(tracks[&(p as u64)], format!("P{p}"));
    }
    let (gc_tid, stops_tid) = (tid_of("GC"), tid_of("stops"));

    // Every phase of every cycle, once each, in order, without overlaps.
    let phases: Vec<&Span> = spans.iter().filter(|s| s.tid == gc_tid).collect();
    for c in 1..=cycles {
        let names: Vec<&str> =
            phases.iter().filter(|s| s.arg == c).map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["quiesce", "mark", "mark termination", "sweep"], "cycle {c}");
    }
    for w in phases.windows(2) {
        assert!(w[0].to <= w[1].from, "GC phases overlap: {:?} and {:?}", w[0], w[1]);
    }
    // A stop per cycle at least (its mark termination), named by its reason.
    let stops = spans.iter().filter(|s| s.tid == stops_tid).count() as u64;
    assert!(stops >= cycles, "{stops} stops for {cycles} cycles");
    assert!(spans.iter().any(|s| s.tid == stops_tid && s.name == "gc mark termination"));

    // Each P: goroutine spans never overlap; scans and assists lie inside one of them.
    let mut goroutines = BTreeSet::new();
    let mut scans = 0;
    for p in 0..procs as u64 {
        let mut runs: Vec<&Span> = spans.iter().filter(|s| s.tid == p && s.cat == "run").collect();
        runs.sort_by_key(|s| s.from);
        assert!(!runs.is_empty(), "P{p} ran nothing");
        for w in runs.windows(2) {
            assert!(w[0].to <= w[1].from, "P{p}: {:?} overlaps {:?}", w[0], w[1]);
        }
        for r in &runs {
            assert_eq!(r.name, format!("G{}", r.arg));
            goroutines.insert(r.arg);
        }
        for n in spans.iter().filter(|s| s.tid == p && s.cat != "run") {
            assert!(["stack scan", "assist"].contains(&n.name.as_str()), "{n:?}");
            scans += usize::from(n.name == "stack scan");
            assert!(
                runs.iter().any(|r| r.from <= n.from && n.to <= r.to),
                "P{p}: {n:?} is inside no goroutine's span"
            );
        }
    }
    assert!(goroutines.len() >= 5, "goroutines seen running: {goroutines:?}");
    assert!(scans > 0, "no stack scan traced");
    std::fs::remove_dir_all(&dir).unwrap();
}
