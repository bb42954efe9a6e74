//! Spans: runs of pages holding slots of one size class, one page of records of one type
//! (a typed span, its last word their header), or one large object.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::sizeclass::BITMAP_WORDS;

/// Where a span record is in its life. Every change happens under the lock named here.
///
/// | state   | pages           | on a list            | who may set alloc bits | changed under |
/// |---------|-----------------|----------------------|------------------------|---------------|
/// | FREE    | in the page heap| record pool          | nobody                 | page heap     |
/// | CACHED  | one kind        | one P's cache        | that cache only        | central[k]    |
/// | PARTIAL | one kind        | central[k] partial   | nobody (swept only)    | central[k]    |
/// | FULL    | one kind        | central[k] full      | nobody (swept only)    | central[k]    |
/// | LARGE   | one object      | the large list       | nobody                 | page heap     |
///
/// A kind is a size class or a typed kind (see the heap module); `central[k]` is its lists.
///
/// A span on no list and not cached is being swept: its sweeper claimed it (see
/// [`Span::sweepgen`](Span)) after taking it off a list, and puts it back or frees it.
pub(crate) mod state {
    pub(crate) const FREE: u8 = 0;
    pub(crate) const CACHED: u8 = 1;
    pub(crate) const PARTIAL: u8 = 2;
    pub(crate) const FULL: u8 = 3;
    pub(crate) const LARGE: u8 = 4;
}

/// A span record: one run of pages of the heap.
///
/// Records are never deallocated while their heap lives; a freed span's record goes back to a
/// pool and is reused. Every field is atomic so that a lookup through the page map that races
/// with a record's reuse reads stale numbers, never freed memory. The numbers are written
/// before the page-map entries that publish the span (Release) and read after loading those
/// entries (Acquire), so a lookup that does not race with reuse sees them consistent.
///
/// Layout, for the marker (each reference it shades reads the record): the fields a lookup
/// and a mark need share the first cache line, and each allocation word sits next to its mark
/// word, so that testing and setting one object's bits costs at most one more line.
#[repr(C, align(64))]
pub struct Span {
    pub(crate) start: AtomicUsize,
    pub(crate) npages: AtomicUsize,
    pub(crate) elem_size: AtomicUsize,
    pub(crate) nelems: AtomicUsize,
    /// Size class, 0 for a large-object span; for a typed span, its kind (a list index past
    /// the size classes: see the heap module).
    pub(crate) class: AtomicUsize,
    /// For a typed span, the header word of its objects' type (never zero); 0 for any other.
    /// A typed span is one page whose slots start at its first byte and whose last word
    /// holds this header; its objects have no header of their own.
    pub(crate) typed: AtomicUsize,
    /// `u32::MAX / elem_size + 1`: `(off * div_mul) >> 32` is `off / elem_size` for every
    /// offset inside a size-class span (checked for every class by a test), without a divide.
    pub(crate) div_mul: AtomicU32,
    /// The sweep generation, relative to the heap's `sg` (which grows by 2 per cycle):
    /// `sg - 2`: needs sweeping; `sg - 1`: being swept; `sg`: swept (or new this cycle).
    /// A sweeper claims a span by a CAS from `sg - 2` to `sg - 1`.
    pub(crate) sweepgen: AtomicU32,
    pub(crate) state: AtomicU8,
    /// Some free slot holds old data (or poison): allocation must zero it.
    pub(crate) needzero: AtomicBool,
    /// Some object of the span has had a special (a weak handle or a cleanup: see the
    /// `weak` module): its sweep looks its dead objects up in the specials table. Set when
    /// one is added, cleared when the span is set up.
    pub(crate) specials: AtomicBool,
    /// The allocation and mark bitmaps, interleaved: word `2w` holds allocation bits
    /// `64w .. 64w + 64` (bit i: slot i allocated), word `2w + 1` the same slots' mark bits.
    /// See [`Span::alloc_word`] and [`Span::mark_word`].
    bits: [AtomicU64; 2 * BITMAP_WORDS],
}

