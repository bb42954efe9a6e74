//! loom models of the status-word and ragged-barrier protocols, run with
//! `RUSTFLAGS="--cfg loom" cargo test --release -p safepoint-sched --lib -- loom_`.
//!
//! They drive the runtime's own transition functions ([`crate::status`], [`P::cas_status`],
//! [`P::claim_safe_point`], the run queue's [`P::put`], [`P::get`] and [`P::steal_runnext`],
//! the asynchronous hold's [`hold_begin`] and [`hold_try_leave`]) from model threads that play
//! the goroutine, a waker, a suspender, the barrier's caller, a P's owner and a thief. One
//! protocol is modelled rather than run, because its code needs a whole scheduler: the
//! wake-up handshake between a readier and an M going idle ([`loom_wakep_vs_idle_m`]), written
//! with the same atomics and orderings as `Sched::wakep` and `schedule`.
//!
//! | protocol | models |
//! |---|---|
//! | status word, SCAN bit, park generation | `suspend_vs_self_park_vs_ready`, `concurrent_suspenders_take_turns`, `park_cancel_vs_suspender`, `stale_token_vs_repark`, `copystack_and_exit_vs_suspender` |
//! | run queue | `runnext_owner_vs_thief`, `wakep_vs_idle_m`, `urgent_vs_last_idle_m` |
//! | ragged barrier | `ragged_barrier_vs_blocking_call_return`, `ragged_barrier_vs_async_hold` |
//! | asynchronous hold | `async_hold_vs_suspender_vs_stopper`, `async_hold_vs_stop_and_restart` |

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use loom::thread;

use crate::g::{G, GPtr};
use crate::preempt::{hold_announce, hold_begin, hold_try_leave};
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

/// A park whose callback declines (`park_begin`, then `park_cancel`: the goroutine goes
/// straight back to Runnable with a new generation) against a suspender: while the parker
/// holds `Waiting|SCAN` the suspender waits; it then holds the goroutine Runnable or Running
/// only in a scannable state, and the token handed to the callback is stale afterwards.
#[test]
fn loom_park_cancel_vs_suspender() {
    model(|| {
        let w = Arc::new(StatusWord::new(Status::Running));
        let token = Arc::new(AtomicU64::new(0));
        let goroutine = {
            let (w, token) = (w.clone(), token.clone());
            thread::spawn(move || {
                let generation = w.park_begin();
                token.store(generation as u64 + 1, Ordering::SeqCst);
                // The callback declines: back to Runnable (then it would be queued and run).
                w.park_cancel();
            })
        };
        // Two looks while the goroutine parks and cancels (bounded, so that the model stays
        // finite), then one after it has: a hold is only ever taken on Runnable.
        let look = || match suspend_step(&w, false, || unreachable!("not asked")) {
            SuspendStep::Held(s) => {
                assert_eq!(s, Status::Runnable, "held a goroutine in the middle of its park");
                w.cas_from_scan(s, s);
                true
            }
            SuspendStep::Wait | SuspendStep::Running => false,
            other => unreachable!("{other:?}"),
        };
        look();
        thread::yield_now();
        look();
        goroutine.join().unwrap();
        assert!(look(), "a goroutine back to Runnable must be holdable");
        let t = token.load(Ordering::SeqCst) as u32 - 1;
        assert!(
            matches!(
                w.try_cas(Status::Waiting as u32, Status::Runnable as u32, Some(t)),
                Cas::Other(_)
            ),
            "a cancelled park's token still works"
        );
        let end = w.load();
        assert_eq!(end.base(), Some(Status::Runnable));
        assert!(!end.scanning());
    });
}

/// A token is single-use across parks: the goroutine parks and is readied by its token; it
/// then runs and parks again while a duplicate of the first token is tried at any moment. The
/// duplicate never wakes the second park (its generation is stale), and the second park's own
/// token does.
#[test]
fn loom_stale_token_vs_repark() {
    model(|| {
        let w = Arc::new(StatusWord::new(Status::Running));
        let first = w.park_begin();
        w.cas_from_scan(Status::Waiting, Status::Waiting);
        assert!(ready(&w, first), "the first token wakes the first park");
        let second = Arc::new(AtomicU64::new(0));
        let goroutine = {
            let (w, second) = (w.clone(), second.clone());
            thread::spawn(move || {
                // Dequeued and run, then parked again.
                w.cas(Status::Runnable, Status::Running);
                let generation = w.park_begin();
                second.store(generation as u64 + 1, Ordering::SeqCst);
                w.cas_from_scan(Status::Waiting, Status::Waiting);
            })
        };
        let stale_woke = w.try_cas(Status::Waiting as u32, Status::Runnable as u32, Some(first));
        goroutine.join().unwrap();
        assert_ne!(stale_woke, Cas::Ok, "a stale token woke a later park");
        let t = second.load(Ordering::SeqCst) as u32 - 1;
        assert_ne!(t, first);
        assert!(ready(&w, t), "the second park's own token must wake it");
    });
}

