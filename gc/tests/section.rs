//! Branded sections (`SectionMutator`): every misuse the compiler cannot refuse is a
//! `GcError`, one test each, and after each the heap still works; and the values sections
//! keep in their frames, fields and globals survive concurrent collections on many goroutines
//! (run with `gcpoison` and `gccheckmark`, where a reference freed too early is a described
//! panic). The misuses the compiler refuses are in `tests/ui/section_*.rs`.

use safepoint_gc::{
    BytesPart, Gc, GcError, Global, Mutator, RefChan, SectionMutator, Shape, TypeDesc, Value,
    WordKind,
};
use safepoint_sched::{Runtime, go};
use safepoint_stackmap::{FuncDesc, FuncId, Registry};

/// A checked heap (poison, checkmark) on a 2-P runtime, and the shape of `pair` (a reference
/// word, a tagged word and a raw word).
fn heap() -> (Runtime, Gc, Shape) {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder().checkmark(true).poison(true).ignore_env().build(&rt).unwrap();
    let shape = pair_shape(&gc);
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
            assert_eq!(s.weak_id(p, &other_shape, 0), Err(GcError::WrongHeap));
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
        // A byte array's shape of the other heap.
        let other_text = other.types().register(TypeDesc::ByteArray { name: "t".into() });
        let other_text = Shape::new(&other, other_text.unwrap(), 0).unwrap();
        let text = gc_of(m).types().register(TypeDesc::ByteArray { name: "t".into() }).unwrap();
        let text = Shape::new(&gc_of(m), text, 0).unwrap();
        m.enter(|s| {
            assert_eq!(s.alloc_bytes(&other_text, b"x"), Err(GcError::WrongHeap));
            let t = s.alloc_bytes(&text, b"x").unwrap();
            assert_eq!(s.bytes(t, &other_text).map(|b| b.len()), Err(GcError::WrongHeap));
            assert_eq!(s.write_bytes(t, &other_text, 0, b"y"), Err(GcError::WrongHeap));
            let part = [BytesPart::Slice(b"y")];
            assert_eq!(s.alloc_bytes_concat(&other_text, &part), Err(GcError::WrongHeap));
            assert!(s.bytes(t, &text).unwrap().eq_bytes(b"x"));
        })
        .unwrap();
        // A channel of the other heap.
        let ch = RefChan::new(&other, 1);
        m.push_frame(1).unwrap();
        m.enter(|s| {
            assert_eq!(s.try_send(&ch, Value::nil()), Err(GcError::WrongHeap));
            assert_eq!(s.try_recv(&ch), Err(GcError::WrongHeap));
        })
        .unwrap();
        assert_eq!(m.send(&ch, 0), Err(GcError::WrongHeap));
        assert_eq!(m.recv(&ch, 0), Err(GcError::WrongHeap));
        assert!(ch.is_empty());
        m.pop_frame().unwrap();
    });
    drop(other_rt);
}

