//! Every bad input an embedder can give the collector's API, one test each:
//! each is an `Err` naming what was wrong, or a described panic of the goroutine at fault,
//! never undefined behaviour or a corrupted heap. After each error the heap still works.
//! The one input that cannot be survived, garbage in a handle slot found by the marker, is a
//! fatal error, checked in a child process.

use std::process::Command;

use safepoint_gc::types::MAX_ARRAY_LEN;
use safepoint_gc::{
    AllocError, Gc, GcError, Global, Mutator, RefChan, Slot, TypeDesc, TypeError, TypeId, WordKind,
};
use safepoint_sched::Runtime;

struct Types {
    rec: TypeId,
    refs: TypeId,
    tagged: TypeId,
    bytes: TypeId,
}

fn types(gc: &Gc) -> Types {
    let t = gc.types();
    Types {
        rec: t
            .register(TypeDesc::Record {
                name: "rec".into(),
                words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
            })
            .unwrap(),
        refs: t.register(TypeDesc::RefArray { name: "refs".into() }).unwrap(),
        tagged: t.register(TypeDesc::TaggedArray { name: "tagged".into() }).unwrap(),
        bytes: t.register(TypeDesc::ByteArray { name: "bytes".into() }).unwrap(),
    }
}

/// Runs `f` on a goroutine with a mutator of a fresh checked heap, then checks the heap
/// still allocates and collects.
fn with_heap<T: Send + 'static>(f: impl FnOnce(&mut Mutator, &Types) -> T + Send + 'static) -> T {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder().checkmark(true).poison(true).ignore_env().build(&rt).unwrap();
    let ty = types(&gc);
    rt.block_on(move || {
        let mut m = Mutator::new(&gc).unwrap();
        let r = f(&mut m, &ty);
        m.scope(|m, [a, b]| {
            m.alloc(a, ty.rec).unwrap();
            m.alloc_bytes(b, ty.bytes, b"still fine").unwrap();
            m.store(a, 0, b).unwrap();
            m.collect();
            m.load(b, a, 0).unwrap();
            assert!(m.bytes(b).unwrap().eq_bytes(b"still fine"));
        });
        r
    })
}

fn is_wrong_kind(r: Result<impl std::fmt::Debug, GcError>, what_has: &str) {
    match r {
        Err(GcError::WrongKind { what, .. }) => {
            assert!(what.contains(what_has), "WrongKind says {what:?}, expected {what_has:?}")
        }
        other => panic!("expected WrongKind ({what_has}), got {other:?}"),
    }
}

#[test]
fn unknown_type_id_is_refused() {
    with_heap(|m, _| {
        let bogus = TypeId::from_u32(4242).unwrap();
        m.scope(|m, [s]| {
            assert_eq!(m.alloc(s, bogus), Err(GcError::Type(TypeError::UnknownType { id: 4242 })));
            assert_eq!(
                m.alloc_array(s, bogus, 3),
                Err(GcError::Type(TypeError::UnknownType { id: 4242 }))
            );
            assert_eq!(
                m.alloc_bytes(s, bogus, b"x"),
                Err(GcError::Type(TypeError::UnknownType { id: 4242 }))
            );
            assert!(m.is_null(s).unwrap(), "a failed allocation wrote the slot");
        });
    });
}

#[test]
fn alloc_array_of_a_record_type_is_refused() {
    with_heap(|m, t| {
        m.scope(|m, [s]| {
            is_wrong_kind(m.alloc_array(s, t.rec, 2), "alloc_array of a record type");
            is_wrong_kind(m.alloc_bytes(s, t.rec, b"ab"), "not a byte array");
            is_wrong_kind(m.alloc_bytes(s, t.refs, b"ab"), "not a byte array");
            assert!(m.is_null(s).unwrap());
        });
    });
}

#[test]
fn alloc_of_an_array_type_with_the_record_api_is_refused() {
    with_heap(|m, t| {
        m.scope(|m, [s, rec]| {
            // A record allocated first: the mutator remembers its plan, and must not take an
            // array type for it.
            m.alloc(rec, t.rec).unwrap();
            for ty in [t.refs, t.tagged, t.bytes] {
                let r = m.alloc(s, ty);
                assert!(
                    matches!(r, Err(GcError::Type(_) | GcError::WrongKind { .. })),
                    "alloc (record API) of array type {ty:?} gave {r:?} (slot now {:#x})",
                    m.word(s).unwrap()
                );
                assert!(m.is_null(s).unwrap());
            }
        });
    });
}

#[test]
fn array_length_too_long_is_refused() {
    with_heap(|m, t| {
        m.scope(|m, [s]| {
            for len in [MAX_ARRAY_LEN + 1, usize::MAX, usize::MAX / 8 + 1] {
                for ty in [t.refs, t.tagged, t.bytes] {
                    let r = m.alloc_array(s, ty, len);
                    assert!(
                        matches!(r, Err(GcError::Type(TypeError::ArrayTooLong { .. }))),
                        "length {len}: {r:?}"
                    );
                }
            }
            // A legal length whose object is larger than the heap can ever hold.
            let r = m.alloc_array(s, t.refs, 1 << 30);
            assert!(matches!(r, Err(GcError::Alloc(AllocError::TooLarge { .. }))), "{r:?}");
            assert!(m.is_null(s).unwrap());
        });
    });
}

#[test]
fn field_index_out_of_range_is_refused_for_records_and_arrays() {
    with_heap(|m, t| {
        m.scope(|m, [r, a, v]| {
            m.alloc(r, t.rec).unwrap();
            m.alloc_array(a, t.tagged, 4).unwrap();
            m.set_int(v, 7).unwrap();
            assert_eq!(m.store(r, 3, v), Err(GcError::OutOfBounds { index: 3, len: 3 }));
            assert_eq!(m.load(v, r, 3), Err(GcError::OutOfBounds { index: 3, len: 3 }));
            assert_eq!(m.read_word(r, 99), Err(GcError::OutOfBounds { index: 99, len: 3 }));
            assert_eq!(
                m.write_word(r, usize::MAX, 1),
                Err(GcError::OutOfBounds { index: usize::MAX, len: 3 })
            );
            assert_eq!(m.store(a, 4, v), Err(GcError::OutOfBounds { index: 4, len: 4 }));
            assert_eq!(
                m.load(v, a, usize::MAX),
                Err(GcError::OutOfBounds { index: usize::MAX, len: 4 })
            );
            // The last element is fine, and nothing was written past it.
            m.store(a, 3, v).unwrap();
            m.load(v, a, 3).unwrap();
            assert_eq!(m.int(v), Ok(7));
        });
    });
}

