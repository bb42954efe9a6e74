//! Faults in goroutines that use the heap: a goroutine panicking while a concurrent cycle
//! marks, panicking right as it is resumed from a stack scan, overflowing its managed stack,
//! and running into the heap's hard limit. Every collection runs with checkmark (a reachable
//! object left unmarked aborts the process) and poison (a freed object read through a stale
//! reference panics) on; afterwards the heap must hold exactly what is still reachable, and the
//! other goroutines must have carried on.
//!
//! The panics here are deliberate; a panic hook keeps their messages out of the test output.
//! Every test runs its runtime under a watchdog that fails it if it has not finished within
//! two minutes (a failure guard only: nothing here measures time).

mod height;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once, mpsc};
use std::time::Duration;

use height::{build, check, expected, node_type};
use safepoint_gc::{AllocError, Gc, GcError, Global, Mutator, Phase, TypeDesc, TypeId, WordKind};
use safepoint_sched::{Runtime, go, yield_now};

/// The message of the deliberate panics.
const DELIBERATE: &str = "faults: deliberate panic";

fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let theirs = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg = p
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("");
            if !msg.starts_with(DELIBERATE) && !msg.contains("managed stack exceeds") {
                theirs(info)
            }
        }));
    });
}

/// Runs `f` on a thread; fails if it has not returned within two minutes.
fn must_finish<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(120)).expect("the test hung")
}

fn heap(rt: &Runtime, stop_the_world: bool) -> Gc {
    Gc::builder()
        .stop_the_world(stop_the_world)
        .checkmark(true)
        .poison(true)
        .min_heap(256 << 10)
        .ignore_env()
        .build(rt)
        .unwrap()
}

/// Nodes of a tree of depth `d`.
fn nodes(d: u32) -> u64 {
    (1 << (d + 1)) - 1
}

/// A long-lived tree of depth 8 (of node type `ty`) in a global, and a collector goroutine collecting back to back
/// until `stop`. Returns the global and the collector's handle.
fn survivors_and_collector(
    gc: &Gc,
    ty: TypeId,
    stop: &Arc<AtomicBool>,
) -> (Global, safepoint_sched::JoinHandle<u64>) {
    let mut m = Mutator::new(gc).unwrap();
    let g = m.scope(|m, [t]| {
        build(m, ty, 8, t);
        m.new_global(t).unwrap()
    });
    drop(m);
    let (gc, stop) = (gc.clone(), stop.clone());
    let collector = go(move || {
        let mut n = 0;
        // At least one cycle, however late this goroutine first runs; then until `stop`.
        // Relaxed: a flag; the join orders the rest.
        loop {
            gc.collect();
            n += 1;
            if stop.load(Ordering::Relaxed) {
                break n;
            }
        }
    });
    (g, collector)
}

/// After the faults: the survivors are intact and, once collected, the heap holds exactly
/// them.
fn verify_survivors(gc: &Gc, g: &Global) {
    let mut m = Mutator::new(gc).unwrap();
    m.scope(|m, [t]| {
        m.load_global(t, g).unwrap();
        assert_eq!(check(m, t), expected(8), "the long-lived tree is corrupt");
    });
    m.collect();
    drop(m);
    assert_eq!(
        gc.stats().heap.live_objects,
        nodes(8),
        "after the faults the heap must hold exactly the long-lived tree"
    );
}

/// A goroutine panics while a concurrent cycle is in its Mark phase, with references to a tree
/// of its own in its slots (and in the middle of nested scopes): the cycle completes (checkmark
/// passes), the goroutine's frames are dropped with it, its tree is freed by a later cycle,
/// and everything else survives. Twenty times, each panic seen to happen in Mark.
#[test]
fn goroutine_panicking_during_concurrent_marking() {
    quiet_deliberate_panics();
    must_finish(|| {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let gc = heap(&rt, false);
        let g2 = gc.clone();
        rt.block_on(move || {
            let gc = g2;
            let ty = node_type(&gc);
            let stop = Arc::new(AtomicBool::new(false));
            let (survivors, collector) = survivors_and_collector(&gc, ty, &stop);
            let mut in_mark = 0;
            while in_mark < 20 {
                let gc2 = gc.clone();
                let e = go(move || {
                    let mut m = Mutator::new(&gc2).unwrap();
                    m.scope(|m, [a]| {
                        build(m, ty, 6, a);
                        m.scope(|m, [b]| {
                            m.load(b, a, 0).unwrap();
                            // Wait, at safepoints, for a cycle to be marking.
                            while gc2.phase() != Phase::Mark {
                                m.poll();
                                yield_now();
                            }
                            panic!("{DELIBERATE}: in {:?}", gc2.phase());
                        })
                    })
                })
                .join()
                .unwrap_err();
                let msg = e.message().expect("a message").to_string();
                assert!(msg.starts_with(DELIBERATE), "{msg}");
                // The phase may have moved on between the look and the panic; count only those
                // that panicked in Mark.
                if msg.ends_with("in Mark") {
                    in_mark += 1;
                }
            }
            stop.store(true, Ordering::Relaxed);
            assert!(collector.join().unwrap() >= 1);
            verify_survivors(&gc, &survivors);
        });
    });
}

