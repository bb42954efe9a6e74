//! Synchronisation workloads: pingpong, chan, mutex, timers. Their Go twins are in
//! `peers/go/sync.go`; each workload matches its twin's definition.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use safepoint::sched::{Chan, Mutex, Runtime, WaitGroup, go, sleep};

use crate::report::{arg_num, emit, percentile};

/// Runs synchronisation workload `w`.
pub fn run(w: &str, args: &[String]) {
    match w {
        "pingpong" => pingpong(arg_num(args, 0, 200_000)),
        "chan" => chan(arg_num(args, 0, 2_000_000)),
        "mutex" => mutex(arg_num(args, 0, 4_000_000)),
        "timers" => timers(arg_num(args, 0, 10_000) as usize),
        _ => unreachable!("dispatched by stress"),
    }
}

/// N round trips between the main goroutine and an echo goroutine over two unbuffered channels
/// (main sends on ping, echo receives and sends it back on pong, main receives). Default procs.
/// Time per round trip (two channel hand-offs).
fn pingpong(n: u64) {
    let rt = Runtime::new().expect("runtime");
    let ns = rt.block_on(move || {
        let ping = Chan::<u64>::new(0);
        let pong = Chan::<u64>::new(0);
        let (p2, q2) = (ping.clone(), pong.clone());
        let echo = go(move || {
            for v in p2.iter() {
                q2.send(v);
            }
        });
        let t = Instant::now();
        for i in 0..n {
            ping.send(i);
            assert_eq!(pong.recv(), Ok(i), "pingpong: wrong value");
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        ping.close();
        echo.join().unwrap();
        ns
    });
    emit("pingpong", &n.to_string(), &[("ns_per_op", ns.into())]);
}

/// Two Ps; one goroutine sends N integers into a channel with a 128-slot buffer, another
/// receives them. Time per item (one send plus one receive).
fn chan(n: u64) {
    let rt = Runtime::builder().procs(2).build().expect("runtime");
    let ns = rt.block_on(move || {
        let ch = Chan::<u64>::new(128);
        let start = Chan::<()>::new(0);
        let sum = Arc::new(AtomicU64::new(0));
        let wg = Arc::new(WaitGroup::new());
        wg.add(2);
        {
            let (ch, start, wg) = (ch.clone(), start.clone(), wg.clone());
            go(move || {
                let _ = start.recv();
                for i in 0..n {
                    ch.send(i);
                }
                wg.done();
            });
        }
        {
            let (ch, start, wg, sum) = (ch.clone(), start.clone(), wg.clone(), sum.clone());
            go(move || {
                let _ = start.recv();
                let mut s = 0u64;
                for _ in 0..n {
                    s += ch.recv().unwrap();
                }
                sum.store(s, Ordering::Relaxed);
                wg.done();
            });
        }
        let t = Instant::now();
        start.close();
        wg.wait();
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        assert_eq!(sum.load(Ordering::Relaxed), n * (n - 1) / 2, "chan: wrong sum");
        ns
    });
    emit("chan", &n.to_string(), &[("ns_per_op", ns.into())]);
}

/// Two Ps; 4 goroutines contend on one mutex, each doing N/4 rounds of lock; counter += 1;
/// unlock. Time per round.
fn mutex(n: u64) {
    const WORKERS: u64 = 4;
    let per = n / WORKERS;
    let rt = Runtime::builder().procs(2).build().expect("runtime");
    let ns = rt.block_on(move || {
        let mu = Arc::new(Mutex::new(0u64));
        let start = Chan::<()>::new(0);
        let wg = Arc::new(WaitGroup::new());
        for _ in 0..WORKERS {
            wg.add(1);
            let (mu, start, wg) = (mu.clone(), start.clone(), wg.clone());
            go(move || {
                let _ = start.recv();
                for _ in 0..per {
                    *mu.lock() += 1;
                }
                wg.done();
            });
        }
        let t = Instant::now();
        start.close();
        wg.wait();
        let ns = t.elapsed().as_nanos() as f64 / (per * WORKERS) as f64;
        assert_eq!(*mu.lock(), per * WORKERS, "mutex: lost updates");
        ns
    });
    emit("mutex", &n.to_string(), &[("ns_per_op", ns.into())]);
}

/// N goroutines (10,000 by default) are released at once; each notes the time, sleeps 1 ms,
/// and records how much longer than 1 ms it was away (lateness: timer slack plus the wait for
/// a P once woken). Exact percentiles over the N samples. Default procs.
fn timers(n: usize) {
    let rt = Runtime::new().expect("runtime");
    let mut late = rt.block_on(move || {
        let late = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        let start = Chan::<()>::new(0);
        let ready = Arc::new(AtomicU64::new(0));
        let wg = Arc::new(WaitGroup::new());
        for i in 0..n {
            wg.add(1);
            let (late, start, ready, wg) = (late.clone(), start.clone(), ready.clone(), wg.clone());
            go(move || {
                ready.fetch_add(1, Ordering::Relaxed);
                let _ = start.recv();
                let t = Instant::now();
                sleep(Duration::from_millis(1));
                let l = t.elapsed().as_nanos() as i64 - 1_000_000;
                late[i].store(l as u64, Ordering::Relaxed);
                wg.done();
            });
        }
        while ready.load(Ordering::Relaxed) < n as u64 {
            sleep(Duration::from_millis(1));
        }
        sleep(Duration::from_millis(5));
        start.close();
        wg.wait();
        late.iter().map(|l| l.load(Ordering::Relaxed) as i64 as f64 / 1e3).collect::<Vec<f64>>()
    });
    assert!(late.iter().all(|&l| l >= 0.0), "timers: a sleep returned early");
    let p50 = percentile(&mut late, 50.0);
    let p99 = percentile(&mut late, 99.0);
    let max = percentile(&mut late, 100.0);
    emit(
        "timers",
        &n.to_string(),
        &[("p50_late_us", p50.into()), ("p99_late_us", p99.into()), ("max_late_us", max.into())],
    );
}