#[test]
fn immediate_into_a_ref_field_is_refused() {
    with_heap(|m, t| {
        m.scope(|m, [r, a, v]| {
            m.alloc(r, t.rec).unwrap();
            m.alloc_array(a, t.refs, 2).unwrap();
            m.set_int(v, 21).unwrap();
            assert!(matches!(m.store(r, 0, v), Err(GcError::NotAReference { .. })));
            assert!(matches!(m.store(a, 1, v), Err(GcError::NotAReference { .. })));
            // A tagged field takes it.
            m.store(r, 1, v).unwrap();
            m.load(v, r, 0).unwrap();
            assert!(m.is_null(v).unwrap(), "the refused store wrote the field");
        });
    });
}

#[test]
fn raw_word_through_load_and_ref_word_through_read_word_are_refused() {
    with_heap(|m, t| {
        m.scope(|m, [r, v]| {
            m.alloc(r, t.rec).unwrap();
            m.write_word(r, 2, 0xdead_beef).unwrap();
            is_wrong_kind(m.load(v, r, 2), "raw word: use read_word");
            is_wrong_kind(m.store(r, 2, v), "raw word: use write_word");
            is_wrong_kind(m.read_word(r, 0), "not a raw word");
            is_wrong_kind(m.read_word(r, 1), "not a raw word");
            is_wrong_kind(m.write_word(r, 0, 0x1234_5670), "not a raw word");
            is_wrong_kind(m.write_f64(r, 1, 1.5), "not a raw word");
            assert_eq!(m.read_word(r, 2), Ok(0xdead_beef));
            m.load(v, r, 0).unwrap();
            assert!(m.is_null(v).unwrap(), "the refused write_word wrote a ref field");
        });
    });
}

#[test]
fn byte_ops_on_objects_that_are_not_byte_arrays_are_refused() {
    with_heap(|m, t| {
        m.scope(|m, [r, a, b, v]| {
            m.alloc(r, t.rec).unwrap();
            m.alloc_array(a, t.refs, 8).unwrap();
            m.alloc_bytes(b, t.bytes, b"abc").unwrap();
            for s in [r, a] {
                is_wrong_kind(m.bytes(s), "not a byte array");
                is_wrong_kind(m.write_bytes(s, 0, b"x"), "not a byte array");
            }
            // And word operations on a byte array.
            is_wrong_kind(m.load(v, b, 0), "a byte array has no word fields");
            is_wrong_kind(m.store(b, 0, v), "a byte array has no word fields");
            is_wrong_kind(m.read_word(b, 0), "a byte array has no word fields");
            // Bytes of null or an immediate: not a reference.
            m.set_int(v, 3).unwrap();
            assert!(matches!(m.bytes(v), Err(GcError::NotAReference { .. })));
            m.clear(v).unwrap();
            assert!(matches!(m.write_bytes(v, 0, b"x"), Err(GcError::NotAReference { .. })));
        });
    });
}

#[test]
fn write_bytes_out_of_range_is_refused_and_writes_nothing() {
    with_heap(|m, t| {
        m.scope(|m, [b]| {
            m.alloc_bytes(b, t.bytes, b"hello").unwrap();
            assert_eq!(m.write_bytes(b, 3, b"xyz"), Err(GcError::OutOfBounds { index: 6, len: 5 }));
            assert_eq!(m.write_bytes(b, 6, b""), Err(GcError::OutOfBounds { index: 6, len: 5 }));
            assert!(matches!(
                m.write_bytes(b, usize::MAX, b"ab"),
                Err(GcError::OutOfBounds { len: 5, .. })
            ));
            m.write_bytes(b, 5, b"").unwrap();
            m.write_bytes(b, 3, b"LO").unwrap();
            assert!(m.bytes(b).unwrap().eq_bytes(b"helLO"));
            assert_eq!(m.bytes(b).unwrap().get(5), None);
        });
    });
}

#[test]
fn int_of_a_reference_or_null_is_refused() {
    with_heap(|m, t| {
        m.scope(|m, [r, n]| {
            m.alloc(r, t.rec).unwrap();
            assert!(matches!(m.int(r), Err(GcError::NotAnInteger { .. })));
            assert_eq!(m.int(n), Err(GcError::NotAnInteger { found: 0 }));
            m.set_int(n, 0).unwrap();
            assert_eq!(m.int(n), Ok(0), "zero is an integer, not null");
            assert!(!m.is_null(n).unwrap());
        });
    });
}

#[test]
fn set_int_out_of_range_is_refused() {
    with_heap(|m, _| {
        m.scope(|m, [s]| {
            // The default tag rule leaves 63 bits.
            for v in [i64::MAX, i64::MIN, 1 << 62, -(1 << 62) - 1] {
                assert_eq!(m.set_int(s, v), Err(GcError::IntegerOutOfRange { value: v }));
                assert!(m.is_null(s).unwrap(), "refused set_int({v}) wrote the slot");
            }
            for v in [(1 << 62) - 1, -(1 << 62), -1, 0, 1] {
                m.set_int(s, v).unwrap();
                assert_eq!(m.int(s), Ok(v));
            }
        });
    });
}

#[test]
fn slot_escaping_its_scope_is_stale() {
    with_heap(|m, t| {
        let escaped: Slot = m.scope(|m, [s]| {
            m.alloc(s, t.rec).unwrap();
            s
        });
        // A later scope at the same depth gets the same stack words, but not the old name.
        m.scope(|m, [fresh]| {
            assert_eq!(m.is_null(escaped), Err(GcError::StaleSlot));
            assert_eq!(m.alloc(escaped, t.rec), Err(GcError::StaleSlot));
            assert_eq!(m.copy(fresh, escaped), Err(GcError::StaleSlot));
            assert_eq!(m.copy(escaped, fresh), Err(GcError::StaleSlot));
            assert_eq!(m.set_int(escaped, 1), Err(GcError::StaleSlot));
            assert_eq!(m.store(fresh, 0, escaped), Err(GcError::StaleSlot));
            assert_eq!(m.load(escaped, fresh, 0), Err(GcError::StaleSlot));
            assert_eq!(m.word(escaped), Err(GcError::StaleSlot));
            assert!(m.is_null(fresh).unwrap());
        });
        assert_eq!(m.int(escaped), Err(GcError::StaleSlot));
    });
}

