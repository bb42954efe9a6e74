//! What every synchronisation primitive of this crate stands on: a wake-up [`Token`] that is
//! either a parked goroutine's or a sleeping OS thread's, [`park_current_cancellable`] (park the goroutine,
//! or sleep the thread when called from outside the runtime), and [`RawLock`], the short
//! spin-then-futex lock that guards each primitive's wait queues (Go's runtime `mutex`).
//!
//! ## The park protocol, from both sides
//!
//! A waiter takes the primitive's `RawLock`, finds it cannot proceed, puts a node naming itself
//! on the primitive's queue and calls [`park_current_cancellable`] with a callback. The callback runs *after*
//! the goroutine has switched away (on its M's g0; for a thread, right away): it stores the
//! token in the node and releases the lock. A waker takes the same lock, finds the node, takes
//! its token, releases the lock and calls [`Token::wake`]. Because the lock is released only
//! after the token is stored, a waker that found the node always finds the token: no wake-up is
//! lost, and nothing touches a waiter's node after waking it (the node lives on the waiter's
//! stack, which is free to go once the waiter runs).
//!
//! Under `--cfg loom` the same code runs on loom threads: the goroutine branch is never taken
//! (there is no runtime), so the thread branch, with loom's atomics and `park`/`unpark`, is what
//! the `loom_*` models check.

use core::cell::Cell;

use crate::shim::{AtomicBool, AtomicU32, Ordering, spin_hint};

#[cfg(loom)]
use loom::sync::Arc;
#[cfg(loom)]
use loom::thread::{Thread, current as current_thread, park as park_thread};
#[cfg(not(loom))]
use std::sync::Arc;
#[cfg(not(loom))]
use std::thread::{Thread, current as current_thread, park as park_thread};

/// How a waiter will be woken: a parked goroutine's single-use token, or a sleeping thread.
#[derive(Debug)]
pub(crate) enum Token {
    /// A goroutine parked by [`crate::park`].
    G(crate::GoroutineRef),
    /// A thread outside the runtime sleeping in [`park_current_cancellable`].
    T(Arc<ThreadWaiter>),
}

/// A thread sleeping in [`park_current_cancellable`]: it sleeps until `woken` is set.
#[derive(Debug)]
pub(crate) struct ThreadWaiter {
    woken: AtomicBool,
    thread: Thread,
}

impl Token {
    /// Wakes the waiter. Everything the caller wrote before is visible to the waiter when it
    /// runs (the goroutine's status CAS, or the Release store below, publishes it).
    pub(crate) fn wake(self) {
        match self {
            Token::G(r) => r.ready(),
            Token::T(w) => {
                // Release: pairs with the Acquire load in `park_thread_until_woken`'s sleep loop.
                w.woken.store(true, Ordering::Release);
                w.thread.unpark();
            }
        }
    }
}

/// Whether the caller is a goroutine (else a thread outside any runtime, or g0).
#[inline]
pub(crate) fn on_goroutine() -> bool {
    #[cfg(loom)]
    {
        false
    }
    #[cfg(not(loom))]
    {
        crate::runtime::current_g().is_some()
    }
}

/// Why the caller may not park now, if it may not: a goroutine inside a `no_preempt` section
/// or a runtime critical section. Blocking operations check this *before* they queue a node and
/// take locks they would release while parking, so that the described panic leaves the
/// primitive intact.
pub(crate) fn cannot_park() -> Option<&'static str> {
    #[cfg(not(loom))]
    if let Some(m) = crate::runtime::current_m()
        && let Some(g) = m.curg()
    {
        if g.pins.get() != 0 {
            return Some("a blocking operation inside a no_preempt section");
        }
        // Checked before the primitive queues its waiter: a park refused after that would
        // unwind and leave the waiter queued.
        if g.status.load().base() == Some(crate::status::Status::Syscall) {
            return Some(
                "a blocking operation (channel, lock, select, wait) inside a blocking call: the \
                 goroutine has handed off its P",
            );
        }
        if m.locks.load(Ordering::Relaxed) != 0 {
            return Some("a blocking operation while the runtime holds this M");
        }
    }
    None
}

/// Panics with [`cannot_park`]'s reason, if any, after `unlock` (which releases the locks the
/// caller holds).
pub(crate) fn check_can_park(unlock: impl FnOnce()) {
    if let Some(why) = cannot_park() {
        unlock();
        panic!("{why}");
    }
}

/// Parks the caller until its token is woken: a goroutine parks (see [`crate::park`]); a
/// thread outside the runtime sleeps. `f` gets the token, stores it where a waker will find it
/// and returns true, or returns false to go on at once. As with [`crate::park`], `f` may borrow
/// from the caller, must not block, and is where the caller's `RawLock` is released.
///
/// Shutdown may end a goroutine's park: then this returns true, and the caller must take its
/// primitive's lock, unlink its node if a waker has not (if one has, the operation completed
/// and its token's wake-up will be ignored), and unwind with
/// `crate::proc::shutdown_unwind_current` unless the operation completed. Every primitive
/// parks this way, so that no goroutine is left parked at shutdown (see "Shutdown" in the
/// crate docs). A thread outside the runtime always gets false.
pub(crate) fn park_current_cancellable<F>(reason: crate::WaitReason, f: F) -> bool
where
    F: FnOnce(Token) -> bool,
{
    if on_goroutine() {
        return crate::proc::park_cancellable(reason as usize, |r| f(Token::G(r)));
    }
    park_thread_until_woken(f);
    false
}

