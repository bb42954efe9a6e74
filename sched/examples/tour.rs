//! A tour of the scheduler: goroutines, channels, select, a mutex, a wait group, timers and a
//! blocking call, on a runtime of two Ps. Runs in well under a second.
//!
//!     cargo run -p safepoint-sched --example tour

use std::sync::Arc;
use std::time::Duration;

use safepoint_sched::{Chan, Mutex, Runtime, Select, WaitGroup, blocking, go, sleep};

fn main() -> Result<(), safepoint_sched::Error> {
    // A runtime: two Ps (the right to run goroutines), as many OS threads as it needs.
    let rt = Runtime::builder().procs(2).build()?;

    // `block_on` runs a closure as a goroutine and waits for it from this (outside) thread.
    rt.block_on(|| {
        // 1. Goroutines and an unbuffered channel: a pipeline of three stages.
        let naturals = Chan::new(0);
        let squares = Chan::new(0);
        {
            let naturals = naturals.clone();
            go(move || {
                for i in 1..=10u64 {
                    naturals.send(i);
                }
                naturals.close();
            });
        }
        {
            let (naturals, squares) = (naturals.clone(), squares.clone());
            go(move || {
                // Receiving on a closed, drained channel ends the loop.
                for x in naturals.iter() {
                    squares.send(x * x);
                }
                squares.close();
            });
        }
        let sum: u64 = squares.iter().sum();
        println!("1. pipeline: the sum of the first ten squares is {sum}");
        assert_eq!(sum, 385);

        // 2. A join handle returns the goroutine's result (or its panic).
        let h = go(|| (1..=20u64).product::<u64>());
        println!("2. join: 20! = {}", h.join().unwrap());

        // 3. A goroutine Mutex and a WaitGroup: 8 goroutines, 1000 increments each.
        let counter = Arc::new(Mutex::new(0u64));
        let wg = Arc::new(WaitGroup::new());
        for _ in 0..8 {
            let (counter, wg) = (counter.clone(), wg.clone());
            wg.add(1);
            go(move || {
                for _ in 0..1000 {
                    *counter.lock() += 1;
                }
                wg.done();
            });
        }
        wg.wait();
        println!("3. mutex and wait group: counter = {}", *counter.lock());
        assert_eq!(*counter.lock(), 8000);

        // 4. Select: whichever case is ready first, or the timeout.
        let fast = Chan::new(1);
        let slow: Chan<&str> = Chan::new(1);
        {
            let fast = fast.clone();
            go(move || {
                sleep(Duration::from_millis(5));
                fast.send("fast");
            });
        }
        let got = Select::new()
            .recv(&fast, |v| v.unwrap_or("closed"))
            .recv(&slow, |v| v.unwrap_or("closed"))
            .timeout(Duration::from_millis(500), || "timeout")
            .wait();
        println!("4. select: {got:?} was ready first");
        assert_eq!(got, "fast");

        // 5. A blocking system call hands its P to another thread while it waits.
        let len = blocking(|| std::fs::metadata("/proc/self/status").map(|m| m.len()).ok());
        println!("5. blocking: a blocking call returned {len:?}");
    });

    let s = rt.stats();
    println!("runtime: {} Ps, {} OS threads, {} goroutines left", s.procs, s.ms, s.goroutines);
    Ok(())
}
