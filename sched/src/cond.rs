//! [`Cond`], [`Once`] and [`WaitGroup`]: Go's `sync.Cond`, `sync.Once` and `sync.WaitGroup`,
//! parking goroutines (or sleeping threads outside the runtime), never spinning.
//!
//! ## Cond (Go's `notifyList`)
//!
//! Waiting is split in two so that no signal is lost between unlocking the mutex and parking:
//! `wait` first takes a *ticket* (the next number of a counter) under the condition's lock,
//! then unlocks the mutex, then parks unless its ticket has been notified meanwhile. `signal`
//! notifies the oldest unnotified ticket (waking its waiter if it has parked; one that has not
//! yet parked sees its ticket notified and does not park), `broadcast` every ticket taken so far.
//!
//! ## Once
//!
//! A flag read with Acquire on the fast path; the slow path runs the function under a
//! [`RawMutex`], and sets the flag (Release) when it returns — also if it panics, as Go's does —
//! so concurrent callers wait for the one running it and then return.
//!
//! ## WaitGroup
//!
//! One 64-bit word: the counter in the high half, the number of waiters in the low half. `wait`
//! counts itself in with a CAS (only while the counter is non-zero) and parks on a semaphore;
//! the `done` that brings the counter to zero with waiters present resets the word and releases
//! each waiter once. Misuse Go detects (a negative counter, `add` racing with the last `done`
//! while waiters are being released) is a described panic.

use core::cell::{Cell, UnsafeCell};
use std::collections::VecDeque;

use crate::WaitReason;
use crate::mutex::{MutexGuard, OnShutdown, RawMutex, Sema};
use crate::shim::{AtomicBool, AtomicU64, Ordering};
use crate::wait::{RawLock, Token, check_can_park, park_current_cancellable};

struct CondWaiter {
    /// Set by the park callback under the cond lock; taken by the notifier under it.
    token: Cell<Option<Token>>,
}

struct CondState {
    /// Next ticket to hand out.
    wait: u64,
    /// Next ticket to notify.
    notify: u64,
    /// Parked waiters with their tickets, in ticket order.
    queue: VecDeque<(u64, *const CondWaiter)>,
}

/// A condition variable for goroutines, used with a [`crate::Mutex`] (Go's `sync.Cond`).
pub struct Cond {
    lock: RawLock,
    /// Guarded by `lock`.
    st: UnsafeCell<CondState>,
}

// SAFETY: `st` is only touched with `lock` held; queued pointers point at parked waiters, valid
// until dequeued and woken.
unsafe impl Sync for Cond {}
// SAFETY: as above.
unsafe impl Send for Cond {}

impl core::fmt::Debug for Cond {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Cond")
    }
}

impl Default for Cond {
    fn default() -> Cond {
        Cond::new()
    }
}

impl Cond {
    /// A condition variable with no waiters.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::{Cond, Mutex, Runtime, go};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// let v = rt.block_on(|| {
    ///     let state = Arc::new((Mutex::new(None), Cond::new()));
    ///     let s = state.clone();
    ///     go(move || {
    ///         *s.0.lock() = Some(42);
    ///         s.1.signal();
    ///     });
    ///     let mut g = state.0.lock();
    ///     while g.is_none() {
    ///         g = state.1.wait(g);
    ///     }
    ///     g.unwrap()
    /// });
    /// assert_eq!(v, 42);
    /// ```
    pub fn new() -> Cond {
        Cond {
            lock: RawLock::new(),
            st: UnsafeCell::new(CondState { wait: 0, notify: 0, queue: VecDeque::new() }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut CondState) -> R) -> R {
        self.lock.lock();
        // SAFETY: we hold the lock for the duration of `f`.
        let r = f(unsafe { &mut *self.st.get() });
        self.lock.unlock();
        r
    }

    /// Unlocks the guard's mutex, parks until signalled, and locks it again. As with Go's,
    /// the condition must be re-checked in a loop: another goroutine may get there first.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::{Cond, Mutex, Runtime, go};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// rt.block_on(|| {
    ///     let pair = Arc::new((Mutex::new(0), Cond::new()));
    ///     for _ in 0..3 {
    ///         let p = pair.clone();
    ///         go(move || {
    ///             *p.0.lock() += 1;
    ///             p.1.broadcast();
    ///         });
    ///     }
    ///     let mut n = pair.0.lock();
    ///     while *n < 3 {
    ///         n = pair.1.wait(n); // unlocks, parks, locks again
    ///     }
    ///     assert_eq!(*n, 3);
    /// });
    /// ```
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        let m = guard.mutex();
        let ticket = self.with(|st| {
            let t = st.wait;
            st.wait += 1;
            t
        });
        drop(guard);
        self.wait_ticket(ticket);
        m.lock()
    }

