//! The heap: central lists, per-P caches, large objects, sweeping, scavenging, statistics.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::pageheap::{Grow, PageHeap, PageMap, SpanPtr};
use crate::sizeclass::{CLASSES, NUM_CLASSES, class_of};
use crate::span::{Span, state};
use crate::{ARENA_PAGES, ARENA_SIZE, PAGE_SIZE};

/// The byte freed objects are filled with when [`HeapConfig::poison`] is on.
pub const POISON: u8 = 0xDE;

/// Heap settings.
#[derive(Clone, Debug)]
pub struct HeapConfig {
    /// Most bytes of span pages in use at once; an allocation that would pass it fails with
    /// [`AllocError::OutOfMemory`].
    pub hard_limit: usize,
    /// Fill freed objects with [`POISON`] and check, when a slot is handed out again, that
    /// nothing wrote to it while it was free.
    pub poison: bool,
}

impl Default for HeapConfig {
    fn default() -> Self {
        HeapConfig { hard_limit: usize::MAX, poison: false }
    }
}

/// Why an allocation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// The allocation would take the heap past its hard limit.
    OutOfMemory {
        /// Bytes the failing request asked for.
        requested: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// No object may be this large (more than one arena).
    TooLarge {
        /// Bytes the request asked for.
        requested: usize,
        /// The largest object the heap can hold.
        max: usize,
    },
    /// The OS refused to map memory.
    OsRefused {
        /// Bytes the heap tried to map.
        bytes: usize,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::OutOfMemory { requested, limit } => write!(
                f,
                "out of memory: allocating {requested} bytes would pass the heap limit of {limit} bytes"
            ),
            AllocError::TooLarge { requested, max } => {
                write!(f, "object too large: {requested} bytes requested, at most {max} allowed")
            }
            AllocError::OsRefused { bytes } => write!(f, "the OS refused to map {bytes} bytes"),
        }
    }
}

impl std::error::Error for AllocError {}

/// Why a span could not be swept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepError {
    /// The span is in a P's cache; flush the caches first.
    Cached,
    /// The span has already been freed.
    Free,
    /// The span belongs to another heap.
    NotInThisHeap,
}

impl fmt::Display for SweepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SweepError::Cached => {
                write!(f, "span is in a per-P cache; flush caches before sweeping")
            }
            SweepError::Free => write!(f, "span is free"),
            SweepError::NotInThisHeap => write!(f, "span belongs to another heap"),
        }
    }
}

impl std::error::Error for SweepError {}

/// A snapshot of the heap's sizes. Object counts include only what caches have flushed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes of arenas mapped.
    pub mapped_bytes: usize,
    /// Bytes of pages in spans.
    pub in_use_bytes: usize,
    /// Bytes of pages in free runs (`mapped = in_use + free`).
    pub free_bytes: usize,
    /// Bytes of free runs given back to the OS (or never touched); at most `free_bytes`.
    pub released_bytes: usize,
    /// Bytes of allocated slots (slot sizes, not request sizes).
    pub live_bytes: u64,
    /// Allocated objects.
    pub live_objects: u64,
    /// Objects ever allocated.
    pub total_allocs: u64,
    /// Objects ever freed by sweeping.
    pub total_frees: u64,
}

struct Central {
    /// Spans of this class with free slots, not in any cache.
    partial: Vec<SpanPtr>,
}

struct Inner {
    config: HeapConfig,
    /// Lock order: a `central` lock, then `pages`.
    central: Box<[Mutex<Central>]>,
    pages: Mutex<PageHeap>,
    map: PageMap,
    // Statistics counters. Relaxed: they are sums; nothing is published through them.
    allocs: AtomicU64,
    alloc_bytes: AtomicU64,
    frees: AtomicU64,
    free_bytes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a heap lock leaves no half-done update the code relies on being
    // undone: every update that can panic checks before it mutates.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The heap: arenas, spans, central lists and the page heap. Cheap to clone (shared).
#[derive(Clone)]
pub struct Heap {
    inner: Arc<Inner>,
}

impl fmt::Debug for Heap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heap").field("stats", &self.stats()).finish()
    }
}

