//! select: uniform choice among ready cases (chi-square), default, timeouts, send cases, close
//! during a select, and many selects racing over channels that fire at once.

use safepoint_sched::{Chan, RecvError, Runtime, Select, WaitGroup, go};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn rt(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).build().unwrap()
}

/// With four cases always ready, each is chosen with probability 1/4: the chi-square statistic
/// of 40,000 choices stays under the 1e-6 critical value for 3 degrees of freedom (30.66). A
/// select that always took the first (or last) ready case scores about 120,000.
#[test]
fn select_is_fair_chi_square() {
    let rt = rt(1);
    let counts = rt.block_on(|| {
        let chans: Vec<Chan<u8>> = (0..4).map(|_| Chan::new(1)).collect();
        let mut counts = [0u64; 4];
        for _ in 0..40_000 {
            for c in &chans {
                let _ = c.try_send(0);
            }
            let i = Select::new()
                .recv(&chans[0], |_| 0)
                .recv(&chans[1], |_| 1)
                .recv(&chans[2], |_| 2)
                .recv(&chans[3], |_| 3)
                .wait();
            counts[i] += 1;
        }
        counts
    });
    let expected = 10_000.0;
    let chi2: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
    assert!(chi2 < 30.66, "select is biased: counts {counts:?}, chi-square {chi2:.1}");
}

/// Default runs only when nothing is ready; a ready case wins over the default.
#[test]
fn default_and_ready_cases() {
    let rt = rt(1);
    rt.block_on(|| {
        let a = Chan::<u32>::new(1);
        let b = Chan::<u32>::new(0);
        let r = Select::new().recv(&a, |v| v.unwrap()).send(&b, 1, || 99).default(|| 7).wait();
        assert_eq!(r, 7);
        a.send(5);
        let r = Select::new().recv(&a, |v| v.unwrap()).default(|| 7).wait();
        assert_eq!(r, 5);
        // A send case with room in the buffer.
        let r = Select::new().send(&a, 3, || 1).default(|| 2).wait();
        assert_eq!((r, a.recv()), (1, Ok(3)));
        // No cases, just a default.
        assert_eq!(Select::<u8>::new().default(|| 4).wait(), 4);
    });
}

/// A parked select is completed by a sender on one channel, a receiver on another, or a close;
/// the node it left on the other channel is removed.
#[test]
fn parked_select_woken_by_each_kind_of_counterpart() {
    let rt = rt(2);
    rt.block_on(|| {
        for round in 0..300u32 {
            let a = Chan::<u32>::new(0);
            let b = Chan::<u32>::new(0);
            let (a2, b2) = (a.clone(), b.clone());
            let h = go(move || match round % 3 {
                0 => {
                    a2.send(round);
                    0
                }
                1 => b2.recv().unwrap(),
                _ => {
                    a2.close();
                    0
                }
            });
            let got = Select::new()
                .recv(&a, |v| v.map_err(|_| "closed"))
                .send(&b, round, || Ok(u32::MAX))
                .wait();
            let other = h.join().unwrap();
            match round % 3 {
                0 => assert_eq!(got, Ok(round)),
                1 => assert_eq!((got, other), (Ok(u32::MAX), round)),
                _ => assert_eq!(got, Err("closed")),
            }
            assert_eq!((a.waiting(), b.waiting()), ((0, 0), (0, 0)));
        }
    });
}

/// A select send case on a closed channel is a described panic (as Go's).
#[test]
fn select_send_on_closed_panics() {
    let rt = rt(1);
    rt.block_on(|| {
        let a = Chan::<u32>::new(0);
        a.close();
        let a2 = a.clone();
        let e = go(move || Select::new().send(&a2, 1, || ()).wait()).join().unwrap_err();
        assert_eq!(e.message(), Some("send on closed channel"));
        // A receive case on it sees "closed".
        assert_eq!(Select::new().recv(&a, |v| v).wait(), Err(RecvError));
    });
}

/// A timeout case fires when nothing else does, never early; a ready case beats it.
#[test]
fn select_timeout() {
    let rt = rt(2);
    rt.block_on(|| {
        let a = Chan::<u32>::new(1);
        let t = std::time::Instant::now();
        let r = Select::new()
            .recv(&a, |_| "value")
            .timeout(Duration::from_millis(3), || "timeout")
            .wait();
        assert_eq!(r, "timeout");
        assert!(t.elapsed() >= Duration::from_millis(3), "timeout fired early");
        a.send(1);
        let r = Select::new()
            .recv(&a, |_| "value")
            .timeout(Duration::from_secs(60), || "timeout")
            .wait();
        assert_eq!(r, "value");
    });
}

/// No lost wake-up when several channels fire at once: many goroutines select over the same
/// channels while many senders feed them; every value is received exactly once.
#[test]
fn concurrent_selects_conserve_values() {
    let rt = rt(4);
    rt.block_on(|| {
        const N: u64 = 4_000;
        let chans: Vec<Chan<u64>> = (0..4).map(|i| Chan::new([0, 0, 1, 8][i])).collect();
        let sum = Arc::new(AtomicU64::new(0));
        let count = Arc::new(AtomicU64::new(0));
        let done = Chan::<()>::new(0);
        let mut selectors = Vec::new();
        for _ in 0..6 {
            let (chans, sum, count, done) =
                (chans.clone(), sum.clone(), count.clone(), done.clone());
            selectors.push(go(move || {
                loop {
                    let add = |v: Result<u64, RecvError>| Some(v.unwrap());
                    let v = Select::new()
                        .recv(&chans[0], add)
                        .recv(&chans[1], add)
                        .recv(&chans[2], add)
                        .recv(&chans[3], add)
                        .recv(&done, |_| None)
                        .wait();
                    match v {
                        Some(v) => {
                            sum.fetch_add(v, Ordering::Relaxed);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        None => return,
                    }
                }
            }));
        }
        let wg = Arc::new(WaitGroup::new());
        for c in &chans {
            wg.add(1);
            let (c, wg) = (c.clone(), wg.clone());
            go(move || {
                for i in 1..=N {
                    c.send(i);
                }
                wg.done();
            });
        }
        wg.wait();
        done.close();
        for s in selectors {
            s.join().unwrap();
        }
        // Every send has completed, but a selector that found `done` closed may have chosen
        // it over a buffered value (a select picks among its ready cases at random): what is
        // left in the buffers is drained here, and nothing may be lost or counted twice.
        for c in &chans {
            while let Ok(v) = c.try_recv() {
                sum.fetch_add(v, Ordering::Relaxed);
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        assert_eq!(count.load(Ordering::Relaxed), 4 * N);
        assert_eq!(sum.load(Ordering::Relaxed), 4 * N * (N + 1) / 2);
        for c in &chans {
            assert_eq!(c.waiting(), (0, 0));
        }
    });
}

/// The same channel twice in one select (a send and a receive case): it still runs one case.
#[test]
fn same_channel_twice() {
    let rt = rt(2);
    rt.block_on(|| {
        let c = Chan::<u32>::new(0);
        let c2 = c.clone();
        let h = go(move || c2.recv().unwrap());
        let r = Select::new().send(&c, 8, || "sent").recv(&c, |_| "received").wait();
        assert_eq!(r, "sent");
        assert_eq!(h.join().unwrap(), 8);
    });
}