    /// Like [`wait`](Cond::wait), for a [`RawMutex`] the caller holds.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use safepoint_sched::{Cond, RawMutex, Runtime, go};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// rt.block_on(|| {
    ///     let shared = Arc::new((RawMutex::new(), Cond::new(), AtomicBool::new(false)));
    ///     let s = shared.clone();
    ///     go(move || {
    ///         s.0.lock();
    ///         s.2.store(true, Ordering::Relaxed);
    ///         s.0.unlock();
    ///         s.1.signal();
    ///     });
    ///     let (m, c, ready) = &*shared;
    ///     m.lock();
    ///     while !ready.load(Ordering::Relaxed) {
    ///         c.wait_raw(m);
    ///     }
    ///     m.unlock();
    /// });
    /// ```
    pub fn wait_raw(&self, m: &RawMutex) {
        let ticket = self.with(|st| {
            let t = st.wait;
            st.wait += 1;
            t
        });
        m.unlock();
        self.wait_ticket(ticket);
        m.lock();
    }

    fn wait_ticket(&self, ticket: u64) {
        self.lock.lock();
        // SAFETY: we hold the lock until the park callback (or the early return) releases it.
        let st = unsafe { &mut *self.st.get() };
        if ticket < st.notify {
            self.lock.unlock();
            return;
        }
        // A goroutine that may not park: its ticket stays unnotified-but-unqueued, which only
        // makes a later `signal` find no waiter for it (a spurious wake-up's equivalent).
        check_can_park(|| self.lock.unlock());
        let w = CondWaiter { token: Cell::new(None) };
        // Tickets are queued in order, except that a waiter may queue after a later one: keep
        // the queue sorted so `signal` finds the oldest first.
        let pos = st.queue.iter().position(|&(t, _)| t > ticket).unwrap_or(st.queue.len());
        st.queue.insert(pos, (ticket, &w));
        let cancelled = park_current_cancellable(WaitReason::Cond, |t| {
            w.token.set(Some(t));
            self.lock.unlock();
            true
        });
        if cancelled {
            // Shutdown ended the park: leave the queue, unless a signal took us off it first
            // (then we were woken, and return as such). The ticket stays unnotified and
            // unqueued, as for a waiter that may not park: a later signal finds no waiter.
            let queued = self.with(|st| {
                let me = &w as *const CondWaiter;
                let pos = st.queue.iter().position(|&(_, x)| core::ptr::eq(x, me));
                if let Some(i) = pos {
                    st.queue.remove(i);
                }
                pos.is_some()
            });
            if queued {
                crate::proc::shutdown_unwind_current();
            }
        }
    }

    /// Wakes the goroutine waiting longest, if any.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::{Cond, Mutex, Runtime, go};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// rt.block_on(|| {
    ///     let q = Arc::new((Mutex::new(Vec::new()), Cond::new()));
    ///     let p = q.clone();
    ///     go(move || {
    ///         p.0.lock().push("job");
    ///         p.1.signal(); // wakes one waiter
    ///     });
    ///     let mut jobs = q.0.lock();
    ///     while jobs.is_empty() {
    ///         jobs = q.1.wait(jobs);
    ///     }
    ///     assert_eq!(jobs.pop(), Some("job"));
    /// });
    /// ```
    pub fn signal(&self) {
        let t = self.with(|st| {
            if st.wait == st.notify {
                return None;
            }
            let ticket = st.notify;
            st.notify += 1;
            match st.queue.front() {
                Some(&(t, w)) if t == ticket => {
                    st.queue.pop_front();
                    // SAFETY: a queued waiter is parked with its token stored (under this lock).
                    Some(unsafe { &*w }.token.take())
                }
                // Its waiter has not parked yet; it will see the ticket notified.
                _ => None,
            }
        });
        if let Some(t) = t.flatten() {
            t.wake();
        }
    }

    /// Wakes every waiting goroutine.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::{Cond, Mutex, Runtime, go};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// rt.block_on(|| {
    ///     let gate = Arc::new((Mutex::new(false), Cond::new()));
    ///     let waiters: Vec<_> = (0..4)
    ///         .map(|_| {
    ///             let g = gate.clone();
    ///             go(move || {
    ///                 let mut open = g.0.lock();
    ///                 while !*open {
    ///                     open = g.1.wait(open);
    ///                 }
    ///             })
    ///         })
    ///         .collect();
    ///     *gate.0.lock() = true;
    ///     gate.1.broadcast(); // wakes every waiter
    ///     waiters.into_iter().for_each(|w| w.join().unwrap());
    /// });
    /// ```
    pub fn broadcast(&self) {
        let ts: Vec<Token> = self.with(|st| {
            st.notify = st.wait;
            st.queue
                .drain(..)
                // SAFETY: as in `signal`.
                .filter_map(|(_, w)| unsafe { &*w }.token.take())
                .collect()
        });
        for t in ts {
            t.wake();
        }
    }
}

