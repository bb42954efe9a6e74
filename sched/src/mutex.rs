//! Goroutine-aware locks: [`Mutex`] (with Go's starvation mode) and [`RwLock`], and the
//! semaphore they park on.
//!
//! ## The semaphore (Go's `sema.go`, one queue per semaphore)
//!
//! [`Sema`] is a count plus a queue of parked waiters behind a [`RawLock`]. `acquire` takes a
//! unit if the count is positive (a CAS); otherwise it counts itself in `nwait`, re-checks the
//! count under the queue lock, queues (at the back, or at the front for a waiter that already
//! waited once: LIFO) and parks. `release` adds a unit and, if `nwait` is non-zero, dequeues the
//! first waiter under the lock and wakes it; the waiter then competes for the unit again. With
//! `handoff`, the releaser takes the unit for the waiter (a *ticket*) before waking it and
//! yields its P, so the waiter runs next and nobody can barge in. `nwait` and the count are
//! read and written sequentially consistently on both sides (a Dekker pair): either the releaser
//! sees the waiter counted, or the waiter's re-check sees the released unit.
//!
//! At shutdown every waiter's park may be ended (see the crate docs), in one of two ways the
//! user of the semaphore chooses ([`OnShutdown`]):
//!
//! * **Leave** (a [`Mutex`] waiter): the waiter takes its node out of the queue under the
//!   lock, unless a release dequeued it first (then it was woken: the release writes the ticket
//!   under the lock too, so the waiter never reads it early and it is never written after the
//!   waiter left), and takes itself off the mutex's waiter count. An unlock that counted it
//!   meanwhile leaves a unit (and `WOKEN`, or starvation mode) that the next waiter takes as an
//!   ordinary wake-up or hand-off.
//! * **Ghost** (an [`RwLock`]'s readers and writer, a [`crate::WaitGroup`]'s waiters): their
//!   counters count each waiter, and a release is owed to each, so a waiter cannot just leave
//!   (its unit would be left for a later waiter it does not belong to, or its count would hold
//!   up a writer for ever). The waiter takes its node out of the queue under the lock and
//!   leaves a *ghost* in its place: a count, under the same lock, still counted in `nwait`.
//!   A release that finds a ghost and a unit gives the unit to the ghost (before any queued
//!   waiter: units are interchangeable among the waiters of one semaphore) and returns true,
//!   and the releaser then does what the waiter would have done on waking, at once: an RwLock
//!   reader's `read_unlock`, a writer's `write_unlock`, nothing for a WaitGroup. Every release
//!   is owed to a counted waiter, queued, a ghost or not yet queued, and each takes one unit,
//!   so a ghost is never left without one: the release whose unit it is either finds the ghost
//!   (a ghost is made under the lock from a queued waiter, which the release's Dekker read of
//!   `nwait` sees) or finds its unit taken by a waiter not yet queued, whose own release is
//!   still to come.
//!
//! ## Mutex (Go's `sync.Mutex`)
//!
//! One atomic word: `LOCKED | WOKEN | STARVING | waiters << 3`. Lock is one CAS when free.
//! Otherwise, in *normal mode*, a locker may spin a little (only on a multi-P runtime, with
//! other Ps running and nothing else queued on its own P), then counts itself a waiter and parks
//! on the semaphore. Unlock of a contended mutex wakes one waiter (setting `WOKEN` so no other
//! is woken meanwhile), which then competes with newcomers — newcomers usually win (they are
//! running), which is what makes normal mode fast. A waiter that has waited over 1 ms switches
//! the mutex to *starvation mode*: unlock then hands the mutex directly to the first waiter
//! (the semaphore's ticket, and a yield), newcomers do not try to take it and queue at the
//! back. The waiter that receives it switches back to normal mode if it is the last waiter or
//! waited less than 1 ms.
//!
//! ## RwLock (Go's `sync.RWMutex`)
//!
//! A writer takes the inner mutex (writers exclude each other), then announces itself by
//! subtracting a large constant from the reader count, and waits on `writer_sem` for the
//! readers that were active (`reader_wait`) to leave. Readers arriving after the announcement
//! see a negative count and park on `reader_sem`; the writer's unlock adds the constant back
//! and releases every one of them. So a stream of readers cannot starve a writer.

use core::cell::UnsafeCell;
use std::collections::VecDeque;

use crate::WaitReason;
use crate::shim::{AtomicI32, AtomicU32, AtomicUsize, Ordering, spin_hint};
use crate::wait::{RawLock, Token, check_can_park, park_current_cancellable, yield_if_goroutine};

/// A waiter parked on a [`Sema`]; lives on its stack.
struct SemaWaiter {
    /// Set by the park callback under the queue lock; taken by the waker under it.
    token: core::cell::Cell<Option<Token>>,
    /// Handed the unit directly by a `handoff` release. Written under the queue lock, with the
    /// dequeue (so a waiter whose park shutdown ended, and which finds itself dequeued, reads
    /// it after taking that lock: it never reads it early, nor is it written after it left).
    ticket: core::cell::Cell<bool>,
}