fn gc_of(m: &SectionMutator) -> Gc {
    m.gc()
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
            wrong_kind(s.get(p, shape, 2), "raw word");
            wrong_kind(s.set(p, shape, 2, Value::nil()), "raw word");
            wrong_kind(s.get_raw(p, shape, 1), "not a raw word");
            wrong_kind(s.set_raw(p, shape, 0, 5), "not a raw word");
            // An immediate into a weak word; a weak word read as raw.
            let w = s.alloc(&weak).unwrap();
            wrong_kind(s.set(w, &weak, 0, one), "immediate stored into a weak word");
            wrong_kind(s.alloc_init(&weak, &[one]), "immediate stored into a weak word");
            wrong_kind(s.get_raw(w, &weak, 0), "not a raw word");
            assert!(s.get(w, &weak, 0).unwrap().is_nil());
            // A handle is read through `deref` only, and only a handle is.
            wrong_kind(s.deref(p), "not a weak handle");
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
        // Channel operations wait: not without a P.
        let ch = RefChan::new(&m.gc(), 1);
        m.push_frame(1).unwrap();
        // A call's push, with or without arguments: the stack stays frozen, nothing pushed.
        let top = m.enter(|s| s.frame_slots()).unwrap();
        assert_eq!(safepoint_sched::blocking(|| m.push_frame_args(2, &[0])), Err(GcError::NoP));
        assert_eq!(safepoint_sched::blocking(|| m.push_frame_args(2, &[])), Err(GcError::NoP));
        assert_eq!(m.enter(|s| s.frame_slots()).unwrap(), top);
        assert_eq!(safepoint_sched::blocking(|| m.send(&ch, 0)), Err(GcError::NoP));
        assert_eq!(safepoint_sched::blocking(|| m.recv(&ch, 0)), Err(GcError::NoP));
        assert!(ch.is_empty());
        m.pop_frame().unwrap();
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

/// Weak handles and weak words through sections: a handle (and a weak word) reads its object
/// while something else keeps it, nil once a collection found it unreachable; an ephemeron
/// word's value lives exactly as long as its key, and a new key does not revive the values
/// of a dead one. In both collector modes.
#[test]
fn weak_handles_and_ephemerons_through_sections() {
    for stw in [false, true] {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let gc = Gc::builder()
            .stop_the_world(stw)
            .checkmark(true)
            .poison(true)
            .ignore_env()
            .build(&rt)
            .unwrap();
        let t = gc.types();
        let rec = |name: &str, words| {
            let ty = t.register(TypeDesc::Record { name: name.into(), words }).unwrap();
            Shape::new(&gc, ty, 0).unwrap()
        };
        let pair = rec("pair", vec![WordKind::Ref, WordKind::Tagged]);
        let holder = rec("holder", vec![WordKind::Weak, WordKind::Tagged]);
        let entry = rec("entry", vec![WordKind::Weak, WordKind::Ephemeron]);
        let g = gc.clone();
        rt.block_on(move || {
            let mut m = SectionMutator::new(&g).unwrap();
            // Slots: 0 the object, 1 its handle, 2 a holder (weak word 0), 3 an ephemeron
            // entry whose key is the object and whose value references the key.
            m.push_frame(4).unwrap();
            m.enter(|s| {
                let obj = s.alloc(&pair).unwrap();
                let w = s.weak(obj).unwrap();
                assert!(s.is_weak(w) && !s.is_weak(obj));
                assert_eq!(s.weak(obj), Ok(w));
                let h = s.alloc_init(&holder, &[obj.value(), s.int(1).unwrap()]).unwrap();
                assert_eq!(s.get(h, &holder, 0), Ok(obj.value()));
                let value = s.alloc_init(&pair, &[obj.value()]).unwrap();
                let e = s.alloc(&entry).unwrap();
                s.set(e, &entry, 0, obj.value()).unwrap();
                s.set(e, &entry, 1, value.value()).unwrap();
                assert_eq!(s.get(e, &entry, 1), Ok(value.value()));
                for (i, v) in [obj, w, h, e].into_iter().enumerate() {
                    s.set_slot(i, v.value()).unwrap();
                }
            })
            .unwrap();
            m.collect();
            // The object is kept by slot 0: everything reads it.
            m.enter(|s| {
                let [obj, w, h, e] = s.slots().unwrap();
                let (w, h, e) = (s.as_ref(w).unwrap(), s.as_ref(h).unwrap(), s.as_ref(e).unwrap());
                assert_eq!(s.deref(w), Ok(obj));
                assert_eq!(s.get(h, &holder, 0), Ok(obj));
                let value = s.as_ref(s.get(e, &entry, 1).unwrap()).unwrap();
                assert_eq!(s.get(value, &pair, 0), Ok(obj));
                s.set_slot(0, Value::nil()).unwrap();
            })
            .unwrap();
            m.collect();
            // Unreachable but for weak words and its own ephemeron value: gone.
            m.enter(|s| {
                let [obj, w, h, e] = s.slots().unwrap();
                assert!(obj.is_nil());
                let (w, h, e) = (s.as_ref(w).unwrap(), s.as_ref(h).unwrap(), s.as_ref(e).unwrap());
                assert!(s.deref(w).unwrap().is_nil());
                assert!(s.get(h, &holder, 0).unwrap().is_nil());
                assert_eq!(s.as_int(s.get(h, &holder, 1).unwrap()), Some(1));
                assert!(s.get(e, &entry, 1).unwrap().is_nil());
                // A new key: the dead key's value stays gone; a new value is kept.
                let key = s.alloc(&pair).unwrap();
                s.set(e, &entry, 0, key.value()).unwrap();
                assert!(s.get(e, &entry, 1).unwrap().is_nil());
                s.set(e, &entry, 1, s.int(9).unwrap()).unwrap();
                s.set_slot(0, key.value()).unwrap();
                // A null weak word reads nil.
                s.set(h, &holder, 0, Value::nil()).unwrap();
                assert!(s.get(h, &holder, 0).unwrap().is_nil());
            })
            .unwrap();
            m.collect();
            let nine = m
                .enter(|s| {
                    let e = s.as_ref(s.slot(3).unwrap()).unwrap();
                    assert_eq!(s.get(e, &entry, 0), s.slot(0));
                    s.as_int(s.get(e, &entry, 1).unwrap())
                })
                .unwrap();
            assert_eq!(nine, Some(9));
            m.pop_frame().unwrap();
        });
    }
}

/// A weak word's identity (`weak_id`): the word of the object it names while that object
/// lives, 0 for a null word and once the object is gone, in both collector modes; what
/// a weakly keyed table hashes and compares. A word that is not weak, an index past the
/// body and an object of another type are errors.
#[test]
fn weak_ids_name_live_keys_and_read_zero_once_they_are_gone() {
    for stw in [false, true] {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let gc = Gc::builder()
            .stop_the_world(stw)
            .checkmark(true)
            .poison(true)
            .ignore_env()
            .build(&rt)
            .unwrap();
        let t = gc.types();
        let rec = |name: &str, words| {
            let ty = t.register(TypeDesc::Record { name: name.into(), words }).unwrap();
            Shape::new(&gc, ty, 0).unwrap()
        };
        let pair = rec("pair", vec![WordKind::Ref, WordKind::Tagged]);
        let entry = rec("entry", vec![WordKind::Weak, WordKind::Ephemeron]);
        let g = gc.clone();
        rt.block_on(move || {
            let mut m = SectionMutator::new(&g).unwrap();
            // Slots: 0 and 1 two keys, 2 and 3 their entries.
            m.push_frame(4).unwrap();
            m.enter(|s| {
                let e0 = s.alloc(&entry).unwrap();
                assert_eq!(s.weak_id(e0, &entry, 0), Ok(0));
                for i in 0..2 {
                    let key = s.alloc(&pair).unwrap();
                    let e = s.alloc_init(&entry, &[key.value(), s.int(i).unwrap()]).unwrap();
                    assert_eq!(s.weak_id(e, &entry, 0), Ok(key.value().word()));
                    s.set_slot(i as usize, key.value()).unwrap();
                    s.set_slot(2 + i as usize, e.value()).unwrap();
                }
                // Misuse: an ephemeron word, a tagged word, past the body, another type.
                wrong_kind(s.weak_id(e0, &entry, 1), "not a weak word");
                let p = s.alloc(&pair).unwrap();
                wrong_kind(s.weak_id(p, &pair, 1), "not a weak word");
                assert_eq!(
                    s.weak_id(e0, &entry, 2),
                    Err(GcError::OutOfBounds { index: 2, len: 2 })
                );
                wrong_kind(s.weak_id(p, &entry, 0), "another type");
            })
            .unwrap();
            m.collect();
            // Both keys kept by their slots: each entry names its own; then key 1 is dropped.
            m.enter(|s| {
                let [k0, k1, e0, e1] = s.slots().unwrap();
                let (e0, e1) = (s.as_ref(e0).unwrap(), s.as_ref(e1).unwrap());
                assert_eq!(s.weak_id(e0, &entry, 0), Ok(k0.word()));
                assert_eq!(s.weak_id(e1, &entry, 0), Ok(k1.word()));
                assert_ne!(k0.word(), k1.word());
                s.set_slot(1, Value::nil()).unwrap();
            })
            .unwrap();
            // Reading the identity keeps nothing alive: the dropped key is swept, and its
            // entry's word reads 0 (two cycles: the second sweeps what the first found).
            m.collect();
            m.collect();
            m.enter(|s| {
                let [k0, _, e0, e1] = s.slots().unwrap();
                let (e0, e1) = (s.as_ref(e0).unwrap(), s.as_ref(e1).unwrap());
                assert_eq!(s.weak_id(e0, &entry, 0), Ok(k0.word()));
                assert_eq!(s.weak_id(e1, &entry, 0), Ok(0));
                assert!(s.get(e1, &entry, 0).unwrap().is_nil());
                assert!(s.get(e1, &entry, 1).unwrap().is_nil());
            })
            .unwrap();
            m.pop_frame().unwrap();
        });
    }
}

/// Strings without copies: a concatenation of heap arrays and Rust bytes allocated in one
/// step, read in place (`Bytes::iter`, `Bytes::copy_to`) and compared, surviving a
/// collection; a shape that is not a byte array's is an error, and so is a total too long.
#[test]
fn byte_arrays_concatenate_and_read_in_place() {
    with_sections(|m, shape, gc| {
        let ty = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
        let text = Shape::new(gc, ty, 0).unwrap();
        m.push_frame(1).unwrap();
        m.enter(|s| {
            let a = s.alloc_bytes(&text, b"safe").unwrap();
            let empty = s.alloc_bytes(&text, b"").unwrap();
            let (ab, eb) = (s.bytes(a, &text).unwrap(), s.bytes(empty, &text).unwrap());
            let parts = [
                BytesPart::Heap(ab),
                BytesPart::Heap(eb),
                BytesPart::Slice(b"point"),
                BytesPart::Heap(ab),
            ];
            assert_eq!(parts.iter().map(BytesPart::len).sum::<usize>(), 13);
            let c = s.alloc_bytes_concat(&text, &parts).unwrap();
            assert_eq!(s.len(c), 13);
            let cb = s.bytes(c, &text).unwrap();
            assert!(cb.eq_bytes(b"safepointsafe"));
            assert!(cb.iter().eq(b"safepointsafe".iter().copied()));
            assert!(ab.iter().cmp(cb.iter()).is_lt());
            assert!(cb.iter().cmp(ab.iter()).is_gt());
            let mut buf = [0u8; 20];
            assert_eq!(cb.copy_to(&mut buf), 13);
            assert_eq!(&buf[..13], b"safepointsafe");
            assert_eq!(eb.copy_to(&mut buf), 0);
            // Nothing at all: an empty array.
            let none = s.alloc_bytes_concat(&text, &[]).unwrap();
            assert!(s.bytes(none, &text).unwrap().is_empty());
            // Misuse: a record's shape; a total no array may have.
            wrong_kind(s.alloc_bytes_concat(shape, &parts).map(|_| ()), "not a byte array");
            // 2^41 bytes in all (2^17 views of one 16 MiB buffer), past any array's length.
            let huge = vec![0u8; 1 << 24];
            let many = vec![BytesPart::Slice(&huge); 1 << 17];
            assert!(matches!(s.alloc_bytes_concat(&text, &many), Err(GcError::Type(_))));
            s.set_slot(0, c.value()).unwrap();
        })
        .unwrap();
        m.collect();
        m.enter(|s| {
            let c = s.as_ref(s.slot(0).unwrap()).unwrap();
            assert_eq!(s.bytes(c, &text).unwrap().to_vec(), b"safepointsafe");
        })
        .unwrap();
        m.pop_frame().unwrap();
    });
}

/// Byte arrays through sections: allocated from any shape of their type, read and written;
/// a shape of another type or of a record, and writes past the end, are errors that change
/// nothing. The contents survive collections.
#[test]
fn byte_arrays_through_sections() {
    with_sections(|m, shape, gc| {
        let t = gc.types();
        let text =
            Shape::new(gc, t.register(TypeDesc::ByteArray { name: "text".into() }).unwrap(), 3)
                .unwrap();
        let blob =
            Shape::new(gc, t.register(TypeDesc::ByteArray { name: "blob".into() }).unwrap(), 0)
                .unwrap();
        let long: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
        m.push_frame(2).unwrap();
        m.enter(|s| {
            let a = s.alloc_bytes(&text, b"hello").unwrap();
            assert_eq!(s.len(a), 5);
            let c = s.alloc(&text).unwrap();
            assert_eq!(s.type_of(a), s.type_of(c));
            let b = s.alloc_bytes(&text, &long).unwrap();
            assert!(s.bytes(b, &text).unwrap().eq_bytes(&long));
            let empty = s.alloc_bytes(&text, b"").unwrap();
            assert!(s.bytes(empty, &text).unwrap().is_empty());
            s.write_bytes(a, &text, 4, b"!").unwrap();
            // Past the end, or an offset that overflows: refused, nothing written.
            assert_eq!(
                s.write_bytes(a, &text, 4, b"ab"),
                Err(GcError::OutOfBounds { index: 6, len: 5 })
            );
            assert_eq!(
                s.write_bytes(a, &text, usize::MAX, b"ab"),
                Err(GcError::OutOfBounds { index: usize::MAX, len: 5 })
            );
            assert_eq!(
                s.write_bytes(empty, &text, 0, b"x"),
                Err(GcError::OutOfBounds { index: 1, len: 0 })
            );
            // Another byte type's shape; a record's; a record read as bytes.
            wrong_kind(s.bytes(a, &blob).map(|b| b.len()), "another type");
            wrong_kind(s.write_bytes(a, &blob, 0, b"x"), "another type");
            wrong_kind(s.bytes(a, shape).map(|b| b.len()), "not a byte array");
            wrong_kind(s.alloc_bytes(shape, b"x"), "not a byte array");
            let p = s.alloc(shape).unwrap();
            wrong_kind(s.bytes(p, &text).map(|b| b.len()), "another type");
            s.set_slot(0, a.value()).unwrap();
            s.set_slot(1, b.value()).unwrap();
        })
        .unwrap();
        m.collect();
        m.enter(|s| {
            let [a, b] = s.slots().unwrap();
            let (a, b) = (s.as_ref(a).unwrap(), s.as_ref(b).unwrap());
            assert_eq!(s.bytes(a, &text).unwrap().to_vec(), b"hell!");
            assert!(s.bytes(b, &text).unwrap().eq_bytes(&long));
        })
        .unwrap();
        m.pop_frame().unwrap();
    });
}

/// Channels through sections: inside a section only what needs no wait, between sections
/// the waiting kind, from and into frame slots; values in flight survive collections while
/// a producer and a consumer run on two goroutines. A closed channel, and a slot that is not
/// there, are errors.
#[test]
fn channels_through_sections() {
    let (rt, gc, shape) = heap();
    let g = gc.clone();
    let sum = rt.block_on(move || {
        let ch = RefChan::new(&g, 4);
        let (g2, tx) = (g.clone(), ch.clone());
        let producer = go(move || {
            let mut m = SectionMutator::new(&g2).unwrap();
            m.push_frame(1).unwrap();
            for i in 1..=300i64 {
                // Build a two-object list [i, -i] and try to send it without waiting.
                let sent = m
                    .enter(|s| {
                        let tail =
                            s.alloc_init(&shape, &[Value::nil(), s.int(-i).unwrap()]).unwrap();
                        let head =
                            s.alloc_init(&shape, &[tail.value(), s.int(i).unwrap()]).unwrap();
                        let sent = s.try_send(&tx, head.value()).unwrap();
                        if !sent {
                            s.set_slot(0, head.value()).unwrap();
                        }
                        sent
                    })
                    .unwrap();
                if !sent {
                    m.send(&tx, 0).unwrap(); // waits: a safepoint
                }
                if i % 100 == 0 {
                    m.collect(); // values in flight are roots
                }
            }
            m.pop_frame().unwrap();
            tx.close();
        });
        let mut m = SectionMutator::new(&g).unwrap();
        m.push_frame(1).unwrap();
        let mut sum = 0;
        loop {
            let got = m
                .enter(|s| match s.try_recv(&ch) {
                    Ok(Some(v)) => {
                        s.set_slot(0, v).unwrap();
                        Ok(true)
                    }
                    Ok(None) => Ok(false),
                    Err(e) => Err(e),
                })
                .unwrap();
            match got {
                Ok(true) => {}
                Ok(false) => {
                    if !m.recv(&ch, 0).unwrap() {
                        break;
                    }
                }
                Err(GcError::Closed) => break,
                Err(e) => panic!("{e}"),
            }
            m.poll();
            sum += m
                .enter(|s| {
                    let head = s.as_ref(s.slot(0).unwrap()).unwrap();
                    let tail = s.as_ref(s.get(head, &shape, 0).unwrap()).unwrap();
                    let (a, b) = (s.get(head, &shape, 1).unwrap(), s.get(tail, &shape, 1).unwrap());
                    assert_eq!(s.as_int(a), s.as_int(b).map(|n| -n));
                    s.as_int(a).unwrap()
                })
                .unwrap();
        }
        producer.join().unwrap();
        // Closed and drained: the waiting receive says so and leaves nil; a send is refused.
        assert_eq!(m.recv(&ch, 0), Ok(false));
        assert!(m.enter(|s| s.slot(0).unwrap().is_nil()).unwrap());
        assert_eq!(m.send(&ch, 0), Err(GcError::Closed));
        m.enter(|s| {
            assert_eq!(s.try_send(&ch, Value::nil()), Err(GcError::Closed));
            assert_eq!(s.try_recv(&ch), Err(GcError::Closed));
        })
        .unwrap();
        // A slot past the frame, or no section frame: refused before any wait.
        let open = RefChan::new(&g, 1);
        assert_eq!(m.send(&open, 1), Err(GcError::SlotOutOfFrame { index: 1, slots: 1 }));
        assert_eq!(m.recv(&open, 1), Err(GcError::SlotOutOfFrame { index: 1, slots: 1 }));
        m.pop_frame().unwrap();
        assert_eq!(m.send(&open, 0), Err(GcError::NoFrame));
        assert_eq!(m.recv(&open, 0), Err(GcError::NoFrame));
        assert!(open.is_empty());
        sum
    });
    assert_eq!(sum, 300 * 301 / 2);
}

/// The `pair` record (a reference word, a tagged word and a raw word), registered in `gc`.
fn pair_shape(gc: &Gc) -> Shape {
    let pair = gc
        .types()
        .register(TypeDesc::Record {
            name: "pair".into(),
            words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
        })
        .unwrap();
    Shape::new(gc, pair, 0).unwrap()
}

/// A runtime with `reg` as its function registry, and a checked heap (poison, checkmark) in
/// the given mode, with the `pair` shape.
fn heap_with(reg: std::sync::Arc<Registry>, stw: bool) -> (Runtime, Gc, Shape) {
    let rt = Runtime::builder().procs(2).registry(reg).build().unwrap();
    let gc = Gc::builder()
        .stop_the_world(stw)
        .checkmark(true)
        .poison(true)
        .ignore_env()
        .build(&rt)
        .unwrap();
    let shape = pair_shape(&gc);
    (rt, gc, shape)
}

/// A function frame carrying a deliberately wrong map: at safepoint 1 it calls slot 0 dead
/// while the code still keeps its only reference to an object there. The collector frees
/// the object, and the section reads nil in slot 0 afterwards (the scan cleared it), never
/// the freed object: with poison on, a read of the freed object would find the poison
/// pattern. Slot 1, live in the map, keeps its object. With the map right (safepoint 0), the
/// same object survives. In both collector modes.
#[test]
fn a_wrong_stack_map_reads_nil_never_a_freed_object() {
    for stw in [false, true] {
        let reg = std::sync::Arc::new(Registry::new());
        let f = reg
            .register(FuncDesc::new("wrong", 2, 0, 2).tagged_at(0, &[0, 1]).tagged_at(1, &[1]))
            .unwrap();
        let (rt, gc, shape) = heap_with(reg, stw);
        let g = gc.clone();
        rt.block_on(move || {
            let mut m = SectionMutator::new(&g).unwrap();
            m.push_func_frame(f).unwrap();
            let build = |m: &mut SectionMutator, sp: u32| {
                m.enter(|s| {
                    let a = s.alloc_init(&shape, &[Value::nil(), s.int(1).unwrap()]).unwrap();
                    let b = s.alloc_init(&shape, &[Value::nil(), s.int(2).unwrap()]).unwrap();
                    s.set_slot(0, a.value()).unwrap();
                    s.set_slot(1, b.value()).unwrap();
                    s.set_safepoint(sp).unwrap();
                })
                .unwrap();
            };
            // The wrong map: slot 0 is called dead at safepoint 1.
            build(&mut m, 1);
            let live0 = g.stats().heap.live_objects;
            m.collect();
            m.collect(); // the first cycle's sweep is done before the second's marking
            assert!(g.stats().heap.live_objects < live0, "the object the map called dead lives");
            let (a, b) = m
                .enter(|s| {
                    let a = s.slot(0).unwrap();
                    let b = s.as_ref(s.slot(1).unwrap()).unwrap();
                    (a.is_nil(), s.as_int(s.get(b, &shape, 1).unwrap()))
                })
                .unwrap();
            assert!(a, "a slot the map called dead still holds a (freed) object");
            assert_eq!(b, Some(2));
            // The right map: both live.
            build(&mut m, 0);
            m.collect();
            m.collect();
            let (a, b) = m
                .enter(|s| {
                    let [a, b] = s.slots().unwrap();
                    let (a, b) = (s.as_ref(a).unwrap(), s.as_ref(b).unwrap());
                    (s.as_int(s.get(a, &shape, 1).unwrap()), s.as_int(s.get(b, &shape, 1).unwrap()))
                })
                .unwrap();
            assert_eq!((a, b), (Some(1), Some(2)));
            m.pop_frame().unwrap();
        });
        drop(rt);
    }
}

/// The embedder's own word for a cleared slot: with `dead_slot_word` (here an encoding whose
/// nil is the word 2, references tagged 01), a slot a wrong map called dead reads that word
/// (`Section::cleared`) after a collection, never the freed object and never 0 (which this
/// encoding reads as the integer 0); a live slot keeps its object. A dead-slot word the tag
/// rule reads as a reference is refused when the heap is built.
#[test]
fn a_wrong_stack_map_reads_the_embedders_cleared_word() {
    let rule = safepoint_gc::TagRule { mask: 3, ref_tag: 1 };
    let refused = Gc::builder().tag_rule(rule).dead_slot_word(0x1001).ignore_env();
    let rt0 = Runtime::builder().procs(1).build().unwrap();
    assert!(matches!(
        refused.build(&rt0),
        Err(GcError::Type(safepoint_gc::TypeError::BadConfig { .. }))
    ));
    drop(rt0);
    for stw in [false, true] {
        let reg = std::sync::Arc::new(Registry::new());
        let f = reg
            .register(FuncDesc::new("wrong", 2, 0, 2).tagged_at(0, &[0, 1]).tagged_at(1, &[1]))
            .unwrap();
        let rt = Runtime::builder().procs(2).registry(reg).build().unwrap();
        let gc = Gc::builder()
            .tag_rule(rule)
            .dead_slot_word(2)
            .stop_the_world(stw)
            .checkmark(true)
            .poison(true)
            .ignore_env()
            .build(&rt)
            .unwrap();
        let shape = pair_shape(&gc);
        let g = gc.clone();
        rt.block_on(move || {
            let mut m = SectionMutator::new(&g).unwrap();
            m.push_func_frame(f).unwrap();
            m.enter(|s| {
                assert_eq!(s.cleared().word(), 2);
                assert!(s.as_ref(s.cleared()).is_none());
                let a = s.alloc_init(&shape, &[Value::nil(), s.int(1).unwrap()]).unwrap();
                let b = s.alloc_init(&shape, &[Value::nil(), s.int(2).unwrap()]).unwrap();
                s.set_slot(0, a.value()).unwrap();
                s.set_slot(1, b.value()).unwrap();
                // The wrong map: slot 0 is called dead at safepoint 1.
                s.set_safepoint(1).unwrap();
            })
            .unwrap();
            m.collect();
            m.collect();
            let (a, b) = m
                .enter(|s| {
                    let [a, b] = s.slots().unwrap();
                    let b = s.as_ref(b).unwrap();
                    ((a == s.cleared(), a.word()), s.as_int(s.get(b, &shape, 1).unwrap()))
                })
                .unwrap();
            assert_eq!(a, (true, 2), "the slot the map called dead reads the cleared word");
            assert_eq!(b, Some(2));
            m.pop_frame().unwrap();
        });
        drop(rt);
    }
}

/// Function frames among section frames: a map that calls a slot a *reference* slot still
/// has it scanned as a tagged value (a section writes tagged values: an immediate there is
/// not taken for an address), arguments pass from a section frame into a function frame
/// and results back, and a tree built through function frames survives collections on
/// goroutines running at once.
#[test]
fn function_frames_keep_their_live_slots_across_collections() {
    let reg = std::sync::Arc::new(Registry::new());
    // build(d): slot 0 the left child, 1 the right, 2 an immediate; all live at safepoint 1
    // (slot 0 as a "reference" slot), nothing at safepoint 0 (the entry).
    let f = reg
        .register(FuncDesc::new("build", 3, 0, 2).refs_at(1, &[0]).tagged_at(1, &[1, 2]))
        .unwrap();
    let (rt, gc, _) = heap_with(reg, false);
    let node = gc
        .types()
        .register(TypeDesc::Record {
            name: "node".into(),
            words: vec![WordKind::Ref, WordKind::Ref, WordKind::Tagged],
        })
        .unwrap();
    let node = Shape::new(&gc, node, 0).unwrap();

    fn build(
        m: &mut SectionMutator,
        f: safepoint_stackmap::FuncId,
        node: &Shape,
        d: i64,
        dst: usize,
    ) {
        m.push_func_frame(f).unwrap();
        m.enter(|s| {
            s.set_slot(2, s.int(d).unwrap()).unwrap();
            s.set_slot(0, s.int(-1).unwrap()).unwrap(); // an immediate in a "reference" slot
            s.set_safepoint(1).unwrap();
        })
        .unwrap();
        if d > 0 {
            build(m, f, node, d - 1, 0);
            build(m, f, node, d - 1, 1);
        }
        if d % 4 == 0 {
            m.collect();
        }
        m.enter(|s| {
            let [l, r, depth] = s.slots().unwrap();
            let l = if d == 0 { Value::nil() } else { l };
            let n = s.alloc_init(node, &[l, r, depth]).unwrap();
            s.pop_frame().unwrap();
            s.set_slot(dst, n.value()).unwrap();
        })
        .unwrap();
    }
    fn sum<'s>(s: &safepoint_gc::Section<'s>, node: &Shape, v: Value<'s>) -> i64 {
        match s.as_ref(v) {
            None => 0,
            Some(n) => {
                s.as_int(s.get(n, node, 2).unwrap()).unwrap()
                    + sum(s, node, s.get(n, node, 0).unwrap())
                    + sum(s, node, s.get(n, node, 1).unwrap())
            }
        }
    }
    let g = gc.clone();
    let totals = rt.block_on(move || {
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let g = g.clone();
                go(move || {
                    let mut m = SectionMutator::new(&g).unwrap();
                    m.push_frame(1).unwrap();
                    build(&mut m, f, &node, 8, 0);
                    let t = m.enter(|s| sum(s, &node, s.slot(0).unwrap())).unwrap();
                    m.pop_frame().unwrap();
                    t
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect::<Vec<_>>()
    });
    // Depths: 2^(8-k) nodes of depth k.
    let want: i64 = (0..=8).map(|k| k << (8 - k)).sum();
    assert_eq!(totals, vec![want; 3]);
}

/// Function frames' misuse: a runtime without a registry, an id of another registry, a
/// safepoint out of range, a safepoint with no section frame on top; and the frame is
/// sealed: code around the API cannot write its slots.
#[test]
fn function_frame_misuse_is_an_error() {
    let other = Registry::new();
    let stranger = other.register(FuncDesc::new("stranger", 7, 0, 1)).unwrap();
    // No registry.
    with_sections(move |m, _, _| {
        assert_eq!(m.push_func_frame(stranger), Err(GcError::UnknownFunction { index: 0 }));
    });
    let reg = std::sync::Arc::new(Registry::new());
    let f = reg.register(FuncDesc::new("f", 2, 0, 2).tagged_at(1, &[0])).unwrap();
    let (rt, gc, _) = heap_with(reg, false);
    rt.block_on(move || {
        let mut m = SectionMutator::new(&gc).unwrap();
        // Another registry's id (same index, another shape).
        assert_eq!(m.push_func_frame(stranger), Err(GcError::UnknownFunction { index: 0 }));
        assert_eq!(safepoint_sched::blocking(|| m.push_func_frame(f)), Err(GcError::NoP));
        m.enter(|s| assert_eq!(s.set_safepoint(0), Err(GcError::NoFrame))).unwrap();
        m.push_func_frame(f).unwrap();
        m.enter(|s| {
            assert_eq!(s.frame_slots(), Ok(2));
            assert_eq!(s.set_safepoint(2), Err(GcError::OutOfBounds { index: 2, len: 2 }));
            assert_eq!(s.slot(2), Err(GcError::SlotOutOfFrame { index: 2, slots: 2 }));
            s.set_slot(0, s.int(5).unwrap()).unwrap();
            s.set_safepoint(1).unwrap();
        })
        .unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            safepoint_sched::with_managed_stack(|ms| ms.set_checked(&Registry::new(), 1, 0));
        }));
        assert!(r.is_err(), "safe code wrote a sealed function frame");
        m.collect();
        assert_eq!(m.enter(|s| s.as_int(s.slot(0).unwrap())).unwrap(), Some(5));
        m.pop_frame().unwrap();
        assert_eq!(m.pop_frame(), Err(GcError::NoFrame));
    });
}

