//! The trusted path's field stores: `Pin::init_word` on a fresh object, `Pin::init_link`
//! between two, and `Pin::set_word` give the same heap, and in the checking modes an
//! `init_word` on a word that was already stored (its old value would go unshaded while
//! marking), or an `init_link` to an object from before the section while it allocates
//! black, is a described panic of that goroutine, not a corrupted heap.

use safepoint_gc::{Gc, RawMutator, Shape, TypeDesc, WordKind};
use safepoint_sched::Runtime;

fn setup(checking: bool, procs: usize) -> (Runtime, Gc, Shape) {
    let rt = Runtime::builder().procs(procs).build().unwrap();
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
    let (rt, gc, shape) = setup(true, 1);
    let got = rt.block_on(move || {
        let mut raw = RawMutator::new(&gc).unwrap();
        raw.enter(|p| {
            let (a, _) = p.alloc(shape).unwrap();
            let (b, _) = p.alloc(shape).unwrap();
            let (c, _) = p.alloc(shape).unwrap();
            // SAFETY: `a`, `b` and `c` are fresh objects of this section; word 0 a reference,
            // 1 raw.
            unsafe {
                p.init_word(a, 0, WordKind::Ref, b & !3);
                p.init_word(a, 1, WordKind::Raw, 7);
                p.set_word(b, 1, WordKind::Raw, 9);
                p.set_word(b, 0, WordKind::Ref, a & !3);
                p.init_link(c, 0, WordKind::Ref, a & !3);
                let links = p.word(c, 0) == a & !3;
                (p.word(a, 0) == b & !3, p.word(a, 1), p.word(b, 1), p.word(b, 0) == a & !3, links)
            }
        })
        .unwrap()
    });
    assert_eq!(got, (true, 7, 9, true, true));
}

#[test]
fn init_word_on_a_stored_word_is_a_described_panic_in_the_checking_modes() {
    let (rt, gc, shape) = setup(true, 1);
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

/// `init_link` skips the barrier because both objects come from one section, and so have one
/// colour. Linking an object allocated before the section breaks that: while marking, a
/// white object could hide behind a black one. The checking modes catch it when it matters
/// (the section allocates black and the object is unmarked). Here each round allocates an
/// object in one section and links it from a new object in the next, with a safepoint
/// between, while another goroutine collects back to back: once a cycle starts between the
/// two sections, the link is refused.
#[test]
fn init_link_to_an_object_from_before_the_section_is_a_described_panic_while_marking() {
    let (rt, gc, shape) = setup(true, 2);
    let r = rt.block_on(move || {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let collector = {
            let (gc, done) = (gc.clone(), done.clone());
            safepoint_sched::go(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    gc.collect();
                }
            })
        };
        let linker = safepoint_sched::go(move || {
            let mut raw = RawMutator::new(&gc).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                // Unreachable once the section ends: nothing marks it in the next cycle (and
                // the sweep after that cycle's end frees it).
                let (old, cycles) =
                    raw.enter(|p| (p.alloc(shape).unwrap().0, gc.cycles())).unwrap();
                safepoint_sched::yield_now();
                raw.enter(|p| {
                    // A cycle that ended since may have freed `old`: not this round. (None
                    // can end during the section, which holds its P.)
                    if gc.cycles() != cycles {
                        return;
                    }
                    let (n, _) = p.alloc(shape).unwrap();
                    // SAFETY: deliberately not upheld: `old` is from an earlier section (still
                    // allocated, as no cycle ended since). The checking modes must refuse it
                    // once this section allocates black and `old` is unmarked; the store
                    // itself is into a fresh object.
                    unsafe { p.init_link(n, 0, WordKind::Ref, old & !3) };
                })
                .unwrap();
            }
        });
        let r = linker.join();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        collector.join().unwrap();
        r
    });
    let e = r.expect_err("a cycle started between two sections within 20 s");
    assert!(format!("{e}").contains("was not allocated in this section"), "{e}");
}

/// The trusted path's weak handles and cleanups: `Pin::weak` gives the object's handle (the
/// same one each time), `Pin::deref` the object until a collection finds it unreachable, then
/// null; a cleanup added by `Pin::add_cleanup` runs after that collection.
#[test]
fn pin_weak_handles_and_cleanups_follow_the_object() {
    let (rt, gc, shape) = setup(true, 2);
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = ran.clone();
    let reads = rt.block_on(move || {
        let ran = ran.clone();
        let mut raw = RawMutator::new(&gc).unwrap();
        let (ga, gw) = raw
            .enter(|p| {
                let (a, _) = p.alloc(shape).unwrap();
                // SAFETY: `a` is a fresh object of this section; `w` a handle just made.
                unsafe {
                    let (w, _) = p.weak(a).unwrap();
                    assert_eq!(p.weak(a).unwrap().0, w, "one handle per object");
                    assert_eq!(p.deref(w), a);
                    p.add_cleanup(a, move || r.store(true, std::sync::atomic::Ordering::SeqCst));
                    (p.new_global(a).unwrap(), p.new_global(w).unwrap())
                }
            })
            .unwrap();
        gc.collect();
        let mut reads = Vec::new();
        // SAFETY: the global holds a live handle.
        reads.push(raw.enter(|p| unsafe { p.deref(p.global(&gw).unwrap()) } != 0).unwrap());
        raw.enter(|p| p.set_global(&ga, 0).unwrap()).unwrap();
        gc.collect();
        // SAFETY: as above.
        reads.push(raw.enter(|p| unsafe { p.deref(p.global(&gw).unwrap()) } != 0).unwrap());
        let t = std::time::Instant::now();
        while !ran.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(t.elapsed() < std::time::Duration::from_secs(10), "the cleanup never ran");
            safepoint_sched::sleep(std::time::Duration::from_millis(1));
        }
        reads
    });
    assert_eq!(reads, vec![true, false]);
}
