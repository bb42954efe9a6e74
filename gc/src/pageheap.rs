//! Arenas, the page map, and the page heap: free page runs, best fit, coalescing, scavenging.

use std::collections::{BTreeMap, BTreeSet};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::span::Span;
use crate::{ARENA_PAGES, ARENA_SHIFT, ARENA_SIZE, PAGE_SHIFT, PAGE_SIZE, os};

/// Address bits the page map covers (the user half of a 48-bit address space).
const ADDR_BITS: usize = 48;
const MAP_ENTRIES: usize = 1 << (ADDR_BITS - ARENA_SHIFT);

/// Which arenas some heap of this process has installed, a bit per page-map entry: set when
/// a heap installs an arena, cleared when that heap drops. Several heaps may share a
/// runtime, so a stack scan meets other heaps' references; this tells one (skipped) from a
/// word that is in no heap at all (garbage, which the marker reports). 512 KiB of zeroed
/// static memory, of which only the pages for the arenas in use are ever touched.
static ARENAS_IN_USE: [AtomicU64; MAP_ENTRIES / 64] =
    [const { AtomicU64::new(0) }; MAP_ENTRIES / 64];

/// Marks the arena at `base` as some heap's (`on`) or nobody's.
fn set_arena_in_use(base: usize, on: bool) {
    let i = base >> ARENA_SHIFT;
    let (word, bit) = (&ARENAS_IN_USE[i / 64], 1u64 << (i % 64));
    // Release pairs with the Acquire in `any_heap_owns`; a reference into the arena reaches
    // another thread's scan only through stores that come after this one anyway.
    if on {
        word.fetch_or(bit, Ordering::Release);
    } else {
        word.fetch_and(!bit, Ordering::Release);
    }
}

/// Whether `addr` lies in an arena of some heap of this process.
pub(crate) fn any_heap_owns(addr: usize) -> bool {
    if addr >> ADDR_BITS != 0 {
        return false;
    }
    let i = addr >> ARENA_SHIFT;
    // Acquire: pairs with the Release in `set_arena_in_use`.
    ARENAS_IN_USE[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0
}

/// Per-arena metadata: the span record of each page (null: free or never used).
pub(crate) struct ArenaMeta {
    pub(crate) base: usize,
    pub(crate) pages: Box<[AtomicPtr<Span>]>,
}

/// The default address space reserved per heap for its typed arenas: 4096 arenas, 256 GiB.
/// Reserving costs no memory; past it, typed allocation fails over to headered objects.
pub(crate) const TYPED_RESERVE: usize = 4096 * ARENA_SIZE;

/// The address range of a heap's typed arenas: `contains` is the test for "is this object
/// headerless", a subtraction and a compare, with no load from the heap.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TypedRange {
    base: usize,
    len: usize,
}

impl TypedRange {
    /// Whether `addr` lies in the range.
    #[inline(always)]
    pub(crate) fn contains(self, addr: usize) -> bool {
        addr.wrapping_sub(self.base) < self.len
    }
}

/// Address -> arena, one entry per possible 64 MiB arena in the address space. The table is a
/// `MAP_NORESERVE` mapping: untouched entries read as null and cost no memory.
///
/// It also owns the reservation that typed arenas are carved from (every span in a typed
/// arena holds objects of one record type and no headers: the heap module documentation
/// explains why), so "is this address in a typed span" is a range check ([`TypedRange`]).
pub(crate) struct PageMap {
    table: NonNull<AtomicPtr<ArenaMeta>>,
    typed: TypedRange,
}

// SAFETY: the table is a private mapping of atomics; sharing it is sharing atomics.
unsafe impl Send for PageMap {}
// SAFETY: as above; every access is an atomic load or store.
unsafe impl Sync for PageMap {}

impl PageMap {
    /// A page map, with up to `typed_reserve` bytes (a multiple of [`ARENA_SIZE`]) of address
    /// space reserved for typed arenas: where the process may not map that much (a limit on
    /// its address space), half as much, and so on down to one arena, or none (then every
    /// record gets a header).
    pub(crate) fn new(typed_reserve: usize) -> Option<Self> {
        let bytes = MAP_ENTRIES * size_of::<AtomicPtr<ArenaMeta>>();
        let table = os::map_aligned(bytes, PAGE_SIZE)?;
        let mut len = typed_reserve;
        let typed = loop {
            if len < ARENA_SIZE {
                break TypedRange { base: 0, len: 0 };
            }
            if let Some(base) = os::reserve_aligned(len, ARENA_SIZE) {
                break TypedRange { base: base.as_ptr() as usize, len };
            }
            len = (len / 2) & !(ARENA_SIZE - 1);
        };
        Some(PageMap { table: table.cast(), typed })
    }

