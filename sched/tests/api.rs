//! The runtime's API at its edges: panics in goroutines, bad input from an embedder, runtime
//! lifecycle, goroutine-local storage, and faults that must end in a clear message (in a child
//! process).

use safepoint_sched::{
    Error, GoroutineLocal, GoroutineRef, Runtime, WaitReason, go, no_preempt, park, poll,
    stop_the_world, suspend_g, try_go, yield_now,
};
use std::cell::Cell;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn rt(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).build().unwrap()
}

fn panic_text(r: std::thread::Result<()>) -> String {
    let p = r.expect_err("expected a panic");
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn goroutine_panic_is_reported_on_join_and_the_runtime_carries_on() {
    let rt = rt(2);
    rt.block_on(|| {
        for i in 0..50 {
            let h = go(move || -> u32 { panic!("boom {i}") });
            let id = h.id();
            let e = h.join().unwrap_err();
            assert_eq!(e.id(), id);
            assert_eq!(e.message(), Some(format!("boom {i}").as_str()));
            assert!(e.to_string().contains(&format!("goroutine {id} panicked: boom {i}")));
        }
        // Both Ps still run goroutines: two goroutines waiting for each other in poll loops
        // finish (at procs=2 without any P lost they run side by side).
        let a = Arc::new(AtomicBool::new(false));
        let b = Arc::new(AtomicBool::new(false));
        let h = {
            let (a, b) = (a.clone(), b.clone());
            go(move || {
                a.store(true, Ordering::SeqCst);
                while !b.load(Ordering::SeqCst) {
                    poll();
                }
            })
        };
        while !a.load(Ordering::SeqCst) {
            poll();
        }
        b.store(true, Ordering::SeqCst);
        h.join().unwrap();
    });
    // Every P comes back idle once the work is done: none leaked by the panics.
    let mut spins = 0u64;
    while rt.stats().idle_procs != rt.procs() {
        spins += 1;
        assert!(spins < 50_000_000, "a P never came back: {:?}", rt.stats());
        std::hint::spin_loop();
    }
}

#[test]
fn block_on_resumes_the_main_goroutine_panic() {
    let rt = rt(1);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(|| panic!("main died"))
    }));
    assert_eq!(panic_text(r), "main died");
    // The runtime still works afterwards.
    assert_eq!(rt.block_on(|| 7), 7);
}

#[test]
fn bad_configuration_is_an_error() {
    assert!(matches!(Runtime::builder().procs(0).build(), Err(Error::Config(_))));
    assert!(matches!(Runtime::builder().procs(5000).build(), Err(Error::Config(_))));
    let e = Runtime::builder().stack_size(100).build().unwrap_err();
    assert!(matches!(e, Error::Stack(_)));
    assert!(e.to_string().contains("below the minimum"), "{e}");
}

#[test]
fn goroutine_only_calls_off_a_goroutine_panic_with_a_description() {
    let r = std::panic::catch_unwind(|| {
        go(|| ());
    });
    assert!(panic_text(r).contains("not on a goroutine"));
    let r = std::panic::catch_unwind(|| park(WaitReason::Park, |_| true));
    assert!(panic_text(r).contains("not on a goroutine"));
    let r = std::panic::catch_unwind(|| drop(stop_the_world("x")));
    assert!(panic_text(r).contains("must be called from a goroutine"));
    // poll, yield_now off a goroutine: poll is a no-op, yield_now panics.
    poll();
    let r = std::panic::catch_unwind(yield_now);
    assert!(panic_text(r).contains("not on a goroutine"));
}

#[test]
fn stale_or_duplicate_wake_up_token_is_refused() {
    let rt = rt(1);
    rt.block_on(|| {
        // A park whose callback declined: its token is stale.
        let kept: Arc<Mutex<Option<GoroutineRef>>> = Arc::new(Mutex::new(None));
        let k = kept.clone();
        park(WaitReason::Park, move |r| {
            *k.lock().unwrap() = Some(r);
            false
        });
        let stale = kept.lock().unwrap().take().unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stale.ready()));
        assert!(panic_text(r).contains("stale or duplicate goroutine handle"));
    });
}