/// The checked mutator's fast paths (`load`, `store`, `alloc`, the slot reads and writes)
/// check the whole stack once, by the innermost scope's frame on top, instead of each slot's
/// frame: a scope frame popped from under the mutator, with another frame of its size pushed
/// in its place, is still a stale slot on every path, and the enclosing scope's slots go on
/// working (through the general path) while the foreign frame is on top, which is never
/// written.
#[test]
fn a_scope_frame_replaced_under_the_mutator_is_a_stale_slot_on_every_path() {
    with_heap(|m, t| {
        let g = m.gc();
        let rec = t.rec;
        m.scope(|m, [keep]| {
            m.alloc(keep, rec).unwrap();
            let g2 = g.clone();
            let h = safepoint_sched::go(move || {
                let mut m = Mutator::new(&g2).unwrap();
                m.scope(|m, [a]| {
                    m.alloc(a, rec).unwrap();
                    m.scope(|m, [b]| {
                        m.alloc(b, rec).unwrap();
                        m.store(a, 0, b).unwrap(); // the fast paths know `rec` now
                        // Pop the inner scope's frame and push a plain one of its size.
                        safepoint_sched::with_managed_stack(|ms| {
                            ms.pop();
                            ms.push_handles(1);
                        });
                        assert_eq!(m.is_null(b), Err(GcError::StaleSlot));
                        assert_eq!(m.word(b), Err(GcError::StaleSlot));
                        assert_eq!(m.alloc(b, rec), Err(GcError::StaleSlot));
                        assert_eq!(m.clear(b), Err(GcError::StaleSlot));
                        assert_eq!(m.set_int(b, 1), Err(GcError::StaleSlot));
                        assert_eq!(m.copy(b, a), Err(GcError::StaleSlot));
                        assert_eq!(m.copy(a, b), Err(GcError::StaleSlot));
                        assert_eq!(m.load(b, a, 0), Err(GcError::StaleSlot));
                        assert_eq!(m.store(a, 0, b), Err(GcError::StaleSlot));
                        // The enclosing scope's frame is intact: its slots still work.
                        m.alloc(a, rec).unwrap();
                        m.load(a, a, 0).unwrap();
                        assert!(m.is_null(a).unwrap());
                        // Nothing was written to the plain frame.
                        assert_eq!(safepoint_sched::with_managed_stack(|ms| ms.get(0)), 0);
                    });
                });
            });
            let e = h.join().expect_err("the scope's end must find its frame gone");
            let msg = e.message().unwrap_or_default().to_owned();
            assert!(msg.contains("not as the scope left it"), "panic message: {msg:?}");
            m.collect();
            assert_eq!(m.type_of(keep), Ok(rec));
        });
    });
}

/// The enclosing scope's frame replaced *before* an inner scope is pushed: the inner scope's
/// frame on top, as pushed, says nothing of the frames below it then, so the enclosing
/// scope's slots are still stale on every path (the fast paths must not take the plain frame
/// in its place for the scope's), and nothing is written to the plain frame.
#[test]
fn an_enclosing_frame_replaced_before_an_inner_scope_is_a_stale_slot_inside_it() {
    with_heap(|m, t| {
        let rec = t.rec;
        let g2 = m.gc();
        let h = safepoint_sched::go(move || {
            let mut m = Mutator::new(&g2).unwrap();
            m.scope(|m, [a]| {
                m.alloc(a, rec).unwrap();
                safepoint_sched::with_managed_stack(|ms| {
                    ms.pop();
                    ms.push_handles(1);
                });
                m.scope(|m, [b]| {
                    m.alloc(b, rec).unwrap();
                    m.store(b, 0, b).unwrap(); // the fast paths know `rec` now
                    assert_eq!(m.alloc(a, rec), Err(GcError::StaleSlot));
                    assert_eq!(m.is_null(a), Err(GcError::StaleSlot));
                    assert_eq!(m.word(a), Err(GcError::StaleSlot));
                    assert_eq!(m.clear(a), Err(GcError::StaleSlot));
                    assert_eq!(m.copy(a, b), Err(GcError::StaleSlot));
                    assert_eq!(m.copy(b, a), Err(GcError::StaleSlot));
                    assert_eq!(m.load(a, b, 0), Err(GcError::StaleSlot));
                    assert_eq!(m.load(b, a, 0), Err(GcError::StaleSlot));
                    assert_eq!(m.store(b, 0, a), Err(GcError::StaleSlot));
                    assert_eq!(m.store(a, 0, b), Err(GcError::StaleSlot));
                    // The inner scope's own slots work.
                    m.load(b, b, 0).unwrap();
                    assert!(m.is_ref(b).unwrap());
                });
                // Nothing was written to the plain frame.
                assert_eq!(safepoint_sched::with_managed_stack(|ms| ms.get(0)), 0);
            });
        });
        let e = h.join().expect_err("the scope's end must find its frame gone");
        let msg = e.message().unwrap_or_default().to_owned();
        assert!(msg.contains("not as the scope left it"), "panic message: {msg:?}");
    });
}

/// A scope whose end finds its frame gone leaves that frame behind (a described panic, which
/// the program may catch). Such a frame, at the place of a live scope's frame and of its size,
/// is not that scope's frame: with the enclosing scope's frame replaced beneath it, the
/// enclosing scope's slots are still stale on every path after the panic is caught.
#[test]
fn a_frame_left_by_a_failed_scope_end_is_not_taken_for_a_live_scope() {
    with_heap(|m, t| {
        let rec = t.rec;
        let g2 = m.gc();
        let h = safepoint_sched::go(move || {
            let mut m = Mutator::new(&g2).unwrap();
            m.scope(|m, [a]| {
                m.alloc(a, rec).unwrap();
                m.scope(|m, [b]| {
                    m.alloc(b, rec).unwrap();
                    m.store(b, 0, b).unwrap();
                    // Both scopes' frames popped; a plain frame where the outer one was.
                    safepoint_sched::with_managed_stack(|ms| {
                        ms.pop();
                        ms.pop();
                        ms.push_handles(1);
                    });
                    // A scope of the inner one's size, at its place, whose end fails.
                    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        m.scope(|_, [_c]| {
                            safepoint_sched::with_managed_stack(|ms| ms.push_handles(1))
                        })
                    }));
                    assert!(failed.is_err(), "the scope's end must find its frame covered");
                    // Uncover the frame it left, a sealed frame where `b`'s was.
                    safepoint_sched::with_managed_stack(|ms| ms.pop());
                    assert_eq!(m.alloc(a, rec), Err(GcError::StaleSlot));
                    assert_eq!(m.is_null(a), Err(GcError::StaleSlot));
                    assert_eq!(m.clear(a), Err(GcError::StaleSlot));
                    assert_eq!(m.load(a, a, 0), Err(GcError::StaleSlot));
                    assert_eq!(m.store(a, 0, a), Err(GcError::StaleSlot));
                    // Nothing was written to the plain frame's slot, below the frame left
                    // behind (each of one slot and two header words).
                    assert_eq!(
                        safepoint_sched::with_managed_stack(|ms| ms.get_at(ms.used_words() - 6)),
                        0
                    );
                });
            });
        });
        let e = h.join().expect_err("the outer scope's end must find its frame gone");
        let msg = e.message().unwrap_or_default().to_owned();
        assert!(msg.contains("not as the scope left it"), "panic message: {msg:?}");
    });
}

