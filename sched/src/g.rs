//! G: a goroutine.

use core::cell::{Cell, UnsafeCell};
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};
use std::any::Any;
use std::sync::{Arc, Mutex};

use safepoint_arch::signal::StackInfo;
use safepoint_arch::stack::Stack;
use safepoint_arch::{Context, EntryFn};

use crate::runtime::Sched;
use crate::shim::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use crate::status::{Status, StatusWord};
use safepoint_stackmap::{ManagedStack, StackConfig, StackGuard};

/// Words of a goroutine body kept in the G itself rather than boxed (see [`Body`]).
const BODY_INLINE_WORDS: usize = 6;

/// A goroutine's body, type-erased: a closure of up to `BODY_INLINE_WORDS` words (and no
/// stricter alignment than a word) is kept in place in the G, so that a spawn makes no
/// allocation for it (the G is pooled and reused); a larger one is boxed.
pub(crate) struct Body {
    repr: BodyRepr,
}

enum BodyRepr {
    Boxed(Box<dyn FnOnce() + Send + 'static>),
    Inline {
        /// The closure's bytes (a value of the type `call` and `drop` were made for).
        data: [MaybeUninit<usize>; BODY_INLINE_WORDS],
        /// Moves the closure out of `data` and calls it.
        call: unsafe fn(*mut MaybeUninit<usize>),
        /// Drops the closure in `data`.
        drop: unsafe fn(*mut MaybeUninit<usize>),
    },
}

// SAFETY: a Body only holds a closure that is `Send` (`Body::new` requires it).
unsafe impl Send for Body {}

/// # Safety
/// `p` holds a valid `F`, which is not used again.
unsafe fn call_inline<F: FnOnce()>(p: *mut MaybeUninit<usize>) {
    // SAFETY: per the contract, `p` holds an `F` that nothing else will read or drop.
    let f = unsafe { ptr::read(p.cast::<F>()) };
    f()
}

/// # Safety
/// `p` holds a valid `F`, which is not used again.
unsafe fn drop_inline<F>(p: *mut MaybeUninit<usize>) {
    // SAFETY: per the contract.
    unsafe { ptr::drop_in_place(p.cast::<F>()) }
}

impl Body {
    /// Wraps `f`, in place if it fits.
    pub fn new<F: FnOnce() + Send + 'static>(f: F) -> Body {
        let fits = core::mem::size_of::<F>() <= BODY_INLINE_WORDS * core::mem::size_of::<usize>()
            && core::mem::align_of::<F>() <= core::mem::align_of::<usize>();
        if !fits {
            return Body { repr: BodyRepr::Boxed(Box::new(f)) };
        }
        let mut data = [MaybeUninit::<usize>::uninit(); BODY_INLINE_WORDS];
        // SAFETY: `data` has room and alignment for an `F` (checked above); the value is moved
        // into it and owned by the Body from here on.
        unsafe { ptr::write(data.as_mut_ptr().cast::<F>(), f) };
        Body { repr: BodyRepr::Inline { data, call: call_inline::<F>, drop: drop_inline::<F> } }
    }

