//! Global roots registered by the embedder, and the managed channel built on them.
//!
//! ## Root slots without a heap-wide lock
//!
//! Every [`Global`], every reference in flight on a [`RefChan`] (and so every reference a
//! Pebble program sends on a channel or passes to `go`) is one *root slot*: a word the
//! collector reads as a root. Slots live in segments that never move or shrink (segment `k`
//! holds `FIRST << k` words, published once, never freed before the heap), so a handle keeps
//! a plain pointer to its word, and the marker reads every slot in use without a lock
//! ([`Globals::for_each`]: the count of slots handed out, then each segment, each with an
//! Acquire load that pairs with the Release store publishing it).
//!
//! Free slots are kept per P, as Go keeps its per-P caches of small objects: a goroutine
//! pinned on its P takes a slot from its P's list and gives one back to the list of the P it
//! runs on then, touching no shared line; a list refills from (or spills to) the shared free
//! list `BATCH` slots at a time, under the table's one mutex. So registering and releasing
//! cost a few loads and stores, and a channel's reference ping-pong stays close to its
//! integer ping-pong (`stress refchan`). Only callers off the runtime's Ps (threads outside
//! the runtime, goroutines inside a blocking call, goroutines of another runtime) take the
//! mutex every time.
//!
//! ## Why the marker stays correct
//!
//! A slot's value changes in three ways, each through the write barrier while marking:
//! registering stores a value into a free slot (which holds null) and shades the value; a
//! global's store ([`Mutator::store_global`](crate::Mutator::store_global)) swaps and
//! shades both; releasing swaps null in and shades the old value. So the hybrid barrier's
//! argument (the `concurrent` module) covers root slots as it covers heap words: the marker's
//! read of the slots at the start of marking may miss a value stored after the barrier went
//! on, or see one deleted after it, and either way the barrier shaded it. (The slots are read
//! before any stack, so for a channel's hand-over either half alone would do: the release
//! shades what the registration did not. A global kept across the cycle needs the
//! registration's shade; `tests/in_flight.rs` hands both over while stacks are scanned.)
//!
//! What remains is that every shade lands before marking ends. On a P, registering and
//! releasing run inside one pinned section (preemption off, asynchronous preemption
//! declined): no ragged barrier or stop falls between the barrier check, its shade and the
//! store, and the shade goes to the P's barrier buffer, which the termination's ragged rounds
//! and its stop flush, as for any field store. Off the Ps nothing holds the caller still, so
//! those paths shade straight into the shared grey queue under the table's mutex, and the
//! termination stop holds that mutex from its check for work to the barrier's end
//! ([`Globals::lock_all`]): such a shade falls wholly before the check (and is found) or
//! after the barrier went off (and is not needed). With `gccheckmark` the stop re-marks from
//! every slot in use (free slots hold null); `gcpoison` needs nothing more: a released slot's
//! old value was shaded, so it is not freed in the cycle that saw it released.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_utils::CachePadded;
use safepoint_sched::Chan;

use crate::collector::{Gc, GcError, Inner};
use crate::types::WordKind;

/// Slots in the first segment; segment `k` holds `FIRST << k`.
const FIRST: usize = 256;
/// Segments: room for `FIRST * (2^SEGS - 1)` slots, more than any address space holds.
const SEGS: usize = 40;
/// Slots a P's list moves from or to the shared list at once (Go's caches move 32 objects).
const BATCH: usize = 32;
/// A P's list spills `BATCH` slots to the shared list when it grows past this.
const LOCAL_MAX: usize = 2 * BATCH;

/// The segment of slot `i` and its offset there.
#[inline]
fn seg_of(i: usize) -> (usize, usize) {
    let q = i / FIRST + 1;
    let k = (usize::BITS - 1 - q.leading_zeros()) as usize;
    (k, i - FIRST * ((1 << k) - 1))
}

/// Slots in segment `k`.
fn seg_len(k: usize) -> usize {
    FIRST << k
}

/// A P's free slots.
struct LocalFree(UnsafeCell<Vec<usize>>);

// SAFETY: a P's list is touched only by the goroutine pinned on that P (see `LocalFree::get`),
// one at a time.
unsafe impl Sync for LocalFree {}

