//! Weak handles, weak fields and cleanups, in both collector modes with checkmark and poison:
//! the shapes of Go's `TestWeakPointer*` (weak/pointer_test.go) and `TestCleanup*`
//! (runtime/mcleanup_test.go), and races of weak reads against the marker and the sweeper.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use safepoint_gc::{Gc, GcError, Global, Mutator, RawMutator, Shape, TypeDesc, TypeId, WordKind};
use safepoint_sched::{Chan, Runtime, Select};

/// Both modes, each with checkmark and poison (a read that returned a freed object would
/// find the poison pattern and panic; a reachable object left unmarked aborts checkmark).
fn heaps(rt: &Runtime) -> Vec<(&'static str, Gc)> {
    ["concurrent", "stop-the-world"]
        .into_iter()
        .map(|mode| {
            let gc = Gc::builder()
                .stop_the_world(mode == "stop-the-world")
                .checkmark(true)
                .poison(true)
                .build(rt)
                .unwrap();
            (mode, gc)
        })
        .collect()
}

/// A record of one raw word (the object's identity) and one reference.
fn pair(gc: &Gc) -> TypeId {
    gc.types().lookup("wpair").unwrap_or_else(|| {
        gc.types()
            .register(TypeDesc::Record {
                name: "wpair".into(),
                words: vec![WordKind::Raw, WordKind::Ref],
            })
            .unwrap()
    })
}

/// A record type with a weak word and a strong one, registered once per heap.
fn holder(gc: &Gc) -> TypeId {
    gc.types().lookup("wholder").unwrap_or_else(|| {
        gc.types()
            .register(TypeDesc::Record {
                name: "wholder".into(),
                words: vec![WordKind::Weak, WordKind::Ref],
            })
            .unwrap()
    })
}

/// Events that cleanups (or goroutines) raise and a goroutine waits for: a channel with room
/// for every raise of a test, so a raise never blocks the cleanup goroutine.
#[derive(Clone)]
struct Events(Chan<()>);

impl Events {
    fn new() -> Events {
        Events(Chan::new(1024))
    }

    fn raise(&self) {
        self.0.send(());
    }

    /// Waits for `n` raises (on a goroutine); the deadline (10 s) only turns a hang into a
    /// failure naming `what`.
    fn wait(&self, n: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in 0..n {
            let got =
                Select::new().recv(&self.0, |r| r.is_ok()).deadline(deadline, || false).wait();
            assert!(got, "timed out waiting for {what} ({i} of {n} seen)");
        }
    }
}

/// Go's TestWeakPointer: a handle reads the object while it is reachable and nil after a
/// collection once it is not; two handles to one object are the same.
#[test]
fn a_weak_handle_reads_its_object_until_it_is_found_unreachable() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    for (mode, gc) in heaps(&rt) {
        let ty = pair(&gc);
        let g = gc.clone();
        rt.block_on(move || {
            let mut m = Mutator::new(&g).unwrap();
            m.scope(|m, [a, b, w, w2, got]| {
                m.alloc(a, ty).unwrap();
                m.write_word(a, 0, 7).unwrap();
                m.alloc(b, ty).unwrap();
                m.store(a, 1, b).unwrap();
                m.weak(w, a).unwrap();
                m.weak(w2, a).unwrap();
                assert!(m.same(w, w2).unwrap(), "{mode}: one handle per object");
                assert!(m.is_weak(w).unwrap() && !m.is_weak(a).unwrap());
                m.clear(w2).unwrap();
                m.clear(b).unwrap();
                m.collect();
                assert!(m.deref(got, w).unwrap(), "{mode}: reachable, so alive");
                assert!(m.same(got, a).unwrap());
                assert_eq!(m.read_word(got, 0).unwrap(), 7);
                m.clear(a).unwrap();
                m.clear(got).unwrap();
                m.collect();
                assert!(!m.deref(got, w).unwrap(), "{mode}: unreachable, so nil");
                assert!(m.is_null(got).unwrap());
                // Still nil after further cycles, and the handle itself lives on.
                m.collect();
                assert!(!m.deref(got, w).unwrap());
            });
        });
        assert_eq!(gc.weak_stats().cleared, 1, "{mode}");
        assert_eq!(gc.weak_stats().handles, 0, "{mode}");
    }
}