/// Runs a function once (Go's `sync.Once`).
#[derive(Default)]
pub struct Once {
    done: AtomicBool,
    m: RawMutex,
}

impl core::fmt::Debug for Once {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Once(done: {})", self.is_completed())
    }
}

impl Once {
    /// A Once that has not run.
    ///
    /// ```
    /// let once = safepoint_sched::Once::new();
    /// assert!(!once.is_completed());
    /// ```
    pub fn new() -> Once {
        Once { done: AtomicBool::new(false), m: RawMutex::new() }
    }

    /// Runs `f` if no call has run (or is running) one; otherwise waits for the one that ran to
    /// finish. If `f` panics, the Once still counts as done (as Go's).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use safepoint_sched::{Once, Runtime, go};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// let runs = rt.block_on(|| {
    ///     let once = Arc::new(Once::new());
    ///     let runs = Arc::new(AtomicUsize::new(0));
    ///     let hs: Vec<_> = (0..4)
    ///         .map(|_| {
    ///             let (once, runs) = (once.clone(), runs.clone());
    ///             go(move || once.call_once(|| { runs.fetch_add(1, Ordering::Relaxed); }))
    ///         })
    ///         .collect();
    ///     hs.into_iter().for_each(|h| h.join().unwrap());
    ///     runs.load(Ordering::Relaxed)
    /// });
    /// assert_eq!(runs, 1);
    /// ```
    pub fn call_once(&self, f: impl FnOnce()) {
        // Acquire: pairs with the Release store below: `f`'s effects are visible.
        if !self.done.load(Ordering::Acquire) {
            self.call_slow(f);
        }
    }

    #[cold]
    fn call_slow(&self, f: impl FnOnce()) {
        struct Finish<'a>(&'a Once, bool);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                if self.1 {
                    // Release: pairs with the Acquire load in `call_once`.
                    self.0.done.store(true, Ordering::Release);
                }
                self.0.m.unlock();
            }
        }
        self.m.lock();
        let mut fin = Finish(self, false);
        if !self.done.load(Ordering::Relaxed) {
            fin.1 = true;
            f();
        }
        drop(fin);
    }

    /// Whether a call has completed.
    ///
    /// ```
    /// let once = safepoint_sched::Once::new();
    /// once.call_once(|| ());
    /// assert!(once.is_completed());
    /// ```
    pub fn is_completed(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// Waits for a collection of goroutines to finish (Go's `sync.WaitGroup`): `add` before
/// starting each, `done` in each, `wait` parks until the count is zero.
pub struct WaitGroup {
    /// Counter (high 32 bits, signed) and waiters (low 32 bits).
    state: AtomicU64,
    sema: Sema,
}

impl core::fmt::Debug for WaitGroup {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "WaitGroup(count {})", self.count())
    }
}

impl Default for WaitGroup {
    fn default() -> WaitGroup {
        WaitGroup::new()
    }
}

impl WaitGroup {
    /// A group with count zero.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use safepoint_sched::{Runtime, WaitGroup, go};
    ///
    /// let rt = Runtime::builder().procs(2).build().unwrap();
    /// let done = rt.block_on(|| {
    ///     let wg = Arc::new(WaitGroup::new());
    ///     let done = Arc::new(AtomicUsize::new(0));
    ///     for _ in 0..8 {
    ///         let (wg, done) = (wg.clone(), done.clone());
    ///         wg.add(1);
    ///         go(move || {
    ///             done.fetch_add(1, Ordering::Relaxed);
    ///             wg.done();
    ///         });
    ///     }
    ///     wg.wait();
    ///     done.load(Ordering::Relaxed)
    /// });
    /// assert_eq!(done, 8);
    /// ```
    pub fn new() -> WaitGroup {
        WaitGroup { state: AtomicU64::new(0), sema: Sema::new(0) }
    }

    /// Adds `n` to the count.
    ///
    /// ```
    /// let wg = safepoint_sched::WaitGroup::new();
    /// wg.add(2);
    /// assert_eq!(wg.count(), 2);
    /// ```
    pub fn add(&self, n: usize) {
        let n = i32::try_from(n).unwrap_or_else(|_| panic!("sync: WaitGroup counter overflow"));
        self.add_delta(n);
    }

