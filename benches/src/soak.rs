//! `soak --seconds S --goroutines G`: the runtime and the collector under everything at once,
//! for a given time, counting what went wrong instead of timing anything.
//!
//! One [`Runtime`] (a P per CPU) and one [`Gc`] with checkmark and poison on (every concurrent
//! marking is re-checked with the world stopped; a freed object is filled with a pattern, and
//! a read through a stale reference is caught) and the smallest pacing (`gc_percent` 1, a
//! 256 KiB floor), plus a goroutine that calls [`Gc::collect`] in a loop: collections run back
//! to back for the whole soak.
//!
//! `G` worker goroutines, each with its own [`Mutator`], loop until the time is up, picking
//! one task at a time at random:
//!
//! * **alloc**: build a tree of 15 nodes, check its sum, and swap it with its long-lived
//!   tree, which must be intact too;
//! * **share**: store its tree into a slot of a global array of 64 trees shared by every
//!   worker (through the write barrier), load another slot and check that tree;
//! * **chan**: send a number on one of 32 shared buffered channels and receive from another,
//!   each with a 2 ms timeout (so the worker parks, and never forever);
//! * **sleep**: sleep up to 2 ms on the scheduler's timers;
//! * **blocking**: a 100 µs sleep of the OS thread inside [`blocking`] (its P is handed off);
//! * **spin**: about 200 µs of arithmetic in a tight loop that never polls, so stops and stack
//!   scans must preempt it asynchronously (the preemption signal);
//! * **mutex**: increment a counter under a shared goroutine [`Mutex`], yielding while holding
//!   it now and then;
//! * **spawn**: spawn a goroutine that builds and checks a tree, and join it;
//! * **panic**: spawn a goroutine that builds a tree and panics holding it, and join it: the
//!   join handle must report the panic;
//! * **oslock**: increment a counter under a shared `std::sync::Mutex`, spinning about 20 µs
//!   inside the critical section (no safepoint there, as the scheduler's thread-identity
//!   contract allows): the preemption signal may hold the goroutine in place with the lock,
//!   while other goroutines block their threads on it;
//! * **stderr**: the same with standard error's lock, as `eprintln!` takes it (writing nothing);
//! * **register**: register a new type while collections run (up to 20,000 in all, then look
//!   one up), and check that its id is found by its name;
//! * **suspend**: suspend a goroutine it spawned, then try again without resuming it: the second
//!   attempt must be a described panic, not a wait for itself;
//! * **shutdown**: inside a blocking call, make a second runtime with a heap, start goroutines
//!   in every state (parked on a channel, polling, spinning between polls, looping on
//!   blocking calls, collecting in a loop, allocating, sleeping), drop it, and check that every
//!   goroutine's captures were dropped (one such runtime at a time).
//!
//! A wrong sum, a lost or extra panic, a wrong counter or a worker that panicked counts as a
//! failure (a checkmark or poison finding aborts the process, which fails louder). Every 10 s
//! it prints a progress line on standard error (time, cycles so far). At the end it prints one readable line and one JSON line with `seconds`, `goroutines`, `cycles`,
//! `stops` (the collector's stop-the-world pauses), `max_pause_us`, `goroutines_run` (workers
//! and the goroutines they spawned), `panics_caught`, `async_preemptions` (goroutines the
//! preemption signal held in place), `stop_givebacks` (goroutines a stop gave back from a hold
//! because it could not finish: see `safepoint_sched::stop_the_world`), `held_queue_handoffs`
//! (times sysmon moved a held P's queue to the global queue: see
//! `safepoint_sched::Stats::held_queue_handoffs`) and `failures`, which
//! must be 0; the exit status is 1 otherwise.
//!
//! The runtime runs with the watchdog on (`safepoint_sched::Builder::schedcheck`): a hang
//! aborts the soak with a report of every queue, P, M and goroutine instead of stalling it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use safepoint::gc::{Gc, GcError, Global, Mutator, Slot, TypeDesc, TypeId, WordKind};
use safepoint::sched::{
    Chan, Mutex, Runtime, Select, blocking, go, resume_g, sleep, suspend_g, yield_now,
};

use crate::report::{Value, emit};