impl LocalFree {
    /// # Safety
    /// The caller is P `p`'s goroutine inside a pinned section, for this list's `p`: nobody
    /// else uses the list meanwhile.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    unsafe fn get(&self) -> &mut Vec<usize> {
        // SAFETY: per the contract.
        unsafe { &mut *self.0.get() }
    }
}

/// The table of root slots (see the module's docs).
pub(crate) struct Globals {
    /// Segment `k`'s words, null until made (under `shared`), then fixed.
    segs: [AtomicPtr<AtomicUsize>; SEGS],
    /// Slots handed out so far: every slot below it is in a published segment. Written under
    /// `shared` with Release after the segments; read with Acquire by [`Globals::for_each`].
    used: AtomicUsize,
    /// Each P's free slots.
    local: Box<[CachePadded<LocalFree>]>,
    /// The shared free slots: the one mutex, taken by a P's list to refill or spill a batch,
    /// by callers off the Ps, and by the termination stop ([`Globals::lock_all`]).
    shared: Mutex<Vec<usize>>,
}

impl Globals {
    /// A table for a runtime of `procs` Ps.
    pub(crate) fn new(procs: usize) -> Globals {
        Globals {
            segs: [const { AtomicPtr::new(std::ptr::null_mut()) }; SEGS],
            used: AtomicUsize::new(0),
            local: (0..procs)
                .map(|_| {
                    CachePadded::new(LocalFree(UnsafeCell::new(Vec::with_capacity(LOCAL_MAX))))
                })
                .collect(),
            shared: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<usize>> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds the shared list locked: registering and releasing off the Ps wait (the end of
    /// marking holds it so that their barrier shades fall on one side of it; see the module's
    /// docs).
    pub(crate) fn lock_all(&self) -> std::sync::MutexGuard<'_, impl Sized> {
        self.lock()
    }

    /// Slot `i`'s word.
    #[inline]
    fn word(&self, i: usize) -> &AtomicUsize {
        let (k, off) = seg_of(i);
        // Acquire pairs with the Release store that published the segment (`grow`); slot `i`
        // was handed out after it.
        let seg = self.segs[k].load(Ordering::Acquire);
        debug_assert!(!seg.is_null() && off < seg_len(k));
        // SAFETY: slot `i` was handed out, so its segment is published (non-null), `off` is
        // inside it, and segments live as long as the table.
        unsafe { &*seg.add(off) }
    }

    /// Hands out `n` fresh slots into `out`, making segments as needed. Called with `shared`
    /// locked (`_held`), which serialises every writer of `used` and `segs`.
    fn grow(&self, _held: &mut Vec<usize>, n: usize, out: &mut Vec<usize>) {
        // Relaxed: written only under the lock we hold.
        let start = self.used.load(Ordering::Relaxed);
        let end = start + n;
        let (first, _) = seg_of(start);
        let (last, _) = seg_of(end - 1);
        for k in first..=last {
            assert!(k < SEGS, "gc: root slots exhausted");
            if self.segs[k].load(Ordering::Relaxed).is_null() {
                let seg: Box<[AtomicUsize]> =
                    (0..seg_len(k)).map(|_| AtomicUsize::new(0)).collect();
                // Release: the zeroed words before the pointer, for `word` and `for_each`.
                self.segs[k].store(Box::into_raw(seg).cast::<AtomicUsize>(), Ordering::Release);
            }
        }
        // Release: the segments above before the count, for `for_each`'s Acquire load.
        self.used.store(end, Ordering::Release);
        out.extend((start..end).rev());
    }

    /// Refills P list `free` (empty) with a batch: from the shared list, else fresh slots.
    #[cold]
    #[inline(never)]
    fn refill(&self, free: &mut Vec<usize>) {
        let mut g = self.lock();
        let take = g.len().min(BATCH);
        let at = g.len() - take;
        free.extend(g.drain(at..));
        if free.is_empty() {
            self.grow(&mut g, BATCH, free);
        }
    }

    /// Moves a batch of P list `free` (past `LOCAL_MAX`) to the shared list.
    #[cold]
    #[inline(never)]
    fn spill(&self, free: &mut Vec<usize>) {
        let at = free.len() - BATCH;
        self.lock().extend(free.drain(at..));
    }

    /// Calls `f(index, word)` for every slot in use (holding something else than null). No
    /// lock: concurrent registrations and releases go through the write barrier (see the
    /// module's docs).
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        // Acquire pairs with `grow`'s Release: the segments below the count are published.
        let used = self.used.load(Ordering::Acquire);
        let mut start = 0;
        for k in 0..SEGS {
            if start >= used {
                break;
            }
            // Relaxed suffices after the Acquire of `used`, which `grow` stored after this.
            let seg = self.segs[k].load(Ordering::Relaxed);
            let n = seg_len(k).min(used - start);
            for off in 0..n {
                // SAFETY: a published segment of `seg_len(k)` words, living as long as the
                // table.
                let w = unsafe { &*seg.add(off) };
                // Acquire pairs with the Release of the store that wrote the value (a
                // registration's store, a global's swap): the marker shading it sees its
                // object initialised.
                let v = w.load(Ordering::Acquire);
                if v != 0 {
                    f(start + off, v);
                }
            }
            start += seg_len(k);
        }
    }
}

impl Drop for Globals {
    fn drop(&mut self) {
        for (k, s) in self.segs.iter_mut().enumerate() {
            let p = *s.get_mut();
            if !p.is_null() {
                // SAFETY: made by `grow` from a boxed slice of `seg_len(k)` words, dropped
                // once, here, when nothing can hold a slot any more (every handle holds the
                // heap, and so this table, alive).
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, seg_len(k))) });
            }
        }
    }
}

