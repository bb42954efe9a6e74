//! Hangs found by programs nobody here wrote (issue 18), each as a scenario that ends by itself
//! or fails at its own deadline with the runtime's goroutine dump: a runnable goroutine lost on
//! the urgent queue, std locks held where the preemption signal stops a goroutine, and misuse
//! of the stopping API that used to wait for ever.
//!
//! Tests that need load make it themselves (busy OS threads) and judge by events, never by
//! timings.

use safepoint_sched::{
    Runtime, blocking, for_each_p, go, poll, set_urgent, stop_the_world, suspend_g,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// How long a scenario may take before it counts as hung (they take well under a second
/// each on an idle machine; the bound is for a loaded CI machine).
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `body` on a goroutine of `rt` from a helper thread; fails with the goroutine dump if it
/// has not returned by [`DEADLINE`]. The runtime is leaked on a hang (its Ms are stuck).
fn within_deadline<R: Send + 'static>(
    rt: Runtime,
    what: &str,
    body: impl FnOnce() -> R + Send + 'static,
) -> R {
    within_deadline_shared(&Arc::new(rt), what, body)
}

/// [`within_deadline`] with a runtime the caller keeps (to read its stats after).
fn within_deadline_shared<R: Send + 'static>(
    rt: &Arc<Runtime>,
    what: &str,
    body: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    let r2 = rt.clone();
    std::thread::spawn(move || {
        let out = r2.block_on(body);
        let _ = tx.send(out);
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(out) => out,
        Err(_) => {
            let dump = rt.dump_goroutines();
            let stats = rt.stats();
            std::mem::forget(rt.clone());
            panic!("{what}: no progress within {DEADLINE:?}\n{stats:?}\n{dump}");
        }
    }
}

/// OS threads spinning until dropped, so that the runtime's Ms get descheduled at arbitrary
/// points (the races below need the machine busy to show).
struct Busy {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Busy {
    fn start(n: usize) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Busy { stop, threads }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Spins for about `ns` nanoseconds (a blocking call's body that keeps the thread on the CPU,
/// so that sysmon sees the P in a call and retakes it).
fn spin_for(ns: u64) {
    let t = std::time::Instant::now();
    while (t.elapsed().as_nanos() as u64) < ns {
        std::hint::spin_loop();
    }
}

/// Issue 18, item 1: an urgent goroutine (a collector's driver) coming back from a blocking
/// call whose P sysmon retook goes to the urgent queue; the M that had taken the P, finding
/// nothing, went to sleep without looking at that queue, and with one P nobody ever ran the
/// goroutine again. Several runtimes at once on a busy machine make the window show.
#[test]
fn an_urgent_goroutine_returning_from_a_blocking_call_is_never_lost() {
    let _busy = Busy::start(2);
    let runs: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let rt = Runtime::builder().procs(1).schedcheck(true).build().unwrap();
                within_deadline(rt, "urgent goroutine in blocking calls", move || {
                    set_urgent(true);
                    let mut x = i as u64;
                    for _ in 0..20_000u64 {
                        // A goroutine queued behind it makes sysmon retake the P within a tick
                        // of the call; it ends soon, and its M goes idle around the moment the
                        // call returns (from a few to a hundred microseconds).
                        go(|| spin_for(5_000));
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        blocking(|| spin_for(2_000 + (x >> 33) % 100_000));
                    }
                    set_urgent(false);
                })
            })
        })
        .collect();
    for r in runs {
        r.join().unwrap();
    }
}

/// What the goroutines of [`os_locks_under_stops`] hold across their short critical sections.
#[derive(Clone, Copy, Debug)]
enum OsLock {
    /// A `std::sync::Mutex`, as any Rust library uses.
    StdMutex,
    /// Standard error's lock, as `eprintln!` takes it.
    Stderr,
}