    /// The range of the typed arenas.
    #[inline(always)]
    pub(crate) fn typed_range(&self) -> TypedRange {
        self.typed
    }

    fn entry(&self, idx: usize) -> &AtomicPtr<ArenaMeta> {
        debug_assert!(idx < MAP_ENTRIES);
        // SAFETY: idx < MAP_ENTRIES, the table's length; zeroed memory is a valid null AtomicPtr.
        unsafe { &*self.table.as_ptr().add(idx) }
    }

    /// Records `meta` as the arena at `meta.base`.
    pub(crate) fn install(&self, meta: &ArenaMeta) {
        // Release pairs with the Acquire in `arena`: a reader that finds the arena sees its
        // initialised page table.
        self.entry(meta.base >> ARENA_SHIFT).store(meta as *const _ as *mut _, Ordering::Release);
        set_arena_in_use(meta.base, true);
    }

    /// The arena containing `addr`, if any. O(1): one table load.
    pub(crate) fn arena(&self, addr: usize) -> Option<&ArenaMeta> {
        if addr >> ADDR_BITS != 0 {
            return None;
        }
        // Acquire pairs with the Release in `install`.
        let p = self.entry(addr >> ARENA_SHIFT).load(Ordering::Acquire);
        // SAFETY: installed arenas' metadata lives until the heap (and this map) drops.
        unsafe { p.as_ref() }
    }

    /// The span record covering `addr`'s page, if that page belongs to a span.
    pub(crate) fn span(&self, addr: usize) -> Option<&Span> {
        let arena = self.arena(addr)?;
        let page = (addr - arena.base) >> PAGE_SHIFT;
        // Acquire pairs with the Release in `set`: the record's fields were written before.
        let p = arena.pages[page].load(Ordering::Acquire);
        // SAFETY: span records are never freed while the heap lives.
        unsafe { p.as_ref() }
    }

    /// Points every page of `[start, start + npages)` at `span` (or null).
    pub(crate) fn set(&self, start: usize, npages: usize, span: *const Span) {
        let arena = self.arena(start).expect("span outside every arena");
        let first = (start - arena.base) >> PAGE_SHIFT;
        for e in &arena.pages[first..first + npages] {
            // Release pairs with the Acquire in `span`.
            e.store(span as *mut _, Ordering::Release);
        }
    }
}

impl Drop for PageMap {
    fn drop(&mut self) {
        // SAFETY: the table and the typed reservation are the mappings made in `new` (the
        // typed arenas live inside the reservation, and the page heap leaves them to us); the
        // map is being dropped, after the heap whose objects lived there.
        unsafe {
            os::unmap(
                self.table.as_ptr() as usize,
                MAP_ENTRIES * size_of::<AtomicPtr<ArenaMeta>>(),
            );
            if self.typed.len != 0 {
                os::unmap(self.typed.base, self.typed.len);
            }
        };
    }
}

#[derive(Clone, Copy, Debug)]
struct FreeRun {
    pages: usize,
    /// The scavenge generation in which the run was last freed or merged.
    freed_gen: u64,
    /// Every page of the run has been released (so scavenging can skip it).
    released: bool,
}

/// Bytes of each slab that span records are carved from: one huge page on x86_64 and on
/// aarch64 with 4 KiB pages.
const SLAB: usize = 2 << 20;

/// A span record pointer that may cross threads; records live as long as their heap.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct SpanPtr(pub(crate) NonNull<Span>);
// SAFETY: a Span is all atomics and lives as long as the heap that hands the pointer out.
unsafe impl Send for SpanPtr {}

impl SpanPtr {
    /// # Safety
    /// The heap that owns the record is alive for `'a`.
    pub(crate) unsafe fn get<'a>(self) -> &'a Span {
        // SAFETY: records are freed only when the heap drops, which the caller rules out.
        unsafe { self.0.as_ref() }
    }
}

