//! The heap: central lists, per-P caches, large objects, sweeping, scavenging, statistics.
//!
//! ## Kinds: size classes and typed spans
//!
//! Small objects are allocated by *kind*, and each kind has its central lists and a slot in
//! every cache. The first kinds are the size classes: slots of one size, for any object that
//! brings its own header. Past them come [`TYPED_KINDS`] typed kinds, one per record type
//! among the first registered ([`typed_kind`]): a typed span is one page of an arena that
//! holds only typed spans, its slots the records' bodies, headerless, and its last word the
//! type's header. Typed spans are swept, cached and freed as any other; only their layout
//! differs (`Span::typed`, and one word fewer of slots). The header goes last so that the
//! slots start page-aligned: a slot of 16, 32 or 64 bytes then never crosses a cache line
//! (with the header first, a quarter of 16-byte slots did, and marking paid a second miss
//! for each).
//!
//! Why typed kinds rather than headers everywhere: a header is a word per object, half again
//! the size of a two-reference tree node, paid in allocation, sweeping, marking and memory.
//! Why only the first types, and a fixed number: each kind costs a cache slot per P and a
//! partly filled page per P that allocates it, and a kind is found with no table (its type
//! id is its index). An embedder registers its most common records first; the rest, and
//! every array, keep their header. Typed arenas are carved from one address range the page
//! map reserves (`HeapConfig::typed_reserve`), so whether a reference's object has a header
//! is a range check, with no load; past the range, records that would be typed get headers.

use std::collections::VecDeque;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::pageheap::{Grow, PageHeap, PageMap, SpanPtr};
use crate::sizeclass::{CLASSES, NUM_CLASSES, class_of};
use crate::span::{Span, state};
use crate::types::WORD;
use crate::{ARENA_PAGES, ARENA_SIZE, PAGE_SIZE};

/// The byte freed objects are filled with when [`HeapConfig::poison`] is on.
pub const POISON: u8 = 0xDE;

/// Heap settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HeapConfig {
    /// Most bytes of span pages in use at once; an allocation that would pass it fails with
    /// [`AllocError::OutOfMemory`].
    pub hard_limit: usize,
    /// Fill freed objects with [`POISON`] and check, when a slot is handed out again, that
    /// nothing wrote to it while it was free.
    pub poison: bool,
    /// Address space reserved for typed arenas (rounded up to whole 64 MiB arenas, at least
    /// one). Reserving costs no memory; once it is used up, records that would be typed are
    /// allocated with a header instead. Default 256 GiB.
    pub typed_reserve: usize,
}

impl Default for HeapConfig {
    fn default() -> Self {
        HeapConfig {
            hard_limit: usize::MAX,
            poison: false,
            typed_reserve: crate::pageheap::TYPED_RESERVE,
        }
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

/// A snapshot of the heap's sizes. The object and byte counts are exact at the moment of the
/// snapshot, allocations still in a cache's hands included (see [`Heap::alloc_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
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

/// Record types that get typed spans: the types with ids `1..=TYPED_KINDS`, whose objects
/// fit [`MAX_TYPED_SIZE`].
pub const TYPED_KINDS: usize = 64;
/// The largest typed object, in bytes: a typed span is one page, and should hold at least 15.
pub const MAX_TYPED_SIZE: usize = 512;
/// Central lists and cache slots: one per size class, then one per typed kind.
pub(crate) const NUM_KINDS: usize = NUM_CLASSES + TYPED_KINDS;

// A typed page of the smallest slots (one word) fits the span's bitmaps; and the largest
// typed record is one of a size class (so a class gives its slot size).
const _: () = assert!((PAGE_SIZE - WORD) / WORD <= crate::sizeclass::MAX_OBJECTS);
const _: () = assert!(MAX_TYPED_SIZE <= crate::sizeclass::MAX_SMALL);

/// The kind (the central list and cache slot) of headerless objects of record type `type_id`
/// and `size` bytes, if they get typed spans: the first [`TYPED_KINDS`] types registered,
/// when no larger than [`MAX_TYPED_SIZE`]. Others are allocated with a header, by size class.
#[inline]
pub fn typed_kind(type_id: u32, size: usize) -> Option<usize> {
    let id = type_id as usize;
    ((1..=TYPED_KINDS).contains(&id) && (1..=MAX_TYPED_SIZE).contains(&size))
        .then(|| NUM_CLASSES + id - 1)
}

/// Where the header word of a typed span's objects lies: the last word of its page, which
/// starts at `page` (or any address in it).
#[inline(always)]
pub(crate) fn typed_header_addr(page: usize) -> usize {
    (page & !(PAGE_SIZE - 1)) + PAGE_SIZE - WORD
}

/// Index of the partial (some free slot) and full lists in [`Central::lists`].
const PARTIAL: usize = 0;
const FULL: usize = 1;

/// The parity of the lists holding swept spans in generation `sg`; the other parity holds
/// the unswept ones. Adding 2 to `sg` (the end of marking) turns every swept list into an
/// unswept one at once, whatever the heap's size.
#[inline]
fn swept_parity(sg: u32) -> usize {
    ((sg >> 1) & 1) as usize
}

struct Central {
    /// Spans of this class not in any cache, by sweep parity, then partial/full, in the
    /// order they were listed.
    lists: [[VecDeque<SpanPtr>; 2]; 2],
}

/// A sweep of one span: what it freed and where the span went.
struct Swept {
    freed: usize,
    /// The span, kept for the sweeper's caller (`take`), if it asked and the span has room.
    taken: Option<SpanPtr>,
}

struct Inner {
    config: HeapConfig,
    /// Lock order: a `central` lock (or `large`), then `pages`.
    central: Box<[Mutex<Central>]>,
    /// Large-object spans, by sweep parity.
    large: Mutex<[VecDeque<SpanPtr>; 2]>,
    pages: Mutex<PageHeap>,
    /// The heap's sweep generation: even, +2 when marking ends (see `Span::sweepgen`).
    /// Written only with every P stopped; Acquire loads pair with that Release store.
    sweepgen: AtomicU32,
    /// Spans on the lists of each parity (changed under the list's lock; read anywhere).
    listed: [AtomicUsize; 2],
    /// Spans taken off an unswept list and not yet put back or freed.
    pending: AtomicUsize,
    /// The first kind whose unswept lists may be non-empty: [`Heap::sweep_one`] starts there,
    /// not at kind 1, and moves it past each kind it finds empty. Unswept lists only shrink
    /// within a generation, but for a span cached across the end of a marking and released
    /// after it (`release_span` lowers the cursor again). Reset by `finish_mark`.
    sweep_kind: AtomicUsize,
    map: PageMap,
    // Statistics counters. Relaxed: they are sums; nothing is published through them.
    // `allocs` and `alloc_bytes` count what caches have published (each when it takes a new
    // span), for the pacer; the exact counts are `Heap::alloc_counts`'s.
    allocs: AtomicU64,
    alloc_bytes: AtomicU64,
    frees: AtomicU64,
    free_bytes: AtomicU64,
    /// Objects freed by sweeping, by size class (class 0: large objects).
    frees_by_class: [AtomicU64; NUM_CLASSES],
    /// Large objects allocated (they bypass the caches).
    large_allocs: AtomicU64,
    large_alloc_bytes: AtomicU64,
    /// The live caches' counts, and what dropped caches counted (folded in under this lock).
    caches: Mutex<CacheRegistry>,
    /// Weak handles and cleanups by object (see the `weak` module): the sweep reports the
    /// dead objects of spans flagged as having some.
    specials: crate::weak::Specials,
}

/// Every live cache's [`CacheCounts`], and the sums of the caches dropped so far.
struct CacheRegistry {
    live: Vec<Arc<CacheCounts>>,
    retired: AllocCounts,
}

/// Exact allocation counts: objects and bytes ever allocated, by size class (class 0: large
/// objects). A plain value, so that reading it allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocCounts {
    /// Objects allocated, by size class (index 0: large objects); see [`crate::sizeclass`].
    pub objects_by_class: [u64; NUM_CLASSES],
    /// Objects freed by sweeping, by size class (index 0: large objects).
    pub frees_by_class: [u64; NUM_CLASSES],
    /// Bytes allocated (slot sizes, not request sizes).
    pub bytes: u64,
    /// Bytes freed by sweeping (slot sizes).
    pub freed_bytes: u64,
}

impl Default for AllocCounts {
    fn default() -> Self {
        AllocCounts {
            objects_by_class: [0; NUM_CLASSES],
            frees_by_class: [0; NUM_CLASSES],
            bytes: 0,
            freed_bytes: 0,
        }
    }
}

impl AllocCounts {
    /// Objects ever allocated.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// (0..10).for_each(|_| { cache.alloc(24).unwrap(); });
    /// assert_eq!(heap.alloc_counts().objects(), 10); // exact: the cache was not flushed
    /// ```
    pub fn objects(&self) -> u64 {
        self.objects_by_class.iter().sum()
    }

