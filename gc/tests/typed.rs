//! Typed spans: records of the first types registered (ids 1..=64, at most 512 bytes) are
//! allocated without a header, in spans that name their type; later types, larger records and
//! arrays keep their header. Both kinds mix in one graph, are marked, swept and checked the
//! same, their headers are found by the same calls, and a word that is a typed span's header
//! is no object.

#[path = "support/list.rs"]
mod list;

use safepoint_gc::{Gc, Mutator, RawMutator, Shape, TypeDesc, TypeId, WordKind};
use safepoint_sched::Runtime;

struct Types {
    /// A two-word record registered first: typed.
    early: TypeId,
    /// A one-word record (8-byte slots, 1023 to a typed page): typed.
    tiny: TypeId,
    /// The same record shape, registered after 64 others: headered.
    late: TypeId,
    /// A 70-word record (560 bytes): too large for a typed span, headered.
    big: TypeId,
    bytes: TypeId,
}

fn setup(checking: bool) -> (Runtime, Gc, Types) {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder().checkmark(checking).poison(checking).ignore_env().build(&rt).unwrap();
    let t = gc.types();
    let pair = |name: &str| TypeDesc::Record {
        name: name.into(),
        words: vec![WordKind::Ref, WordKind::Raw],
    };
    let early = t.register(pair("early")).unwrap();
    assert_eq!(early.get(), 1);
    let tiny =
        t.register(TypeDesc::Record { name: "tiny".into(), words: vec![WordKind::Raw] }).unwrap();
    for i in 0..63 {
        t.register(TypeDesc::RefArray { name: format!("filler {i}") }).unwrap();
    }
    let late = t.register(pair("late")).unwrap();
    assert_eq!(late.get(), 66);
    let mut words = vec![WordKind::Ref];
    words.resize(70, WordKind::Raw);
    let big = t.register(TypeDesc::Record { name: "big".into(), words }).unwrap();
    let bytes = t.register(TypeDesc::ByteArray { name: "bytes".into() }).unwrap();
    (rt, gc, Types { early, tiny, late, big, bytes })
}

#[test]
fn typed_and_headered_records_share_a_graph_through_checked_collections() {
    const N: i64 = 20_000;
    let (rt, gc, ty) = setup(true);
    let g = gc.clone();
    let (sum, live) = rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        m.scope(|m, [head, node, junk]| {
            // A list alternating typed and headered nodes, word 1 numbering them, with as
            // much garbage of both kinds (and some large records) dropped along the way.
            for i in 0..N {
                for t in [ty.early, ty.late] {
                    m.alloc(node, t).unwrap();
                    m.write_word(node, 1, i as u64).unwrap();
                    m.store(node, 0, head).unwrap();
                    m.copy(head, node).unwrap();
                    m.alloc(junk, if i % 100 == 0 { ty.big } else { t }).unwrap();
                    m.store(junk, 0, head).unwrap();
                }
                if i % 5_000 == 0 {
                    m.collect();
                }
            }
            m.clear(junk).unwrap();
            m.clear(node).unwrap();
            m.collect();
            m.collect();
            let live = g.stats().live_bytes;
            let mut sum = 0u64;
            m.copy(node, head).unwrap();
            while !m.is_null(node).unwrap() {
                sum += m.read_word(node, 1).unwrap();
                m.load(node, node, 0).unwrap();
            }
            (sum, live)
        })
    });
    assert_eq!(sum, 2 * (N * (N - 1) / 2) as u64);
    // Every live object is a list node: 16 bytes for a typed one (no header), 24 for a
    // headered one. Nothing else is reachable (the slots are on the goroutine's stack).
    assert_eq!(live, N as usize * (16 + 24));
}

