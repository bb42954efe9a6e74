//! Branded sections (`SectionMutator`): every misuse the compiler cannot refuse is a
//! `GcError`, one test each, and after each the heap still works; and the values sections
//! keep in their frames, fields and globals survive concurrent collections on many goroutines
//! (run with `gcpoison` and `gccheckmark`, where a reference freed too early is a described
//! panic). The misuses the compiler refuses are in `tests/ui/section_*.rs`.

use safepoint_gc::{
    Gc, GcError, Global, Mutator, SectionMutator, Shape, TypeDesc, Value, WordKind,
};
use safepoint_sched::{Runtime, go};
use safepoint_stackmap::{FuncDesc, Registry};

/// A checked heap (poison, checkmark) on a 2-P runtime, and the shape of `pair` (a reference
/// word, a tagged word and a raw word).
fn heap() -> (Runtime, Gc, Shape) {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder().checkmark(true).poison(true).ignore_env().build(&rt).unwrap();
    let pair = gc
        .types()
        .register(TypeDesc::Record {
            name: "pair".into(),
            words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
        })
        .unwrap();
    let shape = Shape::new(&gc, pair, 0).unwrap();
    (rt, gc, shape)
}

/// Runs `f` with a section mutator on a goroutine of a fresh checked heap, then checks that
/// the heap still allocates, keeps a frame's value across a collection, and reads it back.
fn with_sections<T: Send + 'static>(
    f: impl FnOnce(&mut SectionMutator, &Shape, &Gc) -> T + Send + 'static,
) -> T {
    let (rt, gc, shape) = heap();
    let r = rt.block_on(move || {
        let mut m = SectionMutator::new(&gc).unwrap();
        let r = f(&mut m, &shape, &gc);
        m.push_frame(1).unwrap();
        m.enter(|s| {
            let seven = s.int(7).unwrap();
            let p = s.alloc_init(&shape, &[Value::nil(), seven]).unwrap();
            s.set_slot(0, p.value()).unwrap();
        })
        .unwrap();
        m.collect();
        let n = m
            .enter(|s| {
                let p = s.as_ref(s.slot(0).unwrap()).unwrap();
                s.as_int(s.get(p, &shape, 1).unwrap())
            })
            .unwrap();
        assert_eq!(n, Some(7));
        m.pop_frame().unwrap();
        r
    });
    drop(rt);
    r
}

#[test]
fn a_section_inside_a_section_is_nested_section() {
    with_sections(|m, shape, _| {
        let inner = m
            .enter(|s| {
                let p = s.alloc(shape).unwrap();
                let inner = m.enter(|_| ());
                // The outer section goes on after the refusal.
                assert!(s.get(p, shape, 0).unwrap().is_nil());
                inner
            })
            .unwrap();
        assert_eq!(inner, Err(GcError::NestedSection));
        // The flag is cleared when the section ends, by a panic too.
        assert_eq!(m.enter(|_| 1).unwrap(), 1);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            m.enter(|_| panic!("a section that panics")).unwrap();
        }));
        assert!(caught.is_err());
        assert_eq!(m.enter(|_| 2).unwrap(), 2);
    });
}

#[test]
fn a_slot_past_the_frame_is_slot_out_of_frame() {
    with_sections(|m, _, _| {
        m.push_frame(2).unwrap();
        m.enter(|s| {
            assert_eq!(s.slot(2), Err(GcError::SlotOutOfFrame { index: 2, slots: 2 }));
            let v = s.int(1).unwrap();
            assert_eq!(
                s.set_slot(usize::MAX, v),
                Err(GcError::SlotOutOfFrame { index: usize::MAX, slots: 2 })
            );
            assert!(s.set_slot(1, v).is_ok());
        })
        .unwrap();
        m.pop_frame().unwrap();
    });
}

#[test]
fn slots_with_no_section_frame_on_top_are_no_frame() {
    let reg = std::sync::Arc::new(Registry::new());
    let f = reg.register(FuncDesc::new("f", 2, 0, 1)).unwrap();
    let rt = Runtime::builder().procs(1).registry(reg).build().unwrap();
    let gc = Gc::new(&rt).unwrap();
    rt.block_on(move || {
        let mut m = SectionMutator::new(&gc).unwrap();
        // No frame at all.
        m.enter(|s| {
            assert_eq!(s.slot(0), Err(GcError::NoFrame));
            assert_eq!(s.set_slot(0, Value::nil()), Err(GcError::NoFrame));
            assert_eq!(s.pop_frame(), Err(GcError::NoFrame));
        })
        .unwrap();
        assert_eq!(m.pop_frame(), Err(GcError::NoFrame));
        // A section frame under a function frame pushed around the API: the section does not
        // take the function's slots for its own, and does not pop the function's frame.
        m.push_frame(1).unwrap();
        safepoint_sched::with_managed_stack(|ms| ms.push(f));
        m.enter(|s| {
            assert_eq!(s.slot(0), Err(GcError::NoFrame));
            assert_eq!(s.set_slot(1, s.int(3).unwrap()), Err(GcError::NoFrame));
        })
        .unwrap();
        assert_eq!(m.pop_frame(), Err(GcError::NoFrame));
        safepoint_sched::with_managed_stack(|ms| {
            assert_eq!(ms.get(1), 0); // untouched
            ms.pop();
        });
        m.pop_frame().unwrap();
        // Too many slots.
        assert!(matches!(m.push_frame(usize::MAX), Err(GcError::OutOfBounds { .. })));
    });
}

