//! Dropping a runtime with a heap never hangs and gives everything back (issues 18 and 25):
//! goroutines in loops of `Gc::collect`, a collection in progress, goroutines parked, spinning,
//! in blocking calls and held by the preemption signal are unwound; what they captured (`Gc`
//! clones) is dropped; and a heap whose last `Gc` is dropped unmaps its whole reservation, so
//! runtime-and-heap pairs made and dropped by the thousand keep the process's address space
//! and resident memory flat.
//!
//! Scenarios that could hang run on a thread of their own and fail the test if they have not
//! finished within a generous deadline (a failure guard only: nothing here measures time).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use safepoint_gc::{Gc, Mutator, Phase, TypeDesc, WordKind};
use safepoint_sched::{
    Chan, Cond, Mutex, Runtime, RwLock, Select, WaitGroup, WaitReason, blocking, park, poll, sleep,
    suspend_g, try_go, yield_now,
};

/// Runs `f` on a thread and fails if it has not returned within `secs` seconds (it would hang).
fn must_finish<T: Send + 'static>(
    what: &str,
    secs: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).unwrap_or_else(|_| panic!("{what}: hung"))
}

fn heap(rt: &Runtime) -> Gc {
    Gc::builder().min_heap(1 << 20).ignore_env().build(rt).unwrap()
}

fn wait_for(started: &AtomicUsize, n: usize) {
    while started.load(Ordering::SeqCst) < n {
        std::thread::yield_now();
    }
}

/// Issue 18: runtimes dropped while goroutines loop on `Gc::collect` return (200 of them, as
/// in the issue: before the fix, one hung within a few dozen).
#[test]
fn dropping_runtimes_with_goroutines_in_loops_of_collect_returns() {
    must_finish("dropping runtimes with collect loops", 120, || {
        for round in 0..200 {
            // With one P, a goroutine alone in a loop of collections never parks or yields:
            // its barriers and stops have no other P to wait for.
            let procs = 1 + round % 2;
            let rt = Runtime::builder().procs(procs).build().unwrap();
            let gc = heap(&rt);
            let started = Arc::new(AtomicUsize::new(0));
            for _ in 0..procs {
                let (g, s) = (gc.clone(), started.clone());
                rt.spawn(move || {
                    s.fetch_add(1, Ordering::SeqCst);
                    loop {
                        g.collect();
                    }
                })
                .unwrap();
            }
            wait_for(&started, procs);
            while gc.cycles() < 2 {
                std::thread::yield_now();
            }
            drop(rt);
            drop(gc);
        }
    });
}

/// Issue 18: a runtime dropped while a collection is in progress (its phase not Off: the
/// driver in a ragged barrier, a stop, or waiting for its mark workers) returns.
#[test]
fn dropping_a_runtime_in_the_middle_of_a_collection_returns() {
    must_finish("dropping runtimes mid-collection", 120, || {
        let mut mid = 0;
        for _ in 0..20 {
            let rt = Runtime::builder().procs(2).build().unwrap();
            let gc = heap(&rt);
            let ty = record(&gc);
            let started = Arc::new(AtomicUsize::new(0));
            for i in 0..3 {
                let (g, s) = (gc.clone(), started.clone());
                rt.spawn(move || {
                    s.fetch_add(1, Ordering::SeqCst);
                    if i == 0 {
                        loop {
                            g.collect();
                        }
                    }
                    churn(&g, ty)
                })
                .unwrap();
            }
            wait_for(&started, 3);
            // Catch a cycle under way (one goroutine collects in a loop, two allocate and
            // trigger cycles); give up on catching one after a while: the drop must return
            // either way.
            for _ in 0..1_000_000 {
                if !matches!(gc.phase(), Phase::Off | Phase::Sweep) {
                    break;
                }
                std::hint::spin_loop();
            }
            if !matches!(gc.phase(), Phase::Off | Phase::Sweep) {
                mid += 1;
            }
            drop(rt);
            drop(gc);
        }
        // Most drops (on a quiet machine, all) caught a cycle under way.
        assert!(mid > 0, "no drop caught a collection under way");
    });
}

fn record(gc: &Gc) -> safepoint_gc::TypeId {
    gc.types()
        .register(TypeDesc::Record {
            name: "node".into(),
            words: vec![WordKind::Ref, WordKind::Raw],
        })
        .unwrap()
}