/// Reading a handle before the sweep has reached the object's span says nil too: the object
/// was found unreachable at mark termination, and its cell is "doomed" until its sweep. A
/// stop-the-world heap with one P collects on the allocating goroutine and leaves the sweep
/// to the background sweeper, which cannot run before this goroutine yields: the reads right
/// after the cycle find the spans unswept.
#[test]
fn a_handle_is_nil_between_mark_termination_and_its_sweep() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder()
        .stop_the_world(true)
        .checkmark(true)
        .poison(true)
        .min_heap(1 << 20)
        .ignore_env()
        .build(&rt)
        .unwrap();
    let ty = pair(&gc);
    let g = gc.clone();
    let doomed_rounds = rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        let mut doomed_rounds = 0;
        m.scope(|m, [a, w, got, junk]| {
            for _ in 0..5 {
                // Many objects with handles, in many spans; every other one kept.
                let mut kept = Vec::new();
                let handles: Vec<(Global, bool)> = (0..3000)
                    .map(|i| {
                        m.alloc(a, ty).unwrap();
                        m.weak(w, a).unwrap();
                        if i % 2 == 0 {
                            kept.push(m.new_global(a).unwrap());
                        }
                        (m.new_global(w).unwrap(), i % 2 == 0)
                    })
                    .collect();
                m.clear(a).unwrap();
                m.clear(w).unwrap();
                // Allocate until a cycle runs here, then read at once.
                let c0 = g.cycles();
                while g.cycles() == c0 {
                    m.alloc(junk, ty).unwrap();
                }
                let unswept = g.phase() == safepoint_gc::Phase::Sweep;
                for (h, keep) in &handles {
                    m.load_global(w, h).unwrap();
                    assert_eq!(m.deref(got, w).unwrap(), *keep, "kept: {keep}");
                }
                if unswept && g.phase() == safepoint_gc::Phase::Sweep {
                    doomed_rounds += 1;
                }
                m.clear(got).unwrap();
                drop(kept);
            }
        });
        doomed_rounds
    });
    // The point of the test: some rounds read while the sweep was still to come.
    assert!(doomed_rounds > 0, "no round read before the sweep ended");
}

/// A weak field stores the object's handle and loads the object, or null once it is gone.
#[test]
fn a_weak_field_loads_its_object_or_null() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    for (mode, gc) in heaps(&rt) {
        let (ty, holder) = (pair(&gc), holder(&gc));
        let g = gc.clone();
        rt.block_on(move || {
            let mut m = Mutator::new(&g).unwrap();
            m.scope(|m, [h, a, b, got, n]| {
                m.alloc(h, holder).unwrap();
                m.alloc(a, ty).unwrap();
                m.alloc(b, ty).unwrap();
                m.store(h, 0, a).unwrap();
                m.store(h, 1, b).unwrap();
                m.load(got, h, 0).unwrap();
                assert!(m.same(got, a).unwrap());
                // An immediate is refused; null is accepted.
                m.set_int(n, 3).unwrap();
                assert!(matches!(m.store(h, 0, n), Err(GcError::NotAReference { .. })));
                m.collect();
                m.load(got, h, 0).unwrap();
                assert!(m.same(got, a).unwrap(), "{mode}: still reachable from `a`");
                m.clear(a).unwrap();
                m.clear(got).unwrap();
                m.collect();
                m.load(got, h, 0).unwrap();
                assert!(m.is_null(got).unwrap(), "{mode}: the weak field does not keep it");
                m.load(got, h, 1).unwrap();
                assert!(m.same(got, b).unwrap(), "{mode}: the strong field does");
                m.clear(n).unwrap();
                m.store(h, 0, n).unwrap();
                m.load(got, h, 0).unwrap();
                assert!(m.is_null(got).unwrap());
            });
        });
    }
}