/// Issue 18, item 2: goroutines taking an OS lock for short critical sections (no safepoint
/// inside, as the thread-identity contract allows) between polls, while another goroutine
/// stops the world in a loop. The preemption signal may hold a goroutine in place inside its
/// critical section; another goroutine then blocks its M in the kernel on that lock with its
/// P still Running, never reaching a safepoint, and the stop used to wait for it for ever
/// while keeping the holder held. Judged by events: every stop completes and every worker
/// finishes its rounds.
fn os_locks_under_stops(lock: OsLock) {
    let _busy = Busy::start(1);
    let rt = Runtime::builder().procs(3).schedcheck(true).build().unwrap();
    let stops =
        within_deadline(rt, &format!("{lock:?} critical sections under stops"), move || {
            let m = Arc::new(std::sync::Mutex::new(0u64));
            let done = Arc::new(AtomicBool::new(false));
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let m = m.clone();
                    go(move || {
                        for _ in 0..3_000 {
                            match lock {
                                OsLock::StdMutex => {
                                    let mut g = m.lock().unwrap();
                                    *g += 1;
                                    spin_for(20_000);
                                }
                                OsLock::Stderr => {
                                    use std::io::Write;
                                    let mut e = std::io::stderr().lock();
                                    spin_for(20_000);
                                    let _ = e.write_all(b"");
                                }
                            }
                            poll();
                            spin_for(5_000);
                        }
                    })
                })
                .collect();
            let stopper = {
                let done = done.clone();
                go(move || {
                    let mut n = 0u64;
                    while !done.load(Ordering::Relaxed) {
                        drop(stop_the_world("test"));
                        n += 1;
                        poll();
                    }
                    n
                })
            };
            for w in workers {
                w.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
            stopper.join().unwrap()
        });
    assert!(stops > 0);
}

#[test]
fn std_mutex_critical_sections_do_not_deadlock_a_stop() {
    os_locks_under_stops(OsLock::StdMutex);
}

#[test]
fn stderr_lock_held_by_goroutines_does_not_deadlock_a_stop() {
    os_locks_under_stops(OsLock::Stderr);
}

/// Issue 18, item 6: a goroutine suspending a goroutine that it already holds suspended
/// waited for itself for ever; it is a described panic of that goroutine.
#[test]
fn suspending_a_goroutine_twice_is_a_described_panic() {
    let rt = Runtime::builder().procs(2).schedcheck(true).build().unwrap();
    let msg = within_deadline(rt, "double suspension", || {
        let stop = Arc::new(AtomicBool::new(false));
        let target = {
            let stop = stop.clone();
            go(move || {
                while !stop.load(Ordering::Relaxed) {
                    poll();
                }
            })
        };
        while target.goroutine().status().starts_with("Runnable") {
            safepoint_sched::yield_now();
        }
        let first = suspend_g(target.goroutine());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _again = suspend_g(target.goroutine());
        }));
        drop(first);
        // Another caller may suspend it afterwards, and again once that is released.
        let t = target.goroutine();
        go(move || drop(suspend_g(t))).join().unwrap();
        drop(suspend_g(target.goroutine()));
        stop.store(true, Ordering::Relaxed);
        target.join().unwrap();
        let e = r.expect_err("the second suspension returned");
        e.downcast_ref::<String>().cloned().unwrap_or_default()
    });
    assert!(msg.contains("already suspended by this caller"), "{msg}");
}

/// Issue 18, item 6: a panic inside the function given to `for_each_p` unwound the M that ran
/// it for another P, and the barrier waited for that P for ever. The barrier completes, the
/// panic reaches the caller, and the runtime goes on working.
#[test]
fn a_panic_inside_for_each_p_reaches_the_caller() {
    let rt = Runtime::builder().procs(3).schedcheck(true).build().unwrap();
    let (ran, caught) = within_deadline(rt, "panic in for_each_p", || {
        let stop = Arc::new(AtomicBool::new(false));
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                go(move || {
                    while !stop.load(Ordering::Relaxed) {
                        poll();
                    }
                })
            })
            .collect();
        let mut caught = 0;
        for round in 0..50usize {
            let r = std::panic::catch_unwind(|| {
                for_each_p(&|id| {
                    if id == round % 3 {
                        panic!("boom on P{id}");
                    }
                })
            });
            if let Err(e) = r {
                let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
                assert!(msg.starts_with("boom on P"), "{msg}");
                caught += 1;
            }
        }
        // Still working: every P runs a barrier's function.
        let ran = AtomicU64::new(0);
        for_each_p(&|_| {
            ran.fetch_add(1, Ordering::Relaxed);
        });
        stop.store(true, Ordering::Relaxed);
        for s in spinners {
            s.join().unwrap();
        }
        (ran.into_inner(), caught)
    });
    assert_eq!(caught, 50);
    assert_eq!(ran, 3);
}

