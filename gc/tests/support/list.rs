//! A linked list built through the checked API, for tests that count what the heap holds.

use safepoint_gc::{Gc, Mutator, TypeId};
use safepoint_sched::Runtime;

/// On a goroutine of `rt`: builds a list of `n` records of type `ty` (word 0 the next record,
/// raw word `at` numbering them from 0), runs a full collection, walks the list; returns the
/// sum of the numbers read back and the live bytes that collection found.
pub fn build_collect_sum(rt: &Runtime, gc: &Gc, ty: TypeId, n: u64, at: usize) -> (u64, usize) {
    let g = gc.clone();
    rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        m.scope(|m, [head, node]| {
            for i in 0..n {
                m.alloc(node, ty).unwrap();
                m.write_word(node, at, i).unwrap();
                m.store(node, 0, head).unwrap();
                m.copy(head, node).unwrap();
            }
            m.collect();
            let mut sum = 0;
            while !m.is_null(node).unwrap() {
                sum += m.read_word(node, at).unwrap();
                m.load(node, node, 0).unwrap();
            }
            (sum, g.stats().live_bytes)
        })
    })
}