/// The fast paths of `load` and `store` know the last type they resolved by its whole header
/// word: objects of another type with the same size, arrays of another length, and words
/// they do not handle (raw, weak) all get the general path's answer, never the cached
/// type's. Without the debugging modes, where the fast paths run without the heap check.
#[test]
fn the_checked_fast_paths_tell_types_and_lengths_apart() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder().ignore_env().build(&rt).unwrap();
    let t = types(&gc);
    let rec2 = |name: &str, words| {
        gc.types().register(TypeDesc::Record { name: name.into(), words }).unwrap()
    };
    let ab = rec2("ab", vec![WordKind::Ref, WordKind::Tagged]);
    let ba = rec2("ba", vec![WordKind::Tagged, WordKind::Ref]);
    let weak = rec2("weakbox", vec![WordKind::Weak, WordKind::Ref]);
    rt.block_on(move || {
        let mut m = Mutator::new(&gc).unwrap();
        m.scope(|m, [a, b, v, x, r2, r3, t2, w, raw]| {
            m.alloc(a, ab).unwrap();
            m.alloc(b, ba).unwrap();
            m.set_int(v, 7).unwrap();
            m.store(a, 1, v).unwrap(); // `ab` resolved: word 1 tagged
            assert_eq!(m.store(b, 1, v), Err(GcError::NotAReference { found: m.word(v).unwrap() }));
            m.store(b, 0, v).unwrap(); // `ba` resolved: word 0 tagged
            m.load(x, a, 1).unwrap();
            assert_eq!(m.int(x), Ok(7));
            m.load(x, b, 1).unwrap();
            assert!(m.is_null(x).unwrap());
            m.store(a, 0, b).unwrap();
            m.store(b, 1, a).unwrap();
            m.load(x, b, 1).unwrap();
            assert!(m.same(x, a).unwrap());
            assert_eq!(m.load(x, a, 2), Err(GcError::OutOfBounds { index: 2, len: 2 }));
            assert_eq!(m.store(a, 64, v), Err(GcError::OutOfBounds { index: 64, len: 2 }));
            // Arrays of one type and two lengths, and of the other kind.
            m.alloc_array(r2, t.refs, 2).unwrap();
            m.alloc_array(r3, t.refs, 3).unwrap();
            m.alloc_array(t2, t.tagged, 2).unwrap();
            m.store(r2, 1, a).unwrap();
            m.store(r3, 2, a).unwrap();
            assert_eq!(m.store(r2, 2, a), Err(GcError::OutOfBounds { index: 2, len: 2 }));
            m.load(x, r3, 2).unwrap();
            assert!(m.same(x, a).unwrap());
            m.store(t2, 0, v).unwrap();
            assert!(matches!(m.store(r2, 0, v), Err(GcError::NotAReference { .. })));
            m.load(x, t2, 0).unwrap();
            assert_eq!(m.int(x), Ok(7));
            // A raw word, after the record was resolved through a reference word.
            m.alloc(raw, t.rec).unwrap();
            m.store(raw, 0, a).unwrap();
            is_wrong_kind(m.load(x, raw, 2), "raw word");
            is_wrong_kind(m.store(raw, 2, v), "raw word");
            // A weak word holds a cell: the general path reads the object through it.
            m.alloc(w, weak).unwrap();
            m.store(w, 1, a).unwrap(); // `weakbox` resolved through its reference word
            m.store(w, 0, a).unwrap();
            m.load(x, w, 0).unwrap();
            assert!(m.same(x, a).unwrap());
            assert_eq!(m.store(w, 0, v), Err(GcError::NotAReference { found: m.word(v).unwrap() }));
            // A slot holding an integer is no object on either path.
            assert!(matches!(m.load(x, v, 0), Err(GcError::NotAReference { .. })));
            assert!(matches!(m.store(v, 0, a), Err(GcError::NotAReference { .. })));
        });
    });
}

#[test]
fn slot_of_an_ended_inner_scope_is_stale_while_the_outer_stays_valid() {
    with_heap(|m, t| {
        m.scope(|m, [outer]| {
            let inner = m.scope(|m, [inner]| {
                m.alloc(inner, t.rec).unwrap();
                m.copy(outer, inner).unwrap();
                inner
            });
            assert_eq!(m.type_of(inner), Err(GcError::StaleSlot));
            // A new inner scope reuses the words: the old slot is still stale.
            m.scope_n(3, |m, s| {
                m.set_int(s[0], 5).unwrap();
                assert_eq!(m.int(inner), Err(GcError::StaleSlot));
            });
            assert_eq!(m.type_of(outer), Ok(t.rec));
        });
    });
}

#[test]
fn slot_of_a_dropped_mutator_is_stale_on_the_next() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder().ignore_env().build(&rt).unwrap();
    let t = types(&gc);
    rt.block_on(move || {
        let mut m = Mutator::new(&gc).unwrap();
        let old = m.scope(|_, [s]| s);
        drop(m);
        let mut m = Mutator::new(&gc).unwrap();
        m.scope(|m, [_s]| {
            assert_eq!(m.alloc(old, t.rec), Err(GcError::StaleSlot));
        });
    });
}

#[test]
fn mutator_off_the_runtime_on_another_runtime_and_twice_is_refused() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let other = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder().ignore_env().build(&rt).unwrap();
    // Off any goroutine.
    assert_eq!(Mutator::new(&gc).map(drop), Err(GcError::WrongRuntime));
    // On a goroutine of another runtime.
    let g2 = gc.clone();
    assert_eq!(other.block_on(move || Mutator::new(&g2).map(drop)), Err(GcError::WrongRuntime));
    // Twice on one goroutine; again after the first is dropped.
    let g2 = gc.clone();
    rt.block_on(move || {
        let m = Mutator::new(&g2).unwrap();
        assert_eq!(Mutator::new(&g2).map(drop), Err(GcError::MutatorActive));
        drop(m);
        let m = Mutator::new(&g2).unwrap();
        assert_eq!(Mutator::new(&g2).map(drop), Err(GcError::MutatorActive));
        drop(m);
        // Another goroutine is not affected by this one's mutator.
        let _m = Mutator::new(&g2).unwrap();
        let g3 = g2.clone();
        safepoint_sched::go(move || Mutator::new(&g3).map(drop)).join().unwrap().unwrap();
    });
}

