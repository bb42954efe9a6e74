//! Deadlock detection: a program whose goroutines all block on runtime primitives makes
//! `block_on` panic with Go's message and a dump of what each waits on; programs that are only
//! waiting for a timer, a custom park or a goroutine still running are left alone.

use safepoint_sched::{
    Chan, DEADLOCK, GoroutineRef, Mutex, Runtime, WaitGroup, WaitReason, go, park, sleep,
};
use std::sync::Arc;
use std::time::Duration;

fn rt(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).build().unwrap()
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// The classic: main receives from a channel nobody sends on.
#[test]
fn receive_with_no_sender_is_a_deadlock() {
    let rt = rt(2);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(|| {
            let c = Chan::<u32>::new(0);
            c.recv()
        })
    }));
    let msg = panic_text(r.expect_err("block_on returned from a deadlocked program"));
    assert!(msg.starts_with(DEADLOCK), "{msg}");
    assert!(msg.contains("[chan receive]"), "{msg}");
}

/// A cycle of goroutines blocked on different primitives (a mutex held by a goroutine waiting on
/// a channel, a WaitGroup, a send, a select): every one appears in the dump with its reason.
#[test]
fn mixed_primitives_deadlock_dump() {
    let rt = rt(2);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(|| {
            let m = Arc::new(Mutex::new(()));
            let c = Chan::<u32>::new(0);
            let d = Chan::<u32>::new(0);
            let wg = Arc::new(WaitGroup::new());
            wg.add(1);
            let g = m.lock();
            {
                let m = m.clone();
                go(move || drop(m.lock()));
            }
            {
                let c = c.clone();
                go(move || c.send(1));
            }
            {
                let wg = wg.clone();
                go(move || wg.wait());
            }
            {
                let (e, f) = (Chan::<u32>::new(0), Chan::<u32>::new(0));
                go(move || {
                    safepoint_sched::Select::new().recv(&e, |_| ()).send(&f, 2, || ()).wait()
                });
            }
            // Main: waits for a value nobody will send on `d`... while holding the mutex.
            let _ = d.recv();
            drop(g);
        })
    }));
    let msg = panic_text(r.expect_err("no deadlock reported"));
    assert!(msg.starts_with(DEADLOCK), "{msg}");
    for what in ["[mutex]", "[chan send]", "[waitgroup]", "[select]", "[chan receive]"] {
        assert!(msg.contains(what), "{what} missing from:\n{msg}");
    }
}

/// Not deadlocks: goroutines waiting for a timer (sleep, select timeout), and a goroutine parked
/// with a custom wait reason that an outside thread readies.
#[test]
fn timers_and_custom_parks_are_not_deadlocks() {
    let rt = rt(2);
    rt.block_on(|| {
        let c = Chan::<u32>::new(0);
        let c2 = c.clone();
        go(move || {
            sleep(Duration::from_millis(5));
            c2.send(1);
        });
        assert_eq!(c.recv(), Ok(1)); // everyone else asleep, but a timer is pending
        let r = safepoint_sched::Select::new()
            .recv(&c, |_| 0)
            .timeout(Duration::from_millis(5), || 1)
            .wait();
        assert_eq!(r, 1);
    });
    let slot = Arc::new(std::sync::Mutex::new(None::<GoroutineRef>));
    let s2 = slot.clone();
    let h = rt
        .spawn(move || {
            park(WaitReason::Park, |t| {
                *s2.lock().unwrap() = Some(t);
                true
            })
        })
        .unwrap();
    let t = std::thread::spawn(move || {
        loop {
            if let Some(t) = slot.lock().unwrap().take() {
                t.ready();
                return;
            }
            std::thread::yield_now();
        }
    });
    h.join().unwrap();
    t.join().unwrap();
}

/// With detection off, a deadlocked program is simply left parked (the caller here checks
/// from outside with a timeout instead of hanging).
#[test]
fn detection_can_be_turned_off() {
    let rt = Runtime::builder().procs(1).deadlock_detection(false).build().unwrap();
    let c = Chan::<u32>::new(0);
    let c2 = c.clone();
    let h = rt.spawn(move || c2.recv()).unwrap();
    while c.waiting() != (0, 1) {
        std::thread::yield_now();
    }
    // An outside thread is what ends the wait: detection must not have fired.
    c.send(5);
    assert_eq!(h.join().unwrap(), Ok(5));
}

/// `block_on_or_deadlock` returns the deadlock instead of panicking; the report lists the
/// program's goroutines by id with what each waits on, and leaves out the ones marked as the
/// runtime's machinery (`set_system`, as the collector marks its driver and workers).
#[test]
fn block_on_or_deadlock_returns_the_report_without_system_goroutines() {
    let rt = rt(2);
    let r = rt.block_on_or_deadlock(|| {
        let c = Chan::<u32>::new(0);
        let (c1, c2) = (c.clone(), c.clone());
        go(move || {
            safepoint_sched::set_system(true);
            c1.recv()
        });
        go(move || c2.recv());
        // Detection waits until every goroutine is parked: no need to let these park first.
        c.recv()
    });
    let report = r.expect_err("a deadlocked program returned");
    let ids: Vec<u64> = report.goroutines.iter().map(|g| g.id).collect();
    assert_eq!(report.goroutines.len(), 2, "{report}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(report.goroutines.iter().all(|g| g.wait_reason == "chan receive"), "{report}");
    // No registry: no traceback.
    assert!(report.goroutines.iter().all(|g| g.traceback.is_none()));
    let text = report.to_string();
    assert!(text.starts_with(DEADLOCK), "{text}");
    assert_eq!(text.matches("\n\ngoroutine ").count(), 2, "{text}");
    // A program that finishes returns its value.
    assert_eq!(rt.block_on_or_deadlock(|| 7).unwrap(), 7);
}