/// Allocates garbage for ever (lists of 1,000 records, dropped), triggering cycle after cycle.
fn churn(gc: &Gc, ty: safepoint_gc::TypeId) -> ! {
    let mut m = Mutator::new(gc).unwrap();
    loop {
        m.scope(|m, [head, node]| {
            for i in 0..1000 {
                m.alloc(node, ty).unwrap();
                m.write_word(node, 1, i).unwrap();
                m.store(node, 0, head).unwrap();
                m.copy(head, node).unwrap();
            }
        });
    }
}

/// The process's mapped address space and resident memory now, in bytes, after the C
/// allocator has given back the free memory it can (`malloc_trim`). Without that, resident
/// memory measures the allocator's caches too: each pair's threads allocate in glibc's
/// per-thread arenas, which keep freed memory: over 10,000 pairs resident memory went from
/// 4.6 to 9.4 MB, and in a run of 1,250 pairs the bytes in use stayed between 117 and 128 KB
/// while the free bytes the allocator kept grew from 1.2 to 3.2 MB (`mallinfo2`).
fn vm() -> (u64, u64) {
    // SAFETY: malloc_trim only returns free memory to the OS; it is safe to call at any time.
    unsafe { libc::malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    };
    (field("VmSize:"), field("VmRSS:"))
}

/// What one goroutine of [`one_pair`] does with the heap it holds.
type Kind = Box<dyn FnOnce(&Gc) + Send>;

