//! Mutex (exclusion, starvation mode), RwLock, Cond, Once and WaitGroup.

use safepoint_sched::{
    Chan, Cond, Mutex, Once, RawMutex, Runtime, RwLock, WaitGroup, go, yield_now,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

fn rt(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).build().unwrap()
}

/// Many goroutines incrementing a plain (non-atomic) counter under the mutex, yielding and
/// parking while holding it: no update is lost.
#[test]
fn mutex_excludes() {
    let rt = rt(4);
    let n = rt.block_on(|| {
        let m = Arc::new(Mutex::new(0u64));
        let wg = Arc::new(WaitGroup::new());
        for i in 0..16 {
            wg.add(1);
            let (m, wg) = (m.clone(), wg.clone());
            go(move || {
                for j in 0..2_000 {
                    let mut g = m.lock();
                    let v = *g;
                    if (i + j) % 97 == 0 {
                        yield_now(); // hold the lock across a switch
                    }
                    *g = v + 1;
                }
                wg.done();
            });
        }
        wg.wait();
        *m.lock()
    });
    assert_eq!(n, 32_000);
}

/// Starvation mode engages: on one P, a goroutine that yields while holding the mutex and
/// re-locks it at once after unlocking always wins in normal mode (the woken waiter only runs
/// while it holds the lock again). After waiting over 1 ms the waiter switches the mutex to
/// starvation mode and is handed the lock — long before the hammer gives up.
#[test]
fn mutex_starvation_mode_engages() {
    const ROUNDS: u64 = 1_000_000;
    let rt = rt(1);
    rt.block_on(|| {
        let m = Arc::new(RawMutex::new());
        let rounds = Arc::new(AtomicU64::new(0));
        let hammer = {
            let (m, rounds) = (m.clone(), rounds.clone());
            go(move || {
                for _ in 0..ROUNDS {
                    m.lock();
                    yield_now();
                    rounds.fetch_add(1, Ordering::Relaxed);
                    m.unlock();
                }
            })
        };
        while rounds.load(Ordering::Relaxed) < 10 {
            yield_now();
        }
        let waiter = {
            let (m, rounds) = (m.clone(), rounds.clone());
            go(move || {
                m.lock();
                let at = rounds.load(Ordering::Relaxed);
                m.unlock();
                at
            })
        };
        let got_at = waiter.join().unwrap();
        hammer.join().unwrap();
        assert!(got_at < ROUNDS, "the waiter only got the mutex when the hammer stopped");
        assert!(m.starvation_count() > 0, "starvation mode never engaged");
        assert!(!m.is_locked());
    });
}

/// Unlocking an unlocked mutex is a described panic.
#[test]
fn unlock_of_unlocked_panics() {
    let rt = rt(1);
    rt.block_on(|| {
        let m = Arc::new(RawMutex::new());
        let m2 = m.clone();
        let e = go(move || m2.unlock()).join().unwrap_err();
        assert_eq!(e.message(), Some("sync: unlock of unlocked mutex"));
        // Still usable.
        m.lock();
        m.unlock();
    });
}