/// The trusted path's read of a weak field (`Pin::weak_word`, as compiled code reads one):
/// null for a null word, the object while it is reachable, null once a collection has found
/// it unreachable.
#[test]
fn a_weak_word_reads_on_the_trusted_path() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    for (mode, gc) in heaps(&rt) {
        let (ty, holder) = (pair(&gc), holder(&gc));
        let (hs, ts) = (Shape::new(&gc, holder, 0).unwrap(), Shape::new(&gc, ty, 0).unwrap());
        let g = gc.clone();
        rt.block_on(move || {
            let mut raw = RawMutator::new(&g).unwrap();
            let (hg, ag) = raw
                .enter(|p| {
                    let (h, _) = p.alloc(hs).unwrap();
                    let (a, _) = p.alloc(ts).unwrap();
                    // SAFETY: `h` and `a` are objects of this section; word 0 of `h` is weak.
                    unsafe {
                        assert_eq!(p.weak_word(h, 0), 0, "{mode}: a null weak word");
                        let (w, _) = p.weak(a).unwrap();
                        p.set_word(h, 0, WordKind::Weak, w & !p.tag_rule().mask);
                        assert_eq!(p.weak_word(h, 0), a, "{mode}");
                    }
                    (p.new_global(h).unwrap(), p.new_global(a).unwrap())
                })
                .unwrap();
            raw.after_slow_alloc();
            g.collect();
            raw.enter(|p| {
                let (h, a) = (p.global(&hg).unwrap(), p.global(&ag).unwrap());
                // SAFETY: `h` is held by a global.
                assert_eq!(unsafe { p.weak_word(h, 0) }, a, "{mode}: still held");
            })
            .unwrap();
            drop(ag);
            g.collect();
            g.collect();
            raw.enter(|p| {
                let h = p.global(&hg).unwrap();
                // SAFETY: as above.
                assert_eq!(unsafe { p.weak_word(h, 0) }, 0, "{mode}: found unreachable");
            })
            .unwrap();
        });
    }
}

/// Misuse is an error: a handle read from an object that is no handle, a handle of an
/// immediate, the reserved name taken by another type.
#[test]
fn bad_weak_inputs_are_errors() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder().build(&rt).unwrap();
    let ty = pair(&gc);
    let g = gc.clone();
    rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        m.scope(|m, [a, w, n]| {
            m.alloc(a, ty).unwrap();
            m.set_int(n, 1).unwrap();
            assert!(matches!(m.weak(w, n), Err(GcError::NotAReference { .. })));
            m.weak(w, a).unwrap();
            assert!(matches!(m.deref(n, a), Err(GcError::WrongKind { .. })));
            assert!(matches!(m.deref(w, n), Err(GcError::NotAReference { .. })));
        });
    });
    let gc2 = Gc::builder().build(&rt).unwrap();
    gc2.types()
        .register(TypeDesc::Record {
            name: safepoint_gc::WEAK_TYPE_NAME.into(),
            words: vec![WordKind::Ref],
        })
        .unwrap();
    let ty2 = pair(&gc2);
    rt.block_on(move || {
        let mut m = Mutator::new(&gc2).unwrap();
        m.scope(|m, [a, w]| {
            m.alloc(a, ty2).unwrap();
            assert!(matches!(m.weak(w, a), Err(GcError::WrongKind { .. })));
        });
    });
}

