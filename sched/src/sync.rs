//! The runtime's own goroutine-aware primitives: a semaphore (used for `world_sema`) and a
//! minimal WaitGroup. They park goroutines, never OS threads. (The full set — channels, mutexes,
//! select, timers — is its own layer.)

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::GoroutineRef;
use crate::shim::{AtomicUsize, Ordering};

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
    pub fn new(permits: usize) -> Sema {
        Sema { state: Mutex::new(SemaState { permits, waiters: VecDeque::new() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SemaState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a permit, parking the goroutine until one is free.
    ///
    /// Runs on: a goroutine.
    pub fn acquire(&self) {
        {
            let mut s = self.lock();
            if s.permits > 0 {
                s.permits -= 1;
                return;
            }
        }
        crate::park(crate::WaitReason::Sema, |r| {
            let mut s = self.lock();
            if s.permits > 0 {
                s.permits -= 1;
                return false;
            }
            s.waiters.push_back(r);
            true
        });
        // Woken by `release`, which handed its permit to us.
    }

    /// Takes a permit if one is free.
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

/// Waits for a collection of goroutines to finish: `add` before spawning, `done` in each,
/// `wait` parks until the count is zero.
#[derive(Debug, Default)]
pub struct WaitGroup {
    count: AtomicUsize,
    waiters: Mutex<Vec<GoroutineRef>>,
}

impl WaitGroup {
    /// A group with count zero.
    pub fn new() -> WaitGroup {
        WaitGroup::default()
    }

    /// Adds `n` to the count.
    pub fn add(&self, n: usize) {
        self.count.fetch_add(n, Ordering::AcqRel);
    }

    /// Subtracts one; at zero, wakes every waiter. Panics if the count was already zero.
    pub fn done(&self) {
        // AcqRel: Release publishes the finished goroutine's writes to the waiter, which Acquires
        // the count (or the waiter list lock).
        let old = self.count.fetch_sub(1, Ordering::AcqRel);
        if old == 0 {
            self.count.fetch_add(1, Ordering::AcqRel);
            panic!("WaitGroup::done: negative counter");
        }
        if old == 1 {
            let ws = core::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
            for w in ws {
                w.ready();
            }
        }
    }

    /// The current count.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Parks until the count is zero. Off a goroutine, it spins (then yields the CPU).
    pub fn wait(&self) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        if crate::runtime::current_g().is_none() {
            let mut spins = 0;
            while self.count.load(Ordering::Acquire) != 0 {
                crate::status::backoff(&mut spins);
            }
            return;
        }
        crate::park(crate::WaitReason::WaitGroup, |r| {
            let mut ws = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            // Checked under the lock `done` takes after reaching zero: no lost wake-up.
            if self.count.load(Ordering::Acquire) == 0 {
                return false;
            }
            ws.push(r);
            true
        });
    }
}