    /// Objects ever freed.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// (0..10).for_each(|_| { cache.alloc(24).unwrap(); });
    /// cache.flush();
    /// heap.finish_mark(); // nothing was marked: everything is garbage
    /// heap.sweep_all();
    /// assert_eq!(heap.alloc_counts().frees(), 10);
    /// ```
    pub fn frees(&self) -> u64 {
        self.frees_by_class.iter().sum()
    }
}

/// What one [`Cache`] has allocated, readable by any thread at any moment: the counts its
/// slow paths have settled, and for each kind the allocation word the cache is taking slots
/// from with the mask of slots that were free when it last counted. The fast path writes
/// none of this: the allocations it made since the last count are the bits of that mask now
/// set in the word (while a span is cached, only its cache sets its allocation bits, and no
/// sweep touches it).
///
/// A sequence lock with one writer (the cache's owner, or a stopper flushing it for its
/// stopped P): the writer makes `seq` odd, updates, makes it even again; a reader retries
/// until it reads the same even `seq` before and after. The writer's sections are a few
/// stores on slow paths, inside the P's pinned section (see `PCache` in the collector), so no
/// preemption holds a writer inside one.
struct CacheCounts {
    seq: AtomicU64,
    /// Allocations counted so far, by size class (index 0 unused: large objects bypass caches).
    by_class: [AtomicU64; NUM_CLASSES],
    bytes: AtomicU64,
    /// By kind: `Slot::bits` (the allocation word), `Slot::counted` and `Slot::size`.
    bits: [AtomicPtr<AtomicU64>; NUM_KINDS],
    counted: [AtomicU64; NUM_KINDS],
    size: [AtomicUsize; NUM_KINDS],
}

impl CacheCounts {
    fn new() -> CacheCounts {
        CacheCounts {
            seq: AtomicU64::new(0),
            by_class: [const { AtomicU64::new(0) }; NUM_CLASSES],
            bytes: AtomicU64::new(0),
            bits: [const { AtomicPtr::new(std::ptr::null_mut()) }; NUM_KINDS],
            counted: [const { AtomicU64::new(0) }; NUM_KINDS],
            size: [const { AtomicUsize::new(0) }; NUM_KINDS],
        }
    }

    /// Starts a writer's section. Only the one writer calls it (see the type).
    fn begin(&self) -> u64 {
        // Relaxed: only this writer stores `seq`.
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        // Orders the odd `seq` before the section's stores: pairs with the reader's Acquire
        // fence, so a reader that saw any store of the section sees `seq` odd or changed.
        std::sync::atomic::fence(Ordering::Release);
        s
    }

    /// Ends the section `begin` returned `s` for.
    fn end(&self, s: u64) {
        // Release pairs with the reader's first Acquire load: a reader that sees the even value
        // sees every store of the section.
        self.seq.store(s + 2, Ordering::Release);
    }

    /// Adds this cache's counts, settled and not, to `out`; consistent at one moment.
    fn read_into(&self, out: &mut AllocCounts) {
        let mut spins = 0u32;
        loop {
            // Acquire pairs with the Release store in `end`.
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                // A writer is in its few stores; if the OS took its thread off the CPU
                // meanwhile, give the CPU up rather than spin through its time slice.
                spins += 1;
                if spins.is_multiple_of(64) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            let mut by_class = [0u64; NUM_CLASSES];
            // Relaxed: validated by the sequence check below.
            let mut bytes = self.bytes.load(Ordering::Relaxed);
            for (c, n) in by_class.iter_mut().enumerate() {
                *n = self.by_class[c].load(Ordering::Relaxed);
            }
            let mut torn = false;
            for kind in 1..NUM_KINDS {
                // Relaxed: validated by the sequence check below.
                let counted = self.counted[kind].load(Ordering::Relaxed);
                if counted == 0 {
                    continue;
                }
                let bits = self.bits[kind].load(Ordering::Relaxed);
                let size = self.size[kind].load(Ordering::Relaxed);
                let Some(class) = class_of(size).filter(|_| !bits.is_null() && size != 0) else {
                    torn = true;
                    break;
                };
                // SAFETY: a non-null `bits` always points at an allocation word of a span
                // record (`Span::bit_pair`), and span records live as long as the heap, which
                // the reader's `Heap` keeps alive; if it is stale, the sequence check discards
                // what it gave. Acquire pairs with the fast path's Release store of the bit.
                let word = unsafe { &*bits }.load(Ordering::Acquire);
                let n = u64::from((word & counted).count_ones());
                by_class[class] += n;
                bytes += n * size as u64;
            }
            // Orders the reads above before the second load of `seq`: pairs with the
            // writer's Release fence in `begin`.
            std::sync::atomic::fence(Ordering::Acquire);
            if !torn && self.seq.load(Ordering::Relaxed) == s1 {
                for (c, n) in by_class.iter().enumerate() {
                    out.objects_by_class[c] += n;
                }
                out.bytes += bytes;
                return;
            }
        }
    }

    /// Adds the settled counts to `out` (for a dropped cache, whose slots are all counted).
    fn settled_into(&self, out: &mut AllocCounts) {
        for c in 0..NUM_CLASSES {
            // Relaxed: the cache is gone; its last writer's stores are ordered by the
            // registry's lock.
            out.objects_by_class[c] += self.by_class[c].load(Ordering::Relaxed);
        }
        out.bytes += self.bytes.load(Ordering::Relaxed);
    }
}

/// The indices of the set bits of a word, lowest first.
struct BitIter(u64);

impl Iterator for BitIter {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let b = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(b)
    }
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
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// assert_eq!(heap.stats().in_use_bytes, 0);
    /// ```
    pub fn new(config: HeapConfig) -> Result<Heap, AllocError> {
        let reserve = config.typed_reserve.clamp(ARENA_SIZE, 1 << 46).next_multiple_of(ARENA_SIZE);
        let map = PageMap::new(reserve).ok_or(AllocError::OsRefused { bytes: 1 << 25 })?;
        let central = (0..NUM_KINDS).map(|_| Mutex::new(Central { lists: Default::default() }));
        Ok(Heap {
            inner: Arc::new(Inner {
                pages: Mutex::new(PageHeap::new(config.hard_limit, map.typed_range())),
                large: Mutex::new(Default::default()),
                sweepgen: AtomicU32::new(2),
                listed: [AtomicUsize::new(0), AtomicUsize::new(0)],
                pending: AtomicUsize::new(0),
                sweep_kind: AtomicUsize::new(1),
                config,
                central: central.collect(),
                map,
                allocs: AtomicU64::new(0),
                alloc_bytes: AtomicU64::new(0),
                frees: AtomicU64::new(0),
                free_bytes: AtomicU64::new(0),
                frees_by_class: [const { AtomicU64::new(0) }; NUM_CLASSES],
                large_allocs: AtomicU64::new(0),
                large_alloc_bytes: AtomicU64::new(0),
                caches: Mutex::new(CacheRegistry {
                    live: Vec::new(),
                    retired: AllocCounts::default(),
                }),
                specials: crate::weak::Specials::new(),
            }),
        })
    }