/// Go's TestCleanup, TestCleanupMultiple and TestCleanupStop*: each cleanup of an object runs
/// exactly once after it is found unreachable, never before; one that panics does not stop
/// the others; a cancelled one never runs, and one that ran cannot be cancelled.
/// A weak handle's word (its object's address) is the collector's: neither the checked path
/// nor a shape (the sections' and the raw path's allocations) can write one or make an
/// object of the handles' type, so no handle can be pointed at an address of the caller's
/// choosing and then read as a reference to it.
#[test]
fn a_handle_cannot_be_forged_or_redirected() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder().build(&rt).unwrap();
    let ty = pair(&gc);
    let g = gc.clone();
    rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        m.scope(|m, [a, w, out]| {
            m.alloc(a, ty).unwrap();
            m.weak(w, a).unwrap();
            let cell = m.type_of(w).unwrap();
            assert_eq!(g.types().lookup(safepoint_gc::WEAK_TYPE_NAME), Some(cell));
            // Redirecting the handle to another address.
            assert!(matches!(m.write_word(w, 0, 0x1000), Err(GcError::WrongKind { .. })));
            assert!(matches!(m.write_f64(w, 0, 1.0), Err(GcError::WrongKind { .. })));
            assert!(m.deref(out, w).unwrap());
            assert!(m.same(out, a).unwrap()); // still its object
            // A handle made by hand.
            assert!(matches!(m.alloc(out, cell), Err(GcError::WrongKind { .. })));
            assert!(matches!(Shape::new(&g, cell, 0), Err(GcError::WrongKind { .. })));
        });
    });
}

#[test]
fn cleanups_run_once_after_their_object_is_unreachable() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    for (mode, gc) in heaps(&rt) {
        let ty = pair(&gc);
        let ran = Arc::new(Mutex::new(Vec::<u32>::new()));
        let g = gc.clone();
        let r = ran.clone();
        rt.block_on(move || {
            let ev = Events::new();
            let mut m = Mutator::new(&g).unwrap();
            m.scope(|m, [a, b]| {
                m.alloc(a, ty).unwrap();
                m.alloc(b, ty).unwrap();
                let push = |i: u32| {
                    let (r, ev) = (r.clone(), ev.clone());
                    move || {
                        r.lock().unwrap().push(i);
                        ev.raise();
                    }
                };
                let ran_one = m.add_cleanup(a, push(0)).unwrap();
                for i in 1..3 {
                    m.add_cleanup(a, push(i)).unwrap();
                }
                m.add_cleanup(a, || panic!("a cleanup that panics")).unwrap();
                let cancelled = m.add_cleanup(a, push(99)).unwrap();
                m.add_cleanup(b, push(10)).unwrap();
                assert!(cancelled.cancel());
                assert!(!cancelled.cancel(), "cancelled once only");
                m.collect();
                // No event can show that a cleanup does not run: give a wrong one time to.
                safepoint_sched::sleep(Duration::from_millis(20));
                assert!(r.lock().unwrap().is_empty(), "{mode}: both objects are reachable");
                m.clear(a).unwrap();
                m.collect();
                ev.wait(3, "the cleanups of `a`");
                // Go's TestCleanupStopAfterCleanupRuns: too late to cancel one that ran.
                assert!(!ran_one.cancel(), "{mode}: a cleanup that ran was cancelled");
                let mut got = r.lock().unwrap().clone();
                got.sort();
                assert_eq!(got, vec![0, 1, 2], "{mode}");
                // More cycles run nothing again, and `b` stays.
                m.collect();
                m.collect();
                safepoint_sched::sleep(Duration::from_millis(20));
                assert_eq!(r.lock().unwrap().len(), 3, "{mode}");
                m.clear(b).unwrap();
                m.collect();
                ev.wait(1, "the cleanup of `b`");
                assert_eq!(r.lock().unwrap().len(), 4, "{mode}");
            });
        });
        // The cleanup goroutine counts a cleanup as run just after it returns (after its
        // event): the count may trail the event by that one step.
        let t = Instant::now();
        while gc.weak_stats().cleanups_run < 5 && t.elapsed() < Duration::from_secs(10) {
            std::thread::yield_now();
        }
        let s = gc.weak_stats();
        assert_eq!(s.cleanups_queued, 5, "{mode}");
        assert_eq!(s.cleanups_run, 5, "{mode}");
        assert_eq!(s.cleanups_panicked, 1, "{mode}");
    }
}

