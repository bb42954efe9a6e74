//! Every G a runtime has made: an append-only list that readers walk without a lock.
//!
//! The collector lists the goroutines once a cycle, and the dumps, the watchdog and shutdown
//! list them too; a spawn that finds no free G appends a new one. A list behind a mutex made
//! every listing copy the whole list with that mutex held, so a listing of 100,000 Gs held up
//! every spawn needing a new G for as long as the copy took. Here only appends take the mutex
//! (one append at a time); readers load the length and read the entries below it.
//!
//! The entries live in segments that never move: segment `k` holds `BASE << k` entries and is
//! allocated when the first index in it is appended, so a reader never sees storage freed under
//! it. An entry is written before the length that covers it is published (Release), and a
//! reader's Acquire load of the length makes every entry below it, and the segment pointers
//! they sit in, visible. The segments are freed with the list.
//!
//! The atomics are `core`'s, not the loom shim's: the protocol is one publication through one
//! length, and its unit test runs under Miri.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::g::{G, GPtr};

/// Entries in segment 0; segment `k` holds `BASE << k`.
const BASE: usize = 64;

/// Segments: room for `BASE * (2^SEGS - 1)` Gs, more than any address space holds.
const SEGS: usize = 40;

/// Segment and offset of index `i`: segment `k` starts at index `BASE * (2^k - 1)`.
fn locate(i: usize) -> (usize, usize) {
    let j = i / BASE + 1;
    let k = (usize::BITS - 1 - j.leading_zeros()) as usize;
    (k, i - BASE * ((1 << k) - 1))
}

pub(crate) struct AllGs {
    /// Serializes appends (and `take`), never held by readers.
    append: Mutex<()>,
    /// Entries published. Release by the appender after the entry; Acquire by readers.
    len: AtomicUsize,
    /// Segment `k`: `BASE << k` entries, null until the first append into it. Stored before the
    /// length that covers its first entry is published, so the length's Acquire covers it.
    segs: [AtomicPtr<AtomicPtr<G>>; SEGS],
}

impl AllGs {
    pub(crate) fn new() -> AllGs {
        AllGs {
            append: Mutex::new(()),
            len: AtomicUsize::new(0),
            segs: [const { AtomicPtr::new(ptr::null_mut()) }; SEGS],
        }
    }

    /// Appends `g`. Readers that load the length after this returns see it.
    pub(crate) fn push(&self, g: &'static G) {
        let _l = self.append.lock().unwrap_or_else(|e| e.into_inner());
        // Relaxed: only appenders store the length, and they are serialized by the mutex.
        let i = self.len.load(Ordering::Relaxed);
        let (k, off) = locate(i);
        assert!(k < SEGS, "more goroutines than an address space holds");
        let mut seg = self.segs[k].load(Ordering::Relaxed);
        if seg.is_null() {
            let entries: Box<[AtomicPtr<G>]> =
                (0..BASE << k).map(|_| AtomicPtr::new(ptr::null_mut())).collect();
            seg = Box::into_raw(entries).cast::<AtomicPtr<G>>();
            // Relaxed: published to readers by the length's Release below.
            self.segs[k].store(seg, Ordering::Relaxed);
        }
        // SAFETY: segment k holds BASE << k entries and off < BASE << k (`locate`); segments
        // are freed only by `drop`, which has `&mut self`.
        let slot = unsafe { &*seg.add(off) };
        // Relaxed: published by the length's Release below.
        slot.store(ptr::from_ref(g).cast_mut(), Ordering::Relaxed);
        // Release: pairs with the Acquire in `for_each`: the entry and its segment are visible
        // to a reader that sees this length.
        self.len.store(i + 1, Ordering::Release);
    }

    /// How many Gs the list holds.
    pub(crate) fn len(&self) -> usize {
        // Acquire: as in `for_each`.
        self.len.load(Ordering::Acquire)
    }