    /// The weak handles and cleanups of the heap's objects.
    pub(crate) fn specials(&self) -> &crate::weak::Specials {
        &self.inner.specials
    }

    /// A per-P allocation cache for this heap.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(100).unwrap();
    /// assert!(heap.is_object(p.as_ptr() as usize));
    /// ```
    pub fn new_cache(&self) -> Cache {
        let counts = Arc::new(CacheCounts::new());
        lock(&self.inner.caches).live.push(counts.clone());
        Cache {
            counts,
            heap: self.inner.clone(),
            slots: [const { Slot::EMPTY }; NUM_KINDS],
            poison: self.inner.config.poison,
            allocs: 0,
            alloc_bytes: 0,
            black: false,
            black_bytes: 0,
            refills: 0,
        }
    }

    /// The span whose pages contain `addr`, if any. O(1): two table loads.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(64).unwrap().as_ptr() as usize;
    /// let span = heap.find_span(p).unwrap();
    /// assert_eq!(span.elem_size(), 64);
    /// assert!(heap.find_span(8).is_none()); // not the heap's memory
    /// ```
    #[inline]
    pub fn find_span(&self, addr: usize) -> Option<&Span> {
        self.span_record(addr).filter(|s| s.holds(addr))
    }

    /// The span record the page map names for `addr`'s page, unchecked: the first half of
    /// [`Heap::find_span`] (one load from the page map, none from the record), for the
    /// marker, which looks a reference up, prefetches the record, and checks it
    /// ([`Span::holds`]) a few objects later.
    #[inline(always)]
    pub(crate) fn span_record(&self, addr: usize) -> Option<&Span> {
        self.inner.map.span(addr)
    }

    /// Whether `addr` lies in one of this heap's arenas (allocated or not). Another heap's
    /// objects never do: each heap maps its own arenas and has its own page map.
    #[inline]
    pub(crate) fn owns(&self, addr: usize) -> bool {
        self.inner.map.arena(addr).is_some()
    }

    /// Start of the allocated object containing `addr`, if any.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(64).unwrap().as_ptr() as usize;
    /// assert_eq!(heap.object_start(p + 40), Some(p)); // an interior address
    /// ```
    pub fn object_start(&self, addr: usize) -> Option<usize> {
        self.find_span(addr)?.object_start(addr)
    }

    /// Whether `addr` is the start of an allocated object: `object_start(addr) == Some(addr)`,
    /// without a division.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(64).unwrap().as_ptr() as usize;
    /// assert!(heap.is_object(p));
    /// assert!(!heap.is_object(p + 8));
    /// ```
    #[inline]
    pub fn is_object(&self, addr: usize) -> bool {
        self.find_span(addr)
            .and_then(|s| s.start_index(addr).map(|i| s.is_allocated(i)))
            .unwrap_or(false)
    }

    /// Whether `r` is the reference of an allocated object: the address of its body, one word
    /// past its slot's start for an object with a header, its slot's start in a typed span.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(64).unwrap().as_ptr() as usize;
    /// assert!(heap.is_ref(p + 8)); // the body, past the header word at the slot's start
    /// assert!(!heap.is_ref(p));
    /// assert!(!heap.is_ref(16));
    /// ```
    #[inline]
    pub fn is_ref(&self, r: usize) -> bool {
        self.find_span(r).and_then(|s| s.ref_index(r).map(|i| s.is_allocated(i))).unwrap_or(false)
    }

    /// Whether `r` is the reference of an object that no sweep of the current cycle will free:
    /// allocated and, in a span not yet swept since marking last ended, marked. An unmarked
    /// object there is garbage the sweep will free, though its allocation bit is still set.
    ///
    /// Exact for a caller that no cycle can overtake (a goroutine in a pinned section: the
    /// heap's generation moves only inside a stop). A span being swept right now is waited
    /// for (a sweep of one span takes microseconds and runs without preemption).
    pub(crate) fn holds_live(&self, r: usize) -> bool {
        let Some(span) = self.find_span(r) else { return false };
        let Some(i) = span.ref_index(r) else { return false };
        let sg = self.sweepgen();
        loop {
            // Acquire pairs with the sweeper's claim and the Release of its final store of
            // the span's generation: what it wrote to the bits before is seen.
            let g = span.sweepgen.load(Ordering::Acquire);
            if g == sg {
                return span.is_allocated(i);
            }
            if g == sg.wrapping_sub(2) {
                let live = span.is_allocated(i) && span.is_marked(i);
                // Unchanged across the reads: no sweeper claimed the span meanwhile, so the
                // bits were the marking's. The fence pairs with the one after the sweeper's
                // claim (`sweep_span`): a read above that saw a write of its sweep makes this
                // load see the claim.
                std::sync::atomic::fence(Ordering::Acquire);
                if span.sweepgen.load(Ordering::Relaxed) == g {
                    return live;
                }
                continue;
            }
            std::hint::spin_loop();
        }
    }

    /// The address range of the typed arenas, for callers that test many addresses.
    pub(crate) fn typed_range(&self) -> crate::pageheap::TypedRange {
        self.inner.map.typed_range()
    }

    /// Allocates a large object (more than 32 KiB) on a span of its own; zeroed; marked if
    /// `black`.
    fn alloc_large(&self, size: usize, black: bool) -> Result<NonNull<u8>, AllocError> {
        let inner = &*self.inner;
        if size > ARENA_SIZE {
            return Err(AllocError::TooLarge { requested: size, max: ARENA_SIZE });
        }
        let npages = size.div_ceil(PAGE_SIZE);
        let mut large = lock(&inner.large);
        let mut ph = lock(&inner.pages);
        let (addr, zeroed) = inner.page_alloc(&mut ph, npages, size, false)?;
        let rec = ph.record();
        // SAFETY: records live as long as the heap, which `self` keeps alive.
        let span = unsafe { rec.get() };
        inner.init_span(span, addr, npages, 0, size.next_multiple_of(8), 1, state::LARGE, 0);
        if !zeroed {
            // SAFETY: the span's pages are ours alone: just taken from the page heap.
            unsafe { std::ptr::write_bytes(addr as *mut u8, 0, npages * PAGE_SIZE) };
        }
        if black {
            // Relaxed: as any mark; published with the span by the page-map store below.
            span.mark_word(0).store(1, Ordering::Relaxed);
        }
        // Release pairs with the Acquire in `Span::is_allocated`.
        span.alloc_word(0).store(1, Ordering::Release);
        inner.map.set(addr, npages, span);
        drop(ph);
        let sg = inner.sweepgen.load(Ordering::Acquire);
        // Relaxed: published to sweepers by the `large` lock.
        span.sweepgen.store(sg, Ordering::Relaxed);
        let sp = swept_parity(sg);
        large[sp].push_back(rec);
        // Relaxed: a count changed under the list's lock (held); readers only compare with 0.
        inner.listed[sp].fetch_add(1, Ordering::Relaxed);
        drop(large);
        // Relaxed: statistics sums; nothing is published through them.
        inner.allocs.fetch_add(1, Ordering::Relaxed);
        inner.alloc_bytes.fetch_add(span.elem_size() as u64, Ordering::Relaxed);
        inner.large_allocs.fetch_add(1, Ordering::Relaxed);
        inner.large_alloc_bytes.fetch_add(span.elem_size() as u64, Ordering::Relaxed);
        Ok(NonNull::new(addr as *mut u8).expect("arena at address 0"))
    }