    /// Runs the body (consuming it).
    pub fn call(self) {
        let mut this = core::mem::ManuallyDrop::new(self);
        match &mut this.repr {
            BodyRepr::Boxed(b) => {
                // SAFETY: `this` is never used or dropped again, so the box is moved out once.
                let b = unsafe { ptr::read(b) };
                b()
            }
            BodyRepr::Inline { data, call, .. } => {
                // SAFETY: `data` holds the closure `call` was made for; `this` is never dropped,
                // so the closure is not dropped a second time.
                unsafe { call(data.as_mut_ptr()) }
            }
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let BodyRepr::Inline { data, drop, .. } = &mut self.repr {
            // SAFETY: `data` holds the closure `drop` was made for, not yet run (a run consumes
            // the Body without dropping it).
            unsafe { drop(data.as_mut_ptr()) }
        }
    }
}

/// A goroutine.
///
/// G structs are *type-stable*: once allocated they are never freed, only recycled, first
/// through their runtime's free lists and, when that runtime shuts down, through a process-wide
/// pool. A stale pointer to a G therefore always points at a G, and every use of one is guarded
/// by the status word's generation. This is what lets `ready`, `suspend_g` and the preemption
/// requests of other threads touch a G without reference counting.
///
/// Fields are either atomics (touched by other threads) or `UnsafeCell`s whose owner is named
/// on each: "owner" means whoever the status word says owns the goroutine at that moment.
pub(crate) struct G {
    /// The status word: see [`crate::status`].
    pub status: StatusWord,
    /// The goroutine id (a fresh one at every spawn, never reused). Relaxed: informational,
    /// published with the goroutine by the run-queue push.
    pub id: AtomicU64,
    /// Saved registers while not running. Owner: the M switching into or out of it.
    pub ctx: UnsafeCell<Context>,
    /// Native stack; `None` only before the first spawn. Owner: the M that spawns it.
    pub stack: UnsafeCell<Option<Stack>>,
    /// What the guard-page handler needs, valid while the G runs.
    pub stack_info: UnsafeCell<StackInfo>,
    /// The body to run at start. Owner: the spawner, then the goroutine itself.
    pub body: UnsafeCell<Option<Body>>,
    /// Preemption requested (the source of truth; the managed stack's guard is its fast-path
    /// copy).
    pub preempt: AtomicBool,
    /// Preemption requested by a suspender: park in `Preempted` rather than yield.
    pub preempt_stop: AtomicBool,
    /// The last request this goroutine answered was answered by the preemption signal (it was
    /// in code that does not poll): the next requester signals at once instead of waiting out
    /// the grace period. Cleared when it answers at a synchronous safepoint. Relaxed: a hint.
    pub async_prone: AtomicBool,
    /// The goroutine's managed stack. Its guard word is what every synchronous safepoint checks
    /// (frame pushes and polls) and what preemption requests poison, from any thread. The rest
    /// is the goroutine's own, or a suspender's while it holds SCAN; replaced only while the G
    /// is owned exclusively (adoption).
    pub mstack: UnsafeCell<ManagedStack>,
    /// M running this goroutine (null when not running). Racy hint for preemption requests.
    pub m: crate::shim::AtomicUsize,
    /// The runtime owning this G, for wake-ups from threads outside it. Cleared at shutdown.
    pub owner: Mutex<Option<Arc<Sched>>>,
    /// Raw pointer to the owning runtime; valid while `owner` is Some. Owner: the runtime.
    pub sched: Cell<*const Sched>,
    /// The P this goroutine held when it entered a blocking call. Owner: the goroutine.
    pub syscall_p: Cell<*const crate::runtime::P>,
    /// Nesting depth of `no_preempt` sections. Owner: the goroutine.
    pub pins: Cell<u32>,
    /// Readied ahead of everything else (`crate::set_urgent`): a collector's driver. Relaxed:
    /// set by the goroutine itself, read when it is readied.
    pub urgent: AtomicBool,
    /// Whether this goroutine's next wait in a run queue is timed for the scheduling-latency
    /// histogram (one schedule in eight sets it, as Go samples). Relaxed: written by the M
    /// that runs the goroutine, read by whoever readies it next, after the park/ready hand-off.
    pub track_latency: AtomicBool,
    /// When the tracked goroutine became runnable (`safepoint_arch::nanotime`), 0 if it is not
    /// timed. Relaxed: written by the readier before it queues the goroutine, read by the M that
    /// takes it off the queue (the queue's hand-off orders the two).
    pub runnable_since: AtomicU64,
    /// Part of the runtime's machinery (`crate::set_system`): left out of deadlock reports.
    /// Relaxed: set by the goroutine itself, read in a report.
    pub system: AtomicBool,
    /// Goroutine-local values (index = key). Owner: the goroutine.
    pub locals: UnsafeCell<Vec<Option<Box<dyn Any>>>>,
    /// Why it waits, for dumps. Relaxed: informational.
    pub wait_reason: AtomicUsize,
    /// Who holds its SCAN bit through `suspend_g` (`crate::stw::caller_token`), 0 if nobody:
    /// set by the holder right after it takes the bit and cleared right before it releases it,
    /// so a caller that reads its own token here while the bit is set holds it itself.
    /// Relaxed: only the holder writes it, and a caller compares it only with its own token.
    pub suspender: AtomicUsize,
    /// The id of the goroutine this one waits for in `suspend_g`, 0 if none: for dumps.
    /// Relaxed: informational, written only by this goroutine.
    pub suspending: AtomicU64,
    /// Parked where shutdown may end the park (`proc::park_cancellable`): nothing of the
    /// goroutine's stays linked anywhere that it cannot unlink when it resumes. Set by the
    /// goroutine before it switches away to park, cleared when it resumes; read by shutdown
    /// after it has seen the goroutine Waiting (the status word's Release/Acquire orders it).
    pub cancellable: AtomicBool,
    /// Shutdown ended this goroutine's park: it resumes in the parking primitive, which cleans
    /// up and unwinds. Set by shutdown before it queues the goroutine (the queue publishes it);
    /// read and cleared by the goroutine.
    pub cancelled: AtomicBool,
    /// The goroutine has been sent the shutdown unwind (once at most: a goroutine that parks
    /// again while unwinding, or after catching it, is left parked). Written by the goroutine,
    /// read by shutdown. Relaxed: shutdown looks again until every goroutine is settled.
    pub unwound: AtomicBool,
    /// Depth of runtime sections that must not be unwound by shutdown although they switch
    /// (a suspender's wait: its request must be withdrawn before it goes). Owner: the
    /// goroutine.
    pub no_unwind: Cell<u32>,
}

// SAFETY: cross-thread fields are atomics or a Mutex; every UnsafeCell/Cell field is accessed only
// by the owner the status protocol designates, and ownership passes with Release/Acquire status
// transitions or run-queue pushes/pops, so no two threads access one at the same time.
unsafe impl Sync for G {}
// SAFETY: as above; a G holds no thread-bound state.
unsafe impl Send for G {}

/// Wait reasons, for dumps.
pub(crate) const WAIT_REASONS: &[&str] = &[
    "",
    "park",
    "join",
    "sema",
    "waitgroup",
    "preempted",
    "sleep",
    "chan",
    "select",
    "mutex",
    // The sync primitives' finer reasons (issue 4).
    "chan send",
    "chan receive",
    "rwlock",
    "cond",
];

/// A `'static` G pointer that can ride run queues.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct GPtr(pub NonNull<G>);

// SAFETY: G is Sync and type-stable (never freed), so a pointer to one may go anywhere.
unsafe impl Send for GPtr {}
// SAFETY: as above.
unsafe impl Sync for GPtr {}

impl GPtr {
    pub fn get(self) -> &'static G {
        // SAFETY: Gs are never freed (type-stable), so the pointer is always valid.
        unsafe { self.0.as_ref() }
    }
    pub fn from(g: &'static G) -> GPtr {
        GPtr(NonNull::from(g))
    }
}

