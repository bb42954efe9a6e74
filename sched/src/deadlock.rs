//! Deadlock detection (Go's `checkdead`): "all goroutines are asleep - deadlock!".
//!
//! ## When it is a deadlock
//!
//! With the scheduler lock held (so no M can take a P meanwhile), all of:
//!
//! * every P is idle: no goroutine runs, no M spins or is stopped for the world, and none is in
//!   a blocking call holding its P;
//! * no goroutine is queued, and none is in a blocking call (`Syscall`), `Preempted`, or held
//!   by a scanner (`SCAN`);
//! * every live goroutine is `Waiting` on a runtime primitive (a channel, select, mutex,
//!   rwlock, cond, semaphore, WaitGroup or join) — not on [`WaitReason::Park`](crate::WaitReason),
//!   whose token anyone may hold, nor in a sleep;
//! * no timer is armed or being fired.
//!
//! Then nothing inside the runtime can ever wake anyone. Threads outside the runtime could —
//! by sending on a channel, unlocking a mutex and so on — and this cannot be seen: a runtime
//! whose goroutines are fed by outside threads must turn detection off
//! ([`Builder::deadlock_detection`](crate::Builder::deadlock_detection)).
//!
//! ## Who checks, and how it surfaces
//!
//! Detection matters only to someone waiting: a thread outside the runtime blocked in
//! [`Runtime::block_on`](crate::Runtime::block_on) or [`JoinHandle::join`](crate::JoinHandle).
//! Such a thread registers its note before it sleeps and runs the check once itself; the last
//! M to go idle runs it too (cheaply skipped while nobody is registered). On a deadlock, the
//! report ([`DeadlockReport`]: each of the program's goroutines with what it waits on and, if
//! the runtime has a function registry, its managed-stack traceback; goroutines marked
//! [`set_system`](crate::set_system), the collector's own, are left out as Go leaves out its
//! system goroutines) is stored and every registered thread is woken; their wait then panics
//! with the report instead of hanging, or returns it
//! ([`Runtime::block_on_or_deadlock`](crate::Runtime::block_on_or_deadlock)). The deadlocked
//! goroutines stay parked.

use std::sync::{Arc, Mutex};

use safepoint_arch::Note;

use crate::g::{WAIT_REASONS, goid};
use crate::runtime::Sched;
use crate::shim::{AtomicUsize, Ordering};
use crate::status::Status;

/// The runtime's deadlock-detection state.
pub(crate) struct Deadlock {
    enabled: bool,
    /// Threads outside the runtime waiting on a goroutine.
    waiters: Mutex<Vec<Arc<Note>>>,
    nwaiters: AtomicUsize,
    /// The report, once a deadlock has been found.
    report: Mutex<Option<DeadlockReport>>,
}

/// What a deadlock left: every goroutine of the program (not those marked
/// [`set_system`](crate::set_system)), each parked on a runtime primitive that nothing can
/// signal any more. Its `Display` is Go's: [`DEADLOCK`], then a paragraph per goroutine.
#[derive(Clone, Debug)]
pub struct DeadlockReport {
    /// The goroutines, by id.
    pub goroutines: Vec<DeadlockedGoroutine>,
}

/// One goroutine of a [`DeadlockReport`].
#[derive(Clone, Debug)]
pub struct DeadlockedGoroutine {
    /// Its id.
    pub id: u64,
    /// What it waits on (`chan receive`, `mutex`, ...).
    pub wait_reason: &'static str,
    /// Its managed stack's traceback, if the runtime has a function registry
    /// ([`Builder::registry`](crate::Builder::registry)) and the stack has frames.
    pub traceback: Option<safepoint_stackmap::Traceback>,
}

impl core::fmt::Display for DeadlockReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{DEADLOCK}")?;
        for g in &self.goroutines {
            write!(f, "\n\ngoroutine {} [{}]:", g.id, g.wait_reason)?;
            if let Some(tb) = &g.traceback {
                for fr in tb.frames.iter().chain(tb.tail.iter()) {
                    write!(f, "\n    {fr}")?;
                }
            }
        }
        Ok(())
    }
}

impl std::error::Error for DeadlockReport {}

/// The first line of the report (Go's words).
pub const DEADLOCK: &str = "all goroutines are asleep - deadlock!";

impl Deadlock {
    pub(crate) fn new(enabled: bool) -> Deadlock {
        Deadlock {
            enabled,
            waiters: Mutex::new(Vec::new()),
            nwaiters: AtomicUsize::new(0),
            report: Mutex::new(None),
        }
    }
}

