//! Weak handles, weak fields, cleanups and ephemerons: references that do not keep an object
//! alive, functions run after an object is found unreachable, and values kept alive only
//! while their key is.
//!
//! ## Weak handles: one cell per object
//!
//! A weak handle is a managed object of its own, the object's *cell*: a record of one raw word
//! (type `safepoint.weak`, registered on first use) holding the object's address, which the
//! marker never reads. One object has at most one cell (made on the first
//! [`Mutator::weak`](crate::Mutator::weak) and found again by the next), so two handles to one
//! object are the same reference, as Go's `weak.Pointer`s to one object compare equal. A cell
//! is referenced like any object (from slots, fields, globals), and a *weak field* of a record
//! ([`WordKind::Weak`](crate::WordKind::Weak)) is a reference field that holds a cell: storing
//! an object there stores the object's cell, loading it reads the cell.
//!
//! The heap keeps a table of *specials* (as Go's spans keep theirs): for each object that has
//! a cell or cleanups, an entry with the cell and the cleanups; the object's span is flagged.
//! The table is a root set for the cells only: every marking shades every cell in the table
//! (concurrently, with the globals; inside the stop in the stop-the-world mode), so a cell
//! lives at least as long as its object. The object itself is not reached through its entry.
//!
//! ## The states of a cell, and who moves it
//!
//! | state   | word      | object is                                  | moved to the next by  |
//! |---------|-----------|--------------------------------------------|-----------------------|
//! | live    | address   | reachable, or unreachable but not yet found | mark termination     |
//! | doomed  | address   | found unreachable: unmarked in an unswept span | the span's sweep |
//! | cleared | 0         | freed (its slot may hold another object)   | (final)               |
//!
//! Clearing is lazy, done by the sweep, so the termination stop does no work per handle: the
//! sweep of a flagged span looks each object it frees up in the table, stores 0 into its cell
//! (Release) *before* the allocation word that frees the slot (Release), and queues its
//! cleanups. Between the stop and that sweep a cell is doomed: its word still holds the
//! address, and a read must say nil anyway.
//!
//! ## A read (`deref`), and why it is exact
//!
//! A read runs in a pinned section, so no cycle's stop (which alone moves the phase, turns
//! the barrier on or off, and advances the sweep generation) falls inside it.
//!
//! 0. First the collector's *read state* (one byte in the collector itself, read Acquire): its
//!    UNSWEPT bit is set inside each termination stop and cleared once the sweep of that
//!    cycle is done (Release); its MARKING bit is set before the barrier turns on and cleared
//!    inside the stop that turns it off. If the state is 0, no cell is doomed, no sweep runs
//!    until the next stop and no marking runs: the word is the answer, with no other step
//!    (two loads more than a field load: the state and the word).
//! 1. If UNSWEPT is clear, no cell is doomed: the word is the object (or 0, nil); go to 3.
//! 2. Otherwise: load the word `t`; 0 is nil. Ask the heap whether `t` is an object no sweep
//!    of this cycle frees (`Heap::holds_live`: marked in an unswept span, or allocated in a
//!    swept one, read between two loads of the span's generation); if not, nil. Then load the
//!    word again: if it still holds `t`, `t` is the object (its sweep, had it happened, would
//!    have cleared the word before the allocation bits `holds_live` read with Acquire, so a
//!    slot freed and taken again by a new object is never mistaken for it); if it is 0 now,
//!    nil.
//! 3. While marking (the write barrier is on: MARKING is set), the object read is shaded
//!    through the
//!    barrier's buffer, as a stored reference's new value is: an object reachable only
//!    through cells, read into a stack already scanned, would otherwise stay white and be
//!    freed under the reader. The barrier's buffer is flushed by the termination protocol like
//!    any other shade, so termination needs no extra step (Go blocks weak-to-strong
//!    conversions during its mark termination instead; here the stop excludes every reader).
//!    A read that sees the barrier off (or the MARKING bit clear, which is set before the
//!    barrier turns on) while a cycle starts is in a pinned section that ends before its P
//!    passes the ragged barrier of Quiesce, so its result is in its stack when the stack is
//!    scanned. A sweep that ends while the next cycle marks clears only UNSWEPT, so the state
//!    stays nonzero while the barrier is on. The loom model `loom_weak` checks this protocol,
//!    from before a cycle's start to its sweep, and fails without the shading step.
//!
//! Every goroutine gets the same answer: "nil" means the marking that ended found the object
//! unreachable, a fact the whole heap agrees on from that stop on.
//!
//! ## Cleanups
//!
//! A cleanup (Go's `runtime.AddCleanup`) is a Rust `FnOnce() + Send` attached to an object:
//! the sweep that frees the object moves its cleanups to a queue and wakes the heap's cleanup
//! goroutine, which runs them one by one outside any pinned section or stop; a panic in one is
//! reported through the message sink and counted, and the others still run. The function
//! cannot hold a managed reference (none lives in Rust variables), so it cannot resurrect the
//! object; it may hold a [`Global`](crate::Global), and one that references the object keeps
//! it alive for good (Go's rule: the argument must not reach the object). Cleanups of the objects a
//! cycle frees are queued by that cycle's sweep, which the background sweeper finishes soon
//! after the cycle (or the next cycle's sweep termination does), and run as soon as the
//! cleanup goroutine is scheduled. An object may have several; their order is unspecified.
//! Cleanups still queued when the heap is dropped are dropped without running (as Go runs no
//! cleanup at exit).
//!
//! ## Ephemerons
//!
//! An ephemeron is a record with a weak word (its key: the first [`WordKind::Weak`] word)
//! and one or more [`WordKind::Ephemeron`] words (its values): a value is kept alive only
//! while the record is reachable *and* the key is reachable from elsewhere, so a value that
//! references its own key does not keep the entry alive (Lua's weak-keyed tables, JavaScript's
//! WeakMap; an embedder's table is an array or hash of such records). A load of an ephemeron
//! word reads null once the key is gone; a value stored before any key is held strongly; a
//! new key stored after the old one died clears the dead values first.
//!
//! **Marking.** Scanning an ephemeron record shades its key's cell (a weak word is a
//! reference to the cell) and looks at the key: marked, the value is traced like any
//! reference; white, the record goes on the tracer's list of pending ephemerons (given to the
//! heap's list before the tracer's marks are counted, or when it is dropped); gone (cell
//! cleared), the value is ignored.
//!
//! **The fixed point.** A key may be marked after its record was scanned, and marking a
//! value may mark other keys (chains). So, in the concurrent mode, each time the mark workers
//! run out of work the cycle's driver runs an *ephemeron round*: it indexes the pending
//! records by key, traces at once the values of those whose keys are now marked, with a
//! tracer that logs every object it marks, and looks each logged object up in the index, so
//! a value that marks another entry's key traces that entry's value in the same round:
//! a chain is followed to its end in one round whatever the order of its entries (Lua's
//! collector instead passes over its ephemeron list until nothing changes, one link per pass
//! in the worst order). Records whose keys are gone leave the list, the rest stay for the next
//! round. If the round traced anything the workers run again (objects marked by others
//! meanwhile, assists or barrier flushes, are not logged, and are what a further round finds);
//! a round that traces nothing is recorded with the cycle's marked-bytes count read before it
//! (Acquire, pairing with the markers' Release counts after their mark bits). A tracer gives
//! its pending records to the list before it counts its marks, and the list counts these
//! publications. The termination stop, which already restarts the world when the barrier
//! buffers held work, also restarts it when ephemerons are pending and either the marked
//! count has moved since the last empty round (a key may have been marked since) or records
//! were published after that round took the list (records no round has looked at): the stop
//! itself does no per-ephemeron work, ever: a stop whose bounded drain marked anything while
//! ephemerons are pending lets the world go for another round. Ephemerons allocated while marking are black and never
//! pending: their values were shaded by the stores that put them there.
//!
//! **Cost per cycle.** Each ephemeron record is scanned once; a round costs O(pending) hash
//! inserts plus the marking it does; a cycle runs a round after each time the workers run dry,
//! usually one or two (`ephemeron_chains_reach_the_fixed_point` bounds a 200-entry chain built
//! in the worst order to a few). In the stop-the-world mode the rounds run inside the stop,
//! after the markers go idle. Checkmark follows an ephemeron value once its key is reached, so
//! it checks the fixed point. `gctrace` prints the rounds, the values they traced and the time
//! they took (also in [`WeakStats::ephemeron_time`]).
//!
//! ## Why no finalizers that resurrect
//!
//! A finalizer that receives the dying object (Go's `SetFinalizer`, Lua's `__gc`) resurrects
//! it: the object and everything it reaches must be kept for one more cycle, a finalizer on
//! an object in a cycle of finalizable objects can never run, and an object resurrected and
//! dropped again is finalized once or again depending on re-registration. Cleanups have none
//! of this: the object is gone when its cleanup runs, and whatever the cleanup needs (a file
//! descriptor, the Rust side of a channel) is captured by the function itself.
//!
//! ## Costs
//!
//! A cell is one object (8 bytes in a typed span, or 16 with a header) and one table entry,
//! shaded by every marking (concurrent work proportional to the live cells; in a stop only in
//! the stop-the-world mode). A sweep pays only in flagged spans: one table lookup per freed
//! object there. A read costs, when the state is 0 (the heap all swept and no marking), one
//! load of the state and one of the cell more than a field load; while marking, the
//! barrier's load and a shade; between a cycle's stop and the end of its sweep, a page-map
//! look-up. The table is one mutex-guarded hash map: making a handle or adding a cleanup
//! takes its lock, and so does the sweep of a flagged span, so many goroutines making handles
//! at once contend on it (Go keeps its specials per span; sharding by span would lift this).
//! The stress tool's `weak N E` workload measures a read against a field load and a chained
//! ephemeron table against the same graph with plain values (`benches/src/weak.rs`).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use safepoint_sched::Chan;

