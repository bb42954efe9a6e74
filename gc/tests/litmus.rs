//! Litmus tests of the collector's hand-offs between threads, for weakly ordered processors
//! (the crate essay, "Publication").
//!
//! Each is a message-passing test run for many short rounds: one side writes (an object's
//! header and fields, a freed slot's poison, the mark bits) and then hands something over (a
//! reference stored into a field or a global, a span on a list, a write-barrier buffer); the
//! other side, on another thread, takes it and checks that it sees what was written before.
//! With the hand-off weakened to Relaxed, real aarch64 hardware lets the reader see old data,
//! and these tests fail with enough rounds: a reader finds a published object's fields still
//! zero (a panic naming the field), the marker finds a reference whose allocation bit it cannot
//! see yet ("not a reference to an allocated object"), an allocator finds a slot the sweeper
//! freed without its poison ("heap corruption"), a marker misses an object shaded into a
//! barrier buffer (checkmark's report, or a poisoned object read back). On x86_64 (TSO) they
//! cannot fail that way, nor under qemu-user on an x86_64 host (CI's aarch64 section), whose
//! guest threads reorder no more than the host does: there they check the protocols end to
//! end and catch hangs, and they stand ready to catch a reordering on ARM hardware.
//!
//! `SAFEPOINT_LITMUS_SCALE` (default 1) multiplies the rounds: use 20 or more on ARM hardware.
use safepoint_gc::{Gc, Global, Heap, HeapConfig, Mutator, TypeDesc, WordKind};
use safepoint_sched::{Runtime, go, yield_now};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// The typed arenas' reservation: one arena, not the default 256 GiB, which qemu-user takes
/// seconds to map and unmap (these tests run emulated in CI); the tests need a few MiB.
const RESERVE: usize = 1 << 26;

