//! A loom model of an object's publication (the crate essay, "Publication"), run with
//! `RUSTFLAGS="--cfg loom" cargo test --release -p safepoint-gc --lib -- loom_`.
//!
//! It models the orderings, not the heap's code: one object slot with its allocation bit,
//! header word and one field, and one field of an old object where its reference is published.
//! The allocating goroutine does what `Cache::try_take`, the header store of
//! `Inner::alloc_on` and `Mutator::store` do, with their orderings: the allocation bit with a
//! Release store, the header and the field with Relaxed stores, then the reference with the
//! publishing store. Two readers load the reference with the marker's and a mutator's load:
//! the marker then checks the allocation bit and reads the header (`mark::shade_bit`,
//! `Tracer::stage_out`), the mutator reads the header and the field (`Mutator::load`).
//!
//! What must hold: a reader that sees the reference sees the allocation bit, the header and
//! the field. The variant that publishes with a Relaxed store (and loads with Relaxed, as the
//! code did before the aarch64 review) must fail: loom lets a reader see the reference and an
//! old header, which x86_64's TSO never shows and aarch64 does.

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

struct Model {
    alloc_bit: AtomicUsize,
    header: AtomicUsize,
    field: AtomicUsize,
    /// The old object's field the reference is stored into (0: nothing published yet).
    published: AtomicUsize,
}

const OBJ: usize = 0x1000;
const HEADER: usize = 0x77;
const VALUE: usize = 42;

fn run(publish: Ordering, consume: Ordering) {
    loom::model(move || {
        let m = Arc::new(Model {
            alloc_bit: AtomicUsize::new(0),
            header: AtomicUsize::new(0),
            field: AtomicUsize::new(0),
            published: AtomicUsize::new(0),
        });
        let w = m.clone();
        let writer = thread::spawn(move || {
            // `Cache::try_take`: the allocation bit, Release.
            w.alloc_bit.store(1, Ordering::Release);
            // `Inner::alloc_on`: the header, Relaxed; `init_field`: the field, Relaxed.
            w.header.store(HEADER, Ordering::Relaxed);
            w.field.store(VALUE, Ordering::Relaxed);
            // `Inner::store_field`: the publishing store.
            w.published.store(OBJ, publish);
        });
        let k = m.clone();
        let marker = thread::spawn(move || {
            if k.published.load(consume) == OBJ {
                // `shade_bit`: an unallocated referent is a fatal error.
                assert_eq!(
                    k.alloc_bit.load(Ordering::Acquire),
                    1,
                    "seen unpublished: marker, no allocation bit"
                );
                assert_eq!(
                    k.header.load(Ordering::Relaxed),
                    HEADER,
                    "seen unpublished: marker, old header"
                );
            }
        });
        if m.published.load(consume) == OBJ {
            assert_eq!(
                m.header.load(Ordering::Relaxed),
                HEADER,
                "seen unpublished: mutator, old header"
            );
            assert_eq!(
                m.field.load(Ordering::Relaxed),
                VALUE,
                "seen unpublished: mutator, old field"
            );
        }
        writer.join().unwrap();
        marker.join().unwrap();
    });
}

#[test]
fn loom_publication_release_acquire() {
    run(Ordering::Release, Ordering::Acquire);
}

#[test]
#[should_panic(expected = "seen unpublished")]
fn loom_publication_relaxed_store_fails() {
    run(Ordering::Relaxed, Ordering::Acquire);
}

#[test]
#[should_panic(expected = "seen unpublished")]
fn loom_publication_relaxed_load_fails() {
    run(Ordering::Release, Ordering::Relaxed);
}
