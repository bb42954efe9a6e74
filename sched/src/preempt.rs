//! Asynchronous preemption, the scheduler's side (the crate essay's "Safepoints and preemption", item 6; the signal, the handler's
//! architecture checks and the register-saving trampoline are `safepoint_arch::preempt`).
//!
//! A goroutine that never polls cannot answer a stop, a suspension or a ragged barrier at a
//! synchronous safepoint. When such a request has gone unanswered for a short grace period,
//! the requester signals the goroutine's M ([`Sched::signal_m`], at most one signal pending per
//! M). The handler asks [`decide`] whether to hold the interrupted goroutine in place, and if so
//! the goroutine calls [`hold`] with every register saved on its own stack.
//!
//! ## When the handler declines
//!
//! Holding in place is only sound where the M is in no runtime critical section, because the
//! requester then acts for the held goroutine (scans its stacks, runs the barrier's function
//! with its P, counts its P as stopped) while the held thread sits at an arbitrary instruction.
//! [`decide`] says no when:
//!
//! * the architecture declined: not on a goroutine stack (g0, a signal stack), inside the
//!   context switch or the trampoline, inside the C library, too little stack;
//! * the M is in a runtime critical section: `m.locks > 0` (a stopped world, a blocking-call
//!   transition, a hold already in progress) or `m.rtlocks > 0` (holding a runtime lock: the
//!   scheduler lock, a wait-queue lock, the spawn and ready paths);
//! * the goroutine is in a [`crate::no_preempt`] section (`g.pins > 0`): the collector's
//!   allocator and write barrier run under it;
//! * the goroutine is not simply Running on a Running P (it is parking, growing its managed
//!   stack, entering a blocking call...), or nobody waits for it any more (the request was
//!   answered at a synchronous point, or it is only a time slice: holding a goroutine in place
//!   gives its CPU to nobody, so sysmon's 10 ms rule never signals).
//!
//! A declined signal is not lost: the requester signals again while it still waits.
//!
//! ## The hold
//!
//! [`hold`] runs on the goroutine's stack, on its M, as a call made by the interrupted code. It
//! raises `m.locks` (so further signals decline), moves the goroutine `Running ->
//! AsyncPreempted` and its P `Running -> Held`, then waits on the M's `hold_note`. While it
//! waits:
//!
//! * a stopper moves the P `Held -> GcStop` and counts it stopped (the hold does it itself if
//!   it sees `gcwaiting`, as `entersyscall` does); `start_the_world` gives it back (`Held`, and a
//!   wake-up) because the P's `m` is still set;
//! * a ragged barrier moves the P `Held -> GcStop`, runs the function for it, stores `Held`
//!   and wakes the M;
//! * a suspender CASes the goroutine `AsyncPreempted -> AsyncPreempted|SCAN`, scans it and
//!   releases it with a wake-up.
//!
//! The goroutine leaves when no stop is pending (`gcwaiting`), no suspender asked for it
//! (`preempt_stop`), its P owes no safe-point function, and it wins back both words: first the
//! goroutine (`AsyncPreempted -> Running`, which waits out a held SCAN), then the P (`Held ->
//! Running`); if the P was borrowed in between, it goes back to `AsyncPreempted` and waits again.
//! It never switches goroutines: its M runs nothing else until it resumes, so thread-locals,
//! locks and malloc state of the interrupted code stay exactly as they were.

use core::sync::atomic::compiler_fence;

use safepoint_arch::preempt::{Decline, Hooks};

use crate::runtime::{M, P, PStatus, current_m};
use crate::shim::{AtomicBool, Ordering, fence};
use crate::status::{Cas, Status, StatusWord};

/// How long the hold spins on its note before it sleeps in the kernel: a release usually comes
/// within microseconds (the end of a scan or of a short stop), and waking a sleeping thread
/// costs tens of microseconds on these machines, during which the goroutine stays held and a
/// requester that comes back (the next scan, the next stop) takes it again without it having
/// run at all.
const HOLD_SPIN_NS: u64 = 50_000;
/// The longest a held M sleeps before it looks again (a safety net: every release wakes it).
const HOLD_SLEEP_NS: u64 = 1_000_000;

/// Installs the preemption signal handler with this scheduler's hooks (process-wide, once).
pub(crate) fn install() -> Result<(), crate::Error> {
    safepoint_arch::preempt::install(Hooks { decide, hold }).map_err(|_| {
        crate::Error::Config("the preemption signal's hooks were set by someone else".into())
    })
}