#[test]
fn global_and_channel_of_another_heap_are_refused() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder().ignore_env().build(&rt).unwrap();
    let other = Gc::builder().ignore_env().build(&rt).unwrap();
    let t = types(&gc);
    rt.block_on(move || {
        let foreign = Global::new(&other);
        let ch = RefChan::new(&other, 1);
        let mut m = Mutator::new(&gc).unwrap();
        m.scope(|m, [s]| {
            m.alloc(s, t.rec).unwrap();
            assert_eq!(m.store_global(&foreign, s), Err(GcError::WrongHeap));
            assert_eq!(m.load_global(s, &foreign), Err(GcError::WrongHeap));
            assert_eq!(m.send(&ch, s), Err(GcError::WrongHeap));
            assert_eq!(m.recv(&ch, s), Err(GcError::WrongHeap));
            assert!(ch.is_empty());
            assert_eq!(m.type_of(s), Ok(t.rec));
        });
        // The foreign heap never saw our object: its global still holds null.
        let mut om = {
            drop(m);
            Mutator::new(&other).unwrap()
        };
        om.scope(|om, [s]| {
            om.load_global(s, &foreign).unwrap();
            assert!(om.is_null(s).unwrap());
        });
    });
}

#[test]
fn a_type_id_of_another_heap_is_refused() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder().ignore_env().build(&rt).unwrap();
    let other = Gc::builder().ignore_env().build(&rt).unwrap();
    let ours = types(&gc);
    // The other heap registers the same layout under its own ids: the numbers coincide,
    // so only the id's registry can tell them apart.
    let theirs = types(&other);
    assert_eq!(ours.rec.get(), theirs.rec.get());
    fn foreign<T>(id: TypeId) -> Result<T, GcError> {
        Err(GcError::Type(TypeError::ForeignType { id: id.get() }))
    }
    assert_eq!(gc.types().get(theirs.rec), None);
    assert_eq!(gc.types().header(theirs.rec, 0), Err(TypeError::ForeignType { id: 1 }));
    assert_eq!(safepoint_gc::Shape::new(&gc, theirs.rec, 0), foreign(theirs.rec));
    // A number (or an id read from a header) names no registry and is taken as before.
    let plain = TypeId::from_u32(ours.rec.get()).unwrap();
    assert_eq!(plain, ours.rec);
    assert!(gc.types().get(plain).is_some());
    rt.block_on(move || {
        let mut m = Mutator::new(&gc).unwrap();
        m.scope(|m, [s]| {
            assert_eq!(m.alloc(s, theirs.rec), foreign(theirs.rec));
            assert_eq!(m.alloc_array(s, theirs.refs, 2), foreign(theirs.refs));
            assert_eq!(m.alloc_bytes(s, theirs.bytes, b"x"), foreign(theirs.bytes));
            assert!(m.is_null(s).unwrap(), "a refused allocation wrote the slot");
            m.alloc(s, plain).unwrap();
            assert_eq!(m.type_of(s), Ok(ours.rec));
            // The mutator remembers the last record type it allocated: an id of the same
            // number from another registry is still refused after ours was allocated.
            m.alloc(s, ours.rec).unwrap();
            m.alloc(s, ours.rec).unwrap();
            assert_eq!(m.alloc(s, theirs.rec), foreign(theirs.rec));
            assert_eq!(m.type_of(s), Ok(ours.rec));
        });
        let raw = {
            drop(m);
            safepoint_gc::RawMutator::new(&gc).unwrap()
        };
        assert_eq!(raw.shape(theirs.rec, 0), foreign(theirs.rec));
        assert!(raw.shape(ours.rec, 0).is_ok());
    });
}

/// `Gc::collect` from a thread outside the runtime (and from a goroutine of another runtime)
/// runs a full cycle on the collector's driver and waits for it: the garbage is gone and what
/// a global holds survives, in both collector modes.
#[test]
fn collect_from_a_host_thread_runs_a_cycle_and_waits_for_it() {
    for stop_the_world in [false, true] {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let other = Runtime::builder().procs(1).build().unwrap();
        let gc = Gc::builder()
            .stop_the_world(stop_the_world)
            .checkmark(true)
            .poison(true)
            .gc_percent(u32::MAX)
            .ignore_env()
            .build(&rt)
            .unwrap();
        let t = types(&gc);
        let g2 = gc.clone();
        let kept = rt.block_on(move || {
            let mut m = Mutator::new(&g2).unwrap();
            m.scope(|m, [s]| {
                for _ in 0..1000 {
                    m.alloc_bytes(s, t.bytes, &[1; 100]).unwrap();
                }
                m.alloc_bytes(s, t.bytes, b"kept").unwrap();
                m.new_global(s).unwrap()
            })
        });
        let before = gc.cycles();
        let objects = gc.stats().heap.live_objects;
        assert!(objects > 100, "{objects} objects before the collection");
        // From this thread, which is no goroutine.
        gc.collect();
        assert_eq!(gc.cycles(), before + 1, "stop_the_world {stop_the_world}");
        assert_eq!(gc.stats().heap.live_objects, 1, "stop_the_world {stop_the_world}");
        // From a goroutine of another runtime.
        let g2 = gc.clone();
        other.block_on(move || g2.collect());
        assert_eq!(gc.cycles(), before + 2, "stop_the_world {stop_the_world}");
        let g2 = gc.clone();
        rt.block_on(move || {
            let mut m = Mutator::new(&g2).unwrap();
            m.scope(|m, [s]| {
                m.load_global(s, &kept).unwrap();
                assert!(m.bytes(s).unwrap().eq_bytes(b"kept"));
            });
        });
    }
}

/// Writing a scope's slot through the managed stack's safe `set` is refused with a panic of
/// the goroutine that tried, every time; the scope, the heap and the other goroutines go on.
#[test]
fn set_on_a_sealed_scope_frame_is_a_described_panic() {
    with_heap(|m, t| {
        let g = m.gc();
        m.scope(|m, [s]| {
            m.alloc(s, t.rec).unwrap();
            let g2 = g.clone();
            let h = safepoint_sched::go(move || {
                let mut m = Mutator::new(&g2).unwrap();
                // Even null, through the safe checked form: the frame is sealed.
                let reg = safepoint_stackmap::Registry::new();
                m.scope(|_, [_s]| {
                    safepoint_sched::with_managed_stack(|ms| ms.set_checked(&reg, 0, 0))
                })
            });
            let e = h.join().expect_err("set on a sealed frame must panic");
            let msg = e.message().unwrap_or_default().to_owned();
            assert!(msg.contains("sealed frame written directly"), "panic message: {msg:?}");
            assert_eq!(m.type_of(s), Ok(t.rec));
        });
    });
}