/// Wait reasons that only a goroutine of the runtime can end.
fn blocked_on_primitive(reason: usize) -> bool {
    use crate::WaitReason as W;
    [
        W::Join,
        W::Sema,
        W::WaitGroup,
        W::Chan,
        W::Select,
        W::Mutex,
        W::ChanSend,
        W::ChanRecv,
        W::RwLock,
        W::Cond,
    ]
    .iter()
    .any(|&w| w as usize == reason)
}

/// Scheduler hook: checks for a deadlock (see the module docs). Called by an M that has just
/// put its P on the idle list, and by a thread that has just registered as a waiter.
pub(crate) fn check(sched: &Sched) {
    let d = &sched.deadlock;
    if !d.enabled || d.nwaiters.load(Ordering::SeqCst) == 0 {
        return;
    }
    let Some(report) = find(sched) else { return };
    *d.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    for n in d.waiters.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        n.wakeup();
    }
}

/// The deadlock report, if the runtime is deadlocked now (see the module docs).
fn find(sched: &Sched) -> Option<DeadlockReport> {
    let l = sched.locked();
    if sched.npidle.load(Ordering::SeqCst) != sched.procs
        || sched.nmspinning.load(Ordering::SeqCst) != 0
        || sched.shared_work()
        || sched.ps.iter().any(|p| !p.runq_empty())
        || crate::timer::pending(sched)
    {
        return None;
    }
    let gs = sched.all_gs();
    let mut lines = Vec::new();
    for g in gs {
        let g = g.get();
        let w = g.status.load();
        match w.base() {
            Some(Status::Dead) | Some(Status::Idle) => continue,
            Some(Status::Waiting) if !w.scanning() => {
                let r = g.wait_reason.load(Ordering::Relaxed);
                if !blocked_on_primitive(r) {
                    return None;
                }
                let why = WAIT_REASONS.get(r).copied().unwrap_or("?");
                if !g.system.load(Ordering::Relaxed) {
                    lines.push((goid(g), why, g));
                }
            }
            _ => return None,
        }
    }
    drop(l);
    if lines.is_empty() {
        return None;
    }
    lines.sort_unstable_by_key(|&(id, ..)| id);
    // The deadlock is stable: nothing moves these goroutines while their stacks are read.
    let goroutines = lines
        .into_iter()
        .map(|(id, wait_reason, g)| DeadlockedGoroutine {
            id,
            wait_reason,
            traceback: sched.config.registry.as_ref().and_then(|reg| {
                let held = crate::stw::try_hold(g)?;
                held.traceback(reg).filter(|tb| tb.depth() > 0)
            }),
        })
        .collect();
    Some(DeadlockReport { goroutines })
}

/// A thread outside the runtime waits on `note` until `done()` (its goroutine finished; that
/// is set before the note is woken). Returns the deadlock report if the runtime deadlocked
/// instead.
///
/// A report wakes every waiter, and a waiter trusts it only after finding the deadlock again
/// itself: a deadlock is stable (nothing inside the runtime can end it), so a second look
/// agrees, while a report raced by a goroutine that was just finishing or just readied (a
/// moment when every P looked idle) does not survive it. A report that does not survive is
/// cleared, and the waiter sleeps on.
pub(crate) fn wait_outside(
    sched: Option<&Sched>,
    note: &Arc<Note>,
    done: impl Fn() -> bool,
) -> Option<DeadlockReport> {
    let Some(sched) = sched.filter(|s| s.deadlock.enabled) else {
        note.sleep();
        return None;
    };
    let d = &sched.deadlock;
    d.waiters.lock().unwrap_or_else(|e| e.into_inner()).push(note.clone());
    d.nwaiters.fetch_add(1, Ordering::SeqCst);
    // The runtime may have gone idle before we registered: look now.
    check(sched);
    let report = loop {
        note.sleep();
        if done() {
            break None;
        }
        let stored = d.report.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if stored.is_some() {
            match find(sched) {
                // Our goroutine may have finished between `done()` above and the look (a
                // finished goroutine leaves the runtime idle): only a look that precedes a
                // still-false `done()` proves the deadlock.
                Some(now) => break if done() { None } else { Some(now) },
                None => {
                    d.report.lock().unwrap_or_else(|e| e.into_inner()).take();
                }
            }
        }
        // A stale wake-up (a report that did not survive, or a note woken late): the
        // goroutine's completion will wake us again.
    };
    {
        let mut ws = d.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = ws.iter().position(|n| Arc::ptr_eq(n, note)) {
            ws.swap_remove(i);
        }
    }
    d.nwaiters.fetch_sub(1, Ordering::SeqCst);
    report
}