/// The scheduler's half of the handler's decision: see the module docs.
///
/// Runs on: the alternate signal stack, inside the signal handler. Async-signal-safe: reads a
/// const thread-local, atomics and the goroutine's `pins` cell (written only by this thread,
/// with compiler fences around it); allocates nothing.
fn decide(verdict: Result<(), Decline>) -> bool {
    let Some(m) = current_m() else { return false };
    let sched = m.sched();
    let take = verdict.is_ok() && may_hold(m);
    if take {
        // The pending flag stays set until the hold ends (see `hold`): no signal is sent to an
        // M on its way into or out of a hold, where it would only be declined.
        sched.async_preemptions.fetch_add(1, Ordering::Relaxed);
    } else {
        // Release: pairs with the AcqRel swap in `signal_m`: a request that comes after this
        // point gets a signal of its own.
        m.signal_pending.store(false, Ordering::Release);
        sched.async_declined.fetch_add(1, Ordering::Relaxed);
    }
    take
}

/// Whether the goroutine running on `m` may be held in place now and someone waits for it.
fn may_hold(m: &M) -> bool {
    let sched = m.sched();
    if !sched.async_preempt
        || m.locks.load(Ordering::Relaxed) != 0
        || m.rtlocks.load(Ordering::Relaxed) != 0
        || m.hold_exempt()
    {
        return false;
    }
    let Some(g) = m.curg() else { return false };
    if g.pins.get() != 0 || g.status.load().state != Status::Running as u32 {
        return false;
    }
    let Some(p) = m.p() else { return false };
    if p.status() != PStatus::Running {
        return false;
    }
    sched.gcwaiting.load(Ordering::SeqCst)
        || g.preempt_stop.load(Ordering::SeqCst)
        || p.run_safe_point_fn.load(Ordering::SeqCst)
}