/// Issue 25: safe code could plant a word the marker then died on ("marking found a
/// reference ... outside the heap"): `ManagedStack::set` on a handle frame or a function's
/// reference slot, `push_with_args`. Those are `unsafe` now; their safe forms refuse any
/// word but null in a slot a collector scans, with a described panic of the goroutine, and
/// the heap collects on.
#[test]
fn garbage_through_the_safe_stack_writes_is_a_described_panic() {
    with_heap(|m, t| {
        let g = m.gc();
        m.scope(|m, [s]| {
            m.alloc(s, t.rec).unwrap();
            let reg = std::sync::Arc::new(safepoint_stackmap::Registry::new());
            let f = reg
                .register(safepoint_stackmap::FuncDesc::new("f", 2, 1, 1).refs_at(0, &[0]))
                .unwrap();
            type Try = Box<dyn FnOnce(&safepoint_stackmap::ManagedStack) + Send>;
            let tries: [(&str, Try); 2] = [
                (
                    "handle frame's slot",
                    Box::new({
                        let reg = reg.clone();
                        move |ms| {
                            ms.push_handles(2);
                            ms.set_checked(&reg, 1, 0x1234_5670);
                        }
                    }),
                ),
                (
                    "reference slot",
                    Box::new({
                        let reg = reg.clone();
                        move |ms| ms.push_with_args_checked(&reg, f, &[0x1234_5670])
                    }),
                ),
            ];
            for (what, bad) in tries {
                let g2 = g.clone();
                let h = safepoint_sched::go(move || {
                    let _m = Mutator::new(&g2).unwrap();
                    safepoint_sched::with_managed_stack(bad);
                });
                let e = h.join().expect_err("a garbage word in a scanned slot must be refused");
                let msg = e.message().unwrap_or_default().to_owned();
                assert!(
                    msg.contains("0x12345670") && msg.contains(what) && msg.contains("only null"),
                    "panic message: {msg:?}"
                );
                m.collect();
                assert_eq!(m.type_of(s), Ok(t.rec));
            }
        });
    });
}

/// A scope started inside a blocking call (where the goroutine's managed stack is frozen) is
/// the same described panic every time, whether or not a preemption request is pending; an
/// allocation or a channel operation there is `GcError::NoP`; a collection works (on the
/// driver, as from a host thread).
#[test]
fn scope_inside_a_blocking_call_is_refused_every_time() {
    with_heap(|m, t| {
        let g = m.gc();
        m.scope(|m, [s]| {
            assert_eq!(safepoint_sched::blocking(|| m.alloc(s, t.rec)), Err(GcError::NoP));
            assert!(m.is_null(s).unwrap());
        });
        // A channel operation there, which would park the goroutine, is refused too.
        let ch = RefChan::new(&g, 1);
        m.scope(|m, [s]| {
            m.alloc(s, t.rec).unwrap();
            assert_eq!(safepoint_sched::blocking(|| m.send(&ch, s)), Err(GcError::NoP));
            assert_eq!(safepoint_sched::blocking(|| m.recv(&ch, s)), Err(GcError::NoP));
            assert!(ch.is_empty());
        });
        // A collection asked for there runs on the collector's driver, as one from a thread
        // outside the runtime does, and is waited for.
        let before = g.cycles();
        safepoint_sched::blocking(|| m.collect());
        assert!(g.cycles() > before, "no cycle ran for a collect inside a blocking call");
        for nested in [false, true] {
            for _ in 0..3 {
                let g2 = g.clone();
                let h = safepoint_sched::go(move || {
                    let mut m = Mutator::new(&g2).unwrap();
                    let body = |m: &mut Mutator| {
                        safepoint_sched::blocking(|| m.scope(|_, [_s]| ()));
                    };
                    if nested { m.scope(|m, [_outer]| body(m)) } else { body(&mut m) }
                });
                let e = h.join().expect_err("a scope inside a blocking call must panic");
                let msg = e.message().unwrap_or_default().to_owned();
                assert!(
                    msg.contains("Mutator::scope: not allowed inside a blocking call"),
                    "panic message: {msg:?}"
                );
            }
        }
    });
}

/// `Pin::new_global` and `Pin::set_global` are safe, so a value that is not the reference of
/// a live object of this heap is an error there, not a root that aborts the next marking:
/// garbage with the reference tag, an address outside the heap, a reference into the middle
/// of an object, an object of another heap, and a freed object.
#[test]
fn a_global_of_a_value_that_is_not_a_live_reference_is_refused() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder().checkmark(true).gc_percent(u32::MAX).ignore_env().build(&rt).unwrap();
    let other = Gc::builder().ignore_env().build(&rt).unwrap();
    let t = types(&gc);
    let ot = types(&other);
    let (g2, o2) = (gc.clone(), other.clone());
    rt.block_on(move || {
        // An object of the other heap.
        let foreign = {
            let mut raw = safepoint_gc::RawMutator::new(&o2).unwrap();
            let shape = raw.shape(ot.rec, 0).unwrap();
            let (v, keep) = raw
                .enter(|p| {
                    let (v, _) = p.alloc(shape).unwrap();
                    (v, p.new_global(v).unwrap())
                })
                .unwrap();
            std::mem::forget(keep);
            v
        };
        let mut raw = safepoint_gc::RawMutator::new(&g2).unwrap();
        let shape = raw.shape(t.rec, 0).unwrap();
        let rule = raw.tag_rule();
        // An object that dies: unreachable once its section ends. One collection marks it
        // unreachable (the sweep is finished by `collect`, so it is then freed); the value is
        // kept only as a number.
        let dead = raw.enter(|p| p.alloc(shape).unwrap().0).unwrap();
        let live = raw
            .enter(|p| {
                let (v, _) = p.alloc(shape).unwrap();
                p.new_global(v).unwrap()
            })
            .unwrap();
        g2.collect();
        let live_v = raw.enter(|p| p.global(&live).unwrap()).unwrap();
        let bad =
            [0x1234_5670 | rule.ref_tag, ((live_v & !rule.mask) + 8) | rule.ref_tag, foreign, dead];
        raw.enter(|p| {
            for &v in &bad {
                assert_eq!(p.new_global(v).map(drop), Err(GcError::NotAReference { found: v }));
                assert_eq!(p.set_global(&live, v), Err(GcError::NotAReference { found: v }));
                assert_eq!(p.global(&live), Ok(live_v), "a refused set_global changed the global");
            }
            // Null, an immediate and a live reference are taken.
            for v in [0, (7 << 3) | 1, live_v] {
                drop(p.new_global(v).unwrap());
            }
        })
        .unwrap();
        // None of the refused values became a root: the next marking (with checkmark) is clean.
        g2.collect();
    });
    // (An object found unreachable and not yet swept is refused too: `Gc::collect` sweeps
    // before it returns, so that case is the heap's unit test `holds_live_follows_...`.)
    drop(other);
}