// The getters below load Relaxed: the fields are published by the page-map entry's Release
// store (read with Acquire in `PageMap::span`) or by the lock under which the span was set up.
impl Span {
    pub(crate) fn empty() -> Self {
        Span {
            start: AtomicUsize::new(0),
            npages: AtomicUsize::new(0),
            class: AtomicUsize::new(0),
            typed: AtomicUsize::new(0),
            elem_size: AtomicUsize::new(0),
            div_mul: AtomicU32::new(0),
            nelems: AtomicUsize::new(0),
            state: AtomicU8::new(state::FREE),
            sweepgen: AtomicU32::new(0),
            needzero: AtomicBool::new(false),
            specials: AtomicBool::new(false),
            bits: [const { AtomicU64::new(0) }; 2 * BITMAP_WORDS],
        }
    }

    /// Allocation bitmap word `w` (slots `64w .. 64w + 64`).
    #[inline(always)]
    pub(crate) fn alloc_word(&self, w: usize) -> &AtomicU64 {
        &self.bits[2 * w]
    }

    /// Allocation word `w` followed by mark word `w`, as one pointer whose provenance covers
    /// both: the allocation fast path keeps it for the word it allocates from.
    #[inline]
    pub(crate) fn bit_pair(&self, w: usize) -> std::ptr::NonNull<AtomicU64> {
        std::ptr::NonNull::from(&self.bits[2 * w..2 * w + 2]).cast()
    }

    /// Mark bitmap word `w` (slots `64w .. 64w + 64`).
    #[inline(always)]
    pub(crate) fn mark_word(&self, w: usize) -> &AtomicU64 {
        &self.bits[2 * w + 1]
    }

    /// Clears both bitmaps (a span being set up, not yet published).
    pub(crate) fn clear_bits(&self) {
        for w in &self.bits {
            // Relaxed: published with the span by the Release store of its state.
            w.store(0, Ordering::Relaxed);
        }
    }

    /// Address of the span's first byte: a page boundary, and its first slot (a typed span's
    /// header word is its last word, not its first).
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(48).unwrap().as_ptr() as usize;
    /// let span = heap.find_span(p).unwrap();
    /// assert!(span.start() <= p && span.start() % 4096 == 0);
    /// ```
    #[inline]
    pub fn start(&self) -> usize {
        self.start.load(Ordering::Relaxed)
    }

    /// Length in pages.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(48).unwrap().as_ptr() as usize;
    /// let span = heap.find_span(p).unwrap();
    /// assert!(span.pages() >= 1);
    /// ```
    #[inline]
    pub fn pages(&self) -> usize {
        self.npages.load(Ordering::Relaxed)
    }

    /// The size class (`1..NUM_CLASSES`), or 0 for a span holding one large object.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(48).unwrap().as_ptr() as usize;
    /// let span = heap.find_span(p).unwrap();
    /// use safepoint_gc::sizeclass::class_of;
    /// assert_eq!(Some(span.size_class()), class_of(48));
    /// ```
    #[inline]
    pub fn size_class(&self) -> usize {
        self.class.load(Ordering::Relaxed)
    }

    /// Bytes per slot (for a large span: the object's size rounded up to a word).
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(48).unwrap().as_ptr() as usize;
    /// let span = heap.find_span(p).unwrap();
    /// assert!(span.elem_size() >= 48);
    /// ```
    #[inline]
    pub fn elem_size(&self) -> usize {
        self.elem_size.load(Ordering::Relaxed)
    }

    /// Slots in the span.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(48).unwrap().as_ptr() as usize;
    /// let span = heap.find_span(p).unwrap();
    /// assert!(span.slots() * span.elem_size() <= span.pages() * 8192);
    /// ```
    #[inline]
    pub fn slots(&self) -> usize {
        self.nelems.load(Ordering::Relaxed)
    }