/// The typed form: a Rust resource owned by a managed object is dropped after the object.
#[test]
fn an_attached_resource_is_dropped_when_its_owner_dies() {
    struct Resource(Arc<AtomicUsize>, Events);
    impl Drop for Resource {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.raise();
        }
    }
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder().checkmark(true).build(&rt).unwrap();
    let ty = pair(&gc);
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    rt.block_on(move || {
        let ev = Events::new();
        let mut m = Mutator::new(&gc).unwrap();
        m.scope(|m, [a]| {
            for _ in 0..100 {
                m.alloc(a, ty).unwrap();
                m.attach(a, Resource(d.clone(), ev.clone())).unwrap();
            }
            m.collect();
            ev.wait(99, "99 resources dropped");
            assert_eq!(d.load(Ordering::SeqCst), 99, "the held object's resource stays");
            m.clear(a).unwrap();
            m.collect();
            ev.wait(1, "the last resource dropped");
        });
    });
    assert_eq!(dropped.load(Ordering::SeqCst), 100);
}

/// Go's TestCleanupAddsCleanup shape: cleanups that allocate, register cleanups and make
/// weak handles, on the cleanup goroutine.
#[test]
fn cleanups_may_allocate_add_cleanups_and_make_weak_handles() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    for (mode, gc) in heaps(&rt) {
        let ty = pair(&gc);
        let second = Arc::new(AtomicUsize::new(0));
        let g = gc.clone();
        let s = second.clone();
        rt.block_on(move || {
            let (first, again) = (Events::new(), Events::new());
            let mut m = Mutator::new(&g).unwrap();
            m.scope(|m, [a]| {
                for _ in 0..20 {
                    m.alloc(a, ty).unwrap();
                    let (g2, s2) = (g.clone(), s.clone());
                    let (first, again) = (first.clone(), again.clone());
                    m.add_cleanup(a, move || {
                        let mut m = Mutator::new(&g2).unwrap();
                        m.scope(|m, [x, w, got]| {
                            m.alloc(x, ty).unwrap();
                            m.weak(w, x).unwrap();
                            assert!(m.deref(got, w).unwrap());
                            let s3 = s2.clone();
                            m.add_cleanup(x, move || {
                                s3.fetch_add(1, Ordering::SeqCst);
                                again.raise();
                            })
                            .unwrap();
                        });
                        first.raise();
                    })
                    .unwrap();
                }
                m.clear(a).unwrap();
                m.collect();
                first.wait(20, "the first cleanups");
                m.collect();
                again.wait(20, "the cleanups the cleanups added");
            });
        });
        assert_eq!(second.load(Ordering::SeqCst), 20, "{mode}");
    }
}

