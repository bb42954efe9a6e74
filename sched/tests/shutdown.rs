//! Dropping a runtime in any state returns, ends every M and gives back what its goroutines
//! held (issues 18 and 25): goroutines in loops of blocking calls, parked on the runtime's
//! primitives, sleeping, spinning, queued and never started; and dropping the last handle
//! from inside one of the runtime's own goroutines is a described panic of that goroutine.
//!
//! Each scenario runs on a thread of its own and the test fails if it has not finished within
//! a minute (a failure guard against a hang only: nothing here measures time).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use safepoint_sched::{
    Chan, Cond, JoinHandle, Mutex, Runtime, RuntimeShutdown, RwLock, Select, Sema, WaitGroup,
    WaitReason, blocking, go, park, poll, resume_g, sleep, suspend_g, yield_now,
};

/// Runs `f` on a thread and fails if it has not returned within a minute (it would hang).
fn must_finish<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("{what}: hung"))
}

/// Counts its drops: captured by goroutines, it says whether what they captured was dropped.
struct Token(Arc<AtomicUsize>);
impl Drop for Token {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Waits (on this thread, outside the runtime) until `n` goroutines have said they started.
fn wait_for(started: &AtomicUsize, n: usize) {
    while started.load(Ordering::SeqCst) < n {
        std::thread::yield_now();
    }
}

/// On a goroutine: says it started, and yields until `n` have, so that a goroutine that then
/// loops on blocking calls (which keeps its P across short calls) does not keep the others
/// queued behind it before the scenario is set up.
fn start_together(started: &AtomicUsize, n: usize) {
    started.fetch_add(1, Ordering::SeqCst);
    while started.load(Ordering::SeqCst) < n {
        yield_now();
    }
}

/// Issue 18: goroutines that loop on short blocking calls never reach the scheduler's loop,
/// so a shutdown that waited for Ms to come back to it waited for ever (stuck by the 8th to
/// 10th of 200 runtimes). Dropped with such loops running, all 200 runtimes return.
#[test]
fn dropping_runtimes_with_goroutines_in_loops_of_blocking_calls_returns() {
    must_finish("dropping runtimes with blocking loops", || {
        for round in 0..200 {
            let rt = Runtime::builder().procs(1 + round % 2).build().unwrap();
            let started = Arc::new(AtomicUsize::new(0));
            for _ in 0..3 {
                let s = started.clone();
                rt.spawn(move || {
                    start_together(&s, 3);
                    loop {
                        blocking(|| std::thread::sleep(Duration::from_micros(50)));
                    }
                })
                .unwrap();
            }
            wait_for(&started, 3);
            drop(rt);
        }
    });
}

/// Issue 25: what live goroutines captured is dropped when the runtime is: each goroutine is
/// unwound at a safepoint (parked on a channel, a semaphore, a join or a sleep; parked with
/// `park` and a token nobody keeps; waiting on a `Cond`; spinning with polls; looping on blocking calls), and one
/// that never started has its closure dropped without running.
#[test]
fn dropping_a_runtime_drops_what_its_live_goroutines_captured() {
    let drops = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let rt = Runtime::builder().procs(2).build().unwrap();
    let ch = Chan::<u32>::new(0);
    let sema = Arc::new(Sema::new(0));
    let n = 9;
    let spawn = |f: Box<dyn FnOnce() + Send>| {
        let t = Token(drops.clone());
        let s = started.clone();
        rt.spawn(move || {
            let _t = t;
            start_together(&s, n);
            f();
        })
        .unwrap();
    };
    let c = ch.clone();
    spawn(Box::new(move || {
        let _ = c.recv();
    }));
    let c = ch.clone();
    spawn(Box::new(move || c.send(1)));
    let s2 = sema.clone();
    spawn(Box::new(move || s2.acquire()));
    spawn(Box::new(|| sleep(Duration::from_secs(3600))));
    spawn(Box::new(|| {
        let (m, c) = (Mutex::new(()), Cond::new());
        let g = m.lock();
        let _g = c.wait(g);
    }));
    spawn(Box::new(|| park(WaitReason::Park, |_token| true)));
    spawn(Box::new(|| {
        let forever: JoinHandle<()> = go(|| park(WaitReason::Park, |_| true));
        let _ = forever.join();
    }));
    spawn(Box::new(|| {
        loop {
            poll();
            std::hint::spin_loop();
        }
    }));
    spawn(Box::new(|| {
        loop {
            blocking(|| std::thread::sleep(Duration::from_micros(100)));
        }
    }));
    wait_for(&started, n);
    // And one that never starts: both Ps are taken by the two loops... or not yet; either way
    // its closure is dropped (run or not) by the time the drop returns.
    let never = Token(drops.clone());
    rt.spawn(move || {
        let _t = never;
        loop {
            poll();
        }
    })
    .unwrap();
    must_finish("dropping the runtime", move || drop(rt));
    assert_eq!(drops.load(Ordering::SeqCst), n + 1, "every captured value is dropped");
    drop(ch);
}

/// Waits until the goroutine of `h` is parked (`Waiting`, not held).
fn wait_parked<T>(h: &JoinHandle<T>) {
    while !h.goroutine().status().starts_with("Waiting ") {
        std::thread::yield_now();
    }
}

/// Issue 25: goroutines parked on an `RwLock` (a reader behind a pending writer, the pending
/// writer waiting for a reader, a second writer waiting for the first), on a `WaitGroup`, in a
/// `Select` with cases and in an empty one, with `park` and every other reason, held by
/// `suspend_g` (its suspender parked), and waiting on a timer's channel were abandoned at
/// drop: what they captured was never dropped. Every one is unwound now, and the lock and the
/// group stay usable: the owed wake-ups complete the abandoned operations.
#[test]
fn dropping_a_runtime_unwinds_goroutines_parked_on_every_kind_of_wait() {
    let drops = Arc::new(AtomicUsize::new(0));
    let rt = Runtime::builder().procs(2).build().unwrap();
    let rw = Arc::new(RwLock::new(0u32));
    // A reader outside the runtime: the first writer waits for it.
    let read = rw.read();
    let wg = Arc::new(WaitGroup::new());
    wg.add(1);
    // `b` is full: a select's send on it waits.
    let (a, b, c) = (Chan::<u32>::new(0), Chan::<u32>::new(1), Chan::<u32>::new(0));
    b.send(0);
    let mut handles = Vec::new();
    let mut spawn = |f: Box<dyn FnOnce() + Send>| {
        let t = Token(drops.clone());
        let h = rt
            .spawn(move || {
                let _t = t;
                f();
            })
            .unwrap();
        wait_parked(&h);
        handles.push(h);
    };
    // The pending writer (on the writer semaphore), then a reader behind it (on the reader
    // semaphore), then a second writer (on the writers' mutex).
    let r = rw.clone();
    spawn(Box::new(move || *r.write() += 1));
    let r = rw.clone();
    spawn(Box::new(move || {
        let _v = *r.read();
    }));
    let r = rw.clone();
    spawn(Box::new(move || *r.write() += 1));
    let w = wg.clone();
    spawn(Box::new(move || w.wait()));
    let (a2, b2) = (a.clone(), b.clone());
    spawn(Box::new(move || {
        Select::new()
            .recv(&a2, |_| ())
            .send(&b2, 1, || ())
            .send(&b2, 2, || ())
            .recv(&a2, |_| ())
            .wait();
    }));
    let c2 = c.clone();
    spawn(Box::new(move || {
        Select::new().recv(&c2, |_| ()).timeout(Duration::from_secs(3600), || ()).wait();
    }));
    spawn(Box::new(|| Select::<()>::new().wait()));
    for reason in [WaitReason::Chan, WaitReason::Mutex, WaitReason::RwLock, WaitReason::Select] {
        spawn(Box::new(move || park(reason, |_token| true)));
    }
    spawn(Box::new(|| {
        let _ = safepoint_sched::after(Duration::from_secs(3600)).recv();
    }));
    // Held by `suspend_g`: a goroutine spinning with polls, held by one that then parks.
    let spinning = {
        let t = Token(drops.clone());
        rt.spawn(move || {
            let _t = t;
            loop {
                poll();
            }
        })
        .unwrap()
    };
    let target = spinning.goroutine();
    spawn(Box::new(move || {
        let held = suspend_g(target);
        park(WaitReason::Park, |_| true);
        resume_g(held);
    }));
    let n = handles.len() + 1;
    must_finish("dropping the runtime", move || drop(rt));
    assert_eq!(drops.load(Ordering::SeqCst), n, "every parked goroutine's capture is dropped");
    for h in handles {
        let e = h.join().expect_err("unwound");
        assert!(e.is_shutdown(), "{e:?}");
    }
    // The owed wake-ups complete what the ghosts stand for: the reader's leaving lets the
    // first writer's ghost have the lock, which it gives back (and the reader ghost's read
    // lock with it); the lock is then free.
    drop(read);
    *rw.try_write().expect("the RwLock is free after its waiters' ghosts completed") += 10;
    assert_eq!(*rw.read(), 10);
    // The WaitGroup's `done` wakes the ghost; the group is usable again.
    wg.done();
    wg.wait();
    wg.add(1);
    wg.done();
    wg.wait();
    // The selects' nodes were unlinked: nobody waits on the channels, and they work.
    assert_eq!((a.waiting(), b.waiting(), c.waiting()), ((0, 0), (0, 0), (0, 0)));
    assert_eq!(b.recv(), Ok(0));
    b.send(7);
    assert_eq!(b.recv(), Ok(7));
    drop(spinning);
}

/// A goroutine unwound at shutdown ends with a [`RuntimeShutdown`] payload, on its join handle.
#[test]
fn a_goroutine_unwound_at_shutdown_joins_with_the_shutdown_payload() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let h = rt
        .spawn(move || {
            s.fetch_add(1, Ordering::SeqCst);
            park(WaitReason::Park, |_| true);
        })
        .unwrap();
    wait_for(&started, 1);
    must_finish("dropping the runtime", move || drop(rt));
    let e = must_finish("joining the unwound goroutine", move || h.join())
        .expect_err("unwound, not finished");
    assert!(e.into_panic().is::<RuntimeShutdown>());
}

