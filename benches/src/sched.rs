//! Scheduler workloads: spawn, yield, stw, parked. Their Go twins are in `peers/go/sched.go`;
//! each workload matches its twin's definition.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use safepoint::sched::{
    GoroutineRef, Runtime, WaitGroup, WaitReason, go, park, poll, stop_the_world, yield_now,
};

use crate::report::{Value, arg_num, emit, percentile, rss_kb};

/// Runs scheduler workload `w`.
pub fn run(w: &str, args: &[String]) {
    match w {
        "spawn" => spawn(arg_num(args, 0, 200_000)),
        "yield" => yield_(arg_num(args, 0, 1_000_000)),
        "stw" => {
            stw(arg_num(args, 0, 2) as usize, args.get(1).map(|s| s.as_str()).unwrap_or("poll"))
        }
        "parked" => parked(arg_num(args, 0, 100_000) as usize),
        _ => unreachable!("dispatched by stress"),
    }
}

/// Spawn one goroutine and join it, N times in a row (the Go twin: `wg.Add(1); go f();
/// wg.Wait()` per iteration).
fn spawn(n: u64) {
    let rt = Runtime::new().expect("runtime");
    let ns = rt.block_on(move || {
        // Warm the G and stack caches as Go's is warm after its first goroutines.
        for _ in 0..1000 {
            go(|| ()).join().unwrap();
        }
        let t = Instant::now();
        for _ in 0..n {
            go(|| ()).join().unwrap();
        }
        t.elapsed().as_nanos() as f64 / n as f64
    });
    emit("spawn", &n.to_string(), &[("ns_per_op", ns.into())]);
}

/// Two goroutines on one P, each yielding N/2 times: time per yield.
fn yield_(n: u64) {
    let rt = Runtime::builder().procs(1).build().expect("runtime");
    let ns = rt.block_on(move || {
        let wg = Arc::new(WaitGroup::new());
        wg.add(2);
        let t = Instant::now();
        for _ in 0..2 {
            let wg = wg.clone();
            go(move || {
                for _ in 0..n / 2 {
                    yield_now();
                }
                wg.done();
            });
        }
        wg.wait();
        t.elapsed().as_nanos() as f64 / n as f64
    });
    emit("yield", &n.to_string(), &[("ns_per_op", ns.into())]);
}

#[inline(never)]
fn spin_body(x: &AtomicUsize) {
    x.fetch_add(1, Ordering::Relaxed);
}

/// K goroutines spinning, 400 stops of the world: time from the request until every P is
/// stopped. `poll`: each iteration calls `poll()` (a synchronous preemption point); `nopoll`:
/// no calls at all (an atomic add and a flag load), stopped by asynchronous preemption.
///
/// A goroutine that never polls keeps its P until it ends (time slices end only at synchronous
/// points), so in `nopoll` mode the stopper never yields: it waits by spinning, and only as
/// many spinners run at once as there are other Ps (Go's twin runs them in turns, also at most
/// GOMAXPROCS - 1 beside the stopper while it stops the world).
fn stw(k: usize, mode: &str) {
    let args = format!("{k} {mode}");
    let nopoll = match mode {
        "poll" => false,
        "nopoll" => true,
        _ => {
            eprintln!("stw: mode must be poll or nopoll");
            std::process::exit(2);
        }
    };
    let rt = Runtime::new().expect("runtime");
    let mut us = rt.block_on(move || {
        let stop = Arc::new(AtomicBool::new(false));
        let ctr = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..k)
            .map(|_| {
                let (stop, ctr) = (stop.clone(), ctr.clone());
                if nopoll {
                    go(move || {
                        while !stop.load(Ordering::Relaxed) {
                            ctr.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                } else {
                    go(move || {
                        while !stop.load(Ordering::Relaxed) {
                            spin_body(&ctr);
                            poll();
                        }
                    })
                }
            })
            .collect();
        // Let the spinners get going.
        while ctr.load(Ordering::Relaxed) < 10_000 {
            if nopoll {
                std::hint::spin_loop();
            } else {
                yield_now();
            }
        }
        let mut us = Vec::with_capacity(400);
        for _ in 0..400 {
            let t = Instant::now();
            let w = stop_the_world("bench");
            us.push(t.elapsed().as_nanos() as f64 / 1000.0);
            w.start();
            // Let the world run a little between stops, as Go's twin does.
            if nopoll {
                // Until a spinner has run again (a goroutine still held from this stop would be
                // taken again at once, and the next stop would measure nothing), then 20 µs.
                let (n, t) = (ctr.load(Ordering::Relaxed), Instant::now());
                while ctr.load(Ordering::Relaxed) == n && t.elapsed().as_millis() < 100 {
                    std::hint::spin_loop();
                }
                let t = Instant::now();
                while t.elapsed().as_micros() < 20 {
                    std::hint::spin_loop();
                }
            } else {
                for _ in 0..3 {
                    yield_now();
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
        us
    });
    let p50 = percentile(&mut us, 50.0);
    let p99 = percentile(&mut us, 99.0);
    let max = percentile(&mut us, 100.0);
    emit("stw", &args, &[("p50_us", p50.into()), ("p99_us", p99.into()), ("max_us", max.into())]);
}

/// N goroutines parked at once: resident memory per parked goroutine.
fn parked(n: usize) {
    let rt = Runtime::new().expect("runtime");
    let per_g = rt.block_on(move || {
        let tokens = Arc::new(Mutex::new(Vec::<GoroutineRef>::with_capacity(n)));
        let before = rss_kb();
        let mut hs = Vec::with_capacity(n);
        for _ in 0..n {
            let tokens = tokens.clone();
            hs.push(go(move || {
                park(WaitReason::Park, |r| {
                    tokens.lock().unwrap().push(r);
                    true
                })
            }));
        }
        // Wait until every one of them is parked (its token handed over).
        while tokens.lock().unwrap().len() < n {
            yield_now();
        }
        let after = rss_kb();
        for r in std::mem::take(&mut *tokens.lock().unwrap()) {
            r.ready();
        }
        for h in hs {
            h.join().unwrap();
        }
        (after.saturating_sub(before)) as f64 / n as f64
    });
    emit("parked", &n.to_string(), &[("rss_kb_per_g", Value::Float(per_g))]);
}
