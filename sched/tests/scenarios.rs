//! Scheduler scenarios adapted from Go's runtime tests: preemption at poll points, stopping the
//! world under load, blocking calls, fairness, suspend_g racing every transition, the ragged
//! barrier reaching every kind of P, many parked goroutines, and concurrent stops.

use safepoint_sched::{
    Goroutine, Runtime, WaitGroup, WaitReason, blocking, for_each_p, go, park, poll, resume_g,
    stop_the_world, suspend_g, yield_now,
};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn rt(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).build().unwrap()
}

/// Go's TestPreemption: two goroutines take turns on an atomic; each spins with only poll points
/// while waiting for its turn. At procs=1 the spinner must be preempted (sysmon's time slice)
/// for the other to ever run.
#[test]
fn turns_with_only_poll_points() {
    let rt = rt(1);
    rt.block_on(|| {
        let x = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..2)
            .map(|me| {
                let x = x.clone();
                go(move || {
                    for _ in 0..3 {
                        while x.load(Ordering::SeqCst) != me {
                            poll();
                        }
                        x.store(1 - me, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
}

/// Go's TestPreemptionGC: procs goroutines spin in poll loops while another stops the world 100
/// times. Every stop must complete.
#[test]
fn stop_the_world_with_poll_spinners() {
    let rt = rt(2);
    let stops = rt.block_on(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let spins = Arc::new(AtomicU64::new(0));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (stop, spins) = (stop.clone(), spins.clone());
                go(move || {
                    while !stop.load(Ordering::Relaxed) {
                        spins.fetch_add(1, Ordering::Relaxed);
                        poll();
                    }
                })
            })
            .collect();
        let mut n = 0;
        for _ in 0..100 {
            let w = stop_the_world("test");
            // Nobody else runs while the world is stopped.
            let a = spins.load(Ordering::SeqCst);
            for _ in 0..1000 {
                std::hint::spin_loop();
            }
            assert_eq!(
                a,
                spins.load(Ordering::SeqCst),
                "a goroutine ran while the world was stopped"
            );
            w.start();
            n += 1;
        }
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
        n
    });
    assert_eq!(stops, 100);
}

/// Goroutines in blocking calls do not hold up a stop, and come back to a stopped world
/// correctly: they wait for the world to start before running again.
#[test]
fn stop_the_world_with_blocked_goroutines() {
    let rt = rt(2);
    rt.block_on(|| {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        let released = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let rx = rx.clone();
                let released = released.clone();
                go(move || {
                    blocking(|| rx.lock().unwrap().recv().unwrap());
                    released.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        yield_now();
        for i in 0..20 {
            let w = stop_the_world("test");
            if i < 3 {
                // Release one blocked goroutine while the world is stopped: it must not run
                // user code until the world starts.
                tx.send(()).unwrap();
                let before = released.load(Ordering::SeqCst);
                for _ in 0..100_000 {
                    std::hint::spin_loop();
                }
                assert_eq!(before, released.load(Ordering::SeqCst));
            }
            w.start();
            yield_now();
        }
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(released.load(Ordering::SeqCst), 3);
    });
}

/// Fairness at procs=1: a main goroutine still progresses while others spin in poll loops.
#[test]
fn main_progresses_while_others_spin() {
    let rt = rt(1);
    rt.block_on(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let stop = stop.clone();
                go(move || {
                    while !stop.load(Ordering::Relaxed) {
                        poll();
                    }
                })
            })
            .collect();
        // Main yields 5 times: each time it must get the CPU back (through the spinners'
        // time slices).
        for _ in 0..5 {
            yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
    });
}

/// A pair of goroutines handing a turn back and forth with park/ready, each doing `work`
/// units of work per turn (counted in `count`).
struct Pair {
    slots: [Mutex<Option<safepoint_sched::GoroutineRef>>; 2],
    turn: AtomicUsize,
    count: AtomicU64,
    stop: AtomicBool,
}

impl Pair {
    fn new() -> Arc<Pair> {
        Arc::new(Pair {
            slots: [Mutex::new(None), Mutex::new(None)],
            turn: AtomicUsize::new(0),
            count: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        })
    }

    fn run(&self, me: usize, work: u64) {
        loop {
            while self.turn.load(Ordering::SeqCst) != me {
                park(WaitReason::Park, |r| {
                    let mut s = self.slots[me].lock().unwrap();
                    if self.turn.load(Ordering::SeqCst) == me {
                        return false;
                    }
                    *s = Some(r);
                    true
                });
            }
            if self.stop.load(Ordering::SeqCst) {
                self.pass(me);
                return;
            }
            let mut n = 0;
            for i in 0..work {
                n += 1;
                if i % 1024 == 1023 {
                    self.count.fetch_add(n, Ordering::Relaxed);
                    n = 0;
                    poll();
                }
            }
            self.count.fetch_add(n, Ordering::Relaxed);
            self.pass(me);
        }
    }

    fn pass(&self, me: usize) {
        self.turn.store(1 - me, Ordering::SeqCst);
        let w = self.slots[1 - me].lock().unwrap().take();
        if let Some(w) = w {
            w.ready();
        }
    }
}

/// Go's TestPingPongHog: at procs=1 a hog pair (10^6 units of work per hand-off) and a light
/// pair (10^3) hand off to each other through runnext, which inherits the time slice; neither
/// pair may starve the other: their work counts stay within 5x. Judged once either pair has
/// done a fixed amount of work (no clock in the test).
#[test]
fn hog_pair_and_light_pair_share_the_cpu() {
    let rt = rt(1);
    let (hog, light) = rt.block_on(|| {
        let hog = Pair::new();
        let light = Pair::new();
        let mut hs = Vec::new();
        for (pair, work) in [(hog.clone(), 1_000_000u64), (light.clone(), 1_000)] {
            for me in 0..2 {
                let pair = pair.clone();
                hs.push(go(move || pair.run(me, work)));
            }
        }
        let limit = 30_000_000;
        while hog.count.load(Ordering::Relaxed) < limit
            && light.count.load(Ordering::Relaxed) < limit
        {
            yield_now();
        }
        let counts = (hog.count.load(Ordering::Relaxed), light.count.load(Ordering::Relaxed));
        hog.stop.store(true, Ordering::SeqCst);
        light.stop.store(true, Ordering::SeqCst);
        for h in hs {
            h.join().unwrap();
        }
        counts
    });
    let ratio = hog.max(light) as f64 / hog.min(light).max(1) as f64;
    assert!(
        ratio <= 5.0,
        "unfair: hog pair did {hog} units, light pair {light} (ratio {ratio:.1})"
    );
}
