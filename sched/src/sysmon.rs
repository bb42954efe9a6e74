//! sysmon: a thread with no P that watches the Ps.
//!
//! It retakes Ps from goroutines stuck in blocking calls, asks goroutines that have run over
//! their time slice to yield, and moves the queue of a P held in place for long to the global
//! queue ([`unstrand`]). It sleeps 20 µs between looks, doubling (up to 10 ms) once it
//! has found nothing to do for a while, and sleeps without a deadline when every P is idle (the
//! first P to be taken wakes it): an idle runtime uses no CPU.

use std::sync::Arc;

use safepoint_arch::nanotime;

use crate::runtime::{PStatus, Sched};
use crate::shim::Ordering;

/// A goroutine running longer than this is asked to yield.
pub(crate) const TIME_SLICE_NS: u64 = 10_000_000;
const MIN_DELAY_NS: u64 = 20_000;
const MAX_DELAY_NS: u64 = 10_000_000;

pub(crate) fn run(sched: Arc<Sched>) {
    let mut delay = MIN_DELAY_NS;
    let mut idle_rounds = 0u32;
    // Issue 4: the earliest timer deadline (0: none), seen at the last look.
    let mut next_timer = 0u64;
    let mut watch = sched.config.schedcheck.then(crate::watchdog::Watch::new);
    // schedtrace: the interval, and when the next line is due (0: never).
    let start = nanotime();
    let trace_every = sched.config.schedtrace.map_or(0, |d| (d.as_nanos() as u64).max(1_000_000));
    let mut next_trace = if trace_every == 0 { 0 } else { start + trace_every };
    loop {
        if sched.shutdown.load(Ordering::SeqCst) {
            return;
        }
        if next_trace != 0 && nanotime() >= next_trace {
            crate::message(format_args!("{}", schedtrace_line(&sched, nanotime() - start)));
            next_trace += trace_every * ((nanotime() - next_trace) / trace_every + 1);
        }
        let mut sleep = delay;
        if next_timer != 0 {
            sleep = sleep.min(next_timer.saturating_sub(nanotime()).max(MIN_DELAY_NS));
        }
        if next_trace != 0 {
            sleep = sleep.min(next_trace.saturating_sub(nanotime()).max(MIN_DELAY_NS));
        }
        if sched.sysmon_note.sleep_timeout(sleep) {
            sched.sysmon_note.clear();
        }
        if sched.shutdown.load(Ordering::SeqCst) {
            return;
        }
        if let Some(why) = watch.as_mut().and_then(|w| w.look(&sched, nanotime())) {
            crate::watchdog::fail(&sched, &why);
        }
        // Everything idle (or stopped): sleep until a P is taken.
        if sched.npidle.load(Ordering::SeqCst) == sched.procs
            || sched.gcwaiting.load(Ordering::SeqCst)
        {
            sched.sysmon_wait.store(true, Ordering::SeqCst);
            // Re-check after announcing, so a P taken meanwhile is seen (pidleget wakes us).
            if sched.npidle.load(Ordering::SeqCst) == sched.procs
                || sched.gcwaiting.load(Ordering::SeqCst)
            {
                let mut idle_sleep = MAX_DELAY_NS * 10;
                // Timers pending: wake in time to see one left overdue (below).
                let next = crate::timer::earliest(&sched);
                if next != 0 {
                    idle_sleep = idle_sleep
                        .min(next.saturating_sub(nanotime()) + crate::timer::IDLE_BACKSTOP_NS);
                }
                if next_trace != 0 {
                    // An idle runtime still gets its schedtrace lines, as in Go.
                    idle_sleep = idle_sleep.min(next_trace.saturating_sub(nanotime()).max(1));
                }
                sched.sysmon_note.sleep_timeout(idle_sleep);
            }
            sched.sysmon_wait.store(false, Ordering::SeqCst);
            if sched.sysmon_note.is_woken() {
                sched.sysmon_note.clear();
            }
            crate::timer::sysmon_idle(&sched);
            delay = MIN_DELAY_NS;
            idle_rounds = 0;
            continue;
        }
        // Issue 4: run timers left due on busy Ps (see `crate::timer`).
        next_timer = crate::timer::sysmon(&sched);
        if retake(&sched, nanotime()) {
            idle_rounds = 0;
            delay = MIN_DELAY_NS;
        } else {
            idle_rounds += 1;
            if idle_rounds > 50 {
                delay = (delay * 2).min(MAX_DELAY_NS);
            }
        }
    }
}

