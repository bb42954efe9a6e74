//! The watchdog (`SAFEPOINT_DEBUG=schedcheck=1`, [`crate::Builder::schedcheck`]): a hang
//! becomes a described failure.
//!
//! A hang is the worst failure a runtime has: no message, no exit. With the watchdog on, the
//! runtime aborts with a report of every queue, every P and M and every goroutine when it sees
//! one of these:
//!
//! * a runnable goroutine that no M took for [`LOST_NS`] while a P was idle (sysmon looks at the
//!   queues at each of its looks, at least every 100 ms; the condition must hold at every look
//!   for that long, and no stop may be in progress);
//! * a stop of the world, a ragged barrier or a [`crate::suspend_g`] that has waited for
//!   [`WAIT_NS`] (checked by the waiter itself);
//! * a check that an embedder registered ([`crate::RuntimeHandle::add_watchdog_check`]; the
//!   collector's: a cycle whose phase has not advanced in 10 s) reporting a problem.
//!
//! The bounds are far above anything a healthy runtime shows, even on a loaded machine: a
//! queued goroutine with an idle P is taken within microseconds (`wakep`), a stop takes
//! microseconds, or milliseconds while it waits out OS-lock critical sections.

use std::fmt::Write as _;
use std::sync::Mutex;

use crate::g::{G, goid};
use crate::runtime::{M, Sched};
use crate::shim::Ordering;

/// How long a runnable goroutine may wait while a P idles.
pub(crate) const LOST_NS: u64 = 1_000_000_000;
/// How long a stop, a ragged barrier or a suspension may wait.
pub(crate) const WAIT_NS: u64 = 1_000_000_000;
/// How often sysmon runs the registered checks.
const CHECK_EVERY_NS: u64 = 100_000_000;

/// A check run by the watchdog: given the time now (nanotime), a description of the problem,
/// if any (the runtime then aborts with it and its report).
pub type WatchdogCheck = Box<dyn Fn(u64) -> Option<String> + Send + Sync>;

/// The registered checks of one runtime.
#[derive(Default)]
pub(crate) struct Checks {
    list: Mutex<Vec<WatchdogCheck>>,
}

impl Checks {
    pub(crate) fn add(&self, c: WatchdogCheck) {
        self.list.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }
}

/// sysmon's side of the watchdog: its state between looks.
pub(crate) struct Watch {
    /// Since when (nanotime) a goroutine has been queued while a P idled, at every look.
    lost_since: u64,
    next_checks: u64,
}

impl Watch {
    pub(crate) fn new() -> Watch {
        Watch { lost_since: 0, next_checks: 0 }
    }

    /// One look: the description of a hang, if it sees one (sysmon then aborts with it).
    /// Runs on: sysmon.
    pub(crate) fn look(&mut self, sched: &Sched, now: u64) -> Option<String> {
        let lost = !sched.gcwaiting.load(Ordering::SeqCst)
            && sched.npidle.load(Ordering::SeqCst) > 0
            && (sched.shared_work() || sched.ps.iter().any(|p| !p.runq_empty()));
        if !lost {
            self.lost_since = 0;
        } else if self.lost_since == 0 {
            self.lost_since = now;
        } else if now - self.lost_since >= LOST_NS {
            return Some(format!(
                "schedcheck: a runnable goroutine has waited {} ms on a queue while a P was idle",
                (now - self.lost_since) / 1_000_000
            ));
        }
        if now >= self.next_checks {
            self.next_checks = now + CHECK_EVERY_NS;
            let checks = sched.watch_checks.list.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(why) = checks.iter().find_map(|c| c(now)) {
                return Some(format!("schedcheck: {why}"));
            }
        }
        None
    }
}

/// Called by a waiter (a stopper, a barrier's caller, a suspender) at each look: aborts with
/// the report if the watchdog is on and it has waited [`WAIT_NS`] since `start`.
pub(crate) fn waited(sched: &Sched, start: u64, now: u64, what: impl FnOnce() -> String) {
    if sched.config.schedcheck && now.saturating_sub(start) >= WAIT_NS {
        let what = what();
        fail(sched, &format!("schedcheck: {what} has waited {} ms", (now - start) / 1_000_000));
    }
}

/// Prints `why` and the report, then aborts.
pub(crate) fn fail(sched: &Sched, why: &str) -> ! {
    let report = report(sched);
    crate::throw!("{why}\n{report}")
}

