//! Smoke tests: spawn, join, yield.
use safepoint_sched::{Runtime, WaitGroup, go, yield_now};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[test]
fn block_on_returns_value() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    assert_eq!(rt.block_on(|| 40 + 2), 42);
}

#[test]
fn spawn_join_many() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let total = rt.block_on(|| {
        let hs: Vec<_> = (0..1000u64).map(|i| go(move || i * 2)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(total, 999 * 1000);
}

#[test]
fn yields_interleave() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    rt.block_on(move || {
        let wg = Arc::new(WaitGroup::new());
        wg.add(2);
        for _ in 0..2 {
            let n = n2.clone();
            let wg = wg.clone();
            go(move || {
                for _ in 0..1000 {
                    n.fetch_add(1, Ordering::Relaxed);
                    yield_now();
                }
                wg.done();
            });
        }
        wg.wait();
    });
    assert_eq!(n.load(Ordering::Relaxed), 2000);
}