impl Inner {
    /// Runs `f` with the P the running goroutine is on, pinned there for the length of `f`,
    /// if it is a goroutine of this heap's runtime with a P; else `f(None)`.
    #[inline]
    fn with_own_p<R>(&self, f: impl FnOnce(Option<usize>) -> R) -> R {
        let mut f = Some(f);
        if self.rt.is_current()
            && let Some(id) = safepoint_sched::goroutine_id()
            && let Some(r) = safepoint_sched::pinned(id, |pin| (f.take().expect("unused"))(pin.p()))
        {
            return r;
        }
        (f.take().expect("not run: `pinned` found another goroutine"))(None)
    }

    /// A fresh root slot holding `v`: its index. `p`: the P the caller is pinned on (a P of
    /// this heap's runtime), `None` if it is on none.
    #[inline]
    pub(crate) fn root_register(&self, p: Option<usize>, v: usize) -> usize {
        let new = self.ref_in(WordKind::Tagged, v);
        let g = &self.globals;
        let Some(p) = p else {
            let _np = safepoint_sched::no_preempt();
            let mut shared = g.lock();
            // The barrier under the lock: see the module's docs.
            self.write_barrier(None, 0, new);
            let i = match shared.pop() {
                Some(i) => i,
                None => {
                    let mut fresh = Vec::with_capacity(BATCH);
                    g.grow(&mut shared, BATCH, &mut fresh);
                    let i = fresh.pop().expect("a batch");
                    shared.extend(fresh);
                    i
                }
            };
            // Release: publishes `v`'s object to `for_each`'s Acquire load (the marker) and
            // to readers of the slot.
            g.word(i).store(v, Ordering::Release);
            return i;
        };
        // SAFETY: the caller is pinned on P `p`.
        let free = unsafe { g.local[p].get() };
        if free.is_empty() {
            g.refill(free);
        }
        let i = free.pop().expect("refilled");
        self.write_barrier(Some(p), 0, new);
        // Release: as above.
        g.word(i).store(v, Ordering::Release);
        i
    }

    /// Frees root slot `i` (shading its value while marking). `p` as for
    /// [`root_register`](Self::root_register).
    #[inline]
    pub(crate) fn root_release(&self, p: Option<usize>, i: usize) {
        let g = &self.globals;
        let Some(p) = p else {
            let _np = safepoint_sched::no_preempt();
            let mut shared = g.lock();
            // Acquire pairs with the Release of the store that wrote `old`: the barrier reads
            // its allocation bit.
            let old = g.word(i).swap(0, Ordering::Acquire);
            self.write_barrier(None, self.ref_in(WordKind::Tagged, old), 0);
            shared.push(i);
            return;
        };
        // Acquire: as above.
        let old = g.word(i).swap(0, Ordering::Acquire);
        self.write_barrier(Some(p), self.ref_in(WordKind::Tagged, old), 0);
        // SAFETY: the caller is pinned on P `p`.
        let free = unsafe { g.local[p].get() };
        free.push(i);
        if free.len() > LOCAL_MAX {
            g.spill(free);
        }
    }
}

