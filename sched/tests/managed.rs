//! The scheduler and the managed stacks together: frame pushes are preemption points, growth
//! is a CopyStack transition a suspender waits out, a held goroutine's stack is walked
//! precisely, and misuse (over the limit, use inside a blocking call) is a described panic.

use safepoint_sched::stackmap::{FuncDesc, Registry, Visitor};
use safepoint_sched::{
    Runtime, WaitReason, blocking, go, park, resume_g, stop_the_world, suspend_g,
    with_managed_stack, yield_now,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

fn rt(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).build().unwrap()
}

fn registry() -> (Arc<Registry>, safepoint_sched::stackmap::FuncId) {
    let reg = Registry::new();
    // 4 slots; at safepoint 0 slots 0 and 2 hold references, at safepoint 1 only slot 3.
    let f = reg
        .register(FuncDesc::new("f", 4, 0, 2).refs_at(0, &[0, 2]).refs_at(1, &[3]).line(0, 10))
        .unwrap();
    (Arc::new(reg), f)
}

/// Goroutines that never call `poll()` but push and pop frames are stopped at their pushes.
#[test]
fn frame_pushes_are_preemption_points() {
    let rt = rt(2);
    let (_reg, f) = registry();
    rt.block_on(move || {
        let stop = Arc::new(AtomicBool::new(false));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                go(move || {
                    with_managed_stack(|ms| {
                        while !stop.load(Ordering::Relaxed) {
                            ms.push(f);
                            // SAFETY: no collector scans this stack: only the test's walks read it.
                            unsafe { ms.set(1, 7) };
                            ms.pop();
                        }
                    })
                })
            })
            .collect();
        for _ in 0..50 {
            drop(stop_the_world("pushes"));
            yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
    });
}

struct Collect(Vec<(usize, usize, usize)>);
impl Visitor for Collect {
    fn reference(&mut self, slot: usize, word: &safepoint_stackmap::SlotWord) {
        self.0.push((0, slot, word.load(Ordering::Relaxed)));
    }
}

/// A suspended goroutine's managed stack is walked precisely: exactly the live reference slots
/// of each frame at its current safepoint.
#[test]
fn held_goroutine_stack_is_walked_precisely() {
    let rt = rt(2);
    let (reg, f) = registry();
    rt.block_on(move || {
        let token = Arc::new(Mutex::new(None));
        let t2 = token.clone();
        let h = go(move || {
            with_managed_stack(|ms| {
                ms.push(f); // outer frame, safepoint 1: slot 3 live
                // SAFETY: no collector scans this stack: only the test's walks read it.
                unsafe { ms.set(3, 0x3003) };
                // SAFETY: no collector scans this stack: only the test's walks read it.
                unsafe { ms.set(0, 0xdead) }; // dead at safepoint 1: must not be reported
                ms.set_safepoint(1);
                ms.push(f); // inner frame, safepoint 0: slots 0 and 2 live
                // SAFETY: no collector scans this stack: only the test's walks read it.
                unsafe { ms.set(0, 0x1000) };
                // SAFETY: no collector scans this stack: only the test's walks read it.
                unsafe { ms.set(1, 0xbeef) };
                // SAFETY: no collector scans this stack: only the test's walks read it.
                unsafe { ms.set(2, 0x1002) };
                park(WaitReason::Park, |r| {
                    *t2.lock().unwrap() = Some(r);
                    true
                });
                ms.pop();
                ms.pop();
            })
        });
        while token.lock().unwrap().is_none() {
            yield_now();
        }
        let s = suspend_g(h.goroutine());
        assert!(!s.dead());
        let mut c = Collect(Vec::new());
        s.walk_managed_stack(&reg, &mut c);
        let mut got: Vec<(usize, usize)> = c.0.iter().map(|&(_, slot, v)| (slot, v)).collect();
        got.sort();
        assert_eq!(got, vec![(0, 0x1000), (2, 0x1002), (3, 0x3003)]);
        assert_eq!(s.check_managed_stack(&reg).unwrap(), 2);
        let tb = s.traceback(&reg).unwrap().to_string();
        assert!(tb.contains('f'), "{tb}");
        resume_g(s);
        token.lock().unwrap().take().unwrap().ready();
        h.join().unwrap();
    });
}

/// A goroutine growing and shrinking its managed stack while others suspend and walk it: every
/// hold sees a consistent stack (the growth's CopyStack state is waited out).
#[test]
fn suspension_waits_out_stack_growth() {
    let rt = rt(2);
    let (reg, f) = registry();
    let reg2 = reg.clone();
    rt.block_on(move || {
        let stop = Arc::new(AtomicBool::new(false));
        let grower = {
            let stop = stop.clone();
            go(move || {
                with_managed_stack(|ms| {
                    while !stop.load(Ordering::Relaxed) {
                        for i in 0..2000 {
                            ms.push(f);
                            // SAFETY: no collector scans this stack: only the test's walks read it.
                            unsafe { ms.set(0, i) };
                            // SAFETY: no collector scans this stack: only the test's walks read it.
                            unsafe { ms.set(2, i + 1) };
                        }
                        for _ in 0..2000 {
                            ms.pop();
                        }
                        ms.shrink();
                    }
                })
            })
        };
        let mut frames_seen = 0;
        for _ in 0..300 {
            let s = suspend_g(grower.goroutine());
            let n = s.check_managed_stack(&reg2).expect("a held stack is consistent");
            let mut c = Collect(Vec::new());
            s.walk_managed_stack(&reg2, &mut c);
            assert_eq!(c.0.len(), 2 * n, "two live slots per frame");
            frames_seen += n;
            if n.is_multiple_of(3) {
                s.shrink_managed_stack();
            }
            resume_g(s);
            yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        grower.join().unwrap();
        assert!(frames_seen > 0, "never caught the goroutine with frames");
    });
    drop(reg);
}

#[test]
fn managed_stack_over_its_limit_panics_that_goroutine() {
    let rt = Runtime::builder().procs(1).managed_stack_limit(64 * 1024).build().unwrap();
    let (_reg, f) = registry();
    rt.block_on(move || {
        let h = go(move || {
            with_managed_stack(|ms| {
                loop {
                    ms.push(f)
                }
            })
        });
        let id = h.id();
        let e = h.join().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("goroutine {id} panicked: goroutine {id}: managed stack exceeds 64 KiB")
        );
        // Others carry on, and the G's stack is reusable.
        assert_eq!(
            go(move || with_managed_stack(|ms| {
                ms.push(f);
                ms.depth()
            }))
            .join()
            .unwrap(),
            1
        );
    });
    assert!(matches!(
        Runtime::builder().managed_stack_limit(usize::MAX).build(),
        Err(safepoint_sched::Error::Config(_))
    ));
}