use crate::collector::{GcError, Inner};
use crate::mark::{body, header_in};
use crate::types::{Header, TypeDesc, TypeId, WordKind, object_size};

/// The name of the weak cells' type.
pub const WEAK_TYPE_NAME: &str = "safepoint.weak";

/// Hashes object addresses (the specials table's keys, and the ephemeron round's): a
/// multiply and a fold, since addresses are aligned (low bits zero) but otherwise spread,
/// where the standard SipHash costs several times as much per look-up.
#[derive(Clone, Copy, Default)]
pub(crate) struct AddrHash(u64);

impl std::hash::Hasher for AddrHash {
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^ (h >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).rotate_left(5);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 ^= n as u64;
    }
}

/// A map keyed by object addresses.
pub(crate) type AddrMap<V> = HashMap<usize, V, std::hash::BuildHasherDefault<AddrHash>>;

/// A bit of [`ReadState`]: a cycle's marking has ended and its sweep has not, so a cell may
/// be doomed.
const UNSWEPT: u8 = 1;
/// A bit of [`ReadState`]: a cycle's marking may be running, so a read shades what it
/// returns (set before the barrier turns on, cleared in the stop that turns it off).
const MARKING: u8 = 2;

/// What a read must do besides loading the cell's word (see "A read"): 0, nothing;
/// [`UNSWEPT`], check that the object is not doomed; [`MARKING`], shade what it returns. Kept
/// in the collector itself (not with the specials, behind the heap's pointer), so that the
/// common read loads it with no load before.
#[derive(Debug, Default)]
pub(crate) struct ReadState(AtomicU8);