/// What a [`Sema`] waiter does when shutdown ends its park (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnShutdown {
    /// Leave the queue; the caller undoes its own count of itself.
    Leave,
    /// Leave a ghost in the queue's count: the release owed to the waiter goes to the ghost,
    /// and its releaser completes the waiter's operation for it.
    Ghost,
}

/// A goroutine semaphore with LIFO re-queueing and direct hand-off (see the module docs).
pub(crate) struct Sema {
    count: AtomicU32,
    /// Queued waiters and ghosts.
    nwait: AtomicU32,
    /// Waiters whose park shutdown ended, owed a unit (see the module docs). Read and written
    /// only under `lock` (an atomic for `Sync`; Relaxed: the lock orders it).
    ghosts: AtomicU32,
    lock: RawLock,
    /// Guarded by `lock`.
    queue: UnsafeCell<VecDeque<*const SemaWaiter>>,
}

// SAFETY: `queue` is only touched with `lock` held; its pointers point at waiters parked on it,
// valid until they are dequeued and woken.
unsafe impl Sync for Sema {}
// SAFETY: as above.
unsafe impl Send for Sema {}

impl core::fmt::Debug for Sema {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Sema(count {}, waiting {})",
            self.count.load(Ordering::Relaxed),
            self.nwait.load(Ordering::Relaxed)
        )
    }
}

impl Sema {
    pub(crate) fn new(n: u32) -> Sema {
        Sema {
            count: AtomicU32::new(n),
            nwait: AtomicU32::new(0),
            ghosts: AtomicU32::new(0),
            lock: RawLock::new(),
            queue: UnsafeCell::new(VecDeque::new()),
        }
    }

    /// Takes a unit if there is one. The first read is a read-modify-write: in the Dekker pair
    /// with `release` (module docs) both sides write their own word and then read the other's
    /// with an RMW, which sees the latest value even under plain acquire/release (so the pair
    /// holds as loom models it, not only under SeqCst).
    fn try_take(&self) -> bool {
        let mut v = self.count.fetch_add(0, Ordering::SeqCst);
        loop {
            if v == 0 {
                return false;
            }
            // SeqCst: the Dekker pair with `release` (see the module docs).
            match self.count.compare_exchange(v, v - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return true,
                Err(x) => v = x,
            }
        }
    }

    /// Takes a unit, parking until one is free. `lifo`: queue at the front (a waiter that
    /// already waited once). Shutdown may end the park (see the crate docs): then the waiter
    /// leaves the queue without a unit as `on_shutdown` says and this returns false, and the
    /// caller must (for [`OnShutdown::Leave`]) undo its own count of itself, then unwind.
    /// Otherwise true: a unit was taken.
    pub(crate) fn acquire(&self, lifo: bool, reason: WaitReason, on_shutdown: OnShutdown) -> bool {
        // Fast path: a plain read is enough here (the re-check under the lock is the Dekker one).
        if self.count.load(Ordering::Relaxed) != 0 && self.try_take() {
            return true;
        }
        loop {
            self.lock.lock();
            // SeqCst: the Dekker pair with `release`.
            self.nwait.fetch_add(1, Ordering::SeqCst);
            if self.try_take() {
                self.nwait.fetch_sub(1, Ordering::SeqCst);
                self.lock.unlock();
                return true;
            }
            check_can_park(|| {
                self.nwait.fetch_sub(1, Ordering::SeqCst);
                self.lock.unlock();
            });
            let w = SemaWaiter {
                token: core::cell::Cell::new(None),
                ticket: core::cell::Cell::new(false),
            };
            // SAFETY: we hold the lock; `w` stays on this frame until a releaser has dequeued
            // it and woken us.
            let q = unsafe { &mut *self.queue.get() };
            if lifo {
                q.push_front(&w);
            } else {
                q.push_back(&w);
            }
            let park = |t| {
                w.token.set(Some(t));
                self.lock.unlock();
                true
            };
            if park_current_cancellable(reason, park) && self.leave(&w, on_shutdown) {
                return false;
            }
            if w.ticket.get() || self.try_take() {
                return true;
            }
        }
    }

    /// After shutdown ended the park of `w`: takes it out of the queue (true), leaving a ghost
    /// in its place for [`OnShutdown::Ghost`], unless a release dequeued it first (false: it
    /// was woken, and its ticket is written).
    fn leave(&self, w: &SemaWaiter, on_shutdown: OnShutdown) -> bool {
        self.lock.lock();
        // SAFETY: we hold the lock.
        let q = unsafe { &mut *self.queue.get() };
        let me = w as *const SemaWaiter;
        let pos = q.iter().position(|&x| core::ptr::eq(x, me));
        if let Some(i) = pos {
            q.remove(i);
            match on_shutdown {
                // SeqCst: as every update of `nwait` (the Dekker pair with `release`).
                OnShutdown::Leave => drop(self.nwait.fetch_sub(1, Ordering::SeqCst)),
                // Still counted in `nwait`: a release owed to us finds the ghost. Relaxed: under
                // the lock.
                OnShutdown::Ghost => drop(self.ghosts.fetch_add(1, Ordering::Relaxed)),
            }
        }
        let t = w.token.take();
        self.lock.unlock();
        drop(t);
        pos.is_some()
    }