#[test]
fn a_shape_of_another_heap_is_wrong_heap() {
    let (other_rt, other, other_shape) = heap();
    with_sections(move |m, shape, _| {
        m.enter(|s| {
            assert_eq!(s.alloc(&other_shape), Err(GcError::WrongHeap));
            assert_eq!(s.alloc_init(&other_shape, &[]), Err(GcError::WrongHeap));
            let p = s.alloc(shape).unwrap();
            // Same type id, same layout, another heap: refused before the header is read.
            assert_eq!(s.get(p, &other_shape, 1), Err(GcError::WrongHeap));
            let one = s.int(1).unwrap();
            assert_eq!(s.set(p, &other_shape, 1, one), Err(GcError::WrongHeap));
            assert_eq!(s.get_raw(p, &other_shape, 2), Err(GcError::WrongHeap));
            assert!(!s.is(p, &other_shape));
        })
        .unwrap();
        // A global of the other heap.
        let g = Global::new(&other);
        m.enter(|s| {
            assert_eq!(s.global(&g), Err(GcError::WrongHeap));
            assert_eq!(s.set_global(&g, Value::nil()), Err(GcError::WrongHeap));
        })
        .unwrap();
    });
    drop(other_rt);
}

fn wrong_kind<T: std::fmt::Debug>(r: Result<T, GcError>, has: &str) {
    match r {
        Err(GcError::WrongKind { what, .. }) => assert!(what.contains(has), "{what}"),
        other => panic!("expected WrongKind ({has}), got {other:?}"),
    }
}

#[test]
fn an_object_of_another_type_or_a_word_of_another_kind_is_wrong_kind() {
    with_sections(|m, shape, gc| {
        let t = gc.types();
        let single = Shape::new(
            gc,
            t.register(TypeDesc::Record { name: "single".into(), words: vec![WordKind::Tagged] })
                .unwrap(),
            0,
        )
        .unwrap();
        let weak = Shape::new(
            gc,
            t.register(TypeDesc::Record { name: "weakling".into(), words: vec![WordKind::Weak] })
                .unwrap(),
            0,
        )
        .unwrap();
        let vec = t.register(TypeDesc::TaggedArray { name: "vec".into() }).unwrap();
        let (v3, v9) = (Shape::new(gc, vec, 3).unwrap(), Shape::new(gc, vec, 9).unwrap());
        let bytes = t.register(TypeDesc::ByteArray { name: "bytes".into() }).unwrap();
        let b4 = Shape::new(gc, bytes, 4).unwrap();
        m.enter(|s| {
            let p = s.alloc(shape).unwrap();
            let one = s.int(1).unwrap();
            // An object read with another type's shape.
            wrong_kind(s.get(p, &single, 0), "another type");
            wrong_kind(s.set(p, &single, 0, one), "another type");
            // An immediate into a reference word.
            wrong_kind(s.set(p, shape, 0, one), "immediate");
            wrong_kind(s.alloc_init(shape, &[one]), "immediate");
            // A raw word read as a value, a value word read as raw.
            wrong_kind(s.get(p, shape, 2), "not a reference or tagged");
            wrong_kind(s.set(p, shape, 2, Value::nil()), "not a reference or tagged");
            wrong_kind(s.get_raw(p, shape, 1), "not a raw word");
            wrong_kind(s.set_raw(p, shape, 0, 5), "not a raw word");
            // A weak word (not covered by sections).
            let w = s.alloc(&weak).unwrap();
            wrong_kind(s.get(w, &weak, 0), "not a reference or tagged");
            // A byte array has no words.
            let b = s.alloc(&b4).unwrap();
            wrong_kind(s.get(b, &b4, 0), "byte array");
            // An array is read with any shape of its type: its length is its own.
            let a = s.alloc(&v3).unwrap();
            s.set(a, &v9, 2, one).unwrap();
            assert_eq!(s.get(a, &v9, 2), Ok(one));
            assert_eq!(s.get(a, &v9, 3), Err(GcError::OutOfBounds { index: 3, len: 3 }));
            // The refused stores left everything as it was.
            assert!(s.get(p, shape, 0).unwrap().is_nil());
            assert_eq!(s.get_raw(p, shape, 2), Ok(0));
        })
        .unwrap();
    });
}

