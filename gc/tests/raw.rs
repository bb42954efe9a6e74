//! The trusted path's field stores: `Pin::init_word` on a fresh object and `Pin::set_word`
//! give the same heap, and in the checking modes an `init_word` on a word that was already
//! stored (its old value would go unshaded while marking) is a described panic of that
//! goroutine, not a corrupted heap.

use safepoint_gc::{Gc, RawMutator, Shape, TypeDesc, WordKind};
use safepoint_sched::Runtime;

fn setup(checking: bool) -> (Runtime, Gc, Shape) {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder().checkmark(checking).poison(checking).ignore_env().build(&rt).unwrap();
    let ty = gc
        .types()
        .register(TypeDesc::Record {
            name: "pair".into(),
            words: vec![WordKind::Ref, WordKind::Raw],
        })
        .unwrap();
    let shape = Shape::new(&gc, ty, 0).unwrap();
    (rt, gc, shape)
}

#[test]
fn init_word_and_set_word_store_the_same_fields() {
    let (rt, gc, shape) = setup(true);
    let got = rt.block_on(move || {
        let mut raw = RawMutator::new(&gc).unwrap();
        raw.enter(|p| {
            let (a, _) = p.alloc(shape).unwrap();
            let (b, _) = p.alloc(shape).unwrap();
            // SAFETY: `a` and `b` are fresh objects of this section; word 0 a reference, 1 raw.
            unsafe {
                p.init_word(a, 0, WordKind::Ref, b & !3);
                p.init_word(a, 1, WordKind::Raw, 7);
                p.set_word(b, 1, WordKind::Raw, 9);
                p.set_word(b, 0, WordKind::Ref, a & !3);
                (p.word(a, 0) == b & !3, p.word(a, 1), p.word(b, 1), p.word(b, 0) == a & !3)
            }
        })
        .unwrap()
    });
    assert_eq!(got, (true, 7, 9, true));
}

#[test]
fn init_word_on_a_stored_word_is_a_described_panic_in_the_checking_modes() {
    let (rt, gc, shape) = setup(true);
    let r = rt.block_on(move || {
        let h = safepoint_sched::go(move || {
            let mut raw = RawMutator::new(&gc).unwrap();
            raw.enter(|p| {
                let (a, _) = p.alloc(shape).unwrap();
                // SAFETY: a fresh object; the second call breaks init_word's contract, which
                // the checking modes catch before the store.
                unsafe {
                    p.init_word(a, 1, WordKind::Raw, 5);
                    p.init_word(a, 1, WordKind::Raw, 6);
                }
            })
            .unwrap();
        });
        h.join()
    });
    let e = r.expect_err("the second init_word must panic");
    assert!(format!("{e}").contains("which was already stored"), "{e}");
}
