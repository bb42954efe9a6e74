//! Concurrent marking: the write barrier, mark workers, assists, stack scans one goroutine at
//! a time, and mark termination by ragged barriers and one short stop.
//!
//! ## Why it is correct (the invariant)
//!
//! While marking, every reference store into the heap or a global shades the value it
//! overwrites and the value it writes (the hybrid barrier), objects are allocated black, and
//! managed-stack slots are written with no barrier at all. A goroutine's stack is scanned once,
//! under `suspend_g`, and is black from then on. An object reachable at the end of marking
//! was either reachable from the roots at the start (then the deletion half of the barrier
//! keeps a path to it grey or black: cutting the last heap path shades it), or became
//! reachable later through a store (the insertion half shades it) or an allocation (black).
//! A reference can move from one stack to another only through the heap, a global or a
//! managed channel (a root slot in flight, `globals.rs`), and each of those goes through the
//! barrier; so no stack needs a second scan. Goroutines started during marking begin with empty stacks and
//! are black from birth.
//!
//! ## Who marks
//!
//! * **Workers** are goroutines on the runtime's Ps, the cycle's driver the first of them:
//!   a quarter of the Ps, as in Go (one dedicated worker from two Ps on, more from eight; a
//!   fractional one marking a quarter of the time with one P; see `worker_shares`). So
//!   marking takes its share of the processors from the program rather than adding threads
//!   the OS must time-slice against it: when the workers were threads beside the Ps, every
//!   thread, the driver inside its termination stop included, waited milliseconds for a core.
//!   They are urgent goroutines (a yield or an ended time slice puts them back ahead of the
//!   program's goroutines), answer preemption requests between batches of
//!   `BATCH_WORDS` words, and keep their private grey objects across those safepoints:
//!   the driver stops the world only after every worker has run out of work and returned.
//!   They scan the stacks first: the goroutines listed once at the start of marking, each
//!   claimed by an atomic index (Go's root jobs), so no lock is taken per stack.
//! * **Assists**: an allocating goroutine pays for its allocation in scan work on its slow
//!   path (a new bitmap word or span), first from the credit the workers have banked, then by
//!   scanning itself. What it cannot pay (the shared queue is empty while marking waits on
//!   stack scans or barriers) is owed, not forgiven: the allocators' shared debt, which the
//!   workers' later credit pays down; an allocation whose slow path finds the debt over
//!   `DEBT_SLACK`'s worth (1 MiB of allocation) waits there, at a safepoint, until it is paid
//!   or marking ends. So allocation cannot outrun marking by more than a bounded number of
//!   bytes (the slack, plus one slow path's allocation per allocating goroutine).
//! * An assist drains inside its allocation's pinned section: no stop, barrier or
//!   asynchronous preemption falls inside it, and it ends by pushing its leftover work
//!   (grey objects and edges, see the `mark` module) to the shared queue. So at any
//!   safepoint no marker holds private work, and a stop sees all of it.
//!
//! ## Termination
//!
//! When the workers find no work, a ragged barrier flushes every P's write-barrier buffer;
//! if that found any grey object, the workers run again. When a round finds nothing, the
//! world is stopped once: every buffer is flushed again; if the queue is still empty marking
//! is done (the barrier goes off, caches stop allocating black, the heap's sweep generation
//! advances). If the stop found work (mutators shaded objects since the last round), the
//! world restarts and marking goes on, up to three times, after which the little that is
//! left is drained inside the stop. The stop's length does not depend on the number of
//! goroutines (no stack is scanned in it) or on the heap's size.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_deque::Injector;
use safepoint_sched::{Chan, Goroutine};

use crate::collector::{Inner, PState, Phase, RootVisitor, Timeline};
use crate::mark::{GREY, MarkCtx, Tracer, shade_bit};
use crate::types::WordKind;

/// Entries of a P's write-barrier buffer before it is flushed.
pub(crate) const WBUF_LEN: usize = 256;

/// Scan work (words) the termination stop may do per P when it finds marking unfinished (what
/// the Ps' last barrier buffers shaded, and what that reaches): about 20-40 us of marking per
/// P. Past it, the stop lets the world go and marking goes on concurrently, so the stop's work
/// is bounded by the number of Ps, whatever the program does.
const STOP_DRAIN_WORDS: usize = 4096;

/// Scan work (words) a worker does between two looks at preemption requests: about 20-40 us
/// of marking, the longest a stop or a stack scan waits for a worker.
const BATCH_WORDS: usize = 4 * 1024;

/// A fractional worker past its share rests at most this long at a time, in steps of
/// [`REST_STEP`], after each of which it looks for an idle P to mark on.
const MAX_REST: Duration = Duration::from_millis(2);
const REST_STEP: Duration = Duration::from_micros(100);