impl ReadState {
    /// A marking starts (before the barrier turns on; in the stop-the-world mode, inside the
    /// stop): reads shade what they return.
    pub(crate) fn marking_starts(&self) {
        // Relaxed: before the barrier turns on (SeqCst), published to every P with it by the
        // ragged barrier that starts the marking; a read that still sees the bit clear is in
        // a pinned section that ends before its P passes that barrier, as one that sees the
        // barrier off (see "A read").
        self.0.fetch_or(MARKING, Ordering::Relaxed);
    }

    /// A cycle's marking has ended (called inside its stop, after the barrier turned off):
    /// cells may be doomed from now on, and reads shade nothing.
    pub(crate) fn marking_ended(&self) {
        // Relaxed: the stop's restart publishes it to every reader. One store: nothing else
        // changes the state while the world is stopped.
        self.0.store(UNSWEPT, Ordering::Relaxed);
    }

    /// The cycle's sweep is done (the caller saw `Heap::sweep_done` and no stop can fall
    /// between that and this call: it runs without preemption).
    pub(crate) fn sweep_ended(&self) {
        // Release: pairs with the Acquire in `Inner::deref_cell`; the sweeps' clears were
        // ordered before the caller's look at the sweep counters. Only the UNSWEPT bit: a
        // cycle that has started meanwhile keeps its MARKING bit.
        self.0.fetch_and(!UNSWEPT, Ordering::Release);
    }
}

/// No record (the end of a [`Waiting`] list).
const NONE: u32 = u32::MAX;

/// The ephemeron records of a round that wait for white keys: for each key, a list threaded
/// through `recs` (no allocation per key).
#[derive(Default)]
struct Waiting {
    head: AddrMap<u32>,
    recs: Vec<((usize, usize, usize), u32)>,
}

impl Waiting {
    fn add(&mut self, key: usize, x: (usize, usize, usize)) {
        let at = self.recs.len() as u32;
        let next = self.head.insert(key, at).unwrap_or(NONE);
        self.recs.push((x, next));
    }

    /// The records still waiting.
    fn into_records(self) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        for (_, mut at) in self.head {
            while at != NONE {
                let (x, next) = self.recs[at as usize];
                out.push(x);
                at = next;
            }
        }
        out
    }
}

/// A function run after its object is found unreachable.
type CleanupFn = Box<dyn FnOnce() + Send>;

/// One object's specials.
#[derive(Default)]
struct Entry {
    /// The object's cell (plain address), 0 for none.
    cell: usize,
    /// Its cleanups, with their ids.
    cleanups: Vec<(u64, CleanupFn)>,
}

/// How the cells are allocated (computed once).
#[derive(Clone, Copy)]
pub(crate) struct CellShape {
    pub(crate) ty: TypeId,
    pub(crate) header: Header,
    pub(crate) size: usize,
    pub(crate) kind: usize,
}