#[test]
fn misuse_inside_the_runtime_panics_that_goroutine_only() {
    let rt = rt(2);
    rt.block_on(|| {
        // Suspending oneself.
        let r = go(|| {
            let me = safepoint_sched::Goroutine::current().unwrap();
            drop(suspend_g(me));
        })
        .join()
        .unwrap_err();
        assert!(r.to_string().contains("cannot suspend itself"), "{r}");
        // Switching inside a no_preempt section.
        let r = go(|| {
            let _pin = no_preempt();
            yield_now();
        })
        .join()
        .unwrap_err();
        assert!(r.to_string().contains("inside a no_preempt section"), "{r}");
        // Parking while holding the world stopped: described panic, and the world restarts as
        // the panic unwinds (the runtime keeps working below).
        let r = go(|| {
            let _w = stop_the_world("misuse");
            park(WaitReason::Park, |_| true);
        })
        .join()
        .unwrap_err();
        assert!(r.to_string().contains("while the runtime holds this M"), "{r}");
        // Switching inside a blocking call (the goroutine has handed off its P): a yield, a
        // nested blocking call, and a wait on every primitive that queues its waiter before
        // it parks (refused before it queues; each primitive still works afterwards).
        for nested in [false, true] {
            let r = go(move || {
                safepoint_sched::blocking(|| {
                    if nested { safepoint_sched::blocking(|| ()) } else { yield_now() }
                })
            })
            .join()
            .unwrap_err();
            assert!(r.to_string().contains("inside a blocking call"), "nested {nested}: {r}");
        }
        let ch = safepoint_sched::Chan::<u32>::new(0);
        let m = Arc::new(safepoint_sched::Mutex::new(0u32));
        let cv = Arc::new(safepoint_sched::Cond::new());
        for what in 0..4 {
            let (ch, m, cv) = (ch.clone(), m.clone(), cv.clone());
            let r = go(move || {
                let held = if what == 2 { Some(m.lock()) } else { None };
                let m2 = m.clone();
                safepoint_sched::blocking(move || match what {
                    0 => drop(ch.recv()),
                    1 => ch.send(1),
                    2 => drop(m2.lock()),
                    _ => {
                        let g = m2.lock();
                        drop(cv.wait(g));
                    }
                });
                drop(held);
            })
            .join()
            .unwrap_err();
            assert!(r.to_string().contains("inside a blocking call"), "wait {what}: {r}");
        }
        // Nothing was left queued: the channel and the lock still work.
        let c2 = ch.clone();
        go(move || c2.send(5));
        assert_eq!(ch.recv().unwrap(), 5);
        *m.lock() += 1;
        let done: Vec<u32> = (0..10).map(|i| go(move || i).join().unwrap()).collect();
        assert_eq!(done.len(), 10);
    });
}

/// `no_preempt` defers preemption instead of losing it: a stop requested while a goroutine is
/// pinned cannot complete until the section ends, and then does.
#[test]
fn no_preempt_defers_a_stop_until_the_section_ends() {
    let rt = rt(2);
    let release = Arc::new(AtomicBool::new(false));
    let pinned = Arc::new(AtomicBool::new(false));
    let finish = Arc::new(AtomicBool::new(false));
    let p = {
        let (release, pinned, finish) = (release.clone(), pinned.clone(), finish.clone());
        rt.spawn(move || {
            let pin = no_preempt();
            pinned.store(true, Ordering::SeqCst);
            while !release.load(Ordering::SeqCst) {
                poll();
            }
            drop(pin);
            while !finish.load(Ordering::SeqCst) {
                poll();
            }
        })
        .unwrap()
    };
    while !pinned.load(Ordering::SeqCst) {
        std::hint::spin_loop();
    }
    let s = {
        let release = release.clone();
        rt.spawn(move || {
            let w = stop_the_world("pinned");
            let released = release.load(Ordering::SeqCst);
            w.start();
            released
        })
        .unwrap()
    };
    // Give the stopper every chance to (wrongly) finish while the goroutine is pinned.
    for _ in 0..20_000_000 {
        std::hint::spin_loop();
    }
    assert!(!s.is_finished(), "the stop completed while a goroutine was pinned");
    release.store(true, Ordering::SeqCst);
    assert!(s.join().unwrap(), "the stop completed before the section ended");
    finish.store(true, Ordering::SeqCst);
    p.join().unwrap();
}

#[test]
fn try_go_reports_what_go_would_panic_with() {
    let rt = rt(1);
    rt.block_on(|| {
        let h = try_go(|| 5).expect("a stack is available");
        assert_eq!(h.join().unwrap(), 5);
    });
}

