//! The scheduler proper: Sched (one per runtime), P, M, the scheduling loop, spawn, park/ready,
//! blocking calls, and the hand-off of Ps between Ms.

use core::cell::{Cell, UnsafeCell};
use core::mem::ManuallyDrop;
use core::ptr;
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use safepoint_arch::stack::StackPool;
use safepoint_arch::{Context, Note, nanotime, signal};

use crate::g::{Body, G, GPtr, goid};
use crate::shim::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use crate::status::Status;

/// P status: see "Scheduling" and "Safepoints and preemption" in the crate essay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum PStatus {
    /// On the idle list, owned by the scheduler lock; no M.
    Idle = 0,
    /// Owned by an M running goroutines (or looking for one).
    Running = 1,
    /// Its M is in a blocking call; may be retaken by a CAS to Idle or GcStop.
    Syscall = 2,
    /// Stopped for a stop-the-world; owned by the stopper.
    GcStop = 3,
    /// Not in use (never, with a fixed number of Ps; kept for the state table).
    #[allow(dead_code)]
    Dead = 4,
    /// Its M is holding its goroutine in place for an asynchronous preemption: the M still owns
    /// the P (`p.m` stays set) but runs nothing until the goroutine resumes. A stopper or a
    /// ragged barrier may borrow it by a CAS to GcStop (the P counts as stopped; the barrier's
    /// function runs for it) and must give it back by storing Held and waking the M's
    /// `hold_note`. Its M moves it back to Running by a CAS when it lets the goroutine go.
    Held = 5,
}

/// A P: the right to run goroutines, with its run queue and caches.
pub(crate) struct P {
    pub id: usize,
    /// A [`PStatus`].
    pub status: AtomicUsize,
    /// The M that owns this P (null when idle or stopped). Racy hint for preemption.
    pub m: AtomicUsize,
    /// The M that left this P for a blocking call (its last one), so that sysmon can ask the
    /// goroutine in the call to give up the P when the call returns (see `sysmon::retake`).
    /// Racy hint, as `m`: written by the M entering the call (Release), read by sysmon.
    pub syscall_m: AtomicUsize,
    /// Local run queue. Owner: the M holding the P.
    runq: UnsafeCell<Worker<GPtr>>,
    stealer: Stealer<GPtr>,
    /// One-slot queue served before `runq`: the goroutine just readied or spawned.
    runnext: AtomicUsize,
    /// Bumped at every schedule; sysmon watches it to spot a goroutine that runs too long.
    pub schedtick: AtomicU64,
    /// Bumped at every blocking call; sysmon watches it to spot a long blocking call.
    pub syscalltick: AtomicU64,
    /// Set by `for_each_p` until this P has run the safe-point function.
    pub run_safe_point_fn: AtomicBool,
    /// Dead Gs kept with their stacks for the next spawn. Owner: the M holding the P.
    gfree: UnsafeCell<Vec<GPtr>>,
    /// sysmon's last look at `schedtick` (while the P runs a goroutine, in a blocking call or
    /// not) and when it last changed: how long the goroutine has run.
    pub sysmon_schedtick: AtomicU64,
    pub sysmon_schedwhen: AtomicU64,
    /// sysmon's last look at `syscalltick` (while the P is in a blocking call) and when it last
    /// changed: how long the call has lasted.
    pub sysmon_syscalltick: AtomicU64,
    pub sysmon_syscallwhen: AtomicU64,
    /// When sysmon first saw this P in its current asynchronous hold (`Held`, at the same
    /// `schedtick`), 0 if it was not Held at its last look: how long the hold has lasted (see
    /// `sysmon::unstrand`). Only sysmon reads and writes it (Relaxed).
    pub sysmon_heldwhen: AtomicU64,
    /// This P's timer heap (issue 4: see `crate::timer`).
    pub timers: crate::timer::PTimers,
    /// Scheduling latencies of the sampled goroutines this P ran (from runnable to running):
    /// bucket `i` counts waits of `2^i ..< 2^(i+1)` ns, the last also longer ones. Written by
    /// the M owning the P (load and store: one writer); read by anyone (metrics), Relaxed.
    pub latency: [AtomicU64; LATENCY_BUCKETS],
    /// This P's part of the execution trace. Owner: the M holding the P.
    pub trace: crate::trace::PTraceCell,
}

/// Buckets of the scheduling-latency histogram ([`P::latency`]).
pub(crate) const LATENCY_BUCKETS: usize = 32;

/// Times `g`'s wait in a run queue if it is sampled (see `G::track_latency`): called by
/// whoever makes it runnable, before it queues it. A load and a predictable branch when not.
#[inline]
pub(crate) fn stamp_runnable(g: &G) {
    // Relaxed: see `G::track_latency` and `G::runnable_since`.
    if g.track_latency.load(Ordering::Relaxed) {
        g.runnable_since.store(safepoint_arch::nanotime().max(1), Ordering::Relaxed);
    }
}

// SAFETY: the UnsafeCell fields (`runq`, `gfree`) are touched only by the M that owns the P;
// ownership moves with the P's status transitions and the scheduler lock, which order the
// previous owner's accesses before the next owner's. Everything else is atomic.
unsafe impl Sync for P {}
// SAFETY: as above.
unsafe impl Send for P {}

impl P {
    pub(crate) fn new(id: usize) -> P {
        let w = Worker::new_fifo();
        let stealer = w.stealer();
        P {
            id,
            status: AtomicUsize::new(PStatus::Idle as usize),
            m: AtomicUsize::new(0),
            syscall_m: AtomicUsize::new(0),
            runq: UnsafeCell::new(w),
            stealer,
            runnext: AtomicUsize::new(0),
            schedtick: AtomicU64::new(0),
            syscalltick: AtomicU64::new(0),
            run_safe_point_fn: AtomicBool::new(false),
            gfree: UnsafeCell::new(Vec::new()),
            sysmon_schedtick: AtomicU64::new(0),
            sysmon_schedwhen: AtomicU64::new(0),
            sysmon_syscalltick: AtomicU64::new(0),
            sysmon_syscallwhen: AtomicU64::new(0),
            sysmon_heldwhen: AtomicU64::new(0),
            timers: crate::timer::PTimers::new(),
            latency: [(); LATENCY_BUCKETS].map(|_| AtomicU64::new(0)),
            trace: Default::default(),
        }
    }

    pub fn status(&self) -> PStatus {
        match self.status.load(Ordering::Acquire) {
            0 => PStatus::Idle,
            1 => PStatus::Running,
            2 => PStatus::Syscall,
            3 => PStatus::GcStop,
            5 => PStatus::Held,
            _ => PStatus::Dead,
        }
    }

    pub fn set_status(&self, s: PStatus) {
        // Release: pairs with the Acquire in `status()`/`cas_status`, handing over the P's
        // owner-only fields with it.
        self.status.store(s as usize, Ordering::Release);
    }