fn scale() -> usize {
    std::env::var("SAFEPOINT_LITMUS_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1)
}

/// A goroutine that collects back to back until `stop`, so that marking (and the marker's
/// loads) overlaps everything the other goroutines do.
fn collect_until(gc: &Gc, stop: &Arc<AtomicBool>) -> safepoint_sched::JoinHandle<u64> {
    let (gc, stop) = (gc.clone(), stop.clone());
    go(move || {
        let mut n = 0;
        // At least one cycle, however late this goroutine first runs; then until `stop`.
        loop {
            gc.collect();
            n += 1;
            yield_now();
            if stop.load(Relaxed) {
                break n;
            }
        }
    })
}

/// Object publication: a goroutine allocates a record and its child, fills their fields, and
/// publishes the record, alternately through a global and through a field of a shared
/// object; another goroutine (on another P) loads it and checks every field; the concurrent
/// marker, cycling all the while, loads the same references and checks their allocation bits.
#[test]
fn a_published_object_is_seen_initialised_by_other_goroutines_and_the_marker() {
    let rounds = 20_000 * scale();
    let rt = Runtime::builder().procs(3).build().unwrap();
    let gc =
        Gc::builder().poison(true).min_heap(1 << 20).typed_reserve(RESERVE).build(&rt).unwrap();
    // {n, 3n + 1, child} and the child {n, n, null}.
    let msg = gc
        .types()
        .register(TypeDesc::Record {
            name: "msg".into(),
            words: vec![WordKind::Tagged, WordKind::Tagged, WordKind::Ref],
        })
        .unwrap();
    let holder = gc
        .types()
        .register(TypeDesc::Record { name: "holder".into(), words: vec![WordKind::Ref] })
        .unwrap();
    let g = gc.clone();
    let (checked, cycles) = rt.block_on(move || {
        let via_global = Arc::new(Global::new(&g));
        let via_field = Arc::new(Global::new(&g));
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        {
            let mut m = Mutator::new(&g).unwrap();
            m.scope(|m, [h]| {
                m.alloc(h, holder).unwrap();
                m.store_global(&via_field, h).unwrap();
            });
        }
        let collector = collect_until(&g, &stop);
        let (gr, gf, dn) = (via_global.clone(), via_field.clone(), done.clone());
        let gc2 = g.clone();
        let reader = go(move || {
            let mut m = Mutator::new(&gc2).unwrap();
            let mut checked = 0u64;
            m.scope(|m, [h, x, c, v]| {
                m.load_global(h, &gf).unwrap();
                let mut last = [0i64; 2];
                loop {
                    let finished = dn.load(Relaxed);
                    for (k, src) in [0, 1].into_iter().enumerate() {
                        if src == 0 {
                            m.load_global(x, &gr).unwrap();
                        } else {
                            m.load(x, h, 0).unwrap();
                        }
                        if m.is_null(x).unwrap() {
                            continue;
                        }
                        m.load(v, x, 0).unwrap();
                        let n = m.int(v).expect("field 0 of a published object is not set");
                        m.load(v, x, 1).unwrap();
                        let f1 = m.int(v).expect("field 1 of a published object is not set");
                        assert_eq!(f1, 3 * n + 1, "field 1 of published object {n}");
                        m.load(c, x, 2).unwrap();
                        assert!(!m.is_null(c).unwrap(), "published object {n} has no child yet");
                        m.load(v, c, 0).unwrap();
                        assert_eq!(m.int(v).unwrap(), n, "field 0 of the child of {n}");
                        m.load(v, c, 1).unwrap();
                        assert_eq!(m.int(v).unwrap(), n, "field 1 of the child of {n}");
                        // Read-read coherence: one writer, one location, never backwards.
                        assert!(n >= last[k], "object {n} read after {}", last[k]);
                        last[k] = n;
                        checked += 1;
                    }
                    if finished {
                        break;
                    }
                }
            });
            checked
        });
        let mut m = Mutator::new(&g).unwrap();
        m.scope(|m, [h, a, c, v, pad]| {
            m.load_global(h, &via_field).unwrap();
            for n in 1..=rounds as i64 {
                m.alloc(c, msg).unwrap();
                m.set_int(v, n).unwrap();
                m.store(c, 0, v).unwrap();
                m.store(c, 1, v).unwrap();
                m.alloc(a, msg).unwrap();
                m.store(a, 0, v).unwrap();
                m.set_int(v, 3 * n + 1).unwrap();
                m.store(a, 1, v).unwrap();
                m.store(a, 2, c).unwrap();
                if n % 2 == 0 {
                    m.store_global(&via_global, a).unwrap();
                } else {
                    m.store(h, 0, a).unwrap();
                }
                // Garbage, so that cycles come often on their own too.
                m.alloc(pad, msg).unwrap();
                if n % 256 == 0 {
                    yield_now();
                }
            }
        });
        done.store(true, Relaxed);
        let checked = reader.join().unwrap();
        stop.store(true, Relaxed);
        let cycles = collector.join().unwrap();
        (checked, cycles)
    });
    eprintln!("{checked} published objects checked by the reader; {cycles} cycles overlapped");
    assert!(checked > 0, "the reader checked no published object");
    assert!(cycles > 0, "no collection overlapped the test");
}

/// The write-barrier buffers: objects allocated before a cycle are moved from one array to
/// another while the collector marks (load, store into the other array, clear the old
/// element): once the shelf's and the goroutine's stack's scans have passed, each object stays
/// reachable only because the barrier shaded it into its P's buffer, which a ragged barrier
/// or the stop flushes to the marker. A shade the marker does not see leaves a reachable
/// object white: checkmark's re-mark aborts naming it, or the sweep poisons it and the read
/// below finds it corrupt.
#[test]
fn objects_moved_while_marking_survive_through_the_barrier_buffers() {
    let rounds = 400 * scale();
    const N: usize = 8;
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder()
        .poison(true)
        .checkmark(true)
        .min_heap(1 << 20)
        .typed_reserve(RESERVE)
        .build(&rt)
        .unwrap();
    let item = gc
        .types()
        .register(TypeDesc::Record {
            name: "item".into(),
            words: vec![WordKind::Tagged, WordKind::Tagged],
        })
        .unwrap();
    let shelf = gc
        .types()
        .register(TypeDesc::Record { name: "shelf".into(), words: vec![WordKind::Ref; N] })
        .unwrap();
    let g = gc.clone();
    let cycles = rt.block_on(move || {
        let stop = Arc::new(AtomicBool::new(false));
        let collector = collect_until(&g, &stop);
        let mut m = Mutator::new(&g).unwrap();
        // The arrays of the last few rounds, checked after explicit collections.
        let mut kept: Vec<(Global, i64)> = Vec::new();
        m.scope(|m, [from, to, x, v]| {
            for r in 0..rounds as i64 {
                m.alloc(from, shelf).unwrap();
                m.alloc(to, shelf).unwrap();
                for i in 0..N {
                    m.alloc(x, item).unwrap();
                    m.set_int(v, r * 100 + i as i64).unwrap();
                    m.store(x, 0, v).unwrap();
                    m.set_int(v, -(r * 100 + i as i64)).unwrap();
                    m.store(x, 1, v).unwrap();
                    m.store(from, i, x).unwrap();
                }
                m.clear(x).unwrap();
                // Let a cycle begin with the items white (allocated before it).
                yield_now();
                for i in 0..N {
                    m.load(x, from, i).unwrap();
                    m.store(to, i, x).unwrap();
                    m.clear(v).unwrap();
                    m.store(from, i, v).unwrap();
                    m.clear(x).unwrap();
                }
                kept.push((m.new_global(to).unwrap(), r));
                if kept.len() == 8 {
                    m.collect();
                    m.collect();
                    for (gl, r) in kept.drain(..) {
                        m.load_global(to, &gl).unwrap();
                        for i in 0..N {
                            m.load(x, to, i).unwrap();
                            m.load(v, x, 0).unwrap();
                            assert_eq!(m.int(v).unwrap(), r * 100 + i as i64, "item {i} of {r}");
                            m.load(v, x, 1).unwrap();
                            assert_eq!(m.int(v).unwrap(), -(r * 100 + i as i64), "item {i} of {r}");
                        }
                    }
                }
            }
        });
        stop.store(true, Relaxed);
        collector.join().unwrap()
    });
    eprintln!("{cycles} background cycles overlapped the moves");
    assert!(cycles > 0, "no collection overlapped the test");
}

/// The sweep claim and the sweeper-to-allocator hand-off, on the heap alone: after a marking,
/// two threads sweep while a third allocates (allocation sweeps the spans it takes). No span
/// is swept twice (the frees add up exactly, and the claim's CAS panics on a span claimed
/// already), no live object is handed out or written, and every slot handed out still holds
/// the poison its sweeper wrote (the allocator checks it), which it sees only through the
/// list lock's hand-off of the span.
#[test]
fn sweepers_claim_each_span_once_and_allocation_sees_their_writes() {
    let rounds = 150 * scale();
    const K: usize = 3000;
    const SIZE: usize = 48;
    let mut config = HeapConfig::default();
    config.poison = true;
    config.typed_reserve = RESERVE;
    let heap = Heap::new(config).unwrap();
    let mut cache = heap.new_cache();
    let mut alloc_cache = heap.new_cache();
    let pattern = |a: usize| (a as u64) ^ 0x5a5a_5a5a_0000_0000;
    for round in 0..rounds {
        let objs: Vec<usize> =
            (0..K).map(|_| cache.alloc(SIZE).unwrap().as_ptr() as usize).collect();
        // SAFETY: `a` is an 8-aligned slot of at least 48 bytes that this heap handed out and
        // that stays mapped while the heap lives; its first word is only accessed atomically.
        let word = |a: usize| unsafe { &*(a as *const AtomicU64) };
        for &o in &objs {
            word(o).store(pattern(o), Relaxed);
        }
        cache.flush();
        let live: HashSet<usize> = objs.iter().copied().skip(round % 3).step_by(3).collect();
        for &o in &live {
            assert_eq!(heap.find_span(o).unwrap().mark_object(o), Some(true));
        }
        let before = heap.stats();
        let expected = before.live_objects - live.len() as u64;
        heap.finish_mark();
        let taken: Vec<usize> = std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| while heap.sweep_one().is_some() {});
            }
            let a = s.spawn(|| {
                let got: Vec<usize> = (0..K / 2)
                    .map(|_| alloc_cache.alloc(SIZE).unwrap().as_ptr() as usize)
                    .collect();
                for &p in &got {
                    word(p).store(!0, Relaxed);
                }
                alloc_cache.flush();
                got
            });
            a.join().unwrap()
        });
        heap.sweep_all();
        assert!(heap.sweep_done());
        let freed = heap.stats().total_frees - before.total_frees;
        assert_eq!(freed, expected, "round {round}: a span was swept twice, or not at all");
        for &p in &taken {
            assert!(!live.contains(&p), "round {round}: live object {p:#x} was handed out");
        }
        for &o in &live {
            assert_eq!(word(o).load(Relaxed), pattern(o), "round {round}: live object {o:#x}");
        }
    }
}