/// One runtime-and-heap pair with goroutines alive in every state, all holding a clone of the
/// heap: parked on every kind of wait (a channel send and receive, a mutex, a condition
/// variable, an RwLock's reader and writer semaphores and its writers' mutex, a WaitGroup, a
/// select with cases and an empty one, a sleep, a timer's channel, a join, `park` with a
/// custom reason), spinning with polls, spinning without (held by the preemption signal
/// whenever a collection needs it stopped), held by `suspend_g` (by a goroutine that holds
/// it, polling, and lets it go a moment, over and over),
/// looping on blocking calls, looping on collections, allocating; then the runtime is
/// dropped, then the last `Gc`. Returns the goroutines whose captured values were not
/// dropped, by their place in the list of kinds below (none if all were).
fn one_pair() -> Vec<usize> {
    // The goroutines that park (and stay parked): every waiting kind below, the two the RwLock
    // kind spawns and the join's target.
    const PARKED: usize = 17;
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = heap(&rt);
    let ty = record(&gc);
    // Bit i: the captures of the goroutine of kind i were dropped.
    let drops = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let ch = Chan::<u32>::new(0);
    // Held by the goroutines that wait on them first, so that later ones park: the mutex by
    // one that then parks, the RwLock by a reader that parks (a writer then waits for it, a
    // reader behind the writer, a second writer on the writers' mutex).
    let mutex = Arc::new(Mutex::new(()));
    let rw = Arc::new(RwLock::new(()));
    let wg = Arc::new(WaitGroup::new());
    wg.add(1);
    struct Held(#[allow(dead_code)] Gc, Arc<std::sync::atomic::AtomicU64>, usize);
    impl Drop for Held {
        fn drop(&mut self) {
            self.1.fetch_or(1 << self.2, Ordering::SeqCst);
        }
    }
    // A spinning goroutine, for one that suspends it: its id, once known.
    let spinner = Arc::new(std::sync::Mutex::new(None));
    let (m1, m2, rw1, rw2, rw3, rw4, wg1) =
        (mutex.clone(), mutex.clone(), rw.clone(), rw.clone(), rw.clone(), rw.clone(), wg.clone());
    let (c1, c2, c3, sp1, sp2) = (ch.clone(), ch.clone(), ch.clone(), spinner.clone(), spinner);
    // Kinds that must wait for an earlier one to hold something start in order: each says
    // (with the counter) that it holds it.
    let holding = Arc::new(AtomicUsize::new(0));
    let (h1, h2, h3, h4, h5) =
        (holding.clone(), holding.clone(), holding.clone(), holding.clone(), holding);
    let wait_holding = move |h: &AtomicUsize, n: usize| {
        while h.load(Ordering::SeqCst) < n {
            yield_now();
        }
    };
    let kinds: Vec<Kind> = vec![
        Box::new(move |_| {
            let _ = c1.recv();
        }),
        Box::new(move |_| c2.send(1)),
        Box::new(move |_| {
            let _g = m1.lock();
            h1.fetch_add(1, Ordering::SeqCst);
            park(WaitReason::Park, |_| true);
        }),
        Box::new(move |_| {
            wait_holding(&h2, 1);
            let _g = m2.lock();
        }),
        Box::new(|_| {
            let (m, c) = (Mutex::new(()), Cond::new());
            let g = m.lock();
            let _g = c.wait(g);
        }),
        Box::new(move |_| {
            let _r = rw1.read();
            h3.fetch_add(1, Ordering::SeqCst);
            park(WaitReason::Park, |_| true);
        }),
        Box::new(move |_| {
            wait_holding(&h4, 2);
            // Each of these parks on the RwLock: a writer waiting for the reader above, then
            // (they race) a reader behind it and a second writer.
            // (`try_go`: the runtime may already be shutting down, refusing spawns.)
            let r2 = rw2.clone();
            let _a = try_go(move || drop(r2.write()));
            let r3 = rw3.clone();
            let _b = try_go(move || drop(r3.read()));
            drop(rw4.write());
        }),
        Box::new(move |_| wg1.wait()),
        Box::new(move |_| {
            Select::new().recv(&c3, |_| ()).timeout(Duration::from_secs(3600), || ()).wait();
        }),
        Box::new(|_| Select::<()>::new().wait()),
        Box::new(|_| sleep(Duration::from_secs(3600))),
        Box::new(|_| {
            let _ = safepoint_sched::after(Duration::from_secs(3600)).recv();
        }),
        Box::new(|_| {
            if let Ok(h) = try_go(|| park(WaitReason::Chan, |_| true)) {
                let _ = h.join();
            }
        }),
        Box::new(|_| park(WaitReason::RwLock, |_| true)),
        Box::new(move |_| {
            *sp1.lock().unwrap() = safepoint_sched::Goroutine::current();
            h5.fetch_add(1, Ordering::SeqCst);
            loop {
                poll();
            }
        }),
        Box::new(|_| {
            loop {
                // A stretch with no safepoint: a stop or a stack scan that comes meanwhile
                // holds the goroutine with the preemption signal.
                let mut x = 1u64;
                for _ in 0..20_000 {
                    x = std::hint::black_box(x.wrapping_mul(3).wrapping_add(1));
                }
                poll();
            }
        }),
        Box::new(move |_| {
            // Holds the spinning goroutine stopped most of the time: a while (polling), then
            // lets it go a moment, and again.
            let target = loop {
                if let Some(g) = *sp2.lock().unwrap() {
                    break g;
                }
                yield_now();
            };
            loop {
                let held = suspend_g(target);
                for _ in 0..1_000 {
                    poll();
                }
                drop(held);
                yield_now();
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
        Box::new(move |g| churn(g, ty)),
    ];
    let n = kinds.len();
    for (i, k) in kinds.into_iter().enumerate() {
        let held = Held(gc.clone(), drops.clone(), i);
        let s = started.clone();
        rt.spawn(move || {
            // Yield until all have started (a goroutine looping on blocking calls keeps its
            // P across short calls, and the others would wait behind it).
            s.fetch_add(1, Ordering::SeqCst);
            while s.load(Ordering::SeqCst) < n {
                yield_now();
            }
            k(&held.0);
            drop(held);
        })
        .unwrap();
    }
    wait_for(&started, n);
    // Let the waiting kinds park (most do within a few time slices: six of the kinds keep the
    // two Ps busy; the drop must cope with any state anyway, so after a bound it goes on).
    let parked =
        |rt: &Runtime| rt.goroutines().iter().filter(|g| g.status().starts_with("Waiting")).count();
    let t0 = std::time::Instant::now();
    while parked(&rt) < PARKED && t0.elapsed() < Duration::from_millis(300) {
        std::thread::yield_now();
    }
    drop(rt);
    drop(gc);
    drop((ch, mutex, rw, wg));
    let dropped = drops.load(Ordering::SeqCst);
    (0..n).filter(|i| dropped & (1 << i) == 0).collect()
}

/// Issue 25: pairs made and dropped with goroutines alive in every state. Each pair's
/// goroutines are unwound (every captured `Gc` clone is dropped), and the heap's reservation
/// (256 GiB of address space) and the runtime's stacks and threads go back: the address space
/// and resident memory after the last pair are within twice what they were after the tenth.
fn pairs_keep_memory_flat(pairs: usize) {
    let mut at_ten = (0, 0);
    for i in 1..=pairs {
        // The hang guard is per pair: the run's length grows with the pairs and with the
        // machine's load (a release build made 500 pairs in about 5 minutes on a 2-core
        // machine at a load average near 20, so the 10,000 outlived a whole-run bound).
        let missed = must_finish(&format!("pair {i}"), 300, one_pair);
        assert!(
            missed.is_empty(),
            "pair {i}: the captured heap of the goroutines of kinds {missed:?} was not dropped"
        );
        if i == 10 {
            at_ten = vm();
        }
        if i % 500 == 0 {
            eprintln!("VmSize/VmRSS after pair {i}: {:?}", vm());
        }
    }
    let end = vm();
    eprintln!("VmSize/VmRSS after pair 10: {at_ten:?}; after pair {pairs}: {end:?}");
    assert!(end.0 <= 2 * at_ten.0, "address space grew: {at_ten:?} -> {end:?}");
    assert!(end.1 <= 2 * at_ten.1, "resident memory grew: {at_ten:?} -> {end:?}");
}

/// A cleanup that waits (here on a channel nobody else holds) when its runtime is dropped is
/// unwound with the rest: the heap's cleanup goroutine passed the shutdown's unwind to its
/// catch of panicking cleanups, counted it as one ("a cleanup panicked") and went on to wait
/// for more cleanups, where it was abandoned.
#[test]
fn a_cleanup_waiting_when_its_runtime_is_dropped_is_unwound_not_counted_as_a_panic() {
    must_finish("a cleanup waiting at shutdown", 120, || {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let gc = heap(&rt);
        let ty = record(&gc);
        let waiting = Arc::new(AtomicUsize::new(0));
        let (g, w) = (gc.clone(), waiting.clone());
        rt.block_on(move || {
            let mut m = Mutator::new(&g).unwrap();
            m.scope(|m, [a]| {
                m.alloc(a, ty).unwrap();
                let ch = Chan::<()>::new(0);
                m.add_cleanup(a, move || {
                    w.fetch_add(1, Ordering::SeqCst);
                    let _ = ch.recv();
                })
                .unwrap();
            });
        });
        // The object is unreachable: a cycle queues its cleanup, which the cleanup goroutine
        // runs (and which then waits for good).
        // Each collection waits for its cycle; the cleanup's own count is the event.
        while waiting.load(Ordering::SeqCst) == 0 {
            gc.collect();
            std::thread::yield_now();
        }
        drop(rt);
        assert_eq!(gc.weak_stats().cleanups_panicked, 0, "the shutdown's unwind was counted");
    });
}

/// Issue 25: a heap whose last `Gc` is dropped unmaps its whole reservation (the typed
/// arenas' 256 GiB of address space, the page map, the arenas), with its runtime still alive.
#[test]
fn a_heap_whose_last_gc_is_dropped_unmaps_its_reservation() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let before = vm().0;
    let gc = heap(&rt);
    let ty = record(&gc);
    let reserved = vm().0.saturating_sub(before);
    assert!(reserved >= 1 << 30, "the heap reserved only {reserved} bytes");
    let g2 = gc.clone();
    rt.block_on(move || {
        let mut m = Mutator::new(&g2).unwrap();
        m.scope(|m, [head, node]| {
            for i in 0..10_000 {
                m.alloc(node, ty).unwrap();
                m.write_word(node, 1, i).unwrap();
                m.store(node, 0, head).unwrap();
                m.copy(head, node).unwrap();
            }
        });
        m.collect();
    });
    drop(gc);
    // The background sweeper may hold the heap for a moment longer: wait for the unmapping.
    must_finish("the heap's unmapping", 60, move || {
        while vm().0 > before + reserved / 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    drop(rt);
}

/// The suite's share: each pair has twenty goroutines in every state, and a debug build on a
/// loaded 2-core machine makes about three a second.
#[test]
fn two_hundred_pairs_dropped_with_live_goroutines_keep_memory_flat() {
    pairs_keep_memory_flat(200);
}

/// The full count of the issue; too long for the suite on a 2-core machine, and for nextest's
/// 5-minute limit (run it with `cargo test --release -p safepoint-gc --test shutdown --
/// --ignored`: about an hour in a debug build, half that in a release one).
#[test]
#[ignore = "long: fifty times the 200-pair test"]
fn ten_thousand_pairs_dropped_with_live_goroutines_keep_memory_flat() {
    pairs_keep_memory_flat(10_000);
}