#[test]
fn many_runtimes_created_and_dropped() {
    for round in 0..30 {
        let rt = rt(1 + round % 3);
        let n = rt.block_on(move || {
            (0..100).map(|i| go(move || i)).map(|h| h.join().unwrap()).sum::<usize>()
        });
        assert_eq!(n, 4950);
    }
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..10 {
                    let rt = rt(2);
                    assert_eq!(rt.block_on(|| go(|| 3).join().unwrap()), 3);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn shutdown_with_goroutines_blocked_forever() {
    let rt = rt(2);
    let parked = Arc::new(AtomicUsize::new(0));
    let p = parked.clone();
    rt.block_on(move || {
        for _ in 0..100 {
            let p = p.clone();
            go(move || {
                park(WaitReason::Park, |_token| {
                    // Drop the token: nobody will ever wake this goroutine.
                    p.fetch_add(1, Ordering::SeqCst);
                    true
                });
                unreachable!("woken without a token");
            });
        }
        while p.load(Ordering::SeqCst) < 100 {
            yield_now();
        }
    });
    assert!(rt.stats().goroutines >= 100, "{:?}", rt.stats());
    drop(rt); // must return
}

struct CountDrops(Arc<AtomicUsize>);
impl Drop for CountDrops {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

static DEPTH: GoroutineLocal<Cell<u64>> = GoroutineLocal::new(|| Cell::new(0));
static DROPS: GoroutineLocal<Cell<Option<CountDrops>>> = GoroutineLocal::new(|| Cell::new(None));

#[test]
fn goroutine_locals_are_per_goroutine_and_dropped_at_exit() {
    let rt = rt(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    rt.block_on(move || {
        let hs: Vec<_> = (0..20u64)
            .map(|i| {
                let d = d.clone();
                go(move || {
                    DROPS.with(|c| c.set(Some(CountDrops(d))));
                    for _ in 0..100 {
                        DEPTH.with(|c| c.set(c.get() + i));
                        yield_now(); // may continue on another thread: the value follows
                    }
                    DEPTH.with(|c| c.get())
                })
            })
            .collect();
        for (i, h) in hs.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), 100 * i as u64);
        }
    });
    assert_eq!(drops.load(Ordering::SeqCst), 20);
    let r = std::panic::catch_unwind(|| DEPTH.with(|_| ()));
    assert!(panic_text(r).contains("outside a goroutine"));
}

/// Runs `scenario` in a child copy of this test binary; returns its output.
fn run_child(test: &str, scenario: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("SAFEPOINT_CHILD", scenario)
        .output()
        .unwrap()
}

fn child_scenario() -> Option<String> {
    std::env::var("SAFEPOINT_CHILD").ok()
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == u64::MAX {
        return 0;
    }
    let buf = std::hint::black_box([n; 64]);
    recurse(buf[3] + 1) + buf[5]
}

#[test]
fn native_stack_overflow_in_a_goroutine_dies_with_a_message() {
    if child_scenario().as_deref() == Some("overflow") {
        let rt = Runtime::builder().procs(1).stack_size(64 * 1024).build().unwrap();
        rt.block_on(|| {
            go(|| recurse(0)).join().ok();
        });
        return;
    }
    let out = run_child("native_stack_overflow_in_a_goroutine_dies_with_a_message", "overflow");
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "stderr: {stderr}");
    assert!(
        stderr.contains(": native stack overflow (stack limit 65536 bytes)"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("goroutine 2: native stack overflow"), "stderr: {stderr}");
}

#[test]
fn unjoined_goroutine_panic_is_printed_with_its_id() {
    if child_scenario().as_deref() == Some("detached") {
        let rt = rt(1);
        let id = rt.block_on(|| {
            let h = go(|| panic!("nobody listens"));
            let id = h.id();
            drop(h);
            // Let it run and die.
            for _ in 0..10 {
                yield_now();
            }
            id
        });
        println!("child: detached goroutine was {id}");
        return;
    }
    let out = run_child("unjoined_goroutine_panic_is_printed_with_its_id", "detached");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let id: u64 = stdout
        .lines()
        .find_map(|l| l.split("child: detached goroutine was ").nth(1))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("child said: {stdout}"));
    assert!(
        stderr.contains(&format!("goroutine {id} panicked: nobody listens")),
        "stderr: {stderr}"
    );
}

/// The process's resident memory, in bytes, after the C allocator has given back what it can.
fn rss() -> u64 {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim only returns free memory to the OS; it is safe to call at any time.
    unsafe { malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// After a burst of goroutines ends, the runtime keeps at most `stack_cache` of their stacks
/// (and the few each P keeps at hand), not all of them: the rest are unmapped. It used to keep
/// every dead goroutine's stack for the runtime's life (`stack_cache` did nothing), so the
/// 32 KiB each of 4,000 goroutines wrote on its stack stayed resident after they were gone.
#[test]
fn a_burst_of_goroutines_gives_its_stacks_back_past_the_stack_cache() {
    const N: usize = 4000;
    const TOUCH: usize = 32 << 10;
    let rt = Runtime::builder().procs(2).stack_size(256 << 10).stack_cache(16).build().unwrap();
    let before = rss();
    let (alive, after) = rt.block_on(|| {
        let wg = Arc::new(safepoint_sched::WaitGroup::new());
        let gate = Arc::new(safepoint_sched::WaitGroup::new());
        gate.add(1);
        let hs: Vec<_> = (0..N)
            .map(|_| {
                wg.add(1);
                let (wg, gate) = (wg.clone(), gate.clone());
                go(move || {
                    // Pages of the stack made resident, as a deep call would.
                    let buf = [1u8; TOUCH];
                    std::hint::black_box(&buf);
                    wg.done();
                    gate.wait();
                })
            })
            .collect();
        // Every goroutine has started and waits: all N stacks are resident now.
        wg.wait();
        let alive = rss();
        gate.done();
        for h in hs {
            h.join().unwrap();
        }
        (alive, rss())
    });
    let grew = alive.saturating_sub(before);
    let kept = after.saturating_sub(before);
    assert!(grew >= (N * TOUCH) as u64, "{N} goroutines' stacks grew resident memory by {grew}");
    // At most 16 for the cache and 64 at hand on each of the two Ps: 144 of 4,000 stacks.
    assert!(kept < grew / 4, "{kept} of {grew} bytes still resident after the burst ended");
}