    /// Returns a unit and wakes the first waiter, if any. `handoff`: give the unit to that
    /// waiter directly and yield to it (never with ghosts: a [`Mutex`]'s waiters leave).
    ///
    /// True if the unit went to a ghost (see the module docs): the caller must then complete
    /// the operation of the waiter the ghost stands for.
    #[must_use = "a ghost that took the unit must have its operation completed"]
    pub(crate) fn release(&self, handoff: bool) -> bool {
        // SeqCst: the Dekker pair with `acquire`.
        self.count.fetch_add(1, Ordering::SeqCst);
        // An RMW read: see `try_take`.
        if self.nwait.fetch_add(0, Ordering::SeqCst) == 0 {
            return false;
        }
        self.lock.lock();
        if self.nwait.load(Ordering::SeqCst) == 0 {
            self.lock.unlock();
            return false;
        }
        // Relaxed: under the lock.
        let ghosts = self.ghosts.load(Ordering::Relaxed);
        if ghosts != 0 && self.try_take() {
            debug_assert!(!handoff, "a ghost on a semaphore that hands off");
            self.ghosts.store(ghosts - 1, Ordering::Relaxed);
            self.nwait.fetch_sub(1, Ordering::SeqCst);
            self.lock.unlock();
            return true;
        }
        // SAFETY: we hold the lock.
        let w = unsafe { &mut *self.queue.get() }.pop_front();
        let Some(w) = w else {
            self.lock.unlock();
            return false;
        };
        self.nwait.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: a queued waiter is parked (its token stored before the lock was released)
        // and stays so until we wake it, or (its park ended by shutdown) until it has taken
        // this lock after us: we touch it only under the lock.
        let w = unsafe { &*w };
        let t = w.token.take();
        let ticket = handoff && self.try_take();
        w.ticket.set(ticket);
        self.lock.unlock();
        let t = t.unwrap_or_else(|| crate::throw!("semaphore waiter queued without a token"));
        t.wake();
        if ticket {
            // Let the waiter, now in our P's `runnext`, run at once.
            yield_if_goroutine();
        }
        false
    }
}

const LOCKED: i32 = 1;
const WOKEN: i32 = 2;
const STARVING: i32 = 4;
const WAITER_SHIFT: u32 = 3;
/// A waiter waiting longer than this switches the mutex to starvation mode (Go's 1 ms).
const STARVATION_NS: u64 = 1_000_000;

/// A goroutine-aware mutual exclusion lock without data (Go's `sync.Mutex`): [`lock`] and
/// [`unlock`] may be called by different goroutines (or threads). See the module docs.
///
/// [`lock`]: RawMutex::lock
/// [`unlock`]: RawMutex::unlock
pub struct RawMutex {
    state: AtomicI32,
    sema: Sema,
    /// Times this mutex entered starvation mode (statistics; tests check the mode engages).
    starvations: AtomicUsize,
}

impl core::fmt::Debug for RawMutex {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = self.state.load(Ordering::Relaxed);
        write!(
            f,
            "RawMutex(locked: {}, starving: {}, waiters: {})",
            s & LOCKED != 0,
            s & STARVING != 0,
            s >> WAITER_SHIFT
        )
    }
}

impl Default for RawMutex {
    fn default() -> RawMutex {
        RawMutex::new()
    }
}

/// Whether a locker may spin now (Go's `sync_runtime_canSpin`): a few rounds only, on a
/// multi-P runtime with another P running, and with nothing else queued on our own P (then
/// parking lets it run).
fn can_spin(iter: u32) -> bool {
    if iter >= 4 {
        return false;
    }
    #[cfg(loom)]
    {
        false
    }
    #[cfg(not(loom))]
    {
        let Some(m) = crate::runtime::current_m() else { return false };
        let Some(p) = m.p() else { return false };
        let s = m.sched();
        if s.procs <= s.npidle.load(Ordering::Relaxed) + s.nmspinning.load(Ordering::Relaxed) + 1 {
            return false;
        }
        p.runq_empty()
    }
}

fn do_spin() {
    for _ in 0..30 {
        spin_hint();
    }
}

fn now_ns() -> u64 {
    #[cfg(loom)]
    {
        0
    }
    #[cfg(not(loom))]
    {
        safepoint_arch::nanotime()
    }
}