#[test]
fn an_index_past_the_body_is_out_of_bounds() {
    with_sections(|m, shape, _| {
        m.enter(|s| {
            let p = s.alloc(shape).unwrap();
            assert_eq!(s.get(p, shape, 3), Err(GcError::OutOfBounds { index: 3, len: 3 }));
            let v = s.int(1).unwrap();
            assert_eq!(s.set(p, shape, 99, v), Err(GcError::OutOfBounds { index: 99, len: 3 }));
            assert_eq!(s.set_raw(p, shape, 3, 1), Err(GcError::OutOfBounds { index: 3, len: 3 }));
            let four = [Value::nil(); 4];
            assert_eq!(s.alloc_init(shape, &four), Err(GcError::OutOfBounds { index: 4, len: 3 }));
        })
        .unwrap();
    });
}

#[test]
fn off_the_runtime_or_on_another_runtime_is_wrong_runtime() {
    let (rt, gc, _) = heap();
    assert!(matches!(SectionMutator::new(&gc), Err(GcError::WrongRuntime)));
    let other = Runtime::builder().procs(1).build().unwrap();
    let g = gc.clone();
    let r = other.block_on(move || SectionMutator::new(&g).map(drop));
    assert_eq!(r, Err(GcError::WrongRuntime));
    drop(other);
    drop(rt);
}

#[test]
fn a_second_mutator_on_the_goroutine_is_mutator_active() {
    with_sections(|_, _, gc| {
        assert!(matches!(SectionMutator::new(gc), Err(GcError::MutatorActive)));
        assert!(matches!(Mutator::new(gc), Err(GcError::MutatorActive)));
    });
}

#[test]
fn a_section_inside_a_blocking_call_is_no_p() {
    with_sections(|m, _, _| {
        assert_eq!(safepoint_sched::blocking(|| m.enter(|_| ())), Err(GcError::NoP));
        assert_eq!(safepoint_sched::blocking(|| m.push_frame(1)), Err(GcError::NoP));
        // A pop only lowers the stack's top: allowed there, as a `Mutator` scope's end.
        m.push_frame(1).unwrap();
        assert_eq!(safepoint_sched::blocking(|| m.pop_frame()), Ok(()));
    });
}

#[test]
fn integers_out_of_range_are_refused() {
    with_sections(|m, _, _| {
        m.enter(|s| {
            assert_eq!(s.int(i64::MAX), Err(GcError::IntegerOutOfRange { value: i64::MAX }));
            assert_eq!(s.int(i64::MIN), Err(GcError::IntegerOutOfRange { value: i64::MIN }));
            let big = (1i64 << 62) - 1;
            assert_eq!(s.as_int(s.int(big).unwrap()), Some(big));
            assert_eq!(s.as_int(s.int(-1).unwrap()), Some(-1));
        })
        .unwrap();
    });
}

/// Section frames need no function registry: on a runtime built without one (where a raw
/// path's function frame could not be scanned), frames, collections and the values they keep
/// work.
#[test]
fn sections_need_no_registry() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder().checkmark(true).poison(true).ignore_env().build(&rt).unwrap();
    let list = gc
        .types()
        .register(TypeDesc::Record {
            name: "cell".into(),
            words: vec![WordKind::Ref, WordKind::Tagged],
        })
        .unwrap();
    let shape = Shape::new(&gc, list, 0).unwrap();
    let sum = rt.block_on(move || {
        let mut m = SectionMutator::new(&gc).unwrap();
        m.push_frame(1).unwrap();
        for i in 1..=20_000i64 {
            m.enter(|s| {
                let head = s.slot(0).unwrap();
                let c = s.alloc_init(&shape, &[head, s.int(i).unwrap()]).unwrap();
                s.set_slot(0, c.value()).unwrap();
            })
            .unwrap();
            if i % 5_000 == 0 {
                m.collect();
            }
        }
        let sum = m
            .enter(|s| {
                let mut sum = 0;
                let mut c = s.slot(0).unwrap();
                while let Some(r) = s.as_ref(c) {
                    sum += s.as_int(s.get(r, &shape, 1).unwrap()).unwrap();
                    c = s.get(r, &shape, 0).unwrap();
                }
                sum
            })
            .unwrap();
        m.pop_frame().unwrap();
        sum
    });
    assert_eq!(sum, 20_000 * 20_001 / 2);
}