impl Heap {
    /// A new, empty heap; arenas are mapped on first use.
    pub fn new(config: HeapConfig) -> Result<Heap, AllocError> {
        let map = PageMap::new().ok_or(AllocError::OsRefused { bytes: 1 << 25 })?;
        let central = (0..NUM_CLASSES).map(|_| Mutex::new(Central { partial: Vec::new() }));
        Ok(Heap {
            inner: Arc::new(Inner {
                pages: Mutex::new(PageHeap::new(config.hard_limit)),
                config,
                central: central.collect(),
                map,
                allocs: AtomicU64::new(0),
                alloc_bytes: AtomicU64::new(0),
                frees: AtomicU64::new(0),
                free_bytes: AtomicU64::new(0),
            }),
        })
    }

    /// A per-P allocation cache for this heap.
    pub fn new_cache(&self) -> Cache {
        Cache {
            heap: self.inner.clone(),
            slots: [const { Slot { span: None, word: 0, free: 0 } }; NUM_CLASSES],
            allocs: 0,
            alloc_bytes: 0,
        }
    }

    /// The span whose pages contain `addr`, if any. O(1): two table loads.
    pub fn find_span(&self, addr: usize) -> Option<&Span> {
        let s = self.inner.map.span(addr)?;
        // Acquire pairs with the Release stores of the state when a span is set up or freed.
        let st = s.state.load(Ordering::Acquire);
        let start = s.start();
        (st != state::FREE && addr >= start && addr < start + s.pages() * PAGE_SIZE).then_some(s)
    }

    /// Start of the allocated object containing `addr`, if any.
    pub fn object_start(&self, addr: usize) -> Option<usize> {
        self.find_span(addr)?.object_start(addr)
    }

    /// Allocates a large object (more than 32 KiB) on a span of its own; zeroed.
    fn alloc_large(&self, size: usize) -> Result<NonNull<u8>, AllocError> {
        let inner = &*self.inner;
        if size > ARENA_SIZE {
            return Err(AllocError::TooLarge { requested: size, max: ARENA_SIZE });
        }
        let npages = size.div_ceil(PAGE_SIZE);
        let mut ph = lock(&inner.pages);
        let (addr, zeroed) = inner.page_alloc(&mut ph, npages, size)?;
        let rec = ph.record();
        // SAFETY: records live as long as the heap, which `self` keeps alive.
        let span = unsafe { rec.get() };
        inner.init_span(span, addr, npages, 0, size.next_multiple_of(8), 1, state::LARGE);
        if !zeroed {
            // SAFETY: the span's pages are ours alone: just taken from the page heap.
            unsafe { std::ptr::write_bytes(addr as *mut u8, 0, npages * PAGE_SIZE) };
        }
        // Release pairs with the Acquire in `Span::is_allocated`.
        span.alloc[0].store(1, Ordering::Release);
        inner.map.set(addr, npages, span);
        drop(ph);
        // Relaxed: statistics sums; nothing is published through them.
        inner.allocs.fetch_add(1, Ordering::Relaxed);
        inner.alloc_bytes.fetch_add(span.elem_size() as u64, Ordering::Relaxed);
        Ok(NonNull::new(addr as *mut u8).expect("arena at address 0"))
    }