impl RawMutex {
    /// An unlocked mutex.
    ///
    /// ```
    /// let m = safepoint_sched::RawMutex::new();
    /// assert!(!m.is_locked());
    /// ```
    pub fn new() -> RawMutex {
        RawMutex { state: AtomicI32::new(0), sema: Sema::new(0), starvations: AtomicUsize::new(0) }
    }

    /// Locks, parking while another goroutine holds it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use safepoint_sched::{RawMutex, Runtime, go};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// let total = rt.block_on(|| {
    ///     let m = Arc::new((RawMutex::new(), AtomicU64::new(0)));
    ///     let hs: Vec<_> = (0..4)
    ///         .map(|_| {
    ///             let m = m.clone();
    ///             go(move || {
    ///                 for _ in 0..100 {
    ///                     m.0.lock(); // parks the goroutine while another holds it
    ///                     let v = m.1.load(Ordering::Relaxed);
    ///                     m.1.store(v + 1, Ordering::Relaxed);
    ///                     m.0.unlock();
    ///                 }
    ///             })
    ///         })
    ///         .collect();
    ///     hs.into_iter().for_each(|h| h.join().unwrap());
    ///     m.1.load(Ordering::Relaxed)
    /// });
    /// assert_eq!(total, 400);
    /// ```
    #[inline]
    pub fn lock(&self) {
        // Free (possibly with waiters parked, or one woken and not yet running): take it with
        // one CAS — the first round of `lock_slow` would do exactly this.
        let old = self.state.load(Ordering::Relaxed);
        // Acquire: pairs with the Release in `unlock`: the previous critical section's writes
        // are visible.
        if old & (LOCKED | STARVING) == 0
            && self
                .state
                .compare_exchange(old, old | LOCKED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
        self.lock_slow();
    }

    /// Locks if free now.
    ///
    /// ```
    /// let m = safepoint_sched::RawMutex::new();
    /// assert!(m.try_lock());
    /// assert!(!m.try_lock()); // held
    /// m.unlock();
    /// ```
    pub fn try_lock(&self) -> bool {
        let mut old = self.state.load(Ordering::Relaxed);
        loop {
            if old & (LOCKED | STARVING) != 0 {
                return false;
            }
            // Acquire: as in `lock`.
            match self.state.compare_exchange(
                old,
                old | LOCKED,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(x) => old = x,
            }
        }
    }

    #[cold]
    fn lock_slow(&self) {
        let mut wait_start = 0u64;
        let mut starving = false;
        let mut awoke = false;
        let mut iter = 0;
        let mut old = self.state.load(Ordering::Relaxed);
        loop {
            // Spin in normal mode while it is held (not in starvation mode: ownership is handed
            // to waiters, we would not get it).
            if old & (LOCKED | STARVING) == LOCKED && can_spin(iter) {
                // Tell unlock not to wake another waiter: we are awake and trying.
                if !awoke
                    && old & WOKEN == 0
                    && old >> WAITER_SHIFT != 0
                    && self
                        .state
                        .compare_exchange(old, old | WOKEN, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    awoke = true;
                }
                do_spin();
                iter += 1;
                old = self.state.load(Ordering::Relaxed);
                continue;
            }
            let mut new = old;
            if old & STARVING == 0 {
                new |= LOCKED; // newcomers do not take a starving mutex
            }
            if old & (LOCKED | STARVING) != 0 {
                new += 1 << WAITER_SHIFT;
            }
            if starving && old & LOCKED != 0 {
                new |= STARVING;
            }
            if awoke {
                if new & WOKEN == 0 {
                    crate::throw!("sync: inconsistent mutex state");
                }
                new &= !WOKEN;
            }
            // Acquire: as in `lock` (when this CAS takes the mutex).
            match self.state.compare_exchange(old, new, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => {
                    if old & (LOCKED | STARVING) == 0 {
                        return; // locked by this CAS
                    }
                    if new & STARVING != 0 && old & STARVING == 0 {
                        self.starvations.fetch_add(1, Ordering::Relaxed);
                    }
                    let lifo = wait_start != 0;
                    if wait_start == 0 {
                        wait_start = now_ns();
                    }
                    if !self.sema.acquire(lifo, WaitReason::Mutex, OnShutdown::Leave) {
                        // Shutdown ended the wait: no longer a waiter. The count may have
                        // been taken for us by an unlock meanwhile (it then set WOKEN or, in
                        // starvation mode, released a unit: the next waiter to wake takes it
                        // as an ordinary wake-up or hand-off, and the state stays consistent).
                        self.leave_waiters();
                        crate::proc::shutdown_unwind_current();
                    }
                    starving = starving || now_ns() - wait_start > STARVATION_NS;
                    old = self.state.load(Ordering::Relaxed);
                    if old & STARVING != 0 {
                        // Handed to us: it is unlocked with us counted as a waiter.
                        if old & (LOCKED | WOKEN) != 0 || old >> WAITER_SHIFT == 0 {
                            crate::throw!("sync: inconsistent mutex state");
                        }
                        let mut delta = LOCKED - (1 << WAITER_SHIFT);
                        if !starving || old >> WAITER_SHIFT == 1 {
                            // Leave starvation mode: we waited little, or we are the last.
                            delta -= STARVING;
                        }
                        // Acquire: the hand-off's Release (in unlock) is what we take over.
                        self.state.fetch_add(delta, Ordering::Acquire);
                        return;
                    }
                    awoke = true;
                    iter = 0;
                }
                Err(x) => old = x,
            }
        }
    }

    /// Takes one waiter off the count, for a waiter that leaves without the mutex (its park
    /// ended by shutdown), unless an unlock already took it off to wake it.
    fn leave_waiters(&self) {
        let mut old = self.state.load(Ordering::Relaxed);
        while old >> WAITER_SHIFT != 0 {
            match self.state.compare_exchange(
                old,
                old - (1 << WAITER_SHIFT),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(x) => old = x,
            }
        }
    }

    /// Unlocks. Panics if it is not locked (Go throws; a described panic here).
    ///
    /// ```
    /// let m = safepoint_sched::RawMutex::new();
    /// m.lock();
    /// m.unlock();
    /// assert!(!m.is_locked());
    /// ```
    #[inline]
    pub fn unlock(&self) {
        // Release: pairs with the Acquire of the next lock.
        let new = self.state.fetch_sub(LOCKED, Ordering::Release) - LOCKED;
        if new == 0 {
            return;
        }
        // Waiters, but none to wake now (one is already awake, or a newcomer has locked it) in
        // normal mode: `unlock_slow` would return at once; skip the call.
        if (new + LOCKED) & LOCKED != 0
            && new & STARVING == 0
            && (new >> WAITER_SHIFT == 0 || new & (LOCKED | WOKEN) != 0)
        {
            return;
        }
        self.unlock_slow(new);
    }

    #[cold]
    fn unlock_slow(&self, new: i32) {
        if (new + LOCKED) & LOCKED == 0 {
            // Undo, so the state stays consistent for whoever holds it next.
            self.state.fetch_add(LOCKED, Ordering::Relaxed);
            panic!("sync: unlock of unlocked mutex");
        }
        if new & STARVING == 0 {
            let mut old = new;
            loop {
                // Nobody to wake, or someone is already awake, locked it, or it starves.
                if old >> WAITER_SHIFT == 0 || old & (LOCKED | WOKEN | STARVING) != 0 {
                    return;
                }
                let new = (old - (1 << WAITER_SHIFT)) | WOKEN;
                match self.state.compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        // Never a ghost: a mutex's waiters leave.
                        let _ = self.sema.release(false);
                        return;
                    }
                    Err(x) => old = x,
                }
            }
        } else {
            // Starvation mode: hand the mutex to the first waiter and let it run.
            let _ = self.sema.release(true);
        }
    }

    /// Whether it is locked now (racy; for assertions and dumps).
    ///
    /// ```
    /// let m = safepoint_sched::RawMutex::new();
    /// m.lock();
    /// assert!(m.is_locked());
    /// m.unlock();
    /// ```
    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & LOCKED != 0
    }

    /// How many times this mutex has entered starvation mode.
    ///
    /// ```
    /// let m = safepoint_sched::RawMutex::new();
    /// m.lock();
    /// m.unlock();
    /// assert_eq!(m.starvation_count(), 0); // nobody waited at all
    /// ```
    pub fn starvation_count(&self) -> usize {
        self.starvations.load(Ordering::Relaxed)
    }
}