/// Process-wide pool of Gs whose runtime shut down.
static G_POOL: Mutex<Vec<GPtr>> = Mutex::new(Vec::new());

impl G {
    /// A fresh G of no runtime, for unit tests of the lists that hold Gs.
    #[cfg(test)]
    pub(crate) fn for_tests() -> G {
        G::new()
    }

    fn new() -> G {
        G {
            status: StatusWord::new(Status::Idle),
            id: AtomicU64::new(0),
            ctx: UnsafeCell::new(Context::default()),
            stack: UnsafeCell::new(None),
            stack_info: UnsafeCell::new(StackInfo {
                guard_lo: 0,
                guard_hi: 0,
                size: 0,
                goroutine: 0,
            }),
            body: UnsafeCell::new(None),
            preempt: AtomicBool::new(false),
            preempt_stop: AtomicBool::new(false),
            async_prone: AtomicBool::new(false),
            mstack: UnsafeCell::new(ManagedStack::new(0, StackConfig::default())),
            m: AtomicUsize::new(0),
            owner: Mutex::new(None),
            sched: Cell::new(ptr::null()),
            syscall_p: Cell::new(ptr::null()),
            pins: Cell::new(0),
            urgent: AtomicBool::new(false),
            track_latency: AtomicBool::new(false),
            runnable_since: AtomicU64::new(0),
            system: AtomicBool::new(false),
            locals: UnsafeCell::new(Vec::new()),
            wait_reason: AtomicUsize::new(0),
            suspender: AtomicUsize::new(0),
            suspending: AtomicU64::new(0),
            cancellable: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            unwound: AtomicBool::new(false),
            no_unwind: Cell::new(0),
        }
    }