/// RwLock: readers share, writers exclude readers and each other; a writer is not starved by
/// a stream of readers.
#[test]
fn rwlock_readers_and_writers() {
    let rt = rt(4);
    rt.block_on(|| {
        let l = Arc::new(RwLock::new((0u64, 0u64)));
        let readers_in = Arc::new(AtomicUsize::new(0));
        let max_readers = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut rs = Vec::new();
        for _ in 0..6 {
            let (l, readers_in, max_readers, stop) =
                (l.clone(), readers_in.clone(), max_readers.clone(), stop.clone());
            rs.push(go(move || {
                while !stop.load(Ordering::Relaxed) {
                    let g = l.read();
                    let n = readers_in.fetch_add(1, Ordering::SeqCst) + 1;
                    max_readers.fetch_max(n, Ordering::SeqCst);
                    // The writer keeps both halves equal.
                    assert_eq!(g.0, g.1, "a reader saw a half-done write");
                    yield_now();
                    readers_in.fetch_sub(1, Ordering::SeqCst);
                }
            }));
        }
        // Writers get in despite the readers.
        let mut ws = Vec::new();
        for _ in 0..2 {
            let (l, readers_in) = (l.clone(), readers_in.clone());
            ws.push(go(move || {
                for _ in 0..200 {
                    let mut g = l.write();
                    assert_eq!(readers_in.load(Ordering::SeqCst), 0, "reader inside with a writer");
                    g.0 += 1;
                    yield_now();
                    g.1 += 1;
                }
            }));
        }
        for w in ws {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for r in rs {
            r.join().unwrap();
        }
        assert_eq!(*l.read(), (400, 400));
        assert!(l.try_write().is_some());
    });
}

/// Cond: signal wakes one waiter, broadcast all; no signal between unlock and park is lost.
#[test]
fn cond_signal_and_broadcast() {
    let rt = rt(2);
    rt.block_on(|| {
        let state = Arc::new((Mutex::new(0u32), Cond::new()));
        let woke = Arc::new(AtomicUsize::new(0));
        let mut hs = Vec::new();
        for _ in 0..8 {
            let (state, woke) = (state.clone(), woke.clone());
            hs.push(go(move || {
                let (m, c) = &*state;
                let mut g = m.lock();
                while *g == 0 {
                    g = c.wait(g);
                }
                *g -= 1;
                woke.fetch_add(1, Ordering::SeqCst);
            }));
        }
        let (m, c) = &*state;
        // Hand out three permits one at a time.
        for _ in 0..3 {
            *m.lock() += 1;
            c.signal();
        }
        while woke.load(Ordering::SeqCst) < 3 {
            yield_now();
        }
        // Then enough for everyone.
        *m.lock() += 5;
        c.broadcast();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!((woke.load(Ordering::SeqCst), *m.lock()), (8, 0));
    });
}

/// Cond ping-pong: two goroutines alternate strictly through one condition variable, many
/// times; a lost signal would hang (the deadlock detector would then fail the test).
#[test]
fn cond_ping_pong() {
    let rt = rt(2);
    rt.block_on(|| {
        let state = Arc::new((Mutex::new(0u32), Cond::new()));
        let other = {
            let state = state.clone();
            go(move || {
                let (m, c) = &*state;
                for i in 0..2_000 {
                    let mut g = m.lock();
                    while *g != 2 * i + 1 {
                        g = c.wait(g);
                    }
                    *g += 1;
                    c.broadcast();
                }
            })
        };
        let (m, c) = &*state;
        for i in 0..2_000 {
            let mut g = m.lock();
            while *g != 2 * i {
                g = c.wait(g);
            }
            *g += 1;
            c.broadcast();
        }
        other.join().unwrap();
        assert_eq!(*m.lock(), 4_000);
    });
}

/// Once: the function runs exactly once however many race for it; everyone returns after it
/// has finished; a panicking function still counts as run.
#[test]
fn once_runs_once() {
    let rt = rt(4);
    rt.block_on(|| {
        let once = Arc::new(Once::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let done_flag = Arc::new(AtomicBool::new(false));
        let hs: Vec<_> = (0..32)
            .map(|_| {
                let (once, runs, done_flag) = (once.clone(), runs.clone(), done_flag.clone());
                go(move || {
                    once.call_once(|| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        yield_now(); // the others must wait, not return early
                        done_flag.store(true, Ordering::SeqCst);
                    });
                    assert!(done_flag.load(Ordering::SeqCst), "returned before the call finished");
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let o2 = Arc::new(Once::new());
        let o3 = o2.clone();
        assert!(go(move || o3.call_once(|| panic!("first"))).join().is_err());
        assert!(o2.is_completed());
        o2.call_once(|| panic!("must not run again"));
    });
}

/// WaitGroup: waiters (goroutines and an outside thread) are released when the count reaches
/// zero; a negative count is a described panic.
#[test]
fn waitgroup_releases_every_waiter() {
    let rt = rt(2);
    let wg = Arc::new(WaitGroup::new());
    wg.add(10);
    let gate = Chan::<()>::new(0);
    let (wg2, gate2) = (wg.clone(), gate.clone());
    let h = rt
        .spawn(move || {
            let waiters: Vec<_> = (0..4)
                .map(|_| {
                    let wg = wg2.clone();
                    go(move || wg.wait())
                })
                .collect();
            gate2.recv().unwrap();
            for _ in 0..10 {
                let wg = wg2.clone();
                go(move || wg.done());
            }
            for w in waiters {
                w.join().unwrap();
            }
        })
        .unwrap();
    gate.send(());
    wg.wait(); // an outside thread waits too
    h.join().unwrap();
    assert_eq!(wg.count(), 0);
    let e = rt.spawn(|| WaitGroup::new().done()).unwrap().join().unwrap_err();
    assert_eq!(e.message(), Some("sync: negative WaitGroup counter"));
}

/// `try_lock`, `try_read` and `try_write` on a lock they cannot take made the guard anyway
/// (`bool::then_some` builds its value eagerly) and dropped it, unlocking a lock they did not
/// hold: a panic ("unlock of unlocked mutex"), or another holder's lock released under it.
/// They return `None` and leave the lock as it was.
#[test]
fn try_lock_of_a_held_lock_is_none_and_leaves_it_held() {
    let m = safepoint_sched::Mutex::new(1u32);
    let g = m.lock();
    assert!(m.try_lock().is_none());
    assert!(m.raw().is_locked(), "still held by its guard");
    drop(g);
    assert!(m.try_lock().is_some());
    let rw = safepoint_sched::RwLock::new(1u32);
    let w = rw.write();
    assert!(rw.try_read().is_none() && rw.try_write().is_none());
    drop(w);
    let r = rw.read();
    assert!(rw.try_write().is_none());
    assert!(rw.try_read().is_some());
    drop(r);
    assert!(rw.try_write().is_some());
}