/// A goroutine-aware mutex protecting a `T`: [`lock`](Mutex::lock) parks the goroutine (never
/// the OS thread) while another holds it; the guard may be held across parks, yields and
/// channel operations. Go's algorithm, with starvation mode (see the module docs). No
/// poisoning: a panic while holding the guard unlocks it.
#[derive(Default)]
pub struct Mutex<T: ?Sized> {
    raw: RawMutex,
    data: UnsafeCell<T>,
}

// SAFETY: the mutex gives one holder at a time access to `data`; T: Send because holders may be
// on different threads.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}

impl<T: ?Sized> core::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Mutex({:?})", self.raw)
    }
}

/// Holds a [`Mutex`] locked; unlocks when dropped.
pub struct MutexGuard<'a, T: ?Sized> {
    m: &'a Mutex<T>,
}

// SAFETY: sharing the guard shares `&T`.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<T: ?Sized + core::fmt::Debug> core::fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        (**self).fmt(f)
    }
}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `v`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::{Mutex, Runtime, go};
    ///
    /// let rt = Runtime::builder().procs(2).build().unwrap();
    /// let n = rt.block_on(|| {
    ///     let m = Arc::new(Mutex::new(0));
    ///     let hs: Vec<_> = (0..4)
    ///         .map(|_| {
    ///             let m = m.clone();
    ///             go(move || {
    ///                 for _ in 0..100 {
    ///                     *m.lock() += 1; // a waiter parks; its thread runs other goroutines
    ///                 }
    ///             })
    ///         })
    ///         .collect();
    ///     hs.into_iter().for_each(|h| h.join().unwrap());
    ///     *m.lock()
    /// });
    /// assert_eq!(n, 400);
    /// ```
    ///
    /// ```
    /// let m = safepoint_sched::Mutex::new(vec![1]);
    /// m.lock().push(2);
    /// assert_eq!(*m.lock(), [1, 2]);
    /// ```
    pub fn new(v: T) -> Mutex<T> {
        Mutex { raw: RawMutex::new(), data: UnsafeCell::new(v) }
    }

    /// The value, consuming the mutex.
    ///
    /// ```
    /// let m = safepoint_sched::Mutex::new(5);
    /// *m.lock() += 1;
    /// assert_eq!(m.into_inner(), 6);
    /// ```
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks, parking while another holds it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::{Mutex, Runtime, go};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// let n = rt.block_on(|| {
    ///     let m = Arc::new(Mutex::new(0u32));
    ///     let hs: Vec<_> = (0..4)
    ///         .map(|_| {
    ///             let m = m.clone();
    ///             go(move || (0..100).for_each(|_| *m.lock() += 1))
    ///         })
    ///         .collect();
    ///     hs.into_iter().for_each(|h| h.join().unwrap());
    ///     *m.lock()
    /// });
    /// assert_eq!(n, 400);
    /// ```
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.raw.lock();
        MutexGuard { m: self }
    }

    /// Locks if free now.
    ///
    /// ```
    /// let m = safepoint_sched::Mutex::new(());
    /// let g = m.try_lock().unwrap();
    /// assert!(m.try_lock().is_none()); // held
    /// drop(g);
    /// assert!(m.try_lock().is_some());
    /// ```
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.raw.try_lock().then(|| MutexGuard { m: self })
    }

    /// The value, through exclusive access (no locking needed).
    ///
    /// ```
    /// let mut m = safepoint_sched::Mutex::new(1);
    /// *m.get_mut() = 2; // no locking: the &mut proves nobody else can
    /// assert_eq!(*m.lock(), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// The raw lock (statistics, or to pair with a [`crate::Cond`]).
    ///
    /// ```
    /// let m = safepoint_sched::Mutex::new(0);
    /// let g = m.lock();
    /// assert!(m.raw().is_locked());
    /// drop(g);
    /// assert!(!m.raw().is_locked());
    /// ```
    pub fn raw(&self) -> &RawMutex {
        &self.raw
    }
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// The mutex this guard holds.
    pub(crate) fn mutex(&self) -> &'a Mutex<T> {
        self.m
    }
}