    /// Sweeps `span`: every allocated but unmarked object is freed (alloc bits := alloc & mark
    /// bits), mark bits are cleared, and a span left empty goes back to the page heap. Returns
    /// the number of objects freed.
    ///
    /// Runs after marking has finished (the caller orders every marker's writes before this
    /// call); the freed objects must be unreachable.
    pub fn sweep(&self, span: &Span) -> Result<usize, SweepError> {
        let inner = &*self.inner;
        // A span of another heap would free its pages into ours: refuse it.
        if !self.inner.map.span(span.start()).is_some_and(|s| std::ptr::eq(s, span)) {
            // Acquire pairs with the Release state stores in `init_span`/`free_span`.
            return Err(if span.state.load(Ordering::Acquire) == state::FREE {
                SweepError::Free
            } else {
                SweepError::NotInThisHeap
            });
        }
        // Acquire pairs with the Release state stores in `init_span`/`free_span`; a stale answer
        // is harmless: both paths re-check the state under their lock.
        if span.is_large() && span.state.load(Ordering::Acquire) == state::LARGE {
            return inner.sweep_large(span);
        }
        let class = span.size_class();
        let mut central = lock(&inner.central[class]);
        // Relaxed: a size-class span's state changes only under this lock, which we hold.
        match span.state.load(Ordering::Relaxed) {
            state::CACHED => return Err(SweepError::Cached),
            state::PARTIAL | state::FULL => {}
            state::LARGE => {
                drop(central);
                return inner.sweep_large(span);
            }
            _ => return Err(SweepError::Free),
        }
        // The span's class may have changed between reading it and taking the lock only if the
        // record was freed and reused; re-check under the lock.
        if span.size_class() != class {
            return Err(SweepError::Free);
        }
        let size = span.elem_size();
        let mut freed = 0;
        let mut left = 0;
        for w in 0..span.slots().div_ceil(64) {
            // Relaxed: the span is under the central lock and no cache owns it, so the last
            // alloc-bit writer released it under this lock; marks are ordered by the stop.
            let a = span.alloc[w].load(Ordering::Relaxed);
            let m = span.mark[w].swap(0, Ordering::Relaxed);
            let dead = a & !m;
            if dead == 0 {
                left += a.count_ones() as usize;
                continue;
            }
            // Release pairs with the Acquire in `Span::is_allocated`.
            span.alloc[w].store(a & m, Ordering::Release);
            left += (a & m).count_ones() as usize;
            freed += dead.count_ones() as usize;
            if inner.config.poison {
                let mut d = dead;
                while d != 0 {
                    let idx = w * 64 + d.trailing_zeros() as usize;
                    d &= d - 1;
                    // SAFETY: the slot lies inside this span and was just freed: it is
                    // unreachable, and no cache can hand it out while we hold the lock.
                    unsafe {
                        std::ptr::write_bytes((span.start() + idx * size) as *mut u8, POISON, size)
                    };
                }
            }
        }
        if freed == 0 {
            return Ok(0);
        }
        // Relaxed: statistics sums.
        inner.frees.fetch_add(freed as u64, Ordering::Relaxed);
        inner.free_bytes.fetch_add((freed * size) as u64, Ordering::Relaxed);
        // Relaxed: the cache that next takes this span takes it under the central lock we hold.
        span.needzero.store(true, Ordering::Relaxed);
        let rec = SpanPtr(NonNull::from(span));
        // Relaxed: under the central lock, as above.
        let was = span.state.load(Ordering::Relaxed);
        if left == 0 {
            if was == state::PARTIAL {
                let pos = central.partial.iter().position(|&p| p == rec).expect("partial span");
                central.partial.swap_remove(pos);
            }
            let mut ph = lock(&inner.pages);
            inner.free_span(&mut ph, span, rec);
        } else if was == state::FULL {
            span.state.store(state::PARTIAL, Ordering::Release);
            central.partial.push(rec);
        }
        Ok(freed)
    }

    /// Sweeps every span not in a cache. Returns the number of objects freed.
    pub fn sweep_all(&self) -> usize {
        let recs: Vec<SpanPtr> = lock(&self.inner.pages).records().to_vec();
        recs.into_iter()
            // SAFETY: records live as long as the heap, which `self` keeps alive.
            .map(|r| self.sweep(unsafe { r.get() }).unwrap_or(0))
            .sum()
    }