/// Issue 18: dropping the last `Arc<Runtime>` from inside one of its own goroutines waited
/// for that goroutine's own M to exit. It is a described panic of that goroutine instead, and
/// the runtime still shuts down (on a thread of its own): whatever the goroutines captured is
/// dropped.
#[test]
fn dropping_the_last_handle_inside_its_own_goroutine_is_a_described_panic() {
    let drops = Arc::new(AtomicUsize::new(0));
    let rt = Arc::new(Runtime::builder().procs(2).build().unwrap());
    let (tx, rx) = mpsc::channel();
    let rt2 = rt.clone();
    let t = Token(drops.clone());
    // A parked goroutine too, to be unwound by the shutdown.
    let t2 = Token(drops.clone());
    rt.spawn(move || {
        let _t2 = t2;
        park(WaitReason::Park, |_| true);
    })
    .unwrap();
    let h = rt
        .spawn(move || {
            let _t = t;
            let rt = rt2;
            // Wait until the thread outside has dropped its handle: ours is the last.
            rx.recv().unwrap();
            drop(rt);
        })
        .unwrap();
    drop(rt);
    tx.send(()).unwrap();
    let e = must_finish("joining the goroutine that dropped its runtime", move || h.join())
        .expect_err("the drop panics");
    let msg = e.message().unwrap_or_default().to_string();
    assert!(msg.contains("inside one of its own goroutines"), "{msg}");
    // The shutdown completes on its own thread: both goroutines' captures are dropped.
    must_finish("the shutdown after the goroutine's drop", move || {
        while drops.load(Ordering::SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// A goroutine parked on a [`Mutex`] that a thread outside the runtime holds is unwound at
/// shutdown (it leaves the mutex's queue and its waiter count), and the mutex stays usable:
/// the thread unlocks it and locks it again, and a new waiter can wait for it.
#[test]
fn a_goroutine_parked_on_a_held_mutex_is_unwound_and_the_mutex_stays_usable() {
    let drops = Arc::new(AtomicUsize::new(0));
    let m = Arc::new(Mutex::new(0u32));
    let held = m.lock();
    let rt = Runtime::builder().procs(2).build().unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let (m2, s, t) = (m.clone(), started.clone(), Token(drops.clone()));
        rt.spawn(move || {
            let _t = t;
            s.fetch_add(1, Ordering::SeqCst);
            *m2.lock() += 1;
        })
        .unwrap();
    }
    wait_for(&started, 3);
    // All three are counted as waiters once parked.
    while !format!("{:?}", m).contains("waiters: 3") {
        std::thread::yield_now();
    }
    must_finish("dropping the runtime", move || drop(rt));
    assert_eq!(drops.load(Ordering::SeqCst), 3, "the waiters' captures are dropped");
    assert!(format!("{:?}", m).contains("waiters: 0"), "{m:?}");
    drop(held);
    // Usable: from this thread, and with a waiter of a new runtime parked on it.
    *m.lock() += 10;
    let held = m.lock();
    let rt = Runtime::builder().procs(1).build().unwrap();
    let m2 = m.clone();
    let h = rt.spawn(move || *m2.lock() += 100).unwrap();
    while !format!("{:?}", m).contains("waiters: 1") {
        std::thread::yield_now();
    }
    drop(held);
    must_finish("the new waiter", move || h.join().unwrap());
    assert_eq!(*m.lock(), 110);
}

/// A goroutine that never reaches a safepoint (a loop that does not poll, with the preemption
/// signal off; a blocking call that does not return) cannot be stopped, and used to hold the
/// drop for ever. The drop returns after its bound, leaving those threads (and the runtime's
/// memory) to them, and says so: the goroutines it abandons, then the threads it leaves; the
/// other goroutines' captures are dropped as usual.
#[test]
fn dropping_a_runtime_with_goroutines_that_never_reach_a_safepoint_returns() {
    let said = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s = said.clone();
    safepoint_sched::set_message_sink(Some(Box::new(move |m: &str| {
        s.lock().unwrap().push(m.to_string())
    })));
    let dropped = must_finish("drop with unstoppable goroutines", || {
        let rt = Runtime::builder().procs(3).async_preempt(false).build().unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let (s1, s2, s3) = (started.clone(), started.clone(), started.clone());
        let t = Token(dropped.clone());
        rt.spawn(move || {
            let _t = t;
            s1.fetch_add(1, Ordering::SeqCst);
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        })
        .unwrap();
        rt.spawn(move || {
            s2.fetch_add(1, Ordering::SeqCst);
            blocking(|| {
                loop {
                    std::thread::park();
                }
            })
        })
        .unwrap();
        let t = Token(dropped.clone());
        rt.spawn(move || {
            let _t = t;
            s3.fetch_add(1, Ordering::SeqCst);
            loop {
                poll();
            }
        })
        .unwrap();
        wait_for(&started, 3);
        drop(rt);
        dropped.load(Ordering::SeqCst)
    });
    safepoint_sched::set_message_sink(None);
    // The polling goroutine was unwound; the spinning one still runs.
    assert_eq!(dropped, 1);
    let said = said.lock().unwrap();
    assert!(
        said.iter().any(|m| m.contains("2 goroutine(s) that did not unwind")),
        "no line about the abandoned goroutines: {said:?}"
    );
    assert!(
        said.iter().any(|m| m.contains("2 thread(s) running goroutines")),
        "no line about the threads left running: {said:?}"
    );
}

/// An `RwLock` in heavy use by goroutines and by threads outside the runtime while the runtime
/// is dropped: the goroutines parked on it at that moment leave ghosts, whose owed wake-ups
/// complete their operations; once every user is gone the lock is free (a write lock is had),
/// round after round.
#[test]
fn an_rwlock_in_use_when_its_runtime_is_dropped_stays_consistent() {
    must_finish("rwlock rounds", || {
        let rw = Arc::new(RwLock::new(0u64));
        for round in 0..30 {
            let rt = Runtime::builder().procs(2).build().unwrap();
            let stop = Arc::new(AtomicUsize::new(0));
            for i in 0..8 {
                let r = rw.clone();
                rt.spawn(move || {
                    loop {
                        if i % 3 == 0 {
                            *r.write() += 1;
                        } else {
                            let _v = *r.read();
                        }
                        if i % 2 == 0 {
                            yield_now();
                        } else {
                            poll();
                        }
                    }
                })
                .unwrap();
            }
            let threads: Vec<_> = (0..2)
                .map(|i| {
                    let (r, s) = (rw.clone(), stop.clone());
                    std::thread::spawn(move || {
                        while s.load(Ordering::SeqCst) == 0 {
                            if i == 0 {
                                *r.write() += 1;
                            } else {
                                let _v = *r.read();
                            }
                        }
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(5 + round % 7));
            drop(rt);
            stop.store(1, Ordering::SeqCst);
            for t in threads {
                t.join().unwrap();
            }
            // Usable: a write lock, then a read lock, are had (a blocking lock, not a try: a
            // writers' mutex whose starving waiter left at shutdown stays in starvation mode,
            // refusing `try_lock`, until its next locker takes the hand-off it left).
            *rw.write() += 1;
            drop(rw.read());
            assert!(rw.try_write().is_some(), "round {round}: the lock is left held: {rw:?}");
        }
    });
}

/// Goroutine-locals whose destructors wait (on a channel nobody sends on) while the runtime
/// is dropped, in a goroutine unwound by the drop and in one that had returned: the drain
/// unwinds each waiting destructor with the shutdown payload, which is the shutdown at work,
/// not a panic of the destructor. The first used to stop there, leaving its other locals
/// undropped (the goroutine was unwound once only); the second was reported as "a
/// goroutine-local destructor panicked". Now every local and capture is dropped and nothing
/// is reported.
#[test]
fn local_destructors_that_wait_at_shutdown_are_unwound_and_not_reported() {
    use safepoint_sched::GoroutineLocal;
    use std::cell::RefCell;
    /// Waits in its destructor, after saying so.
    struct WaitsInDrop(Option<(Chan<()>, Arc<AtomicUsize>)>);
    impl Drop for WaitsInDrop {
        fn drop(&mut self) {
            if let Some((ch, waiting)) = self.0.take() {
                waiting.fetch_add(1, Ordering::SeqCst);
                let _ = ch.recv();
            }
        }
    }
    static WAITER: GoroutineLocal<RefCell<WaitsInDrop>> =
        GoroutineLocal::new(|| RefCell::new(WaitsInDrop(None)));
    static OTHER: GoroutineLocal<RefCell<Option<Token>>> =
        GoroutineLocal::new(|| RefCell::new(None));
    let said = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s = said.clone();
    safepoint_sched::set_message_sink(Some(Box::new(move |m: &str| {
        s.lock().unwrap().push(m.to_string())
    })));
    let dropped = must_finish("drop with waiting local destructors", || {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let waiting = Arc::new(AtomicUsize::new(0));
        for returns in [false, true] {
            let (d, s1, w) = (dropped.clone(), started.clone(), waiting.clone());
            let t = Token(dropped.clone());
            rt.spawn(move || {
                let _t = t;
                WAITER.with(|x| x.borrow_mut().0 = Some((Chan::new(0), w)));
                OTHER.with(|o| *o.borrow_mut() = Some(Token(d)));
                s1.fetch_add(1, Ordering::SeqCst);
                if !returns {
                    // Parked until the drop unwinds it; then its locals are dropped, and the
                    // waiter's destructor parks again.
                    park(WaitReason::Park, |_| true);
                }
            })
            .unwrap();
        }
        wait_for(&started, 2);
        // The goroutine that returned is parked in its waiter's destructor.
        wait_for(&waiting, 1);
        drop(rt);
        dropped.load(Ordering::SeqCst)
    });
    safepoint_sched::set_message_sink(None);
    let said = said.lock().unwrap();
    assert_eq!(dropped, 4, "both captures and both other locals are dropped: {said:?}");
    assert!(!said.iter().any(|m| m.contains("destructor panicked")), "{said:?}");
}