/// Holds the interrupted goroutine in place until nobody needs it held: see the module docs.
///
/// Runs on: the goroutine's native stack, called by the trampoline with every register saved.
/// Preemption: raises `m.locks` for its whole length. Allocates: no (a fatal error aside).
fn hold() {
    let Some(m) = current_m() else { return };
    let (Some(g), Some(p)) = (m.curg(), m.p()) else { return };
    let sched = m.sched();
    m.locks.fetch_add(1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    hold_begin(&g.status, p);
    g.async_prone.store(true, Ordering::Relaxed);
    hold_announce(&sched.gcwaiting, || sched.stopnote.wakeup());
    if p.run_safe_point_fn.load(Ordering::SeqCst) {
        // The barrier's caller runs the function for us; tell it to look now.
        sched.safe_point_note.wakeup();
    }
    loop {
        m.hold_note.clear();
        // Pairs with the fence in `wake_held`: a releaser changes the words, fences, then wakes
        // the note; we clear the note, fence, then look at the words. Either we see its change
        // or our sleep sees its wake-up.
        fence(Ordering::SeqCst);
        if try_leave(m) {
            break;
        }
        if sched.gcwaiting.load(Ordering::Relaxed) {
            // A stop of the world lasts longer than a scan, and the stopper (just woken by
            // us, perhaps) needs a CPU more than we need a quick restart: sleep at once.
            m.hold_note.sleep_timeout(HOLD_SLEEP_NS);
        } else {
            wait_note(&m.hold_note);
        }
    }
    compiler_fence(Ordering::SeqCst);
    crate::proc::release_m(m);
    // Release: pairs with the AcqRel swap in `signal_m` (the flag was left set by `decide`).
    m.signal_pending.store(false, Ordering::Release);
}

/// Waits for a wake-up of `note`: spins for up to [`HOLD_SPIN_NS`], then sleeps up to
/// [`HOLD_SLEEP_NS`].
fn wait_note(note: &safepoint_arch::Note) {
    let start = safepoint_arch::nanotime();
    loop {
        for _ in 0..64 {
            if note.is_woken() {
                return;
            }
            safepoint_arch::cpu_relax();
        }
        if safepoint_arch::nanotime() - start >= HOLD_SPIN_NS {
            note.sleep_timeout(HOLD_SLEEP_NS);
            return;
        }
    }
}

/// One attempt to let the held goroutine of `m` go: true if it is Running again on its P.
fn try_leave(m: &M) -> bool {
    let sched = m.sched();
    let (Some(g), Some(p)) = (m.curg(), m.p()) else { return true };
    if p.status() != PStatus::Held
        || (sched.gcwaiting.load(Ordering::SeqCst) && !m.hold_exempt())
        || g.preempt_stop.load(Ordering::SeqCst)
        || p.run_safe_point_fn.load(Ordering::SeqCst)
    {
        return false;
    }
    hold_try_leave(&g.status, p)
}

/// The hold's second step, after [`hold_begin`]: if a stop of the world is pending
/// (`gcwaiting`), wakes its stopper (`wake_stopper`) so that it looks at the Ps now.
///
/// Dekker with `stop_the_world`: it sets gcwaiting and then looks for Held Ps, again at every
/// look while it waits; we published Held and now look at gcwaiting. The stopper counts the
/// P itself (`stop_held_ps`): the hold must not. A hold that read gcwaiting set can be
/// overtaken before a CAS of its own by the stopper counting the P, the stop ending, and
/// `start_the_world` giving the P back (`GcStop -> Held`); a `Held -> GcStop` CAS then would
/// take the P again for a stop that is over, count it for a stop that has not begun, and
/// leave the goroutine held for good. (That hung a test once, at runtime shutdown, with the P
/// found GcStop after the last restart; `loom_async_hold_vs_stop_and_restart` checks the
/// protocol.) A stale wake-up costs the next stopper one extra look. Kept apart so that the
/// loom models run this very code.
pub(crate) fn hold_announce(gcwaiting: &AtomicBool, wake_stopper: impl FnOnce()) {
    fence(Ordering::SeqCst);
    if gcwaiting.load(Ordering::SeqCst) {
        wake_stopper();
    }
}

/// The hold's first step, on the goroutine's status word `g` and its P: the goroutine
/// `Running -> AsyncPreempted` (a suspender may hold SCAN on Running for an instant while it
/// sends its request: `cas` waits it out), then the P `Running -> Held` (only a P's M moves it
/// out of Running). Kept apart so that the loom models run this very code.
pub(crate) fn hold_begin(g: &StatusWord, p: &P) {
    g.cas(Status::Running, Status::AsyncPreempted);
    if !p.cas_status(PStatus::Running, PStatus::Held) {
        crate::throw!("async preemption: P{} is {:?}, not Running", p.id, p.status());
    }
}

/// One attempt to get the goroutine (`g`) and its P back, once nothing else keeps it held:
/// the goroutine first (`AsyncPreempted -> Running`; fails while a suspender holds SCAN),
/// then the P (`Held -> Running`); if the P was borrowed in between (a stopper or a barrier
/// moved it to GcStop), the goroutine goes back to AsyncPreempted and the attempt fails. The
/// goroutine resumes user code only after a true return: while its P is borrowed, it does not
/// run.
pub(crate) fn hold_try_leave(g: &StatusWord, p: &P) -> bool {
    if g.try_cas(Status::AsyncPreempted as u32, Status::Running as u32, None) != Cas::Ok {
        return false; // a suspender holds SCAN: its release wakes us
    }
    if p.cas_status(PStatus::Held, PStatus::Running) {
        return true;
    }
    g.cas(Status::Running, Status::AsyncPreempted);
    false
}

/// Wakes the M of a goroutine held in place, after its releaser changed what the M waits on
/// (its P given back, its SCAN released, the barrier's function run for it).
pub(crate) fn wake_held(m: &M) {
    // Pairs with the fence in `hold`'s loop.
    fence(Ordering::SeqCst);
    m.hold_note.wakeup();
}

/// Runs `f` as a runtime critical section for the preemption handler: while it runs, a signal
/// to this M declines (the M may hold a runtime lock the requester needs). Off an M it just
/// runs `f`.
#[inline]
pub(crate) fn rt_section<R>(f: impl FnOnce() -> R) -> R {
    let m = rtlock_enter();
    let r = f();
    rtlock_exit(m);
    r
}

/// Marks this M as holding a runtime lock (see [`rt_section`]); returns it for
/// [`rtlock_exit`].
#[inline]
pub(crate) fn rtlock_enter() -> Option<&'static M> {
    let m = current_m()?;
    m.rtlocks.fetch_add(1, Ordering::Relaxed);
    // The handler runs on this thread: keep the compiler from moving the section's memory
    // accesses above the increment.
    compiler_fence(Ordering::SeqCst);
    Some(m)
}

/// Ends what [`rtlock_enter`] started on `m` (the same M: runtime locks are released on the
/// thread that took them, a park callback runs on the parker's M).
#[inline]
pub(crate) fn rtlock_exit(m: Option<&'static M>) {
    if let Some(m) = m {
        compiler_fence(Ordering::SeqCst);
        m.rtlocks.fetch_sub(1, Ordering::Relaxed);
    }
}