/// The mark workers for `procs` Ps: how many dedicated ones, and the fraction of one P's time
/// a fractional one marks for (0 for none).
///
/// A quarter of the Ps, as in Go (rounded to whole dedicated workers unless that misses the
/// quarter by more than 30%, the rest as a fraction), but with at least one dedicated worker
/// once there are two Ps: Go gives 2 and 3 Ps a fractional worker only, and here that was
/// slower. On `binary-trees-compiled 18` with 2 Ps, a worker marking for half of one P made
/// marking outlast the allocation runway, so mutators paid in assists and waits and the run
/// took 1.9 times as long as with one dedicated worker (4.6-5.9 s against 2.8-3.0 s). With
/// one P the worker is fractional (a quarter), or the program would stop while marking.
pub(crate) fn worker_shares(procs: usize) -> (usize, f64) {
    let goal = procs as f64 * 0.25;
    let mut dedicated = (goal + 0.5) as usize;
    let err = dedicated as f64 / goal - 1.0;
    if !(-0.3..=0.3).contains(&err) {
        dedicated = if goal < 1.0 { 0 } else { dedicated - 1 };
    }
    let mut fraction = goal - dedicated as f64;
    if procs >= 2 && dedicated == 0 {
        (dedicated, fraction) = (1, 0.0);
    }
    (dedicated, if fraction < 0.05 { 0.0 } else { fraction })
}

/// The concurrent collector's shared state.
pub(crate) struct Shared {
    /// The write barrier is on (Quiesce through termination). Read Relaxed by the barrier:
    /// it is turned on before the ragged barrier that starts marking and off inside the stop
    /// that ends it, and both of those order it with every goroutine's next step.
    pub(crate) barrier_on: AtomicBool,
    /// Grey objects shared between markers.
    pub(crate) work: Injector<usize>,
    /// The goroutines whose stacks this cycle scans, listed once at the start of marking;
    /// a worker takes the list (one lock per worker, not per stack) and claims its stacks
    /// one at a time by `next_stack`, as Go hands out root jobs by an atomic index.
    stack_jobs: Mutex<Arc<[Goroutine]>>,
    /// The next job of `stack_jobs` to claim. Relaxed: the list it indexes is handed to the
    /// workers by the lock above (and their start), and a claim publishes nothing.
    next_stack: AtomicUsize,
    /// Scan work (words) done by workers and not yet claimed by assists.
    bg_credit: AtomicI64,
    /// Scan work (words) that allocations owe this cycle and neither their assists (no work
    /// to take) nor the workers' credit have paid: the allocators' debt, which
    /// [`Inner::throttle`] keeps under [`DEBT_SLACK`]'s worth.
    pub(crate) debt: AtomicI64,
    /// The largest `debt` an assist has left in any cycle of this heap, in bytes of
    /// allocation (`debt` over the assist ratio): what the bound is checked against.
    pub(crate) debt_peak_bytes: AtomicU64,
    /// Scan words an assist owes per allocated byte (an `f64`'s bits).
    assist_ratio: AtomicU64,
    /// Where between live and goal the next cycle starts (an `f64`'s bits, 0.3 ..= 0.95).
    trigger_frac: AtomicU64,
    /// Bytes shaded this cycle by workers, assists and barrier flushes (what marking traced;
    /// objects allocated black are not counted here).
    pub(crate) marked: AtomicUsize,
    worker_ns: AtomicU64,
    assist_ns: AtomicU64,
    /// CPU time (as wall time of the marking goroutine) of every cycle so far, for the
    /// metrics: dedicated workers, fractional workers, assists. Relaxed: counters.
    pub(crate) total_dedicated_ns: AtomicU64,
    pub(crate) total_fractional_ns: AtomicU64,
    pub(crate) total_assist_ns: AtomicU64,
    /// Stacks scanned this cycle; and in the last completed cycle.
    stacks: AtomicUsize,
    pub(crate) last_stacks: AtomicUsize,
    shades: AtomicUsize,
    /// Full barrier buffers that mutators flushed themselves this cycle (the ragged rounds
    /// flush the rest).
    self_flushes: AtomicUsize,
    /// With checkmark: the goroutines whose stacks this cycle scanned (a second scan of one
    /// is a bug and aborts).
    scanned: Mutex<std::collections::HashSet<u64>>,
    /// A weak handle on the collector, for the worker goroutines a cycle starts.
    pub(crate) me: std::sync::OnceLock<Weak<Inner>>,
}

impl Shared {
    /// Counts `ns` of a mark worker's time, for the cycle and, by kind, for the metrics.
    fn add_worker_ns(&self, ns: u64, dedicated: bool) {
        // Relaxed: counters.
        self.worker_ns.fetch_add(ns, Ordering::Relaxed);
        let total = if dedicated { &self.total_dedicated_ns } else { &self.total_fractional_ns };
        total.fetch_add(ns, Ordering::Relaxed);
    }

    pub(crate) fn new() -> Shared {
        Shared {
            barrier_on: AtomicBool::new(false),
            work: Injector::new(),
            stack_jobs: Mutex::new(Arc::new([])),
            next_stack: AtomicUsize::new(0),
            bg_credit: AtomicI64::new(0),
            debt: AtomicI64::new(0),
            debt_peak_bytes: AtomicU64::new(0),
            assist_ratio: AtomicU64::new(0.5f64.to_bits()),
            trigger_frac: AtomicU64::new(0.7f64.to_bits()),
            marked: AtomicUsize::new(0),
            worker_ns: AtomicU64::new(0),
            assist_ns: AtomicU64::new(0),
            total_dedicated_ns: AtomicU64::new(0),
            total_fractional_ns: AtomicU64::new(0),
            total_assist_ns: AtomicU64::new(0),
            stacks: AtomicUsize::new(0),
            last_stacks: AtomicUsize::new(0),
            shades: AtomicUsize::new(0),
            self_flushes: AtomicUsize::new(0),
            scanned: Mutex::new(std::collections::HashSet::new()),
            me: std::sync::OnceLock::new(),
        }
    }