    /// Returns to the OS the free page runs that were already free at the previous call, so
    /// memory stays mapped across one scavenge interval before it is given back. Returns the
    /// bytes released.
    pub fn scavenge(&self) -> usize {
        lock(&self.inner.pages).scavenge(false)
    }

    /// Returns every free page run to the OS now. Returns the bytes released.
    pub fn scavenge_all(&self) -> usize {
        lock(&self.inner.pages).scavenge(true)
    }

    /// The heap's sizes now.
    pub fn stats(&self) -> HeapStats {
        let inner = &*self.inner;
        let ph = lock(&inner.pages);
        // Relaxed: statistics sums; exact only once every cache has flushed.
        let allocs = inner.allocs.load(Ordering::Relaxed);
        let frees = inner.frees.load(Ordering::Relaxed);
        HeapStats {
            mapped_bytes: ph.arena_count() * ARENA_SIZE,
            in_use_bytes: ph.in_use_pages * PAGE_SIZE,
            free_bytes: ph.free_pages * PAGE_SIZE,
            released_bytes: ph.released_pages * PAGE_SIZE,
            live_bytes: inner.alloc_bytes.load(Ordering::Relaxed)
                - inner.free_bytes.load(Ordering::Relaxed),
            live_objects: allocs - frees,
            total_allocs: allocs,
            total_frees: frees,
        }
    }
}

