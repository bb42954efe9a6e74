//! Stress: many goroutines on one to eight Ps build trees, check them, and hand whole trees and
//! subtrees of trees they keep to each other over one managed channel, while collections run
//! often (a 256 KiB heap goal, and some goroutines call `collect()`) with checkmark and poison
//! on, in the concurrent mode and in the stop-the-world mode. Every tree's checksum, walked in
//! the heap, must equal the one computed from its seed: a lost object, a freed object still
//! reachable, or a stale word would change it (or panic on a poisoned header).

mod trees;

use safepoint_gc::{Gc, Mutator, RefChan};
use safepoint_sched::Runtime;
use trees::{build, checksum, expected};

#[test]
fn goroutines_build_check_and_exchange_trees_under_frequent_collections_concurrent() {
    stress(false, 2);
}

#[test]
fn goroutines_build_check_and_exchange_trees_under_frequent_collections_stop_the_world() {
    stress(true, 2);
}

/// One P: the mark worker is fractional (it rests between batches, and marks whenever the P
/// would idle), so marking and the program share the one processor.
#[test]
fn one_p_with_a_fractional_mark_worker() {
    stress(false, 1);
}

/// Four Ps: a dedicated mark worker beside assists on three other Ps.
#[test]
fn four_ps_with_a_dedicated_mark_worker() {
    stress(false, 4);
}

/// Six Ps: the driver marks as a dedicated worker beside a fractional worker goroutine.
#[test]
fn six_ps_with_a_dedicated_and_a_fractional_mark_worker() {
    stress(false, 6);
}

/// Eight Ps: two dedicated workers, the driver and a goroutine it starts.
#[test]
fn eight_ps_with_two_dedicated_mark_workers() {
    stress(false, 8);
}

fn stress(stop_the_world: bool, procs: usize) {
    let (goroutines, rounds) = if cfg!(debug_assertions) { (64, 25) } else { (512, 100) };
    let rt = Runtime::builder().procs(procs).schedcheck(true).build().unwrap();
    let gc = Gc::builder()
        .stop_the_world(stop_the_world)
        .checkmark(true)
        .poison(true)
        .min_heap(256 << 10)
        .ignore_env()
        .build(&rt)
        .unwrap();
    let t = trees::types(&gc);
    let ch = RefChan::new(&gc, 16);
    let hs: Vec<_> = (0..goroutines as u64)
        .map(|g| {
            let (gc, ch) = (gc.clone(), ch.clone());
            rt.spawn(move || {
                let mut m = Mutator::new(&gc).unwrap();
                let mut received = 0;
                m.scope(|m, [keep, tmp, pair, v, sub]| {
                    let keep_seed = g * 1_000_003;
                    build(m, t, keep_seed, 6, keep);
                    for round in 0..rounds {
                        // A fresh tree, checked, then garbage.
                        let seed = (g << 32) | round;
                        build(m, t, seed, 4, tmp);
                        assert_eq!(checksum(m, t, tmp), expected(seed, 4));
                        // Send either the fresh tree or a subtree of the kept one (which
                        // then is read by two goroutines at once), with its checksum.
                        m.alloc(pair, t.pair).unwrap();
                        let want = if round % 2 == 0 {
                            m.store(pair, 0, tmp).unwrap();
                            expected(seed, 4)
                        } else {
                            // The left child's right child of the kept tree.
                            m.load(sub, keep, 0).unwrap();
                            m.load(sub, sub, 1).unwrap();
                            m.store(pair, 0, sub).unwrap();
                            let (l, _) = trees::children(keep_seed);
                            let (_, lr) = trees::children(l);
                            expected(lr, 4)
                        };
                        m.set_int(v, want).unwrap();
                        m.store(pair, 1, v).unwrap();
                        m.send(&ch, pair).unwrap();
                        m.clear(pair).unwrap();
                        m.clear(tmp).unwrap();
                        m.clear(sub).unwrap();
                        // Receive someone's tree and check it against its checksum.
                        assert!(m.recv(&ch, pair).unwrap(), "channel closed");
                        m.load(v, pair, 1).unwrap();
                        let want = m.int(v).unwrap();
                        m.load(tmp, pair, 0).unwrap();
                        assert_eq!(checksum(m, t, tmp), want, "goroutine {g} round {round}");
                        received += 1;
                        // Besides the pacer's cycles, one goroutine in 16 collects every
                        // fifth round, so cycles are frequent whatever the pacing.
                        if g % 16 == 0 && round % 5 == 4 {
                            m.collect();
                        }
                    }
                    assert_eq!(checksum(m, t, keep), expected(keep_seed, 6), "goroutine {g}");
                });
                received
            })
            .unwrap()
        })
        .collect();
    let mut total = 0;
    for h in hs {
        total += h.join().unwrap();
    }
    assert_eq!(total, goroutines * rounds as usize);
    assert!(gc.cycles() >= 5, "only {} cycles: collections were not frequent", gc.cycles());
    // Everything is garbage now.
    let g2 = gc.clone();
    rt.block_on(move || Mutator::new(&g2).unwrap().collect());
    assert_eq!(gc.stats().heap.live_objects, 0, "{:?}", gc.stats().heap);
}
