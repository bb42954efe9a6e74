//! Marking: shading objects grey, scanning them black, the tracer every marker runs (private
//! stack, prefetching pipeline, shared queue), and the checkmark verifier.
//!
//! A grey object is one whose mark bit is set and that is still to be scanned; it turns black
//! when a marker scans its words. Work sits in queues as entries: a grey object (flagged
//! [`GREY`]: roots, barrier shades), or an *edge*, a reference a scan found, whose target the
//! marker that takes the entry shades (tests and sets the mark bit) and, if it was white,
//! scans at once. So an object reachable from a scanned one is never lost: until some marker
//! takes the edge, the edge is work in a queue, and marking does not end while a queue holds
//! any. Queuing edges rather than shaded objects lets the shading wait until the target's
//! metadata has been prefetched ([`Tracer`]).
//!
//! Each marker keeps a private LIFO stack (depth-first order keeps a subtree's objects close in
//! time) and shares through one injector: it spills half its stack there when the stack grows
//! long, or when it finds the injector empty while others may be idle, and steals from it
//! when its own stack is empty. Stop-the-world marking ends when every marker is idle at once
//! ([`Tracer::drain_to_termination`]); concurrent marking ends by the collector's
//! termination protocol (see the `concurrent` module).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_deque::{Injector, Steal};

use crate::heap::Heap;
use crate::pageheap::TypedRange;
use crate::span::Span;
use crate::types::{Header, TagRule, TypeDesc, TypeRegistry, WORD, WordKind};

/// What a marker needs to know about the heap it marks.
#[derive(Clone, Copy)]
pub(crate) struct MarkCtx<'a> {
    pub heap: &'a Heap,
    pub types: &'a TypeRegistry,
    pub rule: TagRule,
}

/// The address a reference word of kind `kind` points at, if it is a reference.
#[inline(always)]
pub(crate) fn ref_of(kind: WordKind, rule: TagRule, w: usize) -> Option<usize> {
    match kind {
        // A weak field holds a cell, which it keeps alive like any reference.
        WordKind::Ref | WordKind::Weak => (w != 0).then_some(w),
        // An ephemeron's value is a tagged value (the barrier shades it as one; the marker
        // traces it only once its key is marked: see `scan_described`).
        WordKind::Tagged | WordKind::Ephemeron => rule.is_ref(w).then_some(w & !rule.mask),
        WordKind::Raw => None,
    }
}

/// The body words of the object whose reference is `obj` (a reference is the address of the
/// body: past the header, where there is one), as atomics.
///
/// # Safety
/// `obj` is the reference of an allocated object of at least `n` body words, which stays
/// allocated for `'a`.
#[inline(always)]
pub(crate) unsafe fn body<'a>(obj: usize, n: usize) -> &'a [AtomicUsize] {
    // SAFETY: per the contract, the words are inside one live allocation; every heap word is
    // accessed through atomics (`docs/ARCHITECTURE.md`, "Memory ordering"), so no access of
    // ours is a data race.
    unsafe { std::slice::from_raw_parts(obj as *const AtomicUsize, n) }
}

/// Where the header word of the object whose reference is `obj` lies, given its heap's
/// typed arenas: the word before the body, or for an object in a typed span, the last word of
/// its page, which all its objects share.
#[inline(always)]
pub(crate) fn header_addr(typed: TypedRange, obj: usize) -> usize {
    if typed.contains(obj) { crate::heap::typed_header_addr(obj) } else { obj - WORD }
}

/// Loads the header word of the object whose reference is `obj`.
///
/// # Safety
/// `obj` is the reference of an allocated object of the heap whose typed arenas are `typed`.
#[inline(always)]
pub(crate) unsafe fn header_in(typed: TypedRange, obj: usize) -> usize {
    // SAFETY: per the contract the word is the header of a live object, or the last word of
    // its typed span's page; Relaxed: the reference reached us through an Acquire load that
    // pairs with the Release store that published it (a field, a global), through the shared
    // queue, or through a handshake (a stack scan, the ragged barrier), each of which orders
    // the header's write before this load (and a typed span's word was written before the
    // span was published).
    unsafe { &*(header_addr(typed, obj) as *const AtomicUsize) }.load(Ordering::Relaxed)
}

/// [`header_in`] for `heap`.
///
/// # Safety
/// `obj` is the reference of an allocated object of `heap`.
#[inline(always)]
pub(crate) unsafe fn header_of(heap: &Heap, obj: usize) -> usize {
    // SAFETY: the caller's contract.
    unsafe { header_in(heap.typed_range(), obj) }
}