impl Inner {
    fn page_alloc(
        &self,
        ph: &mut PageHeap,
        npages: usize,
        requested: usize,
    ) -> Result<(usize, bool), AllocError> {
        ph.alloc(&self.map, npages).map_err(|e| match e {
            Grow::Limit => AllocError::OutOfMemory { requested, limit: self.config.hard_limit },
            Grow::Os => AllocError::OsRefused { bytes: ARENA_SIZE },
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn init_span(
        &self,
        span: &Span,
        addr: usize,
        npages: usize,
        class: usize,
        elem: usize,
        nelems: usize,
        st: u8,
    ) {
        // Relaxed stores: the page-map Release stores in `PageMap::set` publish them.
        span.start.store(addr, Ordering::Relaxed);
        span.npages.store(npages, Ordering::Relaxed);
        span.class.store(class, Ordering::Relaxed);
        span.elem_size.store(elem, Ordering::Relaxed);
        span.nelems.store(nelems, Ordering::Relaxed);
        span.needzero.store(false, Ordering::Relaxed);
        for w in span.alloc.iter().chain(span.mark.iter()) {
            w.store(0, Ordering::Relaxed);
        }
        // Release pairs with the Acquire in `Heap::find_span`.
        span.state.store(st, Ordering::Release);
    }

    /// Frees an empty span's pages and its record. Caller holds the page-heap lock (and, for a
    /// size-class span, its central lock).
    fn free_span(&self, ph: &mut PageHeap, span: &Span, rec: SpanPtr) {
        let (start, npages) = (span.start(), span.pages());
        // Release pairs with the Acquire in `Heap::find_span`.
        span.state.store(state::FREE, Ordering::Release);
        self.map.set(start, npages, std::ptr::null());
        ph.free(start, npages);
        ph.retire(rec);
    }

    fn sweep_large(&self, span: &Span) -> Result<usize, SweepError> {
        let mut ph = lock(&self.pages);
        // Relaxed: a large span's state changes only under the page-heap lock, which we hold.
        if span.state.load(Ordering::Relaxed) != state::LARGE {
            return Err(SweepError::Free);
        }
        // Relaxed: marks are ordered by the stop that ends marking.
        if span.mark[0].swap(0, Ordering::Relaxed) & 1 != 0 {
            return Ok(0);
        }
        // Relaxed: statistics sums.
        self.frees.fetch_add(1, Ordering::Relaxed);
        self.free_bytes.fetch_add(span.elem_size() as u64, Ordering::Relaxed);
        if self.config.poison {
            // SAFETY: the object is unmarked, hence unreachable, and its pages are still ours.
            unsafe { std::ptr::write_bytes(span.start() as *mut u8, POISON, span.elem_size()) };
        }
        self.free_span(&mut ph, span, SpanPtr(NonNull::from(span)));
        Ok(1)
    }

    /// A span of `class` for a cache: a partial one from the central list, or a new one.
    fn take_span(&self, class: usize, requested: usize) -> Result<SpanPtr, AllocError> {
        let mut central = lock(&self.central[class]);
        if let Some(rec) = central.partial.pop() {
            // SAFETY: records live as long as the heap, which `self` is part of.
            let span = unsafe { rec.get() };
            // Release pairs with the Acquire in `Heap::find_span`.
            span.state.store(state::CACHED, Ordering::Release);
            return Ok(rec);
        }
        let c = CLASSES[class];
        let mut ph = lock(&self.pages);
        let (addr, zeroed) = self.page_alloc(&mut ph, c.pages, requested)?;
        let rec = ph.record();
        // SAFETY: as above.
        let span = unsafe { rec.get() };
        self.init_span(span, addr, c.pages, class, c.size, c.objects, state::CACHED);
        if self.config.poison {
            // SAFETY: the pages were just taken from the page heap; nothing else uses them.
            unsafe { std::ptr::write_bytes(addr as *mut u8, POISON, c.pages * PAGE_SIZE) };
        }
        // Relaxed: the span reaches its cache through this thread (we hold the central lock).
        span.needzero.store(!zeroed || self.config.poison, Ordering::Relaxed);
        self.map.set(addr, c.pages, span);
        Ok(rec)
    }

    /// Gives a cached span back to the central list: partial if it has a free slot, else full.
    fn release_span(&self, class: usize, rec: SpanPtr) {
        let mut central = lock(&self.central[class]);
        // SAFETY: records live as long as the heap.
        let span = unsafe { rec.get() };
        let words = span.slots().div_ceil(64);
        // Relaxed: only this thread (the cache owner) wrote these bits.
        let full = (0..words).all(|w| span.alloc[w].load(Ordering::Relaxed) == span.word_mask(w));
        if full {
            span.state.store(state::FULL, Ordering::Release);
        } else {
            span.state.store(state::PARTIAL, Ordering::Release);
            central.partial.push(rec);
        }
    }
}

struct Slot {
    span: Option<SpanPtr>,
    /// Bitmap word of `span` that `free` was read from.
    word: usize,
    /// Free slots left in that word (inverted alloc bits, masked to valid slots).
    free: u64,
}

/// A per-P allocation cache: one span per size class, allocated from without any lock.
///
/// Runs on: the thread that owns the P; `&mut self` makes it exclusive. Dropping the cache
/// flushes it.
pub struct Cache {
    heap: Arc<Inner>,
    slots: [Slot; NUM_CLASSES],
    allocs: u64,
    alloc_bytes: u64,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache").field("unflushed_allocs", &self.allocs).finish()
    }
}

impl Cache {
    /// Allocates `size` bytes, zeroed and 8-byte aligned. Sizes up to 32 KiB come from a size
    /// class (a zero-byte request gets an 8-byte slot, so every object has its own address);
    /// larger ones get a span of their own.
    pub fn alloc(&mut self, size: usize) -> Result<NonNull<u8>, AllocError> {
        let Some(class) = class_of(size) else {
            return Heap { inner: self.heap.clone() }.alloc_large(size);
        };
        if self.slots[class].free == 0 {
            self.refill(class, size)?;
        }
        Ok(self.take(class))
    }

    /// Fast path: the next free slot of the cached word.
    #[inline]
    fn take(&mut self, class: usize) -> NonNull<u8> {
        let slot = &mut self.slots[class];
        debug_assert!(slot.free != 0);
        let bit = slot.free.trailing_zeros() as usize;
        slot.free &= slot.free - 1;
        let rec = slot.span.expect("a slot with free bits has a span");
        // SAFETY: records live as long as the heap, which `self.heap` keeps alive.
        let span = unsafe { rec.get() };
        let size = CLASSES[class].size;
        let idx = slot.word * 64 + bit;
        let addr = span.start() + idx * size;
        if self.heap.config.poison {
            // SAFETY: the slot is free and inside our cached span: nobody else reads or writes
            // it (a free slot is unreachable).
            let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, size) };
            if let Some(i) = bytes.iter().position(|&b| b != POISON) {
                panic!(
                    "heap corruption: free object at {addr:#x} (size {size}) was written at \
                     offset {i} after it was freed"
                );
            }
        }
        // Relaxed: `needzero` is written only under the central lock while the span is not
        // cached, and this cache took the span under that lock.
        if span.needzero.load(Ordering::Relaxed) {
            // SAFETY: as above: a free slot of our cached span.
            unsafe { std::ptr::write_bytes(addr as *mut u8, 0, size) };
        }
        // Release pairs with the Acquire in `Span::is_allocated`: whoever sees the bit sees the
        // zeroed slot.
        span.alloc[slot.word].fetch_or(1 << bit, Ordering::Release);
        self.allocs += 1;
        self.alloc_bytes += size as u64;
        NonNull::new(addr as *mut u8).expect("arena at address 0")
    }