/// The heap's weak cells and cleanups by object (see the module documentation).
pub(crate) struct Specials {
    /// Entries by the object's reference (plain address). Taken without preemption on
    /// goroutines (the stop-the-world marking takes it inside the stop).
    map: Mutex<AddrMap<Entry>>,
    /// Cleanups whose objects were freed, waiting for the cleanup goroutine.
    queue: Mutex<Vec<CleanupFn>>,
    /// Wakes the cleanup goroutine (set by the collector; absent for a bare heap).
    waker: OnceLock<Arc<Chan<()>>>,
    /// The cells' type and shape, registered on first use.
    pub(crate) shape: OnceLock<CellShape>,
    next_id: AtomicU64,
    /// Counters (Relaxed: sums for statistics and the trace).
    cells: AtomicUsize,
    cleared: AtomicU64,
    queued: AtomicU64,
    run: AtomicU64,
    panicked: AtomicU64,
    /// What the trace line last printed (cleared, queued, run).
    traced: Mutex<(u64, u64, u64)>,
    /// Ephemerons scanned this cycle whose keys were white when scanned: (record, value
    /// word, key word). Emptied at the start and end of each marking.
    eph_pending: Mutex<Vec<(usize, usize, usize)>>,
    /// Publications to `eph_pending` (changed under its lock), and the count the last round
    /// saw when it took the list: a record published after that is one no round has seen.
    eph_published: AtomicU64,
    eph_taken: AtomicU64,
    /// Ephemeron rounds this cycle (for the trace), and values they shaded.
    pub(crate) eph_rounds: AtomicUsize,
    pub(crate) eph_shaded: AtomicUsize,
    /// Nanoseconds in this cycle's rounds.
    eph_ns: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is complete before anything that can panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts of the heap's weak handles and cleanups ([`Gc::weak_stats`](crate::Gc::weak_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WeakStats {
    /// Weak cells whose objects have not been freed.
    pub handles: usize,
    /// Cells cleared by sweeps (their objects freed), in all.
    pub cleared: u64,
    /// Cleanups queued by sweeps, in all.
    pub cleanups_queued: u64,
    /// Cleanups run (panicked or not), in all.
    pub cleanups_run: u64,
    /// Cleanups that panicked.
    pub cleanups_panicked: u64,
    /// Ephemeron rounds of the last (or current) cycle's marking.
    pub ephemeron_rounds: usize,
    /// The time those rounds took (the marking the ephemerons added after the workers ran
    /// dry; the scan that found the records pending is not counted).
    pub ephemeron_time: std::time::Duration,
}

impl Specials {
    pub(crate) fn new() -> Specials {
        Specials {
            map: Mutex::new(AddrMap::default()),
            queue: Mutex::new(Vec::new()),
            waker: OnceLock::new(),
            shape: OnceLock::new(),
            next_id: AtomicU64::new(1),
            cells: AtomicUsize::new(0),
            cleared: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            run: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            traced: Mutex::new((0, 0, 0)),
            eph_pending: Mutex::new(Vec::new()),
            eph_published: AtomicU64::new(0),
            eph_taken: AtomicU64::new(0),
            eph_rounds: AtomicUsize::new(0),
            eph_shaded: AtomicUsize::new(0),
            eph_ns: AtomicU64::new(0),
        }
    }