impl<T: ?Sized> core::ops::Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.m.data.get() }
    }
}

impl<T: ?Sized> core::ops::DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.m.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.m.raw.unlock();
    }
}

/// Most readers a [`RawRwLock`] admits at once (Go's `rwmutexMaxReaders`).
const MAX_READERS: i32 = 1 << 30;

/// A goroutine-aware reader-writer lock without data (Go's `sync.RWMutex`); writers are not
/// starved by a stream of readers. See the module docs.
pub struct RawRwLock {
    w: RawMutex,
    writer_sem: Sema,
    reader_sem: Sema,
    /// Readers holding or waiting; minus `MAX_READERS` while a writer is pending.
    reader_count: AtomicI32,
    /// Readers the pending writer still waits for.
    reader_wait: AtomicI32,
}

impl core::fmt::Debug for RawRwLock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RawRwLock(readers {})", self.reader_count.load(Ordering::Relaxed))
    }
}

impl Default for RawRwLock {
    fn default() -> RawRwLock {
        RawRwLock::new()
    }
}

impl RawRwLock {
    /// An unlocked lock.
    ///
    /// ```
    /// let l = safepoint_sched::RawRwLock::new();
    /// assert!(l.try_write_lock());
    /// l.write_unlock();
    /// ```
    pub fn new() -> RawRwLock {
        RawRwLock {
            w: RawMutex::new(),
            writer_sem: Sema::new(0),
            reader_sem: Sema::new(0),
            reader_count: AtomicI32::new(0),
            reader_wait: AtomicI32::new(0),
        }
    }

    /// Locks for reading, parking while a writer holds or waits for it.
    ///
    /// ```
    /// let l = safepoint_sched::RawRwLock::new();
    /// l.read_lock();
    /// l.read_lock(); // readers share it
    /// assert!(!l.try_write_lock());
    /// l.read_unlock();
    /// l.read_unlock();
    /// ```
    pub fn read_lock(&self) {
        // AcqRel: Acquire pairs with the writer's Release in `write_unlock`; the increment is
        // what a pending writer counts.
        if self.reader_count.fetch_add(1, Ordering::AcqRel) + 1 < 0 {
            // A writer is pending: wait for it. If shutdown ends the wait, a ghost stands in
            // for us and takes the unit the writer's unlock owes us, then its releaser
            // read-unlocks for us (see the module docs).
            if !self.reader_sem.acquire(false, WaitReason::RwLock, OnShutdown::Ghost) {
                crate::proc::shutdown_unwind_current();
            }
        }
    }