/// `RawMutator::collect_for_memory` inside a blocking call (no P to run a cycle on) runs the
/// cycle on the driver, as `Gc::collect` does there, and the collector stays usable.
#[test]
fn collect_for_memory_inside_a_blocking_call_leaves_the_heap_working() {
    with_heap(|m, t| {
        let g = m.gc();
        let before = g.cycles();
        let g2 = g.clone();
        safepoint_sched::go(move || {
            let mut raw = safepoint_gc::RawMutator::new(&g2).unwrap();
            safepoint_sched::blocking(|| raw.collect_for_memory());
        })
        .join()
        .unwrap();
        assert!(g.cycles() > before);
        m.scope(|m, [s]| {
            m.alloc(s, t.rec).unwrap();
            m.collect();
            assert_eq!(m.type_of(s), Ok(t.rec));
        });
    });
}

#[test]
fn recv_on_a_closed_channel_is_false_and_send_on_it_is_closed() {
    with_heap(|m, t| {
        let ch = RefChan::new(&m.gc(), 2);
        m.scope(|m, [a, b]| {
            m.alloc(a, t.rec).unwrap();
            m.send(&ch, a).unwrap();
            ch.close();
            assert_eq!(m.send(&ch, a), Err(GcError::Closed));
            // What was buffered is still delivered, then the channel reads as closed.
            assert_eq!(m.recv(&ch, b), Ok(true));
            assert!(m.same(a, b).unwrap());
            assert_eq!(m.recv(&ch, b), Ok(false));
            assert!(m.is_null(b).unwrap(), "a closed recv leaves null in its slot");
            assert_eq!(m.recv(&ch, b), Ok(false));
        });
    });
}

#[test]
fn hard_limit_fails_the_allocating_goroutine_and_others_keep_working_stop_the_world() {
    hard_limit(true);
}

#[test]
fn hard_limit_fails_the_allocating_goroutine_and_others_keep_working_concurrent() {
    hard_limit(false);
}

/// A goroutine keeps allocating 64 KiB chunks it keeps alive until the 8 MiB hard limit
/// refuses one (or the small object linking it); another allocates garbage meanwhile (each
/// allocation succeeds or is refused as out of memory), then allocates and collects normally
/// once the first has let go.
fn hard_limit(stop_the_world: bool) {
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
    let bytes = gc.types().register(TypeDesc::ByteArray { name: "chunk".into() }).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (g1, g2, d1, d2) = (gc.clone(), gc.clone(), done.clone(), done.clone());
    // A hog keeps every 64 KiB chunk it allocates alive until it is refused.
    let hog = rt
        .spawn(move || {
            let mut m = Mutator::new(&g1).unwrap();
            let (chunks, err) = m.scope(|m, [head, node, data]| {
                let mut n = 0usize;
                loop {
                    if let Err(e) = m.alloc_bytes(data, bytes, &[n as u8; 64 << 10]) {
                        return (n, e);
                    }
                    // The small link can be the one refused: at the limit, the other
                    // goroutine's garbage may take the pages and slots a collection frees
                    // before this goroutine's retry gets to them.
                    if let Err(e) = m.alloc(node, link) {
                        return (n, e);
                    }
                    m.store(node, 0, head).unwrap();
                    m.store(node, 1, data).unwrap();
                    m.copy(head, node).unwrap();
                    n += 1;
                    assert!(n < 1000, "8 MiB hard limit never reached");
                }
            });
            d1.store(true, std::sync::atomic::Ordering::Relaxed);
            (chunks, err)
        })
        .unwrap();
    // Another goroutine allocates garbage meanwhile: each allocation succeeds or is refused,
    // and once the hog has let go, it allocates and collects normally.
    let worker = rt
        .spawn(move || {
            let mut m = Mutator::new(&g2).unwrap();
            let mut refused = 0;
            m.scope(|m, [a, b]| {
                while !d2.load(std::sync::atomic::Ordering::Relaxed) {
                    match m.alloc(a, link) {
                        Ok(()) => {}
                        Err(GcError::Alloc(AllocError::OutOfMemory { .. })) => refused += 1,
                        Err(e) => panic!("unexpected {e}"),
                    }
                    m.poll();
                }
                for i in 0..2000 {
                    m.alloc(a, link).unwrap();
                    m.alloc_bytes(b, bytes, &[i as u8; 100]).unwrap();
                    m.store(a, 1, b).unwrap();
                }
                m.collect();
                m.load(b, a, 1).unwrap();
                assert!(m.bytes(b).unwrap().eq_bytes(&[1999u32 as u8; 100]));
            });
            refused
        })
        .unwrap();
    let (chunks, err) = hog.join().unwrap();
    assert!(matches!(err, GcError::Alloc(AllocError::OutOfMemory { .. })), "{err:?}");
    assert!((64..=128).contains(&chunks), "{chunks} chunks of 64 KiB under an 8 MiB limit");
    let _refused = worker.join().unwrap();
    // With the hog's chunks unreachable, the heap is usable to the limit again.
    let g3 = gc.clone();
    rt.block_on(move || {
        let mut m = Mutator::new(&g3).unwrap();
        m.scope(|m, [d]| {
            for _ in 0..200 {
                m.alloc_bytes(d, bytes, &[7; 64 << 10]).unwrap();
            }
        });
    });
    assert!(gc.stats().heap.in_use_bytes <= 8 << 20, "{:?}", gc.stats().heap);
}

/// Allocates `n` garbage chunks of 64 KiB in a loop with no `poll` between them (allocation
/// is documented as reaching a safepoint), on a concurrent heap.
fn garbage_loop_without_poll(hard_limit: usize, n: usize) -> u64 {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder()
        .stop_the_world(false)
        .hard_limit(hard_limit)
        .min_heap(1 << 20)
        .ignore_env()
        .build(&rt)
        .unwrap();
    let bytes = gc.types().register(TypeDesc::ByteArray { name: "chunk".into() }).unwrap();
    let g2 = gc.clone();
    rt.block_on(move || {
        let mut m = Mutator::new(&g2).unwrap();
        m.scope(|m, [d]| {
            for _ in 0..n {
                m.alloc_bytes(d, bytes, &[7; 64 << 10]).unwrap();
            }
        });
    });
    let cycles = gc.cycles();
    drop(gc);
    drop(rt);
    cycles
}

#[test]
fn allocation_without_poll_lets_concurrent_cycles_complete() {
    let cycles = garbage_loop_without_poll(usize::MAX, 400);
    assert!(cycles >= 1, "{cycles} cycles completed while 400 x 64 KiB of garbage was allocated");
}