    /// Ends a cycle's marking: every span becomes unswept at once (O(1): the heap's sweep
    /// generation grows by 2, which swaps the roles of the swept and unswept lists), so its
    /// mark bits now decide which of its objects live. Returns the new generation.
    ///
    /// The caller must have flushed every [`Cache`] and ordered every marker's mark-bit writes
    /// before this call, and no allocation or sweep may run during it (the collector calls it
    /// with the world stopped).
    ///
    /// # Panics
    /// If the previous cycle's sweep has not finished ([`Heap::sweep_done`]): its unswept
    /// spans still carry marks from before that cycle.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// cache.alloc(16).unwrap();
    /// cache.flush();
    /// let sg = heap.sweepgen();
    /// assert_eq!(heap.finish_mark(), sg + 2);
    /// assert!(!heap.sweep_done());
    /// heap.sweep_all();
    /// ```
    pub fn finish_mark(&self) -> u32 {
        let inner = &*self.inner;
        assert!(self.sweep_done(), "finish_mark: the previous sweep has not finished");
        // Relaxed: the caller's stop orders this with every allocation and sweep.
        let sg = inner.sweepgen.load(Ordering::Relaxed) + 2;
        // Relaxed: published with the new generation by the Release store below.
        inner.sweep_kind.store(1, Ordering::Relaxed);
        // Release pairs with the Acquire loads in the allocation and sweep paths.
        inner.sweepgen.store(sg, Ordering::Release);
        sg
    }

    /// The heap's sweep generation (even; grows by 2 per [`Heap::finish_mark`]).
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let sg = heap.sweepgen();
    /// assert_eq!(sg % 2, 0);
    /// heap.finish_mark();
    /// assert_eq!(heap.sweepgen(), sg + 2);
    /// ```
    pub fn sweepgen(&self) -> u32 {
        // Acquire pairs with the Release store in `finish_mark`.
        self.inner.sweepgen.load(Ordering::Acquire)
    }

    /// Whether every span has been swept since the last [`Heap::finish_mark`].
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// cache.alloc(16).unwrap();
    /// cache.flush();
    /// heap.finish_mark();
    /// assert!(!heap.sweep_done());
    /// heap.sweep_all();
    /// assert!(heap.sweep_done());
    /// ```
    pub fn sweep_done(&self) -> bool {
        let inner = &*self.inner;
        let un = 1 - swept_parity(self.sweepgen());
        // SeqCst: a sweeper raises `pending` before it lowers `listed` (both under the list's
        // lock), so reading `listed` first and `pending` second never misses a span in flight.
        inner.listed[un].load(Ordering::SeqCst) == 0 && inner.pending.load(Ordering::SeqCst) == 0
    }

