//! Scheduler scenarios adapted from Go's runtime tests: preemption at poll points, stopping the
//! world under load, blocking calls, fairness, suspend_g racing every transition, the ragged
//! barrier reaching every kind of P, many parked goroutines, and concurrent stops.

use safepoint_sched::{
    Goroutine, Runtime, WaitReason, blocking, for_each_p, go, park, poll, resume_g, stop_the_world,
    suspend_g, yield_now,
};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn rt(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).schedcheck(true).build().unwrap()
}

/// `n` goroutines spinning in poll loops (each bumping `spins`) until [`Spinners::stop`].
struct Spinners {
    stop: Arc<AtomicBool>,
    spins: Arc<AtomicU64>,
    hs: Vec<safepoint_sched::JoinHandle<()>>,
}

impl Spinners {
    /// Runs on: a goroutine.
    fn start(n: usize) -> Spinners {
        let stop = Arc::new(AtomicBool::new(false));
        let spins = Arc::new(AtomicU64::new(0));
        let hs = (0..n)
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
        Spinners { stop, spins, hs }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.hs {
            h.join().unwrap();
        }
    }
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
        let spinners = Spinners::start(2);
        let spins = spinners.spins.clone();
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
        spinners.stop();
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
        let spinners = Spinners::start(3);
        // Main yields 5 times: each time it must get the CPU back (through the spinners'
        // time slices).
        for _ in 0..5 {
            yield_now();
        }
        spinners.stop();
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

/// What a suspend_g target does in its loop; `count` moves only while it runs user code.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Yield,
    Poll,
    ParkReady,
    Blocking,
    SpawnExit,
}

/// suspend_g racing every kind of transition (yield, preemption at polls, park/ready, blocking
/// calls, exit and reuse), from two goroutines and one outside thread at once. While a target
/// is held it must not run user code; every hold is in a scannable state.
#[test]
fn suspend_g_races_every_transition() {
    let rt = rt(2);
    let stop = Arc::new(AtomicBool::new(false));
    let targets: Vec<(Goroutine, Arc<AtomicU64>, Behaviour)> = {
        let stop = stop.clone();
        rt.block_on(move || {
            let mut out = Vec::new();
            let pair = Pair::new();
            for b in [
                Behaviour::Yield,
                Behaviour::Poll,
                Behaviour::ParkReady,
                Behaviour::ParkReady,
                Behaviour::Blocking,
                Behaviour::SpawnExit,
            ] {
                let count = Arc::new(AtomicU64::new(0));
                let (c, stop, pair) = (count.clone(), stop.clone(), pair.clone());
                let side = out.iter().filter(|(_, _, b)| matches!(b, Behaviour::ParkReady)).count();
                let h = go(move || {
                    while !stop.load(Ordering::Relaxed) {
                        c.fetch_add(1, Ordering::SeqCst);
                        match b {
                            Behaviour::Yield => yield_now(),
                            Behaviour::Poll => poll(),
                            Behaviour::ParkReady => pair.play_once(side),
                            Behaviour::Blocking => {
                                blocking(|| std::hint::black_box(0));
                            }
                            Behaviour::SpawnExit => go(|| ()).join().unwrap(),
                        }
                    }
                    if matches!(b, Behaviour::ParkReady) {
                        pair.stop.store(true, Ordering::SeqCst);
                        pair.pass(side);
                    }
                });
                out.push((h.goroutine(), count, b));
                std::mem::forget(h);
            }
            out
        })
    };
    let targets = Arc::new(targets);
    let held_running = Arc::new(AtomicU64::new(0));
    let check = |targets: &[(Goroutine, Arc<AtomicU64>, Behaviour)], rounds: usize| {
        let mut stopped = 0;
        for _ in 0..rounds {
            for (g, count, b) in targets {
                let s = suspend_g(*g);
                if s.dead() {
                    continue;
                }
                let state = s.held_state();
                assert!(
                    matches!(
                        state,
                        safepoint_sched::status::Status::Runnable
                            | safepoint_sched::status::Status::Waiting
                            | safepoint_sched::status::Status::Syscall
                            // Held in place by the preemption signal (its poll came late).
                            | safepoint_sched::status::Status::AsyncPreempted
                    ),
                    "{b:?} held in {state:?}"
                );
                let before = count.load(Ordering::SeqCst);
                for _ in 0..200 {
                    std::hint::spin_loop();
                }
                assert_eq!(
                    before,
                    count.load(Ordering::SeqCst),
                    "{b:?} ran while held ({state:?})"
                );
                // Stopped at a safepoint, or held in place by the signal: either way a
                // running goroutine had to be stopped.
                stopped += (s.stopped() || s.async_stopped()) as u64;
                resume_g(s);
            }
        }
        stopped
    };
    // One suspender outside the runtime...
    let t = {
        let targets = targets.clone();
        std::thread::spawn(move || check(&targets, 300))
    };
    // ...and two inside.
    let inside = {
        let targets = targets.clone();
        let held_running = held_running.clone();
        rt.block_on(move || {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let targets = targets.clone();
                    go(move || check(&targets, 300))
                })
                .collect();
            let n: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
            held_running.fetch_add(n, Ordering::SeqCst);
            n
        })
    };
    let outside = t.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    // A running goroutine (the poller at least) was stopped by a suspension many times.
    assert!(inside + outside > 0, "no suspension ever had to stop a running goroutine");
    drop(rt);
}

