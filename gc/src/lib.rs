//! # safepoint-gc: the heap (the collector is not built yet)
//!
//! This crate will hold the whole collector of DESIGN.md §4. **Only the allocation layer
//! exists so far**: arenas, pages, spans, size classes, per-P caches, sweeping given mark bits,
//! and scavenging. There is no marking, no root scanning, no phase machine, no write barrier,
//! no pacer and no `Mutator` API yet; the mark bits are set by whoever calls
//! [`Span::mark_object`] (today: the tests).
//!
//! ## Layout
//!
//! ```text
//!  arena (64 MiB, 64 MiB-aligned, one mmap, MAP_NORESERVE: a page costs memory when touched)
//!  +--------+--------+--------+--------+--------+--------+-- ... --+--------+
//!  | page 0 | page 1 | page 2 | page 3 | page 4 | page 5 |         | p 8191 |   8 KiB pages
//!  +--------+--------+--------+--------+--------+--------+-- ... --+--------+
//!  \__ span A: class 3, 1 page ______/\__ span B: large object, 3 pages __/  free run ...
//!  | 24 | 24 | 24 | ... | 24 |tail|
//!   slots of one size; alloc bitmap  [AtomicU64; 16]  (bit i: slot i allocated)
//!                      mark bitmap   [AtomicU64; 16]  (bit i: slot i marked)
//!
//!  page map:  addr >> 26 --> ArenaMeta (one table entry per possible arena, 2^22 entries,
//!                             a MAP_NORESERVE table that costs memory only where used)
//!             (addr - arena base) >> 13 --> span record (or null)
//! ```
//!
//! "Which span, if any, contains address A" is two loads ([`Heap::find_span`]); the start of
//! the object containing A is a subtraction, a division and one bitmap load
//! ([`Span::object_start`]). Span records are never deallocated while the heap lives (freed
//! spans' records are pooled and reused) and every field is atomic, so a lookup racing with a
//! span's reuse reads stale numbers, never freed memory.
//!
//! ## Size classes
//!
//! [`sizeclass`] builds the table at compile time: 8-byte steps up to 64 bytes, then steps of
//! about an eighth of the size, up to 32 KiB, so rounding a request up wastes at most 1/9 of
//! the slot (or less than a word). Each class's span is the fewest pages (at most 16) whose
//! tail after the last slot is at most an eighth of the span. No span has more than 1024 slots,
//! so the bitmaps have a fixed size. Larger requests get a span of their own (class 0), up to
//! one arena; more than that is [`AllocError::TooLarge`].
//!
//! ## Allocation
//!
//! Each P owns a [`Cache`] holding one span per class and, for each, one *inverted* word of
//! the span's allocation bitmap. The fast path takes the lowest set bit of that word
//! (count-trailing-zeros), clears it, zeroes the slot if the span may hold old data, and sets
//! the slot's allocation bit with a Release `fetch_or` (no lock: a cached span's bits are
//! written by its cache alone). When the word is spent the cache reads the span's next word;
//! when the span is spent it goes back to its class's central list (a mutex per class) and the
//! cache takes a partial span from there or, failing that, a new span from the page heap. The
//! page heap (one mutex) keeps free page runs by address and by size, hands out the best fit,
//! maps a new arena when nothing fits, and coalesces neighbouring runs when spans are freed.
//! An allocation that would take the pages in spans past [`HeapConfig::hard_limit`] fails with
//! [`AllocError::OutOfMemory`].
//!
//! ## Sweeping
//!
//! [`Heap::sweep`] takes a span that is not in a cache (caches are flushed first: the
//! collector's Quiesce step will do it), and under the class's central lock sets each
//! allocation word to `alloc & mark` and clears the mark word. Freed slots are filled with
//! [`POISON`] when [`HeapConfig::poison`] is on, and a slot handed out again is checked to
//! still hold the pattern, so a write to a freed object is caught. A span left empty returns
//! to the page heap; a full span that gained free slots joins its class's partial list.
//!
//! ## Scavenging
//!
//! Free runs remember the scavenge generation in which they were freed. [`Heap::scavenge`]
//! gives back to the OS (`madvise(MADV_DONTNEED)`) every run that was already free at the
//! previous call, so memory freed and soon reused is not released, and RSS falls once the
//! heap has stayed smaller for one interval ([`Heap::scavenge_all`] releases everything now).
//! Each arena keeps one bit per page saying "released" (never-touched pages count as
//! released), so runs coalesce freely, only pages still resident are madvised, and
//! [`HeapStats::released_bytes`] is exact. Released pages read as zeroes, so a span carved only
//! from released pages skips zeroing.
//!
//! ## Types and the object header
//!
//! [`types`] holds the descriptors (records with a kind per word: reference, tagged value or
//! raw; arrays of references, of tagged values, of bytes), the per-heap [`TypeRegistry`]
//! (append-only, ids stable, names unique; lock-free lookup by id from a chunked table of
//! `OnceLock`s, so the marker never waits on a registering embedder), the one-word
//! [`Header`] (24-bit type id, 40-bit array length; id 0 never issued, so a zeroed word is no
//! header), checked object sizes, and [`types::scan_refs`], which yields the references of an
//! object for the marker. Nothing allocates objects with headers yet.
//!
//! ## Known costs and limits
//!
//! * [`Span::object_start`] divides by the slot size (Go uses a magic multiplier).
//! * Removing an emptied span from its class's partial list is a linear search.
//! * No object may exceed one arena (64 MiB); the page map covers 48-bit addresses.
//! * Nothing triggers sweeping or scavenging by itself: the collector (not built) will.

mod collector;
mod debug;
mod globals;
mod heap;
mod mark;
mod mutator;
mod os;
mod pageheap;
pub mod sizeclass;
mod span;
pub mod types;

pub use collector::{Gc, GcBuilder, GcConfig, GcError, GcStats, Phase};
pub use debug::DebugKnobs;
pub use globals::{Global, RefChan};
pub use heap::{AllocError, Cache, Heap, HeapConfig, HeapStats, POISON};
pub use mutator::{Bytes, Mutator, Slot};
pub use span::Span;
pub use types::{Header, TagRule, TypeDesc, TypeError, TypeId, TypeRegistry, WordKind};

pub(crate) use safepoint_sched::fatal;

/// Bytes per page.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: usize = 13;
/// Bytes per arena.
pub const ARENA_SIZE: usize = 1 << ARENA_SHIFT;
/// log2 of [`ARENA_SIZE`].
pub const ARENA_SHIFT: usize = 26;
/// Pages per arena.
pub const ARENA_PAGES: usize = ARENA_SIZE / PAGE_SIZE;

#[cfg(test)]
mod tests;
