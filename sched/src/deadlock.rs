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
//! report — the message and one line per goroutine with what it waits on — is stored and every
//! registered thread is woken; their wait then panics with the report instead of hanging. The
//! deadlocked goroutines stay parked (and are abandoned when the runtime is dropped).

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
    report: Mutex<Option<String>>,
}

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
fn find(sched: &Sched) -> Option<String> {
    let l = sched.locked();
    if sched.npidle.load(Ordering::SeqCst) != sched.procs
        || sched.nmspinning.load(Ordering::SeqCst) != 0
        || sched.shared_work()
        || sched.ps.iter().any(|p| !p.runq_empty())
        || crate::timer::pending(sched)
    {
        return None;
    }
    let gs = sched.allgs.lock().unwrap_or_else(|e| e.into_inner()).clone();
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
                lines.push((goid(g), why));
            }
            _ => return None,
        }
    }
    if lines.is_empty() {
        return None;
    }
    lines.sort_unstable();
    let mut report = format!("{DEADLOCK}\n");
    for (id, why) in lines {
        report.push_str(&format!("\ngoroutine {id} [{why}]"));
    }
    drop(l);
    Some(report)
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
) -> Option<String> {
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