/// A queue entry's flag: the object's mark bit is already set (whoever queued it shaded it),
/// so it only needs scanning. An entry without it is an *edge*: a reference read from a
/// scanned object, whose target may still be white. Object addresses are 8-aligned, so the
/// low bit is free.
pub(crate) const GREY: usize = 1;

/// Entries in a tracer's prefetch ring.
const RING: usize = 64;
/// Steps an entry spends in each of the ring's two stages (see [`Tracer`]).
const STAGE: usize = RING / 2;
/// Free slots the ring waits for before it takes entries in, all in one burst (see
/// [`Tracer`], "Prefetches in bursts").
const REFILL: usize = RING / 2;
/// Entries a tracer keeps to itself before it gives half to the shared queue.
const LOCAL_MAX: usize = 4096;
/// Objects scanned between two looks at whether the shared queue has run dry (when a
/// tracer shares its work with idle ones).
const BALANCE_EVERY: u32 = 256;

/// Prefetches the cache line holding `addr` for reading. A hint: it never faults, whatever
/// the address.
#[inline(always)]
pub(crate) fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` needs SSE, which every x86_64 target has; it reads nothing the
    // program can observe and never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// One entry of the prefetch ring.
#[derive(Clone, Copy)]
struct Slot {
    /// The object (without the [`GREY`] flag).
    obj: usize,
    /// For an edge: the span record the page map names for it (checked in stage 2); null
    /// for a grey object.
    span: *const Span,
    /// For an edge, after stage 2: the object's slot index in its span.
    idx: usize,
}

const EMPTY: Slot = Slot { obj: 0, span: std::ptr::null(), idx: 0 };

/// One marker's engine: a private stack of queue entries and a prefetching pipeline between
/// it and scanning, shared by every kind of marker (the stop-the-world markers, the
/// concurrent workers, assists, and the drain inside the termination stop).
///
/// ## Why a pipeline
///
/// Marking a heap larger than the caches costs a few misses per object: the object itself
/// (its header and references), and for each reference it holds, the page map, the target's
/// span record and the word of its mark bitmap. Taken one after another they serialize: on a
/// shuffled heap the marker would wait for memory at every step. So an entry goes through a
/// FIFO ring of [`RING`] slots in three steps, [`STAGE`] entries apart, each step starting the
/// loads the next one needs (as in Cher, Hosking and Vijaykumar, "Software prefetching for
/// mark-sweep garbage collection", ASPLOS 2004, and Go's and MMTk's prefetch buffers):
///
/// 1. **In**: the object's line is prefetched; then, once the whole burst it came in with
///    has been prefetched (see "Prefetches in bursts"), for an edge the page map is read (a
///    table that stays in cache) and the span record's first line prefetched.
/// 2. **Stage 2** (an edge): the record is checked ([`Span::holds`], [`Span::start_index`])
///    and the line with the object's allocation and mark words prefetched.
/// 3. **Out**: an edge's target is checked allocated and its mark bit tested and set (a plain
///    load first: most references reach marked objects); if this marker set it, or the entry
///    was grey, the object is scanned and its references pushed on the stack as edges.
///
/// When the stack runs dry the ring empties without waiting, so a lone chain of objects pays
/// no latency for the pipeline, only gains nothing from it.
///
/// ## Prefetches in bursts
///
/// On a heap much larger than the TLB's reach (a shuffled 192 MB tree on 4 KiB pages), most
/// objects and many span records lie on pages the TLB does not hold, and a prefetch of such a
/// line waits for its page walk before it retires: profiles put most of the tracer's time on
/// the instructions just after its prefetches. The core overlaps only the walks of the
/// prefetches that fit in its reorder window at once, and an object's whole scan lies between
/// two entries taken in one at a time. So the ring takes entries in only once [`REFILL`] of
/// its slots are free, and then fills up in one burst: the prefetches of a burst are a few
/// instructions apart and their walks overlap. On `examples/markrate.rs` (256 MB, `tree`)
/// this made marking about 1.4 times as fast (with the ring of 32 entries refilled one at a
/// time before); a chain, whose ring never holds more than one entry, is unchanged.
///
/// A burst does nothing but take entries and prefetch their objects ([`Tracer::stage_in`]);
/// the page-map reads and record prefetches of its entries come after, in a loop of their
/// own ([`Tracer::stage_record`]), and step 2 of the entries it displaces after that. With
/// the three interleaved, an entry cost some 60 instructions, so the reorder window held the
/// prefetches of only four or so objects at once; a bare prefetch loop puts a whole burst's
/// in it (`markrate 256 tree 5`: CPU rate median 399 -> 508 MB/s, six alternating runs
/// each on a heavily loaded machine). A ring of 128 entries, refilled 64 at a time, did no
/// better than 64.
///
/// ## Within a typed span
///
/// The pipeline is for references that go anywhere. Most do not: objects allocated together
/// are linked together, and a typed span is one page of one type's records. So when an object
/// of a typed span is scanned, its references into the same span are shaded on the spot (the
/// span record and bitmap are the ones in hand) and the objects they make grey are scanned
/// next, depth first, before the tracer goes back to the ring ([`Tracer::scan_typed`]).
/// Marking a tree built in order then walks page by page, as Go's span-at-a-time marking
/// does. On binary-trees 21 this made marking about 2.5 times as fast; on a shuffled heap,
/// where a reference almost never stays in its page, it costs the range check.
///
/// ## Sharing
///
/// Everything private (stack and ring) is work only this tracer can see. [`Tracer::flush`]
/// gives it all back to the shared queue; the concurrent collector does so before any
/// safepoint (assists) and when a worker runs out, so that a stop never misses work. The
/// stack spills half to the shared queue past [`LOCAL_MAX`] entries and, when `balance` is
/// on, whenever the shared queue is found empty while the stack holds plenty, so idle markers
/// find work.
pub(crate) struct Tracer<'a> {
    ctx: MarkCtx<'a>,
    shared: &'a Injector<usize>,
    stack: Vec<usize>,
    ring: [Slot; RING],
    /// Positions (counting up, taken modulo `RING`): entries in `[head, mid)` are past stage
    /// 2, `[mid, tail)` past stage 1.
    head: usize,
    mid: usize,
    tail: usize,
    /// Share work with idle markers (there are others).
    balance: bool,
    since_balance: u32,
    /// Bytes of the objects this tracer shaded (slot sizes).
    pub(crate) marked_bytes: usize,
    /// The type of the last object scanned, and its descriptor (registered descriptors are
    /// never removed or changed).
    last_type: Option<(u32, &'a TypeDesc)>,
    /// The last steal found the shared queue empty, and the ring has not drained since.
    shared_dry: bool,
    /// Grey objects of the typed span being scanned (see [`Tracer::scan_typed`]); empty
    /// between calls, kept for its capacity.
    local: Vec<usize>,
    /// Ephemerons scanned whose keys were white: (record, value word, key word), given to
    /// the heap's pending list when the tracer is dropped (see `weak.rs`, "Ephemerons").
    eph: Vec<(usize, usize, usize)>,
    /// When set (an ephemeron round's tracer), every object this tracer marks from an edge is
    /// logged here, so the round can find the ephemerons waiting for it.
    log: Option<Vec<usize>>,
}

impl Drop for Tracer<'_> {
    fn drop(&mut self) {
        if !self.eph.is_empty() {
            self.ctx.heap.specials().defer_ephemerons(&mut self.eph);
        }
    }
}

impl<'a> Tracer<'a> {
    /// A tracer over `ctx`'s heap, taking and giving back shared work through `shared`, with
    /// `stack` as its private stack (kept by the caller between uses for its capacity).
    pub(crate) fn new(
        ctx: MarkCtx<'a>,
        shared: &'a Injector<usize>,
        stack: Vec<usize>,
        balance: bool,
    ) -> Tracer<'a> {
        Tracer {
            ctx,
            shared,
            stack,
            ring: [EMPTY; RING],
            head: 0,
            mid: 0,
            tail: 0,
            balance,
            since_balance: 0,
            marked_bytes: 0,
            last_type: None,
            shared_dry: false,
            local: Vec::new(),
            eph: Vec::new(),
            log: None,
        }
    }

    /// Logs every object this tracer marks from now on (see [`Tracer::take_log`]).
    pub(crate) fn log_marks(&mut self) {
        self.log.get_or_insert_with(Vec::new);
    }

    /// The objects marked since the last call (when logging).
    pub(crate) fn take_log(&mut self) -> Vec<usize> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Gives the ephemerons this tracer found with white keys to the heap's pending list.
    pub(crate) fn publish_ephemerons(&mut self) {
        if !self.eph.is_empty() {
            self.ctx.heap.specials().defer_ephemerons(&mut self.eph);
        }
    }

    /// Queues `r` (a reference) as an edge: it will be shaded and, if white, scanned.
    pub(crate) fn push_edge(&mut self, r: usize) {
        self.stack.push(r);
    }

    /// Whether this tracer holds no private work.
    pub(crate) fn is_empty(&self) -> bool {
        self.stack.is_empty() && self.head == self.tail
    }

    /// Gives every private entry (ring and stack) to the shared queue.
    pub(crate) fn flush(&mut self) {
        while self.head != self.tail {
            let s = self.ring[self.head % RING];
            let grey = if s.span.is_null() { GREY } else { 0 };
            self.shared.push(s.obj | grey);
            self.head += 1;
        }
        self.mid = self.head;
        for e in self.stack.drain(..) {
            self.shared.push(e);
        }
    }

    /// Flushes, and hands back the private stack (empty) for reuse.
    pub(crate) fn into_stack(mut self) -> Vec<usize> {
        self.flush();
        std::mem::take(&mut self.stack)
    }

    /// Scans until `budget` words of objects are scanned or no work is left, here or in the
    /// shared queue; returns the words scanned. Private work may remain when the budget runs
    /// out (see [`Tracer::flush`]).
    pub(crate) fn drain(&mut self, budget: usize) -> usize {
        let mut done = 0;
        loop {
            // Keep the ring full: entries from the stack, else from the shared queue. A
            // steal that found the shared queue empty is not tried again until the ring has
            // drained: looking at the queue's ends costs cache misses while other markers and
            // barrier flushes write them, and a depth-first walk leaves the stack empty at
            // nearly every step of a narrow subtree.
            // The ring is refilled in bursts of at least `REFILL` entries, so that their
            // prefetches are issued together (see "Prefetches in bursts").
            let refill = self.tail - self.head <= RING - REFILL || self.head == self.tail;
            if refill {
                let first = self.tail;
                while self.tail - self.head < RING {
                    let e = match self.stack.pop() {
                        Some(e) => e,
                        None if self.shared_dry && self.head != self.tail => break,
                        None => match steal(self.shared) {
                            Some(e) => {
                                self.shared_dry = false;
                                e
                            }
                            None => {
                                self.shared_dry = true;
                                break;
                            }
                        },
                    };
                    self.stage_in(e);
                }
                for p in first..self.tail {
                    self.stage_record(p);
                }
                while self.tail - self.mid > STAGE {
                    self.stage_two();
                }
            }
            if self.head == self.tail {
                return done;
            }
            if self.mid == self.head {
                // Nothing more came in: let the oldest through without waiting.
                self.stage_two();
            }
            let s = self.ring[self.head % RING];
            self.head += 1;
            done += self.stage_out(s);
            if done >= budget {
                return done;
            }
        }
    }

    /// Step 1: an entry enters the ring, and its object's line is prefetched. Nothing else
    /// is done here, so that a burst's prefetches lie a few instructions apart (see
    /// "Prefetches in bursts"); the entry is left as it came, flag included, for
    /// [`Tracer::stage_record`].
    #[inline(always)]
    fn stage_in(&mut self, e: usize) {
        let obj = e & !GREY;
        prefetch(obj);
        if obj & 63 > 48 {
            // The object's first two words cross into the next line (a 24-byte slot does one
            // time in eight): fetch that one too, or the scan waits for it. Slots of 16, 32 or
            // 64 bytes never start there, so a heap of those never pays for this.
            prefetch(obj + 16);
        }
        self.ring[self.tail % RING] = Slot { obj: e, span: std::ptr::null(), idx: 0 };
        self.tail += 1;
    }

    /// Step 1, second half (run on a whole burst after its prefetches): for an edge, the page
    /// map is read and the span record's first line prefetched.
    #[inline(always)]
    fn stage_record(&mut self, p: usize) {
        let slot = &mut self.ring[p % RING];
        let e = slot.obj;
        slot.obj = e & !GREY;
        if e & GREY != 0 {
            return;
        }
        match self.ctx.heap.span_record(e) {
            Some(s) => {
                slot.span = s;
                prefetch(s as *const Span as usize);
            }
            None => crate::fatal(format_args!("marking found a reference {e:#x} outside the heap")),
        }
    }

    /// Step 2: the oldest entry past step 1 has its span record checked and its bitmap line
    /// prefetched.
    #[inline(always)]
    fn stage_two(&mut self) {
        let slot = &mut self.ring[self.mid % RING];
        self.mid += 1;
        // SAFETY: span records live as long as the heap (they are pooled, never freed), and
        // the heap outlives the context.
        let Some(span) = (unsafe { slot.span.as_ref() }) else { return };
        let obj = slot.obj;
        let Some(idx) = span.holds(obj).then(|| span.ref_index(obj)).flatten() else {
            not_an_object(obj)
        };
        slot.idx = idx;
        prefetch(span.mark_word(idx / 64) as *const AtomicU64 as usize);
    }

    /// Step 3: shade an edge's target; scan it if this call made it grey (or it was grey).
    /// Returns the words scanned.
    #[inline(always)]
    fn stage_out(&mut self, s: Slot) -> usize {
        // SAFETY: as in `stage_two`.
        let span = unsafe { s.span.as_ref() };
        if let Some(span) = span {
            if !span.is_allocated(s.idx) {
                not_an_object(s.obj)
            }
            if !span.set_mark(s.idx) {
                return 0;
            }
            self.marked_bytes += span.elem_size();
            if let Some(log) = &mut self.log {
                log.push(s.obj);
            }
        }
        let words = match span {
            // A typed span's record names its objects' type: no header to read.
            Some(span) if span.typed_header() != 0 => self.scan_typed(span, s.obj),
            Some(_) => {
                // SAFETY: `s.obj` was shaded, so it is an allocated object, and nothing is
                // freed while marking runs (sweeping of this cycle starts after marking ends).
                // Relaxed: as in `header_of`.
                let word =
                    unsafe { &*((s.obj - WORD) as *const AtomicUsize) }.load(Ordering::Relaxed);
                self.scan(s.obj, word)
            }
            // SAFETY: as above.
            None => self.scan(s.obj, unsafe { header_of(self.ctx.heap, s.obj) }),
        };
        self.spill();
        words
    }

    /// Keeps the private stack within bounds, and shares work with idle tracers.
    #[inline(always)]
    fn spill(&mut self) {
        if self.stack.len() > LOCAL_MAX {
            for e in self.stack.drain(..LOCAL_MAX / 2) {
                self.shared.push(e);
            }
        }
        if self.balance {
            self.since_balance += 1;
            if self.since_balance >= BALANCE_EVERY {
                self.since_balance = 0;
                if self.stack.len() >= 64 && self.shared.is_empty() {
                    let n = self.stack.len() / 2;
                    for e in self.stack.drain(..n) {
                        self.shared.push(e);
                    }
                }
            }
        }
    }

    /// Scans the grey object `obj` of the typed span `span` and, depth first, every object
    /// of the same span that it makes grey, directly or through others of the span: those
    /// are shaded and scanned here, without the ring. Their span record and bitmap are the
    /// ones just used and their lines are near (a tree's nodes allocated together share a
    /// page), so the pipeline's page-map reads and prefetches would only add work. References
    /// out of the span are pushed as edges. Returns the words scanned.
    #[inline(always)]
    fn scan_typed(&mut self, span: &Span, obj: usize) -> usize {
        let Some((desc, _)) = self.describe(obj, span.typed_header()) else { return 1 };
        let (lo, size) = (span.start(), span.elem_size());
        let len = span.slots() * size;
        let (ctx, stack, local, eph, log) =
            (&self.ctx, &mut self.stack, &mut self.local, &mut self.eph, &mut self.log);
        let mut marked = 0;
        let mut words = 0;
        let mut o = obj;
        loop {
            words += scan_described(ctx, o, desc, 0, eph, |r| {
                if r.wrapping_sub(lo) >= len {
                    stack.push(r);
                    return;
                }
                // A typed span's references are its slots' addresses.
                let Some(idx) = span.start_index(r).filter(|&i| span.is_allocated(i)) else {
                    not_an_object(r)
                };
                if span.set_mark(idx) {
                    marked += size;
                    local.push(r);
                    if let Some(log) = log.as_mut() {
                        log.push(r);
                    }
                }
            });
            match local.pop() {
                Some(next) => o = next,
                None => break,
            }
        }
        self.marked_bytes += marked;
        words
    }

    /// Scans a grey object whose header word is `word`: pushes its references as edges.
    #[inline(always)]
    fn scan(&mut self, obj: usize, word: usize) -> usize {
        let Some((desc, len)) = self.describe(obj, word) else { return 1 };
        let (stack, eph) = (&mut self.stack, &mut self.eph);
        scan_described(&self.ctx, obj, desc, len, eph, |r| stack.push(r))
    }

    /// The descriptor and length of the object at `obj` whose header word is `word`, as
    /// [`describe`] gives them; `None` for an object whose header is not yet written
    /// (allocated this instant, it holds no references). Objects of one type tend to come in
    /// runs (a tree's nodes): the last type's descriptor is kept, and a header naming it skips
    /// the registry lookup.
    #[inline(always)]
    fn describe(&mut self, obj: usize, word: usize) -> Option<(&'a TypeDesc, usize)> {
        let h = Header::from_word(word)?;
        let id = h.type_id().get();
        match self.last_type {
            Some((last, desc)) if last == id => Some((desc, h.len())),
            _ => {
                let (desc, len) = describe(self.ctx.types, obj, word)?;
                self.last_type = Some((id, desc));
                Some((desc, len))
            }
        }
    }

    /// Drains to the end of a stop-the-world marking with `workers` tracers: scans until no
    /// work is left here or in the shared queue, then waits, idle, until every tracer is idle
    /// at once (`idle` counts them).
    pub(crate) fn drain_to_termination(&mut self, idle: &AtomicUsize, workers: usize) {
        loop {
            self.drain(usize::MAX);
            debug_assert!(self.is_empty());
            // SeqCst on `idle`: its total order with the other markers' increments and
            // decrements is what makes "everyone idle" a fact, not a race. A marker counts
            // itself idle only with no private work and after finding the shared queue empty;
            // private work is shared only by markers that are not idle. So when the count
            // reaches `workers`, no marker holds work and the shared queue is empty.
            idle.fetch_add(1, Ordering::SeqCst);
            loop {
                if idle.load(Ordering::SeqCst) == workers {
                    return;
                }
                if !self.shared.is_empty() {
                    idle.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
                std::hint::spin_loop();
                std::thread::yield_now();
            }
        }
    }
}

/// Dies describing a reference that is not a reference to an allocated object.
#[cold]
#[inline(never)]
fn not_an_object(addr: usize) -> ! {
    crate::fatal(format_args!(
        "marking found a reference {addr:#x} that is not a reference to an allocated object"
    ))
}

/// Takes one entry from the shared queue, if any.
pub(crate) fn steal(q: &Injector<usize>) -> Option<usize> {
    loop {
        match q.steal() {
            Steal::Success(o) => return Some(o),
            Steal::Empty => return None,
            Steal::Retry => std::hint::spin_loop(),
        }
    }
}

/// The state of an ephemeron's key during marking (or with the world stopped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Key {
    /// No key yet (a null weak word): the value is held strongly, as a tagged word's.
    Unset,
    /// The key's cell is cleared (the key was freed): the value is dead.
    Gone,
    /// The key is marked: the value is traced.
    Marked(usize),
    /// The key is white for now.
    White(usize),
}

/// The key of an ephemeron whose body is `b`: the target of the cell in weak word `key`.
///
/// The record is live (being scanned), so its cell is (the record references it); a cell's
/// word is non-zero only while its target is not freed, and no sweep runs while marking.
pub(crate) fn ephemeron_key(heap: &Heap, b: &[AtomicUsize], key: usize) -> Key {
    // Relaxed: see `header_of`.
    let cell = b[key].load(Ordering::Relaxed);
    if cell == 0 {
        return Key::Unset;
    }
    // SAFETY: a live cell has one body word (above). Relaxed: written when the cell was made
    // (published with it) or cleared by a sweep (ordered by the sweep termination and the
    // ragged barrier that began this marking).
    let t = unsafe { body(cell, 1) }[0].load(Ordering::Relaxed);
    if t == 0 {
        return Key::Gone;
    }
    match heap.find_span(t).and_then(|s| s.ref_index(t).map(|i| s.is_marked(i))) {
        Some(true) => Key::Marked(t),
        Some(false) => Key::White(t),
        None => Key::Gone,
    }
}

/// Calls `shade` with every reference held by the grey object at `obj`, whose header gave
/// its descriptor `desc` and length `len`; returns the object's size in words (header
/// included) as a measure of the scan work done. An ephemeron value whose key is white is not
/// shaded but pushed on `eph` as (record, value word, key word).
#[inline(always)]
fn scan_described(
    ctx: &MarkCtx<'_>,
    obj: usize,
    desc: &TypeDesc,
    len: usize,
    eph: &mut Vec<(usize, usize, usize)>,
    mut shade: impl FnMut(usize),
) -> usize {
    let rule = ctx.rule;
    match desc {
        TypeDesc::Record { words, .. } => {
            // SAFETY: a record of `words.len()` body words, live as above.
            let b = unsafe { body(obj, words.len()) };
            for (i, (w, &k)) in b.iter().zip(words.iter()).enumerate() {
                if k == WordKind::Raw {
                    continue;
                }
                if k == WordKind::Ephemeron {
                    // Acquire: as below.
                    if let Some(r) = ref_of(k, rule, w.load(Ordering::Acquire)) {
                        let key = key_word(words);
                        match ephemeron_key(ctx.heap, b, key) {
                            Key::Gone => {}
                            Key::Unset | Key::Marked(_) => shade(r),
                            Key::White(_) => eph.push((obj, i, key)),
                        }
                    }
                    continue;
                }
                // Acquire pairs with the Release of `Inner::store_field`: the referent's
                // allocation and mark bits and header are seen as its allocator left them.
                if let Some(r) = ref_of(k, rule, w.load(Ordering::Acquire)) {
                    shade(r);
                }
            }
            1 + words.len()
        }
        TypeDesc::RefArray { .. } | TypeDesc::TaggedArray { .. } => {
            let k = if matches!(desc, TypeDesc::RefArray { .. }) {
                WordKind::Ref
            } else {
                WordKind::Tagged
            };
            // SAFETY: an array of `len` word elements, live as above.
            let b = unsafe { body(obj, len) };
            for w in b {
                // Acquire: as for a record.
                if let Some(r) = ref_of(k, rule, w.load(Ordering::Acquire)) {
                    shade(r);
                }
            }
            1 + len
        }
        TypeDesc::ByteArray { .. } => 1,
    }
}

/// Sets the mark bit of the object at `addr`. Returns its slot size if this call set the bit,
/// `None` if it was set already.
///
/// # Panics
/// If `addr` is not a reference to an allocated object: a reference into nowhere means the
/// heap is corrupted (or an embedder's stack map named a slot that holds no reference), and
/// marking on would free or keep the wrong objects.
#[inline]
pub(crate) fn shade_bit(heap: &Heap, addr: usize) -> Option<usize> {
    let Some(span) = heap.find_span(addr) else {
        crate::fatal(format_args!("marking found a reference {addr:#x} outside the heap"))
    };
    let Some(idx) = span.ref_index(addr).filter(|&i| span.is_allocated(i)) else {
        crate::fatal(format_args!(
            "marking found a reference {addr:#x} that is not a reference to an allocated object"
        ))
    };
    span.set_mark(idx).then(|| span.elem_size())
}

/// The descriptor and array length of the object at `obj` whose header word is `word`.
/// `None` for an object whose header is not yet written (allocated this instant: it has no
/// references yet). Dies on a header naming an unknown type.
#[inline]
pub(crate) fn describe(
    types: &TypeRegistry,
    obj: usize,
    word: usize,
) -> Option<(&TypeDesc, usize)> {
    let h = Header::from_word(word)?;
    match types.get(h.type_id()) {
        Some(d) => Some((d, h.len())),
        None => crate::fatal(format_args!(
            "object at {obj:#x} has a corrupt header {word:#x} (no type {}){}",
            h.type_id().get(),
            if word as u8 == crate::POISON { ": it was freed (poison pattern)" } else { "" }
        )),
    }
}

/// The index of a record's key word (its first weak word), for its ephemeron words.
#[inline]
pub(crate) fn key_word(words: &[WordKind]) -> usize {
    // The registry refuses a record with an ephemeron word and no weak word.
    words.iter().position(|&k| k == WordKind::Weak).unwrap_or(0)
}

/// The references held by the object at `obj` (for the checkmark pass), each with the key
/// it depends on (an ephemeron's value: reachable only if its key is).
fn refs_of(ctx: &MarkCtx<'_>, obj: usize) -> Vec<(usize, Option<usize>)> {
    // SAFETY: `obj` is reachable, hence allocated; the world is stopped.
    let word = unsafe { header_of(ctx.heap, obj) };
    let Some((desc, len)) = describe(ctx.types, obj, word) else { return Vec::new() };
    let kinds: Box<dyn Fn(usize) -> WordKind> = match desc {
        TypeDesc::Record { words, .. } => Box::new(move |i| words[i]),
        TypeDesc::RefArray { .. } => Box::new(|_| WordKind::Ref),
        TypeDesc::TaggedArray { .. } => Box::new(|_| WordKind::Tagged),
        TypeDesc::ByteArray { .. } => return Vec::new(),
    };
    let n = if let TypeDesc::Record { words, .. } = desc { words.len() } else { len };
    // SAFETY: as above.
    let b = unsafe { body(obj, n) };
    (0..n)
        .filter_map(|i| {
            let k = kinds(i);
            // Relaxed: the world is stopped.
            let r = ref_of(k, ctx.rule, b[i].load(Ordering::Relaxed))?;
            if k != WordKind::Ephemeron {
                return Some((r, None));
            }
            let TypeDesc::Record { words, .. } = desc else { return None };
            match ephemeron_key(ctx.heap, b, key_word(words)) {
                Key::Gone => None,
                Key::Unset => Some((r, None)),
                Key::Marked(key) | Key::White(key) => Some((r, Some(key))),
            }
        })
        .collect()
}

/// How the description of a root from a conservatively scanned slot ends (see `checkmark`).
pub(crate) const CONSERVATIVE_ROOT: &str = " (conservative)";

/// `gccheckmark`: re-marks from `roots` on the side (a set, one thread, world stopped) and
/// dies naming the first reachable object whose mark bit the real marking left clear.
/// Returns the number of reachable objects.
pub(crate) fn checkmark(ctx: &MarkCtx<'_>, roots: &[(usize, String)]) -> usize {
    let mut seen: HashSet<usize> = HashSet::new();
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut root_of: HashMap<usize, &str> = HashMap::new();
    let mut stack: Vec<usize> = Vec::new();
    // Ephemeron values by the key they wait for, with the record that holds them.
    let mut waiting: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    // A conservatively scanned slot (the innermost frame of a goroutine stopped by the
    // preemption signal, whose stack map may be stale) may hold a dead value: a reference to
    // garbage that marking rightly left white (the goroutine may have been scanned precisely
    // while marking, at a safepoint where that slot was dead). Such a root proves nothing
    // when unmarked, so it is followed only if marked (a marked object's references must all
    // be marked); an object it reaches that is also reachable from an exact root is checked
    // from there.
    let marked = |obj: usize| {
        ctx.heap.find_span(obj).is_some_and(|span| span.is_marked(span.div(obj - span.start())))
    };
    for (r, what) in roots {
        if what.ends_with(CONSERVATIVE_ROOT) && !marked(*r) {
            continue;
        }
        if seen.insert(*r) {
            root_of.insert(*r, what);
            stack.push(*r);
        }
    }
    while let Some(obj) = stack.pop() {
        let Some(span) = ctx.heap.find_span(obj) else {
            crate::fatal(format_args!(
                "gccheckmark: reachable reference {obj:#x} is outside the heap"
            ))
        };
        let idx = span.div(obj - span.start());
        if !span.is_marked(idx) {
            // Name the object and how it is reached.
            let mut path = vec![obj];
            let mut at = obj;
            while let Some(&p) = parent.get(&at) {
                path.push(p);
                at = p;
            }
            // SAFETY: reachable, hence allocated; the world is stopped.
            let word = unsafe { header_of(ctx.heap, obj) };
            let ty = describe(ctx.types, obj, word).map_or("<no header>", |(d, _)| d.name());
            crate::fatal(format_args!(
                "gccheckmark: object {obj:#x} of type {ty} is reachable but was not marked \
                 (path from {}: {})",
                root_of.get(&at).copied().unwrap_or("?"),
                path.iter().rev().map(|a| format!("{a:#x}")).collect::<Vec<_>>().join(" -> ")
            ));
        }
        for (r, key) in refs_of(ctx, obj) {
            // An ephemeron's value is reachable once its key is: it waits for the key.
            if let Some(key) = key
                && !seen.contains(&key)
            {
                waiting.entry(key).or_default().push((r, obj));
                continue;
            }
            if seen.insert(r) {
                parent.insert(r, obj);
                stack.push(r);
            }
        }
        if let Some(vals) = waiting.remove(&obj) {
            for (r, from) in vals {
                if seen.insert(r) {
                    parent.insert(r, from);
                    stack.push(r);
                }
            }
        }
    }
    seen.len()
}