    /// Slow path: the next word of the cached span, else a span from the central list.
    fn refill(&mut self, class: usize, requested: usize) -> Result<(), AllocError> {
        let slot = &mut self.slots[class];
        if let Some(rec) = slot.span {
            // SAFETY: records live as long as the heap.
            let span = unsafe { rec.get() };
            let words = span.slots().div_ceil(64);
            while slot.word + 1 < words {
                slot.word += 1;
                // Relaxed: only this cache writes the bits of its cached span.
                slot.free =
                    !span.alloc[slot.word].load(Ordering::Relaxed) & span.word_mask(slot.word);
                if slot.free != 0 {
                    return Ok(());
                }
            }
            slot.span = None;
            self.heap.release_span(class, rec);
        }
        self.flush_stats();
        let rec = self.heap.take_span(class, requested)?;
        // SAFETY: records live as long as the heap.
        let span = unsafe { rec.get() };
        let slot = &mut self.slots[class];
        slot.span = Some(rec);
        for w in 0..span.slots().div_ceil(64) {
            // Relaxed: the span is now ours; its last writer released it under the central
            // lock we took in `take_span`.
            let free = !span.alloc[w].load(Ordering::Relaxed) & span.word_mask(w);
            if free != 0 {
                slot.word = w;
                slot.free = free;
                return Ok(());
            }
        }
        unreachable!("a partial or new span has a free slot")
    }

    fn flush_stats(&mut self) {
        // Relaxed: statistics sums.
        self.heap.allocs.fetch_add(self.allocs, Ordering::Relaxed);
        self.heap.alloc_bytes.fetch_add(self.alloc_bytes, Ordering::Relaxed);
        self.allocs = 0;
        self.alloc_bytes = 0;
    }

    /// Gives every cached span back to the central lists and publishes the cache's counts.
    /// Spans in a cache cannot be swept, so the collector flushes every cache before sweeping.
    pub fn flush(&mut self) {
        for class in 1..NUM_CLASSES {
            let slot = &mut self.slots[class];
            if let Some(rec) = slot.span.take() {
                slot.free = 0;
                slot.word = 0;
                self.heap.release_span(class, rec);
            }
        }
        self.flush_stats();
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.flush();
    }
}

// Largest object: one arena.
const _: () = assert!(ARENA_PAGES * PAGE_SIZE == ARENA_SIZE);