/// The message of the deliberate panics (the soak's panic hook keeps them quiet).
const SOAK_PANIC: &str = "soak: deliberate panic";
/// Depth of every tree the soak builds: 15 nodes.
const DEPTH: u32 = 3;
/// Trees in the shared global array.
const SHARED: usize = 64;
/// Shared channels.
const CHANS: usize = 32;

/// What a soak found.
#[derive(Clone, Debug, Default)]
pub struct SoakReport {
    /// Seconds it ran.
    pub seconds: f64,
    /// Worker goroutines.
    pub goroutines: u64,
    /// Collection cycles completed.
    pub cycles: u64,
    /// Stop-the-world pauses of the collector.
    pub stops: u64,
    /// Longest pause, microseconds.
    pub max_pause_us: f64,
    /// Goroutines run: the workers and every goroutine they spawned.
    pub goroutines_run: u64,
    /// Deliberate panics reported by join handles.
    pub panics_caught: u64,
    /// Goroutines held in place by the preemption signal.
    pub async_preemptions: u64,
    /// Goroutines a stop that could not finish gave back from a hold.
    pub stop_givebacks: u64,
    /// Times sysmon moved the queue of a P held in place for long to the global queue.
    pub held_queue_handoffs: u64,
    /// Second runtimes made, filled with goroutines in every state, and dropped.
    pub runtimes_dropped: u64,
    /// Anything that went wrong; must be 0.
    pub failures: u64,
}

impl SoakReport {
    /// The JSON fields.
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("seconds", self.seconds.into()),
            ("goroutines", self.goroutines.into()),
            ("cycles", self.cycles.into()),
            ("stops", self.stops.into()),
            ("max_pause_us", self.max_pause_us.into()),
            ("goroutines_run", self.goroutines_run.into()),
            ("panics_caught", self.panics_caught.into()),
            ("async_preemptions", self.async_preemptions.into()),
            ("stop_givebacks", self.stop_givebacks.into()),
            ("held_queue_handoffs", self.held_queue_handoffs.into()),
            ("runtimes_dropped", self.runtimes_dropped.into()),
            ("failures", self.failures.into()),
        ]
    }
}

/// Runs `soak --seconds S --goroutines G`; exits 1 if anything failed.
pub fn run(args: &[String]) {
    let mut seconds = 10.0;
    let mut goroutines = 1000;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().and_then(|v| v.parse::<f64>().ok());
        match (a.as_str(), v) {
            ("--seconds", Some(v)) if v > 0.0 => seconds = v,
            ("--goroutines", Some(v)) if v >= 1.0 => goroutines = v as u64,
            _ => {
                eprintln!("usage: stress soak --seconds S --goroutines G");
                std::process::exit(2);
            }
        }
    }
    let r = soak(Duration::from_secs_f64(seconds), goroutines);
    emit("soak", &format!("{seconds}s {goroutines}g"), &r.fields());
    if r.failures != 0 {
        std::process::exit(1);
    }
}

/// Counters the goroutines share.
#[derive(Default)]
struct Counts {
    goroutines_run: AtomicU64,
    panics_thrown: AtomicU64,
    panics_caught: AtomicU64,
    failures: AtomicU64,
    mutex_adds: AtomicU64,
    os_adds: AtomicU64,
    registered: AtomicU64,
    runtimes_dropped: AtomicU64,
}

