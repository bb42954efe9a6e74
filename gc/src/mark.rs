//! Marking: shading objects grey, scanning them black, parallel draining with work stealing,
//! and the checkmark verifier.
//!
//! A grey object is one whose mark bit is set and whose address sits in some work queue; it
//! turns black when a worker scans its words and shades what they reference. Each worker has
//! a LIFO deque (depth-first order keeps a subtree's objects close in time, which is kind to
//! the caches) and steals from the others' FIFO ends and from a shared injector that holds
//! the roots. Marking ends when every worker is idle at once: a worker that finds nothing
//! counts itself idle and keeps looking; it leaves the idle count before it steals again, so
//! the count reaches the number of workers only when no queue holds work and no worker can
//! make more.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};

use crate::heap::Heap;
use crate::types::{Header, TagRule, TypeDesc, TypeRegistry, WORD, WordKind};

/// What a marker needs to know about the heap it marks.
pub(crate) struct MarkCtx<'a> {
    pub heap: &'a Heap,
    pub types: &'a TypeRegistry,
    pub rule: TagRule,
}

/// The address a reference word of kind `kind` points at, if it is a reference.
#[inline(always)]
pub(crate) fn ref_of(kind: WordKind, rule: TagRule, w: usize) -> Option<usize> {
    match kind {
        WordKind::Ref => (w != 0).then_some(w),
        WordKind::Tagged => rule.is_ref(w).then_some(w & !rule.mask),
        WordKind::Raw => None,
    }
}

/// The object's body words (after the header), as atomics.
///
/// # Safety
/// `obj` is the start of an allocated object of at least `1 + n` words, which stays allocated
/// for `'a`.
#[inline(always)]
pub(crate) unsafe fn body<'a>(obj: usize, n: usize) -> &'a [AtomicUsize] {
    // SAFETY: per the contract, the words are inside one live allocation; every heap word is
    // accessed through atomics (DESIGN §4), so no access of ours is a data race.
    unsafe { std::slice::from_raw_parts((obj + WORD) as *const AtomicUsize, n) }
}

/// Loads the header of the object at `obj`, or dies describing the corruption.
///
/// # Safety
/// `obj` is the start of an allocated object.
#[inline(always)]
pub(crate) unsafe fn header_of(obj: usize) -> usize {
    // SAFETY: per the contract the word is the first of a live object; Relaxed: the object was
    // published to us by the store that put its reference where we found it, ordered by the
    // collector's handshakes.
    unsafe { &*(obj as *const AtomicUsize) }.load(Ordering::Relaxed)
}

/// One marker's state during a drain.
pub(crate) struct Marker<'a> {
    ctx: &'a MarkCtx<'a>,
    local: Worker<usize>,
    /// Bytes of the objects this marker shaded.
    pub marked_bytes: usize,
}