    /// Subtracts one; at zero, wakes every waiter. Panics if the count was already zero.
    ///
    /// ```
    /// let wg = safepoint_sched::WaitGroup::new();
    /// wg.add(1);
    /// wg.done();
    /// assert_eq!(wg.count(), 0);
    /// wg.wait(); // returns at once: the count is zero
    /// ```
    pub fn done(&self) {
        self.add_delta(-1);
    }

    fn add_delta(&self, delta: i32) {
        let d = ((delta as i64) << 32) as u64;
        // AcqRel: Release publishes this goroutine's work to the waiters (they Acquire the
        // word, or the semaphore that orders after it); Acquire sees the other adders'.
        let state = self.state.fetch_add(d, Ordering::AcqRel).wrapping_add(d);
        let v = (state >> 32) as i32;
        let w = state as u32;
        if v < 0 {
            panic!("sync: negative WaitGroup counter");
        }
        if w != 0 && delta > 0 && v == delta {
            panic!("sync: WaitGroup misuse: add called concurrently with wait");
        }
        if v > 0 || w == 0 {
            return;
        }
        // Counter zero with waiters: nobody may change the word now but us.
        if self.state.load(Ordering::Acquire) != state {
            panic!("sync: WaitGroup misuse: add called concurrently with wait");
        }
        self.state.store(0, Ordering::Release);
        for _ in 0..w {
            // A ghost (a waiter whose park shutdown ended) has nothing to complete.
            let _ = self.sema.release(false);
        }
    }

    /// The current count.
    ///
    /// ```
    /// let wg = safepoint_sched::WaitGroup::new();
    /// assert_eq!(wg.count(), 0);
    /// wg.add(3);
    /// wg.done();
    /// assert_eq!(wg.count(), 2);
    /// ```
    pub fn count(&self) -> usize {
        ((self.state.load(Ordering::Acquire) >> 32) as i32).max(0) as usize
    }

    /// Parks until the count is zero (off a goroutine, the thread sleeps).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::{Runtime, WaitGroup, go};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// rt.block_on(|| {
    ///     let wg = Arc::new(WaitGroup::new());
    ///     wg.add(4);
    ///     for _ in 0..4 {
    ///         let wg = wg.clone();
    ///         go(move || wg.done());
    ///     }
    ///     wg.wait();
    ///     assert_eq!(wg.count(), 0);
    /// });
    /// ```
    pub fn wait(&self) {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if (s >> 32) as i32 == 0 {
                return;
            }
            // AcqRel: as in `add_delta`.
            match self.state.compare_exchange(s, s + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // If shutdown ends the wait, a ghost stands in for us and takes the unit
                    // the last `done` owes us (see `crate::mutex`).
                    if !self.sema.acquire(false, WaitReason::WaitGroup, OnShutdown::Ghost) {
                        crate::proc::shutdown_unwind_current();
                    }
                    if self.state.load(Ordering::Acquire) >> 32 != 0 {
                        panic!("sync: WaitGroup is reused before previous wait has returned");
                    }
                    return;
                }
                Err(x) => s = x,
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::mutex::Mutex;
    use loom::sync::Arc;
    use loom::thread;

    /// Two `done`s race with a `wait`: the waiter always returns (never left parked), after
    /// both.
    #[test]
    fn loom_waitgroup_wait_done() {
        crate::wait::loom_model(|| {
            let wg = Arc::new(WaitGroup::new());
            let n = Arc::new(crate::shim::AtomicUsize::new(0));
            wg.add(2);
            let ts: Vec<_> = (0..2)
                .map(|_| {
                    let (wg, n) = (wg.clone(), n.clone());
                    thread::spawn(move || {
                        n.fetch_add(1, Ordering::Relaxed);
                        wg.done();
                    })
                })
                .collect();
            wg.wait();
            assert_eq!(n.load(Ordering::Relaxed), 2);
            for t in ts {
                t.join().unwrap();
            }
        });
    }

    /// A signal racing with a wait (between the waiter's unlock and its park): never lost.
    #[test]
    fn loom_cond_signal_not_lost() {
        crate::wait::loom_model(|| {
            let s = Arc::new((Mutex::new(false), Cond::new()));
            let s2 = s.clone();
            let t = thread::spawn(move || {
                *s2.0.lock() = true;
                s2.1.signal();
            });
            let mut g = s.0.lock();
            while !*g {
                g = s.1.wait(g);
            }
            drop(g);
            t.join().unwrap();
        });
    }
}