/// What an interpreter with precise maps uses inside one section: function frames pushed
/// between two instructions (`push_func_frame_with`, the slow push outside when it answers
/// false), the register view (`regs`), and immediates of its own encoding (`imm`). A tree
/// built that way survives collections in both collector modes; and each misuse is an error:
/// an unknown function, more arguments than slots, a slot past the view, no section frame
/// under the view, a reference's tag given as an immediate.
#[test]
fn calls_inside_a_section_registers_and_immediates() {
    for stw in [false, true] {
        let reg = std::sync::Arc::new(Registry::new());
        // build(d): slot 0 the depth, 1 the left child, 2 the right; all live at safepoint 1.
        let f = reg.register(FuncDesc::new("build", 3, 0, 2).tagged_at(1, &[0, 1, 2])).unwrap();
        let other = Registry::new();
        let _ = other.register(FuncDesc::new("a", 1, 0, 1)).unwrap();
        let stranger = other.register(FuncDesc::new("b", 1, 0, 1)).unwrap();
        // An interpreter's own encoding: integers `n << 2`, references tagged 01.
        let rt = Runtime::builder().procs(2).registry(reg).build().unwrap();
        let gc = Gc::builder()
            .tag_rule(safepoint_gc::TagRule { mask: 3, ref_tag: 1 })
            .stop_the_world(stw)
            .checkmark(true)
            .poison(true)
            .ignore_env()
            .build(&rt)
            .unwrap();
        let shape = pair_shape(&gc);
        let g = gc.clone();

        // Builds a tree of depth `d` into the caller's register `dst`: the call pushed inside
        // the section when it can, outside when not.
        fn build(m: &mut SectionMutator, f: FuncId, shape: &Shape, d: usize, dst: usize) {
            let fast = m
                .enter(|s| {
                    let depth = s.imm(d << 2).unwrap();
                    s.push_func_frame_with(f, &[depth]).unwrap()
                })
                .unwrap();
            if !fast {
                m.push_func_frame(f).unwrap();
                m.enter(|s| s.regs().unwrap().set(0, s.imm(d << 2).unwrap()).unwrap()).unwrap();
            }
            m.enter(|s| s.set_safepoint(1).unwrap()).unwrap();
            if d > 0 {
                build(m, f, shape, d - 1, 1);
                build(m, f, shape, d - 1, 2);
            }
            if d.is_multiple_of(3) {
                m.collect();
            }
            m.enter(|s| {
                let r = s.regs().unwrap();
                let (depth, l, right) = (r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap());
                assert_eq!(r.get(3), Err(GcError::SlotOutOfFrame { index: 3, slots: 3 }));
                let n = s.alloc_init(shape, &[l, depth]).unwrap();
                // The right child rides in the raw word's place: keep it in a tagged one.
                let n2 = s.alloc_init(shape, &[n.value(), right]).unwrap();
                s.pop_frame().unwrap();
                s.regs().unwrap().set(dst, n2.value()).unwrap();
            })
            .unwrap();
        }
        // Sums the depths of a tree `build` made.
        fn sum<'s>(s: &safepoint_gc::Section<'s>, shape: &Shape, v: Value<'s>) -> usize {
            let Some(n2) = s.as_ref(v) else { return 0 };
            let n = s.as_ref(s.get(n2, shape, 0).unwrap()).unwrap();
            let depth = s.get(n, shape, 1).unwrap().word() >> 2;
            depth
                + sum(s, shape, s.get(n, shape, 0).unwrap())
                + sum(s, shape, s.get(n2, shape, 1).unwrap())
        }

        rt.block_on(move || {
            let mut m = SectionMutator::new(&g).unwrap();
            m.enter(|s| assert_eq!(s.regs().map(|r| r.len()), Err(GcError::NoFrame))).unwrap();
            m.push_func_frame(f).unwrap();
            m.enter(|s| {
                assert!(s.imm(0x1001).is_none(), "a reference's tag made a value");
                let one = s.imm(1 << 2).unwrap();
                assert_eq!(
                    s.push_func_frame_with(f, &[one; 4]),
                    Err(GcError::OutOfBounds { index: 4, len: 3 })
                );
                assert_eq!(
                    s.push_func_frame_with(stranger, &[]),
                    Err(GcError::UnknownFunction { index: 1 })
                );
                assert_eq!(s.frame_slots(), Ok(3), "a refused push pushed");
            })
            .unwrap();
            build(&mut m, f, &shape, 8, 0);
            let total = m.enter(|s| sum(s, &shape, s.regs().unwrap().get(0).unwrap())).unwrap();
            m.pop_frame().unwrap();
            // 2^(8-k) nodes of depth k.
            assert_eq!(total, (0..=8).map(|k| k << (8 - k)).sum::<usize>());
        });
        drop(rt);
    }
}