impl Pair {
    /// One turn of `me` (0 or 1) of the ping-pong, without work.
    fn play_once(&self, me: usize) {
        while self.turn.load(Ordering::SeqCst) != me && !self.stop.load(Ordering::SeqCst) {
            park(WaitReason::Park, |r| {
                let mut s = self.slots[me].lock().unwrap();
                if self.turn.load(Ordering::SeqCst) == me || self.stop.load(Ordering::SeqCst) {
                    return false;
                }
                *s = Some(r);
                true
            });
        }
        self.pass(me);
    }
}

/// The ragged barrier reaches every kind of P: the caller's, one running a spinning goroutine,
/// one whose goroutine is in a blocking call, and idle ones; each exactly once per barrier.
#[test]
fn for_each_p_reaches_idle_running_and_blocked_ps() {
    let rt = rt(4);
    rt.block_on(|| {
        let spinner = Spinners::start(1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let entered = Arc::new(AtomicBool::new(false));
        let blocker = {
            let entered = entered.clone();
            go(move || {
                blocking(|| {
                    entered.store(true, Ordering::SeqCst);
                    rx.recv().unwrap()
                })
            })
        };
        while !entered.load(Ordering::SeqCst) {
            yield_now();
        }
        for _ in 0..50 {
            let seen: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
            for_each_p(&|p| {
                seen[p].fetch_add(1, Ordering::SeqCst);
            });
            for (i, s) in seen.iter().enumerate() {
                assert_eq!(s.load(Ordering::SeqCst), 1, "P{i} ran the function {s:?} times");
            }
            yield_now();
        }
        tx.send(()).unwrap();
        blocker.join().unwrap();
        spinner.stop();
    });
}

/// 100,000 goroutines parked at once, then all woken: every one completes.
#[test]
fn hundred_thousand_parked_goroutines() {
    let rt = rt(2);
    let n = 100_000;
    let done = rt.block_on(move || {
        let tokens = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let finished = Arc::new(AtomicUsize::new(0));
        for _ in 0..n {
            let (tokens, finished) = (tokens.clone(), finished.clone());
            go(move || {
                park(WaitReason::Park, |r| {
                    tokens.lock().unwrap().push(r);
                    true
                });
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }
        while tokens.lock().unwrap().len() < n {
            yield_now();
        }
        assert_eq!(finished.load(Ordering::SeqCst), 0);
        for r in std::mem::take(&mut *tokens.lock().unwrap()) {
            r.ready();
        }
        while finished.load(Ordering::SeqCst) < n {
            yield_now();
        }
        finished.load(Ordering::SeqCst)
    });
    assert_eq!(done, n);
}

/// Many goroutines stop the world at once, with spinners running: one stop at a time, no
/// deadlock, every stop completes.
#[test]
fn stop_the_world_races_itself() {
    let rt = rt(2);
    let total = rt.block_on(|| {
        let spinners = Spinners::start(2);
        let inside = Arc::new(AtomicUsize::new(0));
        let stoppers: Vec<_> = (0..8)
            .map(|_| {
                let inside = inside.clone();
                go(move || {
                    for _ in 0..25 {
                        let w = stop_the_world("race");
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two stops at once");
                        inside.fetch_sub(1, Ordering::SeqCst);
                        w.start();
                        if std::hint::black_box(true) {
                            poll();
                        }
                    }
                    25
                })
            })
            .collect();
        let n: usize = stoppers.into_iter().map(|h| h.join().unwrap()).sum();
        spinners.stop();
        n
    });
    assert_eq!(total, 200);
}

/// A goroutine blocked in a blocking call does not hold its P: at procs=1 another goroutine
/// runs (sysmon retakes the P and hands it to another M) and releases it.
#[test]
fn blocked_goroutine_hands_off_its_p() {
    let rt = rt(1);
    rt.block_on(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let waiter = {
            let flag = flag.clone();
            go(move || {
                blocking(|| {
                    while !flag.load(Ordering::SeqCst) {
                        std::thread::yield_now();
                    }
                })
            })
        };
        // Let the waiter enter its blocking call, then set the flag from this goroutine: only
        // possible if this goroutine gets the (only) P while the waiter blocks.
        yield_now();
        flag.store(true, Ordering::SeqCst);
        waiter.join().unwrap();
    });
}

/// An urgent goroutine (a collector's mark worker, say) that yields or whose time slice ends
/// goes back ahead of the others: on one P, a normal goroutine readied before the urgent one's
/// loop does not run until that loop is done. And when it is done, the normal one runs.
#[test]
fn an_urgent_goroutine_keeps_its_p_through_yields() {
    let rt = rt(1);
    let ran_during = rt.block_on(|| {
        safepoint_sched::set_urgent(true);
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let h = go(move || f.store(true, Ordering::SeqCst));
        let mut seen = false;
        for _ in 0..1000 {
            yield_now();
            seen |= flag.load(Ordering::SeqCst);
        }
        safepoint_sched::set_urgent(false);
        h.join().unwrap();
        assert!(flag.load(Ordering::SeqCst));
        seen
    });
    assert!(!ran_during, "a normal goroutine ran while the urgent one yielded");
}

/// A stop does not ask its own caller to stop: on one P, the stopper's first poll after the
/// restart does not give the P away (it used to, and waited behind every runnable goroutine).
#[test]
fn the_stopper_is_not_left_a_preemption_request() {
    let rt = rt(1);
    let ran = rt.block_on(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let h = go(move || f.store(true, Ordering::SeqCst));
        drop(stop_the_world("test"));
        for_each_p(&|_| {});
        poll();
        let ran = flag.load(Ordering::SeqCst);
        h.join().unwrap();
        ran
    });
    assert!(!ran, "the stopper's poll gave its P away");
}

/// A goroutine that only makes short blocking calls, back to back, never polls: its P flips
/// between Running and Syscall many times a millisecond, and no call lasts long enough for
/// sysmon to retake the P. It must still lose its time slice: a blocking call's return
/// answers sysmon's request. (Before, the goroutine spawned on its one P never ran; the same
/// starvation hung `suspend_g_races_every_transition` once in CI, its suspenders queued on the
/// P of the goroutine that loops on blocking calls.)
#[test]
fn a_goroutine_making_only_short_blocking_calls_still_yields_its_time_slice() {
    let rt = rt(1);
    rt.block_on(|| {
        let done = Arc::new(AtomicBool::new(false));
        let h = {
            let done = done.clone();
            go(move || done.store(true, Ordering::SeqCst))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut calls = 0u64;
        while !done.load(Ordering::SeqCst) {
            blocking(|| std::hint::black_box(0));
            calls += 1;
            assert!(
                std::time::Instant::now() < deadline,
                "the queued goroutine never ran: {calls} blocking calls in 30 s"
            );
        }
        h.join().unwrap();
    });
}