// ---- the watchdog (SAFEPOINT_DEBUG=schedcheck=1) -------------------------------------------

/// Names the scenario a child process must run.
const CHILD_VAR: &str = "SAFEPOINT_SCHED_HANGS_CHILD";

/// In the parent: runs test `name` in a child process and returns its status and stderr. In
/// that child: runs `scenario`, then exits 0.
fn run_in_child(name: &str, scenario: fn()) -> (std::process::ExitStatus, String) {
    if std::env::var_os(CHILD_VAR).is_some_and(|v| v == name) {
        let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: setrlimit reads a valid rlimit; lowering our own limit is always allowed.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
        eprintln!("child: {name}");
        scenario();
        std::process::exit(0);
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, name)
        .env_remove("SAFEPOINT_DEBUG")
        .output()
        .expect("cannot re-execute the test binary");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains(&format!("child: {name}")), "the child did not run:\n{stderr}");
    (out.status, stderr)
}

/// With the watchdog on, a stop that can never finish (a goroutine loops without polling and
/// the signal is off) aborts after a second with the report, instead of hanging.
#[test]
fn the_watchdog_turns_a_stop_that_never_ends_into_a_described_abort() {
    let (status, stderr) =
        run_in_child("the_watchdog_turns_a_stop_that_never_ends_into_a_described_abort", || {
            let rt =
                Runtime::builder().procs(2).async_preempt(false).schedcheck(true).build().unwrap();
            rt.block_on(|| {
                let spinning = Arc::new(AtomicBool::new(false));
                let s = spinning.clone();
                go(move || {
                    s.store(true, Ordering::SeqCst);
                    let mut x = 0u64;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                });
                while !spinning.load(Ordering::SeqCst) {
                    safepoint_sched::yield_now();
                }
                let _w = stop_the_world("never");
            });
        });
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{stderr}");
    assert!(stderr.contains("fatal error: schedcheck: stop_the_world has waited"), "{stderr}");
    assert!(stderr.contains("queues: global"), "{stderr}");
    assert!(stderr.contains("P0: ") && stderr.contains("P1: "), "{stderr}");
    assert!(stderr.contains("[Running"), "{stderr}");
}

/// A check registered for the watchdog that reports a problem aborts the process with it; with
/// the watchdog off nothing is registered.
#[test]
fn a_registered_watchdog_check_that_fails_aborts_with_its_description() {
    let (status, stderr) =
        run_in_child("a_registered_watchdog_check_that_fails_aborts_with_its_description", || {
            let off = Runtime::builder().procs(1).build().unwrap();
            off.handle().add_watchdog_check(Box::new(|_| Some("never registered".into())));
            let rt = Runtime::builder().procs(1).schedcheck(true).build().unwrap();
            rt.handle().add_watchdog_check(Box::new(|_| Some("the test's check failed".into())));
            // sysmon runs the checks even while every P idles.
            std::thread::sleep(Duration::from_secs(30));
        });
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{stderr}");
    assert!(stderr.contains("fatal error: schedcheck: the test's check failed"), "{stderr}");
    assert!(!stderr.contains("never registered"), "{stderr}");
}