/// One look at every P; true if it retook a P from a blocking call. Asking a goroutine to
/// yield does not count, as in Go: a program whose goroutines all run long would otherwise
/// keep sysmon waking every 20 µs, and on a machine whose cores the program keeps busy each
/// wake-up takes a core from one of its threads (binary-trees-compiled 21: about 3,000
/// wake-ups and as many involuntary switches of its threads a second).
fn retake(sched: &Sched, now: u64) -> bool {
    let mut acted = false;
    for p in sched.ps.iter() {
        let status = p.status();
        if status == PStatus::Held {
            unstrand(sched, p, now);
            continue;
        }
        // Relaxed: sysmon's own field.
        p.sysmon_heldwhen.store(0, Ordering::Relaxed);
        if !matches!(status, PStatus::Running | PStatus::Syscall) {
            continue;
        }
        // The time slice, timed by `schedtick`, which a blocking call does not bump (as Go's
        // is): a goroutine whose P flips between Running and Syscall many times a millisecond
        // is timed across its calls. Timing it by whichever tick the P showed at each look
        // restarted the slice at nearly every look, and such a goroutine was never asked to
        // yield.
        let tick = p.schedtick.load(Ordering::Relaxed);
        if p.sysmon_schedtick.load(Ordering::Relaxed) != tick {
            p.sysmon_schedtick.store(tick, Ordering::Relaxed);
            p.sysmon_schedwhen.store(now, Ordering::Relaxed);
        } else if now.saturating_sub(p.sysmon_schedwhen.load(Ordering::Relaxed)) >= TIME_SLICE_NS
            // In a blocking call the P has no M: the goroutine in the call is asked through
            // the M that entered it, and its return answers (`proc::blocking` polls). Asking
            // only at a look that found the P Running let a goroutine that loops on short
            // calls keep its P, and the goroutines queued on it, for seconds.
            && (sched.preemptone(p) || (status == PStatus::Syscall && sched.preempt_in_syscall(p)))
        {
            p.sysmon_schedwhen.store(now, Ordering::Relaxed);
        }
        if status != PStatus::Syscall {
            continue;
        }
        let tick = p.syscalltick.load(Ordering::Relaxed);
        if p.sysmon_syscalltick.load(Ordering::Relaxed) != tick {
            p.sysmon_syscalltick.store(tick, Ordering::Relaxed);
            p.sysmon_syscallwhen.store(now, Ordering::Relaxed);
            continue;
        }
        let since = now.saturating_sub(p.sysmon_syscallwhen.load(Ordering::Relaxed));
        // Retake after one sysmon tick (~20 µs) if anyone could use the P: it has work, or
        // nobody else is spinning or idle to pick up new work. Otherwise wait up to 10 ms.
        let others_free =
            sched.nmspinning.load(Ordering::SeqCst) + sched.npidle.load(Ordering::SeqCst) > 0;
        if p.runq_empty() && !sched.shared_work() && others_free && since < MAX_DELAY_NS {
            continue;
        }
        if p.cas_status(PStatus::Syscall, PStatus::Idle) {
            sched.handoffp(p);
            acted = true;
        }
    }
    acted
}

/// How long a P may stay in one asynchronous hold, as sysmon sees it, before the goroutines
/// queued on it are moved to the global queue ([`unstrand`]).
pub(crate) const HELD_HANDOFF_NS: u64 = 1_000_000;

/// A P whose M holds its goroutine in place (`Held`: the preemption signal stopped it for a
/// stop, a barrier or a suspender) runs nothing else until the hold ends, and the goroutines
/// queued on it wait, unless another P runs out of work and steals them. A hold lasts a scan's
/// microseconds, but a suspender may keep its goroutine for as long as it likes, and the hold
/// itself waits for a suspender that has asked and not yet come back (`preempt_stop`): if that
/// suspender is one of the goroutines queued on this very P (it yielded there while it
/// waited, and its target came to run on the P afterwards), the hold never ends while the
/// other Ps have work of their own. That stalled a collection's marking (its driver in
/// `suspend_g`, queued behind its target's hold) in the soak. So once sysmon has seen the P in
/// the same hold for [`HELD_HANDOFF_NS`], it moves the P's queue to the global one, where
/// every P looks at least every 61st schedule (as Go's sysmon hands off the P of a goroutine
/// stuck in a system call). The P's M, still holding, is not disturbed; only the queue's
/// stealing end and `runnext`'s thief CAS are used.
fn unstrand(sched: &Sched, p: &crate::runtime::P, now: u64) {
    // Relaxed, both: sysmon's own field, and a hint (a P that left its hold and came back to
    // one between two looks is taken for one hold: its queue moves a little early).
    let since = p.sysmon_heldwhen.load(Ordering::Relaxed);
    if since == 0 {
        p.sysmon_heldwhen.store(now.max(1), Ordering::Relaxed);
        return;
    }
    if now.saturating_sub(since) >= HELD_HANDOFF_NS && !p.runq_empty() && sched.unstrand(p) {
        sched.unstranded.fetch_add(1, Ordering::Relaxed);
    }
}

/// The `schedtrace` line (see [`crate::Builder::schedtrace`]), `since` nanoseconds after the
/// runtime started. Racy reads of the counters, as Go's; the scheduler lock for the idle Ms.
fn schedtrace_line(sched: &Sched, since: u64) -> String {
    use std::fmt::Write;
    let (_, threads) = sched.counts();
    let idle_threads = crate::preempt::rt_section(|| {
        sched.lock.lock().unwrap_or_else(|e| e.into_inner()).midle.len()
    });
    let mut line = format!(
        "SCHED {}ms: gomaxprocs={} idleprocs={} threads={} spinningthreads={} idlethreads={} \
         runqueue={} [",
        since / 1_000_000,
        sched.procs,
        // Relaxed: counters read for a report.
        sched.npidle.load(Ordering::Relaxed),
        threads,
        sched.nmspinning.load(Ordering::Relaxed),
        idle_threads,
        sched.global.len() + sched.urgent.len(),
    );
    for (i, p) in sched.ps.iter().enumerate() {
        let _ = write!(line, "{}{}", if i == 0 { "" } else { " " }, p.runq_len());
    }
    line.push(']');
    line
}