/// Free page runs and the arenas they come from. Lives under one mutex.
pub(crate) struct PageHeap {
    by_addr: BTreeMap<usize, FreeRun>,
    /// Free runs by (pages, address): `[0]` of ordinary arenas, `[1]` of typed ones. A run
    /// never spans two arenas, so it has one kind.
    by_size: [BTreeSet<(usize, usize)>; 2],
    /// The page map's reservation for typed arenas (an arena is typed iff it lies there).
    typed: TypedRange,
    /// Typed arenas mapped so far: the first `typed_arenas` arenas of the reservation.
    typed_arenas: usize,
    /// Boxed: the page map points at each `ArenaMeta`, so it must not move when the Vec grows.
    #[allow(clippy::vec_box)]
    arenas: Vec<Box<ArenaMeta>>,
    /// Per arena (by base address), one bit per page: the page has been given back to the OS
    /// (or never touched) and reads as zeroes. Only free pages have their bit set.
    released: BTreeMap<usize, Box<[u64]>>,
    /// The slabs span records are carved from (see [`PageHeap::record`]), each [`SLAB`] bytes.
    slabs: Vec<usize>,
    /// The next record's place in the last slab, and the bytes left there.
    slab_next: Option<SpanPtr>,
    slab_left: usize,
    /// Records boxed one by one, when no slab could be mapped.
    boxed: Vec<SpanPtr>,
    pool: Vec<SpanPtr>,
    generation: u64,
    pub(crate) in_use_pages: usize,
    pub(crate) free_pages: usize,
    pub(crate) released_pages: usize,
    limit_pages: usize,
}

/// Why the page heap could not hand out pages.
pub(crate) enum Grow {
    Limit,
    Os,
}

impl PageHeap {
    /// A page heap of at most `limit_bytes` of pages in use, whose typed arenas come from
    /// `typed` (the page map's reservation).
    pub(crate) fn new(limit_bytes: usize, typed: TypedRange) -> Self {
        PageHeap {
            by_addr: BTreeMap::new(),
            by_size: [BTreeSet::new(), BTreeSet::new()],
            typed,
            typed_arenas: 0,
            arenas: Vec::new(),
            released: BTreeMap::new(),
            slabs: Vec::new(),
            slab_next: None,
            slab_left: 0,
            boxed: Vec::new(),
            pool: Vec::new(),
            generation: 0,
            in_use_pages: 0,
            free_pages: 0,
            released_pages: 0,
            limit_pages: limit_bytes / PAGE_SIZE,
        }
    }

    pub(crate) fn arena_count(&self) -> usize {
        self.arenas.len()
    }

    /// A span record: reused from the pool or newly made.
    ///
    /// New records are carved one after another from slabs of [`SLAB`] bytes, rather than
    /// allocated one by one wherever the allocator puts them: the marker reads the record of
    /// nearly every reference it follows, so on a large heap the records' pages are as much
    /// a cost in TLB misses as their lines are in cache misses. Packed, a page of records
    /// serves a dozen spans, and every slab after the first is hinted to be one huge page
    /// ([`os::hint_huge`]): a heap grows a second slab only past about 6,500 spans (50 MB of
    /// one-page spans), so a small heap never pays 2 MiB of memory for its records. When it
    /// does, the first slab, full by then, is collapsed into a huge page too
    /// ([`os::collapse_huge`]): left on small pages, its records (a quarter of those of a
    /// 200 MB heap of one-page spans) cost the marker a page walk each time it looks at them.
    pub(crate) fn record(&mut self) -> SpanPtr {
        if let Some(r) = self.pool.pop() {
            return r;
        }
        let size = size_of::<Span>();
        if self.slab_left < size {
            match os::map_aligned(SLAB, SLAB) {
                Some(base) => {
                    if let [first] = self.slabs[..] {
                        // The heap has outgrown its first slab, every page of which holds
                        // records in use: as a huge page it costs no more memory.
                        os::collapse_huge(first, SLAB);
                    }
                    if !self.slabs.is_empty() {
                        os::hint_huge(base.as_ptr() as usize, SLAB);
                    }
                    self.slabs.push(base.as_ptr() as usize);
                    self.slab_next = Some(SpanPtr(base.cast()));
                    self.slab_left = SLAB;
                }
                None => {
                    // No address space for a slab (a limit on it): box the record instead.
                    let r = SpanPtr(NonNull::from(Box::leak(Box::new(Span::empty()))));
                    self.boxed.push(r);
                    return r;
                }
            }
        }
        let at = self.slab_next.expect("a slab with room").0;
        // SAFETY: `at` is inside the last slab with `size` bytes left there (checked above),
        // never handed out before, and aligned for a Span: the slab is SLAB-aligned and every
        // record before it in the slab is `size` bytes, a multiple of Span's alignment.
        unsafe {
            at.as_ptr().write(Span::empty());
            self.slab_next = Some(SpanPtr(at.add(1)));
        }
        self.slab_left -= size;
        SpanPtr(at)
    }

