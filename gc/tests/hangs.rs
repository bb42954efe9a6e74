//! The collector's side of the hangs that programs nobody here wrote found (issue 18):
//! types registered while collections run, OS locks taken by goroutines between heap
//! operations while collections run, and allocation loops on every P under checkmark and
//! poison. Each ends by itself or fails at its own deadline with the goroutine dump.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
use safepoint_sched::Runtime;

/// How long a scenario may take before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(90);

/// Runs `body` on a goroutine of `rt` from a helper thread; fails with the goroutine dump if it
/// has not returned by [`DEADLINE`] (the runtime is then leaked: its Ms are stuck).
fn within_deadline<R: Send + 'static>(
    rt: Arc<Runtime>,
    what: &str,
    body: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    let r2 = rt.clone();
    std::thread::spawn(move || {
        let out = r2.block_on(body);
        let _ = tx.send(out);
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(out) => out,
        Err(_) => {
            let dump = rt.dump_goroutines();
            let stats = rt.stats();
            std::mem::forget(rt);
            panic!("{what}: no progress within {DEADLINE:?}\n{stats:?}\n{dump}");
        }
    }
}

/// A goroutine collecting in a loop until `stop`; returns how many cycles it ran.
fn collector_loop(gc: &Gc, stop: &Arc<AtomicBool>) -> safepoint_sched::JoinHandle<u64> {
    let (gc, stop) = (gc.clone(), stop.clone());
    safepoint_sched::go(move || {
        let mut n = 0;
        // At least one cycle, however late this goroutine first runs; then until `stop`.
        loop {
            gc.collect();
            n += 1;
            if stop.load(Ordering::Relaxed) {
                break n;
            }
        }
    })
}

/// Issue 18, item 5: four goroutines registering 2,500 types each while another collects in a
/// loop, at 3 Ps.
#[test]
fn types_registered_while_collections_run() {
    let rt = Arc::new(Runtime::builder().procs(3).schedcheck(true).build().unwrap());
    let gc = Gc::builder().build(&rt).unwrap();
    let cycles = within_deadline(rt, "registration under collections", move || {
        let stop = Arc::new(AtomicBool::new(false));
        let collector = collector_loop(&gc, &stop);
        let regs: Vec<_> = (0..4)
            .map(|k| {
                let gc = gc.clone();
                safepoint_sched::go(move || {
                    for i in 0..2_500 {
                        gc.types()
                            .register(TypeDesc::Record {
                                name: format!("t{k}_{i}"),
                                words: vec![WordKind::Ref, WordKind::Tagged],
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for r in regs {
            r.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert_eq!(gc.types().len(), 10_000);
        collector.join().unwrap()
    });
    assert!(cycles > 0);
}

/// Issue 18, item 2, through the collector: goroutines taking a `std::sync::Mutex` and
/// standard error's lock for short critical sections between heap operations, while another
/// collects in a loop (stacks scanned one goroutine at a time, one stop per cycle).
#[test]
fn os_locks_between_heap_operations_while_collections_run() {
    let rt = Arc::new(Runtime::builder().procs(3).schedcheck(true).build().unwrap());
    let gc = Gc::builder().build(&rt).unwrap();
    let pair = gc
        .types()
        .register(TypeDesc::Record { name: "pair".into(), words: vec![WordKind::Ref; 2] })
        .unwrap();
    let cycles = within_deadline(rt, "OS locks under collections", move || {
        let stop = Arc::new(AtomicBool::new(false));
        let collector = collector_loop(&gc, &stop);
        let lock = Arc::new(std::sync::Mutex::new(0u64));
        let workers: Vec<_> = (0..4)
            .map(|k| {
                let (gc, lock) = (gc.clone(), lock.clone());
                safepoint_sched::go(move || {
                    let mut m = Mutator::new(&gc).unwrap();
                    m.scope(|m, [a]| {
                        for i in 0..3_000u64 {
                            m.alloc(a, pair).unwrap();
                            if k % 2 == 0 {
                                let mut g = lock.lock().unwrap();
                                *g += i;
                                spin_for(10_000);
                            } else {
                                use std::io::Write;
                                let mut e = std::io::stderr().lock();
                                spin_for(10_000);
                                let _ = e.write_all(b"");
                            }
                        }
                    });
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        collector.join().unwrap()
    });
    assert!(cycles > 0);
}

/// Issue 18, item 4: allocation loops on every P but one, under checkmark and poison, with
/// collections running: the phase stayed Mark for minutes after some tens of cycles. At 3 and
/// 4 Ps.
fn allocation_loops_under_collections(procs: usize) {
    const ROUNDS: u64 = 600;
    let rt = Arc::new(Runtime::builder().procs(procs).schedcheck(true).build().unwrap());
    let gc = Gc::builder().checkmark(true).poison(true).build(&rt).unwrap();
    let pair = gc
        .types()
        .register(TypeDesc::Record { name: "pair".into(), words: vec![WordKind::Ref; 2] })
        .unwrap();
    let made = Arc::new(AtomicU64::new(0));
    let m2 = made.clone();
    let cycles = within_deadline(rt, "allocation loops under collections", move || {
        let stop = Arc::new(AtomicBool::new(false));
        let collector = collector_loop(&gc, &stop);
        let workers: Vec<_> = (0..procs - 1)
            .map(|_| {
                let (gc, made) = (gc.clone(), m2.clone());
                safepoint_sched::go(move || {
                    let mut m = Mutator::new(&gc).unwrap();
                    m.scope(|m, [a, b]| {
                        for _ in 0..ROUNDS {
                            // A list of 500 pairs, dropped and rebuilt.
                            m.clear(a).unwrap();
                            for _ in 0..500 {
                                m.alloc(b, pair).unwrap();
                                m.store(b, 0, a).unwrap();
                                m.copy(a, b).unwrap();
                            }
                            made.fetch_add(500, Ordering::Relaxed);
                        }
                    });
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        collector.join().unwrap()
    });
    assert_eq!(made.load(Ordering::Relaxed), ROUNDS * 500 * (procs as u64 - 1));
    assert!(cycles > 0);
}

#[test]
fn allocation_loops_on_every_p_but_one_under_checkmark_and_poison_3_procs() {
    allocation_loops_under_collections(3);
}

#[test]
fn allocation_loops_on_every_p_but_one_under_checkmark_and_poison_4_procs() {
    allocation_loops_under_collections(4);
}

/// Spins for about `ns` nanoseconds.
fn spin_for(ns: u64) {
    let t = std::time::Instant::now();
    while (t.elapsed().as_nanos() as u64) < ns {
        std::hint::spin_loop();
    }
}