impl Counts {
    fn fail(&self, what: &str) {
        eprintln!("soak: failure: {what}");
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// What every worker shares.
struct World {
    gc: Gc,
    node: TypeId,
    shared: Global,
    chans: Vec<Chan<u64>>,
    mutex: Mutex<u64>,
    /// An OS lock, taken for short critical sections with no safepoint inside.
    os_lock: std::sync::Mutex<u64>,
    counts: Counts,
    deadline: Instant,
}

/// How often a soak says how far it has come.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Ends the progress thread of [`progress_lines`] (and waits for it) when dropped.
struct Progress {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A thread outside the runtime that prints a progress line on standard error every
/// [`PROGRESS_EVERY`] until the returned guard is dropped, so that a long soak shows it is
/// alive before its report: the time, and the cycles completed so far.
fn progress_lines(gc: Gc, d: Duration) -> Progress {
    let (stop, wait) = std::sync::mpsc::channel::<()>();
    let t0 = Instant::now();
    let cycles0 = gc.cycles();
    let thread = std::thread::spawn(move || {
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            wait.recv_timeout(PROGRESS_EVERY)
        {
            eprintln!(
                "soak: {:.0} s of {:.0}: {} cycles",
                t0.elapsed().as_secs_f64(),
                d.as_secs_f64(),
                gc.cycles() - cycles0
            );
        }
    });
    Progress { stop: Some(stop), thread: Some(thread) }
}

/// Soaks for `d` with `g` workers.
pub fn soak(d: Duration, g: u64) -> SoakReport {
    quiet_deliberate_panics();
    let rt = Runtime::builder().schedcheck(true).build().expect("runtime");
    let gc = Gc::builder()
        .checkmark(true)
        .poison(true)
        .gc_percent(1)
        .min_heap(256 << 10)
        .build(&rt)
        .unwrap_or_else(|e| panic!("gc: {e}"));
    let node = gc
        .types()
        .register(TypeDesc::Record {
            name: "soak.node".into(),
            words: vec![WordKind::Ref, WordKind::Ref, WordKind::Raw],
        })
        .unwrap_or_else(|e| panic!("register soak.node: {e}"));
    let array = gc
        .types()
        .register(TypeDesc::RefArray { name: "soak.shared".into() })
        .unwrap_or_else(|e| panic!("register soak.shared: {e}"));
    let t0 = Instant::now();
    let progress = progress_lines(gc.clone(), d);
    let mut r = rt.block_on(move || {
        let (cycles0, stops0) = {
            let s = gc.stats();
            (s.cycles, s.pause_count)
        };
        let mut m = ok(Mutator::new(&gc));
        let shared = m.scope(|m, [a, t]| {
            ok(m.alloc_array(a, array, SHARED));
            for i in 0..SHARED {
                build(m, node, DEPTH, t);
                ok(m.store(a, i, t));
            }
            ok(m.new_global(a))
        });
        drop(m);
        let world = Arc::new(World {
            gc: gc.clone(),
            node,
            shared,
            chans: (0..CHANS).map(|_| Chan::new(16)).collect(),
            mutex: Mutex::new(0),
            os_lock: std::sync::Mutex::new(0),
            counts: Counts::default(),
            deadline: Instant::now() + d,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let collector = {
            let (gc, stop) = (gc.clone(), stop.clone());
            go(move || {
                // Relaxed: a flag polled between collections; the join orders the rest.
                while !stop.load(Ordering::Relaxed) {
                    gc.collect();
                }
            })
        };
        let workers: Vec<_> = (0..g)
            .map(|i| {
                let w = world.clone();
                w.counts.goroutines_run.fetch_add(1, Ordering::Relaxed);
                go(move || worker(&w, i))
            })
            .collect();
        let c = &world.counts;
        for h in workers {
            if let Err(e) = h.join() {
                c.fail(&format!("worker panicked: {e}"));
            }
        }
        stop.store(true, Ordering::Relaxed);
        if let Err(e) = collector.join() {
            c.fail(&format!("collector panicked: {e}"));
        }
        // Every shared tree is still intact, every increment under the mutex is there, and
        // every deliberate panic was reported.
        let mut m = ok(Mutator::new(&gc));
        m.scope(|m, [a, t]| {
            ok(m.load_global(a, &world.shared));
            for i in 0..SHARED {
                ok(m.load(t, a, i));
                if sum(m, t) != want_sum() {
                    c.fail(&format!("shared tree {i} corrupt at the end"));
                }
            }
        });
        drop(m);
        // Relaxed: every goroutine that counted was joined.
        let adds = c.mutex_adds.load(Ordering::Relaxed);
        let n = *world.mutex.lock();
        if n != adds {
            c.fail(&format!("the mutex counter is {n} after {adds} increments"));
        }
        let adds = c.os_adds.load(Ordering::Relaxed);
        let n = *world.os_lock.lock().unwrap_or_else(|e| e.into_inner());
        if n != adds {
            c.fail(&format!("the OS lock's counter is {n} after {adds} increments"));
        }
        let thrown = c.panics_thrown.load(Ordering::Relaxed);
        let caught = c.panics_caught.load(Ordering::Relaxed);
        if thrown != caught {
            c.fail(&format!("{thrown} panics thrown, {caught} reported by join handles"));
        }
        let stats = gc.stats();
        let pauses = &gc.pauses_since(stops0);
        SoakReport {
            seconds: 0.0,
            goroutines: g,
            cycles: stats.cycles - cycles0,
            stops: pauses.len() as u64,
            max_pause_us: pauses.iter().map(|p| p.as_secs_f64() * 1e6).fold(0.0, f64::max),
            goroutines_run: c.goroutines_run.load(Ordering::Relaxed),
            panics_caught: caught,
            async_preemptions: 0,
            stop_givebacks: 0,
            held_queue_handoffs: 0,
            runtimes_dropped: c.runtimes_dropped.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
        }
    });
    drop(progress);
    r.seconds = t0.elapsed().as_secs_f64();
    r.async_preemptions = rt.stats().async_preemptions;
    r.stop_givebacks = rt.stats().stop_givebacks;
    r.held_queue_handoffs = rt.stats().held_queue_handoffs;
    r
}

/// The deliberate panics (and the described panics of the double suspensions) would print a
/// message each, thousands of them: print the others.
fn quiet_deliberate_panics() {
    let theirs = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let deliberate = p.downcast_ref::<&str>() == Some(&SOAK_PANIC)
            || p.downcast_ref::<String>()
                .is_some_and(|m| m.contains("already suspended by this caller"));
        if !deliberate {
            theirs(info)
        }
    }));
}

/// A mutator operation that cannot fail here (slots live, types fixed, no hard limit).
#[track_caller]
fn ok<T>(r: Result<T, GcError>) -> T {
    r.unwrap_or_else(|e| panic!("soak: {e}"))
}

/// Builds a tree of depth `h` into `dst`: a node of height `h` holds `h + 1`.
fn build(m: &mut Mutator, ty: TypeId, h: u32, dst: Slot) {
    if h == 0 {
        ok(m.alloc(dst, ty));
        return ok(m.write_word(dst, 2, 1));
    }
    m.scope(|m, [l, r]| {
        build(m, ty, h - 1, l);
        build(m, ty, h - 1, r);
        ok(m.alloc(dst, ty));
        ok(m.store(dst, 0, l));
        ok(m.store(dst, 1, r));
        ok(m.write_word(dst, 2, h as u64 + 1));
    })
}

/// The sum of the values of the tree in `t` (0 for null).
fn sum(m: &mut Mutator, t: Slot) -> u64 {
    if ok(m.is_null(t)) {
        return 0;
    }
    let v = ok(m.read_word(t, 2));
    m.scope(|m, [c]| {
        let mut s = v;
        for i in 0..2 {
            ok(m.load(c, t, i));
            s += sum(m, c);
        }
        s
    })
}

/// The sum of every tree the soak builds.
fn want_sum() -> u64 {
    (0..=DEPTH as u64).map(|h| (h + 1) << (DEPTH as u64 - h)).sum()
}

/// A small xorshift generator, one per worker.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn worker(w: &World, id: u64) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut m = ok(Mutator::new(&w.gc));
    m.scope(|m, [long, t, a]| {
        build(m, w.node, DEPTH, long);
        while Instant::now() < w.deadline {
            match rng.below(21) {
                0..=3 => {
                    build(m, w.node, DEPTH, t);
                    if sum(m, t) != want_sum() || sum(m, long) != want_sum() {
                        w.counts.fail("a worker's tree is corrupt");
                    }
                    ok(m.copy(long, t));
                }
                4..=5 => {
                    ok(m.load_global(a, &w.shared));
                    ok(m.store(a, rng.below(SHARED as u64) as usize, long));
                    ok(m.load(t, a, rng.below(SHARED as u64) as usize));
                    if sum(m, t) != want_sum() {
                        w.counts.fail("a shared tree is corrupt");
                    }
                    ok(m.clear(a));
                }
                6..=7 => {
                    let to = &w.chans[rng.below(CHANS as u64) as usize];
                    let from = &w.chans[rng.below(CHANS as u64) as usize];
                    let wait = Duration::from_millis(2);
                    Select::new().send(to, id, || ()).timeout(wait, || ()).wait();
                    Select::new().recv(from, |_| ()).timeout(wait, || ()).wait();
                }
                8 => sleep(Duration::from_micros(rng.below(2000))),
                9 => blocking(|| std::thread::sleep(Duration::from_micros(100))),
                10..=11 => spin(Duration::from_micros(200)),
                12 => {
                    let mut g = w.mutex.lock();
                    *g += 1;
                    if rng.below(4) == 0 {
                        yield_now();
                    }
                    drop(g);
                    w.counts.mutex_adds.fetch_add(1, Ordering::Relaxed);
                }
                13..=14 => {
                    let (gc, node) = (w.gc.clone(), w.node);
                    w.counts.goroutines_run.fetch_add(1, Ordering::Relaxed);
                    let child = go(move || {
                        let mut m = ok(Mutator::new(&gc));
                        m.scope(|m, [t]| {
                            build(m, node, DEPTH, t);
                            sum(m, t)
                        })
                    });
                    match child.join() {
                        Ok(s) if s == want_sum() => {}
                        Ok(s) => w.counts.fail(&format!("a child's tree summed to {s}")),
                        Err(e) => w.counts.fail(&format!("a child panicked: {e}")),
                    }
                }
                16 => {
                    let mut g = w.os_lock.lock().unwrap_or_else(|e| e.into_inner());
                    *g += 1;
                    spin(Duration::from_micros(20));
                    drop(g);
                    w.counts.os_adds.fetch_add(1, Ordering::Relaxed);
                }
                17 => {
                    use std::io::Write;
                    let mut e = std::io::stderr().lock();
                    spin(Duration::from_micros(20));
                    if e.write_all(b"").is_err() {
                        w.counts.fail("standard error refused an empty write");
                    }
                }
                18 => {
                    if rng.below(4) == 0 {
                        runtime_dropped_alive(w);
                    } else {
                        register(w, id, &mut rng);
                    }
                }
                19 => suspend_twice(w),
                _ => {
                    let (gc, node) = (w.gc.clone(), w.node);
                    w.counts.goroutines_run.fetch_add(1, Ordering::Relaxed);
                    w.counts.panics_thrown.fetch_add(1, Ordering::Relaxed);
                    let child = go(move || {
                        let mut m = ok(Mutator::new(&gc));
                        m.scope(|m, [t]| {
                            build(m, node, DEPTH, t);
                            std::panic::panic_any(SOAK_PANIC);
                        })
                    });
                    match child.join() {
                        Err(e) if e.message() == Some(SOAK_PANIC) => {
                            w.counts.panics_caught.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => w.counts.fail(&format!("a child panicked otherwise: {e}")),
                        Ok(()) => w.counts.fail("a panicking child returned"),
                    }
                }
            }
        }
        if sum(m, long) != want_sum() {
            w.counts.fail("a worker's long-lived tree is corrupt at the end");
        }
    });
}

/// Registers a new type while collections run (or, past the soak's budget of types, looks
/// one up) and checks that its name finds its id.
fn register(w: &World, id: u64, rng: &mut Rng) {
    const BUDGET: u64 = 20_000;
    let types = w.gc.types();
    let n = w.counts.registered.fetch_add(1, Ordering::Relaxed);
    if n >= BUDGET {
        let name = format!("soak.reg.{}", rng.below(BUDGET));
        // Registered by now, or about to be by the worker that drew it: either is fine.
        let _ = types.lookup(&name);
        return;
    }
    let name = format!("soak.reg.{n}");
    match types.register(TypeDesc::Record {
        name: name.clone(),
        words: vec![WordKind::Ref, WordKind::Tagged],
    }) {
        Ok(t) if types.lookup(&name) == Some(t) => {}
        Ok(_) => w.counts.fail(&format!("worker {id}: type {name} not found by its name")),
        Err(e) => w.counts.fail(&format!("worker {id}: registering {name}: {e}")),
    }
}

/// Makes a second runtime with a heap, starts goroutines in every state, each holding a value
/// that counts its drop, and drops the runtime from a blocking call: the drop must return and
/// every goroutine's captures must be dropped (the runtime unwinds them). One at a time: each
/// runtime starts threads of its own.
fn runtime_dropped_alive(w: &World) {
    static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
    if IN_FLIGHT.fetch_add(1, Ordering::Relaxed) != 0 {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    struct Counted(Arc<AtomicU64>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let r = blocking(move || {
        let rt = Runtime::builder().procs(2).build().map_err(|e| e.to_string())?;
        let gc = Gc::new(&rt).map_err(|e| e.to_string())?;
        let node = gc
            .types()
            .register(TypeDesc::Record { name: "soak.node".into(), words: vec![WordKind::Ref; 2] })
            .map_err(|e| e.to_string())?;
        let dropped = Arc::new(AtomicU64::new(0));
        let started = Arc::new(AtomicU64::new(0));
        let ch = Chan::<u64>::new(0);
        type Body = Box<dyn FnOnce(&Gc) + Send>;
        let bodies: Vec<Body> = vec![
            Box::new({
                let ch = ch.clone();
                move |_| {
                    let _ = ch.recv();
                }
            }),
            Box::new(|_| {
                loop {
                    safepoint::sched::poll();
                }
            }),
            Box::new(|_| {
                loop {
                    spin(Duration::from_micros(100));
                    safepoint::sched::poll();
                }
            }),
            Box::new(|_| {
                loop {
                    blocking(|| std::thread::sleep(Duration::from_micros(50)));
                }
            }),
            Box::new(|g| {
                loop {
                    g.collect();
                }
            }),
            Box::new(move |g| {
                let mut m = ok(Mutator::new(g));
                m.scope(|m, [t]| {
                    loop {
                        ok(m.alloc(t, node));
                        m.poll();
                    }
                })
            }),
            Box::new(|_| sleep(Duration::from_secs(3600))),
        ];
        let n = bodies.len() as u64;
        for body in bodies {
            let (gc, guard, started) = (gc.clone(), Counted(dropped.clone()), started.clone());
            rt.spawn(move || {
                let _guard = guard;
                started.fetch_add(1, Ordering::SeqCst);
                body(&gc);
            })
            .map_err(|e| e.to_string())?;
        }
        let t0 = Instant::now();
        while started.load(Ordering::SeqCst) < n && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_micros(200));
        }
        drop(gc);
        drop(rt);
        drop(ch);
        Ok::<_, String>((dropped.load(Ordering::SeqCst), n))
    });
    IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    match r {
        Ok((dropped, n)) if dropped == n => {
            w.counts.runtimes_dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok((dropped, n)) => w
            .counts
            .fail(&format!("a dropped runtime dropped {dropped} of {n} goroutines' captures")),
        Err(e) => w.counts.fail(&format!("a second runtime: {e}")),
    }
}

/// Suspends a goroutine it spawned, then asks again while still holding it: the second
/// attempt must be a described panic of this goroutine (it used to wait for itself for ever).
fn suspend_twice(w: &World) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    w.counts.goroutines_run.fetch_add(1, Ordering::Relaxed);
    let child = go(move || {
        // Relaxed: a flag polled in a loop; the join orders the rest.
        while !s.load(Ordering::Relaxed) {
            safepoint::sched::poll();
        }
    });
    let held = suspend_g(child.goroutine());
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(suspend_g(child.goroutine()));
    }));
    resume_g(held);
    stop.store(true, Ordering::Relaxed);
    match again {
        Err(e)
            if e.downcast_ref::<String>()
                .is_some_and(|m| m.contains("already suspended by this caller")) => {}
        Err(_) => w.counts.fail("a second suspension panicked otherwise"),
        Ok(()) => w.counts.fail("a second suspension by the same caller returned"),
    }
    if child.join().is_err() {
        w.counts.fail("a suspended goroutine panicked");
    }
}

/// Arithmetic for about `d`, with no safepoint: only the preemption signal can stop it.
fn spin(d: Duration) {
    let t0 = Instant::now();
    let mut x = 1u64;
    while t0.elapsed() < d {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    std::hint::black_box(x);
}