fn park_thread_until_woken<F>(f: F)
where
    F: FnOnce(Token) -> bool,
{
    let w = Arc::new(ThreadWaiter { woken: AtomicBool::new(false), thread: current_thread() });
    if !f(Token::T(w.clone())) {
        return;
    }
    // Acquire: pairs with the Release store in `Token::wake`.
    while !w.woken.load(Ordering::Acquire) {
        park_thread();
    }
}

/// A lock for short critical sections that never park (Go's runtime `lock`): a compare-and-swap
/// when free; spins a while when held (the holder is running on the other CPU); then sleeps on a
/// futex. The guarded data sits next to it in an `UnsafeCell`; `lock`/`unlock` are not paired by
/// a guard because a park callback releases locks its goroutine took (possibly several, in
/// address order, for a select).
#[cfg(not(loom))]
#[derive(Debug, Default)]
pub(crate) struct RawLock {
    /// 0 free, 1 held, 2 held and someone may sleep on the futex.
    state: AtomicU32,
}

/// Spins before sleeping on the futex.
#[cfg(not(loom))]
const SPIN_LIMIT: u32 = 100;

#[cfg(not(loom))]
impl RawLock {
    /// A free lock.
    pub(crate) fn new() -> RawLock {
        RawLock { state: AtomicU32::new(0) }
    }

    /// Takes the lock. Until `unlock`, the M (if any) holds a runtime lock: the preemption
    /// handler declines to hold it in place (see `crate::preempt`).
    #[inline]
    pub(crate) fn lock(&self) {
        crate::preempt::rtlock_enter();
        // Acquire: pairs with the Release swap in `unlock`: the previous holder's writes to the
        // guarded data are visible.
        if self.state.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_slow();
        }
    }

    #[cold]
    fn lock_slow(&self) {
        let mut spins = 0;
        loop {
            let s = self.state.load(Ordering::Relaxed);
            // Acquire: as in `lock`.
            if s == 0
                && self.state.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return;
            }
            if spins >= SPIN_LIMIT || s == 2 {
                break;
            }
            spins += 1;
            spin_hint();
        }
        // Mark "held with sleepers"; if it was free we now hold it (marked 2, which costs at
        // most one needless wake at unlock).
        // Acquire: as in `lock`.
        while self.state.swap(2, Ordering::Acquire) != 0 {
            safepoint_arch::futex_wait(&self.state, 2, None);
        }
    }

    /// Releases the lock. The caller must hold it, on the thread that took it (a park callback
    /// runs on the parking goroutine's M).
    #[inline]
    pub(crate) fn unlock(&self) {
        // Release: pairs with the Acquire in `lock`/`lock_slow`.
        if self.state.swap(0, Ordering::Release) == 2 {
            safepoint_arch::futex_wake(&self.state);
        }
        crate::preempt::rtlock_exit(crate::runtime::current_m());
    }
}

/// Under loom, the lock is loom's mutex with its guard kept inside, so that a blocked locker
/// is a blocked loom thread (a spinning one would make every model explode into branches).
#[cfg(loom)]
pub(crate) struct RawLock {
    m: loom::sync::Mutex<()>,
    guard: core::cell::UnsafeCell<Option<loom::sync::MutexGuard<'static, ()>>>,
}

// SAFETY: `guard` is only written by the thread holding `m`.
#[cfg(loom)]
unsafe impl Sync for RawLock {}

#[cfg(loom)]
impl core::fmt::Debug for RawLock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RawLock")
    }
}

#[cfg(loom)]
impl Default for RawLock {
    fn default() -> RawLock {
        RawLock::new()
    }
}

#[cfg(loom)]
impl RawLock {
    pub(crate) fn new() -> RawLock {
        RawLock { m: loom::sync::Mutex::new(()), guard: core::cell::UnsafeCell::new(None) }
    }

    pub(crate) fn lock(&self) {
        let g = self.m.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: only the lifetime is erased: the guard is dropped by `unlock`, before the
        // lock (which owns the mutex) can go away.
        let g: loom::sync::MutexGuard<'static, ()> = unsafe { core::mem::transmute(g) };
        // SAFETY: we hold the mutex, so nobody else touches `guard`.
        unsafe { *self.guard.get() = Some(g) };
    }

    pub(crate) fn unlock(&self) {
        // SAFETY: the caller holds the mutex, so nobody else touches `guard`.
        let g = unsafe { (*self.guard.get()).take() };
        drop(g);
    }
}

/// Runs a loom model with a preemption bound of 3 (enough for the hand-offs modelled here,
/// and it keeps each model to a minute or so).
#[cfg(all(test, loom))]
pub(crate) fn loom_model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

std::thread_local! {
    static RAND: Cell<u64> = const { Cell::new(0) };
}

/// A cheap pseudo-random number (xorshift64*, one state per thread, seeded from the clock and
/// the thread). Never inlined: the thread-local must be re-read after any goroutine switch (see
/// the crate docs on thread identity); the read and write here happen with no switch between.
#[inline(never)]
pub(crate) fn fastrand() -> u64 {
    RAND.with(|c| {
        let mut x = c.get();
        if x == 0 {
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            x = (seed ^ (c as *const Cell<u64> as u64).rotate_left(32)) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A uniformly distributed number in `0..n` (n > 0), by Lemire's multiply-shift.
pub(crate) fn fastrandn(n: usize) -> usize {
    (((fastrand() >> 32) * n as u64) >> 32) as usize
}

/// Yields the processor if the caller is a goroutine that may switch (used after a direct
/// hand-off, so the goroutine handed to runs now); otherwise does nothing.
pub(crate) fn yield_if_goroutine() {
    #[cfg(not(loom))]
    if let Some(m) = crate::runtime::current_m()
        && let Some(g) = m.curg()
        && g.pins.get() == 0
        && m.locks.load(Ordering::Relaxed) == 0
    {
        crate::yield_now();
    }
}
