//! The concurrent collector's scenarios: collections while goroutines spin in poll loops (Go's
//! TestPreemptionGC), thousands of stacks scanned while their goroutines run, both collector
//! modes computing the same results and freeing the same objects, and the soft memory limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

mod height;

use height::{build, check, expected, node_type};
use safepoint_gc::{Gc, Mutator, RefChan};
use safepoint_sched::Runtime;

#[test]
fn collections_complete_while_goroutines_spin_in_poll_loops() {
    let rt = Runtime::builder().procs(2).schedcheck(true).build().unwrap();
    let gc = Gc::builder().checkmark(true).build(&rt).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            rt.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n = n.wrapping_add(1);
                    safepoint_sched::poll();
                }
                n
            })
            .unwrap()
        })
        .collect();
    let g = gc.clone();
    let ty = node_type(&gc);
    rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        m.scope(|m, [t]| {
            build(m, ty, 6, t);
            for _ in 0..100 {
                m.collect();
            }
            assert_eq!(check(m, t), expected(6));
        });
    });
    stop.store(true, Ordering::Relaxed);
    for h in spinners {
        h.join().unwrap();
    }
    assert!(gc.cycles() >= 100);
}

#[test]
fn thousands_of_stacks_are_scanned_while_their_goroutines_run() {
    const N: usize = 2000;
    let rt = Runtime::builder().procs(2).schedcheck(true).build().unwrap();
    // Checkmark: a stack scanned twice aborts; a stack missed leaves its object unmarked, and
    // the re-marking from the roots finds it.
    let gc = Gc::builder().checkmark(true).poison(true).build(&rt).unwrap();
    let ty = node_type(&gc);
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(0));
    let parked = RefChan::new(&gc, 0);
    let hs: Vec<_> = (0..N)
        .map(|i| {
            let (gc, stop, ready, parked) =
                (gc.clone(), stop.clone(), ready.clone(), parked.clone());
            rt.spawn(move || {
                let mut m = Mutator::new(&gc).unwrap();
                m.scope(|m, [t, got]| {
                    build(m, ty, 3, t);
                    ready.fetch_add(1, Ordering::SeqCst);
                    if i % 2 == 0 {
                        // Half wait on a channel (parked while scanned) ...
                        m.recv(&parked, got).unwrap();
                    } else {
                        // ... half keep running, checking their tree.
                        while !stop.load(Ordering::Relaxed) {
                            assert_eq!(check(m, t), expected(3));
                            safepoint_sched::yield_now();
                        }
                    }
                    assert_eq!(check(m, t), expected(3));
                });
            })
            .unwrap()
        })
        .collect();
    let g = gc.clone();
    let scanned = rt.block_on(move || {
        while ready.load(Ordering::SeqCst) < N {
            safepoint_sched::yield_now();
        }
        let mut m = Mutator::new(&g).unwrap();
        let mut scanned = Vec::new();
        for _ in 0..3 {
            m.collect();
            scanned.push(g.stats().stacks_scanned);
        }
        scanned
    });
    for s in scanned {
        assert!(s >= N, "a cycle scanned {s} stacks, fewer than the {N} goroutines");
    }
    stop.store(true, Ordering::Relaxed);
    parked.close();
    for h in hs {
        h.join().unwrap();
    }
}

/// A deterministic program: builds a graph, drops parts, rewires; returns its checksums and
/// the live object count after a final collection.
fn program(stop_the_world: bool) -> (Vec<i64>, u64) {
    let rt = Runtime::builder().procs(2).schedcheck(true).build().unwrap();
    let gc = Gc::builder()
        .stop_the_world(stop_the_world)
        .checkmark(true)
        .poison(true)
        .min_heap(256 << 10)
        .build(&rt)
        .unwrap();
    let ty = node_type(&gc);
    let g = gc.clone();
    let sums = rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        let mut sums = Vec::new();
        m.scope(|m, [root, t, u]| {
            build(m, ty, 8, root);
            for i in 0..200i64 {
                build(m, ty, 5, t);
                // Hang the new tree somewhere down the left spine, replacing what was there.
                m.copy(u, root).unwrap();
                for _ in 0..(i % 6) {
                    m.load(u, u, 0).unwrap();
                }
                m.store(u, (i % 2) as usize, t).unwrap();
                if i % 20 == 0 {
                    m.collect();
                }
                sums.push(check(m, root));
            }
            m.clear(t).unwrap();
            m.clear(u).unwrap();
            m.collect();
        });
        sums
    });
    let live = gc.stats().heap.live_objects;
    (sums, live)
}

#[test]
fn both_collector_modes_compute_the_same_and_free_the_same() {
    let stw = program(true);
    let conc = program(false);
    assert_eq!(stw.0, conc.0);
    assert_eq!(stw.1, conc.1, "live objects after the last collection differ");
    assert!(stw.1 > 0);
}

#[test]
fn a_soft_memory_limit_makes_collections_more_frequent() {
    fn cycles(limit: usize) -> u64 {
        let rt = Runtime::builder().procs(2).schedcheck(true).build().unwrap();
        let gc = Gc::builder().stop_the_world(true).memory_limit(limit).build(&rt).unwrap();
        let ty = node_type(&gc);
        let g = gc.clone();
        rt.block_on(move || {
            let mut m = Mutator::new(&g).unwrap();
            m.scope(|m, [keep, t]| {
                // 2 MiB live, then 20 MiB of garbage.
                build(m, ty, 15, keep);
                for _ in 0..300 {
                    build(m, ty, 10, t);
                }
            });
        });
        gc.cycles()
    }
    let free = cycles(usize::MAX);
    let limited = cycles(3 << 20);
    assert!(limited > free, "cycles: {limited} with a limit, {free} without");
}
