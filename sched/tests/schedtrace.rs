//! `schedtrace`: sysmon prints a line of the scheduler's state at the interval set, through the
//! message sink. (Its own binary: the sink is process-wide.)

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use safepoint_sched::{Runtime, go, set_message_sink, yield_now};

/// The `key=value` fields of a `SCHED` line, and its per-P queue lengths.
fn fields(line: &str) -> (Vec<(String, u64)>, Vec<u64>) {
    let rest = line.strip_prefix("SCHED ").expect("starts with SCHED");
    let (ms, rest) = rest.split_once("ms: ").expect("the time in ms");
    ms.parse::<u64>().expect("ms is a number");
    let (kvs, ps) = rest.split_once(" [").expect("per-P queues in brackets");
    let kvs = kvs
        .split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect();
    let ps = ps.strip_suffix(']').expect("closing bracket");
    (kvs, ps.split(' ').map(|n| n.parse().expect("a queue length")).collect())
}

#[test]
fn schedtrace_is_off_by_default_and_prints_a_line_at_each_interval_through_the_sink() {
    // The lines, and a condition variable the sink signals at each (the test waits on it).
    let sink = Arc::new((Mutex::new(Vec::<String>::new()), Condvar::new()));
    let lines = &sink.0;
    let s = sink.clone();
    set_message_sink(Some(Box::new(move |m: &str| {
        s.0.lock().unwrap().push(m.to_string());
        s.1.notify_all();
    })));
    // Off by default (unless the environment asks for it).
    if !std::env::var("SAFEPOINT_DEBUG").is_ok_and(|v| v.contains("schedtrace")) {
        let rt = Runtime::builder().procs(1).build().unwrap();
        rt.block_on(|| std::thread::sleep(Duration::from_millis(30)));
        drop(rt);
        assert!(!lines.lock().unwrap().iter().any(|l| l.starts_with("SCHED ")));
    }
    let rt =
        Runtime::builder().procs(2).schedtrace(Some(Duration::from_millis(5))).build().unwrap();
    // Busy for a while, then idle: lines come either way.
    rt.block_on(|| {
        let t0 = Instant::now();
        let hs: Vec<_> = (0..8)
            .map(|_| {
                go(move || {
                    while t0.elapsed() < Duration::from_millis(40) {
                        yield_now();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    // Wait for a dozen lines; the deadline only turns a hang into a failure.
    let (got, timeout) = sink
        .1
        .wait_timeout_while(lines.lock().unwrap(), Duration::from_secs(30), |l| {
            l.iter().filter(|l| l.starts_with("SCHED ")).count() < 12
        })
        .unwrap();
    assert!(!timeout.timed_out(), "fewer than 12 SCHED lines in 30 s");
    drop(got);
    drop(rt);
    set_message_sink(None);
    let got = lines.lock().unwrap().clone();
    let mut last_ms = 0;
    for line in got.iter().filter(|l| l.starts_with("SCHED ")) {
        let (kvs, ps) = fields(line);
        let keys: Vec<&str> = kvs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["gomaxprocs", "idleprocs", "threads", "spinningthreads", "idlethreads", "runqueue"],
            "{line}"
        );
        assert_eq!(kvs[0].1, 2, "{line}");
        assert!(kvs[1].1 <= 2, "{line}");
        assert_eq!(ps.len(), 2, "{line}");
        let ms: u64 = line["SCHED ".len()..].split_once("ms").unwrap().0.parse().unwrap();
        assert!(ms >= last_ms, "time went back: {line}");
        last_ms = ms;
    }
}