    /// The pacer's trigger fraction.
    pub(crate) fn trigger_frac(&self) -> f64 {
        // Relaxed: written by the cycle driver only, under the cycle lock.
        f64::from_bits(self.trigger_frac.load(Ordering::Relaxed))
    }

    /// This cycle's stack-scan jobs (taken without preemption: mark workers are goroutines).
    fn stack_jobs(&self) -> Arc<[Goroutine]> {
        crate::np(|| self.stack_jobs.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Claims the next stack to scan in `jobs` (this cycle's list), if any is left.
    fn claim_stack(&self, jobs: &[Goroutine]) -> Option<Goroutine> {
        // Relaxed: see `next_stack`. Past the end, the index only grows (a few times per
        // worker), far from overflowing.
        let i = self.next_stack.fetch_add(1, Ordering::Relaxed);
        jobs.get(i).copied()
    }

    /// Whether every stack of `jobs` has been claimed.
    fn stacks_claimed(&self, jobs: &[Goroutine]) -> bool {
        // Relaxed: see `next_stack`.
        self.next_stack.load(Ordering::Relaxed) >= jobs.len()
    }
}

/// The background cycle driver: runs a cycle each time allocation finds the heap past its
/// trigger (concurrent mode; the stop-the-world mode collects on the allocating goroutine),
/// and the collections that threads outside the runtime ask for ([`Gc::collect`]).
///
/// [`Gc::collect`]: crate::Gc::collect
pub(crate) fn driver(gc: Weak<Inner>, wake: Arc<Chan<()>>) {
    // Urgent for good: when allocation wakes it, it must not wait its turn behind every
    // runnable goroutine (with a thousand of them, seconds) while the heap grows.
    safepoint_sched::set_urgent(true);
    safepoint_sched::set_system(true);
    while wake.recv().is_ok() {
        let Some(inner) = gc.upgrade() else { return };
        // Relaxed: a hint; `cycle` re-checks under its lock.
        inner.cycle(Some(inner.cycles.load(Ordering::Relaxed)));
        inner.serve_requests();
    }
}

impl Inner {
    /// A tracer for this collector's concurrent marking (shared queue: `conc.work`), with
    /// `stack` as its private stack.
    fn tracer(&self, stack: Vec<usize>, balance: bool) -> Tracer<'_> {
        let ctx = MarkCtx { heap: &self.heap, types: &self.types, rule: self.config.tag_rule };
        Tracer::new(ctx, &self.conc.work, stack, balance)
    }

    /// Adds what `t` shaded to the cycle's sum.
    fn count_marked(&self, t: &mut Tracer<'_>) {
        // The ephemerons it found first: a round that sees this count sees them listed.
        t.publish_ephemerons();
        // Release: after the mark bits counted, for the ephemeron rounds' Acquire loads (see
        // `cycle_concurrent`); otherwise a sum, read after the stop that ends marking.
        self.conc.marked.fetch_add(std::mem::take(&mut t.marked_bytes), Ordering::Release);
    }

    /// One ephemeron round (see the `weak` module): the values of pending ephemerons whose
    /// keys are marked are traced, and those of the keys that tracing marks. Returns how many
    /// values were traced.
    fn ephemeron_round(&self) -> usize {
        let mut t = self.tracer(Vec::new(), false);
        let n = self.heap.specials().ephemeron_round(&self.heap, self.config.tag_rule, &mut t);
        self.count_marked(&mut t);
        n
    }
}

/// Bytes of allocation that the allocators, all together, may be ahead of the marker during a
/// cycle (their unpaid scan work over the assist ratio): past it, an allocation's slow path
/// waits for the markers to pay the debt down (see [`Inner::throttle`]).
pub(crate) const DEBT_SLACK: usize = 1 << 20;

impl Inner {
    /// Holds back an allocating goroutine, at its allocation slow path, while marking runs and
    /// either the allocators' unpaid scan work is over [`DEBT_SLACK`]'s worth, or the heap is
    /// past its goal by a tenth. It sleeps in short steps (its P goes to the markers and to
    /// goroutines that do not allocate), paying the debt down with the credit the workers
    /// bank meanwhile, until the debt is back under the slack or marking ends.
    ///
    /// This is the bound on the allocators' debt in bytes (Go's assist queue, where an
    /// assist that found no work parks until background credit pays it): an assist pays for
    /// its allocation with scan work when there is work to take, and what it cannot pay (the
    /// queue is empty while marking waits on stack scans or barriers) is added to the shared
    /// debt instead of forgiven; so between two looks here, the allocation of a cycle not
    /// matched by scan work is at most the slack plus what each allocating goroutine
    /// allocates between two slow paths (64 objects, or one large one). The goal rule is
    /// bounded in time (100 ms a call) as before: the heap's size also counts what marking
    /// cannot free, and waiting for good on it could stall a program whose live heap grew.
    pub(crate) fn throttle(&self) {
        let c = &self.conc;
        // Relaxed: see `Shared::barrier_on`; a hint, re-read each step.
        if !c.barrier_on.load(Ordering::Relaxed) || safepoint_sched::in_no_preempt() {
            return;
        }
        let (_, goal) = self.stats_snapshot();
        let limit = (goal + goal / 10) as u64;
        let mut waited = 0;
        while c.barrier_on.load(Ordering::Relaxed) {
            let ratio = f64::from_bits(c.assist_ratio.load(Ordering::Relaxed));
            let slack = (DEBT_SLACK as f64 * ratio) as i64;
            let over_debt = self.pay_debt() > slack;
            let over_goal = waited < 2000 && self.heap.live_bytes_estimate() > limit;
            if !over_debt && !over_goal {
                return;
            }
            safepoint_sched::sleep(Duration::from_micros(50));
            waited += 1;
        }
    }

    /// Pays the allocators' debt with the workers' banked credit, as far as it goes; the debt
    /// left (words).
    fn pay_debt(&self) -> i64 {
        let c = &self.conc;
        // Relaxed, all: pacing numbers (each update is one atomic step; a stale read only
        // moves a wait by one step).
        let mut debt = c.debt.load(Ordering::Relaxed);
        if debt <= 0 {
            return debt;
        }
        let credit = c.bg_credit.load(Ordering::Relaxed);
        let take = credit.min(debt);
        if take > 0
            && c.bg_credit
                .compare_exchange(credit, credit - take, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            debt = c.debt.fetch_sub(take, Ordering::Relaxed) - take;
        }
        debt
    }

    /// The write barrier: called with the running goroutine pinned on P `p` (`None` off the
    /// runtime's Ps) before a reference store that replaces `old` with `new` (plain addresses,
    /// 0 for none). Costs one relaxed load when marking is off.
    #[inline]
    pub(crate) fn write_barrier(&self, p: Option<usize>, old: usize, new: usize) {
        // Relaxed: see `Shared::barrier_on`.
        if self.conc.barrier_on.load(Ordering::Relaxed) {
            self.barrier_slow(p, old, new);
        }
    }

    /// Stores `v` into the heap word `w`, a field of kind `kind` (not raw), through the write
    /// barrier, for the goroutine pinned on P `p`. The word's old value is read only while
    /// the barrier is on: a store with marking off touches the word once, with a store, so a
    /// fresh object's first touch of a new page never maps the shared zero page only to fault
    /// again (copy-on-write and a TLB shootdown) at the store.
    #[inline]
    pub(crate) fn store_field(&self, p: usize, kind: WordKind, w: &AtomicUsize, v: usize) {
        // Relaxed: see `Shared::barrier_on`.
        if self.conc.barrier_on.load(Ordering::Relaxed) {
            // Acquire pairs with the Release of the store that wrote `old`: the barrier may
            // shade it on this thread at once (`flush_wbuf`), which reads its allocation bit.
            let old = w.load(Ordering::Acquire);
            self.barrier_slow(Some(p), self.ref_in(kind, old), self.ref_in(kind, v));
        }
        // Release publishes the object `v` refers to (its zeroing, header, allocation and
        // mark bits, and the fields its goroutine initialised) to whoever loads this word
        // with Acquire: the marker (`mark::scan_described`) and other goroutines' loads.
        // A mov on x86_64, STLR on aarch64 (the crate essay, "Publication").
        w.store(v, Ordering::Release);
    }

    /// Stores `v` into the heap word `w` of an object allocated in the running pinned
    /// section and not yet published (its body still zero), a field of kind `kind`: the
    /// old value is known to be null, so only the new one is shaded while marking.
    #[inline]
    pub(crate) fn init_field(&self, p: usize, kind: WordKind, w: &AtomicUsize, v: usize) {
        // Relaxed: see `Shared::barrier_on`.
        if kind != WordKind::Raw && self.conc.barrier_on.load(Ordering::Relaxed) {
            self.barrier_slow(Some(p), 0, self.ref_in(kind, v));
        }
        // Relaxed: the object holding `w` is not yet published; the Release store that
        // publishes it (`store_field`, a global's swap) publishes this word with it.
        w.store(v, Ordering::Relaxed);
    }

    #[cold]
    fn barrier_slow(&self, p: Option<usize>, old: usize, new: usize) {
        let Some(p) = p else {
            for a in [old, new] {
                if a != 0 {
                    self.shade_shared(a);
                }
            }
            return;
        };
        // SAFETY: the caller is P `p`'s goroutine, pinned (see `PCache`).
        let st = unsafe { self.caches[p].get() };
        for a in [old, new] {
            if a != 0 {
                st.wbuf.push(a);
            }
        }
        if st.wbuf.len() >= WBUF_LEN {
            // Relaxed: a counter for the trace.
            self.conc.self_flushes.fetch_add(1, Ordering::Relaxed);
            self.flush_wbuf(st);
        }
    }

    /// Shades `addr` straight into the shared queue (no P buffer at hand); whether it was
    /// white (and is now grey).
    pub(crate) fn shade_shared(&self, addr: usize) -> bool {
        if let Some(size) = shade_bit(&self.heap, addr) {
            // Release: as in `count_marked`.
            self.conc.marked.fetch_add(size, Ordering::Release);
            self.conc.work.push(addr | GREY);
            true
        } else {
            false
        }
    }

    /// Shades every address in a P's barrier buffer; the number that were white (new grey
    /// objects: shading what is already marked makes no work, so a busy program that keeps
    /// storing does not keep marking from ending).
    fn flush_wbuf(&self, st: &mut PState) -> usize {
        // Relaxed: a counter for the trace.
        self.conc.shades.fetch_add(st.wbuf.len(), Ordering::Relaxed);
        let mut grey = 0;
        for &a in &st.wbuf {
            grey += self.shade_shared(a) as usize;
        }
        st.wbuf.clear();
        grey
    }

    /// The plain address a stored value refers to, for the barrier: `kind` says how the word
    /// is read (a global or tagged field by the tag rule, a reference field as an address).
    #[inline]
    pub(crate) fn ref_in(&self, kind: WordKind, w: usize) -> usize {
        crate::mark::ref_of(kind, self.config.tag_rule, w).unwrap_or(0)
    }

    /// An assist: called on an allocation's slow path while marking, pinned on P `st`, for
    /// roughly `bytes` allocated since the last one. Pays in scan work: credit banked by the
    /// workers first, then scanning.
    #[cold]
    #[inline(never)]
    pub(crate) fn assist(&self, st: &mut PState, bytes: usize) {
        let c = &self.conc;
        // Relaxed: pacing numbers; being a little stale is fine.
        let ratio = f64::from_bits(c.assist_ratio.load(Ordering::Relaxed));
        let mut debt = (bytes as f64 * ratio) as i64;
        let mut credit = c.bg_credit.load(Ordering::Relaxed);
        while credit > 0 && debt > 0 {
            let take = credit.min(debt);
            match c.bg_credit.compare_exchange_weak(
                credit,
                credit - take,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    debt -= take;
                    break;
                }
                Err(now) => credit = now,
            }
        }
        if debt <= 0 {
            return;
        }
        if c.work.is_empty() {
            self.owe(debt, ratio);
            return;
        }
        let t = Instant::now();
        let t0 = if self.rt.trace_on() { safepoint_arch::nanotime() } else { 0 };
        let mut tracer = self.tracer(std::mem::take(&mut st.assist), false);
        let done = tracer.drain(debt as usize);
        self.count_marked(&mut tracer);
        // What the queue did not have is owed, not forgiven.
        self.owe(debt - done as i64, ratio);
        // Nothing stays private past the pinned section: the rest goes back to the queue.
        st.assist = tracer.into_stack();
        // Relaxed: counters for the trace and the metrics.
        let ns = t.elapsed().as_nanos() as u64;
        c.assist_ns.fetch_add(ns, Ordering::Relaxed);
        c.total_assist_ns.fetch_add(ns, Ordering::Relaxed);
        if t0 != 0 {
            self.rt.trace_nested("assist", t0, safepoint_sched::goroutine_id().unwrap_or(0));
        }
    }

    /// Adds `words` of unpaid scan work to the allocators' debt (see `throttle`).
    fn owe(&self, words: i64, ratio: f64) {
        if words <= 0 {
            return;
        }
        let c = &self.conc;
        // Relaxed: pacing numbers, as in `pay_debt`.
        let debt = c.debt.fetch_add(words, Ordering::Relaxed) + words;
        c.debt_peak_bytes.fetch_max((debt as f64 / ratio.max(1e-9)) as u64, Ordering::Relaxed);
    }

    /// A concurrent cycle (after sweep termination).
    pub(crate) fn cycle_concurrent(&self, mut tl: Timeline) {
        let c = &self.conc;
        // Relaxed: the cycle's counters, reset by the only driver (under the cycle lock).
        c.marked.store(0, Ordering::Relaxed);
        c.bg_credit.store(0, Ordering::Relaxed);
        c.debt.store(0, Ordering::Relaxed);
        c.worker_ns.store(0, Ordering::Relaxed);
        c.assist_ns.store(0, Ordering::Relaxed);
        c.stacks.store(0, Ordering::Relaxed);
        c.shades.store(0, Ordering::Relaxed);
        c.self_flushes.store(0, Ordering::Relaxed);
        c.scanned.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.weak_marking_starts();
        self.set_assist_ratio();

        // Off -> Quiesce: barrier on, then a ragged barrier: each P flushes its cache and
        // allocates black from its next safepoint on.
        self.set_phase(Phase::Quiesce);
        // SeqCst: ordered before the ragged barrier that publishes it to every P.
        c.barrier_on.store(true, Ordering::SeqCst);
        let t = Instant::now();
        let caches = &self.caches;
        safepoint_sched::for_each_p(&|p| {
            // SAFETY: the barrier runs this for P `p` at a safepoint (see `PCache`).
            let st = unsafe { caches[p].get() };
            st.cache.flush();
            st.cache.set_black(true);
        });
        tl.quiesce = t.elapsed();

        // Quiesce -> Mark: globals, stacks, then the workers.
        self.set_phase(Phase::Mark);
        let t_mark = Instant::now();
        self.globals.for_each(|_, w| {
            let a = self.ref_in(WordKind::Tagged, w);
            if a != 0 {
                self.shade_shared(a);
            }
        });
        // Weak cells live as long as their objects (see the `weak` module).
        self.heap.specials().for_each_cell(|c| {
            self.shade_shared(c);
        });
        let me = safepoint_sched::goroutine_id();
        {
            let gs: Vec<_> =
                self.rt.goroutines().into_iter().filter(|g| Some(g.id()) != me).collect();
            // No worker runs now (the last cycle's were joined): the new list and index
            // reach this cycle's workers through the lock and their start.
            c.next_stack.store(0, Ordering::Relaxed);
            crate::np(|| *c.stack_jobs.lock().unwrap_or_else(|e| e.into_inner()) = gs.into());
        }
        if me.is_some() {
            self.scan_own_stack();
        }
        // The cycle's marked bytes read before the last ephemeron round that traced nothing:
        // while it has not changed (and no record was published since), the pending
        // ephemerons' keys are still white.
        let mut eph_clean;
        loop {
            self.run_workers();
            // Ephemerons whose keys are now marked give their values to the markers; the
            // workers run again until a round finds none (see the `weak` module).
            // Acquire: pairs with the Release of the markers' counts (`count_marked`,
            // `shade_shared`), after their mark bits: the round sees the marks counted.
            let m0 = c.marked.load(Ordering::Acquire);
            if self.ephemeron_round() > 0 {
                continue;
            }
            eph_clean = m0;
            // Termination, first the ragged way: every P flushes its barrier buffer.
            let found = AtomicUsize::new(0);
            safepoint_sched::for_each_p(&|p| {
                // SAFETY: as above.
                let st = unsafe { caches[p].get() };
                found.fetch_add(self.flush_wbuf(st), Ordering::Relaxed);
            });
            if found.load(Ordering::Relaxed) > 0 || !c.work.is_empty() {
                continue;
            }
            // Then the one stop.
            let t = Instant::now();
            let stop = safepoint_sched::stop_the_world("gc mark termination");
            let t_stop = Instant::now();
            tl.stopping = t_stop - t;
            tl.stops += 1;
            self.set_phase(Phase::Stw);
            for pc in self.caches.iter() {
                // SAFETY: the world is stopped.
                self.flush_wbuf(unsafe { pc.get() });
            }
            // Root slots made or released off the Ps (threads outside the runtime, blocking
            // calls) shade under this lock; holding it to the end of marking keeps them on one
            // side of it (on a P they are pinned, and shade into the buffers just flushed).
            let globals = self.globals.lock_all();
            // Something marked since the last empty ephemeron round may be a pending key, and
            // a record published since it took the list is one no round has looked at.
            // Acquire: as above.
            let (pending, fresh) = self.heap.specials().pending_ephemerons();
            let eph_stale = pending && (fresh || c.marked.load(Ordering::Acquire) != eph_clean);
            if !c.work.is_empty() || eph_stale {
                // Marking is not finished: do a bounded share of what is left here, and if
                // that does not end it, let the world go and go on marking concurrently. An
                // ephemeron round (O(pending ephemerons)) never runs in the stop. The rounds
                // end: each stop that lets go has found objects white until then, and an
                // object is shaded once per cycle.
                let finished = !eph_stale && {
                    let m0 = c.marked.load(Ordering::Acquire);
                    let mut tracer = self.tracer(Vec::new(), false);
                    tracer.drain(STOP_DRAIN_WORDS * self.rt.procs());
                    self.count_marked(&mut tracer);
                    // What the budget left goes back to the shared queue.
                    drop(tracer.into_stack());
                    // Acquire: as above. Newly marked objects may be pending keys, and the
                    // drain may have found ephemerons of its own (listed before it counted):
                    // read the list again.
                    let marked_more = c.marked.load(Ordering::Acquire) != m0;
                    c.work.is_empty()
                        && !(marked_more && self.heap.specials().pending_ephemerons().0)
                };
                if !finished {
                    drop(globals);
                    self.set_phase(Phase::Mark);
                    // Each stop counts from its request to the start of its restart (see
                    // `terminate`).
                    tl.term_pause += t.elapsed();
                    drop(stop);
                    continue;
                }
            }
            let t_caches = Instant::now();
            tl.stop_flush = t_caches - t_stop;
            let mut black = 0u64;
            for pc in self.caches.iter() {
                // SAFETY: the world is stopped.
                let st = unsafe { pc.get() };
                st.cache.flush();
                st.cache.set_black(false);
                black += st.cache.take_black_bytes();
            }
            tl.stop_caches = t_caches.elapsed();
            // SeqCst: ordered before the restart of the world.
            c.barrier_on.store(false, Ordering::SeqCst);
            drop(globals);
            tl.mark = t_stop - t_mark;
            // Relaxed: the counters' last writers ran before the stop.
            tl.worker_cpu = Duration::from_nanos(c.worker_ns.load(Ordering::Relaxed));
            tl.assist_cpu = Duration::from_nanos(c.assist_ns.load(Ordering::Relaxed));
            tl.stacks = c.stacks.load(Ordering::Relaxed);
            tl.shades = c.shades.load(Ordering::Relaxed);
            tl.self_flushes = c.self_flushes.load(Ordering::Relaxed);
            c.last_stacks.store(tl.stacks, Ordering::Relaxed);
            // The next goal makes room for what was allocated black (see `heap_goal`).
            tl.black = black as usize;
            let marked = c.marked.load(Ordering::Relaxed);
            let roots =
                if self.config.checkmark { self.checkmark_roots(&stop) } else { Vec::new() };
            self.adapt_trigger(marked, &tl);
            self.terminate(stop, t_stop, marked, roots, tl);
            return;
        }
    }

    /// Every root, gathered with the world stopped (for checkmark).
    fn checkmark_roots(&self, stop: &safepoint_sched::WorldStop) -> Vec<(usize, String)> {
        let rule = self.config.tag_rule;
        let mut roots = Vec::new();
        self.globals.for_each(|i, w| {
            if rule.is_ref(w) {
                roots.push((w & !rule.mask, format!("global {i}")));
            }
        });
        self.heap.specials().for_each_cell(|c| roots.push((c, format!("weak cell {c:#x}"))));
        let mut push = |a: usize, what: &dyn Fn() -> String| roots.push((a, what()));
        for g in stop.goroutines() {
            let stale = stop.async_stopped(g);
            let mut v = RootVisitor::new(self, g.id(), stale, &mut push);
            stop.walk_managed_stack(g, &self.reg, &mut v);
        }
        roots
    }

    /// Scans the running goroutine's own stack (the one that drives the cycle).
    fn scan_own_stack(&self) {
        let goid = safepoint_sched::goroutine_id().unwrap_or(0);
        let mut push = |a: usize, _: &dyn Fn() -> String| {
            self.shade_shared(a);
        };
        let mut v = RootVisitor::new(self, goid, false, &mut push);
        safepoint_sched::walk_own_managed_stack(&self.reg, &mut v);
        // Relaxed: a counter.
        self.conc.stacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Suspends `g`, shades what its stack references, resumes it.
    fn scan_stack(&self, g: Goroutine) {
        let s = safepoint_sched::suspend_g(g);
        let t0 = if self.rt.trace_on() { safepoint_arch::nanotime() } else { 0 };
        if !s.dead() && self.config.checkmark {
            let fresh = crate::np(|| {
                self.conc.scanned.lock().unwrap_or_else(|e| e.into_inner()).insert(s.id())
            });
            if !fresh {
                crate::fatal(format_args!("gc: goroutine {}'s stack scanned twice", s.id()));
            }
        }
        if !s.dead() {
            let mut push = |a: usize, _: &dyn Fn() -> String| {
                self.shade_shared(a);
            };
            let stale = s.async_stopped();
            let mut v = RootVisitor::new(self, s.id(), stale, &mut push);
            s.walk_managed_stack(&self.reg, &mut v);
            // Relaxed: a counter.
            self.conc.stacks.fetch_add(1, Ordering::Relaxed);
        }
        if t0 != 0 {
            self.rt.trace_nested("stack scan", t0, s.id());
        }
        safepoint_sched::resume_g(s);
    }

    /// Runs the cycle's marking until no work is left: the mark workers are goroutines,
    /// running on the runtime's Ps like the program's, so marking takes its share of the
    /// processors from the program instead of adding threads the OS must time-slice against
    /// it (on a machine with as many cores as Ps, an extra marking thread made every thread,
    /// the cycle's driver in its stops included, wait milliseconds for a core).
    ///
    /// The share is a quarter of the Ps, as in Go ([`worker_shares`]): whole *dedicated*
    /// workers (which mark until the work runs out, giving way only to preemption requests),
    /// at least one from two Ps on, and what is left as one *fractional* worker, which marks
    /// for that fraction of one P's time (with one P: a quarter). The driver goroutine is the
    /// first worker itself; the others are goroutines it starts and waits for. A fractional
    /// worker marks without pause while some P is idle (the processor would otherwise go
    /// unused), as Go's idle workers do.
    fn run_workers(&self) {
        let Some(me) = self.conc.me.get().and_then(Weak::upgrade) else { return };
        let (dedicated, fraction) = worker_shares(self.rt.procs());
        let mut others = Vec::new();
        // The driver is a dedicated worker if there is one, else the fractional one.
        let extra = dedicated.saturating_sub(1);
        let extra_fractional = dedicated > 0 && fraction > 0.0;
        for i in 0..extra + usize::from(extra_fractional) {
            let inner = me.clone();
            let share = if i < extra { None } else { Some(fraction) };
            // If no goroutine can be started (the runtime is shutting down), the driver
            // marks alone.
            if let Ok(h) = safepoint_sched::try_go(move || {
                safepoint_sched::set_urgent(true);
                safepoint_sched::set_system(true);
                inner.mark_worker(share);
            }) {
                others.push(h);
            }
        }
        drop(me);
        self.mark_worker(if dedicated > 0 { None } else { Some(fraction) });
        for h in others {
            if let Err(e) = h.join() {
                crate::fatal(format_args!("gc: a mark worker failed: {e}"));
            }
        }
    }

    /// A mark worker, on a goroutine: stacks first (each under `suspend_g`), then grey
    /// objects in batches, until no work is left. `share`: `None` for a dedicated worker,
    /// else the fraction of one P's time this one may mark for.
    ///
    /// Between batches it answers preemption requests (a stop, a ragged barrier, a stack
    /// scan, the end of its time slice) and keeps its private work; a fractional worker past
    /// its share gives its private work to the shared queue (assists and other workers can
    /// take it) and sleeps until it is back within its share. It returns with no private work.
    fn mark_worker(&self, share: Option<f64>) {
        let c = &self.conc;
        let mut tracer = self.tracer(Vec::with_capacity(1024), true);
        let start = Instant::now();
        let mut busy = Duration::ZERO;
        let jobs = c.stack_jobs();
        loop {
            let t = Instant::now();
            if let Some(g) = c.claim_stack(&jobs) {
                self.scan_stack(g);
            } else {
                let done = tracer.drain(BATCH_WORDS);
                self.count_marked(&mut tracer);
                // Relaxed: counters.
                c.bg_credit.fetch_add(done as i64, Ordering::Relaxed);
                if tracer.is_empty() && c.stacks_claimed(&jobs) {
                    c.add_worker_ns(t.elapsed().as_nanos() as u64, share.is_none());
                    return;
                }
            }
            let d = t.elapsed();
            c.add_worker_ns(d.as_nanos() as u64, share.is_none());
            busy += d;
            if let Some(f) = share
                && self.rt.idle_procs() == 0
            {
                let allowed = start.elapsed().mul_f64(f);
                if busy > allowed {
                    // Rest in short steps, back to marking as soon as a P idles.
                    tracer.flush();
                    let until = Instant::now() + (busy - allowed).div_f64(f).min(MAX_REST);
                    loop {
                        safepoint_sched::sleep(REST_STEP);
                        if Instant::now() >= until || self.rt.idle_procs() > 0 {
                            break;
                        }
                    }
                    continue;
                }
            }
            safepoint_sched::poll();
        }
    }

    /// Sets how much scan work an allocated byte owes: the work expected (the last live heap,
    /// in words) over the room left before the goal.
    fn set_assist_ratio(&self) {
        let s = self.stats_snapshot();
        let live_words = (s.0.max(self.config.min_heap / 2) / 8) as f64;
        let heap_now = crate::np(|| self.heap.stats()).live_bytes as f64;
        let room = (s.1 as f64 - heap_now).max(self.config.min_heap as f64 / 4.0);
        // Relaxed: read by assists as a hint.
        self.conc.assist_ratio.store((live_words / room).to_bits(), Ordering::Relaxed);
    }

    /// The pacer learns: a cycle that ended past its goal starts the next one earlier, one
    /// that ended well short starts it later.
    fn adapt_trigger(&self, _marked: usize, tl: &Timeline) {
        let (_, goal) = self.stats_snapshot();
        // Lock-free, as it runs in the stop (the page heap's lock, which `Heap::stats` takes,
        // is held by the scavenger for whole walks); the caches were just flushed.
        let end = tl.heap_before.max(self.heap.live_bytes_estimate() as usize);
        let mut f = self.conc.trigger_frac();
        if end > goal {
            f -= 0.1;
        } else if (end as f64) < 0.9 * goal as f64 {
            f += 0.05;
        }
        // Relaxed: written here only, under the cycle lock.
        self.conc.trigger_frac.store(f.clamp(0.3, 0.95).to_bits(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod shares_tests {
    use super::worker_shares;

    #[test]
    fn a_quarter_of_the_ps_marks_with_at_least_one_dedicated_worker_from_two_ps() {
        assert_eq!(worker_shares(1), (0, 0.25));
        assert_eq!(worker_shares(2), (1, 0.0));
        assert_eq!(worker_shares(3), (1, 0.0));
        assert_eq!(worker_shares(4), (1, 0.0));
        assert_eq!(worker_shares(6), (1, 0.5));
        assert_eq!(worker_shares(8), (2, 0.0));
        assert_eq!(worker_shares(16), (4, 0.0));
    }
}

#[cfg(all(test, not(loom)))]
mod debt_tests {
    use std::sync::atomic::Ordering;

    use crate::{Gc, Mutator, TypeDesc, WordKind};

    /// Issue 25: an allocator ahead of the marker paid only when the shared queue had work
    /// and was forgiven the rest, so its debt was bounded only by the throttle's time limit.
    /// The unpaid part is owed now, and an allocation's slow path waits while the debt is
    /// over the slack: goroutines that do nothing but allocate, on 1, 2 and 4 Ps, never leave
    /// more than the slack plus one slow path's allocation per goroutine unpaid.
    #[test]
    #[cfg_attr(miri, ignore = "needs a running scheduler")]
    fn the_allocators_debt_stays_within_the_slack() {
        for procs in [1, 2, 4] {
            let rt = safepoint_sched::Runtime::builder().procs(procs).build().unwrap();
            let gc = Gc::builder().min_heap(4 << 20).ignore_env().build(&rt).unwrap();
            let ty = gc
                .types()
                .register(TypeDesc::Record {
                    name: "pair".into(),
                    words: vec![WordKind::Ref, WordKind::Raw],
                })
                .unwrap();
            let hs: Vec<_> = (0..procs)
                .map(|_| {
                    let g = gc.clone();
                    rt.spawn(move || {
                        let mut m = Mutator::new(&g).unwrap();
                        let c0 = g.cycles();
                        m.scope(|m, [s]| {
                            while g.cycles() < c0 + 8 {
                                m.alloc(s, ty).unwrap();
                            }
                        });
                    })
                    .unwrap()
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            let peak = gc.inner.conc.debt_peak_bytes.load(Ordering::Relaxed) as usize;
            // One slow path's allocation per goroutine: 64 objects of 24 bytes (in the
            // 32-byte class), with room for the header.
            let bound = super::DEBT_SLACK + procs * 64 * 32;
            eprintln!("{procs} P: peak unpaid debt {peak} bytes (bound {bound})");
            assert!(peak <= bound, "{procs} P: the allocators owed {peak} bytes (bound {bound})");
        }
    }
}
