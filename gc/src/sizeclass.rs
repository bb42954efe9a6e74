//! Size classes: the table that maps a small request to a slot size and a span length.
//!
//! The table is computed at compile time by a `const fn` rather than copied from Go, so the bound it
//! promises is checked by construction and by the tests below:
//!
//! * Slot sizes are multiples of 8 (the word), from 8 to [`MAX_SMALL`] (32 KiB).
//! * Up to 64 bytes the step is 8; above that the step is the largest multiple of 8 that is at
//!   most an eighth of the previous size, so a request rounded up to its class wastes at most
//!   1/9 of the slot (about 11%) or, for the tiny classes, less than one word.
//! * Each class's span is the fewest pages (at most [`MAX_SPAN_PAGES`]) whose tail, the bytes
//!   left over after the last whole slot, is at most an eighth of the span.
//! * No span holds more than [`MAX_OBJECTS`] slots, so every span's bitmaps fit in a fixed
//!   [`BITMAP_WORDS`] words.

use crate::PAGE_SIZE;

/// The largest request served from a size class; anything larger gets a span of its own.
pub const MAX_SMALL: usize = 32 * 1024;
/// The most pages a size-class span may have.
pub const MAX_SPAN_PAGES: usize = 16;
/// The most slots any span holds (a one-page span of 8-byte slots).
pub const MAX_OBJECTS: usize = PAGE_SIZE / 8;
/// Words in a span's allocation (or mark) bitmap.
pub const BITMAP_WORDS: usize = MAX_OBJECTS / 64;

/// One size class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeClass {
    /// Slot size in bytes.
    pub size: usize,
    /// Pages in each span of this class.
    pub pages: usize,
    /// Slots in each span of this class.
    pub objects: usize,
}

const fn next_size(prev: usize) -> usize {
    if prev < 64 {
        return prev + 8;
    }
    let step = (prev / 8) & !7;
    prev + step
}

const fn count_classes() -> usize {
    let mut n = 0;
    let mut s = 8;
    while s < MAX_SMALL {
        n += 1;
        s = next_size(s);
    }
    n + 1 // MAX_SMALL itself closes the table
}

/// Number of size classes. Class 0 is reserved for large (one-object) spans, so small classes
/// are `1..NUM_CLASSES`.
pub const NUM_CLASSES: usize = count_classes() + 1;

const fn pages_for(size: usize) -> usize {
    let mut pages = 1;
    while pages <= MAX_SPAN_PAGES {
        let bytes = pages * PAGE_SIZE;
        if bytes >= size && bytes % size <= bytes / 8 {
            return pages;
        }
        pages += 1;
    }
    panic!("no span length keeps the tail waste under 1/8")
}

const fn build() -> [SizeClass; NUM_CLASSES] {
    let mut t = [SizeClass { size: 0, pages: 0, objects: 0 }; NUM_CLASSES];
    let mut i = 1;
    let mut s = 8;
    while i < NUM_CLASSES {
        let size = if s > MAX_SMALL { MAX_SMALL } else { s };
        let pages = pages_for(size);
        let objects = pages * PAGE_SIZE / size;
        assert!(objects <= MAX_OBJECTS);
        t[i] = SizeClass { size, pages, objects };
        i += 1;
        s = next_size(s);
    }
    t
}

/// The table, indexed by class number; entry 0 is the large-object placeholder.
pub static CLASSES: [SizeClass; NUM_CLASSES] = build();

const LOOKUP_LEN: usize = MAX_SMALL / 8 + 1;

const fn build_lookup() -> [u8; LOOKUP_LEN] {
    let table = build();
    let mut l = [0u8; LOOKUP_LEN];
    let mut c = 1;
    let mut words = 0;
    while words < LOOKUP_LEN {
        while table[c].size < words * 8 {
            c += 1;
        }
        assert!(c < 256);
        l[words] = c as u8;
        words += 1;
    }
    l
}

/// `LOOKUP[(size + 7) / 8]` is the class of a request of `size` bytes (`1..=MAX_SMALL`).
static LOOKUP: [u8; LOOKUP_LEN] = build_lookup();

/// The class for a request of `size` bytes, or `None` if it is larger than [`MAX_SMALL`] and
/// needs a large span. A zero-byte request gets the smallest class.
///
/// ```
/// use safepoint_gc::sizeclass::class_of;
/// assert_eq!(class_of(8), class_of(1)); // the smallest class holds both
/// assert!(class_of(24) < class_of(4096));
/// assert_eq!(class_of(1 << 30), None); // a large object: no class
/// ```
#[inline]
pub fn class_of(size: usize) -> Option<usize> {
    if size > MAX_SMALL {
        return None;
    }
    Some(usize::from(LOOKUP[size.div_ceil(8)]).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_word_aligned() {
        assert_eq!(CLASSES[0].size, 0);
        assert_eq!(CLASSES[1].size, 8);
        assert_eq!(CLASSES[NUM_CLASSES - 1].size, MAX_SMALL);
        for w in CLASSES[1..].windows(2) {
            assert!(w[0].size < w[1].size, "{w:?}");
        }
        for c in &CLASSES[1..] {
            assert_eq!(c.size % 8, 0, "{c:?}");
            assert!(c.objects >= 1 && c.objects <= MAX_OBJECTS, "{c:?}");
            assert!(c.pages >= 1 && c.pages <= MAX_SPAN_PAGES, "{c:?}");
        }
    }

    #[test]
    fn every_request_maps_to_the_smallest_fitting_class_with_bounded_waste() {
        for size in 1..=MAX_SMALL {
            let c = class_of(size).unwrap();
            let slot = CLASSES[c].size;
            assert!(slot >= size, "size {size} class {c} slot {slot}");
            assert!(CLASSES[c - 1].size < size, "size {size} fits the smaller class {}", c - 1);
            let waste = slot - size;
            assert!(waste < 8 || waste * 9 <= slot, "size {size} slot {slot} wastes {waste}");
        }
        assert_eq!(class_of(0), Some(1));
        assert_eq!(class_of(MAX_SMALL + 1), None);
        assert_eq!(class_of(usize::MAX), None);
    }

    #[test]
    fn span_tail_waste_is_at_most_an_eighth() {
        for c in &CLASSES[1..] {
            let bytes = c.pages * PAGE_SIZE;
            assert_eq!(c.objects, bytes / c.size);
            assert!(bytes - c.objects * c.size <= bytes / 8, "{c:?}");
        }
    }

    #[test]
    fn the_table_is_go_sized() {
        // Go has 67 small classes; a table far off that would mean the step rule is wrong.
        assert!((40..=80).contains(&NUM_CLASSES), "{NUM_CLASSES} classes");
    }
}