    /// Returns a record to the pool (its span has been freed).
    pub(crate) fn retire(&mut self, r: SpanPtr) {
        self.pool.push(r);
    }

    /// `[1]` for a typed arena's address, `[0]` otherwise: which `by_size` set.
    fn kind(&self, addr: usize) -> usize {
        usize::from(self.typed.contains(addr))
    }

    fn insert(&mut self, addr: usize, run: FreeRun) {
        self.by_addr.insert(addr, run);
        let k = self.kind(addr);
        self.by_size[k].insert((run.pages, addr));
    }

    fn remove(&mut self, addr: usize) -> FreeRun {
        let run = self.by_addr.remove(&addr).expect("free run missing");
        let k = self.kind(addr);
        self.by_size[k].remove(&(run.pages, addr));
        run
    }

    /// Takes `npages` (1..=ARENA_PAGES) from the best-fitting free run of a typed arena (if
    /// `typed`) or an ordinary one, mapping a new arena of that kind if none fits. Returns the
    /// address and whether all its pages read as zeroes.
    pub(crate) fn alloc(
        &mut self,
        map: &PageMap,
        npages: usize,
        typed: bool,
    ) -> Result<(usize, bool), Grow> {
        debug_assert!((1..=ARENA_PAGES).contains(&npages));
        if self.in_use_pages + npages > self.limit_pages {
            return Err(Grow::Limit);
        }
        let found = self.by_size[usize::from(typed)].range((npages, 0)..).next().copied();
        let addr = match found {
            Some((_, addr)) => addr,
            None => self.grow(map, typed)?,
        };
        let run = self.remove(addr);
        if run.pages > npages {
            let rest = FreeRun { pages: run.pages - npages, ..run };
            self.insert(addr + npages * PAGE_SIZE, rest);
        }
        self.free_pages -= npages;
        self.in_use_pages += npages;
        let released = self.take_released(addr, npages);
        self.released_pages -= released;
        Ok((addr, released == npages))
    }

    fn grow(&mut self, map: &PageMap, typed: bool) -> Result<usize, Grow> {
        let base = if typed {
            // The next arena of the typed reservation.
            let n = self.typed_arenas;
            if (n + 1) * ARENA_SIZE > self.typed.len {
                return Err(Grow::Os);
            }
            let base = self.typed.base + n * ARENA_SIZE;
            // SAFETY: an arena-aligned range of the reservation that no arena uses yet
            // (typed arenas are taken in order and never given back while the heap lives).
            if !unsafe { os::commit(base, ARENA_SIZE) } {
                return Err(Grow::Os);
            }
            base
        } else {
            os::map_aligned(ARENA_SIZE, ARENA_SIZE).ok_or(Grow::Os)?.as_ptr() as usize
        };
        let pages = (0..ARENA_PAGES).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect();
        let meta = Box::new(ArenaMeta { base, pages });
        map.install(&meta);
        self.typed_arenas += usize::from(typed);
        self.arenas.push(meta);
        self.free_pages += ARENA_PAGES;
        // Never touched: as good as released.
        self.released.insert(base, vec![u64::MAX; ARENA_PAGES / 64].into_boxed_slice());
        self.released_pages += ARENA_PAGES;
        let run = FreeRun { pages: ARENA_PAGES, freed_gen: self.generation, released: true };
        self.insert(base, run);
        Ok(base)
    }

    /// Clears the released bits of `[addr, addr + npages)`; returns how many were set.
    fn take_released(&mut self, addr: usize, npages: usize) -> usize {
        let bits = self.released.get_mut(&(addr >> ARENA_SHIFT << ARENA_SHIFT)).unwrap();
        let first = (addr & (ARENA_SIZE - 1)) >> PAGE_SHIFT;
        let mut n = 0;
        for p in first..first + npages {
            let b = 1u64 << (p % 64);
            if bits[p / 64] & b != 0 {
                bits[p / 64] &= !b;
                n += 1;
            }
        }
        n
    }

    /// Returns `[addr, addr + npages)` to the free runs, merging with free neighbours in the
    /// same arena.
    pub(crate) fn free(&mut self, addr: usize, npages: usize) {
        self.in_use_pages -= npages;
        self.free_pages += npages;
        let run = FreeRun { pages: npages, freed_gen: self.generation, released: false };
        self.insert_merged(addr, run);
    }