/// Issue 18: the counts that a hang report reads see every queue. Three goroutines spawned from
/// outside while the only P runs a goroutine that never yields wait on the global queue.
#[test]
fn stats_and_the_goroutine_dump_count_every_queue() {
    let rt = Arc::new(Runtime::builder().procs(1).build().unwrap());
    let (release, running) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (r2, rel, run) = (rt.clone(), release.clone(), running.clone());
    let host = std::thread::spawn(move || {
        r2.block_on(move || {
            run.store(true, Ordering::SeqCst);
            while !rel.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        })
    });
    while !running.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let hs: Vec<_> = (0..3).map(|_| rt.spawn(|| ()).unwrap()).collect();
    let (stats, dump) = (rt.stats(), rt.dump_goroutines());
    release.store(true, Ordering::SeqCst);
    host.join().unwrap();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(stats.queued, 3, "{stats:?}");
    assert!(dump.starts_with("queued: global 3, urgent 0, P0 0\n"), "{dump}");
}

/// A goroutine looping on short blocking calls (each returning before sysmon retakes its P)
/// kept its one P, and the goroutines queued behind it, for long stretches (seconds in this
/// scenario, tens of seconds in others): its time slice ran out while its P was in a call,
/// and sysmon could only ask it to yield at a look that found it between calls. Now sysmon
/// asks the goroutine in the call, whose return is a safepoint. (A guard against the
/// stretches growing without bound; this scenario took 5.5 s before the change and 0.1-1.2 s
/// after, on a loaded machine: a latency, judged here only by the deadline.)
#[test]
fn a_goroutine_looping_on_short_blocking_calls_lets_the_queued_ones_run() {
    let rt = Runtime::builder().procs(1).schedcheck(true).build().unwrap();
    let rounds = within_deadline(rt, "short blocking calls on one P", || {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let looper = go(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                blocking(|| std::thread::sleep(Duration::from_micros(50)));
                n += 1;
            }
            n
        });
        // Queued behind the looper on the only P, while this goroutine too loops on short
        // blocking calls: each must get to run.
        for _ in 0..20 {
            let done = Arc::new(AtomicBool::new(false));
            let d = done.clone();
            go(move || d.store(true, Ordering::Relaxed));
            while !done.load(Ordering::Relaxed) {
                blocking(|| std::thread::sleep(Duration::from_micros(50)));
            }
        }
        stop.store(true, Ordering::Relaxed);
        looper.join().unwrap()
    });
    assert!(rounds > 0);
}

/// An urgent goroutine (a collector's mark worker scanning stacks) that waits in `suspend_g`
/// for a goroutine another goroutine holds took its P back at every yield (urgent goroutines
/// are requeued on the urgent queue, served first), so the holder, queued on the same P,
/// never ran again to let go: with the held goroutine's own P stuck in its asynchronous hold,
/// nothing else could run. The waiting urgent goroutine now yields as an ordinary one.
#[test]
fn an_urgent_suspender_waiting_for_a_held_goroutine_lets_its_holder_run() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    within_deadline(rt, "urgent suspend_g behind a holder", || {
        let started = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (started.clone(), stop.clone());
        // Never polls: the holder's suspension holds it with the preemption signal, and its M
        // and P wait in the hold.
        let target = go(move || {
            s2.store(true, Ordering::SeqCst);
            while !stop2.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let t = target.goroutine();
        let holding = Arc::new(AtomicBool::new(false));
        let h2 = holding.clone();
        // The holder: holds the target a while, polling (so its time slice ends and the
        // urgent goroutine gets the P), then lets go.
        let holder = go(move || {
            let held = suspend_g(t);
            h2.store(true, Ordering::SeqCst);
            let t0 = std::time::Instant::now();
            while t0.elapsed() < Duration::from_millis(50) {
                poll();
            }
            drop(held);
        });
        while !holding.load(Ordering::SeqCst) {
            poll();
        }
        let urgent = go(move || {
            set_urgent(true);
            let held = suspend_g(t);
            drop(held);
        });
        urgent.join().unwrap();
        holder.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        target.join().unwrap();
    });
}

/// A goroutine held by `suspend_g` while it waited in a run queue (held runnable) made the M
/// that took it from the queue wait for the hold to end before anything else, for ever if
/// the holder was queued behind it on the same P: with one P, a holder whose time slice
/// ended while it held (it polls) never ran again. The M now puts a goroutine held that long
/// back in its queue and runs the next one.
#[test]
fn a_goroutine_held_in_a_run_queue_does_not_stop_its_p() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    within_deadline(rt, "a held runnable goroutine on one P", || {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        // Polls: it is queued (runnable) whenever another goroutine runs.
        let target = go(move || {
            while !s2.load(Ordering::Relaxed) {
                poll();
            }
        });
        let t = target.goroutine();
        let holder = go(move || {
            for _ in 0..5 {
                let held = suspend_g(t);
                // Longer than a time slice: the holder is preempted while it holds.
                let t0 = std::time::Instant::now();
                while t0.elapsed() < Duration::from_millis(30) {
                    poll();
                }
                drop(held);
            }
        });
        holder.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        target.join().unwrap();
    });
}