/// A global root: one slot the collector always scans, holding a managed value (a reference,
/// an immediate, or null) until it is dropped. `Send + Sync`: any goroutine may read or write
/// it through its [`Mutator`](crate::Mutator) ([`Mutator::load_global`](crate::Mutator::load_global),
/// [`Mutator::store_global`](crate::Mutator::store_global)).
pub struct Global {
    pub(crate) gc: Arc<Inner>,
    index: usize,
    word: *const AtomicUsize,
}

// SAFETY: `word` points into a segment owned by `gc`'s table, which outlives this handle (the
// handle keeps `gc` alive) and is only accessed atomically.
unsafe impl Send for Global {}
// SAFETY: as above.
unsafe impl Sync for Global {}

impl std::fmt::Debug for Global {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Global({})", self.index)
    }
}

impl Global {
    /// A new global root of `gc`, holding null.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// use safepoint_gc::Global;
    /// let root = Global::new(&gc); // holds null until a value is stored
    /// m.scope(|m, [a]| {
    ///     m.load_global(a, &root).unwrap();
    ///     assert!(m.is_null(a).unwrap());
    /// });
    /// # });
    /// ```
    pub fn new(gc: &Gc) -> Global {
        Global::with_value(&gc.inner, 0)
    }

    /// A new global of `gc` holding `v`, made on the caller's P if it has one.
    pub(crate) fn with_value(gc: &Arc<Inner>, v: usize) -> Global {
        gc.with_own_p(|p| Global::with_value_on(gc, p, v))
    }

    /// A new global of `gc` holding `v`, for a caller pinned on P `p` (`None`: on none).
    pub(crate) fn with_value_on(gc: &Arc<Inner>, p: Option<usize>, v: usize) -> Global {
        let index = gc.root_register(p, v);
        Global { gc: gc.clone(), index, word: gc.globals.word(index) }
    }

    pub(crate) fn word(&self) -> &AtomicUsize {
        // SAFETY: see the `Send` impl: the segment outlives `self`.
        unsafe { &*self.word }
    }

    pub(crate) fn check(&self, gc: &Arc<Inner>) -> Result<(), GcError> {
        if Arc::ptr_eq(&self.gc, gc) { Ok(()) } else { Err(GcError::WrongHeap) }
    }
}

impl Drop for Global {
    fn drop(&mut self) {
        let gc = &self.gc;
        gc.with_own_p(|p| gc.root_release(p, self.index));
    }
}

/// A value in flight on a [`RefChan`]: an immediate as is, a reference in a root slot.
pub(crate) enum Msg {
    Imm(usize),
    Ref(Root),
}

/// A root slot holding a reference in flight on a [`RefChan`]: a [`Global`] without its own
/// handle on the heap (no reference count to touch per message), freed when dropped.
pub(crate) struct Root {
    /// The heap: alive while the root is, see [`RootChan`].
    gc: *const Inner,
    index: usize,
}

// SAFETY: the root's slot is reached only atomically, and its heap outlives it wherever it is
// (see `RootChan`).
unsafe impl Send for Root {}

impl Root {
    /// A root holding `v`, registered by a caller pinned on P `p` of `gc`'s runtime.
    fn new(gc: &Arc<Inner>, p: usize, v: usize) -> Root {
        Root { gc: Arc::as_ptr(gc), index: gc.root_register(Some(p), v) }
    }

    fn gc(&self) -> &Inner {
        // SAFETY: a root lives either in its channel (then `RootChan` keeps the heap alive
        // until after the channel is dropped) or in a send or receive of that channel, whose
        // caller holds a `RefChan` of it; so the heap is alive.
        unsafe { &*self.gc }
    }

    /// The value held.
    fn value(&self) -> usize {
        // Acquire pairs with the registration's Release store: the receiver sees the object
        // as its sender left it.
        self.gc().globals.word(self.index).load(Ordering::Acquire)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let gc = self.gc();
        gc.with_own_p(|p| gc.root_release(p, self.index));
    }
}

/// What a [`RefChan`] shares: the channel, then the heap, dropped in that order, so that the
/// roots still buffered when the last handle goes are released while the heap is alive.
pub(crate) struct RootChan {
    pub(crate) chan: Chan<Msg>,
    pub(crate) gc: Arc<Inner>,
}