/// Weak reads from many goroutines race the marker and the sweeper: a handle whose object is
/// held by a global always reads it (and its contents, which poison would have overwritten
/// had it been freed); once any goroutine has read nil for a handle, no goroutine reads its
/// object again; and after the readers stop, every dropped object's handle reads nil. An
/// object read during marking and kept only in the reader's slot must survive (the read
/// shades it): its contents are checked after allocations that run cycles.
#[test]
fn weak_reads_race_the_marker_and_the_sweeper() {
    let rt = Runtime::builder().procs(4).build().unwrap();
    for (mode, gc) in heaps(&rt) {
        let ty = pair(&gc);
        const N: usize = 400;
        let stop = Arc::new(AtomicBool::new(false));
        // Handles (in globals) and the objects' strong roots (half dropped along the way).
        let (handles, strong): (Vec<Global>, Vec<Global>) = {
            let g = gc.clone();
            rt.block_on(move || {
                let mut m = Mutator::new(&g).unwrap();
                m.scope(|m, [a, w]| {
                    (0..N)
                        .map(|i| {
                            m.alloc(a, ty).unwrap();
                            m.write_word(a, 0, i as u64).unwrap();
                            m.weak(w, a).unwrap();
                            (m.new_global(w).unwrap(), m.new_global(a).unwrap())
                        })
                        .unzip()
                })
            })
        };
        let handles = Arc::new(handles);
        let dropped: Arc<Vec<AtomicBool>> =
            Arc::new((0..N).map(|_| AtomicBool::new(false)).collect());
        let seen_nil: Arc<Vec<AtomicBool>> =
            Arc::new((0..N).map(|_| AtomicBool::new(false)).collect());
        // Raised by each reader once its slots hold no object.
        let done = Events::new();
        let readers: Vec<_> = (0..3)
            .map(|k| {
                let (gc, handles, stop, dropped, seen_nil) =
                    (gc.clone(), handles.clone(), stop.clone(), dropped.clone(), seen_nil.clone());
                let done = done.clone();
                rt.spawn(move || {
                    let mut m = Mutator::new(&gc).unwrap();
                    let mut reads = 0u64;
                    m.scope(|m, [w, got, junk]| {
                        let mut i = k;
                        // At least one read, however late this goroutine first runs.
                        while reads == 0 || !stop.load(Ordering::Relaxed) {
                            let nil_before = seen_nil[i].load(Ordering::SeqCst);
                            m.load_global(w, &handles[i]).unwrap();
                            if m.deref(got, w).unwrap() {
                                assert!(!nil_before, "{mode}: object {i} read again after nil");
                                // Kept only in a slot across allocations (and cycles).
                                for _ in 0..8 {
                                    m.alloc(junk, ty).unwrap();
                                }
                                assert_eq!(m.read_word(got, 0).unwrap(), i as u64);
                            } else {
                                assert!(
                                    dropped[i].load(Ordering::SeqCst),
                                    "{mode}: object {i} read nil while held"
                                );
                                seen_nil[i].store(true, Ordering::SeqCst);
                            }
                            reads += 1;
                            i = (i + 7) % N;
                        }
                        m.clear(got).unwrap();
                    });
                    done.raise();
                    reads
                })
                .unwrap()
            })
            .collect();
        // The main goroutine drops roots one by one while cycles run.
        let (g, dr, st, h) = (gc.clone(), dropped.clone(), stop.clone(), handles.clone());
        rt.block_on(move || {
            let mut m = Mutator::new(&g).unwrap();
            m.scope(|m, [n, junk, w, got]| {
                for (i, s) in strong.iter().enumerate() {
                    if i % 2 == 0 {
                        dr[i].store(true, Ordering::SeqCst);
                        m.store_global(s, n).unwrap();
                    }
                    for _ in 0..200 {
                        m.alloc(junk, ty).unwrap();
                    }
                    if i % 40 == 0 {
                        m.collect();
                    }
                }
                st.store(true, Ordering::SeqCst);
                // The readers' slots may still hold some: wait until they are cleared.
                done.wait(3, "the readers to stop");
                m.collect();
                m.collect();
                for (i, hd) in h.iter().enumerate() {
                    m.load_global(w, hd).unwrap();
                    assert_eq!(m.deref(got, w).unwrap(), i % 2 == 1, "{mode}: object {i}");
                }
                m.clear(got).unwrap();
            });
        });
        let reads: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(reads > 0);
        let s = gc.weak_stats();
        assert_eq!(s.handles, N / 2, "{mode}: the held objects' handles remain");
        assert_eq!(s.cleared as usize, N / 2, "{mode}");
    }
}

/// An ephemeron entry: a weak key and a value kept only while the key is reachable.
fn entry_type(gc: &Gc) -> TypeId {
    gc.types().lookup("entry").unwrap_or_else(|| {
        gc.types()
            .register(TypeDesc::Record {
                name: "entry".into(),
                words: vec![WordKind::Weak, WordKind::Ephemeron, WordKind::Ref],
            })
            .unwrap()
    })
}