/// A suspender against a goroutine that grows its managed stack (`CopyStack`, not
/// scannable) and then exits (`Dead` with a new generation), answering a stop request at its
/// one safepoint in between if it sees it: the suspender never holds it while its stack is
/// being copied, and either holds it parked for it (Preempted, claimed, then Waiting) or
/// finds it dead.
#[test]
fn loom_copystack_and_exit_vs_suspender() {
    model(|| {
        let w = Arc::new(StatusWord::new(Status::Running));
        let stop_asked = Arc::new(AtomicBool::new(false));
        let copying = Arc::new(AtomicBool::new(false));
        let goroutine = {
            let (w, stop_asked, copying) = (w.clone(), stop_asked.clone(), copying.clone());
            thread::spawn(move || {
                w.cas(Status::Running, Status::CopyStack);
                copying.store(true, Ordering::SeqCst);
                copying.store(false, Ordering::SeqCst);
                w.cas(Status::CopyStack, Status::Running);
                // Its safepoint: park for the suspender if asked (the suspender then owns it,
                // and it never runs again in this model), else run to its end.
                if stop_asked.load(Ordering::SeqCst) {
                    w.cas(Status::Running, Status::Preempted);
                } else {
                    w.cas_bump(Status::Running, Status::Dead);
                }
            })
        };
        let mut owed = false;
        let outcome = loop {
            match suspend_step(&w, true, || stop_asked.store(true, Ordering::SeqCst)) {
                SuspendStep::Held(s) => {
                    assert!(!copying.load(Ordering::SeqCst), "held while copying its stack");
                    w.cas_from_scan(s, s);
                    break Some(s);
                }
                SuspendStep::Dead => break None,
                SuspendStep::Claimed => owed = true,
                _ => thread::yield_now(),
            }
        };
        goroutine.join().unwrap();
        match outcome {
            Some(s) => {
                assert!(owed, "held a goroutine that never parked for us");
                assert_eq!(s, Status::Waiting);
            }
            None => assert_eq!(w.load().base(), Some(Status::Dead)),
        }
        assert!(!w.load().scanning());
    });
}

/// A fake goroutine pointer, never dereferenced: the run queue only moves pointers.
fn fake_g(i: usize) -> GPtr {
    GPtr(core::ptr::NonNull::new((i * 64) as *mut G).expect("non-null"))
}

/// The run queue's `runnext` slot, owner against thief: the owner queues two goroutines in
/// `runnext` one after the other (the second kicks the first to the back of its queue) and
/// then takes whatever it has left; a thief (a spinning M that has waited out its grace)
/// tries to take the victim's `runnext` twice at any moment. Every goroutine is taken exactly
/// once: none lost, none run twice.
#[test]
fn loom_runnext_owner_vs_thief() {
    model(|| {
        let p = Arc::new(P::new(0));
        let thief = {
            let p = p.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..2 {
                    if let Some(g) = p.steal_runnext() {
                        got.push(g.0.as_ptr() as usize);
                    }
                    thread::yield_now();
                }
                got
            })
        };
        let mut got = Vec::new();
        // SAFETY: this thread plays the M owning the P; the thief only uses `steal_runnext`.
        unsafe {
            p.put(fake_g(1), true);
            p.put(fake_g(2), true);
            while let Some((g, _)) = p.get() {
                got.push(g.0.as_ptr() as usize);
            }
        }
        got.extend(thief.join().unwrap());
        got.sort_unstable();
        assert_eq!(got, [64, 128], "each goroutine taken exactly once");
    });
}