/// A section's cleanup follows its object: it has not run while a frame slot holds the
/// object across a collection, and runs (once) after a collection finds it unreachable; one
/// cancelled first never runs.
#[test]
fn a_sections_cleanup_runs_after_its_object_is_unreachable() {
    use safepoint_sched::{Chan, Select};
    // Each cleanup sends its name; the channel has room for all, so no send blocks.
    let ran = Chan::<&'static str>::new(16);
    // The next cleanup to run; the deadline (10 s) only turns a hang into a failure.
    let next = |ran: &Chan<&'static str>| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        Select::new().recv(ran, |r| r.ok()).deadline(deadline, || None).wait()
    };
    with_sections(move |m, shape, gc| {
        // An object nobody holds, whose cleanup marks the end of one collection's cleanups:
        // cleanups of objects one sweep frees run in one batch, so a cleanup that wrongly ran
        // in that collection has run (and sent) before the marker's.
        let marker = |m: &mut SectionMutator, name: &'static str| {
            let r = ran.clone();
            m.enter(|s| {
                let z = s.alloc(shape).unwrap();
                s.add_cleanup(z, move || r.send(name));
            })
            .unwrap();
        };
        let (r1, r2) = (ran.clone(), ran.clone());
        // Set before the slot goes: `p`'s cleanup says whether it ran before that.
        let popped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = popped.clone();
        m.push_frame(1).unwrap();
        m.enter(|s| {
            let p = s.alloc(shape).unwrap();
            s.add_cleanup(p, move || {
                r1.send(if seen.load(std::sync::atomic::Ordering::SeqCst) {
                    "p"
                } else {
                    "p early"
                })
            });
            let q = s.alloc(shape).unwrap();
            assert!(s.add_cleanup(q, move || r2.send("q")).cancel());
            s.set_slot(0, p.value()).unwrap();
        })
        .unwrap();
        marker(m, "first");
        gc.collect();
        assert_eq!(next(&ran), Some("first"), "a cleanup ran while its object was in a slot");
        popped.store(true, std::sync::atomic::Ordering::SeqCst);
        m.pop_frame().unwrap();
        gc.collect();
        assert_eq!(next(&ran), Some("p"), "the cleanup of the unreachable object");
        // Once only, and never the cancelled one: the next collection runs the marker alone.
        marker(m, "second");
        gc.collect();
        assert_eq!(next(&ran), Some("second"));
        assert!(ran.is_empty());
    });
}