/// A record with an ephemeron word needs a weak word for its key.
#[test]
fn an_ephemeron_word_without_a_key_is_refused() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder().build(&rt).unwrap();
    let e = gc
        .types()
        .register(TypeDesc::Record {
            name: "keyless".into(),
            words: vec![WordKind::Ref, WordKind::Ephemeron],
        })
        .unwrap_err();
    assert!(matches!(e, safepoint_gc::TypeError::EphemeronWithoutKey { .. }), "{e}");
}

/// An entry's value lives while its key is reachable from elsewhere, even when the value
/// references the key (the cycle a plain weak-keyed map would leak), and reads null after.
#[test]
fn an_ephemeron_value_lives_exactly_as_long_as_its_key() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    for (mode, gc) in heaps(&rt) {
        let (ty, entry) = (pair(&gc), entry_type(&gc));
        let g = gc.clone();
        rt.block_on(move || {
            let mut m = Mutator::new(&g).unwrap();
            m.scope(|m, [e, k, v, wv, got, n]| {
                m.alloc(e, entry).unwrap();
                m.alloc(k, ty).unwrap();
                m.alloc(v, ty).unwrap();
                m.store(v, 1, k).unwrap(); // the value references its key
                m.store(e, 0, k).unwrap();
                m.store(e, 1, v).unwrap();
                m.weak(wv, v).unwrap();
                m.clear(v).unwrap();
                m.collect();
                assert!(m.deref(n, wv).unwrap(), "{mode}: the key is held, so the value is");
                m.load(got, e, 1).unwrap();
                assert!(m.same(got, n).unwrap(), "{mode}: and reads through the entry");
                m.clear(n).unwrap();
                m.clear(got).unwrap();
                m.clear(k).unwrap();
                m.collect();
                assert!(!m.deref(got, wv).unwrap(), "{mode}: the key is gone, so the value is");
                m.load(got, e, 1).unwrap();
                assert!(m.is_null(got).unwrap(), "{mode}: the value reads null");
                // A new key does not revive the dead value.
                m.alloc(k, ty).unwrap();
                m.store(e, 0, k).unwrap();
                m.load(got, e, 1).unwrap();
                assert!(m.is_null(got).unwrap(), "{mode}");
                // A value stored before its key is held strongly until the key is set.
                m.alloc(e, entry).unwrap();
                m.alloc(v, ty).unwrap();
                m.store(e, 1, v).unwrap();
                m.weak(wv, v).unwrap();
                m.clear(v).unwrap();
                m.collect();
                assert!(m.deref(got, wv).unwrap(), "{mode}: no key yet, held");
            });
        });
    }
}