    fn map(&self) -> MutexGuard<'_, AddrMap<Entry>> {
        lock(&self.map)
    }

    /// The sweep found the objects `refs` (references, plain addresses) unreachable and is
    /// about to free them: their cells are cleared and their cleanups queued.
    ///
    /// Runs on a sweeper (without preemption), before the sweep's Release store that frees
    /// the slots.
    pub(crate) fn died(&self, refs: impl Iterator<Item = usize>) {
        let mut due = Vec::new();
        let mut cleared = 0;
        {
            let mut map = self.map();
            for r in refs {
                let Some(e) = map.remove(&r) else { continue };
                if e.cell != 0 {
                    // SAFETY: a cell in the table is live: every marking shades it (see the
                    // module documentation), so it was not freed by this cycle's sweep.
                    // Release: pairs with the Acquire loads of a read (step 2), with the
                    // allocation word's Release store after it.
                    let w = unsafe { body(e.cell, 1) };
                    w[0].store(0, Ordering::Release);
                    cleared += 1;
                }
                due.extend(e.cleanups.into_iter().map(|(_, f)| f));
            }
        }
        if cleared > 0 {
            self.cells.fetch_sub(cleared, Ordering::Relaxed);
            self.cleared.fetch_add(cleared as u64, Ordering::Relaxed);
        }
        if !due.is_empty() {
            self.queued.fetch_add(due.len() as u64, Ordering::Relaxed);
            lock(&self.queue).append(&mut due);
            if let Some(w) = self.waker.get() {
                // A full channel means the cleanup goroutine is already woken.
                let _ = w.try_send(());
            }
        }
    }

    /// Adds a tracer's ephemerons with white keys to the pending list (and empties `v`).
    pub(crate) fn defer_ephemerons(&self, v: &mut Vec<(usize, usize, usize)>) {
        crate::np(|| {
            let mut l = lock(&self.eph_pending);
            l.append(v);
            // Relaxed: changed and read under the list's lock.
            self.eph_published.fetch_add(1, Ordering::Relaxed);
        });
    }

    /// Whether ephemerons wait for their keys, and whether some were published since the
    /// last round took the list.
    pub(crate) fn pending_ephemerons(&self) -> (bool, bool) {
        crate::np(|| {
            let l = lock(&self.eph_pending);
            // Relaxed: under the list's lock (`eph_taken` is written under it too).
            let fresh = self.eph_published.load(Ordering::Relaxed)
                != self.eph_taken.load(Ordering::Relaxed);
            (!l.is_empty(), fresh)
        })
    }

    /// A marking has ended: the ephemerons still pending have dead keys (their records may
    /// be freed by the sweep).
    pub(crate) fn drop_pending_ephemerons(&self) {
        crate::np(|| lock(&self.eph_pending)).clear();
    }

    /// A marking starts: no ephemeron is pending, no round has run.
    fn reset_ephemerons(&self) {
        crate::np(|| lock(&self.eph_pending)).clear();
        self.eph_rounds.store(0, Ordering::Relaxed);
        self.eph_shaded.store(0, Ordering::Relaxed);
        self.eph_ns.store(0, Ordering::Relaxed);
    }

    /// One ephemeron round, on the tracer `t` (logging its marks): every pending ephemeron
    /// whose key is marked has its value traced at once, and as that marks further keys (the
    /// log, looked up in the pending ephemerons by key), their values are traced in turn, so
    /// a chain is followed to its end in one round whatever the order of its entries. Entries
    /// whose keys are gone leave the list; the rest stay. Returns the number of values traced.
    /// O(pending + what it marks); runs while marking (concurrently, with the workers idle, or
    /// with the world stopped), on one goroutine at a time.
    pub(crate) fn ephemeron_round(
        &self,
        heap: &crate::Heap,
        rule: crate::TagRule,
        t: &mut crate::mark::Tracer<'_>,
    ) -> usize {
        let list = crate::np(|| {
            let mut l = lock(&self.eph_pending);
            // Relaxed: under the list's lock.
            self.eph_taken.store(self.eph_published.load(Ordering::Relaxed), Ordering::Relaxed);
            std::mem::take(&mut *l)
        });
        if list.is_empty() {
            return 0;
        }
        self.eph_rounds.fetch_add(1, Ordering::Relaxed);
        let start = std::time::Instant::now();
        t.log_marks();
        // The records waiting for each white key: a list per key, threaded through `recs`.
        let mut waiting = Waiting::default();
        let mut n = 0;
        // Traces the value of ephemeron `(e, i, key)` if its key is marked (or unset); `None`
        // when it is done with (traced, or its key gone), else its white key.
        let mut take = |(e, i, key): (usize, usize, usize), t: &mut crate::mark::Tracer<'_>| {
            // SAFETY: a pending record is marked (it was scanned), so live through marking;
            // `i` and `key` are words of its body.
            let b = unsafe { body(e, i.max(key) + 1) };
            match crate::mark::ephemeron_key(heap, b, key) {
                crate::mark::Key::Gone => None,
                crate::mark::Key::Unset | crate::mark::Key::Marked(_) => {
                    // Acquire pairs with the Release of the store that wrote the value (the
                    // crate essay, "Publication"): the referent is seen as its allocator left it.
                    let w = b[i].load(Ordering::Acquire);
                    if let Some(r) = crate::mark::ref_of(WordKind::Ephemeron, rule, w) {
                        t.push_edge(r);
                        n += 1;
                    }
                    None
                }
                crate::mark::Key::White(k) => Some((k, (e, i, key))),
            }
        };
        for x in list {
            if let Some((k, x)) = take(x, t) {
                waiting.add(k, x);
            }
        }
        loop {
            t.drain(usize::MAX);
            let log = t.take_log();
            if log.is_empty() {
                break;
            }
            for o in log {
                let mut at = waiting.head.remove(&o).unwrap_or(NONE);
                while at != NONE {
                    let (x, next) = waiting.recs[at as usize];
                    at = next;
                    if let Some((k, x)) = take(x, t) {
                        waiting.add(k, x);
                    }
                }
            }
        }
        self.eph_shaded.fetch_add(n, Ordering::Relaxed);
        let mut keep = waiting.into_records();
        // Put back without counting a publication: the round has seen these.
        crate::np(|| lock(&self.eph_pending).append(&mut keep));
        // Relaxed: a sum for the statistics.
        self.eph_ns.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        n
    }

    /// Calls `f` with every cell in the table (the marking's roots for them).
    pub(crate) fn for_each_cell(&self, mut f: impl FnMut(usize)) {
        let map = crate::np(|| self.map());
        for e in map.values() {
            if e.cell != 0 {
                f(e.cell);
            }
        }
    }

    /// Sets the channel that wakes the cleanup goroutine.
    pub(crate) fn set_waker(&self, ch: Arc<Chan<()>>) {
        let _ = self.waker.set(ch);
    }

    /// Closes the cleanup goroutine's channel (the heap is going away).
    pub(crate) fn close(&self) {
        if let Some(w) = self.waker.get() {
            w.close();
        }
    }

    /// The counters.
    pub(crate) fn stats(&self) -> WeakStats {
        WeakStats {
            handles: self.cells.load(Ordering::Relaxed),
            cleared: self.cleared.load(Ordering::Relaxed),
            cleanups_queued: self.queued.load(Ordering::Relaxed),
            cleanups_run: self.run.load(Ordering::Relaxed),
            cleanups_panicked: self.panicked.load(Ordering::Relaxed),
            ephemeron_rounds: self.eph_rounds.load(Ordering::Relaxed),
            ephemeron_time: std::time::Duration::from_nanos(self.eph_ns.load(Ordering::Relaxed)),
        }
    }

    /// The trace's words for cycle `n`: handles, and what was cleared, queued and run since
    /// the last trace line.
    pub(crate) fn trace_line(&self, n: u64) -> Option<String> {
        let s = self.stats();
        let mut t = crate::np(|| lock(&self.traced));
        let rounds = self.eph_rounds.load(Ordering::Relaxed);
        if s.handles == 0 && (s.cleared, s.cleanups_queued, s.cleanups_run) == *t && rounds == 0 {
            // Nothing weak in this heap, or nothing happened: no line (gctrace stays one line
            // a cycle for a program that uses none of this).
            return None;
        }
        let line = format!(
            "gc {n} weak: {} handles; since the last cycle {} cleared, {} cleanups queued, {} \
             run; this cycle {} ephemeron rounds shading {} values in {:.3} ms",
            s.handles,
            s.cleared - t.0,
            s.cleanups_queued - t.1,
            s.cleanups_run - t.2,
            self.eph_rounds.load(Ordering::Relaxed),
            self.eph_shaded.load(Ordering::Relaxed),
            s.ephemeron_time.as_secs_f64() * 1e3,
        );
        *t = (s.cleared, s.cleanups_queued, s.cleanups_run);
        Some(line)
    }
}