/// A section's register view (`Section::regs`) points into its frame's slots. Code inside the
/// section that reaches the goroutine's managed stack through the scheduler and moves its
/// buffer (a push that grows it, `shrink`, `release`) is refused with a described panic of
/// that goroutine before anything moves: the view never points into freed memory. Before the
/// refusal, the grow case wrote through the view into the freed buffer (the allocator
/// aborted the process).
#[test]
fn moving_the_managed_stack_inside_a_section_is_a_described_panic() {
    let reg = std::sync::Arc::new(Registry::new());
    let big = reg.register(FuncDesc::new("big", 20_000, 0, 1)).unwrap();
    let rt = Runtime::builder().procs(2).registry(reg).build().unwrap();
    let gc = Gc::builder().checkmark(true).poison(true).ignore_env().build(&rt).unwrap();
    let shape = pair_shape(&gc);
    for what in ["grow", "shrink", "release"] {
        let g = gc.clone();
        let h = rt
            .spawn(move || {
                let mut m = SectionMutator::new(&g).unwrap();
                if what == "shrink" {
                    // A large buffer, under a quarter used: `shrink` would move it.
                    safepoint_sched::with_managed_stack(|ms| {
                        ms.push(big);
                        ms.pop();
                    });
                }
                m.push_frame(2).unwrap();
                m.enter(|s| {
                    let p = s.alloc(&shape).unwrap();
                    let r = s.regs().unwrap();
                    safepoint_sched::with_managed_stack(|ms| match what {
                        "grow" => {
                            ms.push(big);
                            ms.pop();
                        }
                        "shrink" => {
                            ms.shrink();
                        }
                        _ => ms.release(),
                    });
                    r.set(0, p.value()).unwrap();
                    r.set(1, r.get(0).unwrap()).unwrap();
                })
                .unwrap();
            })
            .unwrap();
        let err = h.join().expect_err(what);
        let msg = err.message().unwrap_or_default().to_string();
        assert!(msg.contains("managed stack moved"), "{what}: {msg}");
    }
    // The heap and the runtime carry on.
    let g = gc.clone();
    let n = rt.block_on(move || {
        let mut m = SectionMutator::new(&g).unwrap();
        m.push_frame(1).unwrap();
        m.enter(|s| {
            let p = s.alloc_init(&shape, &[Value::nil(), s.int(5).unwrap()]).unwrap();
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
        m.pop_frame().unwrap();
        n
    });
    assert_eq!(n, Some(5));
}