    /// A G for `sched`: from the process pool or freshly allocated (and leaked: type-stable).
    pub fn adopt(sched: &Arc<Sched>) -> &'static G {
        let g = match G_POOL.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            Some(g) => g.get(),
            None => Box::leak(Box::new(G::new())),
        };
        // SAFETY: the G came from the pool or was just made: nobody else can see it.
        unsafe { g.configure_mstack(sched.config.managed_stack) };
        *g.owner.lock().unwrap_or_else(|e| e.into_inner()) = Some(sched.clone());
        g.sched.set(Arc::as_ptr(sched));
        g
    }

    /// Returns a G of a runtime that shut down to the process pool. Its stack is unmapped,
    /// anything left in it dropped, and its generation bumped so old tokens are stale.
    ///
    /// # Safety
    /// No thread may be running on the G's stack, and nobody else may own it.
    pub unsafe fn retire(&'static self) {
        // Issue 4: a goroutine abandoned while parked may have wait-queue nodes on its stack
        // that a channel or lock still links (a thread outside the runtime may hold it and use
        // it later). Leak that stack instead of unmapping it, so such a use reads valid memory
        // and ends in ready()'s described "stale goroutine handle" panic.
        let parked = self.status.load().base() == Some(Status::Waiting);
        // SAFETY: the caller guarantees exclusive ownership.
        unsafe {
            let stack = (*self.stack.get()).take();
            if parked {
                core::mem::forget(stack);
            }
            *self.body.get() = None;
            // Unhooked: the hooks are about the running goroutine, which is not this one
            // (whose stack nothing uses: the caller owns the G exclusively).
            self.mstack().release_stopped();
            (*self.locals.get()).clear();
        }
        let w = self.status.load();
        if w.base() != Some(Status::Dead) {
            // Force it dead with a new generation; the owner is exclusive, so a plain bump works.
            self.status.store_private(Status::Dead);
        }
        self.status.store_private(Status::Idle);
        self.status.bump_private();
        *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.sched.set(ptr::null());
        G_POOL.lock().unwrap_or_else(|e| e.into_inner()).push(GPtr::from(self));
    }

    /// Takes the stack of a dead G, to unmap it (the G gets a new one when it is next
    /// prepared). None if it has none.
    ///
    /// # Safety
    /// The G is dead and owned by the caller (on no list but the caller's), and no thread runs
    /// on its stack. A dead G's stack links nothing: its goroutine unlinked every wait node
    /// before it returned (only a G abandoned while parked may still be linked, and such a G
    /// is never dead: see [`retire`](Self::retire)).
    pub unsafe fn take_stack(&self) -> Option<safepoint_arch::stack::Stack> {
        debug_assert_eq!(self.status.load().base(), Some(Status::Dead));
        // SAFETY: exclusive ownership per the caller's contract.
        unsafe { (*self.stack.get()).take() }
    }

    /// Prepares a fresh start of `body` on this G's stack (getting a stack if it has none).
    ///
    /// # Safety
    /// The caller owns the G (it is Idle or Dead and on no list) and `entry` is the runtime's
    /// goroutine entry.
    pub unsafe fn prepare(
        &'static self,
        id: u64,
        body: Body,
        pool: &safepoint_arch::stack::StackPool,
        entry: EntryFn,
    ) -> Result<(), safepoint_arch::stack::StackError> {
        // SAFETY: exclusive ownership per the caller's contract.
        let stack = unsafe { &mut *self.stack.get() };
        if stack.is_none() {
            *stack = Some(pool.get()?);
        }
        let s = stack.as_ref().expect("stack set above");
        let (guard_lo, guard_hi) = s.guard_range();
        // SAFETY: exclusive ownership; the stack top is 16-aligned and the stack unused (the G is
        // not running), so laying out a fresh frame on it is fine.
        unsafe {
            *self.stack_info.get() =
                StackInfo { guard_lo, guard_hi, size: s.size(), goroutine: id };
            *self.body.get() = Some(body);
            (*self.locals.get()).clear();
            *self.ctx.get() = Context::new_on_stack(s.top(), entry, self as *const G as usize);
        }
        self.id.store(id, Ordering::Relaxed);
        self.preempt.store(false, Ordering::Relaxed);
        self.preempt_stop.store(false, Ordering::Relaxed);
        self.urgent.store(false, Ordering::Relaxed);
        self.system.store(false, Ordering::Relaxed);
        self.async_prone.store(false, Ordering::Relaxed);
        self.cancellable.store(false, Ordering::Relaxed);
        self.cancelled.store(false, Ordering::Relaxed);
        self.unwound.store(false, Ordering::Relaxed);
        self.no_unwind.set(0);
        let ms = self.mstack();
        ms.set_id(id);
        ms.reset();
        self.pins.set(0);
        self.wait_reason.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Asks this goroutine to stop at its next synchronous safepoint. Sound to call on any G at
    /// any time: a request to a G that moved on is a spurious yield, harmless.
    pub fn request_preempt(&self) {
        // Dekker with `rearm_guard`: flag, fence, poison here; unpoison, fence, read the flag
        // there. Either the re-arm sees `preempt` set, or our poison lands after its unpoison.
        self.preempt.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.guard().poison();
    }

    /// Sets the fast-path guard from `preempt`: called by the goroutine's M whenever the
    /// goroutine is about to run or leaves a critical section.
    pub fn rearm_guard(&self) {
        self.guard().unpoison();
        fence(Ordering::SeqCst);
        if self.preempt.load(Ordering::SeqCst) {
            self.guard().poison();
        }
    }

    /// The guard word of the managed stack (any thread may use it).
    #[inline]
    pub fn guard(&self) -> &StackGuard {
        self.mstack().guard()
    }

    /// The managed stack. Only its guard may be used by a thread that does not own the G (see
    /// the field's doc); `ManagedStack` being `!Sync` keeps the reference on this thread.
    #[inline]
    pub fn mstack(&self) -> &ManagedStack {
        // SAFETY: the stack object is only replaced while the G is exclusively owned (adopt), so
        // a shared reference is valid otherwise; what may be done through it is the field's
        // contract.
        unsafe { &*self.mstack.get() }
    }

    /// Gives the G a fresh managed stack with `config`, if its current one differs.
    ///
    /// # Safety
    /// The caller owns the G exclusively (it is being adopted and nobody else can see it).
    pub unsafe fn configure_mstack(&self, config: StackConfig) {
        if self.mstack().limit_bytes() != config.limit() {
            // SAFETY: exclusive ownership per the contract.
            unsafe { *self.mstack.get() = ManagedStack::new(0, config) };
        }
    }
}