    /// Inserts a free run, merging it with free neighbours in the same arena. The merged run
    /// is released if every part was, and was freed in the latest generation of its parts
    /// that were not released (so merging never makes a page look free for longer than it
    /// was).
    fn insert_merged(&mut self, addr: usize, mut run: FreeRun) {
        let arena = addr >> ARENA_SHIFT;
        let mut start = addr;
        let merge = |a: &mut FreeRun, b: FreeRun| {
            a.pages += b.pages;
            a.freed_gen = match (a.released, b.released) {
                (true, false) => b.freed_gen,
                (false, true) => a.freed_gen,
                _ => a.freed_gen.max(b.freed_gen),
            };
            a.released &= b.released;
        };
        let prev = self.by_addr.range(..addr).next_back().map(|(&a, r)| (a, r.pages));
        if let Some((pa, pp)) = prev
            && pa + pp * PAGE_SIZE == addr
            && pa >> ARENA_SHIFT == arena
        {
            let p = self.remove(pa);
            start = pa;
            merge(&mut run, p);
        }
        let next = start + run.pages * PAGE_SIZE;
        if next >> ARENA_SHIFT == arena && self.by_addr.contains_key(&next) {
            let n = self.remove(next);
            merge(&mut run, n);
        }
        self.insert(start, run);
    }

    /// The first half of a scavenge: takes out of the free runs every page range to release
    /// (the pages not yet released of each run that was already free at the previous
    /// scavenge, or of every run if `all`), leaving the rest of those runs free, and starts a
    /// new generation. Until [`PageHeap::scavenge_finish`] gives them back, nothing can
    /// allocate the ranges taken, so the caller may release them without the lock. They
    /// still count as free pages.
    pub(crate) fn scavenge_take(&mut self, all: bool) -> Vec<(usize, usize)> {
        let generation = self.generation;
        let victims: Vec<usize> = self
            .by_addr
            .iter()
            .filter(|(_, r)| !r.released && (all || r.freed_gen < generation))
            .map(|(&a, _)| a)
            .collect();
        let mut taken = Vec::new();
        for addr in victims {
            let run = self.remove(addr);
            let bits = &self.released[&(addr >> ARENA_SHIFT << ARENA_SHIFT)];
            let first = (addr & (ARENA_SIZE - 1)) >> PAGE_SHIFT;
            let released = |p: usize| bits[p / 64] & (1 << (p % 64)) != 0;
            // Split the run into ranges of released pages (they stay free, as released runs)
            // and of pages to release (taken).
            let mut pieces = Vec::new();
            let mut p = first;
            while p < first + run.pages {
                let from = p;
                let r = released(p);
                while p < first + run.pages && released(p) == r {
                    p += 1;
                }
                pieces.push((addr + (from - first) * PAGE_SIZE, p - from, r));
            }
            for (at, pages, r) in pieces {
                if r {
                    self.insert(at, FreeRun { pages, freed_gen: run.freed_gen, released: true });
                } else {
                    taken.push((at, pages));
                }
            }
        }
        self.generation += 1;
        taken
    }

    /// The second half of a scavenge: the ranges [`PageHeap::scavenge_take`] took have been
    /// released to the OS; they become free runs again, marked released.
    pub(crate) fn scavenge_finish(&mut self, taken: Vec<(usize, usize)>) {
        for (at, pages) in taken {
            let bits = self.released.get_mut(&(at >> ARENA_SHIFT << ARENA_SHIFT)).unwrap();
            let first = (at & (ARENA_SIZE - 1)) >> PAGE_SHIFT;
            for p in first..first + pages {
                bits[p / 64] |= 1 << (p % 64);
            }
            self.released_pages += pages;
            self.insert_merged(at, FreeRun { pages, freed_gen: self.generation, released: true });
        }
    }
}

impl Drop for PageHeap {
    fn drop(&mut self) {
        for a in &self.arenas {
            set_arena_in_use(a.base, false);
        }
        for a in self.arenas.iter().filter(|a| !self.typed.contains(a.base)) {
            // SAFETY: each ordinary arena is one mapping from `grow`; the heap is dropping, so
            // no object or span in it is reachable any more. (Typed arenas are part of the
            // page map's reservation, which the map unmaps.)
            unsafe { os::unmap(a.base, ARENA_SIZE) };
        }
        for r in &self.boxed {
            // SAFETY: every boxed record came from Box::leak in `record` and is freed once,
            // here (a Span needs no drop, so the slabs' records need nothing but the unmap).
            drop(unsafe { Box::from_raw(r.0.as_ptr()) });
        }
        for s in &self.slabs {
            // SAFETY: each slab is one mapping of SLAB bytes from `record`; the heap is
            // dropping, so no record in it is reachable any more.
            unsafe { os::unmap(*s, SLAB) };
        }
    }
}