    /// Sweeps one unswept span, if any is left: every allocated but unmarked object in it is
    /// freed, its mark bits are cleared, and an empty span returns to the page heap. Returns
    /// the objects freed, or `None` when no unswept span was left to claim (others may still
    /// be sweeping their last ones: see [`Heap::sweep_done`]).
    ///
    /// Safe to call from many threads at once and concurrently with allocation: each span is
    /// claimed by one sweeper (a CAS of its sweep generation).
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// (0..3).for_each(|_| { cache.alloc(16).unwrap(); });
    /// cache.flush();
    /// heap.finish_mark();
    /// let mut freed = 0;
    /// while let Some(n) = heap.sweep_one() {
    ///     freed += n;
    /// }
    /// assert_eq!(freed, 3);
    /// ```
    pub fn sweep_one(&self) -> Option<usize> {
        let inner = &*self.inner;
        let sg = self.sweepgen();
        let un = 1 - swept_parity(sg);
        // Relaxed: a hint; the pops below decide under the lists' locks.
        if inner.listed[un].load(Ordering::Relaxed) == 0 {
            return None;
        }
        if let Some(rec) = inner.pop(&inner.large, |l| l[un].pop_back(), un) {
            return Some(inner.sweep_span(rec, sg, false).freed);
        }
        // Relaxed: a hint; a stale cursor costs a look at kinds already found empty.
        let mut kind = inner.sweep_kind.load(Ordering::Relaxed);
        while kind < NUM_KINDS {
            let got = inner.pop(
                &inner.central[kind],
                |c| {
                    let got =
                        c.lists[un][PARTIAL].pop_back().or_else(|| c.lists[un][FULL].pop_back());
                    if got.is_none() {
                        // Under the kind's lock, where `release_span` lowers the cursor and
                        // pushes: it moves past this kind only if the kind is empty now, and
                        // a span pushed later lowers it back. Relaxed: the lock orders both.
                        let _ = inner.sweep_kind.compare_exchange(
                            kind,
                            kind + 1,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    got
                },
                un,
            );
            if let Some(rec) = got {
                return Some(inner.sweep_span(rec, sg, false).freed);
            }
            kind += 1;
        }
        None
    }

    /// Sweeps every span left unswept. Returns the number of objects freed.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// (0..5).for_each(|_| { cache.alloc(16).unwrap(); });
    /// cache.flush();
    /// heap.finish_mark();
    /// assert_eq!(heap.sweep_all(), 5); // nothing was marked
    /// ```
    pub fn sweep_all(&self) -> usize {
        let mut freed = 0;
        while let Some(n) = self.sweep_one() {
            freed += n;
        }
        freed
    }

    /// Returns to the OS the free page runs that were already free at the previous call, so
    /// memory stays mapped across one scavenge interval before it is given back. Returns the
    /// bytes released.
    ///
    /// The page-heap lock is held only to pick the pages and to put them back, not while the
    /// OS releases them (which can take milliseconds for a large heap): allocation goes on
    /// meanwhile (those pages are out of its reach until they are back).
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let _ = heap.scavenge(); // gives back pages free for a while; none yet
    /// assert_eq!(heap.stats().in_use_bytes, 0);
    /// ```
    pub fn scavenge(&self) -> usize {
        self.scavenge_pages(false)
    }

    /// Returns every free page run to the OS now. Returns the bytes released.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// cache.alloc(64 << 10).unwrap(); // a large object: a span of its own
    /// cache.flush();
    /// heap.finish_mark();
    /// heap.sweep_all();
    /// assert!(heap.scavenge_all() >= 64 << 10); // its pages, back to the OS
    /// ```
    pub fn scavenge_all(&self) -> usize {
        self.scavenge_pages(true)
    }

    fn scavenge_pages(&self, all: bool) -> usize {
        let taken = lock(&self.inner.pages).scavenge_take(all);
        let mut bytes = 0;
        for &(at, pages) in &taken {
            // SAFETY: the range is page-aligned, inside an arena, and out of the page heap's
            // free runs until `scavenge_finish`: nothing lives in it or can be put there.
            unsafe { crate::os::release(at, pages * PAGE_SIZE) };
            bytes += pages * PAGE_SIZE;
        }
        lock(&self.inner.pages).scavenge_finish(taken);
        bytes
    }

    /// Bytes ever allocated (slot sizes), as far as caches have published them (each cache
    /// publishes when it takes a new span). Lock-free: the pacer reads it on allocation's slow
    /// path.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// cache.alloc(24).unwrap();
    /// cache.flush(); // publishes the cache's counts
    /// assert!(heap.allocated_bytes() >= 24);
    /// ```
    pub fn allocated_bytes(&self) -> u64 {
        // Relaxed: a statistics sum.
        self.inner.alloc_bytes.load(Ordering::Relaxed)
    }

    /// Bytes in allocated objects, as far as caches have published them and sweeps have
    /// freed (lock-free; a sweep in progress makes it an overestimate).
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// cache.alloc(24).unwrap();
    /// cache.flush();
    /// assert!(heap.live_bytes_estimate() >= 24);
    /// ```
    pub fn live_bytes_estimate(&self) -> u64 {
        // Relaxed: statistics sums.
        let a = self.inner.alloc_bytes.load(Ordering::Relaxed);
        a.saturating_sub(self.inner.free_bytes.load(Ordering::Relaxed))
    }

    /// Objects and bytes allocated and freed so far, exact at the moment of the call: the
    /// counts of every live cache (what its fast path allocated since it last counted
    /// included), of the caches dropped, of large objects, and of every sweep done.
    ///
    /// Cost: one lock (the registry of caches, taken only by this and by creating and
    /// dropping a cache) and, per cache, a few hundred loads; nothing is allocated and no
    /// allocating thread waits for it. A writer in the middle of a slow path's few stores is
    /// waited for (a spin of nanoseconds).
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// cache.alloc(24).unwrap();
    /// cache.alloc(24).unwrap();
    /// let c = heap.alloc_counts();
    /// assert_eq!((c.objects(), c.bytes), (2, 48));
    /// ```
    pub fn alloc_counts(&self) -> AllocCounts {
        let inner = &*self.inner;
        let reg = lock(&inner.caches);
        let mut out = reg.retired;
        for c in &reg.live {
            c.read_into(&mut out);
        }
        drop(reg);
        // Relaxed: statistics sums. Frees are read after the allocations, so that an object
        // freed meanwhile is counted allocated too (frees never exceed allocations).
        out.objects_by_class[0] += inner.large_allocs.load(Ordering::Relaxed);
        out.bytes += inner.large_alloc_bytes.load(Ordering::Relaxed);
        for c in 0..NUM_CLASSES {
            out.frees_by_class[c] = inner.frees_by_class[c].load(Ordering::Relaxed);
        }
        out.freed_bytes = inner.free_bytes.load(Ordering::Relaxed);
        out
    }

    /// The heap's sizes now.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// cache.alloc(24).unwrap();
    /// assert_eq!(heap.stats().total_allocs, 1);
    /// ```
    pub fn stats(&self) -> HeapStats {
        let inner = &*self.inner;
        let counts = self.alloc_counts();
        let ph = lock(&inner.pages);
        let (allocs, frees) = (counts.objects(), counts.frees());
        HeapStats {
            mapped_bytes: ph.arena_count() * ARENA_SIZE,
            in_use_bytes: ph.in_use_pages * PAGE_SIZE,
            free_bytes: ph.free_pages * PAGE_SIZE,
            released_bytes: ph.released_pages * PAGE_SIZE,
            live_bytes: counts.bytes.saturating_sub(counts.freed_bytes),
            live_objects: allocs.saturating_sub(frees),
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
        typed: bool,
    ) -> Result<(usize, bool), AllocError> {
        ph.alloc(&self.map, npages, typed).map_err(|e| match e {
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
        typed: usize,
    ) {
        // Relaxed stores: the page-map Release stores in `PageMap::set` publish them.
        span.start.store(addr, Ordering::Relaxed);
        span.typed.store(typed, Ordering::Relaxed);
        span.npages.store(npages, Ordering::Relaxed);
        span.class.store(class, Ordering::Relaxed);
        span.elem_size.store(elem, Ordering::Relaxed);
        span.div_mul.store((u32::MAX as usize / elem.max(1) + 1) as u32, Ordering::Relaxed);
        span.nelems.store(nelems, Ordering::Relaxed);
        span.needzero.store(false, Ordering::Relaxed);
        span.specials.store(false, Ordering::Relaxed);
        span.clear_bits();
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

    /// Takes a span off a list for sweeping: pops under `m`'s lock and counts it pending.
    fn pop<T>(
        &self,
        m: &Mutex<T>,
        f: impl FnOnce(&mut T) -> Option<SpanPtr>,
        parity: usize,
    ) -> Option<SpanPtr> {
        let mut l = lock(m);
        let rec = f(&mut l)?;
        // SeqCst: see `Heap::sweep_done` (pending rises before listed falls).
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.listed[parity].fetch_sub(1, Ordering::SeqCst);
        Some(rec)
    }

    /// Puts a span on a list of parity `p` (the caller holds that list's lock).
    fn push(&self, list: &mut VecDeque<SpanPtr>, rec: SpanPtr, p: usize) {
        list.push_back(rec);
        // Relaxed: see `listed`; readers compare with 0 and re-check under the lock.
        self.listed[p].fetch_add(1, Ordering::Relaxed);
    }

    /// Sweeps a span just taken off an unswept list (counted in `pending`) in generation `sg`.
    /// With `take`, a span left with free slots is handed to the caller (state CACHED) instead
    /// of going back on a list.
    fn sweep_span(&self, rec: SpanPtr, sg: u32, take: bool) -> Swept {
        // SAFETY: records live as long as the heap, which `self` is part of.
        let span = unsafe { rec.get() };
        // Acquire/Relaxed: the claim only excludes other sweepers; the list pop under a lock
        // already ordered the span's bits with their last writer.
        let claimed = span
            .sweepgen
            .compare_exchange(sg - 2, sg - 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        // The claim before the sweep's writes to the bits, for `Heap::holds_live`, which
        // reads the bits between two loads of the generation (a reader that sees a write of
        // this sweep sees the claim on its second load).
        std::sync::atomic::fence(Ordering::Release);
        let out = if !claimed {
            // Only a span on an unswept list has generation sg - 2; anything else is a bug in
            // the list discipline, and sweeping it could free live objects.
            panic!(
                "heap: span at {:#x} on an unswept list has sweep generation {} (heap {sg})",
                span.start(),
                span.sweepgen.load(Ordering::Relaxed)
            );
        } else if span.is_large() {
            self.sweep_large(span, rec, sg)
        } else {
            self.sweep_small(span, rec, sg, take)
        };
        // SeqCst: see `Heap::sweep_done`.
        self.pending.fetch_sub(1, Ordering::SeqCst);
        out
    }

    fn sweep_small(&self, span: &Span, rec: SpanPtr, sg: u32, take: bool) -> Swept {
        let size = span.elem_size();
        let mut freed = 0;
        let mut left = 0;
        for w in 0..span.slots().div_ceil(64) {
            // Relaxed: the span is claimed (no list, no cache holds it), so the last alloc-bit
            // writer released it under the list lock we popped it under; marks are ordered by
            // the stop that ended marking.
            let a = span.alloc_word(w).load(Ordering::Relaxed);
            let m = span.mark_word(w).swap(0, Ordering::Relaxed);
            let dead = a & !m;
            left += (a & m).count_ones() as usize;
            if dead == 0 {
                continue;
            }
            // Relaxed: set (when a special is added) before the stop that ended this
            // marking, or for an object that was live then, which this sweep does not free.
            if span.specials.load(Ordering::Relaxed) {
                let base = span.start() + span.ref_offset() + w * 64 * size;
                // Before the allocation word's Release store below: a weak read that sees
                // the slot freed (or taken again) then sees its handle cleared.
                self.specials.died(BitIter(dead).map(|b| base + b * size));
            }
            // Release pairs with the Acquire in `Span::is_allocated`.
            span.alloc_word(w).store(a & m, Ordering::Release);
            freed += dead.count_ones() as usize;
            if self.config.poison {
                let mut d = dead;
                while d != 0 {
                    let idx = w * 64 + d.trailing_zeros() as usize;
                    d &= d - 1;
                    // SAFETY: the slot lies inside this span and was just freed: it is
                    // unreachable, and no cache can hand it out while we hold the claim.
                    unsafe {
                        std::ptr::write_bytes((span.start() + idx * size) as *mut u8, POISON, size)
                    };
                }
            }
        }
        if freed > 0 {
            // Relaxed: statistics sums.
            self.frees.fetch_add(freed as u64, Ordering::Relaxed);
            self.free_bytes.fetch_add((freed * size) as u64, Ordering::Relaxed);
            let class = class_of(size).expect("a small span's slots are small");
            self.frees_by_class[class].fetch_add(freed as u64, Ordering::Relaxed);
            // Relaxed: the span reaches its next cache under the central lock taken below.
            span.needzero.store(true, Ordering::Relaxed);
        }
        let class = span.size_class();
        let mut central = lock(&self.central[class]);
        // Published to the next claimer by the central lock; Release for `Heap::holds_live`,
        // which reads the allocation bits after seeing the span swept.
        span.sweepgen.store(sg, Ordering::Release);
        if left == 0 && !take {
            let mut ph = lock(&self.pages);
            self.free_span(&mut ph, span, rec);
            return Swept { freed, taken: None };
        }
        // A span left empty is taken as it is, rather than given back to the page heap for
        // a fresh one to be carved right away (as Go's `sweep(preserve)` keeps it).
        if take && left < span.slots() {
            // Release pairs with the Acquire in `Heap::find_span`.
            span.state.store(state::CACHED, Ordering::Release);
            return Swept { freed, taken: Some(rec) };
        }
        let full = left == span.slots();
        span.state.store(if full { state::FULL } else { state::PARTIAL }, Ordering::Release);
        let sp = swept_parity(sg);
        self.push(&mut central.lists[sp][if full { FULL } else { PARTIAL }], rec, sp);
        Swept { freed, taken: None }
    }

    fn sweep_large(&self, span: &Span, rec: SpanPtr, sg: u32) -> Swept {
        let mut large = lock(&self.large);
        // Published to the next claimer by the list lock; Release as in `sweep_small`.
        span.sweepgen.store(sg, Ordering::Release);
        // Relaxed: marks are ordered by the stop that ended marking.
        if span.mark_word(0).swap(0, Ordering::Relaxed) & 1 != 0 {
            let sp = swept_parity(sg);
            self.push(&mut large[sp], rec, sp);
            return Swept { freed: 0, taken: None };
        }
        drop(large);
        // Relaxed: as in `sweep_small`.
        if span.specials.load(Ordering::Relaxed) {
            // Before the span is freed (the page heap's lock publishes it).
            self.specials.died(std::iter::once(span.start() + span.ref_offset()));
        }
        // Relaxed: statistics sums.
        self.frees.fetch_add(1, Ordering::Relaxed);
        self.free_bytes.fetch_add(span.elem_size() as u64, Ordering::Relaxed);
        self.frees_by_class[0].fetch_add(1, Ordering::Relaxed);
        if self.config.poison {
            // SAFETY: the object is unmarked, hence unreachable, and its pages are still ours.
            unsafe { std::ptr::write_bytes(span.start() as *mut u8, POISON, span.elem_size()) };
        }
        let mut ph = lock(&self.pages);
        self.free_span(&mut ph, span, rec);
        Swept { freed: 1, taken: None }
    }

    /// A span of `kind` for a cache: a swept partial one, else an unswept one swept now
    /// (partial first, then up to `FULL_SWEEP_BUDGET` full ones), else a new one. `kind` is
    /// a size class with `typed` 0, or a typed kind (see [`typed_kind`]) with `typed` the
    /// header of its objects' type and `requested` their size.
    fn take_span(
        &self,
        kind: usize,
        requested: usize,
        typed: usize,
    ) -> Result<SpanPtr, AllocError> {
        const FULL_SWEEP_BUDGET: usize = 16;
        let sg = self.sweepgen.load(Ordering::Acquire);
        let (sp, un) = (swept_parity(sg), 1 - swept_parity(sg));
        let mut budget = FULL_SWEEP_BUDGET;
        loop {
            let mut central = lock(&self.central[kind]);
            if let Some(rec) = central.lists[sp][PARTIAL].pop_back() {
                // Relaxed: see `listed`.
                self.listed[sp].fetch_sub(1, Ordering::Relaxed);
                // SAFETY: records live as long as the heap, which `self` is part of.
                let span = unsafe { rec.get() };
                // Release pairs with the Acquire in `Heap::find_span`.
                span.state.store(state::CACHED, Ordering::Release);
                return Ok(rec);
            }
            let mut unswept = central.lists[un][PARTIAL].pop_back();
            if unswept.is_none() && budget > 0 {
                budget -= 1;
                // The oldest first (the background sweeper takes the newest), so the two
                // work from opposite ends. This came with a diagnosis later found wrong, and
                // has no measured gain of its own; it is kept as harmless.
                unswept = central.lists[un][FULL].pop_front();
            }
            let Some(rec) = unswept else { break };
            // SeqCst: see `Heap::sweep_done`.
            self.pending.fetch_add(1, Ordering::SeqCst);
            self.listed[un].fetch_sub(1, Ordering::SeqCst);
            drop(central);
            if let Some(rec) = self.sweep_span(rec, sg, true).taken {
                return Ok(rec);
            }
        }
        let (pages, size, slots) = if typed == 0 {
            let c = CLASSES[kind];
            (c.pages, c.size, c.objects)
        } else {
            // One page: the slots from its start (a slot of 16, 32 or 64 bytes never crosses a
            // cache line), the type's header word in its last word.
            let size = CLASSES[class_of(requested).expect("typed objects are small")].size;
            (1, size, (PAGE_SIZE - WORD) / size)
        };
        let mut ph = lock(&self.pages);
        let (addr, zeroed) = self.page_alloc(&mut ph, pages, requested, typed != 0)?;
        let rec = ph.record();
        // SAFETY: as above.
        let span = unsafe { rec.get() };
        self.init_span(span, addr, pages, kind, size, slots, state::CACHED, typed);
        // Relaxed: published with the span by the page-map Release store below and to its
        // cache by this thread.
        span.sweepgen.store(sg, Ordering::Relaxed);
        if self.config.poison {
            // SAFETY: the pages were just taken from the page heap; nothing else uses them.
            unsafe { std::ptr::write_bytes(addr as *mut u8, POISON, pages * PAGE_SIZE) };
        }
        if typed != 0 {
            // SAFETY: the page's last word, past every slot: ours until the span is published.
            // Relaxed: published with the span, as its record's fields are.
            unsafe { &*(typed_header_addr(addr) as *const AtomicUsize) }
                .store(typed, Ordering::Relaxed);
        }
        // Relaxed: the span reaches its cache through this thread.
        span.needzero.store(!zeroed || self.config.poison, Ordering::Relaxed);
        self.map.set(addr, pages, span);
        Ok(rec)
    }

    /// Gives a cached span back to its class's lists: partial if it has a free slot, else
    /// full; swept if it was swept in this generation, else (cached across the end of a
    /// marking) unswept.
    fn release_span(&self, kind: usize, rec: SpanPtr) {
        let sg = self.sweepgen.load(Ordering::Acquire);
        let mut central = lock(&self.central[kind]);
        // SAFETY: records live as long as the heap.
        let span = unsafe { rec.get() };
        let words = span.slots().div_ceil(64);
        // Relaxed: only this thread (the cache owner) wrote these bits.
        let full =
            (0..words).all(|w| span.alloc_word(w).load(Ordering::Relaxed) == span.word_mask(w));
        // Release pairs with the Acquire in `Heap::find_span`.
        span.state.store(if full { state::FULL } else { state::PARTIAL }, Ordering::Release);
        // Relaxed: written under the central lock by whoever last placed the span.
        let p = if span.sweepgen.load(Ordering::Relaxed) == sg {
            swept_parity(sg)
        } else {
            span.sweepgen.store(sg - 2, Ordering::Relaxed);
            // Relaxed: under the kind's lock, as the sweepers' moves of the cursor are (see
            // `Heap::sweep_one`). One that passed this kind already finds the span on its
            // next call.
            self.sweep_kind.fetch_min(kind, Ordering::Relaxed);
            1 - swept_parity(sg)
        };
        self.push(&mut central.lists[p][if full { FULL } else { PARTIAL }], rec, p);
    }
}

struct Slot {
    span: Option<SpanPtr>,
    /// Bitmap word of `span` that `free` was read from.
    word: usize,
    /// Free slots left in that word (inverted alloc bits, masked to valid slots).
    free: u64,
    /// `free` as it was when the allocations since were last counted
    /// ([`Cache::settle`]): the fast path counts nothing, the bits it cleared say how many.
    counted: u64,
    /// The allocation bitmap word `word` of `span` and its mark word after it
    /// ([`Span::bit_pair`]), or dangling while `free` is 0.
    bits: NonNull<AtomicU64>,
    /// Address of the first slot `word` covers: bit `b` of `free` is the slot at
    /// `base + b * size`. (Copied out of the span record when the word is taken, so the fast
    /// path reads only this cache.)
    base: usize,
    /// The class's slot size.
    size: usize,
    /// The span's `needzero`, as it was when the span was taken: it changes only under the
    /// central lock while the span is in no cache.
    zero: bool,
}

// SAFETY: `bits` points into a span record, which lives as long as the heap the cache keeps
// alive, and is an atomic; a `Slot` is only used by the cache that owns it.
unsafe impl Send for Slot {}

impl Slot {
    const EMPTY: Slot = Slot {
        span: None,
        word: 0,
        free: 0,
        counted: 0,
        bits: NonNull::dangling(),
        base: 0,
        size: 0,
        zero: false,
    };

    /// Takes bitmap word `w` of `span` (slot size `size`) if it has a free slot. The
    /// allocations from the word before must have been counted ([`Cache::settle`]).
    fn take_word(&mut self, span: &Span, w: usize) -> bool {
        debug_assert_eq!(self.counted, self.free);
        // Relaxed: while a span is cached only its cache writes its alloc bits, and a span
        // taken from the central lists was released under the lock we took to get it.
        let free = !span.alloc_word(w).load(Ordering::Relaxed) & span.word_mask(w);
        if free == 0 {
            return false;
        }
        self.word = w;
        self.free = free;
        self.counted = free;
        self.bits = span.bit_pair(w);
        self.base = span.start() + w * 64 * self.size;
        true
    }
}

/// A per-P allocation cache: one span per kind (size class or typed kind), allocated from
/// without any lock.
///
/// Runs on: the thread that owns the P; `&mut self` makes it exclusive. Dropping the cache
/// flushes it.
pub struct Cache {
    heap: Arc<Inner>,
    /// The counts readers see (see `CacheCounts`); registered with the heap.
    counts: Arc<CacheCounts>,
    /// By kind: the size classes, then the typed kinds.
    slots: [Slot; NUM_KINDS],
    /// The heap's `poison` mode (every allocation checks that its slot was left poisoned).
    poison: bool,
    allocs: u64,
    alloc_bytes: u64,
    /// Allocate black: mark each new object (while the collector marks).
    black: bool,
    /// Bytes allocated black since the last `take_black_bytes`.
    black_bytes: u64,
    /// Slow paths taken (new word of a span, new span, large object).
    refills: u64,
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
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let a = cache.alloc(0).unwrap(); // its own 8-byte slot
    /// let b = cache.alloc(0).unwrap();
    /// assert_ne!(a, b);
    /// assert_eq!(a.as_ptr() as usize % 8, 0);
    /// ```
    #[inline]
    pub fn alloc(&mut self, size: usize) -> Result<NonNull<u8>, AllocError> {
        match class_of(size).and_then(|class| self.try_take(class)) {
            Some(addr) => Ok(addr),
            None => self.alloc_slow(size),
        }
    }

    /// The slow path of [`alloc`](Self::alloc): a large object, or a refill first.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&mut self, size: usize) -> Result<NonNull<u8>, AllocError> {
        self.refills += 1;
        let Some(class) = class_of(size) else {
            let p = Heap { inner: self.heap.clone() }.alloc_large(size, self.black)?;
            if self.black {
                self.black_bytes += size.next_multiple_of(8) as u64;
            }
            return Ok(p);
        };
        self.refill(class, size, 0)?;
        Ok(self.try_take(class).expect("a refilled slot has a free slot"))
    }

    /// Allocates a headerless object of `size` bytes, zeroed, in a typed span of `kind` (from
    /// [`typed_kind`] for its type) whose last word holds `header`, the type's header word,
    /// after [`try_take`](Self::try_take) found the kind's cached word used up (the collector
    /// tries that inline first). Every call for one kind must give the same size and header
    /// (one type registry per heap makes it so).
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_typed(
        &mut self,
        kind: usize,
        size: usize,
        header: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        debug_assert!((NUM_CLASSES..NUM_KINDS).contains(&kind) && header != 0);
        self.refills += 1;
        self.refill(kind, size, header)?;
        Ok(self.try_take(kind).expect("a refilled slot has a free slot"))
    }

    /// Whether new objects are allocated marked ("black"): on while the collector marks, so
    /// that what is allocated during marking survives it.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// cache.set_black(true); // the collector marks: new objects survive this cycle
    /// assert!(cache.is_black());
    /// cache.alloc(32).unwrap();
    /// assert_eq!(cache.take_black_bytes(), 32);
    /// cache.set_black(false);
    /// ```
    pub fn set_black(&mut self, on: bool) {
        // What was allocated so far is counted under the old colour.
        self.settle_all();
        self.black = on;
    }

    /// Whether new objects are allocated black (see [`set_black`](Self::set_black)).
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// assert!(!cache.is_black());
    /// ```
    pub fn is_black(&self) -> bool {
        self.black
    }

    /// Bytes allocated black since the last call.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// cache.set_black(true);
    /// cache.alloc(16).unwrap();
    /// assert_eq!(cache.take_black_bytes(), 16);
    /// assert_eq!(cache.take_black_bytes(), 0); // since the last call
    /// ```
    pub fn take_black_bytes(&mut self) -> u64 {
        self.settle_all();
        std::mem::take(&mut self.black_bytes)
    }

    /// Counts the allocations kind `kind`'s slot made since it was last counted: the fast
    /// path leaves counting to this, at a refill, a flush or a change of colour.
    fn settle(&mut self, kind: usize) {
        let slot = &mut self.slots[kind];
        if slot.counted == slot.free {
            return;
        }
        let n = u64::from((slot.counted & !slot.free).count_ones());
        slot.counted = slot.free;
        let bytes = n * slot.size as u64;
        self.allocs += n;
        self.alloc_bytes += bytes;
        if self.black {
            self.black_bytes += bytes;
        }
        // The counted allocations move from the word's bits to the settled counts, at once
        // for readers.
        let c = &*self.counts;
        let s = c.begin();
        if n > 0 {
            let class = class_of(slot.size).expect("cached slots are small");
            // Relaxed, load and store: this is the only writer (see `CacheCounts`).
            c.by_class[class]
                .store(c.by_class[class].load(Ordering::Relaxed) + n, Ordering::Relaxed);
            c.bytes.store(c.bytes.load(Ordering::Relaxed) + bytes, Ordering::Relaxed);
        }
        c.counted[kind].store(slot.counted, Ordering::Relaxed);
        c.end(s);
    }

    /// Shows readers kind `kind`'s slot as it is now (its word, mask and size), after
    /// `take_word` or the slot's emptying changed them.
    fn publish_slot(&self, kind: usize) {
        let slot = &self.slots[kind];
        let c = &*self.counts;
        let s = c.begin();
        // Relaxed: inside the writer's section (see `CacheCounts`).
        let bits = if slot.counted == 0 { std::ptr::null_mut() } else { slot.bits.as_ptr() };
        c.bits[kind].store(bits, Ordering::Relaxed);
        c.size[kind].store(slot.size, Ordering::Relaxed);
        c.counted[kind].store(slot.counted, Ordering::Relaxed);
        c.end(s);
    }

    fn settle_all(&mut self) {
        for kind in 1..NUM_KINDS {
            self.settle(kind);
        }
    }

    /// How many allocations took a slow path so far (a new bitmap word, a new span, a large
    /// object): a cheap signal that enough was allocated to look at the pacer.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let r0 = cache.refills();
    /// cache.alloc(16).unwrap(); // the first allocation takes a span: a slow path
    /// assert!(cache.refills() > r0);
    /// ```
    pub fn refills(&self) -> u64 {
        self.refills
    }

    /// Fast path: the next free slot of kind `kind`'s cached word, zeroed and marked
    /// allocated (and black while marking), or `None` if the word has none left.
    #[inline(always)]
    pub(crate) fn try_take(&mut self, kind: usize) -> Option<NonNull<u8>> {
        let slot = &mut self.slots[kind];
        let free = slot.free;
        if free == 0 {
            return None;
        }
        let bit = free.trailing_zeros() as usize;
        slot.free = free & (free - 1);
        let size = slot.size;
        let addr = slot.base + bit * size;
        if slot.zero {
            // Poison mode makes every span need zeroing: its check rides on this branch.
            if self.poison {
                check_poisoned(addr, size);
            }
            // SAFETY: a free slot of our cached span, `size` bytes, 8-aligned (every class
            // size is a multiple of 8): nobody else reads or writes it (a free slot is
            // unreachable). The common small sizes are zeroed with fixed-size stores rather
            // than a call to memset.
            unsafe {
                match size {
                    16 => (addr as *mut [u64; 2]).write([0; 2]),
                    24 => (addr as *mut [u64; 3]).write([0; 3]),
                    32 => (addr as *mut [u64; 4]).write([0; 4]),
                    48 => (addr as *mut [u64; 6]).write([0; 6]),
                    _ => std::ptr::write_bytes(addr as *mut u8, 0, size),
                }
            }
        }
        // SAFETY: `free` was not 0, so `bits` is the pair of the cached span's allocation and
        // mark words `word` (set by `take_word` from `Span::bit_pair`, whose provenance covers
        // both); span records live as long as the heap.
        let (a, m) = unsafe { (slot.bits.as_ref(), slot.bits.add(1).as_ref()) };
        if self.black {
            // Before the alloc bit: nobody can reach the object yet, and a sweep cannot run
            // while marking is on. Relaxed: as `Span::set_mark`.
            m.fetch_or(1 << bit, Ordering::Relaxed);
        }
        // A load and a store, not a read-modify-write: while a span is cached, its cache is
        // the only writer of its alloc bits (a sweep writes only spans it claimed, which no
        // cache holds), so no bit can be lost, and the store is a plain move. Release pairs
        // with the Acquire in `Span::is_allocated`: whoever sees the bit sees the zeroed slot.
        a.store(a.load(Ordering::Relaxed) | 1 << bit, Ordering::Release);
        NonNull::new(addr as *mut u8)
    }

    /// Slow path: the next word of the cached span, else a span from the central list.
    fn refill(&mut self, kind: usize, requested: usize, typed: usize) -> Result<(), AllocError> {
        self.settle(kind);
        let slot = &mut self.slots[kind];
        if let Some(rec) = slot.span {
            // SAFETY: records live as long as the heap.
            let span = unsafe { rec.get() };
            let words = span.slots().div_ceil(64);
            while slot.word + 1 < words {
                if slot.take_word(span, slot.word + 1) {
                    self.publish_slot(kind);
                    return Ok(());
                }
                slot.word += 1;
            }
            slot.span = None;
            slot.free = 0;
            slot.counted = 0;
            self.publish_slot(kind);
            self.heap.release_span(kind, rec);
        }
        self.flush_stats();
        let rec = self.heap.take_span(kind, requested, typed)?;
        // SAFETY: records live as long as the heap.
        let span = unsafe { rec.get() };
        if span.typed_header() != typed || requested > span.elem_size() {
            crate::fatal(format_args!(
                "heap: a span of kind {kind} holds objects of header {:#x} and {} bytes, not \
                 {typed:#x} and {requested} (two type registries sharing one heap?)",
                span.typed_header(),
                span.elem_size()
            ));
        }
        let slot = &mut self.slots[kind];
        slot.span = Some(rec);
        slot.size = span.elem_size();
        // Relaxed: `needzero` is written only under the central lock while the span is in no
        // cache, and we took the span under that lock.
        slot.zero = span.needzero.load(Ordering::Relaxed);
        for w in 0..span.slots().div_ceil(64) {
            if slot.take_word(span, w) {
                self.publish_slot(kind);
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
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// cache.alloc(16).unwrap();
    /// cache.flush(); // its spans go back: now they can be swept
    /// heap.finish_mark();
    /// assert_eq!(heap.sweep_all(), 1);
    /// ```
    pub fn flush(&mut self) {
        self.settle_all();
        for kind in 1..NUM_KINDS {
            let slot = &mut self.slots[kind];
            if let Some(rec) = slot.span.take() {
                slot.free = 0;
                slot.counted = 0;
                slot.word = 0;
                self.publish_slot(kind);
                self.heap.release_span(kind, rec);
            }
        }
        self.flush_stats();
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.flush();
        // Fold this cache's counts into the heap's, under the lock readers sum under, so that
        // no reader sees them twice or not at all.
        let mut reg = lock(&self.heap.caches);
        let CacheRegistry { live, retired } = &mut *reg;
        self.counts.settled_into(retired);
        live.retain(|c| !Arc::ptr_eq(c, &self.counts));
    }
}

/// Dies if the free slot at `addr` (`size` bytes) was written after it was freed: in poison
/// mode every freed slot is filled with [`POISON`].
#[cold]
#[inline(never)]
fn check_poisoned(addr: usize, size: usize) {
    // SAFETY: a free slot inside a span its caller's cache holds: nobody else reads or writes
    // it (a free slot is unreachable), and it is `size` readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, size) };
    if let Some(i) = bytes.iter().position(|&b| b != POISON) {
        panic!(
            "heap corruption: free object at {addr:#x} (size {size}) was written at offset {i} \
             after it was freed"
        );
    }
}

// Largest object: one arena.
const _: () = assert!(ARENA_PAGES * PAGE_SIZE == ARENA_SIZE);
