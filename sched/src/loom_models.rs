//! loom models of the status-word and ragged-barrier protocols, run with
//! `RUSTFLAGS="--cfg loom" cargo test --release -p safepoint-sched --lib -- loom_`.
//!
//! They drive the runtime's own transition functions ([`crate::status`], [`P::cas_status`],
//! [`P::claim_safe_point`], the asynchronous hold's [`hold_begin`] and [`hold_try_leave`]) from
//! model threads that play the goroutine, a waker, a suspender,
//! the barrier's caller and a P's owner.

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use loom::thread;

use crate::preempt::{hold_begin, hold_try_leave};
use crate::runtime::{P, PStatus};
use crate::status::{Cas, Status, StatusWord, SuspendStep, suspend_step};

/// Explores every interleaving with up to three preemptions: the spin-waits on a held SCAN
/// bit make unbounded exploration infinite.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.max_branches = 100_000;
    b.check(f);
}

/// Ready with a token: `Waiting -> Runnable` at `generation`, waiting out a held SCAN.
fn ready(w: &StatusWord, generation: u32) -> bool {
    loop {
        match w.try_cas(Status::Waiting as u32, Status::Runnable as u32, Some(generation)) {
            Cas::Ok => return true,
            Cas::Scanning => thread::yield_now(),
            Cas::Other(_) => return false,
        }
    }
}