/// A cleanup attached to an object ([`Mutator::add_cleanup`](crate::Mutator::add_cleanup)):
/// it can be cancelled while its object lives.
#[derive(Debug)]
pub struct Cleanup {
    gc: Weak<Inner>,
    obj: usize,
    id: u64,
}

impl Cleanup {
    /// Cancels the cleanup if it has not been queued yet (its object not found unreachable);
    /// whether it was cancelled. From any thread.
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
    /// m.scope(|m, [obj]| {
    ///     m.alloc(obj, pair).unwrap();
    ///     let c = m.add_cleanup(obj, || unreachable!("cancelled")).unwrap();
    ///     assert!(c.cancel());
    ///     assert!(!c.cancel()); // already cancelled
    /// });
    /// m.collect();
    /// # });
    /// ```
    pub fn cancel(&self) -> bool {
        let Some(gc) = self.gc.upgrade() else { return false };
        let specials = gc.heap.specials();
        let f = crate::np(|| {
            let mut map = specials.map();
            let e = map.get_mut(&self.obj)?;
            let i = e.cleanups.iter().position(|(id, _)| *id == self.id)?;
            let f = e.cleanups.swap_remove(i).1;
            if e.cleanups.is_empty() && e.cell == 0 {
                map.remove(&self.obj);
            }
            Some(f)
        });
        // Dropped outside the lock: the function's captures run their own drops.
        f.is_some()
    }
}

/// Refuses `desc` if it is (or could become) the weak handles' type: a cell made or written
/// by anything but the collector could name any address, which a read would then return as
/// a reference.
pub(crate) fn not_the_cells_type(desc: &TypeDesc) -> Result<(), GcError> {
    if desc.name() == WEAK_TYPE_NAME {
        return Err(GcError::WrongKind {
            type_name: WEAK_TYPE_NAME.into(),
            what: "weak handles are made only by the collector (weak)",
        });
    }
    Ok(())
}

impl Inner {
    /// A marking starts (before the barrier turns on; in the stop-the-world mode, inside the
    /// stop): reads shade what they return, no ephemeron is pending, no round has run.
    pub(crate) fn weak_marking_starts(&self) {
        self.weak_read.marking_starts();
        self.heap.specials().reset_ephemerons();
    }

