//! Whole-system scenarios through the facade's public API only, as an embedder's code would
//! use it: goroutines, channels and locks of the scheduler with the collector's heap, and a
//! Pebble program run through `safepoint-lang`'s library API.
//!
//! Each scenario checks exact results; a watchdog turns a hang into a failure.

use std::sync::{Arc, mpsc};
use std::time::Duration;

use safepoint::gc::{Gc, Mutator, RefChan, TypeDesc, WordKind};
use safepoint::sched::{Chan, Mutex, Runtime, WaitGroup, go};

/// Runs `f` on a thread; fails if it has not returned within two minutes.
fn must_finish<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(120)).expect("the scenario hung (or panicked)")
}

/// Jobs go out over a scheduler channel to workers; each worker builds a list of the job's
/// length in the heap and sends it over a managed channel to a collector goroutine, which
/// walks it, adds the sum to a total under a goroutine mutex, and forces collections as it
/// goes. Every list must arrive whole after the collections.
#[test]
fn workers_build_lists_that_survive_collections_on_their_way_to_a_consumer() {
    const WORKERS: usize = 4;
    const JOBS: i64 = 64;
    let total = must_finish(|| {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let gc = Gc::new(&rt).unwrap();
        let cell = gc
            .types()
            .register(TypeDesc::Record {
                name: "cell".into(),
                words: vec![WordKind::Tagged, WordKind::Ref],
            })
            .unwrap();
        let g = gc.clone();
        rt.block_on(move || {
            let jobs: Chan<i64> = Chan::new(8);
            let lists = RefChan::new(&g, 4);
            let total = Arc::new(Mutex::new(0i64));
            let wg = Arc::new(WaitGroup::new());
            for _ in 0..WORKERS {
                let (g, jobs, lists, wg) = (g.clone(), jobs.clone(), lists.clone(), wg.clone());
                wg.add(1);
                go(move || {
                    let mut m = Mutator::new(&g).unwrap();
                    for n in jobs.iter() {
                        m.scope(|m, [list, c, v]| {
                            for i in 1..=n * 10 {
                                m.alloc(c, cell).unwrap();
                                m.set_int(v, i).unwrap();
                                m.store(c, 0, v).unwrap();
                                m.store(c, 1, list).unwrap();
                                m.copy(list, c).unwrap();
                            }
                            m.send(&lists, list).unwrap();
                        });
                    }
                    wg.done();
                });
            }
            let consumer = {
                let (g, lists, total) = (g.clone(), lists.clone(), total.clone());
                go(move || {
                    let mut m = Mutator::new(&g).unwrap();
                    let mut received = 0;
                    m.scope(|m, [list, v]| {
                        while m.recv(&lists, list).unwrap() {
                            received += 1;
                            if received % 16 == 0 {
                                m.collect();
                            }
                            let mut sum = 0;
                            while !m.is_null(list).unwrap() {
                                m.load(v, list, 0).unwrap();
                                sum += m.int(v).unwrap();
                                m.load(list, list, 1).unwrap();
                            }
                            *total.lock() += sum;
                        }
                    });
                    received
                })
            };
            for n in 1..=JOBS {
                jobs.send(n);
            }
            jobs.close();
            wg.wait();
            lists.close();
            assert_eq!(consumer.join().unwrap(), JOBS);
            *total.lock()
        })
    });
    // A list of length L sums to L(L+1)/2; the lengths are 10, 20, ..., 640.
    let want: i64 = (1..=JOBS).map(|n| (n * 10) * (n * 10 + 1) / 2).sum();
    assert_eq!(total, want);
}

/// A runtime and its heap are dropped while goroutines holding heap handles are parked on a
/// channel that will never be sent on: the drop unwinds them and returns.
#[test]
fn a_runtime_with_a_heap_and_parked_goroutines_drops_cleanly() {
    must_finish(|| {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let gc = Gc::new(&rt).unwrap();
        let never: Chan<u64> = Chan::new(0);
        let started = Arc::new(WaitGroup::new());
        for _ in 0..16 {
            let (g, never, started) = (gc.clone(), never.clone(), started.clone());
            started.add(1);
            rt.spawn(move || {
                let _m = Mutator::new(&g).unwrap();
                started.done();
                let _ = never.recv();
            })
            .unwrap();
        }
        let s = started.clone();
        rt.block_on(move || s.wait());
        drop(gc);
        drop(rt);
    });
}

/// A Pebble program (goroutines, channels, select, closures, vectors, maps) run through the
/// language's library API: it checks its own results and exits non-zero if one is wrong.
#[test]
fn a_pebble_program_runs_through_the_library_api() {
    let src = r#"
fn fib(n) { if n < 2 { return n } return fib(n - 1) + fib(n - 2) }
let ch = chan()
let done = chan()
for i in 0..8 {
    go fn() { ch <- fib(15 + i % 3) }()
}
let sum = 0
for i in 0..8 {
    sum = sum + <-ch
}
let want = 3 * fib(15) + 3 * fib(16) + 2 * fib(17)
if sum != want {
    print("wrong sum", sum, want)
    exit(3)
}
let m = {}
let v = []
for i in 0..1000 {
    m[i] = i * i
    push(v, [i, i * i])
}
let ok = true
for i in 0..1000 { if m[i] != v[i][1] { ok = false } }
if not ok {
    print("map and vector disagree")
    exit(4)
}
go fn() { done <- "ok" }()
select {
case r = <-done { if r != "ok" { exit(5) } }
}
gc()
if len(v) != 1000 or len(keys(m)) != 1000 { exit(6) }
"#;
    let status = must_finish(move || {
        let mut opts = safepoint_lang::Options::default();
        opts.procs = 2;
        safepoint_lang::run("system.pb", src, &opts)
    });
    assert_eq!(status, 0);
}