/// Lua's gc.lua ephemeron chains: entry i's value references key i + 1, and only key 0 is
/// held. Entries are made in reverse so that one pass over them finds one key at a time:
/// the marking must iterate to the fixed point and keep every value; once key 0 is dropped,
/// every value goes.
#[test]
fn ephemeron_chains_reach_the_fixed_point() {
    const N: usize = 200;
    let rt = Runtime::builder().procs(2).build().unwrap();
    for (mode, gc) in heaps(&rt) {
        let (ty, entry) = (pair(&gc), entry_type(&gc));
        let refs = gc.types().register(TypeDesc::RefArray { name: "entries".into() }).unwrap();
        let g = gc.clone();
        rt.block_on(move || {
            let mut m = Mutator::new(&g).unwrap();
            m.scope(|m, [table, keys, e, k, v, got, wv, vs]| {
                m.alloc_array(table, refs, N).unwrap();
                m.alloc_array(keys, refs, N + 1).unwrap();
                m.alloc_array(vs, refs, N).unwrap();
                for i in 0..=N {
                    m.alloc(k, ty).unwrap();
                    m.write_word(k, 0, i as u64).unwrap();
                    m.store(keys, i, k).unwrap();
                }
                for i in (0..N).rev() {
                    m.alloc(e, entry).unwrap();
                    m.load(k, keys, i).unwrap();
                    m.store(e, 0, k).unwrap();
                    m.alloc(v, ty).unwrap();
                    m.write_word(v, 0, 1000 + i as u64).unwrap();
                    m.load(k, keys, i + 1).unwrap();
                    m.store(v, 1, k).unwrap();
                    m.store(e, 1, v).unwrap();
                    m.weak(wv, v).unwrap();
                    m.store(vs, i, wv).unwrap();
                    m.store(table, i, e).unwrap();
                }
                // Hold key 0 only.
                m.load(k, keys, 0).unwrap();
                m.clear(keys).unwrap();
                m.clear(v).unwrap();
                m.clear(e).unwrap();
                m.collect();
                // The rounds follow a chain to its end whatever the entries' order: not one
                // round per link.
                let rounds = g.weak_stats().ephemeron_rounds;
                assert!(rounds <= 4, "{mode}: {rounds} ephemeron rounds for one chain");
                for i in 0..N {
                    m.load(e, table, i).unwrap();
                    m.load(got, e, 1).unwrap();
                    assert_eq!(m.read_word(got, 0).unwrap(), 1000 + i as u64, "{mode}: value {i}");
                }
                m.clear(e).unwrap();
                m.clear(got).unwrap();
                m.clear(k).unwrap();
                m.collect();
                for i in 0..N {
                    m.load(wv, vs, i).unwrap();
                    assert!(!m.deref(got, wv).unwrap(), "{mode}: value {i} outlived its key");
                    m.load(e, table, i).unwrap();
                    m.load(got, e, 1).unwrap();
                    assert!(m.is_null(got).unwrap());
                }
            });
        });
    }
}

/// Chains rebuilt and read while collections run by themselves (concurrent marking, with
/// checkmark and poison): a value read through a held key must be intact.
#[test]
fn ephemeron_chains_survive_concurrent_marking() {
    const N: usize = 300;
    let rt = Runtime::builder().procs(4).build().unwrap();
    let gc = Gc::builder().checkmark(true).poison(true).min_heap(256 << 10).build(&rt).unwrap();
    let (ty, entry) = (pair(&gc), entry_type(&gc));
    let refs = gc.types().register(TypeDesc::RefArray { name: "entries".into() }).unwrap();
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let g = gc.clone();
            rt.spawn(move || {
                let mut m = Mutator::new(&g).unwrap();
                m.scope(|m, [table, keys, e, k, v, got, junk]| {
                    for round in 0..8u64 {
                        m.alloc_array(table, refs, N).unwrap();
                        m.alloc_array(keys, refs, N + 1).unwrap();
                        for i in 0..=N {
                            m.alloc(k, ty).unwrap();
                            m.store(keys, i, k).unwrap();
                        }
                        for i in (0..N).rev() {
                            m.alloc(e, entry).unwrap();
                            m.load(k, keys, i).unwrap();
                            m.store(e, 0, k).unwrap();
                            m.alloc(v, ty).unwrap();
                            m.write_word(v, 0, round * 10_000 + i as u64).unwrap();
                            m.load(k, keys, i + 1).unwrap();
                            m.store(v, 1, k).unwrap();
                            m.store(e, 1, v).unwrap();
                            m.store(table, i, e).unwrap();
                            for _ in 0..4 {
                                m.alloc(junk, ty).unwrap();
                            }
                        }
                        m.load(k, keys, 0).unwrap();
                        m.clear(keys).unwrap();
                        m.clear(v).unwrap();
                        for _ in 0..3 {
                            for i in 0..N {
                                m.load(e, table, i).unwrap();
                                m.load(got, e, 1).unwrap();
                                assert_eq!(m.read_word(got, 0).unwrap(), round * 10_000 + i as u64);
                                for _ in 0..4 {
                                    m.alloc(junk, ty).unwrap();
                                }
                            }
                        }
                    }
                });
            })
            .unwrap()
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert!(gc.cycles() > 3, "collections ran: {}", gc.cycles());
}