    pub fn cas_status(&self, old: PStatus, new: PStatus) -> bool {
        // AcqRel: the winner of a retake takes the P's owner-only fields from the previous owner.
        self.status
            .compare_exchange(old as usize, new as usize, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// # Safety
    /// Only the M owning this P may call it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn runq(&self) -> &mut Worker<GPtr> {
        // SAFETY: the caller owns the P, so nobody else touches the worker end.
        unsafe { &mut *self.runq.get() }
    }

    /// Takes the duty of running the pending safe-point function for this P: true for exactly
    /// one caller per request (the P's owner at a safepoint, or whoever handles it idle or
    /// blocked).
    pub fn claim_safe_point(&self) -> bool {
        // AcqRel: one winner; Acquire pairs with the Release publication in for_each_p.
        self.run_safe_point_fn
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// A thief's attempt at this P's `runnext` (another M, while the owner may `put` or
    /// `get` at the same moment): exactly one of them takes a given goroutine.
    pub(crate) fn steal_runnext(&self) -> Option<GPtr> {
        let g = self.runnext.load(Ordering::Acquire);
        // AcqRel: Acquire takes the goroutine published by the owner's Release swap in `put`;
        // the CAS fails if the owner (or another thief) took or replaced it meanwhile.
        if g != 0
            && self.runnext.compare_exchange(g, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            return core::ptr::NonNull::new(g as *mut G).map(GPtr);
        }
        None
    }

    /// How many goroutines this P has queued, `runnext` included (racy; for reports).
    pub fn runq_len(&self) -> usize {
        self.stealer.len() + (self.runnext.load(Ordering::Relaxed) != 0) as usize
    }

    /// Whether this P has no queued goroutines (racy; fine as a hint).
    pub fn runq_empty(&self) -> bool {
        self.stealer.is_empty() && self.runnext.load(Ordering::Acquire) == 0
    }

    /// Queues `g` on this P: in `runnext` if `next` (kicking the old one to the tail).
    ///
    /// # Safety
    /// Only the M owning this P may call it.
    pub(crate) unsafe fn put(&self, g: GPtr, next: bool) {
        // SAFETY: per the caller's contract.
        let q = unsafe { self.runq() };
        if next {
            // AcqRel: Release publishes g; Acquire takes the old one from a thief's view.
            let old = self.runnext.swap(g.0.as_ptr() as usize, Ordering::AcqRel);
            if let Some(old) = core::ptr::NonNull::new(old as *mut G) {
                q.push(GPtr(old));
            }
        } else {
            q.push(g);
        }
    }

    /// Takes the next local goroutine, and whether it came from `runnext` (it then inherits
    /// the current time slice: a pair of goroutines handing off to each other through
    /// `runnext` must not look like a stream of fresh slices to sysmon, or it would starve the
    /// rest of the queue).
    ///
    /// # Safety
    /// Only the M owning this P may call it.
    pub(crate) unsafe fn get(&self) -> Option<(GPtr, bool)> {
        if self.runnext.load(Ordering::Relaxed) != 0 {
            // Acquire: pairs with the Release swap in `put`.
            let g = self.runnext.swap(0, Ordering::Acquire);
            if let Some(g) = core::ptr::NonNull::new(g as *mut G) {
                return Some((GPtr(g), true));
            }
        }
        // SAFETY: per the caller's contract.
        unsafe { self.runq() }.pop().map(|g| (g, false))
    }
}

/// What a goroutine asks its M's g0 to do once it has switched away (the `mcall` protocol: the
/// action runs only after the goroutine's registers are saved, so nobody can resume it early).
#[derive(Clone, Copy)]
pub(crate) enum After {
    Nothing,
    /// Back of the local run queue.
    Yield,
    /// Back of the local run queue, and the time slice ends (preempted).
    YieldPreempted,
    /// Back of the local run queue even if the goroutine is urgent (`proc::yield_local`).
    YieldLocal,
    /// Park: run the callback with the wake-up token.
    Park(*mut (dyn FnMut(crate::GoroutineRef) -> bool + 'static)),
    /// The goroutine is done.
    Exit,
    /// Park in `Preempted` for a suspender.
    PreemptPark,
    /// Blocking call returned but no P was free: queue the goroutine globally.
    ExitSyscall,
    /// The runtime is shutting down and the goroutine waits for something that will never
    /// come (a stop or ragged barrier whose Ps have exited): leave it where it is, never to
    /// be resumed; shutdown retires it with the others.
    Abandon,
}

/// An M: an OS thread running goroutines. Its own thread stack is g0.
pub(crate) struct M {
    pub id: usize,
    pub sched: *const Sched,
    /// Saved g0 context while a goroutine runs. Owner: this M's thread.
    g0: UnsafeCell<Context>,
    /// Goroutine running on this M (0 on g0). Written by this M, read racily by preempters.
    pub curg: AtomicUsize,
    /// P held by this M (0 if none).
    pub p: AtomicUsize,
    /// P handed to this M by whoever woke it.
    pub(crate) nextp: AtomicUsize,
    /// Looking for work (counted in `Sched::nmspinning`).
    /// Written by whoever hands a parked M its P (ordered by `nextp`'s Release/Acquire), then
    /// only by the M itself; Relaxed throughout.
    pub(crate) spinning: AtomicBool,
    /// Runtime critical-section depth: no preemption while nonzero.
    pub locks: AtomicUsize,
    /// Runtime locks held by this M (the scheduler lock, wait-queue locks, the spawn and ready
    /// paths): the preemption handler declines while nonzero, because a goroutine held in place
    /// with one of them would block whoever holds it. Unlike `locks` it does not forbid
    /// parking (a park callback releases a wait-queue lock). Written by this M's thread only;
    /// Relaxed with compiler fences (the only other reader is a signal handler on this thread).
    pub rtlocks: AtomicU32,
    /// Where this M parks when idle.
    pub park: Note,
    /// Where this M waits while it holds its goroutine in place (asynchronous preemption);
    /// woken by whoever releases the goroutine or gives back its P.
    pub hold_note: Note,
    /// The M's kernel thread id, for the preemption signal; 0 until its thread starts. Written
    /// once by the thread itself (Release), read by senders (Acquire).
    pub tid: AtomicI32,
    /// A preemption signal was sent to this M and has not been dealt with yet: at most one is
    /// pending per M. Set by the sender (swap); cleared by the handler when it declines, or by
    /// the hold when it ends (no signal is sent to an M on its way into or out of a hold).
    pub signal_pending: AtomicBool,
    /// Until when (nanotime) this M is not to be held in place: no preemption signal is sent
    /// to it, the handler declines one already pending, and a hold in progress leaves even
    /// though a stop is pending. Set by a stopper that could not finish and gave this M's
    /// goroutine back (`crate::stw`, "A stop that cannot finish"); read by senders, the
    /// handler and the hold. Relaxed: a stale read costs one declined signal or one more look.
    pub hold_exempt_until: AtomicU64,
    /// The g0 action requested by the goroutine switching away. Owner: this M's thread.
    after: Cell<After>,
    /// Random state for steal order.
    rand: Cell<u64>,
}

// SAFETY: the Cell/UnsafeCell fields are touched only by the M's own thread (a goroutine running
// on the M is on that thread too); the rest are atomics or a Note.
unsafe impl Sync for M {}
// SAFETY: as above.
unsafe impl Send for M {}

impl M {
    pub fn sched(&self) -> &Sched {
        // SAFETY: an M never outlives its Sched: shutdown joins every M before the Sched drops.
        unsafe { &*self.sched }
    }

    #[inline]
    pub fn p(&self) -> Option<&P> {
        let p = self.p.load(Ordering::Relaxed) as *const P;
        // SAFETY: Ps live as long as the Sched, which outlives the M.
        unsafe { p.as_ref() }
    }

    #[inline]
    pub fn curg(&self) -> Option<&'static G> {
        let g = self.curg.load(Ordering::Acquire) as *const G;
        // SAFETY: Gs are type-stable (never freed).
        unsafe { g.as_ref() }
    }

    /// Whether this M is, for now, not to be held in place (see `hold_exempt_until`).
    /// Async-signal-safe (an atomic load and the vDSO clock).
    pub fn hold_exempt(&self) -> bool {
        let until = self.hold_exempt_until.load(Ordering::Relaxed);
        until != 0 && nanotime() < until
    }

    fn fastrand(&self) -> u64 {
        let mut x = self.rand.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rand.set(x);
        x
    }
}

std::thread_local! {
    /// The M this thread is, if it is one. Set once when the thread starts; never changes.
    static CURRENT_M: Cell<*const M> = const { Cell::new(ptr::null()) };
}

/// The M of the calling thread.
///
/// Never inlined, on purpose: goroutines move between threads at switches, and the compiler
/// may assume a thread-local's address is the same throughout one function. Reading it in a
/// separate, opaque function forces a fresh read after every switch. (Go keeps `g` in a
/// register for the same reason.)
#[inline(never)]
pub(crate) fn current_m() -> Option<&'static M> {
    let m = CURRENT_M.with(|c| c.get());
    // SAFETY: the pointer was set by this thread's mstart and the M outlives its thread.
    unsafe { m.as_ref() }
}

/// The goroutine running on this thread, if any. Not inlined, see [`current_m`].
#[inline(never)]
pub(crate) fn current_g() -> Option<&'static G> {
    let m = CURRENT_M.with(|c| c.get());
    // SAFETY: as in `current_m`.
    unsafe { m.as_ref() }.and_then(|m| m.curg())
}

/// Scheduler state shared by everything in one runtime.
pub(crate) struct Sched {
    pub procs: usize,
    pub ps: Box<[P]>,
    pub lock: Mutex<Locked>,
    pub global: Injector<GPtr>,
    /// Urgent goroutines (see `crate::set_urgent`), taken before any other work; `nurgent`
    /// counts them so the check is one load when there are none.
    pub urgent: Injector<GPtr>,
    pub nurgent: AtomicUsize,
    pub npidle: AtomicUsize,
    pub nmspinning: AtomicUsize,
    /// A stop-the-world is in progress: Ps stop at their next schedule.
    pub gcwaiting: AtomicBool,
    pub stopwait: AtomicUsize,
    pub stopnote: Note,
    /// `for_each_p` state.
    pub safe_point_fn: AtomicUsize,
    pub safe_point_wait: AtomicUsize,
    pub safe_point_note: Note,
    /// One stop-the-world or ragged barrier at a time.
    pub world_sema: crate::sync::Sema,
    /// Shutdown has begun (`Runtime::shutdown`): spawns are refused, every goroutine unwinds at
    /// its next safepoint and parks that can be ended are ended. The Ms keep running until
    /// every goroutine is settled; then `shutdown` is set.
    pub draining: AtomicBool,
    /// The last phase of shutdown: the Ms leave their loops and exit.
    pub shutdown: AtomicBool,
    pub goid_gen: AtomicU64,
    pub stacks: StackPool,
    /// Every G made, listed without a lock (see the `allgs` module).
    pub allgs: crate::allgs::AllGs,
    /// Boxed: an M's address must not move when the list grows (threads hold it).
    #[allow(clippy::vec_box)]
    pub allm: Mutex<Vec<Box<M>>>,
    pub threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pub gfree: Mutex<Vec<GPtr>>,
    pub sysmon_wait: AtomicBool,
    pub sysmon_note: Note,
    pub config: crate::Config,
    /// Live goroutines (spawned, not yet exited).
    pub ngoroutines: AtomicUsize,
    /// Issue 4: the timed sleeper and timers in flight (`crate::timer`), deadlock detection
    /// (`crate::deadlock`).
    pub timers: crate::timer::SchedTimers,
    pub deadlock: crate::deadlock::Deadlock,
    /// Whether preemption requests that go unanswered are followed by a signal
    /// (`Builder::async_preempt`, `SAFEPOINT_DEBUG=asyncpreemptoff=1`).
    pub async_preempt: bool,
    /// Asynchronous preemption counters (Relaxed: statistics only): signals sent, goroutines
    /// held by the handler, signals the handler declined.
    pub preempt_signals: AtomicU64,
    pub async_preemptions: AtomicU64,
    pub async_declined: AtomicU64,
    /// Goroutines that a stop which could not finish gave back from an asynchronous hold
    /// (`crate::stw`, "A stop that cannot finish"). Relaxed: statistics only.
    pub stuck_givebacks: AtomicU64,
    /// Times sysmon moved the queue of a P held in place for long to the global queue
    /// (`sysmon::unstrand`). Relaxed: statistics only.
    pub unstranded: AtomicU64,
    /// The execution trace, if on (`crate::trace`).
    pub trace: Option<crate::trace::Trace>,
    /// The watchdog's registered checks (`crate::watchdog`).
    pub watch_checks: crate::watchdog::Checks,
}

/// The scheduler lock, held. It counts as a runtime lock of the M that took it (`M::rtlocks`),
/// so a goroutine that takes it (spawn, ready) is never held in place with it: the stopper
/// needs it to start the world again.
pub(crate) struct SchedLock<'a> {
    guard: ManuallyDrop<MutexGuard<'a, Locked>>,
    m: Option<&'static M>,
}

