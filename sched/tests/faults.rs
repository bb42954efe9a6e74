//! Faults in goroutines and at shutdown: what the runtime promises when a goroutine panics
//! holding a lock, overflows its native stack, or is still blocked (or stopping the world)
//! when the runtime is dropped.
//!
//! Tests whose scenario must end the process, or whose stderr must be read, run it in a child
//! process: the test re-executes this binary with `--exact <its own name>` and an environment
//! variable naming the scenario (as `arch/tests/guard_page.rs` does). Tests that could hang if
//! the runtime were wrong run the risky step under a watchdog that fails them instead (a
//! failure guard only: nothing here measures time).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use safepoint_sched::{
    Chan, Cond, DEADLOCK, Mutex, RawMutex, Runtime, Select, WaitGroup, for_each_p, go, sleep,
    stop_the_world, try_go, yield_now,
};

/// Names the scenario a child process must run.
const CHILD_VAR: &str = "SAFEPOINT_SCHED_FAULTS_CHILD";

/// In the parent: runs test `name` in a child process and returns its output. In that child:
/// runs `scenario`, then exits 0 (or as the scenario makes it).
fn run_in_child(name: &str, scenario: fn()) -> Output {
    if std::env::var_os(CHILD_VAR).is_some_and(|v| v == name) {
        let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: setrlimit reads a valid rlimit; lowering our own limit is always allowed.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
        eprintln!("child: {name}");
        scenario();
        std::process::exit(0);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, name)
        .env_remove("RUST_BACKTRACE")
        .env_remove("SAFEPOINT_DEBUG")
        .output()
        .expect("cannot re-execute the test binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("child: {name}")),
        "the child did not run test {name:?}; status {:?}\nstderr:\n{stderr}",
        out.status
    );
    out
}

/// Runs `f` on a thread and fails if it has not returned within a minute (it would hang).
fn must_finish<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("{what}: hung"))
}

// ---- panics while holding a lock ----------------------------------------------------------

/// A goroutine that panics holding a [`Mutex`] guard unlocks it as the guard drops during the
/// unwinding (no poisoning, as documented): the goroutines parked on the lock get it in turn
/// and see what the panicking goroutine wrote before it panicked; the panic reaches its join
/// handle.
#[test]
fn panic_holding_a_mutex_guard_unlocks_it_for_the_waiters() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(|| {
        let m = Arc::new(Mutex::new(Vec::<u32>::new()));
        let locked = Chan::new(0);
        let holder = {
            let (m, locked) = (m.clone(), locked.clone());
            go(move || {
                let mut g = m.lock();
                g.push(1);
                locked.send(());
                // Let the waiters queue up behind us.
                for _ in 0..100 {
                    yield_now();
                }
                g.push(2);
                panic!("holder panics with the lock held");
            })
        };
        locked.recv().unwrap();
        let waiters: Vec<_> = (0..4u32)
            .map(|i| {
                let m = m.clone();
                go(move || {
                    let mut g = m.lock();
                    let seen = g.clone();
                    g.push(10 + i);
                    seen
                })
            })
            .collect();
        let e = holder.join().unwrap_err();
        assert_eq!(e.message(), Some("holder panics with the lock held"));
        for w in waiters {
            let seen = w.join().expect("a waiter");
            assert_eq!(&seen[..2], &[1, 2], "a waiter did not see the holder's writes");
        }
        let mut all = m.lock().clone();
        all[2..].sort_unstable();
        assert_eq!(all, [1, 2, 10, 11, 12, 13]);
        assert!(!m.raw().is_locked());
    });
}

/// A [`RawMutex`] has no guard: a goroutine that panics between `lock` and `unlock` leaves it
/// locked for good. Its waiters then wait forever, which deadlock detection reports (naming
/// the mutex) instead of hanging.
#[test]
fn panic_holding_a_raw_mutex_leaves_it_locked_and_waiters_are_reported_deadlocked() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(|| {
            let m = Arc::new(RawMutex::new());
            let m2 = m.clone();
            let e = go(move || {
                m2.lock();
                panic!("holder dies without unlocking");
            })
            .join()
            .unwrap_err();
            assert_eq!(e.message(), Some("holder dies without unlocking"));
            assert!(m.is_locked());
            let m3 = m.clone();
            go(move || m3.lock()).join().unwrap();
        })
    }));
    let msg = r.expect_err("the waiter cannot get the lock");
    let msg = msg.downcast_ref::<String>().expect("a deadlock report");
    assert!(msg.starts_with(DEADLOCK), "{msg}");
    assert!(msg.contains("[mutex]"), "the report names the mutex: {msg}");
}

// ---- native stack overflow ---------------------------------------------------------------

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let buf = std::hint::black_box([depth; 32]);
    if depth == u64::MAX { 0 } else { recurse(depth + 1) + buf[3] }
}

