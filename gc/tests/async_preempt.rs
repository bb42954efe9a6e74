//! Collections while goroutines never reach a synchronous safepoint: tight loops with no
//! polls, and loops of mutator operations (which poll nowhere), stopped by the preemption
//! signal. With checkmark on, nothing reachable may be missed, in both collector modes.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
use safepoint_sched::Runtime;

fn run(stop_the_world: bool) {
    // One P more than the goroutines that never poll: time slices end only at synchronous
    // points, so the collecting goroutine needs a P of its own.
    let rt = Runtime::builder().procs(4).build().unwrap();
    let gc = Gc::builder()
        .stop_the_world(stop_the_world)
        .checkmark(true)
        .poison(true)
        .build(&rt)
        .unwrap();
    let pair = gc
        .types()
        .register(TypeDesc::Record { name: "pair".into(), words: vec![WordKind::Ref; 2] })
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let spins = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    // A loop with no call and no poll at all.
    {
        let (stop, spins) = (stop.clone(), spins.clone());
        hs.push(
            rt.spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
                spins.fetch_add(black_box(x) | 1, Ordering::Relaxed);
            })
            .unwrap(),
        );
    }
    // Loops of mutator operations that move references between slots and fields: no
    // operation polls, so stops reach them only by signal (between two operations).
    for _ in 0..2 {
        let (stop, gc) = (stop.clone(), gc.clone());
        hs.push(
            rt.spawn(move || {
                let mut m = Mutator::new(&gc).unwrap();
                m.scope(|m, [a, b, c]| {
                    m.alloc(a, pair).unwrap();
                    m.alloc(b, pair).unwrap();
                    m.store(a, 0, b).unwrap();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        // a.0 = b, b.1 = a, swap via c: both always reachable from a.
                        m.load(c, a, 0).unwrap();
                        m.store(c, 1, a).unwrap();
                        m.load(b, c, 1).unwrap();
                        m.store(a, 0, c).unwrap();
                        n += 1;
                    }
                    assert!(m.same(a, b).unwrap());
                    m.load(c, a, 0).unwrap();
                    assert_eq!(m.type_of(c).unwrap(), pair);
                    n
                });
            })
            .unwrap(),
        );
    }
    let g = gc.clone();
    rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        for _ in 0..20 {
            m.collect();
        }
    });
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    assert!(gc.cycles() >= 20);
    assert!(rt.stats().async_preemptions > 0, "{:?}", rt.stats());
}

#[test]
fn concurrent_collections_reach_goroutines_that_never_poll() {
    run(false);
}

#[test]
fn stop_the_world_collections_reach_goroutines_that_never_poll() {
    run(true);
}