    /// The cells' shape, registering their type on first use.
    pub(crate) fn cell_shape(&self) -> Result<CellShape, GcError> {
        let sp = self.heap.specials();
        if let Some(s) = sp.shape.get() {
            return Ok(*s);
        }
        let desc = TypeDesc::Record { name: WEAK_TYPE_NAME.into(), words: vec![WordKind::Raw] };
        let ty = match self.types.lookup(WEAK_TYPE_NAME) {
            Some(ty) if self.types.get(ty) == Some(&desc) => ty,
            Some(_) => {
                return Err(GcError::WrongKind {
                    type_name: WEAK_TYPE_NAME.into(),
                    what: "this type name is reserved for weak handles",
                });
            }
            None => match self.types.register(desc.clone()) {
                Ok(ty) => ty,
                // Registered by another goroutine meanwhile.
                Err(_) => self.types.lookup(WEAK_TYPE_NAME).ok_or(GcError::WrongKind {
                    type_name: WEAK_TYPE_NAME.into(),
                    what: "cannot register the weak handles' type",
                })?,
            },
        };
        let header = self.types.header(ty, 0)?;
        let full = object_size(&desc, 0)?;
        let (size, kind) = crate::mutator::alloc_plan(&desc, header, full);
        Ok(*sp.shape.get_or_init(|| CellShape { ty, header, size, kind }))
    }

    /// Whether `addr` (a live object) is a weak cell.
    #[inline]
    pub(crate) fn is_cell(&self, addr: usize) -> bool {
        let Some(shape) = self.heap.specials().shape.get() else { return false };
        // SAFETY: the caller's contract: a live object of this heap.
        let word = unsafe { header_in(self.typed, addr) };
        Header::from_word(word).is_some_and(|h| h.type_id() == shape.ty)
    }

    /// The cell of the live object `target` (a plain address), made if it has none, and
    /// whether making it took an allocation slow path (the caller then owes
    /// `alloc_safepoint` outside its pinned section).
    ///
    /// Runs pinned on P `p`.
    pub(crate) fn cell_of(&self, p: usize, target: usize) -> Result<(usize, bool), GcError> {
        let sp = self.heap.specials();
        if let Some(e) = sp.map().get(&target)
            && e.cell != 0
        {
            return Ok((e.cell, false));
        }
        let shape = self.cell_shape()?;
        // Allocated outside the table's lock: the allocation may sweep, and the sweep takes it.
        let (cell, slow) = self.alloc_on(p, shape.size, shape.header, shape.kind)?;
        // SAFETY: a fresh cell of one body word. Relaxed: the cell becomes visible to others
        // only through a later store of its reference (ordered by the collector's handshakes),
        // or through the table's lock below.
        let w = unsafe { body(cell, 1) };
        w[0].store(target, Ordering::Relaxed);
        let Some(span) = self.heap.find_span(target) else {
            return Err(GcError::NotAReference { found: target });
        };
        // Relaxed: read by the sweep of a later cycle, after the stop that ends its marking.
        span.specials.store(true, Ordering::Relaxed);
        let mut map = sp.map();
        let e = map.entry(target).or_default();
        if e.cell == 0 {
            e.cell = cell;
            sp.cells.fetch_add(1, Ordering::Relaxed);
        }
        // Another goroutine's cell won the race: ours is garbage.
        Ok((e.cell, slow))
    }

    /// Reads the cell `cell` (a live cell): its object's plain address, or 0 once the object
    /// has been found unreachable (see "A read"). While marking, the object returned is
    /// shaded.
    ///
    /// Runs pinned on P `p` (`None`: off the runtime's Ps).
    #[inline]
    pub(crate) fn deref_cell(&self, p: Option<usize>, cell: usize) -> usize {
        // SAFETY: a live cell has one body word.
        let w = &unsafe { body(cell, 1) }[0];
        // Acquire pairs with the Release in `ReadState::sweep_ended`.
        let state = self.weak_read.0.load(Ordering::Acquire);
        if state == 0 {
            // All swept and not marking: the word is the answer. Acquire: as in
            // `deref_marking` (a clear of an earlier cycle was ordered by the state).
            return w.load(Ordering::Acquire);
        }
        self.deref_marking(p, w, state)
    }

    /// A read while a cell may be doomed or marking may run (`state`, nonzero).
    #[cold]
    #[inline(never)]
    fn deref_marking(&self, p: Option<usize>, w: &AtomicUsize, state: u8) -> usize {
        let t = if state & UNSWEPT == 0 {
            // Acquire: the object is seen initialised (as a field load).
            w.load(Ordering::Acquire)
        } else {
            self.deref_slow(w)
        };
        if t != 0 {
            // Shade what the read returns while marking (a no-op, one load, otherwise).
            self.write_barrier(p, 0, t);
        }
        t
    }

