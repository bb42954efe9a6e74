//! Global roots registered by the embedder, and the managed channel built on them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use safepoint_sched::Chan;

use crate::collector::{Gc, GcError, Inner};

const CHUNK: usize = 256;

/// The table of global root slots: chunks that never move or shrink (so a [`Global`] keeps a
/// plain pointer to its word), a free list, one mutex for registering and releasing.
pub(crate) struct Globals {
    inner: Mutex<GlobalsInner>,
}

struct GlobalsInner {
    /// Boxed: a [`Global`] keeps a pointer into its chunk, which must not move as the list
    /// grows.
    #[allow(clippy::vec_box)]
    chunks: Vec<Box<[AtomicUsize; CHUNK]>>,
    free: Vec<usize>,
    used: usize,
}

impl Globals {
    pub(crate) fn new() -> Globals {
        Globals {
            inner: Mutex::new(GlobalsInner { chunks: Vec::new(), free: Vec::new(), used: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GlobalsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds the table locked: registering and releasing wait (the end of marking holds it so
    /// that their barrier shades fall on one side of it).
    pub(crate) fn lock_all(&self) -> std::sync::MutexGuard<'_, impl Sized> {
        self.lock()
    }

    /// A fresh slot holding `value`: its index and its word. `shade` runs under the table's
    /// lock (the barrier for the new value).
    fn register(&self, value: usize, shade: impl FnOnce()) -> (usize, *const AtomicUsize) {
        let _np = safepoint_sched::no_preempt();
        let mut g = self.lock();
        shade();
        let i = match g.free.pop() {
            Some(i) => i,
            None => {
                let i = g.used;
                g.used += 1;
                if i / CHUNK == g.chunks.len() {
                    g.chunks.push(Box::new([const { AtomicUsize::new(0) }; CHUNK]));
                }
                i
            }
        };
        let w: *const AtomicUsize = &g.chunks[i / CHUNK][i % CHUNK];
        // SAFETY: `w` points into a chunk that lives as long as the table; Relaxed: the
        // collector reads global slots with the world stopped (or, concurrently, through the
        // write barrier's ordering).
        unsafe { &*w }.store(value, Ordering::Relaxed);
        (i, w)
    }

    /// Frees slot `i`; `shade(old value)` runs under the table's lock (the barrier for the
    /// value the slot loses).
    fn release(&self, i: usize, shade: impl FnOnce(usize)) {
        let _np = safepoint_sched::no_preempt();
        let mut g = self.lock();
        // Acquire pairs with the Release of the swap that stored `old` (`store_global`):
        // `shade` reads its allocation bit.
        let old = g.chunks[i / CHUNK][i % CHUNK].swap(0, Ordering::Acquire);
        shade(old);
        g.free.push(i);
    }

    /// Calls `f(index, word)` for every slot in use.
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        let g = self.lock();
        for i in 0..g.used {
            // Acquire pairs with the Release of `store_global`'s swap, made outside this
            // lock: the marker shading the value sees its object initialised.
            let w = g.chunks[i / CHUNK][i % CHUNK].load(Ordering::Acquire);
            if w != 0 {
                f(i, w);
            }
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

// SAFETY: `word` points into a chunk owned by `gc`'s table, which outlives this handle (the
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

    pub(crate) fn with_value(gc: &Arc<Inner>, value: usize) -> Global {
        let (index, word) = gc.globals.register(value, || {
            gc.write_barrier(None, 0, gc.ref_in(crate::WordKind::Tagged, value))
        });
        Global { gc: gc.clone(), index, word }
    }

    pub(crate) fn word(&self) -> &AtomicUsize {
        // SAFETY: see the `Send` impl: the chunk outlives `self`.
        unsafe { &*self.word }
    }

    pub(crate) fn check(&self, gc: &Arc<Inner>) -> Result<(), GcError> {
        if Arc::ptr_eq(&self.gc, gc) { Ok(()) } else { Err(GcError::WrongHeap) }
    }
}

impl Drop for Global {
    fn drop(&mut self) {
        let gc = &self.gc;
        gc.globals.release(self.index, |old| {
            gc.write_barrier(None, gc.ref_in(crate::WordKind::Tagged, old), 0)
        });
    }
}

/// A channel of managed values between goroutines: [`Mutator::send`](crate::Mutator::send)
/// and [`Mutator::recv`](crate::Mutator::recv). A value in flight sits in a [`Global`], so a
/// reference sent and not yet received stays alive. Cheap to clone (shared).
#[derive(Clone)]
pub struct RefChan {
    pub(crate) gc: Arc<Inner>,
    pub(crate) chan: Arc<Chan<Global>>,
}

impl std::fmt::Debug for RefChan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefChan(len {}, cap {})", self.chan.len(), self.chan.cap())
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
        RefChan { gc: gc.inner.clone(), chan: Arc::new(chan) }
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
        self.chan.close();
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
        self.chan.len()
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
        self.chan.is_empty()
    }
}