/// A goroutine of a running runtime that overflows its native stack ends the process with a
/// message naming the goroutine and the stack limit (the guard-page handler), not a bare
/// SIGSEGV, while other goroutines were running.
#[test]
fn native_stack_overflow_in_a_goroutine_aborts_with_a_message() {
    let out = run_in_child("native_stack_overflow_in_a_goroutine_aborts_with_a_message", || {
        let rt = Runtime::builder().procs(2).stack_size(64 << 10).build().unwrap();
        rt.block_on(|| {
            let busy = Arc::new(AtomicBool::new(true));
            let b = busy.clone();
            let other = go(move || {
                while b.load(Ordering::Relaxed) {
                    yield_now();
                }
            });
            go(|| recurse(0)).join().unwrap();
            busy.store(false, Ordering::Relaxed);
            other.join().unwrap();
        });
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{:?}\n{stderr}", out.status);
    assert!(
        stderr.contains(": native stack overflow (stack limit 65536 bytes)"),
        "no overflow message:\n{stderr}"
    );
    assert!(stderr.contains("goroutine "), "the message names the goroutine:\n{stderr}");
}

// ---- shutdown -----------------------------------------------------------------------------

/// Dropping the runtime while goroutines are parked on every kind of primitive (channel
/// receive and send, select, mutex, cond, WaitGroup, join, a long sleep) returns:
/// the parked goroutines are abandoned, nothing is printed, nothing crashes. In a child
/// process, so that its stderr can be read.
#[test]
fn shutdown_with_goroutines_blocked_everywhere_returns_quietly() {
    let out = run_in_child("shutdown_with_goroutines_blocked_everywhere_returns_quietly", || {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let parked = Arc::new(AtomicUsize::new(0));
        let p = parked.clone();
        let handles = rt.block_on(move || {
            let p2 = p.clone();
            let count = move || {
                p2.fetch_add(1, Ordering::SeqCst);
            };
            let ch = Chan::<u32>::new(0);
            let m = Arc::new(Mutex::new(0u32));
            let wg = Arc::new(WaitGroup::new());
            wg.add(1);
            let cond = Arc::new((Mutex::new(false), Cond::new()));
            let mut hs = Vec::new();
            let (c1, k) = (ch.clone(), count.clone());
            hs.push(go(move || {
                k();
                let _ = c1.recv();
            }));
            let (c2, k) = (ch.clone(), count.clone());
            hs.push(go(move || {
                k();
                c2.send(1);
            }));
            let (c3, k) = (Chan::<u8>::new(1), count.clone());
            hs.push(go(move || {
                k();
                Select::new().recv(&c3, |_| ()).wait();
            }));
            // One goroutine holds the mutex and sleeps for an hour; another waits for it.
            let (m1, k) = (m.clone(), count.clone());
            hs.push(go(move || {
                let _g = m1.lock();
                k();
                sleep(Duration::from_secs(3600));
            }));
            let (m2, k) = (m.clone(), count.clone());
            hs.push(go(move || {
                // Let the holder take it first.
                while !m2.raw().is_locked() {
                    yield_now();
                }
                k();
                let _g = m2.lock();
            }));
            let (w, k) = (wg.clone(), count.clone());
            hs.push(go(move || {
                k();
                w.wait();
            }));
            let (c, k) = (cond.clone(), count.clone());
            hs.push(go(move || {
                let mut g = c.0.lock();
                k();
                while !*g {
                    g = c.1.wait(g);
                }
            }));
            // A goroutine joining a parked one.
            let (c4, k) = (ch.clone(), count);
            let inner = go(move || {
                let _ = c4.recv();
            });
            hs.push(go(move || {
                k();
                let _ = inner.join();
            }));
            // Keep the channel and the group alive past the block_on.
            (hs, ch, wg)
        });
        // Every goroutine has reached (or is about to reach) its wait.
        while parked.load(Ordering::SeqCst) < 8 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(20));
        must_finish("dropping the runtime", move || drop(rt));
        drop(handles);
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stderr}", out.status);
    let rest: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("child: ")).collect();
    assert!(rest.is_empty(), "shutdown printed:\n{stderr}");
}

/// Shutdown while a goroutine waits in a ragged barrier ([`for_each_p`]) for a P that will
/// never answer: the runtime's Ms leave their loops, so the barrier could wait forever and
/// the drop with it. The waiting goroutine is abandoned instead, and the drop returns.
///
/// The P that never answers runs a goroutine in a loop with no safepoint (asynchronous
/// preemption off), which ends only once it sees the runtime refusing to spawn, that is, once
/// shutdown has begun: then it exits, and its M leaves without running the barrier's function.
#[test]
fn shutdown_while_a_ragged_barrier_waits_returns() {
    shutdown_while_waiting_for_a_spinner(|| for_each_p(&|_| {}));
}

/// The same with a goroutine stopping the world.
#[test]
fn shutdown_while_stopping_the_world_returns() {
    shutdown_while_waiting_for_a_spinner(|| drop(stop_the_world("test")));
}

fn shutdown_while_waiting_for_a_spinner(wait: fn()) {
    let rt = Runtime::builder().procs(2).async_preempt(false).build().unwrap();
    let spinning = Arc::new(AtomicBool::new(false));
    let s = spinning.clone();
    let _spinner = rt
        .spawn(move || {
            s.store(true, Ordering::SeqCst);
            loop {
                let mut x = 1u64;
                for _ in 0..1_000_000 {
                    x = std::hint::black_box(x.wrapping_mul(3).wrapping_add(1));
                }
                // Not a safepoint: the goroutine it would start just waits on our P's queue.
                if try_go(|| ()).is_err() {
                    return;
                }
            }
        })
        .unwrap();
    while !spinning.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let waiting = Arc::new(AtomicBool::new(false));
    let w = waiting.clone();
    let _waiter = rt
        .spawn(move || {
            w.store(true, Ordering::SeqCst);
            wait();
            unreachable!("the spinner never reaches a safepoint while the runtime runs");
        })
        .unwrap();
    while !waiting.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    must_finish("dropping the runtime", move || drop(rt));
}