    /// Locks for reading if no writer holds or waits for it.
    ///
    /// ```
    /// let l = safepoint_sched::RawRwLock::new();
    /// l.write_lock();
    /// assert!(!l.try_read_lock()); // a writer holds it
    /// l.write_unlock();
    /// assert!(l.try_read_lock());
    /// l.read_unlock();
    /// ```
    pub fn try_read_lock(&self) -> bool {
        let mut c = self.reader_count.load(Ordering::Relaxed);
        loop {
            if c < 0 {
                return false;
            }
            // Acquire: as in `read_lock`.
            match self.reader_count.compare_exchange(c, c + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(x) => c = x,
            }
        }
    }

    /// Unlocks a read lock.
    ///
    /// ```
    /// let l = safepoint_sched::RawRwLock::new();
    /// l.read_lock();
    /// l.read_unlock();
    /// assert!(l.try_write_lock()); // the last reader left
    /// l.write_unlock();
    /// ```
    pub fn read_unlock(&self) {
        // Release: the reader's reads happen before the writer's Acquire.
        let r = self.reader_count.fetch_sub(1, Ordering::Release) - 1;
        if r < 0 {
            self.read_unlock_slow(r);
        }
    }

    #[cold]
    fn read_unlock_slow(&self, r: i32) {
        if r + 1 == 0 || r + 1 == -MAX_READERS {
            self.reader_count.fetch_add(1, Ordering::Relaxed);
            panic!("sync: read_unlock of unlocked RwLock");
        }
        // A writer is pending; the last departing reader wakes it.
        // AcqRel: the departing readers' Releases are gathered into the writer's wake-up.
        if self.reader_wait.fetch_sub(1, Ordering::AcqRel) - 1 == 0
            && self.writer_sem.release(false)
        {
            // The writer's park was ended by shutdown: its ghost has the lock now; unlock for it.
            self.write_unlock();
        }
    }

    /// Locks for writing, parking while readers or another writer hold it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::{RawRwLock, Runtime, go};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// rt.block_on(|| {
    ///     let l = Arc::new(RawRwLock::new());
    ///     l.read_lock();
    ///     let w = l.clone();
    ///     let writer = go(move || {
    ///         w.write_lock(); // parks until the reader leaves
    ///         w.write_unlock();
    ///     });
    ///     l.read_unlock();
    ///     writer.join().unwrap();
    /// });
    /// ```
    pub fn write_lock(&self) {
        self.w.lock();
        // Announce the pending writer to readers.
        // AcqRel: Acquire takes the readers' Releases; later readers see the negative count.
        let r = self.reader_count.fetch_sub(MAX_READERS, Ordering::AcqRel);
        // Wait for the active readers.
        if r != 0
            && self.reader_wait.fetch_add(r, Ordering::AcqRel) + r != 0
            // If shutdown ends the wait, a ghost stands in for us: we stay the pending writer
            // (holding `w`) until the last active reader leaves, whose release goes to the
            // ghost, and that reader write-unlocks for us (see the module docs).
            && !self.writer_sem.acquire(false, WaitReason::RwLock, OnShutdown::Ghost)
        {
            crate::proc::shutdown_unwind_current();
        }
    }

    /// Locks for writing if free now.
    ///
    /// ```
    /// let l = safepoint_sched::RawRwLock::new();
    /// assert!(l.try_write_lock());
    /// assert!(!l.try_write_lock());
    /// l.write_unlock();
    /// ```
    pub fn try_write_lock(&self) -> bool {
        if !self.w.try_lock() {
            return false;
        }
        // Acquire: as in `write_lock`.
        if self
            .reader_count
            .compare_exchange(0, -MAX_READERS, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.w.unlock();
            return false;
        }
        true
    }

    /// Unlocks a write lock.
    ///
    /// ```
    /// let l = safepoint_sched::RawRwLock::new();
    /// l.write_lock();
    /// l.write_unlock();
    /// assert!(l.try_read_lock());
    /// l.read_unlock();
    /// ```
    pub fn write_unlock(&self) {
        // Release: the writer's writes happen before the readers' Acquire.
        let r = self.reader_count.fetch_add(MAX_READERS, Ordering::Release) + MAX_READERS;
        if r >= MAX_READERS {
            self.reader_count.fetch_sub(MAX_READERS, Ordering::Relaxed);
            panic!("sync: write_unlock of unlocked RwLock");
        }
        // Release the readers that queued behind us.
        for _ in 0..r {
            if self.reader_sem.release(false) {
                // A reader's park was ended by shutdown: its ghost holds a read lock now
                // (`w` is still ours, so no writer is pending); unlock it.
                self.read_unlock();
            }
        }
        self.w.unlock();
    }
}