#[test]
fn managed_stack_use_inside_a_blocking_call_panics() {
    let rt = rt(1);
    let (_reg, f) = registry();
    rt.block_on(move || {
        let e = go(move || {
            with_managed_stack(|ms| {
                blocking(|| {
                    for _ in 0..100_000 {
                        ms.push(f);
                    }
                })
            })
        })
        .join()
        .unwrap_err();
        assert!(e.to_string().contains("managed stack used inside a blocking call"), "{e}");
    });
}

/// Shrinking or releasing the managed stack inside a blocking call moves or frees its buffer,
/// which a collector may be reading there: refused as growth is (before, both went through).
#[test]
fn shrinking_or_releasing_the_managed_stack_inside_a_blocking_call_panics() {
    let rt = rt(1);
    let (_reg, f) = registry();
    rt.block_on(move || {
        for release in [false, true] {
            let e = go(move || {
                with_managed_stack(|ms| {
                    // A buffer that `shrink` would move: large, under a quarter used.
                    for _ in 0..10_000 {
                        ms.push(f);
                    }
                    for _ in 0..10_000 {
                        ms.pop();
                    }
                    blocking(|| if release { ms.release() } else { assert!(ms.shrink()) })
                })
            })
            .join()
            .unwrap_err();
            assert!(
                e.to_string().contains("managed stack used inside a blocking call"),
                "release {release}: {e}"
            );
        }
    });
}

/// Growing, shrinking or releasing the managed stack inside a `no_preempt` section (or a
/// pinned one, `pinned`) is a described panic: such code may hold pointers into the buffer.
#[test]
fn moving_the_managed_stack_inside_a_no_preempt_section_panics() {
    let rt = rt(1);
    let (_reg, f) = registry();
    rt.block_on(move || {
        for what in 0..3 {
            let e = go(move || {
                with_managed_stack(|ms| {
                    if what == 1 {
                        for _ in 0..10_000 {
                            ms.push(f);
                        }
                        for _ in 0..10_000 {
                            ms.pop();
                        }
                    }
                    let _np = safepoint_sched::no_preempt();
                    match what {
                        0 => {
                            for _ in 0..100_000 {
                                ms.push(f);
                            }
                        }
                        1 => {
                            ms.shrink();
                        }
                        _ => ms.release(),
                    }
                })
            })
            .join()
            .unwrap_err();
            assert!(e.to_string().contains("managed stack moved"), "case {what}: {e}");
        }
    });
}

/// With the embedder's registry, a goroutine's panic carries its managed-stack traceback, and a
/// goroutine dump shows the managed stacks of goroutines that are not running.
#[test]
fn panics_and_dumps_carry_managed_tracebacks() {
    let (reg, f) = registry();
    let rt = Runtime::builder().procs(2).registry(reg.clone()).build().unwrap();
    let e = rt
        .block_on(move || {
            go(move || {
                with_managed_stack(|ms| {
                    ms.push(f);
                    ms.push(f);
                    panic!("bad opcode");
                })
            })
            .join()
        })
        .unwrap_err();
    let tb = e.traceback().expect("a traceback");
    assert!(tb.contains("managed stack (2 frames)"), "{tb}");
    assert!(tb.contains("f at safepoint 0, line 10"), "{tb}");
    assert!(e.to_string().contains("panicked: bad opcode\ngoroutine"), "{e}");

    let token = Arc::new(Mutex::new(None));
    let t2 = token.clone();
    let h = rt
        .spawn(move || {
            with_managed_stack(|ms| {
                ms.push(f);
                park(WaitReason::Park, |r| {
                    *t2.lock().unwrap() = Some(r);
                    true
                });
                ms.pop();
            })
        })
        .unwrap();
    while token.lock().unwrap().is_none() {
        std::hint::spin_loop();
    }
    let dump = rt.dump_goroutines();
    assert!(dump.contains(&format!("goroutine {} [Waiting", h.id())), "{dump}");
    assert!(dump.contains("managed stack (1 frames)"), "{dump}");
    token.lock().unwrap().take().unwrap().ready();
    h.join().unwrap();
    // Without a registry: no traceback.
    let plain = Runtime::builder().procs(1).build().unwrap();
    let e = plain
        .block_on(move || {
            go(move || {
                with_managed_stack(|ms| {
                    ms.push(f);
                    panic!("x")
                })
            })
            .join()
        })
        .unwrap_err();
    assert!(e.traceback().is_none());
}