/// The scenario of a collector's stalled marking in the soak (the phase stayed Mark for 10 s):
/// a suspender `S` asks a running goroutine `T` to stop and yields while it waits; `T` moves
/// to the P where `S` is queued and runs there without polling; any preemption signal (here a
/// stop of the world from a goroutine on the other P) holds `T` in place, and the hold goes on
/// waiting for `S`, whose request is out (`preempt_stop`), while `S` waits in the held P's
/// queue, which nothing runs: the other P always has a goroutine of its own, so it never
/// steals. sysmon now moves the queue of a P held for over a millisecond to the global queue,
/// where the other P finds `S`.
///
/// The placement is made, not hoped for: `T` holds one P in a `no_preempt` section (so every
/// other goroutine runs on the other P) until `R` lets it go on. `S` (spawned last, so in
/// `runnext`) asks `T` from the other P and yields behind `R`; `R` lets `T` go on, and `T`
/// spawns the stopper `Z` (on its own P, which `Z` keeps busy from then on) and parks; `R`
/// readies it into its own P's `runnext`, ahead of `S`, and exits.
#[test]
fn a_suspender_queued_behind_its_held_target_is_not_stranded() {
    use safepoint_sched::{GoroutineRef, WaitReason, no_preempt, park, yield_now};
    let rt = Arc::new(Runtime::builder().procs(2).build().unwrap());
    within_deadline_shared(&rt, "a suspender queued behind its held target", move || {
        let started = Arc::new(AtomicBool::new(false));
        let go_on = Arc::new(AtomicBool::new(false));
        let end = Arc::new(AtomicBool::new(false));
        let token: Arc<std::sync::Mutex<Option<GoroutineRef>>> = Arc::default();
        let z_handle: Arc<std::sync::Mutex<Option<safepoint_sched::JoinHandle<()>>>> =
            Arc::default();
        let t = {
            let (started, go_on, end, token, z_handle) =
                (started.clone(), go_on.clone(), end.clone(), token.clone(), z_handle.clone());
            go(move || {
                {
                    let _np = no_preempt();
                    started.store(true, Ordering::SeqCst);
                    while !go_on.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                    // The stopper, on this P (its runnext).
                    let end = end.clone();
                    let z = go(move || {
                        while !end.load(Ordering::SeqCst) {
                            drop(stop_the_world("test: hold the target"));
                            yield_now();
                        }
                    });
                    *z_handle.lock().unwrap() = Some(z);
                }
                // No safepoint between the section's end and the park: the request stays out.
                park(WaitReason::Park, |r| {
                    *token.lock().unwrap() = Some(r);
                    true
                });
                // Readied on the other P: never polls again.
                while !end.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
            })
        };
        while !started.load(Ordering::SeqCst) {
            yield_now();
        }
        // From here on this goroutine, and all it spawns, run on the P `T` does not hold.
        let tg = t.goroutine();
        let r = {
            let (go_on, token) = (go_on.clone(), token.clone());
            go(move || {
                // `S` has asked (it ran first, from runnext, and yielded behind us).
                go_on.store(true, Ordering::SeqCst);
                let tok = loop {
                    if let Some(tok) = token.lock().unwrap().take() {
                        break tok;
                    }
                    std::hint::spin_loop();
                };
                tok.ready();
            })
        };
        let s = go(move || drop(suspend_g(tg)));
        s.join().unwrap();
        end.store(true, Ordering::SeqCst);
        r.join().unwrap();
        t.join().unwrap();
        let z = z_handle.lock().unwrap().take().expect("the stopper was spawned");
        z.join().unwrap();
    });
    // The scenario did strand it (else this test proves nothing).
    assert!(rt.stats().held_queue_handoffs > 0, "the suspender was never stranded");
}