#[test]
fn garbage_under_the_hard_limit_without_poll_is_collected() {
    garbage_loop_without_poll(8 << 20, 400);
}

/// The managed-stack position of slot 0 of the next scope of the running goroutine.
fn next_scope_base() -> usize {
    safepoint_sched::with_managed_stack(|ms| ms.used_words())
}

/// Writing a scope's slot behind the mutator's back takes `unsafe` (`ManagedStack::set_at`
/// on a sealed frame); in the debugging modes (`gcpoison`, `gccheckmark`) the mutator checks
/// every reference against the heap and catches such a word. Without them it is undefined
/// behaviour by that contract (it faults), so it is not tested.
#[test]
fn garbage_in_a_slot_is_a_described_panic_of_that_goroutine() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder().checkmark(true).poison(true).ignore_env().build(&rt).unwrap();
    let t = types(&gc);
    let g2 = gc.clone();
    rt.block_on(move || {
        let g3 = g2.clone();
        let h = safepoint_sched::go(move || {
            let mut m = Mutator::new(&g3).unwrap();
            let base = next_scope_base();
            m.scope(|m, [s]| {
                m.alloc(s, t.rec).unwrap();
                safepoint_sched::with_managed_stack(|ms| {
                    // SAFETY: deliberately not upheld: the word is the mutator's own handle
                    // slot and 0x1234_5670 is no value it may hold. This test checks that the
                    // mutator's checks catch such a word (a described panic), not use it; the
                    // write itself is an atomic store below the stack's top.
                    unsafe { ms.set_at(base, 0x1234_5670) }
                });
                let _ = m.type_of(s);
            });
        });
        let e = h.join().expect_err("reading through a garbage slot must panic");
        let msg = e.message().unwrap_or_default().to_owned();
        assert!(msg.contains("0x12345670 is not a managed object"), "panic message: {msg:?}");
        // The goroutine that panicked is gone; this one's heap still works.
        let mut m = Mutator::new(&g2).unwrap();
        m.scope(|m, [s]| {
            m.alloc(s, t.rec).unwrap();
            m.collect();
            assert_eq!(m.type_of(s), Ok(t.rec));
        });
    });
}

/// Runs this binary's test `test` alone in a child process with `SAFEPOINT_CHILD=child` (the
/// test then plays the child's part), asserts that the child died of `SIGABRT` (the
/// collector's fatal error), and returns its stderr.
fn aborted_child(test: &str, child: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("SAFEPOINT_CHILD", child)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{child}: stderr: {stderr}");
    stderr
}

#[test]
fn garbage_in_a_slot_found_by_a_collection_is_fatal() {
    if std::env::var("SAFEPOINT_CHILD").as_deref() == Ok("garbage") {
        let rt = Runtime::builder().procs(1).build().unwrap();
        let gc = Gc::builder().ignore_env().build(&rt).unwrap();
        rt.block_on(move || {
            let mut m = Mutator::new(&gc).unwrap();
            let base = next_scope_base();
            m.scope(|m, [_s]| {
                safepoint_sched::with_managed_stack(|ms| {
                    // SAFETY: deliberately not upheld, as in the test above: the marker must
                    // catch the garbage word (a fatal error in this child process).
                    unsafe { ms.set_at(base, 0x1234_5670) }
                });
                m.collect();
            });
        });
        eprintln!("child: the collection survived the garbage");
        return;
    }
    let stderr = aborted_child("garbage_in_a_slot_found_by_a_collection_is_fatal", "garbage");
    assert!(
        stderr.contains("marking found a reference 0x12345670 outside the heap"),
        "stderr: {stderr}"
    );
}

/// A reference into the middle of a slot of the very span the marker is scanning is caught
/// as well: in a typed span (whose references into itself the marker shades without the page
/// map, see `Tracer::scan_typed`) and in a size class's (through the marker's ring). A fatal
/// error naming the address, checked in a child process.
#[test]
fn a_reference_into_the_middle_of_a_slot_of_the_same_span_is_fatal() {
    const TEST: &str = "a_reference_into_the_middle_of_a_slot_of_the_same_span_is_fatal";
    if let Ok(child) = std::env::var("SAFEPOINT_CHILD") {
        let headered = match child.as_str() {
            "mid-slot-typed" => false,
            "mid-slot-headered" => true,
            _ => return,
        };
        let rt = Runtime::builder().procs(1).build().unwrap();
        let gc = Gc::builder().ignore_env().build(&rt).unwrap();
        let t = gc.types();
        let pair = t
            .register(TypeDesc::Record {
                name: "pair".into(),
                words: vec![WordKind::Ref, WordKind::Raw],
            })
            .unwrap();
        let refs = t.register(TypeDesc::RefArray { name: "refs".into() }).unwrap();
        rt.block_on(move || {
            let mut raw = safepoint_gc::RawMutator::new(&gc).unwrap();
            // A typed record, or an array of one reference (its own header, a size class).
            let shape = if headered { raw.shape(refs, 1) } else { raw.shape(pair, 0) }.unwrap();
            let root_shape = raw.shape(pair, 0).unwrap();
            let (root, bad) = raw
                .enter(|p| {
                    // `root` (a global) -> `a` -> the middle of `b`, `a` and `b` in one span:
                    // `a` is reached as an edge, so the marker scans it in its span.
                    let (root, _) = p.alloc(root_shape).unwrap();
                    let (a, _) = p.alloc(shape).unwrap();
                    let (b, _) = p.alloc(shape).unwrap();
                    let bad = (b & !3) + 8;
                    // SAFETY: `root` and `a` are live objects of this section, word 0 of each
                    // a reference. Then, deliberately not upheld: `bad` is inside `b`'s slot,
                    // not an object's reference. The marker must catch it (a fatal error in
                    // this child process); the store itself is an atomic write into `a`.
                    unsafe {
                        p.set_word(root, 0, WordKind::Ref, a & !3);
                        p.set_word(a, 0, WordKind::Ref, bad);
                    }
                    (p.new_global(root).unwrap(), bad)
                })
                .unwrap();
            eprintln!("child: planted {bad:#x}");
            gc.collect();
            drop(root);
        });
        eprintln!("child: the collection survived the garbage");
        return;
    }
    for child in ["mid-slot-typed", "mid-slot-headered"] {
        let stderr = aborted_child(TEST, child);
        let planted = stderr
            .lines()
            .find_map(|l| l.strip_prefix("child: planted "))
            .unwrap_or_else(|| panic!("{child}: no planted address: {stderr}"));
        let want = format!(
            "marking found a reference {planted} that is not a reference to an allocated object"
        );
        assert!(stderr.contains(&want), "{child}: stderr: {stderr}");
    }
}