impl RootChan {
    /// Sends `v` for a caller pinned on P `p` before the send: a reference goes in a root
    /// slot, registered here (the send itself may park).
    pub(crate) fn message(&self, p: usize, v: usize) -> Msg {
        if self.gc.config.tag_rule.is_ref(v) {
            Msg::Ref(Root::new(&self.gc, p, v))
        } else {
            Msg::Imm(v)
        }
    }
}

impl Msg {
    /// The value carried, for a receiver pinned on P `p` of the heap's runtime, which stores
    /// it where the collector sees it (a slot) in the same pinned section: the root slot, if
    /// any, is released here (shading the value while marking), with no lookup of the P.
    pub(crate) fn take(self, p: usize) -> usize {
        match self {
            Msg::Imm(v) => v,
            Msg::Ref(r) => {
                let v = r.value();
                let r = std::mem::ManuallyDrop::new(r);
                r.gc().root_release(Some(p), r.index);
                v
            }
        }
    }
}

/// A channel of managed values between goroutines: [`Mutator::send`](crate::Mutator::send)
/// and [`Mutator::recv`](crate::Mutator::recv). A reference in flight sits in a root slot
/// (the module `globals.rs` explains them), so a reference sent and not yet received stays
/// alive, buffered or handed over, and is released when received, or when the last handle of
/// a channel still holding it is dropped. Cheap to clone (shared).
#[derive(Clone)]
pub struct RefChan {
    pub(crate) chan: Arc<RootChan>,
}

impl std::fmt::Debug for RefChan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefChan(len {}, cap {})", self.chan.chan.len(), self.chan.chan.cap())
    }
}

impl RefChan {
    /// A channel of `gc` with room for `cap` values (0: unbuffered).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// use safepoint_gc::RefChan;
    /// let ch = RefChan::new(&gc, 2);
    /// m.scope(|m, [a, b]| {
    ///     m.alloc(a, pair).unwrap();
    ///     m.send(&ch, a).unwrap();
    ///     m.collect(); // a value in flight is a root
    ///     m.recv(&ch, b).unwrap();
    ///     assert_eq!(m.type_of(b).unwrap(), pair);
    /// });
    /// # });
    /// ```
    pub fn new(gc: &Gc, cap: usize) -> RefChan {
        let chan = if cap == 0 { Chan::unbuffered() } else { Chan::new(cap) };
        RefChan { chan: Arc::new(RootChan { chan, gc: gc.inner.clone() }) }
    }

    /// Closes the channel: receivers drain what is buffered, then see it closed.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// use safepoint_gc::RefChan;
    /// let ch = RefChan::new(&gc, 1);
    /// m.scope(|m, [a]| {
    ///     m.set_int(a, 3).unwrap();
    ///     m.send(&ch, a).unwrap();
    ///     ch.close();
    ///     assert!(m.recv(&ch, a).unwrap()); // drained first
    ///     assert!(!m.recv(&ch, a).unwrap());
    /// });
    /// # });
    /// ```
    pub fn close(&self) {
        self.chan.chan.close();
    }

    /// Values buffered now.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// use safepoint_gc::RefChan;
    /// let ch = RefChan::new(&gc, 4);
    /// m.scope(|m, [a]| {
    ///     m.set_int(a, 1).unwrap();
    ///     m.send(&ch, a).unwrap();
    ///     m.send(&ch, a).unwrap();
    /// });
    /// assert_eq!(ch.len(), 2);
    /// # });
    /// ```
    pub fn len(&self) -> usize {
        self.chan.chan.len()
    }

    /// Whether no value is buffered now.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// use safepoint_gc::RefChan;
    /// let ch = RefChan::new(&gc, 1);
    /// assert!(ch.is_empty());
    /// m.scope(|m, [a]| {
    ///     m.set_int(a, 1).unwrap();
    ///     m.send(&ch, a).unwrap();
    /// });
    /// assert!(!ch.is_empty());
    /// # });
    /// ```
    pub fn is_empty(&self) -> bool {
        self.chan.chan.is_empty()
    }
}

#[cfg(test)]
mod seg_tests {
    use super::{FIRST, seg_len, seg_of};

    #[test]
    fn slots_map_to_segments_without_gaps() {
        let mut expect = (0, 0);
        for i in 0..FIRST * 40 {
            assert_eq!(seg_of(i), expect, "slot {i}");
            expect.1 += 1;
            if expect.1 == seg_len(expect.0) {
                expect = (expect.0 + 1, 0);
            }
        }
    }
}