/// A goroutine-aware reader-writer lock protecting a `T` (see [`RawRwLock`]).
#[derive(Default)]
pub struct RwLock<T: ?Sized> {
    raw: RawRwLock,
    data: UnsafeCell<T>,
}

// SAFETY: readers share `&T` (T: Sync), a writer has `&mut T` (T: Send).
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}

impl<T: ?Sized> core::fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RwLock({:?})", self.raw)
    }
}

/// Holds a [`RwLock`] for reading.
pub struct RwLockReadGuard<'a, T: ?Sized> {
    l: &'a RwLock<T>,
}

/// Holds a [`RwLock`] for writing.
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    l: &'a RwLock<T>,
}

// SAFETY: sharing a read guard shares `&T`.
unsafe impl<T: ?Sized + Sync> Sync for RwLockReadGuard<'_, T> {}
// SAFETY: sharing a write guard shares `&T`.
unsafe impl<T: ?Sized + Sync> Sync for RwLockWriteGuard<'_, T> {}

impl<T: ?Sized + core::fmt::Debug> core::fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: ?Sized + core::fmt::Debug> core::fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        (**self).fmt(f)
    }
}

impl<T> RwLock<T> {
    /// An unlocked lock holding `v`.
    ///
    /// ```
    /// let l = safepoint_sched::RwLock::new(String::from("a"));
    /// l.write().push('b');
    /// assert_eq!(*l.read(), "ab");
    /// ```
    pub fn new(v: T) -> RwLock<T> {
        RwLock { raw: RawRwLock::new(), data: UnsafeCell::new(v) }
    }

    /// The value, consuming the lock.
    ///
    /// ```
    /// let l = safepoint_sched::RwLock::new(vec![1]);
    /// l.write().push(2);
    /// assert_eq!(l.into_inner(), [1, 2]);
    /// ```
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Locks for reading.
    ///
    /// ```
    /// let l = safepoint_sched::RwLock::new(7);
    /// let (a, b) = (l.read(), l.read()); // two readers at once
    /// assert_eq!(*a + *b, 14);
    /// ```
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.raw.read_lock();
        RwLockReadGuard { l: self }
    }

    /// Locks for writing.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::{Runtime, RwLock, go};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// let v = rt.block_on(|| {
    ///     let l = Arc::new(RwLock::new(0));
    ///     let hs: Vec<_> = (0..4)
    ///         .map(|_| {
    ///             let l = l.clone();
    ///             go(move || *l.write() += 1)
    ///         })
    ///         .collect();
    ///     hs.into_iter().for_each(|h| h.join().unwrap());
    ///     *l.read()
    /// });
    /// assert_eq!(v, 4);
    /// ```
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.raw.write_lock();
        RwLockWriteGuard { l: self }
    }

    /// Locks for reading if possible now.
    ///
    /// ```
    /// let l = safepoint_sched::RwLock::new(1);
    /// let w = l.write();
    /// assert!(l.try_read().is_none());
    /// drop(w);
    /// assert_eq!(*l.try_read().unwrap(), 1);
    /// ```
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        self.raw.try_read_lock().then(|| RwLockReadGuard { l: self })
    }

    /// Locks for writing if possible now.
    ///
    /// ```
    /// let l = safepoint_sched::RwLock::new(1);
    /// let r = l.read();
    /// assert!(l.try_write().is_none());
    /// drop(r);
    /// *l.try_write().unwrap() = 2;
    /// assert_eq!(*l.read(), 2);
    /// ```
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        self.raw.try_write_lock().then(|| RwLockWriteGuard { l: self })
    }

    /// The value, through exclusive access.
    ///
    /// ```
    /// let mut l = safepoint_sched::RwLock::new(1);
    /// *l.get_mut() += 1;
    /// assert_eq!(*l.read(), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T: ?Sized> core::ops::Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds a read lock: no writer.
        unsafe { &*self.l.data.get() }
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        self.l.raw.read_unlock();
    }
}

impl<T: ?Sized> core::ops::Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the write lock.
        unsafe { &*self.l.data.get() }
    }
}

impl<T: ?Sized> core::ops::DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the write lock: exclusive.
        unsafe { &mut *self.l.data.get() }
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        self.l.raw.write_unlock();
    }
}

impl Sema {
    /// Waiters now (tests).
    #[cfg(all(test, loom))]
    fn waiters(&self) -> u32 {
        self.nwait.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Two threads increment under the mutex: no lost update, nobody left parked.
    #[test]
    fn loom_mutex_excludes() {
        crate::wait::loom_model(|| {
            let m = Arc::new(Mutex::new(0u32));
            let m2 = m.clone();
            let t = thread::spawn(move || *m2.lock() += 1);
            *m.lock() += 1;
            t.join().unwrap();
            assert_eq!(*m.lock(), 2);
            assert_eq!(m.raw().sema.waiters(), 0);
        });
    }
}