/// suspend_g against a goroutine that either parks itself for the suspender (Preempted) or
/// parks normally and is readied by a waker holding its token. Whatever the interleaving:
/// the suspender only ever holds a scannable state, exactly one party readies the goroutine,
/// and it ends Runnable with no SCAN bit.
#[test]
fn loom_suspend_vs_self_park_vs_ready() {
    model(|| {
        let w = Arc::new(StatusWord::new(Status::Running));
        let stop_asked = Arc::new(AtomicBool::new(false));
        // Token slot: 0 = none, else generation + 1.
        let token = Arc::new(AtomicU64::new(0));
        let readies = Arc::new(AtomicUsize::new(0));

        let goroutine = {
            let (w, stop_asked, token) = (w.clone(), stop_asked.clone(), token.clone());
            thread::spawn(move || {
                // At its next safepoint: a stop request wins over its own plan to park.
                if stop_asked.load(Ordering::SeqCst) {
                    w.cas(Status::Running, Status::Preempted);
                } else {
                    let generation = w.park_begin();
                    token.store(generation as u64 + 1, Ordering::SeqCst);
                    w.cas_from_scan(Status::Waiting, Status::Waiting);
                }
            })
        };
        let waker = {
            let (w, token, readies) = (w.clone(), token.clone(), readies.clone());
            thread::spawn(move || {
                // Wake the park if it is complete by now (otherwise the cleanup below does): one
                // attempt, no spinning, so the model stays finite.
                let t = token.load(Ordering::SeqCst);
                if t != 0
                    && w.try_cas(
                        Status::Waiting as u32,
                        Status::Runnable as u32,
                        Some((t - 1) as u32),
                    ) == Cas::Ok
                {
                    readies.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        // The suspender.
        let mut owed = false;
        let held = loop {
            match suspend_step(&w, true, || stop_asked.store(true, Ordering::SeqCst)) {
                SuspendStep::Held(s) => break s,
                SuspendStep::Claimed => owed = true,
                SuspendStep::Dead => unreachable!("never dies"),
                _ => thread::yield_now(),
            }
        };
        assert!(matches!(held, Status::Runnable | Status::Waiting | Status::Syscall));
        w.cas_from_scan(held, held);
        if owed {
            let generation = w.load().generation;
            assert!(ready(&w, generation), "the suspender could not ready what it claimed");
            readies.fetch_add(1, Ordering::SeqCst);
        }
        goroutine.join().unwrap();
        waker.join().unwrap();
        // A normal park whose waker gave up early is still parked; wake it now.
        let t = token.load(Ordering::SeqCst);
        if readies.load(Ordering::SeqCst) == 0 && t != 0 && ready(&w, (t - 1) as u32) {
            readies.fetch_add(1, Ordering::SeqCst);
        }
        assert_eq!(
            readies.load(Ordering::SeqCst),
            1,
            "readied {} times",
            readies.load(Ordering::SeqCst)
        );
        let end = w.load();
        assert_eq!(end.base(), Some(Status::Runnable));
        assert!(!end.scanning());
    });
}

/// Two suspenders race for one goroutine that is Waiting: they take turns (never both hold it)
/// and the goroutine's waker cannot ready it while either holds it.
#[test]
fn loom_concurrent_suspenders_take_turns() {
    model(|| {
        let w = Arc::new(StatusWord::new(Status::Running));
        let generation = w.park_begin();
        w.cas_from_scan(Status::Waiting, Status::Waiting);
        let holders = Arc::new(AtomicUsize::new(0));
        let spawn_suspender = |w: Arc<StatusWord>, holders: Arc<AtomicUsize>| {
            thread::spawn(move || {
                let held = loop {
                    match suspend_step(&w, true, || unreachable!("not running")) {
                        SuspendStep::Held(s) => break s,
                        SuspendStep::Wait => thread::yield_now(),
                        other => unreachable!("{other:?}"),
                    }
                };
                assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                holders.fetch_sub(1, Ordering::SeqCst);
                w.cas_from_scan(held, held);
            })
        };
        let a = spawn_suspender(w.clone(), holders.clone());
        let b = spawn_suspender(w.clone(), holders.clone());
        assert!(ready(&w, generation));
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(w.load().base(), Some(Status::Runnable));
        assert!(!w.load().scanning());
    });
}

/// The ragged barrier against a P whose M is in a blocking call and comes back at the same
/// moment: the caller retakes the P (CAS Syscall -> Idle) and runs the function for it, or the
/// owner gets its P back (CAS Syscall -> Running) and runs it at its next safepoint. Exactly
/// one of them owns the P afterwards, and the function runs exactly once for it.
#[test]
fn loom_ragged_barrier_vs_blocking_call_return() {
    model(|| {
        let p = Arc::new(P::new(1));
        p.set_status(PStatus::Syscall);
        let runs = Arc::new(AtomicUsize::new(0));
        let owners = Arc::new(AtomicUsize::new(0));
        // for_each_p publishes the request...
        p.run_safe_point_fn.store(true, Ordering::SeqCst);
        let owner = {
            let (p, runs, owners) = (p.clone(), runs.clone(), owners.clone());
            thread::spawn(move || {
                // exitsyscall's fast path.
                if p.cas_status(PStatus::Syscall, PStatus::Running) {
                    owners.fetch_add(1, Ordering::SeqCst);
                    // Next safepoint.
                    if p.claim_safe_point() {
                        runs.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        // ...then retakes Ps in blocking calls; the hand-off runs the function.
        if p.cas_status(PStatus::Syscall, PStatus::Idle) {
            owners.fetch_add(1, Ordering::SeqCst);
            if p.claim_safe_point() {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        }
        owner.join().unwrap();
        assert_eq!(owners.load(Ordering::SeqCst), 1);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!p.run_safe_point_fn.load(Ordering::SeqCst));
    });
}

/// Asynchronous preemption: a goroutine held in place by the signal (`AsyncPreempted`, its P
/// `Held`) against a suspender that takes its SCAN bit and a stopper that borrows its P
/// (`Held -> GcStop`) at any moment, including between the two CASes of its leaving, and
/// gives it back. Whatever the interleaving: the goroutine never runs
/// user code while the suspender holds it or while its P is borrowed, the suspender only ever
/// holds it in AsyncPreempted, and in the end it runs again with its P Running and no SCAN bit.
#[test]
fn loom_async_hold_vs_suspender_vs_stopper() {
    model(|| {
        let w = Arc::new(StatusWord::new(Status::Running));
        let p = Arc::new(P::new(1));
        p.set_status(PStatus::Running);
        // Set while the goroutine runs user code (after it left the hold).
        let in_user = Arc::new(AtomicBool::new(false));
        let released = Arc::new(AtomicUsize::new(0));

        // The held goroutine's M: the signal's hold, then leaving once both others are done
        // with it (in the runtime: gcwaiting and preempt_stop clear, woken by their release).
        let goroutine = {
            let (w, p, in_user, released) =
                (w.clone(), p.clone(), in_user.clone(), released.clone());
            thread::spawn(move || {
                hold_begin(&w, &p);
                while released.load(Ordering::SeqCst) < 1 || !hold_try_leave(&w, &p) {
                    thread::yield_now();
                }
                in_user.store(true, Ordering::SeqCst);
            })
        };
        // The stopper: one attempt, at any moment the model picks (before the hold, during
        // it, between the two CASes of leaving, after): if it borrows the P, the goroutine
        // does not run until it gives the P back.
        let stopper = {
            let (w, p, in_user) = (w.clone(), p.clone(), in_user.clone());
            thread::spawn(move || {
                if p.cas_status(PStatus::Held, PStatus::GcStop) {
                    assert!(!in_user.load(Ordering::SeqCst), "ran while its P was stopped");
                    assert_ne!(w.load().base(), Some(Status::Runnable));
                    thread::yield_now();
                    assert!(!in_user.load(Ordering::SeqCst), "ran while its P was stopped");
                    p.set_status(PStatus::Held);
                }
            })
        };
        // The suspender.
        let held = loop {
            match suspend_step(&w, false, || unreachable!("never asked")) {
                SuspendStep::Held(s) => break s,
                SuspendStep::Wait | SuspendStep::Running => thread::yield_now(),
                other => unreachable!("{other:?}"),
            }
        };
        assert_eq!(held, Status::AsyncPreempted);
        assert!(!in_user.load(Ordering::SeqCst), "ran while suspended");
        w.cas_from_scan(held, held);
        released.fetch_add(1, Ordering::SeqCst);
        goroutine.join().unwrap();
        stopper.join().unwrap();
        assert!(in_user.load(Ordering::SeqCst));
        assert_eq!(p.status(), PStatus::Running);
        let end = w.load();
        assert_eq!(end.base(), Some(Status::Running));
        assert!(!end.scanning());
    });
}