/// A pointer to the id of G, for printing.
#[inline]
pub(crate) fn goid(g: &G) -> u64 {
    g.id.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::{Body, BodyRepr};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its drops.
    struct Tally(Arc<AtomicUsize>);
    impl Drop for Tally {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn inline(b: &Body) -> bool {
        matches!(b.repr, BodyRepr::Inline { .. })
    }

    #[test]
    fn a_small_body_is_kept_in_place_and_runs_once_and_drops_its_captures_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        let (t, r) = (Tally(drops.clone()), ran.clone());
        let b = Body::new(move || {
            let _t = t;
            r.fetch_add(1, Ordering::Relaxed);
        });
        assert!(inline(&b));
        b.call();
        assert_eq!((ran.load(Ordering::Relaxed), drops.load(Ordering::Relaxed)), (1, 1));
        // Dropped without running (a goroutine that never started).
        let t = Tally(drops.clone());
        let b = Body::new(move || drop(t));
        assert!(inline(&b));
        drop(b);
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_large_or_overaligned_body_is_boxed() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (t, big) = (Tally(drops.clone()), [7u64; 16]);
        let b = Body::new(move || {
            assert_eq!(big.iter().sum::<u64>() + t.0.load(Ordering::Relaxed) as u64, 112)
        });
        assert!(!inline(&b));
        b.call();
        #[repr(align(64))]
        struct Wide(u8);
        let w = Wide(1);
        let b = Body::new(move || {
            let w = w; // the whole value, not the field alone
            assert_eq!(w.0, 1)
        });
        assert!(!inline(&b));
        drop(b);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_body_that_panics_drops_its_captures_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let t = Tally(drops.clone());
        let b = Body::new(move || {
            let _t = t;
            panic!("boom");
        });
        assert!(inline(&b));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.call()));
        assert!(r.is_err());
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    }
}