/// Every queue, every P and M, every goroutine: racy reads, for a report.
pub(crate) fn report(sched: &Sched) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "queues: global {}, urgent {} (counted {}); idle Ps {} of {}; spinning Ms {}; \
         stop pending {}; goroutines {}",
        sched.global.len(),
        sched.urgent.len(),
        sched.nurgent.load(Ordering::Relaxed),
        sched.npidle.load(Ordering::Relaxed),
        sched.procs,
        sched.nmspinning.load(Ordering::Relaxed),
        sched.gcwaiting.load(Ordering::Relaxed),
        sched.ngoroutines.load(Ordering::Relaxed),
    );
    for p in sched.ps.iter() {
        let m = p.m.load(Ordering::Relaxed) as *const M;
        // SAFETY: Ms live until the runtime shuts down (a racy read of which one).
        let m = unsafe { m.as_ref() };
        let _ = writeln!(
            out,
            "P{}: {:?}, M{:?}, queued {}, safe-point fn owed {}, schedtick {}",
            p.id,
            p.status(),
            m.map(|m| m.id),
            p.runq_len(),
            p.run_safe_point_fn.load(Ordering::Relaxed),
            p.schedtick.load(Ordering::Relaxed),
        );
    }
    // The idle lists, if the scheduler lock is free (a report must not wait on it: its holder
    // may be what hangs): a P popped off the idle list but not yet running, or an M taken off
    // the idle list and handed a P (`nextp`) that has not taken it, shows here.
    let idle = sched.lock.try_lock().ok().map(|l| (l.pidle.clone(), l.midle.clone(), l.mcount));
    match &idle {
        Some((pidle, midle, mcount)) => {
            let midle: Vec<_> = midle
                .iter()
                // SAFETY: idle Ms are owned by `allm` and live until shutdown.
                .map(|&m| unsafe { &*m }.id)
                .collect();
            let _ = writeln!(out, "idle list: Ps {pidle:?}; Ms {midle:?}; Ms started {mcount}");
        }
        None => out.push_str("idle list: the scheduler lock is held\n"),
    }
    {
        let ms = sched.allm.lock().unwrap_or_else(|e| e.into_inner());
        for m in ms.iter() {
            let nextp = m.nextp.load(Ordering::Relaxed) as *const crate::runtime::P;
            // SAFETY: Ps live as long as the Sched (a racy read of which one).
            let nextp = unsafe { nextp.as_ref() }.map(|p| p.id);
            let _ = writeln!(
                out,
                "M{}: P{:?}, handed P{:?}, spinning {}, goroutine {:?}, locks {}, runtime locks \
                 {}, signal pending {}",
                m.id,
                m.p().map(|p| p.id),
                nextp,
                m.spinning.load(Ordering::Relaxed),
                m.curg().map(goid),
                m.locks.load(Ordering::Relaxed),
                m.rtlocks.load(Ordering::Relaxed),
                m.signal_pending.load(Ordering::Relaxed),
            );
        }
    }
    let gs = sched.all_gs();
    for g in gs.iter() {
        let g = g.get();
        let w = g.status.load();
        if matches!(w.base(), Some(crate::status::Status::Dead) | Some(crate::status::Status::Idle))
        {
            continue;
        }
        let why = crate::g::WAIT_REASONS
            .get(g.wait_reason.load(Ordering::Relaxed))
            .copied()
            .unwrap_or("");
        let mut extra = String::new();
        // Relaxed, all: a racy picture for a report.
        if g.urgent.load(Ordering::Relaxed) {
            extra.push_str(" urgent");
        }
        if g.preempt_stop.load(Ordering::Relaxed) {
            extra.push_str(" (a suspender asked it to stop)");
        }
        let holder = g.suspender.load(Ordering::Relaxed);
        if w.scanning() && holder != 0 {
            match gs.iter().find(|h| h.get() as *const G as usize == holder) {
                Some(h) => {
                    let _ = write!(extra, " (held by goroutine {})", goid(h.get()));
                }
                None => extra.push_str(" (held by a thread outside the runtime)"),
            }
        }
        let target = g.suspending.load(Ordering::Relaxed);
        if target != 0 {
            let _ = write!(extra, " (in suspend_g of goroutine {target})");
        }
        let _ = writeln!(
            out,
            "goroutine {} [{}{}{}]{}",
            goid(g),
            w,
            if why.is_empty() { "" } else { ", " },
            why,
            extra,
        );
    }
    out
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A goroutine on the global queue while every P idles and no M runs (nothing was ever
    /// started here): the first look notes it, a look a second later reports it; the
    /// registered checks are reported too.
    #[test]
    #[cfg_attr(miri, ignore = "makes a scheduler: signal handlers and mapped stacks")]
    fn a_goroutine_queued_while_every_p_idles_is_reported_after_a_second() {
        let config = crate::Builder::default().procs(2).schedcheck(true).config_for_tests();
        let sched = Sched::new(config, false).unwrap();
        let mut w = Watch::new();
        let t0 = 1_000_000_000;
        assert_eq!(w.look(&sched, t0), None);
        let g = crate::g::G::adopt(&sched);
        sched.global.push(crate::g::GPtr::from(g));
        assert_eq!(w.look(&sched, t0 + 1), None);
        assert_eq!(w.look(&sched, t0 + LOST_NS / 2), None);
        let why = w.look(&sched, t0 + 1 + LOST_NS).expect("not reported");
        assert!(why.contains("runnable goroutine has waited 1000 ms"), "{why}");
        let r = report(&sched);
        assert!(r.contains("queues: global 1, urgent 0"), "{r}");
        // The idle lists, read under the scheduler lock when it is free.
        assert!(r.contains("idle list: Ps [1, 0]; Ms []; Ms started 0"), "{r}");
        let l = sched.lock.lock().unwrap();
        assert!(report(&sched).contains("idle list: the scheduler lock is held"));
        drop(l);
        // Taken off the queue: the clock starts again.
        assert!(sched.global.steal().is_success());
        assert_eq!(w.look(&sched, t0 + 2 * LOST_NS), None);
        sched.watch_checks.add(Box::new(|now| (now > 5).then(|| "a stuck phase".to_string())));
        let why = w.look(&sched, t0 + 3 * LOST_NS).expect("the check was not run");
        assert_eq!(why, "schedcheck: a stuck phase");
    }
}
