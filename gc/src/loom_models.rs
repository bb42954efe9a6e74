//! A loom model of the sweep claim, run with
//! `RUSTFLAGS="--cfg loom" cargo test --release -p safepoint-gc --lib -- loom_`.
//!
//! It *models* the protocol rather than running the heap's code: a [`Heap`](crate::Heap) needs
//! arenas, a page map and the size classes, far more than loom can explore. [`ModelHeap`]
//! keeps exactly the state the protocol uses, with the same atomics and orderings as
//! `heap.rs`, and its methods follow the code they name step by step:
//!
//! * each span's sweep generation, relative to the heap's `sg` (even, +2 per cycle):
//!   `sg - 2` needs sweeping, `sg - 1` is being swept, `sg` is swept;
//! * lists by sweep parity under locks, with `listed[parity]` counting their spans;
//! * `pending`, the spans taken off an unswept list and not yet put back;
//! * `sweep_one` / `sweep_span` (pop under the list lock raising `pending` before lowering
//!   `listed`, claim by CAS `sg - 2 -> sg - 1`, sweep, store `sg` and push under the lock,
//!   lower `pending`), `release_span` (a cache gives back a span it held across the end of a
//!   marking: unswept), and `sweep_done` (`listed[unswept] == 0`, then `pending == 0`).
//!
//! What must hold: a span is swept by exactly one sweeper, every CAS claim succeeds (only a
//! span on an unswept list is at `sg - 2`), and whenever `sweep_done` says so, every span that
//! was on an unswept list has been swept and none is in flight.

use loom::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// `heap.rs`'s `swept_parity`.
fn swept_parity(sg: u32) -> usize {
    ((sg >> 1) & 1) as usize
}

struct ModelHeap {
    sweepgen: AtomicU32,
    lists: Mutex<[Vec<usize>; 2]>,
    listed: [AtomicUsize; 2],
    pending: AtomicUsize,
    span_gen: Vec<AtomicU32>,
    /// How many times each span was swept (only a claimer may sweep).
    sweeps: Vec<AtomicUsize>,
}

impl ModelHeap {
    /// `n` spans at sweep generation `sg`, the first `unswept` of them on the unswept list
    /// (just after `finish_mark`), the rest held by caches.
    fn new(sg: u32, n: usize, unswept: usize) -> ModelHeap {
        let un = 1 - swept_parity(sg);
        let mut lists = [Vec::new(), Vec::new()];
        lists[un] = (0..unswept).collect();
        let listed = [AtomicUsize::new(0), AtomicUsize::new(0)];
        listed[un].store(unswept, Ordering::Relaxed);
        ModelHeap {
            sweepgen: AtomicU32::new(sg),
            lists: Mutex::new(lists),
            listed,
            pending: AtomicUsize::new(0),
            span_gen: (0..n).map(|_| AtomicU32::new(sg - 2)).collect(),
            sweeps: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// `Heap::sweep_one`: pop an unswept span and sweep it; false if none was left.
    fn sweep_one(&self) -> bool {
        let sg = self.sweepgen.load(Ordering::Acquire);
        let un = 1 - swept_parity(sg);
        if self.listed[un].load(Ordering::Relaxed) == 0 {
            return false;
        }
        // `HeapInner::pop`.
        let rec = {
            let mut l = self.lists.lock().unwrap();
            let Some(rec) = l[un].pop() else { return false };
            self.pending.fetch_add(1, Ordering::SeqCst);
            self.listed[un].fetch_sub(1, Ordering::SeqCst);
            rec
        };
        self.sweep_span(rec, sg);
        true
    }

    /// `HeapInner::sweep_span` (and `sweep_small`'s end: back on the swept list).
    fn sweep_span(&self, rec: usize, sg: u32) {
        let claimed = self.span_gen[rec]
            .compare_exchange(sg - 2, sg - 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        assert!(claimed, "span {rec} on an unswept list is not at sg - 2");
        self.sweeps[rec].fetch_add(1, Ordering::SeqCst);
        {
            let mut l = self.lists.lock().unwrap();
            self.span_gen[rec].store(sg, Ordering::Relaxed);
            let sp = swept_parity(sg);
            l[sp].push(rec);
            self.listed[sp].fetch_add(1, Ordering::Relaxed);
        }
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// `Heap::release_span` for a span cached across the end of a marking: unswept.
    fn release_span(&self, rec: usize) {
        let sg = self.sweepgen.load(Ordering::Acquire);
        let mut l = self.lists.lock().unwrap();
        let p = if self.span_gen[rec].load(Ordering::Relaxed) == sg {
            swept_parity(sg)
        } else {
            self.span_gen[rec].store(sg - 2, Ordering::Relaxed);
            1 - swept_parity(sg)
        };
        l[p].push(rec);
        self.listed[p].fetch_add(1, Ordering::Relaxed);
    }

    /// `Heap::sweep_done`.
    fn sweep_done(&self) -> bool {
        let un = 1 - swept_parity(self.sweepgen.load(Ordering::Acquire));
        self.listed[un].load(Ordering::SeqCst) == 0 && self.pending.load(Ordering::SeqCst) == 0
    }

    /// Every span that is on a list is swept in generation `sg`, and none is in flight.
    fn all_listed_swept(&self) -> bool {
        let sg = self.sweepgen.load(Ordering::Acquire);
        let l = self.lists.lock().unwrap();
        l.iter().flatten().all(|&r| self.span_gen[r].load(Ordering::Relaxed) == sg)
            && l.iter().map(Vec::len).sum::<usize>()
                == self.span_gen.iter().filter(|g| g.load(Ordering::Relaxed) == sg).count()
    }
}

/// Two sweepers (the background sweeper and an allocating goroutine) sweep two unswept spans
/// while a cache gives back a third, held across the end of the marking, and the cycle driver
/// asks whether sweeping is done. Each span is claimed and swept exactly once, and a "done"
/// is never said while a listed span is unswept or a sweep is in flight.
#[test]
fn loom_sweep_claim() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        // sg = 4: the heap has just finished a marking.
        let h = Arc::new(ModelHeap::new(4, 3, 2));
        let sweepers: Vec<_> = (0..2)
            .map(|_| {
                let h = h.clone();
                thread::spawn(move || {
                    h.sweep_one();
                    h.sweep_one();
                })
            })
            .collect();
        let cache = {
            let h = h.clone();
            thread::spawn(move || h.release_span(2))
        };
        if h.sweep_done() {
            // Said done: the spans that were on the unswept list have been swept, none is in
            // flight. (The span the cache gives back may arrive after this look; the cycle
            // asks again with the world stopped, where no cache gives anything back.)
            let sg = h.sweepgen.load(Ordering::Acquire);
            assert_eq!(h.span_gen[0].load(Ordering::Relaxed), sg, "span 0 not swept");
            assert_eq!(h.span_gen[1].load(Ordering::Relaxed), sg, "span 1 not swept");
        }
        for s in sweepers {
            s.join().unwrap();
        }
        cache.join().unwrap();
        while h.sweep_one() {}
        assert!(h.sweep_done());
        assert!(h.all_listed_swept());
        for (i, n) in h.sweeps.iter().enumerate() {
            assert_eq!(
                n.load(Ordering::SeqCst),
                1,
                "span {i} swept {} times",
                n.load(Ordering::SeqCst)
            );
        }
    });
}