/// Binary trees built through sections, one section and one frame per call, on four
/// goroutines at once while the concurrent collector runs, each tree checked after it was
/// built; the long-lived tree in a global survives it all.
#[test]
fn trees_built_through_sections_survive_concurrent_collections() {
    let (rt, gc, _) = heap();
    let node = gc
        .types()
        .register(TypeDesc::Record {
            name: "node".into(),
            words: vec![WordKind::Ref, WordKind::Ref],
        })
        .unwrap();
    let shape = Shape::new(&gc, node, 0).unwrap();

    /// Builds a tree of depth `d` into slot `dst` of the caller's frame.
    fn build(m: &mut SectionMutator, shape: &Shape, d: u32, dst: usize) {
        m.push_frame(2).unwrap();
        if d > 0 {
            build(m, shape, d - 1, 0);
            build(m, shape, d - 1, 1);
        }
        m.enter(|s| {
            let (l, r) = (s.slot(0).unwrap(), s.slot(1).unwrap());
            let n = s.alloc_init(shape, &[l, r]).unwrap();
            s.pop_frame().unwrap();
            s.set_slot(dst, n.value()).unwrap();
        })
        .unwrap();
    }
    fn count(m: &SectionMutator, shape: &Shape, slot: usize) -> u64 {
        m.enter(|s| {
            fn walk<'s>(s: &safepoint_gc::Section<'s>, shape: &Shape, v: Value<'s>) -> u64 {
                match s.as_ref(v) {
                    None => 0,
                    Some(n) => {
                        1 + walk(s, shape, s.get(n, shape, 0).unwrap())
                            + walk(s, shape, s.get(n, shape, 1).unwrap())
                    }
                }
            }
            walk(s, shape, s.slot(slot).unwrap())
        })
        .unwrap()
    }

    let g = gc.clone();
    let done = rt.block_on(move || {
        let mut m = SectionMutator::new(&g).unwrap();
        m.push_frame(1).unwrap();
        build(&mut m, &shape, 12, 0);
        let long = m.enter(|s| s.new_global(s.slot(0).unwrap())).unwrap();
        m.pop_frame().unwrap();
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                go(move || {
                    let mut m = SectionMutator::new(&g).unwrap();
                    m.push_frame(1).unwrap();
                    for i in 0..40 {
                        build(&mut m, &shape, 8, 0);
                        assert_eq!(count(&m, &shape, 0), (1 << 9) - 1);
                        m.poll();
                        if i % 10 == 9 {
                            m.collect(); // while the other goroutines build
                        }
                    }
                    m.pop_frame().unwrap();
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        m.push_frame(1).unwrap();
        m.enter(|s| s.set_slot(0, s.global(&long).unwrap()).unwrap()).unwrap();
        let n = count(&m, &shape, 0);
        m.pop_frame().unwrap();
        n
    });
    assert_eq!(done, (1 << 13) - 1);
    assert!(gc.cycles() > 0, "the workload ran no collection");
}

/// A call's fast push inside a section: refused arguments are an error; with a request
/// pending (here a poisoned guard), the push answers `false`, pushes nothing, and the call
/// takes the slow push outside, where the request is answered.
#[test]
fn a_push_inside_a_section_takes_no_safepoint() {
    with_sections(|m, _, _| {
        m.push_frame(1).unwrap();
        m.enter(|s| {
            let v = s.int(1).unwrap();
            assert!(matches!(s.push_frame_with(1, &[v, v]), Err(GcError::OutOfBounds { .. })));
            assert!(s.push_frame_with(2, &[v]).unwrap()); // room, no request: pushed
            assert_eq!(s.frame_slots(), Ok(2));
            assert_eq!(s.as_int(s.slot(0).unwrap()), Some(1));
            s.pop_frame().unwrap();
        })
        .unwrap();
        safepoint_sched::with_managed_stack(|ms| ms.guard().poison());
        let pushed = m
            .enter(|s| {
                let v = s.int(2).unwrap();
                let pushed = s.push_frame_with(2, &[v]).unwrap();
                assert_eq!(s.frame_slots(), Ok(1)); // nothing pushed
                s.set_slot(0, v).unwrap();
                pushed
            })
            .unwrap();
        assert!(!pushed);
        m.push_frame_args(2, &[0]).unwrap(); // the slow push answers the "request"
        assert!(!safepoint_sched::with_managed_stack(|ms| ms.guard().is_poisoned()));
        assert_eq!(m.enter(|s| s.as_int(s.slot(0).unwrap())).unwrap(), Some(2));
        m.pop_frame().unwrap();
        m.pop_frame().unwrap();
    });
}