/// Goroutines that panic right after a safepoint at which a stack scan may have held them:
/// each builds a tree, polls (where the concurrent marker suspends it to scan its managed
/// stack), and panics at once, so many panics start the instant a scan resumes the goroutine,
/// and many scans find a goroutine in the middle of unwinding or exiting. Thousands of them on
/// both Ps, while collections run back to back in each collector mode: checkmark passes every
/// cycle, and afterwards the heap holds exactly the survivors.
#[test]
fn goroutines_panicking_as_stack_scans_resume_them_concurrent() {
    panicking_under_scans(false);
}

#[test]
fn goroutines_panicking_as_stack_scans_resume_them_stop_the_world() {
    panicking_under_scans(true);
}

fn panicking_under_scans(stop_the_world: bool) {
    quiet_deliberate_panics();
    let per_spawner = if cfg!(debug_assertions) { 300 } else { 2000 };
    must_finish(move || {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let gc = heap(&rt, stop_the_world);
        let g2 = gc.clone();
        let (cycles, caught) = rt.block_on(move || {
            let gc = g2;
            let ty = node_type(&gc);
            let stop = Arc::new(AtomicBool::new(false));
            let (survivors, collector) = survivors_and_collector(&gc, ty, &stop);
            let caught = Arc::new(AtomicU64::new(0));
            let spawners: Vec<_> = (0..4)
                .map(|_| {
                    let (gc, caught) = (gc.clone(), caught.clone());
                    go(move || {
                        for _ in 0..per_spawner {
                            let gc2 = gc.clone();
                            let h = go(move || {
                                let mut m = Mutator::new(&gc2).unwrap();
                                m.scope(|m, [t]| {
                                    build(m, ty, 3, t);
                                    m.poll();
                                    panic!("{DELIBERATE}");
                                })
                            });
                            let e = h.join().unwrap_err();
                            assert_eq!(e.message(), Some(DELIBERATE));
                            // Relaxed: a counter read after the joins.
                            caught.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for s in spawners {
                s.join().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
            let cycles = collector.join().unwrap();
            verify_survivors(&gc, &survivors);
            (cycles, caught.load(Ordering::Relaxed))
        });
        assert_eq!(caught, 4 * per_spawner, "every panic reaches its join handle");
        assert!(cycles >= 1, "no cycle completed");
        assert!(gc.cycles() >= cycles);
    });
}

/// A goroutine whose managed stack outgrows the runtime's limit in the middle of nested
/// mutator scopes panics with the limit in its message; its frames are dropped, the heap stays
/// consistent (checkmark on the cycles that run meanwhile), another goroutine keeps
/// allocating and collecting, and the goroutine's objects are freed.
#[test]
fn managed_stack_limit_in_nested_scopes_panics_that_goroutine_only() {
    quiet_deliberate_panics();
    must_finish(|| {
        let rt = Runtime::builder()
            .procs(2)
            .managed_stack_limit(64 << 10)
            .stack_size(2 << 20)
            .build()
            .unwrap();
        let gc = heap(&rt, false);
        let g2 = gc.clone();
        rt.block_on(move || {
            let gc = g2;
            let ty = node_type(&gc);
            let stop = Arc::new(AtomicBool::new(false));
            let (survivors, collector) = survivors_and_collector(&gc, ty, &stop);
            // Another goroutine keeps working meanwhile.
            let (gc3, stop3) = (gc.clone(), stop.clone());
            let worker = go(move || {
                let mut m = Mutator::new(&gc3).unwrap();
                let mut n = 0u64;
                m.scope(|m, [t]| {
                    while !stop3.load(Ordering::Relaxed) || n < 10 {
                        build(m, ty, 4, t);
                        assert_eq!(check(m, t), expected(4));
                        n += 1;
                    }
                });
                n
            });
            // Wide frames (64 slots, 512 bytes of managed stack a level), so the managed
            // limit comes long before the native stack's.
            fn deeper(m: &mut Mutator, ty: TypeId) -> u64 {
                m.scope_n(64, |m, s| {
                    m.alloc(s[0], ty).unwrap();
                    for i in 1..s.len() {
                        m.copy(s[i], s[0]).unwrap();
                    }
                    deeper(m, ty)
                })
            }
            let gc4 = gc.clone();
            let h = go(move || {
                let mut m = Mutator::new(&gc4).unwrap();
                deeper(&mut m, ty)
            });
            let id = h.id();
            let e = h.join().unwrap_err();
            assert_eq!(
                e.message(),
                Some(format!("goroutine {id}: managed stack exceeds 64 KiB").as_str()),
                "{e}"
            );
            stop.store(true, Ordering::Relaxed);
            assert!(worker.join().unwrap() >= 10);
            collector.join().unwrap();
            verify_survivors(&gc, &survivors);
        });
    });
}

/// A goroutine allocating (and keeping) 64 KiB chunks runs into the 8 MiB hard limit: it gets
/// an out-of-memory error (not a panic, not a hang); another goroutine allocating meanwhile
/// gets objects or the same error, and once the first lets go, allocates normally. (Without
/// polls between allocations, `bad_input.rs` tests the same limit.)
#[test]
fn hard_limit_out_of_memory_goes_to_the_allocating_goroutine_concurrent() {
    hard_limit(false);
}

#[test]
fn hard_limit_out_of_memory_goes_to_the_allocating_goroutine_stop_the_world() {
    hard_limit(true);
}

fn hard_limit(stop_the_world: bool) {
    must_finish(move || {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let gc = Gc::builder()
            .stop_the_world(stop_the_world)
            .hard_limit(8 << 20)
            .min_heap(1 << 20)
            .checkmark(true)
            .poison(true)
            .ignore_env()
            .build(&rt)
            .unwrap();
        let link = gc
            .types()
            .register(TypeDesc::Record { name: "link".into(), words: vec![WordKind::Ref; 2] })
            .unwrap();
        let chunk = gc.types().register(TypeDesc::ByteArray { name: "chunk".into() }).unwrap();
        let g2 = gc.clone();
        rt.block_on(move || {
            let gc = g2;
            let hog_done = Arc::new(AtomicBool::new(false));
            let (gc1, done1) = (gc.clone(), hog_done.clone());
            let hog = go(move || {
                let mut m = Mutator::new(&gc1).unwrap();
                let r = m.scope(|m, [head, node, data]| {
                    for n in 0..1000usize {
                        if let Err(e) = m.alloc_bytes(data, chunk, &[n as u8; 64 << 10]) {
                            return (n, e);
                        }
                        // The other goroutine may take the last bytes between the chunk and
                        // its node: either allocation can be the one that meets the limit.
                        if let Err(e) = m.alloc(node, link) {
                            return (n, e);
                        }
                        m.store(node, 0, head).unwrap();
                        m.store(node, 1, data).unwrap();
                        m.copy(head, node).unwrap();
                        m.poll();
                    }
                    panic!("8 MiB hard limit never reached");
                });
                done1.store(true, Ordering::Relaxed);
                r
            });
            let (gc2, done2) = (gc.clone(), hog_done.clone());
            let other = go(move || {
                let mut m = Mutator::new(&gc2).unwrap();
                m.scope(|m, [a]| {
                    while !done2.load(Ordering::Relaxed) {
                        match m.alloc(a, link) {
                            Ok(()) | Err(GcError::Alloc(AllocError::OutOfMemory { .. })) => {}
                            Err(e) => panic!("unexpected {e}"),
                        }
                        m.poll();
                    }
                });
            });
            let (chunks, err) = hog.join().unwrap();
            assert!(matches!(err, GcError::Alloc(AllocError::OutOfMemory { .. })), "{err:?}");
            assert!(err.to_string().starts_with("out of memory"), "a clear message: {err}");
            assert!((64..=128).contains(&chunks), "{chunks} chunks under an 8 MiB limit");
            other.join().unwrap();
            // The hog's chunks are garbage now: the heap is usable to the limit again.
            let mut m = Mutator::new(&gc).unwrap();
            m.scope(|m, [d]| {
                for i in 0..200u32 {
                    m.alloc_bytes(d, chunk, &[i as u8; 64 << 10]).unwrap();
                }
                assert!(m.bytes(d).unwrap().eq_bytes(&[199u8; 64 << 10]));
            });
        });
        assert!(gc.stats().heap.in_use_bytes <= 8 << 20, "{:?}", gc.stats().heap);
    });
}
