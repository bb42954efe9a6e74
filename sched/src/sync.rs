//! The runtime's own goroutine-aware semaphore (used for `world_sema`). It parks goroutines,
//! never OS threads. (The full set — channels, select, mutexes, WaitGroup, timers — is its own
//! layer: `chan`, `select`, `mutex`, `cond`, `timer`.)

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::GoroutineRef;

/// A counting semaphore whose waiters are goroutines, served in FIFO order with direct
/// hand-off (a released permit goes to the first waiter, never to a newcomer).
#[derive(Debug)]
pub struct Sema {
    state: Mutex<SemaState>,
}

#[derive(Debug)]
struct SemaState {
    permits: usize,
    waiters: VecDeque<GoroutineRef>,
}

impl Sema {
    /// A semaphore with `permits` permits.
    ///
    /// ```
    /// let s = safepoint_sched::Sema::new(2);
    /// assert!(s.try_acquire() && s.try_acquire());
    /// assert!(!s.try_acquire());
    /// ```
    pub fn new(permits: usize) -> Sema {
        Sema { state: Mutex::new(SemaState { permits, waiters: VecDeque::new() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SemaState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a permit, parking the goroutine until one is free.
    ///
    /// Runs on: a goroutine.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::{Runtime, Sema, go};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// rt.block_on(|| {
    ///     let s = Arc::new(Sema::new(0));
    ///     let r = s.clone();
    ///     go(move || r.release());
    ///     s.acquire(); // parks until the release
    /// });
    /// ```
    pub fn acquire(&self) {
        {
            let mut s = self.lock();
            if s.permits > 0 {
                s.permits -= 1;
                return;
            }
        }
        let mut me = None;
        let cancelled = crate::proc::park_cancellable(crate::WaitReason::Sema as usize, |r| {
            let mut s = self.lock();
            if s.permits > 0 {
                s.permits -= 1;
                return false;
            }
            me = Some((r.g, r.generation));
            s.waiters.push_back(r);
            true
        });
        if cancelled {
            // Shutdown ended the park: take our token out of the queue, unless a release has
            // already taken it and handed us its permit (then we have it, as if woken).
            let mut s = self.lock();
            let pos = s.waiters.iter().position(|w| Some((w.g, w.generation)) == me);
            if let Some(i) = pos {
                s.waiters.remove(i);
                drop(s);
                crate::proc::shutdown_unwind_current();
            }
        }
        // Woken by `release`, which handed its permit to us.
    }

    /// Takes a permit if one is free.
    ///
    /// ```
    /// let s = safepoint_sched::Sema::new(1);
    /// assert!(s.try_acquire());
    /// assert!(!s.try_acquire());
    /// ```
    pub fn try_acquire(&self) -> bool {
        let mut s = self.lock();
        if s.permits > 0 {
            s.permits -= 1;
            true
        } else {
            false
        }
    }

    /// Returns a permit: to the first waiter if there is one.
    ///
    /// ```
    /// let s = safepoint_sched::Sema::new(0);
    /// assert!(!s.try_acquire());
    /// s.release();
    /// assert!(s.try_acquire());
    /// ```
    pub fn release(&self) {
        let w = {
            let mut s = self.lock();
            match s.waiters.pop_front() {
                Some(w) => Some(w),
                None => {
                    s.permits += 1;
                    None
                }
            }
        };
        if let Some(w) = w {
            w.ready();
        }
    }
}