    /// The value `v` just loaded from an ephemeron word of the record at `addr` (type
    /// `desc`), or 0 (null) if the record's key is gone (see "Ephemerons"). While marking,
    /// the value returned is shaded.
    ///
    /// Runs pinned on P `p`, in the section that loaded `v`.
    pub(crate) fn ephemeron_value(
        &self,
        p: Option<usize>,
        addr: usize,
        desc: &TypeDesc,
        v: usize,
    ) -> usize {
        let TypeDesc::Record { words, .. } = desc else { return 0 };
        // SAFETY: the record is live (the caller holds it).
        let b = unsafe { body(addr, words.len()) };
        // Acquire pairs with the Release of the store that wrote the key's cell (the crate
        // essay, "Publication"): the cell is seen initialised.
        let cell = b[crate::mark::key_word(words)].load(Ordering::Acquire);
        // No key yet: the value is held strongly.
        if cell != 0 && self.deref_cell(p, cell) == 0 {
            return 0;
        }
        // The key is there, so the value is (marking keeps it while the key is marked, and
        // it was read in this section, which no stop falls inside).
        let r = self.ref_in(WordKind::Ephemeron, v);
        if r != 0 {
            self.write_barrier(p, 0, r);
        }
        v
    }

    /// Before a store of a new key into weak word `i` of the record at `addr` (type `desc`):
    /// if `i` is the record's key word and its old key is gone, its ephemeron words still
    /// name the values that died with it, and are cleared (no barrier: those objects are
    /// unreachable), so the new key does not revive them.
    ///
    /// Runs pinned on P `p`.
    pub(crate) fn before_key_store(&self, p: usize, addr: usize, desc: &TypeDesc, i: usize) {
        let TypeDesc::Record { words, .. } = desc else { return };
        if !words.contains(&WordKind::Ephemeron) || crate::mark::key_word(words) != i {
            return;
        }
        // SAFETY: the record is live (the caller holds it: a slot, or a section's value).
        let b = unsafe { body(addr, words.len()) };
        // Acquire: as in `ephemeron_value`.
        let cell = b[i].load(Ordering::Acquire);
        if cell == 0 || self.deref_cell(Some(p), cell) != 0 {
            return;
        }
        for (w, &k) in b.iter().zip(words) {
            if k == WordKind::Ephemeron {
                // Relaxed: as above.
                w.store(0, Ordering::Relaxed);
            }
        }
    }

    #[cold]
    fn deref_slow(&self, w: &AtomicUsize) -> usize {
        // Acquire pairs with the Release store of 0 in `Specials::died`.
        let t = w.load(Ordering::Acquire);
        if t == 0 || !self.heap.holds_live(t) {
            return 0;
        }
        // Still the same object: a sweep that freed `t`'s slot cleared the word before the
        // allocation bits `holds_live` read (Acquire), so that read would have seen 0 here.
        if w.load(Ordering::Acquire) == t { t } else { 0 }
    }

    /// Attaches `f` to the live object `target` (a plain address).
    ///
    /// Runs pinned, or without preemption.
    pub(crate) fn add_cleanup_at(self: &Arc<Self>, target: usize, f: CleanupFn) -> Cleanup {
        let sp = self.heap.specials();
        let id = sp.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(span) = self.heap.find_span(target) {
            // Relaxed: as in `cell_of`.
            span.specials.store(true, Ordering::Relaxed);
        }
        sp.map().entry(target).or_default().cleanups.push((id, f));
        Cleanup { gc: Arc::downgrade(self), obj: target, id }
    }
}

/// The heap's cleanup goroutine: runs queued cleanups each time a sweep wakes it.
pub(crate) fn cleanup_goroutine(gc: Weak<Inner>, wake: Arc<Chan<()>>) {
    safepoint_sched::set_system(true);
    while wake.recv().is_ok() {
        let Some(inner) = gc.upgrade() else { return };
        let sp = inner.heap.specials();
        loop {
            let batch = crate::np(|| std::mem::take(&mut *lock(&sp.queue)));
            if batch.is_empty() {
                break;
            }
            for f in batch {
                if let Err(e) = catch_unwind(AssertUnwindSafe(f)) {
                    if e.is::<safepoint_sched::RuntimeShutdown>() {
                        // The runtime is shutting down and unwound this goroutine at a
                        // safepoint inside the cleanup: not the cleanup's panic. Let the
                        // unwind end the goroutine, or it would park again and be abandoned.
                        std::panic::resume_unwind(e);
                    }
                    let msg = e
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| e.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(a non-string payload)".into());
                    safepoint_sched::message(format_args!("safepoint: a cleanup panicked: {msg}"));
                    sp.panicked.fetch_add(1, Ordering::Relaxed);
                }
                sp.run.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
