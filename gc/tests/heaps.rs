//! Several heaps on one runtime: every goroutine's managed stack is scanned by each heap's
//! collections, so a heap's stack scan meets the references of the others (in slots of
//! goroutines using another heap). It must skip them, neither
//! aborting on them ("a reference outside the heap") nor marking through them, while each
//! heap keeps exactly its own objects (checkmark and poison on).

mod trees;

use safepoint_gc::{Gc, Mutator};
use safepoint_sched::Runtime;
use trees::{build, checksum, expected};

#[test]
fn heaps_on_one_runtime_collect_while_the_others_references_are_on_stacks() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let heap = |stw: bool| {
        Gc::builder().stop_the_world(stw).checkmark(true).poison(true).ignore_env().build(&rt)
    };
    let (a, b) = (heap(false).unwrap(), heap(true).unwrap());
    let (ta, tb) = (trees::types(&a), trees::types(&b));
    let (a2, b2) = (a.clone(), b.clone());
    rt.block_on(move || {
        // Two goroutines per heap, each holding a tree of its heap in its slots and collecting
        // its heap while the others do the same.
        let hs: Vec<_> = [(a2.clone(), ta, 1u64), (b2.clone(), tb, 2), (a2, ta, 3), (b2, tb, 4)]
            .into_iter()
            .map(|(gc, t, seed)| {
                safepoint_sched::go(move || {
                    let mut m = Mutator::new(&gc).unwrap();
                    m.scope(|m, [tree, junk]| {
                        build(m, t, seed, 8, tree);
                        for i in 0..20 {
                            build(m, t, seed * 100 + i, 4, junk);
                            m.collect();
                            assert_eq!(checksum(m, t, tree), expected(seed, 8));
                        }
                    });
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    // Nothing of either heap is kept by the other's slots once they are gone.
    for gc in [&a, &b] {
        gc.collect();
        assert_eq!(gc.stats().heap.live_objects, 0);
    }
}