    /// Whether the span holds one large object rather than slots of a size class.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(48).unwrap().as_ptr() as usize;
    /// let span = heap.find_span(p).unwrap();
    /// assert!(!span.is_large());
    /// let big = cache.alloc(1 << 20).unwrap().as_ptr() as usize;
    /// assert!(heap.find_span(big).unwrap().is_large());
    /// ```
    #[inline]
    pub fn is_large(&self) -> bool {
        self.size_class() == 0
    }

    /// Whether the span is in use and its pages contain `addr` (the second half of
    /// [`Heap::find_span`](crate::Heap::find_span)).
    #[inline(always)]
    pub(crate) fn holds(&self, addr: usize) -> bool {
        // Acquire pairs with the Release stores of the state when a span is set up or freed.
        let st = self.state.load(Ordering::Acquire);
        let start = self.start();
        st != state::FREE && addr >= start && addr < start + self.pages() * crate::PAGE_SIZE
    }

    /// The header word of a typed span's objects, or 0 for any other span.
    #[inline(always)]
    pub(crate) fn typed_header(&self) -> usize {
        self.typed.load(Ordering::Relaxed)
    }

    /// How far an object's reference lies past its slot's start: 0 in a typed span (no
    /// header), one word elsewhere (the reference points past the header, at the body).
    #[inline(always)]
    pub(crate) fn ref_offset(&self) -> usize {
        if self.typed_header() != 0 { 0 } else { crate::types::WORD }
    }

    /// The slot index of the object whose reference is `r`, if `r` is such a reference for a
    /// slot of this span (allocated or not).
    #[inline]
    pub(crate) fn ref_index(&self, r: usize) -> Option<usize> {
        self.start_index(r.wrapping_sub(self.ref_offset()))
    }

    /// The slot index of `addr`, if `addr` lies inside one of the span's slots.
    #[inline]
    fn index_of(&self, addr: usize) -> Option<usize> {
        let start = self.start();
        let off = addr.checked_sub(start)?;
        let idx = self.div(off);
        (idx < self.slots()).then_some(idx)
    }

    /// `off / elem_size` for an offset inside the span.
    #[inline]
    pub(crate) fn div(&self, off: usize) -> usize {
        if self.is_large() {
            return if off < self.elem_size() { 0 } else { usize::MAX };
        }
        // Relaxed: as the other fields (see the impl's note).
        ((off as u64 * self.div_mul.load(Ordering::Relaxed) as u64) >> 32) as usize
    }

    /// The index of the slot starting exactly at `addr`, if `addr` is a slot start inside the
    /// span (allocated or not).
    #[inline]
    pub(crate) fn start_index(&self, addr: usize) -> Option<usize> {
        let off = addr.checked_sub(self.start())?;
        let idx = self.div(off);
        (idx < self.slots() && idx * self.elem_size() == off).then_some(idx)
    }

    fn bit(idx: usize) -> (usize, u64) {
        (idx / 64, 1u64 << (idx % 64))
    }

    /// Whether slot `idx` is allocated.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(48).unwrap().as_ptr() as usize;
    /// let span = heap.find_span(p).unwrap();
    /// let idx = (heap.object_start(p).unwrap() - span.start()) / span.elem_size();
    /// assert!(span.is_allocated(idx));
    /// ```
    #[inline]
    pub fn is_allocated(&self, idx: usize) -> bool {
        let (w, b) = Self::bit(idx);
        // Acquire pairs with the Release store in `Cache::take`: seeing the bit means seeing
        // the slot zeroed.
        idx < self.slots() && self.alloc_word(w).load(Ordering::Acquire) & b != 0
    }

    /// Whether slot `idx` is marked.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(48).unwrap().as_ptr() as usize;
    /// let span = heap.find_span(p).unwrap();
    /// let idx = (heap.object_start(p).unwrap() - span.start()) / span.elem_size();
    /// assert!(!span.is_marked(idx));
    /// span.mark_object(p);
    /// assert!(span.is_marked(idx));
    /// ```
    #[inline]
    pub fn is_marked(&self, idx: usize) -> bool {
        let (w, b) = Self::bit(idx);
        // Relaxed: mark bits are only a set of flags; the collector's handshakes order them.
        idx < self.slots() && self.mark_word(w).load(Ordering::Relaxed) & b != 0
    }