/// An urgent suspender (a collector's mark worker) whose target is running keeps its place
/// on the urgent queue while it waits: it yields behind the goroutines of its P only while
/// another suspender holds the target (as `an_urgent_suspender_waiting_for_a_held_goroutine_
/// lets_its_holder_run` needs). Yielding behind them at every wait, it waited behind every
/// goroutine of its P, each with its time slice, at every yield, and could be stranded as in
/// `a_suspender_queued_behind_its_held_target_is_not_stranded`: the soak's marking stalled.
///
/// `T` holds one P in a `no_preempt` section (the signal is declined there), so `S` waits
/// for it on the other P, where `R` is queued behind `S`; `T` parks 100 ms after `S` has
/// started, and `S` takes it there. `R` must not have run before `T` left its section
/// (until then only `S`'s P could run it; after, `T`'s P may steal it). Without sysmon, whose
/// time slices would move the queue.
#[test]
fn an_urgent_suspender_whose_target_runs_keeps_its_place() {
    use safepoint_sched::{WaitReason, no_preempt, park, yield_now};
    let rt = Runtime::builder().procs(2).sysmon(false).build().unwrap();
    within_deadline(rt, "an urgent suspender whose target runs", move || {
        let started = Arc::new(AtomicBool::new(false));
        let s_started = Arc::new(AtomicBool::new(false));
        // Set by `T` just before it leaves its section: until then the other P is `T`'s.
        let leaving = Arc::new(AtomicBool::new(false));
        let r_ran_early = Arc::new(AtomicBool::new(false));
        let token: Arc<std::sync::Mutex<Option<safepoint_sched::GoroutineRef>>> = Arc::default();
        let t = {
            let (started, s_started, leaving, token) =
                (started.clone(), s_started.clone(), leaving.clone(), token.clone());
            go(move || {
                {
                    let _np = no_preempt();
                    started.store(true, Ordering::SeqCst);
                    while !s_started.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                    let t0 = std::time::Instant::now();
                    while t0.elapsed() < Duration::from_millis(100) {
                        std::hint::spin_loop();
                    }
                    leaving.store(true, Ordering::SeqCst);
                }
                park(WaitReason::Park, |r| {
                    *token.lock().unwrap() = Some(r);
                    true
                });
            })
        };
        while !started.load(Ordering::SeqCst) {
            yield_now();
        }
        let tg = t.goroutine();
        let r = {
            let (leaving, r_ran_early) = (leaving.clone(), r_ran_early.clone());
            // Run before `T` leaves its section: then on `S`'s P, which `S` yielded to us.
            go(move || r_ran_early.store(!leaving.load(Ordering::SeqCst), Ordering::SeqCst))
        };
        let s = {
            let s_started = s_started.clone();
            go(move || {
                set_urgent(true);
                s_started.store(true, Ordering::SeqCst);
                drop(suspend_g(tg));
                set_urgent(false);
            })
        };
        s.join().unwrap();
        r.join().unwrap();
        let tok = loop {
            if let Some(tok) = token.lock().unwrap().take() {
                break tok;
            }
            yield_now();
        };
        tok.ready();
        t.join().unwrap();
        assert!(
            !r_ran_early.load(Ordering::SeqCst),
            "the urgent suspender yielded its P to the goroutines queued behind it"
        );
    });
}