    /// Calls `f` on every G appended before the call began (and perhaps on some appended
    /// during it), in the order they were appended.
    pub(crate) fn for_each(&self, mut f: impl FnMut(GPtr)) {
        // Acquire: pairs with the Release in `push`.
        let n = self.len.load(Ordering::Acquire);
        let mut i = 0;
        let mut k = 0;
        while i < n {
            // Relaxed: the length's Acquire made the segment pointer visible.
            let seg = self.segs[k].load(Ordering::Relaxed);
            let size = BASE << k;
            for off in 0..size.min(n - i) {
                // SAFETY: off < size, the segment's length; it is live while `self` is.
                let g = unsafe { &*seg.add(off) }.load(Ordering::Relaxed);
                // SAFETY: entries below the length were set to a `&'static G` in `push`.
                f(GPtr::from(unsafe { &*g }));
            }
            i += size;
            k += 1;
        }
    }

    /// Every G, in a vector.
    pub(crate) fn to_vec(&self) -> Vec<GPtr> {
        let mut v = Vec::with_capacity(self.len());
        self.for_each(|g| v.push(g));
        v
    }

    /// Empties the list and returns what it held. For shutdown, once no thread of the runtime
    /// runs: a reader walking the list meanwhile could miss the Gs taken.
    pub(crate) fn take(&self) -> Vec<GPtr> {
        let _l = self.append.lock().unwrap_or_else(|e| e.into_inner());
        let v = self.to_vec();
        // Release: as in `push` (a later append reuses the segments from index 0).
        self.len.store(0, Ordering::Release);
        v
    }
}

impl Drop for AllGs {
    fn drop(&mut self) {
        for (k, s) in self.segs.iter_mut().enumerate() {
            let seg = *s.get_mut();
            if !seg.is_null() {
                // SAFETY: made by `Box::into_raw` of a boxed slice of BASE << k entries in
                // `push`, freed once here (we have `&mut self`).
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(seg, BASE << k)) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` fresh Gs, `'static` as the list wants, freed when the value drops (Miri checks
    /// for leaks).
    struct Gs {
        raw: Vec<GPtr>,
        refs: Vec<&'static G>,
    }

    impl std::ops::Deref for Gs {
        type Target = [&'static G];
        fn deref(&self) -> &[&'static G] {
            &self.refs
        }
    }

    impl Drop for Gs {
        fn drop(&mut self) {
            self.refs.clear();
            for g in self.raw.drain(..) {
                // SAFETY: from `Box::leak` in `leak_gs`, through a raw pointer; every list that held a reference
                // to it was dropped first (each test declares its list after its Gs).
                drop(unsafe { Box::from_raw(g.0.as_ptr()) });
            }
        }
    }

    fn leak_gs(n: usize) -> Gs {
        let raw: Vec<GPtr> = (0..n)
            .map(|_| GPtr(core::ptr::NonNull::from(Box::leak(Box::new(G::for_tests())))))
            .collect();
        // SAFETY: each pointer is a live, leaked box, freed only by `Gs::drop` after these
        // references are gone.
        let refs = raw.iter().map(|g| unsafe { g.0.as_ref() }).collect();
        Gs { raw, refs }
    }

    #[test]
    fn indices_map_to_segments_without_gaps() {
        let mut next = (0, 0);
        for i in 0..BASE * 100 {
            assert_eq!(locate(i), next, "{i}");
            next =
                if next.1 + 1 == BASE << next.0 { (next.0 + 1, 0) } else { (next.0, next.1 + 1) };
        }
    }

    #[test]
    fn appends_are_listed_in_order_across_segments() {
        let gs = leak_gs(BASE * 3 + 5);
        let l = AllGs::new();
        for g in gs.iter() {
            l.push(g);
        }
        let v = l.to_vec();
        assert_eq!(v.len(), gs.len());
        assert!(v.iter().zip(gs.iter()).all(|(a, b)| ptr::eq(a.get(), *b)));
        assert_eq!(l.take().len(), gs.len());
        assert_eq!(l.len(), 0);
        l.push(gs[7]);
        assert!(ptr::eq(l.to_vec()[0].get(), gs[7]));
    }

    #[test]
    fn a_reader_never_waits_for_appends_and_sees_a_prefix() {
        let gs = leak_gs(if cfg!(miri) { BASE * 2 } else { BASE * 40 });
        let l = AllGs::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                for g in gs.iter() {
                    l.push(g);
                }
            });
            let mut seen = 0;
            while seen < gs.len() {
                let v = l.to_vec();
                assert!(v.len() >= seen);
                assert!(v.iter().zip(gs.iter()).all(|(a, b)| ptr::eq(a.get(), *b)));
                seen = v.len();
            }
        });
    }
}