impl core::ops::Deref for SchedLock<'_> {
    type Target = Locked;
    fn deref(&self) -> &Locked {
        &self.guard
    }
}

impl core::ops::DerefMut for SchedLock<'_> {
    fn deref_mut(&mut self) -> &mut Locked {
        &mut self.guard
    }
}

impl Drop for SchedLock<'_> {
    fn drop(&mut self) {
        // SAFETY: dropped once, here; the field is never used again.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
        // Only after the mutex is released does the M leave its critical section.
        crate::preempt::rtlock_exit(self.m);
    }
}

/// What the scheduler lock protects.
pub(crate) struct Locked {
    pub pidle: Vec<usize>,
    pub midle: Vec<*const M>,
    pub mcount: usize,
}

// SAFETY: `midle` holds pointers to Ms owned by `allm`, which outlive the lock's users.
unsafe impl Send for Locked {}

const MAX_LOCAL_GFREE: usize = 64;
/// Dead Gs a P takes from the runtime's list at once when its own is empty (Go's 32).
const GFREE_BATCH: usize = 32;

/// True (after a warning, once per process) when `malloc` is not the C library's: the
/// preemption signal could then hold a goroutine inside it, holding its lock, while the stop or
/// scan that asked for the hold allocates, so goroutines are not held in place (see "Async
/// preemption" in the crate essay).
fn malloc_outside_libc_warning() -> bool {
    let outside = safepoint_arch::preempt::malloc_outside_libc();
    if outside {
        crate::env::warn_once(
            "async preemption is off: malloc is not the C library's (a sanitizer, or an \
             allocator linked in or preloaded), and a goroutine held inside it would keep its \
             lock from the runtime",
        );
    }
    outside
}

impl Sched {
    pub fn new(config: crate::Config, async_preempt: bool) -> Result<Arc<Sched>, crate::Error> {
        let trace_file = config.trace.clone();
        let procs = config.procs;
        let stacks =
            StackPool::new(config.stack_size, config.stack_cache).map_err(crate::Error::Stack)?;
        let deadlock_detection = config.deadlock_detection; // issue 4
        signal::install();
        install_stack_hooks()?;
        crate::preempt::install()?;
        let async_preempt = async_preempt && !malloc_outside_libc_warning();
        let sched = Arc::new(Sched {
            procs,
            ps: (0..procs).map(P::new).collect(),
            lock: Mutex::new(Locked {
                pidle: (0..procs).rev().collect(),
                midle: Vec::new(),
                mcount: 0,
            }),
            global: Injector::new(),
            urgent: Injector::new(),
            nurgent: AtomicUsize::new(0),
            npidle: AtomicUsize::new(procs),
            nmspinning: AtomicUsize::new(0),
            gcwaiting: AtomicBool::new(false),
            stopwait: AtomicUsize::new(0),
            stopnote: Note::new(),
            safe_point_fn: AtomicUsize::new(0),
            safe_point_wait: AtomicUsize::new(0),
            safe_point_note: Note::new(),
            world_sema: crate::sync::Sema::new(1),
            draining: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            goid_gen: AtomicU64::new(0),
            stacks,
            allgs: crate::allgs::AllGs::new(),
            allm: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            gfree: Mutex::new(Vec::new()),
            sysmon_wait: AtomicBool::new(false),
            sysmon_note: Note::new(),
            config,
            ngoroutines: AtomicUsize::new(0),
            timers: crate::timer::SchedTimers::new(),
            deadlock: crate::deadlock::Deadlock::new(deadlock_detection),
            async_preempt,
            preempt_signals: AtomicU64::new(0),
            async_preemptions: AtomicU64::new(0),
            async_declined: AtomicU64::new(0),
            stuck_givebacks: AtomicU64::new(0),
            unstranded: AtomicU64::new(0),
            trace: trace_file.map(crate::trace::Trace::new),
            watch_checks: Default::default(),
        });
        Ok(sched)
    }