/// The wake-up handshake that keeps work from sitting queued while every M sleeps (a model
/// of `Sched::wakep` against `schedule`'s idle path, with their atomics and orderings): a
/// readier queues work, then (`wakep`) fences and wakes an M if a P is idle and nobody spins;
/// the last spinning M, finding nothing, puts its P on the idle list, stops counting itself
/// spinning, fences, and looks at the queues once more. Whatever the interleaving, the work is
/// found: either the readier wakes an M or the idling M sees the work.
#[test]
fn loom_wakep_vs_idle_m() {
    use loom::sync::atomic::fence;
    model(|| {
        // One spinning M holding the only other P; the readier runs on a P of its own.
        let npidle = Arc::new(AtomicUsize::new(0));
        let nmspinning = Arc::new(AtomicUsize::new(1));
        let queued = Arc::new(AtomicBool::new(false));
        let readier = {
            let (npidle, nmspinning, queued) = (npidle.clone(), nmspinning.clone(), queued.clone());
            thread::spawn(move || {
                // enqueue: the push (the queue's own ordering is irrelevant: the fences decide).
                queued.store(true, Ordering::Relaxed);
                // wakep
                fence(Ordering::SeqCst);
                if npidle.load(Ordering::SeqCst) == 0 {
                    return false;
                }
                nmspinning.load(Ordering::SeqCst) == 0
                    && nmspinning.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_ok()
            })
        };
        // schedule(): the spinner found nothing; pidleput, drop the spinning count, fence,
        // look again.
        npidle.fetch_add(1, Ordering::SeqCst);
        nmspinning.fetch_sub(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let saw_work = queued.load(Ordering::Relaxed);
        let woke = readier.join().unwrap();
        assert!(woke || saw_work, "work queued while every M went to sleep");
    });
}

/// Issue 18: the urgent queue against the last M going idle. An M without a P (a blocking
/// call's return whose P sysmon retook) queues an urgent goroutine: the push, the SeqCst rise
/// of `nurgent`, then `wakep`'s fence and look at the idle Ps (with none idle, its other
/// resort, ending a running goroutine's slice, finds no goroutine running on the only P,
/// whose M is in `schedule`). The only P's M, finding nothing, publishes its P idle, fences,
/// and looks at the shared queues once more (`Sched::shared_work`). Whatever the interleaving,
/// the goroutine is found: either the queuer wakes an M or the idling M sees the count. With
/// `look_at_urgent` false, the idling M looks at the global queue only, as it did when the
/// collector's driver was lost with one P.
fn urgent_vs_last_idle_m(look_at_urgent: bool) {
    use loom::sync::atomic::fence;
    model(move || {
        let npidle = Arc::new(AtomicUsize::new(0));
        let nmspinning = Arc::new(AtomicUsize::new(0));
        let nurgent = Arc::new(AtomicUsize::new(0));
        let queuer = {
            let (npidle, nmspinning, nurgent) =
                (npidle.clone(), nmspinning.clone(), nurgent.clone());
            thread::spawn(move || {
                // enqueue_locked: push (the queue's own ordering is irrelevant), count it.
                nurgent.fetch_add(1, Ordering::SeqCst);
                // wakep
                fence(Ordering::SeqCst);
                if npidle.load(Ordering::SeqCst) == 0 {
                    return false;
                }
                nmspinning.load(Ordering::SeqCst) == 0
                    && nmspinning.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_ok()
            })
        };
        // schedule(): nothing found; pidleput, fence, look at the shared queues (the global
        // queue is empty throughout).
        npidle.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let saw_work = look_at_urgent && nurgent.load(Ordering::SeqCst) > 0;
        let woke = queuer.join().unwrap();
        assert!(woke || saw_work, "an urgent goroutine queued while every M went to sleep");
    });
}

#[test]
fn loom_urgent_vs_last_idle_m() {
    urgent_vs_last_idle_m(true);
}

/// The model finds the interleaving that lost the goroutine when the idle path did not look at
/// the urgent queue.
#[test]
#[should_panic(expected = "an urgent goroutine queued while every M went to sleep")]
fn loom_urgent_vs_last_idle_m_catches_an_idle_path_that_skips_the_urgent_queue() {
    urgent_vs_last_idle_m(false);
}

/// The ragged barrier against a P whose M holds its goroutine in place (asynchronous
/// preemption), which may happen before or after the barrier's request: the caller borrows a
/// Held P (`Held -> GcStop`), runs the function for it and gives it back; the M leaves the
/// hold only when no request is pending (as `try_leave` does), and a P that is Running again
/// runs the function at its next safepoint. Each side makes one attempt while the other runs
/// (bounded, so that the model stays finite), then the rest happens in order. The function
/// runs exactly once for the P, and the goroutine never leaves the hold while its P is
/// borrowed.
#[test]
fn loom_ragged_barrier_vs_async_hold() {
    model(|| {
        let p = Arc::new(P::new(1));
        p.set_status(PStatus::Running);
        let w = Arc::new(StatusWord::new(Status::Running));
        let runs = Arc::new(AtomicUsize::new(0));
        let borrowed = Arc::new(AtomicBool::new(false));
        // The M's attempt to leave the hold, then its goroutine's next safepoint.
        let leave = {
            let (p, w, runs, borrowed) = (p.clone(), w.clone(), runs.clone(), borrowed.clone());
            move || {
                if p.run_safe_point_fn.load(Ordering::SeqCst) || !hold_try_leave(&w, &p) {
                    return false;
                }
                assert!(!borrowed.load(Ordering::SeqCst), "left the hold with its P borrowed");
                if p.claim_safe_point() {
                    runs.fetch_add(1, Ordering::SeqCst);
                }
                true
            }
        };
        // The barrier caller's look at a held P (`run_for_held_ps`).
        let look = {
            let (p, runs, borrowed) = (p.clone(), runs.clone(), borrowed.clone());
            move || {
                if p.run_safe_point_fn.load(Ordering::SeqCst)
                    && p.status() == PStatus::Held
                    && p.cas_status(PStatus::Held, PStatus::GcStop)
                {
                    borrowed.store(true, Ordering::SeqCst);
                    if p.claim_safe_point() {
                        runs.fetch_add(1, Ordering::SeqCst);
                    }
                    borrowed.store(false, Ordering::SeqCst);
                    p.set_status(PStatus::Held);
                }
            }
        };
        let owner = {
            let (p, w, leave) = (p.clone(), w.clone(), leave.clone());
            thread::spawn(move || {
                // The signal holds the goroutine.
                hold_begin(&w, &p);
                leave()
            })
        };
        // for_each_p publishes its request, then looks.
        p.run_safe_point_fn.store(true, Ordering::SeqCst);
        look();
        let mut left = owner.join().unwrap();
        // In order now: the caller looks until the function ran; the M leaves once it may, and
        // its goroutine then reaches safepoints (where it runs the function if still pending).
        while runs.load(Ordering::SeqCst) == 0 || !left {
            look();
            if !left {
                left = leave();
            } else if p.claim_safe_point() {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the function ran twice");
        assert!(!p.run_safe_point_fn.load(Ordering::SeqCst));
        assert_eq!(p.status(), PStatus::Running);
        assert_eq!(w.load().base(), Some(Status::Running));
    });
}

/// The hold's announcement against a whole stop of the world and its restart: the stopper
/// sets gcwaiting, counts the P once it is Held (as `stop_held_ps` does), and restarts (clears
/// gcwaiting, gives the P back Held), at any moment of the hold's first two steps. Whatever
/// the interleaving: the stop counts the P exactly once, and after the restart the P is Held
/// again and the goroutine leaves the hold with it. (A hold that counted its own P, with a CAS
/// after reading gcwaiting, could take it back for a stop already over: the variant below.)
#[test]
fn loom_async_hold_vs_stop_and_restart() {
    hold_vs_stop_and_restart(false);
}

/// The bug `hold_announce` fixed, planted: the hold CASes its own P `Held -> GcStop` after
/// reading gcwaiting set. The model finds the interleaving that leaves the P stopped after the
/// restart.
#[test]
#[should_panic(expected = "taken for a stop that was over")]
fn loom_async_hold_vs_stop_and_restart_catches_a_hold_that_counts_itself() {
    hold_vs_stop_and_restart(true);
}

fn hold_vs_stop_and_restart(count_self: bool) {
    model(move || {
        let w = Arc::new(StatusWord::new(Status::Running));
        let p = Arc::new(P::new(1));
        p.set_status(PStatus::Running);
        let gcwaiting = Arc::new(AtomicBool::new(false));
        // How many times the P was counted stopped, and whether the stop is over.
        let counted = Arc::new(AtomicUsize::new(0));
        let restarted = Arc::new(AtomicBool::new(false));
        let holder = {
            let (w, p, gcwaiting, counted) =
                (w.clone(), p.clone(), gcwaiting.clone(), counted.clone());
            thread::spawn(move || {
                hold_begin(&w, &p);
                if count_self {
                    if gcwaiting.load(Ordering::SeqCst)
                        && p.cas_status(PStatus::Held, PStatus::GcStop)
                    {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    hold_announce(&gcwaiting, || {});
                }
            })
        };
        // The stopper: stop, wait until the P is counted, restart.
        gcwaiting.store(true, Ordering::SeqCst);
        while counted.load(Ordering::SeqCst) == 0 {
            if p.status() == PStatus::Held && p.cas_status(PStatus::Held, PStatus::GcStop) {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            thread::yield_now();
        }
        gcwaiting.store(false, Ordering::SeqCst);
        // `start_the_world`: a P whose M holds its goroutine goes back to Held.
        p.set_status(PStatus::Held);
        restarted.store(true, Ordering::SeqCst);
        holder.join().unwrap();
        let (n, st) = (counted.load(Ordering::SeqCst), p.status());
        assert!(
            n == 1 && st == PStatus::Held,
            "the P was taken for a stop that was over: counted {n} times, {st:?} after the restart"
        );
        // The M leaves the hold (nothing holds the goroutine any more).
        assert!(hold_try_leave(&w, &p));
        assert_eq!(p.status(), PStatus::Running);
        assert!(restarted.load(Ordering::SeqCst));
    });
}