impl<'a> Marker<'a> {
    pub(crate) fn new(ctx: &'a MarkCtx<'a>) -> Marker<'a> {
        Marker { ctx, local: Worker::new_lifo(), marked_bytes: 0 }
    }

    pub(crate) fn stealer(&self) -> Stealer<usize> {
        self.local.stealer()
    }

    /// Shades the object at `addr` (the start of an allocated object): sets its mark bit and,
    /// if this call set it, queues it for scanning.
    #[inline]
    pub(crate) fn shade(&mut self, addr: usize) {
        if let Some(size) = shade_bit(self.ctx.heap, addr) {
            self.marked_bytes += size;
            self.local.push(addr);
        }
    }

    /// Scans one grey object: shades everything it references.
    pub(crate) fn scan(&mut self, obj: usize) {
        let ctx = self.ctx;
        scan_object(ctx, obj, |r| self.shade(r));
    }

    /// Scans until no work is left anywhere: this marker's queue, the injector, the other
    /// markers' queues; then waits, idle, until every marker is idle at once.
    pub(crate) fn drain(
        &mut self,
        injector: &Injector<usize>,
        others: &[Stealer<usize>],
        idle: &AtomicUsize,
        workers: usize,
    ) {
        loop {
            while let Some(obj) = self.local.pop() {
                self.scan(obj);
            }
            if let Some(obj) = self.steal(injector, others) {
                self.scan(obj);
                continue;
            }
            // SeqCst on `idle`: its total order with the other markers' increments and
            // decrements is what makes "everyone idle" a fact, not a race.
            idle.fetch_add(1, Ordering::SeqCst);
            loop {
                if idle.load(Ordering::SeqCst) == workers {
                    return;
                }
                if !injector.is_empty() || others.iter().any(|s| !s.is_empty()) {
                    idle.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
                std::hint::spin_loop();
                std::thread::yield_now();
            }
        }
    }

    fn steal(&mut self, injector: &Injector<usize>, others: &[Stealer<usize>]) -> Option<usize> {
        loop {
            let mut retry = false;
            match injector.steal_batch_and_pop(&self.local) {
                Steal::Success(o) => return Some(o),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            for s in others {
                match s.steal_batch_and_pop(&self.local) {
                    Steal::Success(o) => return Some(o),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }
}

/// Calls `shade` with every reference held by the grey object at `obj`; returns the object's
/// size in words (header included) as a measure of the scan work done.
#[inline]
pub(crate) fn scan_object(ctx: &MarkCtx<'_>, obj: usize, mut shade: impl FnMut(usize)) -> usize {
    // SAFETY: `obj` was shaded, so it is an allocated object, and nothing is freed while
    // marking runs (sweeping of this cycle starts after marking ends).
    let word = unsafe { header_of(obj) };
    let Some((desc, len)) = describe(ctx.types, obj, word) else { return 1 };
    let rule = ctx.rule;
    match desc {
        TypeDesc::Record { words, .. } => {
            // SAFETY: a record of `words.len()` body words, live as above.
            let b = unsafe { body(obj, words.len()) };
            for (w, &k) in b.iter().zip(words.iter()) {
                if k == WordKind::Raw {
                    continue;
                }
                // Relaxed: see `header_of`.
                if let Some(r) = ref_of(k, rule, w.load(Ordering::Relaxed)) {
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
                // Relaxed: see `header_of`.
                if let Some(r) = ref_of(k, rule, w.load(Ordering::Relaxed)) {
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
/// If `addr` is not the start of an allocated object: a reference into nowhere means the heap
/// is corrupted (or an embedder's stack map named a slot that holds no reference), and
/// marking on would free or keep the wrong objects.
#[inline]
pub(crate) fn shade_bit(heap: &Heap, addr: usize) -> Option<usize> {
    let Some(span) = heap.find_span(addr) else {
        crate::fatal(format_args!("marking found a reference {addr:#x} outside the heap"))
    };
    let Some(idx) = span.start_index(addr).filter(|&i| span.is_allocated(i)) else {
        crate::fatal(format_args!(
            "marking found a reference {addr:#x} that is not the start of an allocated object"
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

/// The references held by the object at `obj` (for the checkmark pass).
fn refs_of(ctx: &MarkCtx<'_>, obj: usize) -> Vec<usize> {
    // SAFETY: `obj` is reachable, hence allocated; the world is stopped.
    let word = unsafe { header_of(obj) };
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
        // Relaxed: the world is stopped.
        .filter_map(|i| ref_of(kinds(i), ctx.rule, b[i].load(Ordering::Relaxed)))
        .collect()
}

/// `gccheckmark`: re-marks from `roots` on the side (a set, one thread, world stopped) and
/// dies naming the first reachable object whose mark bit the real marking left clear.
/// Returns the number of reachable objects.
pub(crate) fn checkmark(ctx: &MarkCtx<'_>, roots: &[(usize, String)]) -> usize {
    let mut seen: HashSet<usize> = HashSet::new();
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut root_of: HashMap<usize, &str> = HashMap::new();
    let mut stack: Vec<usize> = Vec::new();
    for (r, what) in roots {
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
            let word = unsafe { header_of(obj) };
            let ty = describe(ctx.types, obj, word).map_or("<no header>", |(d, _)| d.name());
            crate::fatal(format_args!(
                "gccheckmark: object {obj:#x} of type {ty} is reachable but was not marked \
                 (path from {}: {})",
                root_of.get(&at).copied().unwrap_or("?"),
                path.iter().rev().map(|a| format!("{a:#x}")).collect::<Vec<_>>().join(" -> ")
            ));
        }
        for r in refs_of(ctx, obj) {
            if seen.insert(r) {
                parent.insert(r, obj);
                stack.push(r);
            }
        }
    }
    seen.len()
}