    /// Takes the scheduler lock. While it is held the M is in a runtime critical section for
    /// the preemption handler (see [`SchedLock`]).
    pub fn locked(&self) -> SchedLock<'_> {
        let m = crate::preempt::rtlock_enter();
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        SchedLock { guard: ManuallyDrop::new(guard), m }
    }

    fn p_of(&self, id: usize) -> &P {
        &self.ps[id]
    }

    // ---- idle P list (under the lock) ----

    pub fn pidleput(&self, l: &mut Locked, p: &P) {
        debug_assert!(p.runq_empty() || self.shutdown.load(Ordering::Relaxed));
        p.m.store(0, Ordering::Relaxed);
        p.set_status(PStatus::Idle);
        l.pidle.push(p.id);
        self.npidle.fetch_add(1, Ordering::SeqCst);
    }

    pub fn pidleget(&self, l: &mut Locked) -> Option<&P> {
        let id = l.pidle.pop()?;
        self.npidle.fetch_sub(1, Ordering::SeqCst);
        if self.sysmon_wait.load(Ordering::Relaxed)
            && self.sysmon_wait.swap(false, Ordering::AcqRel)
        {
            self.sysmon_note.wakeup();
        }
        Some(self.p_of(id))
    }

    // ---- Ms ----

    /// Gives `p` (or an idle P) to an idle or new M. `spinning`: the M starts spinning (the
    /// caller already counted it in `nmspinning`).
    pub fn startm(self: &Sched, p: Option<&P>, spinning: bool) {
        let mut l = self.locked();
        let p = match p {
            Some(p) => p,
            None => match self.pidleget(&mut l) {
                Some(p) => p,
                None => {
                    drop(l);
                    if spinning {
                        self.nmspinning.fetch_sub(1, Ordering::SeqCst);
                    }
                    return;
                }
            },
        };
        if self.shutdown.load(Ordering::Relaxed) {
            self.pidleput(&mut l, p);
            drop(l);
            if spinning {
                self.nmspinning.fetch_sub(1, Ordering::SeqCst);
            }
            return;
        }
        if let Some(m) = l.midle.pop() {
            drop(l);
            // SAFETY: idle Ms are owned by `allm` and live until shutdown.
            let m = unsafe { &*m };
            m.spinning.store(spinning, Ordering::Relaxed);
            // Release: the M acquires the P with the Acquire load in stopm.
            m.nextp.store(p as *const P as usize, Ordering::Release);
            m.park.wakeup();
            return;
        }
        l.mcount += 1;
        drop(l);
        self.newm(p, spinning);
    }

    fn newm(&self, p: &P, spinning: bool) {
        let mut allm = self.allm.lock().unwrap_or_else(|e| e.into_inner());
        let id = allm.len();
        let m = Box::new(M {
            id,
            sched: self as *const Sched,
            g0: UnsafeCell::new(Context::default()),
            curg: AtomicUsize::new(0),
            p: AtomicUsize::new(0),
            nextp: AtomicUsize::new(p as *const P as usize),
            spinning: AtomicBool::new(spinning),
            locks: AtomicUsize::new(0),
            rtlocks: AtomicU32::new(0),
            park: Note::new(),
            hold_note: Note::new(),
            tid: AtomicI32::new(0),
            signal_pending: AtomicBool::new(false),
            hold_exempt_until: AtomicU64::new(0),
            after: Cell::new(After::Nothing),
            rand: Cell::new(
                0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D),
            ),
        });
        let mp = &*m as *const M as usize;
        allm.push(m);
        drop(allm);
        let t = std::thread::Builder::new().name(format!("safepoint-m{id}")).spawn(move || {
            // SAFETY: the M is owned by `allm`, which is only cleared after this thread is
            // joined.
            let m = unsafe { &*(mp as *const M) };
            mstart(m)
        });
        match t {
            Ok(t) => self.threads.lock().unwrap_or_else(|e| e.into_inner()).push(t),
            Err(e) => crate::throw!("cannot start an M thread: {}", e),
        }
    }

    /// Wakes a spinning M if there is an idle P and nobody is spinning.
    pub fn wakep(&self) {
        fence(Ordering::SeqCst);
        if self.npidle.load(Ordering::SeqCst) == 0 {
            return;
        }
        if self.nmspinning.load(Ordering::SeqCst) != 0
            || self.nmspinning.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_err()
        {
            return;
        }
        self.startm(None, true);
    }

    /// Hands a P whose M is leaving it (blocking call retaken, stop) to whoever should have it.
    pub fn handoffp(&self, p: &P) {
        // Racy reads, as hints: the P is ours, and the locked section below decides the rest.
        if !p.runq_empty() || self.shared_work() {
            self.startm(Some(p), false);
            return;
        }
        if self.nmspinning.load(Ordering::SeqCst) + self.npidle.load(Ordering::SeqCst) == 0
            && self.nmspinning.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_ok()
        {
            self.startm(Some(p), true);
            return;
        }
        let mut l = self.locked();
        // The P is Idle and on no list: nobody but us answers a stop or a barrier for it. So
        // both flags are looked at again under the lock each time it was dropped, until the
        // P is on the idle list (where a stop or a barrier that begins later finds it). A
        // barrier that began while the lock was dropped to run the last one's function for
        // this P (its caller done with the last, on to the next) set this P's flag and took
        // the idle list without it: a P put idle without a second look owed that barrier its
        // function with nobody to run it, and the barrier waited for ever (the soak's rare
        // "for_each_p has waited 1000 ms"; likewise a stop, for a P it never counted).
        loop {
            if self.gcwaiting.load(Ordering::SeqCst) {
                p.m.store(0, Ordering::Relaxed);
                p.set_status(PStatus::GcStop);
                drop(l);
                self.stopwait_done();
                return;
            }
            // SeqCst: as in `schedule`'s give-up, the flag is set under this lock.
            if !p.run_safe_point_fn.load(Ordering::SeqCst) {
                break;
            }
            drop(l);
            crate::stw::run_safe_point_fn(self, p);
            #[cfg(all(test, not(loom)))]
            tests::after_handoff_safe_point(p);
            l = self.locked();
        }
        if self.shared_work() {
            drop(l);
            self.startm(Some(p), false);
            return;
        }
        self.pidleput(&mut l, p);
    }

    /// Every G ever made (a snapshot, read without a lock: see the `allgs` module).
    pub fn all_gs(&self) -> Vec<GPtr> {
        self.allgs.to_vec()
    }

    /// How many Gs and Ms exist, as [`Sched::all_gs`] takes the lists.
    pub fn counts(&self) -> (usize, usize) {
        crate::preempt::rt_section(|| {
            (self.allgs.len(), self.allm.lock().unwrap_or_else(|e| e.into_inner()).len())
        })
    }

    /// Whether a goroutine waits on a queue that no P owns: the global queue or the urgent
    /// one. Every path on which an M gives up its P checks this (see "No goroutine left
    /// behind" at `schedule`). SeqCst: the urgent count is raised with SeqCst after the push
    /// (`enqueue_locked`, `requeue`), and the caller has fenced after publishing its idle P.
    pub fn shared_work(&self) -> bool {
        !self.global.is_empty() || self.nurgent.load(Ordering::SeqCst) > 0
    }

    pub fn stopwait_done(&self) {
        if self.stopwait.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.stopnote.wakeup();
        }
    }

    // ---- goroutines ----

    /// Makes a goroutine running `body`, queued on the caller's P (runnext) or globally.
    pub fn spawn(self: &Arc<Sched>, body: Body) -> Result<&'static G, crate::Error> {
        // The free lists, the G list and the stack pool are std mutexes: a runtime critical
        // section for the preemption handler.
        crate::preempt::rt_section(|| self.spawn_locked(body))
    }

    fn spawn_locked(self: &Arc<Sched>, body: Body) -> Result<&'static G, crate::Error> {
        // SeqCst: pairs with the store in `Runtime::shutdown`, which then looks at every G: a
        // goroutine spawned after it looked was refused here.
        if self.draining.load(Ordering::SeqCst) {
            return Err(crate::Error::Shutdown);
        }
        let m = current_m().filter(|m| ptr::eq(m.sched, Arc::as_ptr(self)));
        let p = m.and_then(|m| m.p());
        // A dead G from this P, else from the runtime (a batch of up to `GFREE_BATCH` moved
        // to the P at once, as Go's gfget does, so a burst of spawns takes the runtime's lock
        // once per batch), else a new one.
        let g = match p {
            Some(p) => {
                // SAFETY: we are the M owning p.
                let free = unsafe { &mut *p.gfree.get() };
                if free.is_empty() {
                    let mut global = self.gfree.lock().unwrap_or_else(|e| e.into_inner());
                    let at = global.len().saturating_sub(GFREE_BATCH);
                    free.extend(global.drain(at..));
                }
                free.pop()
            }
            None => self.gfree.lock().unwrap_or_else(|e| e.into_inner()).pop(),
        }
        .map(|g| g.get());
        let g = match g {
            Some(g) => g,
            None => {
                let g = G::adopt(self);
                self.allgs.push(g);
                g
            }
        };
        let id = self.goid_gen.fetch_add(1, Ordering::Relaxed) + 1;
        // SAFETY: g is Idle or Dead and on no list, so we own it; g_entry is our entry.
        if let Err(e) = unsafe { g.prepare(id, body, &self.stacks, crate::proc::g_entry) } {
            self.gfree.lock().unwrap_or_else(|e| e.into_inner()).push(GPtr::from(g));
            return Err(crate::Error::Stack(e));
        }
        self.ngoroutines.fetch_add(1, Ordering::Relaxed);
        g.status.store_private(Status::Runnable);
        self.enqueue(GPtr::from(g), true);
        Ok(g)
    }

    /// Queues a runnable goroutine: on the caller's P if it has one of this runtime, else
    /// globally; then makes sure someone will run it.
    pub fn enqueue(&self, g: GPtr, next: bool) {
        crate::preempt::rt_section(|| self.enqueue_locked(g, next))
    }

    fn enqueue_locked(&self, g: GPtr, next: bool) {
        stamp_runnable(g.get());
        // Relaxed: the goroutine set its own flag before it parked; the park/ready hand-off
        // orders that store before this load.
        if g.get().urgent.load(Ordering::Relaxed) {
            self.urgent.push(g);
            // SeqCst: pairs with the load in `find_work` (a P that misses the count misses
            // the queue only until its next schedule, which the preemption below brings).
            self.nurgent.fetch_add(1, Ordering::SeqCst);
            self.wakep();
            // No P idle to take it: end one running goroutine's slice so a P looks now.
            if self.npidle.load(Ordering::SeqCst) == 0
                && let Some(p) = self.ps.iter().find(|p| p.status() == PStatus::Running)
            {
                self.preemptone(p);
            }
            return;
        }
        let m = current_m().filter(|m| ptr::eq(m.sched, self));
        // An M's `p` is set only while it owns that P (a blocking call clears it), so a local
        // push is to our own queue.
        match m.and_then(|m| m.p()) {
            // SAFETY: we are the M owning p.
            Some(p) => unsafe { p.put(g, next) },
            None => self.global.push(g),
        }
        self.wakep();
    }

    /// Moves every goroutine queued on `p` (its `runnext` too) to the global queue (or, if
    /// urgent, to the urgent queue), from a thread that does not own `p`: sysmon, for a P whose
    /// M has been holding its goroutine in place for long (see `sysmon::unstrand`). True if
    /// it moved any.
    pub(crate) fn unstrand(&self, p: &P) -> bool {
        let mut moved = false;
        // Oldest first, so that they keep their order: `runnext` is the newest.
        loop {
            match p.stealer.steal() {
                Steal::Success(g) => {
                    self.enqueue(g, false);
                    moved = true;
                }
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
        if let Some(g) = p.steal_runnext() {
            self.enqueue(g, false);
            moved = true;
        }
        moved
    }

    /// Frees a dead goroutine into the P's cache (or the runtime's).
    fn gfput(&self, p: &P, g: GPtr) {
        // SAFETY: we are the M owning p.
        let free = unsafe { &mut *p.gfree.get() };
        free.push(g);
        if free.len() > MAX_LOCAL_GFREE {
            self.gfput_global(free.drain(..MAX_LOCAL_GFREE / 2));
        }
    }

    /// Moves dead goroutines to the runtime's free list. The list keeps the stacks of at most
    /// `stack_cache` of its Gs (`Builder::stack_cache`): the Gs past that give theirs back to
    /// the OS (a later spawn on such a G maps a new one), so a burst of goroutines does not
    /// keep its stacks' memory for the runtime's life. The stacks are unmapped after the
    /// list's lock is dropped.
    pub(crate) fn gfput_global(&self, gs: impl IntoIterator<Item = GPtr>) {
        let mut unmap = Vec::new();
        {
            let mut global = self.gfree.lock().unwrap_or_else(|e| e.into_inner());
            for g in gs {
                if global.len() >= self.config.stack_cache {
                    // SAFETY: a dead G on no list but this one being filled, owned by us;
                    // nothing runs on its stack (its M has switched off it to free it).
                    unmap.extend(unsafe { g.get().take_stack() });
                }
                global.push(g);
            }
        }
        drop(unmap);
    }

    // ---- preemption ----

    /// Asks the goroutine running on `p` to stop at its next safepoint. Racy by design: a
    /// request that reaches a goroutine that has moved on is a spurious yield.
    pub fn preemptone(&self, p: &P) -> bool {
        self.preempt_m_of(p.m.load(Ordering::Acquire))
    }

    /// Asks the goroutine in `p`'s blocking call (if it is still in it) to give up the CPU
    /// when the call returns: the return is a safepoint (`proc::blocking` polls). Racy as
    /// `preemptone`.
    pub fn preempt_in_syscall(&self, p: &P) -> bool {
        self.preempt_m_of(p.syscall_m.load(Ordering::Acquire))
    }

    /// Asks the goroutine running on the M at `m` (an `M` address, or 0) to stop at its next
    /// safepoint.
    fn preempt_m_of(&self, m: usize) -> bool {
        let m = m as *const M;
        // SAFETY: Ms live until the runtime shuts down.
        let Some(m) = (unsafe { m.as_ref() }) else { return false };
        let Some(g) = m.curg() else { return false };
        g.request_preempt();
        true
    }

    pub fn preemptall(&self) {
        // Dekker with `execute`: the caller raised its flag (a stop, a ragged barrier) before
        // this fence; a goroutine published as current after it sees the flag there.
        fence(Ordering::SeqCst);
        // Not the caller itself: it is the stopper (or the barrier's driver), at a safepoint
        // by definition, and a request left pending on it would end its next time slice for
        // nothing (behind every runnable goroutine of its P).
        let me = current_g();
        for p in self.ps.iter() {
            if p.status() != PStatus::Running {
                continue;
            }
            let m = p.m.load(Ordering::Acquire) as *const M;
            // SAFETY: Ms live until the runtime shuts down.
            let cur = unsafe { m.as_ref() }.and_then(|m| m.curg());
            if cur.is_some() && cur.map(|g| g as *const G) == me.map(|g| g as *const G) {
                continue;
            }
            self.preemptone(p);
        }
    }

    /// Follows up unanswered requests with the preemption signal: signals the M of every
    /// running P (but `except`, the caller's) whose goroutine has a request pending (and, if
    /// `prone_only`, whose goroutine needed the signal last time: see `G::async_prone`). The
    /// handler decides whether it may hold the goroutine in place (see `crate::preempt`).
    pub fn preemptall_async(&self, except: Option<&P>, prone_only: bool) {
        if !self.async_preempt {
            return;
        }
        for p in self.ps.iter() {
            if except.is_some_and(|e| ptr::eq(e, p)) || p.status() != PStatus::Running {
                continue;
            }
            let m = p.m.load(Ordering::Acquire) as *const M;
            // SAFETY: Ms live until the runtime shuts down.
            let Some(m) = (unsafe { m.as_ref() }) else { continue };
            if m.curg().is_some_and(|g| {
                g.preempt.load(Ordering::Relaxed)
                    && (!prone_only || g.async_prone.load(Ordering::Relaxed))
            }) {
                self.signal_m(m);
            }
        }
    }

    /// Sends the preemption signal to `m` unless one is pending already.
    pub fn signal_m(&self, m: &M) {
        if !self.async_preempt {
            return;
        }
        // Acquire: pairs with the Release in `mstart`.
        let tid = m.tid.load(Ordering::Acquire);
        if tid == 0 || m.hold_exempt() {
            return;
        }
        // AcqRel: one sender per pending signal; the handler clears it (Release) before it
        // looks at the request flags, so a request made after that gets a new signal.
        if m.signal_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        if safepoint_arch::preempt::signal_thread(tid) {
            self.preempt_signals.fetch_add(1, Ordering::Relaxed);
        } else {
            m.signal_pending.store(false, Ordering::Release);
        }
    }
}

/// Points the managed stacks' hooks at this scheduler (process-wide, once; every runtime uses
/// the same functions).
fn install_stack_hooks() -> Result<(), crate::Error> {
    let ours = safepoint_stackmap::Hooks {
        preempt: crate::proc::stack_preempt,
        copy_begin: crate::proc::copy_begin,
        copy_end: crate::proc::copy_end,
    };
    match safepoint_stackmap::set_hooks(ours) {
        Ok(()) => Ok(()),
        Err(safepoint_stackmap::HooksAlreadySet(h))
            if core::ptr::fn_addr_eq(h.preempt, ours.preempt)
                && core::ptr::fn_addr_eq(h.copy_begin, ours.copy_begin)
                && core::ptr::fn_addr_eq(h.copy_end, ours.copy_end) =>
        {
            Ok(())
        }
        Err(_) => Err(crate::Error::Config(
            "the managed-stack hooks were set by someone else: preemption at frame pushes would \
             not reach this scheduler"
                .into(),
        )),
    }
}

/// An M's thread: the scheduling loop on g0.
fn mstart(m: &'static M) {
    CURRENT_M.with(|c| c.set(m));
    signal::ensure_altstack();
    // Release: pairs with the Acquire in `Sched::signal_m`.
    m.tid.store(safepoint_arch::preempt::current_tid(), Ordering::Release);
    let sched = m.sched();
    // The P handed over by whoever started us.
    let p = m.nextp.swap(0, Ordering::Acquire) as *const P;
    // SAFETY: Ps live as long as the Sched.
    if let Some(p) = unsafe { p.as_ref() } {
        acquirep(m, p);
    }
    while let Some((g, inherit)) = schedule(m) {
        if execute(m, g, inherit) {
            after_switch(m, g);
        }
    }
    // Shutdown: give back whatever P we hold so the count stays right.
    if let Some(p) = m.p() {
        releasep(m);
        let mut l = sched.locked();
        // A goroutine still running on another M may be inside a ragged barrier or a stop
        // (a collector's cycle): this P answers it as any P that goes idle does, or that
        // goroutine waits for it for good, and shutdown, which joins its M, with it. Under the
        // scheduler lock, which `for_each_p` and `stop_the_world` hold while they set their
        // flags and take the idle Ps: either they see this P idle, or we see their flags.
        if p.run_safe_point_fn.load(Ordering::SeqCst) {
            crate::stw::run_safe_point_fn(sched, p);
        }
        if sched.gcwaiting.load(Ordering::SeqCst) {
            p.set_status(PStatus::GcStop);
            sched.stopwait_done();
        } else {
            sched.pidleput(&mut l, p);
        }
    }
}

pub(crate) fn acquirep(m: &M, p: &P) {
    debug_assert_eq!(m.p.load(Ordering::Relaxed), 0);
    m.p.store(p as *const P as usize, Ordering::Relaxed);
    // Release: pairs with the Acquire in preemptone.
    p.m.store(m as *const M as usize, Ordering::Release);
    p.set_status(PStatus::Running);
}

pub(crate) fn releasep(m: &M) -> &P {
    let p = m.p().expect("releasep without a P");
    m.p.store(0, Ordering::Relaxed);
    p.m.store(0, Ordering::Release);
    p
}

/// How long an M stopped for a stop-the-world spins for the restart before sleeping in the
/// kernel: stops are short, and a futex wake would add tens of microseconds to every restart
/// and to the next stop (which must wait for this M to take its P back).
const GCSTOP_SPIN_NS: u64 = 100_000;

/// Parks this M until someone hands it a P, spinning first for up to `spin_ns`. Returns false
/// at shutdown.
fn stopm(m: &M, spin_ns: u64) -> bool {
    stopm_until(m, spin_ns, None)
}

/// `stopm`, sleeping no later than `deadline` (nanotime) if given. Returns true without a P
/// when the deadline passed or the M was woken without one (issue 4: a timer armed earlier than
/// the deadline pokes the timed sleeper; such a wake-up can also arrive late, after the M has
/// moved on, and must be harmless).
fn stopm_until(m: &M, spin_ns: u64, deadline: Option<u64>) -> bool {
    let sched = m.sched();
    debug_assert!(m.p().is_none());
    {
        let mut l = sched.locked();
        if sched.shutdown.load(Ordering::SeqCst) {
            return false;
        }
        l.midle.push(m as *const M);
    }
    if spin_ns > 0 {
        let deadline = nanotime() + spin_ns;
        while !m.park.is_woken() && nanotime() < deadline {
            for _ in 0..64 {
                safepoint_arch::cpu_relax();
            }
        }
    }
    match deadline {
        None => m.park.sleep(),
        Some(d) => {
            m.park.sleep_timeout(d.saturating_sub(nanotime()));
        }
    }
    loop {
        let p = m.nextp.swap(0, Ordering::Acquire) as *const P;
        // SAFETY: Ps live as long as the Sched.
        if let Some(p) = unsafe { p.as_ref() } {
            m.park.clear();
            acquirep(m, p);
            return true;
        }
        // No P: a timeout, a timer poke or shutdown. Leave the idle list, unless whoever took
        // us off it is about to hand us a P (startm stores `nextp` right after popping us).
        let mut l = sched.locked();
        if let Some(i) = l.midle.iter().position(|&x| ptr::eq(x, m)) {
            l.midle.swap_remove(i);
            drop(l);
            m.park.clear();
            return !sched.shutdown.load(Ordering::SeqCst);
        }
        drop(l);
        if sched.shutdown.load(Ordering::SeqCst) {
            return false;
        }
        safepoint_arch::cpu_relax();
    }
}

/// Issue 4: parks this M (holding no P) until it is handed one — or, as the timed sleeper
/// (`crate::timer`), until the next timer deadline, then takes an idle P and runs the due
/// timers. Returns false at shutdown.
fn idle_sleep(m: &M) -> bool {
    let sched = m.sched();
    let deadline = crate::timer::idle_deadline(sched, m);
    let ok = stopm_until(m, 0, deadline);
    if deadline.is_some() {
        crate::timer::idle_done(sched, m);
        if ok && m.p().is_none() && crate::timer::due(sched) {
            let p = sched.pidleget(&mut sched.locked());
            if let Some(p) = p {
                acquirep(m, p);
                crate::timer::check_all(sched);
            }
        }
    }
    ok
}

/// Stops this M's P for a pending stop-the-world, then parks the M.
fn gcstopm(m: &M) {
    let sched = m.sched();
    if m.spinning.load(Ordering::Relaxed) {
        m.spinning.store(false, Ordering::Relaxed);
        sched.nmspinning.fetch_sub(1, Ordering::SeqCst);
    }
    let p = releasep(m);
    p.set_status(PStatus::GcStop);
    sched.stopwait_done();
}

/// How long an M with nothing to do keeps looking before it gives up its P (a futex wake
/// costs more than this on these machines).
const SPIN_NS: u64 = 20_000;

/// `pause` instructions between two looks of a spinning M at the other Ps.
const SPIN_PAUSES: u32 = 16;

/// How long a spinning M waits before it takes another P's `runnext` (Go waits 3 µs too: a
/// channel hand-off takes well under that).
const RUNNEXT_GRACE_NS: u64 = 3_000;

/// Finds the next goroutine for `m` to run (and whether it inherits the time slice), or None
/// at shutdown.
fn schedule(m: &M) -> Option<(&'static G, bool)> {
    let sched = m.sched();
    loop {
        if sched.shutdown.load(Ordering::Relaxed) {
            return None;
        }
        let Some(p) = m.p() else {
            if !idle_sleep(m) {
                return None;
            }
            continue;
        };
        if sched.gcwaiting.load(Ordering::SeqCst) {
            gcstopm(m);
            if !stopm(m, GCSTOP_SPIN_NS) {
                return None;
            }
            continue;
        }
        if p.run_safe_point_fn.load(Ordering::Acquire) {
            crate::stw::run_safe_point_fn(sched, p);
        }
        // Issue 4: this P's due timers first (they make goroutines runnable here).
        crate::timer::check(sched, p);
        if let Some(g) = find_work(m, p, false, false) {
            resetspinning(m);
            return Some(g);
        }
        // Steal, spinning, if not too many Ms already are.
        let busy = sched.procs - sched.npidle.load(Ordering::SeqCst);
        if !m.spinning.load(Ordering::Relaxed)
            && 2 * sched.nmspinning.load(Ordering::SeqCst) < busy.max(1)
        {
            m.spinning.store(true, Ordering::Relaxed);
            sched.nmspinning.fetch_add(1, Ordering::SeqCst);
        }
        if m.spinning.load(Ordering::Relaxed) {
            // Each round looks at every P's queue; between rounds it pauses, so that the
            // spinner's reads do not keep pulling the busy Ps' queue lines away from them,
            // and it reads the clock only every few rounds (a vDSO call is not free either).
            let start = nanotime();
            let deadline = start + SPIN_NS;
            let mut now = start;
            let mut round = 0u32;
            // Whether a look has taken runnexts yet. The spin ends only after one has: on a
            // slow machine (an emulator) the first clock reading can already be past the
            // deadline, and a spinner that gave up before its first runnext look would find the
            // runnext again after giving up its P, take the P back and spin the same way, for
            // as long as the goroutine in runnext waited.
            let mut runnext_looked = false;
            loop {
                // Issue 4: a spinning M runs any P's due timers.
                crate::timer::check_all(sched);
                let take_runnext = now >= start + RUNNEXT_GRACE_NS;
                runnext_looked |= take_runnext;
                if let Some(g) = find_work(m, p, true, take_runnext) {
                    resetspinning(m);
                    return Some(g);
                }
                round += 1;
                if round.is_multiple_of(4) {
                    now = nanotime();
                }
                if sched.gcwaiting.load(Ordering::Relaxed)
                    || p.run_safe_point_fn.load(Ordering::Relaxed)
                    || sched.shutdown.load(Ordering::Relaxed)
                    || (runnext_looked && now >= deadline)
                {
                    break;
                }
                for _ in 0..SPIN_PAUSES {
                    safepoint_arch::cpu_relax();
                }
            }
        }
        // Nothing: give up the P.
        //
        // No goroutine left behind. A goroutine becomes runnable in one of these ways: on a
        // P's own queue (spawn, ready and yield by that P's M; a steal), which only that P's M
        // gives up, after this check; on the global queue (an M without a P: a blocking call's
        // return, a ready from outside the runtime, a preempted urgent goroutine's P moving
        // its queue); or on the urgent queue (`enqueue` and `requeue` of an urgent goroutine).
        // Whoever queues on a shared queue then calls `wakep`, which fences and wakes an M if a
        // P is idle. So every path that gives a P up (here, `handoffp`, an M stopping for a
        // stop of the world keeps its P until the restart looks at both queues) looks at both
        // shared queues after publishing the P idle and fencing: either the queuer sees the
        // idle P, or we see its goroutine. Leaving the urgent queue out of this look lost a
        // collector's driver with one P (issue 18); `loom_urgent_vs_last_idle_m` checks it.
        let mut l = sched.locked();
        if sched.gcwaiting.load(Ordering::SeqCst)
            || p.run_safe_point_fn.load(Ordering::SeqCst)
            || sched.shared_work()
            || !p.runq_empty()
        {
            continue;
        }
        releasep(m);
        sched.pidleput(&mut l, p);
        drop(l);
        let was_spinning = m.spinning.swap(false, Ordering::Relaxed);
        if was_spinning {
            sched.nmspinning.fetch_sub(1, Ordering::SeqCst);
        }
        // Dekker with `wakep`: we published the idle P (and dropped our spinning count) with
        // SeqCst; a readier pushes work then reads npidle/nmspinning with SeqCst. Either it sees
        // us idle and wakes someone, or we see its work here.
        fence(Ordering::SeqCst);
        let work =
            sched.shared_work() || (was_spinning && sched.ps.iter().any(|q| !q.runq_empty()));
        if work {
            let mut l = sched.locked();
            if let Some(p) = sched.pidleget(&mut l) {
                drop(l);
                acquirep(m, p);
                if was_spinning {
                    m.spinning.store(true, Ordering::Relaxed);
                    sched.nmspinning.fetch_add(1, Ordering::SeqCst);
                }
                continue;
            }
        }
        // Issue 4: if this was the last busy P, someone outside may be waiting on a deadlock.
        crate::deadlock::check(sched);
        if !idle_sleep(m) {
            return None;
        }
    }
}

/// One look for work: local queue, global queue (first, every 61st tick, for fairness), and,
/// if `steal`, the other Ps.
fn find_work(m: &M, p: &P, steal: bool, take_runnext: bool) -> Option<(&'static G, bool)> {
    let sched = m.sched();
    // SeqCst: pairs with the increment in `enqueue`.
    if sched.nurgent.load(Ordering::SeqCst) > 0 {
        loop {
            match sched.urgent.steal() {
                Steal::Success(g) => {
                    sched.nurgent.fetch_sub(1, Ordering::SeqCst);
                    return Some((g.get(), false));
                }
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
    }
    let tick = p.schedtick.load(Ordering::Relaxed);
    if tick.is_multiple_of(61)
        && let Some(g) = steal_global(sched, p)
    {
        return Some((g.get(), false));
    }
    // SAFETY: m owns p.
    if let Some((g, inherit)) = unsafe { p.get() } {
        return Some((g.get(), inherit));
    }
    if let Some(g) = steal_global(sched, p) {
        return Some((g.get(), false));
    }
    if !steal {
        return None;
    }
    let n = sched.procs;
    let start = (m.fastrand() % n as u64) as usize;
    for i in 0..n {
        let victim = &sched.ps[(start + i) % n];
        if ptr::eq(victim, p) {
            continue;
        }
        // SAFETY: m owns p, so it may push into p's queue.
        let dest = unsafe { p.runq() };
        loop {
            match victim.stealer.steal_batch_and_pop(dest) {
                Steal::Success(g) => return Some((g.get(), false)),
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
        // Take the victim's runnext too, once we have spun a while: its M is busy running
        // something else. Not at once: the goroutine in runnext was just readied by the one
        // running there, which is usually about to block and run it (a channel hand-off), and
        // stealing it at once would split a producer-consumer pair across CPUs.
        if take_runnext
            && matches!(victim.status(), PStatus::Running | PStatus::Syscall | PStatus::Held)
            && let Some(g) = victim.steal_runnext()
        {
            return Some((g.get(), false));
        }
    }
    None
}

fn steal_global(sched: &Sched, p: &P) -> Option<GPtr> {
    // SAFETY: the caller's M owns p.
    let dest = unsafe { p.runq() };
    loop {
        match sched.global.steal_batch_and_pop(dest) {
            Steal::Success(g) => return Some(g),
            Steal::Retry => continue,
            Steal::Empty => return None,
        }
    }
}

/// An M that was spinning found work: stop counting it, and if it was the last spinner, wake
/// another so that one keeps looking while there may be more work.
fn resetspinning(m: &M) {
    if m.spinning.swap(false, Ordering::Relaxed) {
        let sched = m.sched();
        if sched.nmspinning.fetch_sub(1, Ordering::SeqCst) == 1 {
            sched.wakep();
        }
    }
}

/// How long `execute` waits for a scanner to let go of a goroutine it took from a queue
/// (in `status::backoff` steps: 64 spins, then OS yields) before it puts it back.
const HELD_SPINS: u32 = 256;

/// Switches to `g` and back. Unless `inherit`, `g` starts a new time slice. False if it did
/// not: `g` is held (`Runnable|SCAN`) for longer than a scan takes, and it is put back at the
/// end of this P's queue.
///
/// A scan holds a queued goroutine for microseconds, and waiting for it is cheaper than
/// anything else; but [`crate::suspend_g`] may hold one as long as its caller likes, and that
/// caller may be queued on this very P (its time slice ended while it held): waiting for good
/// would stop the P, and with one P the runtime.
fn execute(m: &M, g: &'static G, inherit: bool) -> bool {
    let p = m.p().expect("execute without a P");
    let mut spins = 0u32;
    loop {
        match g.status.try_cas(Status::Runnable as u32, Status::Running as u32, None) {
            crate::status::Cas::Ok => break,
            crate::status::Cas::Scanning if spins < HELD_SPINS => {
                crate::status::backoff(&mut spins)
            }
            crate::status::Cas::Scanning => {
                // SAFETY: this M owns p. Still `Runnable` (held): a queue is where it belongs,
                // and its holder's release does not ready it (only one that it stopped).
                unsafe { p.put(GPtr::from(g), false) };
                return false;
            }
            crate::status::Cas::Other(w) => {
                crate::throw!("bad goroutine status transition Runnable -> Running: found {}", w)
            }
        }
    }
    // A request pending from its last stint was for that stint: a stop, a barrier and a
    // suspension check their own flags at schedule time and re-send their requests until
    // answered; sysmon re-sends at the next slice. Cleared before the goroutine is published
    // as this M's current one: a request sent to it from then on (a stop that began since
    // `schedule` looked at its flags) must not be wiped out, or it waits for the requester's
    // next retry (100 us for a stop). Plain stores suffice: a request racing with them is at
    // worst answered one retry later.
    g.preempt.store(false, Ordering::Relaxed);
    g.guard().unpoison();
    g.m.store(m as *const M as usize, Ordering::Release);
    m.curg.store(g as *const G as usize, Ordering::Release);
    // Dekker with stop_the_world and for_each_p, which raise their flag, fence (in
    // `preemptall`), then ask each P's current goroutine to stop: either they find this
    // goroutine current and ask it, or we see their flag here and ask it ourselves. Without
    // this, a stop that began after `schedule` looked at the flags asked the goroutine that
    // had just left this P, and waited for its next retry (100 us) to ask this one: on churn
    // 1000 (2 Ps, a quiet machine) one termination stop in ten took 130-180 us that way. The
    // fence costs every goroutine switch a few nanoseconds (yield: about 40 -> 42 ns).
    fence(Ordering::SeqCst);
    if m.sched().gcwaiting.load(Ordering::Relaxed) || p.run_safe_point_fn.load(Ordering::Relaxed) {
        g.request_preempt();
    }
    if !inherit {
        // Only the owning M writes schedtick (sysmon reads it): no read-modify-write needed.
        p.schedtick.store(p.schedtick.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    // Scheduling latency, for the sampled waits (see `G::track_latency`). Relaxed: see there.
    let since = g.runnable_since.load(Ordering::Relaxed);
    if since != 0 {
        g.runnable_since.store(0, Ordering::Relaxed);
        let ns = safepoint_arch::nanotime().saturating_sub(since).max(1);
        let b = &p.latency[(63 - ns.leading_zeros() as usize).min(LATENCY_BUCKETS - 1)];
        // Load and store: only the M owning p writes its buckets.
        b.store(b.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    g.track_latency.store(p.schedtick.load(Ordering::Relaxed).is_multiple_of(8), Ordering::Relaxed);
    if let Some(t) = &m.sched().trace {
        // SAFETY: this M owns p.
        t.run_begin(unsafe { p.trace.get() }, p.id, goid(g));
    }
    // SAFETY: g's stack info lives in the type-stable G and is only rewritten by `prepare`, which
    // cannot run while g is current here (it runs on g0 for a dead G).
    unsafe { signal::set_current(g.stack_info.get()) };
    // SAFETY: g is Running and ours: its context was saved by its last switch (or laid out by
    // prepare), its stack is not in use elsewhere, and g0's context slot is this thread's.
    unsafe { safepoint_arch::switch(m.g0.get(), g.ctx.get(), 0) };
    // SAFETY: null is always allowed.
    unsafe { signal::set_current(ptr::null()) };
    // The goroutine left its P (if it still has one: a blocking call ended its span when it
    // handed the P on, and it may have come back on another).
    if let Some(t) = &m.sched().trace
        && let Some(p) = m.p()
    {
        // SAFETY: this M owns p.
        t.run_end(unsafe { p.trace.get() }, p.id);
    }
    true
}

/// On g0, after `g` switched away: carry out what it asked.
fn after_switch(m: &M, g: &'static G) {
    let sched = m.sched();
    let after = m.after.replace(After::Nothing);
    g.m.store(0, Ordering::Relaxed);
    m.curg.store(0, Ordering::Release);
    match after {
        After::Nothing => crate::throw!("goroutine {} switched to g0 with nothing to do", goid(g)),
        After::Yield => {
            g.status.cas(Status::Running, Status::Runnable);
            let p = m.p().expect("yield without a P");
            end_slice_if_asked(p, g);
            requeue(sched, p, g, false);
        }
        After::YieldLocal => {
            g.status.cas(Status::Running, Status::Runnable);
            let p = m.p().expect("yield without a P");
            end_slice_if_asked(p, g);
            stamp_runnable(g);
            // SAFETY: this M owns p.
            unsafe { p.put(GPtr::from(g), false) };
        }
        After::YieldPreempted => {
            g.status.cas(Status::Running, Status::Runnable);
            let p = m.p().expect("preempted without a P");
            end_slice(p);
            requeue(sched, p, g, true);
        }
        After::Park(f) => {
            if let Some(p) = m.p() {
                end_slice_if_asked(p, g);
            }
            let generation = g.status.park_begin();
            // SAFETY: `f` points into the parked goroutine's stack, which cannot run (we hold
            // SCAN) until the callback is done; it is called exactly once.
            let keep = unsafe { (*f)(crate::GoroutineRef { g: GPtr::from(g), generation }) };
            if keep {
                g.status.cas_from_scan(Status::Waiting, Status::Waiting);
            } else {
                g.status.park_cancel();
                let p = m.p().expect("park without a P");
                stamp_runnable(g);
                // SAFETY: m owns p.
                unsafe { p.put(GPtr::from(g), true) };
            }
        }
        After::Exit => {
            g.status.cas_bump(Status::Running, Status::Dead);
            sched.ngoroutines.fetch_sub(1, Ordering::Relaxed);
            match m.p() {
                Some(p) => sched.gfput(p, GPtr::from(g)),
                None => sched.gfput_global([GPtr::from(g)]),
            }
        }
        After::PreemptPark => {
            g.wait_reason.store(5, Ordering::Relaxed);
            g.status.cas(Status::Running, Status::Preempted);
            // The goroutine decided to park when it saw `preempt_stop`, but the suspender may
            // have held it since in another way and withdrawn its request: the preemption
            // signal can stop it between that look and this park (in `AsyncPreempted`, which
            // a suspender holds and scans as well). Parked for a suspender that is gone, it
            // would wait for good (a hang seen about once in a hundred runs of a collecting
            // test under load). So it looks again, now that it is parked: if nobody asks any
            // more, it takes itself back, unless a suspender has just claimed it (SCAN held:
            // then that one readies it). A withdrawal is seen here: it was made while the
            // suspender held SCAN, and our CAS into Preempted came after its release. A new
            // request racing with this look is answered either way: its suspender finds us
            // Preempted (and claims us, or loses that race to our CAS) or Runnable (and holds
            // us), or asks us again at our next safepoint.
            if !g.preempt_stop.load(Ordering::SeqCst)
                && g.status.try_cas(Status::Preempted as u32, Status::Runnable as u32, None)
                    == crate::status::Cas::Ok
            {
                match m.p() {
                    Some(p) => requeue(sched, p, g, false),
                    None => sched.enqueue(GPtr::from(g), false),
                }
            }
        }
        After::ExitSyscall => {
            g.status.cas(Status::Syscall, Status::Runnable);
            // Through `enqueue`: this M has no P, so the goroutine goes to the global queue,
            // or, if it is urgent, to the urgent one (a collector's driver coming back from
            // waiting for its mark workers must not wait behind every runnable goroutine: the
            // global queue is looked at only every 61st schedule of a busy P).
            sched.enqueue(GPtr::from(g), false);
        }
        After::Abandon => {
            if !sched.shutdown.load(Ordering::SeqCst) {
                crate::throw!("goroutine {} abandoned while the runtime runs", goid(g));
            }
        }
    }
}

/// Puts `g`, which just yielded (or, if `preempted`, had its time slice ended) on P `p`
/// (owned by the running M), back in a queue: the back of `p`'s, or the urgent queue if `g`
/// is urgent.
///
/// An urgent goroutine (a collector's driver or mark worker) must not go behind every
/// runnable goroutine of its P, each with a whole time slice: with four goroutines spinning on
/// two Ps, each of a cycle's stack scans and handshakes waited for one or two 10 ms slices.
/// The urgent queue, which every P's next schedule looks at first, takes it back at once
/// (after the stop or barrier the switch gave way to). So an urgent goroutine is not
/// time-sliced: it keeps its P for as long as it runs, which is what a dedicated mark worker
/// is for. What waited in that P's queue is not left behind it: when its slice ends, the
/// P's queued goroutines go to the global queue, where the other Ps take them (as Go does
/// when its dedicated mark worker is preempted).
fn requeue(sched: &Sched, p: &P, g: &'static G, preempted: bool) {
    stamp_runnable(g);
    // Relaxed: the goroutine's own flag, set by itself before this switch.
    if !g.urgent.load(Ordering::Relaxed) {
        // SAFETY: the caller's M owns p.
        unsafe { p.put(GPtr::from(g), false) };
        return;
    }
    if preempted {
        let mut moved = false;
        if let Some(x) = p.steal_runnext() {
            sched.global.push(x);
            moved = true;
        }
        // SAFETY: the caller's M owns p, hence the owner end of its queue.
        let q = unsafe { p.runq() };
        while let Some(x) = q.pop() {
            sched.global.push(x);
            moved = true;
        }
        if moved {
            sched.wakep();
        }
    }
    sched.urgent.push(GPtr::from(g));
    // SeqCst: as in `enqueue_locked`.
    sched.nurgent.fetch_add(1, Ordering::SeqCst);
}

/// Leaves the running goroutine for good because the runtime is shutting down (its M goes on
/// to exit); the goroutine stays Running, is never resumed, and shutdown retires it without
/// unwinding it, as it does parked ones.
///
/// Runs on: a goroutine, possibly in a runtime critical section (a stopper or barrier waiting
/// for Ps that are gone).
pub(crate) fn abandon_for_shutdown() -> ! {
    mcall(After::Abandon);
    crate::throw!("a goroutine abandoned at shutdown was resumed");
}

/// If `g` was asked to give up the CPU (its time slice is over) and is leaving it anyway
/// (parking, yielding), end the slice: otherwise a pair of goroutines handing off through
/// `runnext` would pass the slice between them forever, because neither ever polls while the
/// request is pending.
fn end_slice_if_asked(p: &P, g: &G) {
    if g.preempt.load(Ordering::Relaxed) {
        end_slice(p);
    }
}

/// Starts a new time slice on `p`: the goroutine in `runnext` goes to the back of the queue
/// instead of inheriting the current slice.
fn end_slice(p: &P) {
    p.schedtick.store(p.schedtick.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    if p.runnext.load(Ordering::Relaxed) != 0 {
        // Acquire: pairs with the Release swap in `put`.
        let g = p.runnext.swap(0, Ordering::Acquire);
        if let Some(g) = core::ptr::NonNull::new(g as *mut G) {
            // SAFETY: the calling M owns p.
            unsafe { p.runq() }.push(GPtr(g));
        }
    }
}

/// Switches from the running goroutine to its M's g0, which carries out `after`; returns when
/// the goroutine is resumed, possibly on another M.
///
/// Runs on: a goroutine. Preemption: the goroutine must be preemptible (no runtime lock held).
pub(crate) fn mcall(after: After) {
    let m = current_m().expect("mcall outside a goroutine");
    let g = m.curg().expect("mcall outside a goroutine");
    m.after.set(after);
    // SAFETY: we are g running on m: g's context slot is ours to write, and g0's context was
    // saved by execute's switch on this thread.
    unsafe { safepoint_arch::switch(g.ctx.get(), m.g0.get(), 0) };
    // Resumed, possibly on another thread: do not reuse `m`.
}

/// Runs one queued goroutine's body-less bookkeeping at shutdown: drains queues.
pub(crate) fn drain_queues(sched: &Sched) {
    while let Steal::Success(_) | Steal::Retry = sched.global.steal() {}
    while let Steal::Success(_) | Steal::Retry = sched.urgent.steal() {}
    sched.nurgent.store(0, Ordering::SeqCst);
    for p in sched.ps.iter() {
        p.runnext.store(0, Ordering::Relaxed);
        while let Steal::Success(_) | Steal::Retry = p.stealer.steal() {}
    }
}

/// Thread-safe count of queued goroutines (racy), for dumps.
pub(crate) fn queued(sched: &Sched) -> usize {
    sched.global.len() + sched.urgent.len() + sched.ps.iter().map(|p| p.runq_len()).sum::<usize>()
}

#[cfg(all(test, not(loom)))]
pub(crate) mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::{P, current_m};

    /// A test's pause in `handoffp`, right after it ran a barrier's function for the P at this
    /// address (0: none), before it takes the scheduler lock again.
    static PAUSE_AT: AtomicUsize = AtomicUsize::new(0);
    /// Serialises the tests that set [`PAUSE_AT`].
    static PAUSING: Mutex<()> = Mutex::new(());

    /// Called by `handoffp` after it ran the safe-point function for `p`: for the P a test
    /// named, once, waits until the next barrier has asked it again (its flag is set anew),
    /// or a few seconds.
    pub(crate) fn after_handoff_safe_point(p: &P) {
        // Once: the hand-off then runs the second barrier's function too (with the fix).
        let me = p as *const P as usize;
        if PAUSE_AT.compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return;
        }
        let t0 = std::time::Instant::now();
        while !p.run_safe_point_fn.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::yield_now();
        }
    }

    /// A P handed off (by sysmon retaking it from a blocking call, say) owes a ragged barrier
    /// its function while it is Idle and on no list. `handoffp` ran it, dropping the scheduler
    /// lock to do so; meanwhile the barrier ended and the next one began, which set the P's
    /// flag again and took the idle list without it. `handoffp` then put the P idle without
    /// looking at the flag again: nobody owed the second barrier the function for it, and it
    /// waited for ever (the soak's rare "for_each_p has waited 1000 ms" under load). Here the
    /// hand-off is paused at that point until the second barrier has begun.
    #[test]
    #[cfg_attr(miri, ignore = "makes a scheduler: signal handlers and mapped stacks")]
    fn a_barrier_that_begins_while_a_handoff_runs_the_last_one_is_answered() {
        let _one = PAUSING.lock().unwrap_or_else(|e| e.into_inner());
        // Three Ps: the barriers' caller on one, one handed off by the thread below, and one
        // idle, so that the hand-off does not give its P to an M (no P idle, nobody spinning)
        // but puts it on the idle list.
        let rt = crate::Runtime::builder().procs(3).build().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(move || {
            let sched = current_m().expect("on a goroutine").sched();
            // Let the other Ps go idle (nothing else runs), then take one off the idle list,
            // as sysmon takes a P out of a blocking call: Idle, on no list, ours to hand off.
            while sched.npidle.load(Ordering::SeqCst) < 2 {
                crate::yield_now();
            }
            let p = sched.pidleget(&mut sched.locked()).expect("an idle P");
            let addr = p as *const P as usize;
            PAUSE_AT.store(addr, Ordering::SeqCst);
            let s = sched as *const super::Sched as usize;
            let handoff = std::thread::spawn(move || {
                // SAFETY: the runtime outlives this thread: the test joins it before the drop.
                let (sched, p) = unsafe { (&*(s as *const super::Sched), &*(addr as *const P)) };
                while !p.run_safe_point_fn.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                sched.handoffp(p);
            });
            // The first barrier: the hand-off runs its function for the P, then pauses until
            // the second has begun.
            crate::for_each_p(&|_| {});
            // The second: the hand-off itself must answer it for the P (a barrier's retry
            // also answers for an idle P left owing, as a defence, on the caller's thread).
            let answered_by = Mutex::new(None);
            crate::for_each_p(&|id| {
                if id == p.id {
                    *answered_by.lock().unwrap() = Some(std::thread::current().id());
                }
            });
            PAUSE_AT.store(0, Ordering::SeqCst);
            let by = answered_by.into_inner().unwrap();
            let _ = tx.send((handoff, by));
        })
        .unwrap();
        let (handoff, by) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the second barrier never ended: the handed-off P did not answer it");
        let handoff_thread = handoff.thread().id();
        handoff.join().unwrap();
        drop(rt);
        assert_eq!(by, Some(handoff_thread), "the hand-off left the second barrier to its retry");
    }
}

#[cfg(all(test, not(loom)))]
mod left_behind {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::{P, Sched, current_m};

    /// Takes an idle P off the list (as a hand-off holds one), starts `begin` on a goroutine,
    /// and once `begun` says it has begun, puts the P back on the idle list without answering
    /// it: what a path that idles a P without looking at the flags under the lock does. The
    /// stop's or the barrier's retry must answer for it; true if `begin` returned.
    fn idle_p_put_back_during(begin: fn(), begun: fn(&Sched, &P) -> bool) -> bool {
        let rt = crate::Runtime::builder().procs(3).build().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(move || {
            let sched = current_m().expect("on a goroutine").sched();
            while sched.npidle.load(Ordering::SeqCst) < 2 {
                crate::yield_now();
            }
            let p = sched.pidleget(&mut sched.locked()).expect("an idle P");
            let (s, addr) = (sched as *const Sched as usize, p as *const P as usize);
            let t = std::thread::spawn(move || {
                // SAFETY: the runtime outlives this thread: the goroutine joins it.
                let (sched, p) = unsafe { (&*(s as *const Sched), &*(addr as *const P)) };
                while !begun(sched, p) {
                    std::thread::yield_now();
                }
                sched.pidleput(&mut sched.locked(), p);
            });
            begin();
            let _ = tx.send(());
            crate::blocking(|| t.join().unwrap());
        })
        .unwrap();
        let done = rx.recv_timeout(Duration::from_secs(30)).is_ok();
        if done {
            drop(rt);
        } else {
            // It hangs: leave the runtime to it rather than wait for its shutdown's bounds.
            core::mem::forget(rt);
        }
        done
    }

    /// A barrier whose retry finds a P on the idle list still owing its function runs it for
    /// the P: a path that idles a P without answering the barrier costs latency, not a hang.
    #[test]
    #[cfg_attr(miri, ignore = "makes a scheduler: signal handlers and mapped stacks")]
    fn a_barrier_answers_for_an_idle_p_left_owing_it() {
        assert!(
            idle_p_put_back_during(
                || crate::for_each_p(&|_| {}),
                |_, p| p.run_safe_point_fn.load(Ordering::SeqCst)
            ),
            "the barrier waited for an idle P"
        );
    }

    /// A stop whose retry finds a P on the idle list stops and counts it.
    #[test]
    #[cfg_attr(miri, ignore = "makes a scheduler: signal handlers and mapped stacks")]
    fn a_stop_counts_an_idle_p_it_missed() {
        assert!(
            idle_p_put_back_during(
                || drop(crate::stop_the_world("test")),
                |sched, _| sched.gcwaiting.load(Ordering::SeqCst)
            ),
            "the stop waited for an idle P"
        );
    }
}