#[test]
fn headers_are_found_for_typed_headered_and_array_objects() {
    let (rt, gc, ty) = setup(false);
    let tiny = Shape::new(&gc, ty.tiny, 0).unwrap();
    let shapes = [
        Shape::new(&gc, ty.early, 0).unwrap(),
        Shape::new(&gc, ty.late, 0).unwrap(),
        Shape::new(&gc, ty.big, 0).unwrap(),
        Shape::new(&gc, ty.bytes, 5).unwrap(),
    ];
    let got = rt.block_on(move || {
        let mut raw = RawMutator::new(&gc).unwrap();
        raw.enter(|p| {
            let objs: Vec<usize> = shapes.iter().map(|&s| p.alloc(s).unwrap().0).collect();
            // Enough one-word records to fill two typed pages, each numbered.
            let tinies: Vec<usize> = (0..2100).map(|_| p.alloc(tiny).unwrap().0).collect();
            // SAFETY: objects allocated in this section; word 1 of each record is raw, and
            // the last object is a byte array of 5 bytes.
            unsafe {
                for &o in &objs[..3] {
                    p.init_word(o, 1, WordKind::Raw, 7);
                }
                let ids: Vec<TypeId> = objs.iter().map(|&o| p.header(o).type_id()).collect();
                let words: Vec<usize> = objs[..3].iter().map(|&o| p.word(o, 1)).collect();
                for (i, &o) in tinies.iter().enumerate() {
                    p.init_word(o, 0, WordKind::Raw, i);
                }
                let tiny_ok = tinies
                    .iter()
                    .enumerate()
                    .all(|(i, &o)| p.word(o, 0) == i && p.header(o).type_id() == ty.tiny);
                assert!(tiny_ok, "a one-word typed record lost its word or its type");
                (ids, words, p.bytes(objs[3]).len(), p.header(objs[3]).len())
            }
        })
        .unwrap()
    });
    assert_eq!(got.0, vec![ty.early, ty.late, ty.big, ty.bytes]);
    assert_eq!(got.1, vec![7, 7, 7]);
    assert_eq!((got.2, got.3), (5, 5));
}

#[test]
fn a_typed_spans_header_word_is_no_object_a_described_panic_in_the_checking_modes() {
    let (rt, gc, ty) = setup(true);
    let shape = Shape::new(&gc, ty.early, 0).unwrap();
    let r = rt.block_on(move || {
        let h = safepoint_sched::go(move || {
            let mut raw = RawMutator::new(&gc).unwrap();
            raw.enter(|p| {
                let (a, _) = p.alloc(shape).unwrap();
                // The last word of the page holding `a`: its typed span's header word, which
                // looks like a header but is no object.
                let page_word = ((a & !(8192 - 1)) + 8192 - 8) | (a & 7);
                // SAFETY: deliberately broken (the checking modes catch it before any read).
                unsafe { p.header(page_word) }
            })
            .unwrap();
        });
        h.join()
    });
    let e = r.expect_err("the bad reference must panic");
    let msg = format!("{e}");
    assert!(msg.contains("is not a reference to a managed object"), "{msg}");
}

#[test]
fn records_fall_back_to_headers_once_the_typed_reservation_is_used_up() {
    // One arena (64 MiB) of typed spans holds 122,880 records of 512 bytes (15 a page).
    const N: u64 = 150_000;
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder().typed_reserve(1).checkmark(true).ignore_env().build(&rt).unwrap();
    let mut words = vec![WordKind::Ref];
    words.resize(64, WordKind::Raw);
    let big = gc.types().register(TypeDesc::Record { name: "big".into(), words }).unwrap();
    let (sum, live) = list::build_collect_sum(&rt, &gc, big, N, 63);
    assert_eq!(sum, N * (N - 1) / 2);
    // Typed records take 512 bytes; those past the reservation take a header and a larger
    // slot.
    assert!(live > N as usize * 512, "{live}");
}

#[test]
fn a_shape_of_another_collector_is_refused() {
    let (rt, gc, ty) = setup(false);
    let other = Gc::builder().ignore_env().build(&rt).unwrap();
    other
        .types()
        .register(TypeDesc::Record { name: "wide".into(), words: vec![WordKind::Raw; 40] })
        .unwrap();
    // Type 1 of `gc` (a 16-byte typed record) means nothing to `other`, whose type 1 is wider.
    let shape = Shape::new(&gc, ty.early, 0).unwrap();
    let err = rt.block_on(move || {
        let mut raw = RawMutator::new(&other).unwrap();
        raw.enter(|p| p.alloc(shape).map(|_| ()).unwrap_err()).unwrap()
    });
    assert_eq!(err, safepoint_gc::GcError::WrongHeap);
}
