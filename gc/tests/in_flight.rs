//! A reference in flight on a managed channel is a root: sent by a goroutine that then
//! drops its own copy and exits, it survives several collections (with the freed memory
//! around it reused and poisoned) and is received intact.

mod trees;

use safepoint_gc::{Gc, Mutator, RefChan};
use safepoint_sched::Runtime;
use trees::{build, checksum, expected};

#[test]
fn a_reference_received_after_several_collections_is_intact() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder().checkmark(true).poison(true).ignore_env().build(&rt).unwrap();
    let t = trees::types(&gc);
    let ch = RefChan::new(&gc, 4);
    let (g1, c1) = (gc.clone(), ch.clone());
    rt.block_on(move || {
        // The sender: its only copies are its slots, gone when it exits.
        let (g2, c2) = (g1.clone(), c1.clone());
        safepoint_sched::go(move || {
            let mut m = Mutator::new(&g2).unwrap();
            m.scope(|m, [a, b]| {
                build(m, t, 77, 7, a);
                build(m, t, 78, 3, b);
                m.send(&c2, a).unwrap();
                m.send(&c2, b).unwrap();
            });
        })
        .join()
        .unwrap();
        assert_eq!(c1.len(), 2);
        let mut m = Mutator::new(&g1).unwrap();
        let before = g1.cycles();
        m.scope(|m, [junk, r]| {
            for i in 0..4 {
                // Garbage of the same shapes, so freed slots are reused between collections.
                for s in 0..20 {
                    build(m, t, 1000 * i + s, 4, junk);
                }
                m.clear(junk).unwrap();
                m.collect();
            }
            assert!(g1.cycles() >= before + 4);
            assert!(m.recv(&c1, r).unwrap());
            assert_eq!(checksum(m, t, r), expected(77, 7));
            m.collect();
            assert_eq!(checksum(m, t, r), expected(77, 7));
            assert!(m.recv(&c1, r).unwrap());
            assert_eq!(checksum(m, t, r), expected(78, 3));
        });
        // Received and dropped: now collectable.
        m.collect();
        assert_eq!(g1.stats().heap.live_objects, 0);
    });
}