    /// Start of the allocated object containing `addr`, or `None` if `addr` is outside every
    /// slot or its slot is free.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(48).unwrap().as_ptr() as usize;
    /// let span = heap.find_span(p).unwrap();
    /// let start = heap.object_start(p).unwrap();
    /// assert_eq!(span.object_start(p + 16), Some(start));
    /// ```
    pub fn object_start(&self, addr: usize) -> Option<usize> {
        let idx = self.index_of(addr)?;
        self.is_allocated(idx).then(|| self.start() + idx * self.elem_size())
    }

    /// Marks the allocated object containing `addr`. Returns `Some(true)` if this call set the
    /// mark, `Some(false)` if it was already set, `None` if `addr` is in no allocated object.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(48).unwrap().as_ptr() as usize;
    /// let span = heap.find_span(p).unwrap();
    /// assert_eq!(span.mark_object(p), Some(true)); // this call set the mark
    /// assert_eq!(span.mark_object(p), Some(false)); // already set
    /// ```
    pub fn mark_object(&self, addr: usize) -> Option<bool> {
        let idx = self.index_of(addr)?;
        if !self.is_allocated(idx) {
            return None;
        }
        let (w, b) = Self::bit(idx);
        // Relaxed: marking is idempotent; the stop at mark termination orders every marker's
        // fetch_or before the sweep that reads the bits.
        Some(self.mark_word(w).fetch_or(b, Ordering::Relaxed) & b == 0)
    }

    /// Sets the mark bit of slot `idx` (in range); whether this call set it.
    #[inline]
    pub(crate) fn set_mark(&self, idx: usize) -> bool {
        let (w, b) = Self::bit(idx);
        // Relaxed load first: most references reach already-marked objects, and a plain load
        // does not take the cache line exclusive. Relaxed fetch_or: as in `mark_object`.
        self.mark_word(w).load(Ordering::Relaxed) & b == 0
            && self.mark_word(w).fetch_or(b, Ordering::Relaxed) & b == 0
    }

    /// Allocated slots, counted from the bitmap.
    ///
    /// ```
    /// use safepoint_gc::{Heap, HeapConfig};
    /// let heap = Heap::new(HeapConfig::default()).unwrap();
    /// let mut cache = heap.new_cache();
    /// let p = cache.alloc(48).unwrap().as_ptr() as usize;
    /// let span = heap.find_span(p).unwrap();
    /// cache.alloc(48).unwrap();
    /// assert!(span.allocated() >= 2);
    /// ```
    pub fn allocated(&self) -> usize {
        let words = self.slots().div_ceil(64);
        // Acquire: as in `is_allocated`.
        (0..words).map(|w| self.alloc_word(w).load(Ordering::Acquire).count_ones() as usize).sum()
    }

    /// The valid-slot mask of bitmap word `w`.
    pub(crate) fn word_mask(&self, w: usize) -> u64 {
        let n = self.slots() - w * 64;
        if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocation fast path reaches a word's mark bits through the pointer to its
    /// allocation word (`Cache::try_take`): the pointer must carry both words (Miri checks
    /// the provenance), and they must be the words the other accessors name.
    #[test]
    fn a_bit_pair_reaches_the_allocation_and_mark_words_it_names() {
        let span = Box::new(Span::empty());
        for w in [0, BITMAP_WORDS - 1] {
            let p = span.bit_pair(w);
            // SAFETY: `bit_pair` points at two adjacent words of the live `span`, with the
            // provenance of both.
            let (a, m) = unsafe { (p.as_ref(), p.add(1).as_ref()) };
            a.store(1 << 3, Ordering::Relaxed);
            m.fetch_or(1 << 5, Ordering::Relaxed);
            assert_eq!(span.alloc_word(w).load(Ordering::Relaxed), 1 << 3);
            assert_eq!(span.mark_word(w).load(Ordering::Relaxed), 1 << 5);
        }
    }
}
