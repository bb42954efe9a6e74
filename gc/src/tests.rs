//! Heap tests: unit tests for each piece and a proptest model of alloc/free/sweep/scavenge.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;

use crate::sizeclass::{CLASSES, MAX_SMALL, class_of};
use crate::{ARENA_SIZE, AllocError, Heap, HeapConfig, PAGE_SIZE, POISON};

fn heap() -> Heap {
    Heap::new(HeapConfig::default()).unwrap()
}

/// Marks every object in `keep`, flushes `cache`, sweeps everything; returns objects freed.
fn collect(heap: &Heap, cache: &mut crate::Cache, keep: &[usize]) -> usize {
    cache.flush();
    for &a in keep {
        assert_eq!(heap.find_span(a).unwrap().mark_object(a), Some(true));
    }
    heap.finish_mark();
    let freed = heap.sweep_all();
    assert!(heap.sweep_done());
    freed
}

fn resident_pages(addr: usize, len: usize) -> usize {
    let pages = len / 4096;
    let mut v = vec![0u8; pages];
    // SAFETY: the range is inside a mapped arena; `v` has one byte per 4 KiB page.
    let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, v.as_mut_ptr()) };
    assert_eq!(r, 0);
    v.iter().filter(|&&b| b & 1 != 0).count()
}

#[test]
fn small_objects_are_distinct_aligned_zeroed_and_found_from_any_interior_address() {
    let heap = heap();
    let mut cache = heap.new_cache();
    let mut seen = HashSet::new();
    for i in 0..2000 {
        let size = 1 + i % 200;
        let p = cache.alloc(size).unwrap().as_ptr() as usize;
        assert_eq!(p % 8, 0);
        assert!(seen.insert(p), "address {p:#x} handed out twice");
        // SAFETY: `size` bytes at p were just allocated to us.
        let bytes = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, size) };
        assert!(bytes.iter().all(|&b| b == 0), "not zeroed");
        bytes.fill(0xAB);
        let span = heap.find_span(p).unwrap();
        assert_eq!(span.size_class(), class_of(size).unwrap());
        for a in [p, p + size / 2, p + size - 1] {
            assert_eq!(heap.object_start(a), Some(p));
        }
    }
}

#[test]
fn the_page_map_covers_every_page_of_a_multi_page_span_and_nothing_past_it() {
    let heap = heap();
    let mut cache = heap.new_cache();
    let class = (1..CLASSES.len()).find(|&c| CLASSES[c].pages >= 3).unwrap();
    let p = cache.alloc(CLASSES[class].size).unwrap().as_ptr() as usize;
    let span = heap.find_span(p).unwrap();
    let (start, len) = (span.start(), span.pages() * PAGE_SIZE);
    assert_eq!(span.pages(), CLASSES[class].pages);
    for a in (start..start + len).step_by(PAGE_SIZE / 2).chain([start + len - 1]) {
        assert!(std::ptr::eq(heap.find_span(a).unwrap(), span), "{a:#x}");
    }
    assert!(heap.find_span(start + len).is_none());
    // The tail after the last slot is in the span but in no object.
    let tail = start + CLASSES[class].objects * CLASSES[class].size;
    if tail < start + len {
        assert_eq!(span.object_start(tail), None);
    }
}

#[test]
fn lookups_outside_allocated_objects_find_nothing() {
    let heap = heap();
    let mut cache = heap.new_cache();
    let p = cache.alloc(24).unwrap().as_ptr() as usize;
    // The next slot in the span is free.
    assert!(heap.find_span(p + 24).is_some());
    assert_eq!(heap.object_start(p + 24), None);
    let local = 0u64;
    assert!(heap.find_span(&local as *const u64 as usize).is_none());
    for a in [0, 8, usize::MAX, 1 << 60, p + ARENA_SIZE] {
        assert_eq!(heap.object_start(a), None, "{a:#x}");
    }
    // Free pages of the arena belong to no span.
    assert!(heap.find_span(p + 64 * PAGE_SIZE).is_none());
}

#[test]
fn sweep_frees_unmarked_objects_and_their_slots_are_reused() {
    let heap = heap();
    let mut cache = heap.new_cache();
    let objs: Vec<usize> = (0..100).map(|_| cache.alloc(24).unwrap().as_ptr() as usize).collect();
    let keep: Vec<usize> = objs.iter().copied().step_by(2).collect();
    assert_eq!(collect(&heap, &mut cache, &keep), 50);
    for (i, &o) in objs.iter().enumerate() {
        assert_eq!(heap.object_start(o).is_some(), i % 2 == 0, "object {i}");
        // Marks are cleared by the sweep.
        assert!(!heap.find_span(o).unwrap().is_marked((o - objs[0]) / 24));
    }
    let freed: HashSet<usize> = objs.iter().copied().skip(1).step_by(2).collect();
    let again: HashSet<usize> =
        (0..50).map(|_| cache.alloc(24).unwrap().as_ptr() as usize).collect();
    assert_eq!(again, freed, "the freed slots are handed out again first");
    let s = {
        cache.flush();
        heap.stats()
    };
    assert_eq!(s.live_objects, 100);
    assert_eq!(s.total_frees, 50);
    assert_eq!(s.live_bytes, 100 * 24);
}

/// `holds_live` answers what the sweep will do: an unmarked object in a span not yet swept
/// since marking ended is garbage though still allocated; marked ones and, once swept, the
/// allocated ones are live; the slot's start of a headered object is no reference.
#[test]
fn holds_live_follows_the_last_marking_until_the_sweep() {
    let heap = heap();
    let mut cache = heap.new_cache();
    let a = cache.alloc(24).unwrap().as_ptr() as usize;
    let b = cache.alloc(24).unwrap().as_ptr() as usize;
    // Headered objects: the reference is one word past the slot's start.
    let (ra, rb) = (a + 8, b + 8);
    assert!(heap.holds_live(ra) && heap.holds_live(rb));
    assert!(!heap.holds_live(a), "a slot's start is not a headered object's reference");
    cache.flush();
    assert_eq!(heap.find_span(a).unwrap().mark_object(a), Some(true));
    heap.finish_mark();
    assert!(heap.is_ref(rb), "still allocated before the sweep");
    assert!(!heap.holds_live(rb), "unmarked in an unswept span: garbage");
    assert!(heap.holds_live(ra));
    heap.sweep_all();
    assert!(!heap.is_ref(rb) && !heap.holds_live(rb));
    assert!(heap.holds_live(ra));
}

/// The fast path counts nothing per object: the counts come from the bitmap words it
/// used, at refills, flushes and changes of colour. Across words, spans and two classes
/// they must come out exact, black bytes included, and only the black objects are marked.
#[test]
fn allocation_counts_and_black_bytes_are_exact_across_words_and_colours() {
    let heap = heap();
    let mut cache = heap.new_cache();
    let alloc = |cache: &mut crate::Cache, n: usize, size: usize| -> Vec<usize> {
        (0..n).map(|_| cache.alloc(size).unwrap().as_ptr() as usize).collect()
    };
    // White, black (over more than one bitmap word and a span of 48-byte slots), white.
    let white: Vec<usize> = [alloc(&mut cache, 70, 24), alloc(&mut cache, 5, 48)].concat();
    cache.set_black(true);
    let black: Vec<usize> = [alloc(&mut cache, 130, 24), alloc(&mut cache, 200, 48)].concat();
    cache.set_black(false);
    let later = alloc(&mut cache, 3, 24);
    assert_eq!(cache.take_black_bytes(), 130 * 24 + 200 * 48);
    assert_eq!(cache.take_black_bytes(), 0, "taken once");
    let marked = |o: usize| {
        let span = heap.find_span(o).unwrap();
        span.is_marked((o - span.start()) / span.elem_size())
    };
    assert!(black.iter().all(|&o| marked(o)));
    assert!(!white.iter().chain(&later).any(|&o| marked(o)));
    cache.flush();
    let s = heap.stats();
    assert_eq!(s.total_allocs, 70 + 5 + 130 + 200 + 3);
    assert_eq!(s.live_bytes, (70 + 130 + 3) * 24 + (5 + 200) * 48);
}

#[test]
fn an_empty_span_returns_to_the_page_heap_and_a_cached_one_waits_for_its_flush() {
    let heap = heap();
    let mut cache = heap.new_cache();
    let p = cache.alloc(100).unwrap().as_ptr() as usize;
    // Marking ends while the span is cached: nothing to sweep until the cache lets it go.
    heap.finish_mark();
    assert_eq!(heap.sweep_all(), 0);
    assert!(heap.sweep_done());
    cache.flush();
    assert!(!heap.sweep_done(), "a span cached across the end of marking must be swept");
    let in_use = heap.stats().in_use_bytes;
    assert_eq!(in_use, CLASSES[class_of(100).unwrap()].pages * PAGE_SIZE);
    assert_eq!(heap.sweep_all(), 1);
    let s = heap.stats();
    assert_eq!(s.in_use_bytes, 0);
    assert_eq!(s.free_bytes, s.mapped_bytes);
    assert!(heap.find_span(p).is_none());
    assert_eq!(heap.sweep_one(), None);
}

/// The sweepers' cursor over the kinds (see `Inner::sweep_kind`) passes a kind once its
/// unswept lists are empty; a span cached across the end of marking and released afterwards
/// puts that kind back in its way.
#[test]
fn a_span_released_after_the_sweep_passed_its_kind_is_still_swept() {
    let heap = heap();
    let (mut low, mut high) = (heap.new_cache(), heap.new_cache());
    assert!(class_of(16).unwrap() < class_of(1000).unwrap());
    low.alloc(16).unwrap();
    high.alloc(1000).unwrap();
    high.flush();
    heap.finish_mark();
    // Sweeps the 1000-byte span: the cursor walks past the 16-byte kind, found empty.
    assert_eq!(heap.sweep_all(), 1);
    assert!(heap.sweep_done());
    low.flush();
    assert!(!heap.sweep_done());
    assert_eq!(heap.sweep_all(), 1, "the 16-byte span was left unswept");
    assert!(heap.sweep_done());
}

#[test]
#[should_panic(expected = "previous sweep has not finished")]
fn ending_a_marking_before_the_sweep_finished_panics() {
    let heap = heap();
    let mut cache = heap.new_cache();
    cache.alloc(100).unwrap();
    cache.flush();
    heap.finish_mark();
    heap.finish_mark();
}

#[test]
fn allocation_sweeps_the_spans_it_takes_and_concurrent_sweepers_claim_each_once() {
    let heap = heap();
    let mut cache = heap.new_cache();
    let objs: Vec<usize> =
        (0..20_000).map(|_| cache.alloc(48).unwrap().as_ptr() as usize).collect();
    cache.flush();
    for &o in objs.iter().step_by(3) {
        heap.find_span(o).unwrap().mark_object(o);
    }
    heap.finish_mark();
    // Allocation takes unswept spans and sweeps them first: it reuses dead slots, never
    // live ones.
    let live: HashSet<usize> = objs.iter().copied().step_by(3).collect();
    for _ in 0..1000 {
        let p = cache.alloc(48).unwrap().as_ptr() as usize;
        assert!(!live.contains(&p), "allocation reused a live slot {p:#x}");
    }
    cache.flush();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| heap.sweep_all());
        }
    });
    assert!(heap.sweep_done());
    let st = heap.stats();
    assert_eq!(st.total_frees as usize, 20_000 - live.len());
    for &o in &live {
        assert_eq!(heap.object_start(o), Some(o));
    }
}

#[test]
fn large_objects_get_their_own_span() {
    let heap = heap();
    let mut cache = heap.new_cache();
    let size = 100_000;
    let p = cache.alloc(size).unwrap().as_ptr() as usize;
    let span = heap.find_span(p).unwrap();
    assert!(span.is_large());
    assert_eq!(span.start(), p);
    assert_eq!(span.pages(), size.div_ceil(PAGE_SIZE));
    assert_eq!(heap.object_start(p + size - 1), Some(p));
    // Past the object but inside its last page.
    assert_eq!(heap.object_start(p + size + 8), None);
    let q = cache.alloc(MAX_SMALL + 1).unwrap().as_ptr() as usize;
    assert_eq!(collect(&heap, &mut cache, &[q]), 1);
    assert_eq!(heap.object_start(p), None);
    assert_eq!(heap.object_start(q), Some(q));
}

#[test]
fn bad_sizes_are_errors() {
    let heap = heap();
    let mut cache = heap.new_cache();
    for size in [ARENA_SIZE + 1, usize::MAX / 2, usize::MAX] {
        assert_eq!(
            cache.alloc(size),
            Err(AllocError::TooLarge { requested: size, max: ARENA_SIZE })
        );
    }
    // A zero-byte request gets a slot of its own.
    let a = cache.alloc(0).unwrap();
    let b = cache.alloc(0).unwrap();
    assert_ne!(a, b);
    assert_eq!(heap.object_start(a.as_ptr() as usize), Some(a.as_ptr() as usize));
    // The largest object fits.
    assert!(cache.alloc(ARENA_SIZE).is_ok());
}

#[test]
fn the_hard_limit_is_an_error_not_a_panic() {
    let limit = 1 << 20;
    let heap = Heap::new(HeapConfig { hard_limit: limit, ..HeapConfig::default() }).unwrap();
    let mut cache = heap.new_cache();
    assert_eq!(cache.alloc(2 << 20), Err(AllocError::OutOfMemory { requested: 2 << 20, limit }));
    let mut n = 0;
    let err = loop {
        match cache.alloc(1000) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, AllocError::OutOfMemory { requested: 1000, limit });
    assert!(n * 1000 > limit / 2, "only {n} objects fit");
    assert!(heap.stats().in_use_bytes <= limit);
    // Freeing makes room again.
    assert!(collect(&heap, &mut cache, &[]) >= n);
    assert!(cache.alloc(1000).is_ok());
}

#[test]
fn free_runs_coalesce() {
    let heap = heap();
    let mut cache = heap.new_cache();
    let size = 40 * 1024; // 5 pages, a large object
    let objs: Vec<usize> = (0..3).map(|_| cache.alloc(size).unwrap().as_ptr() as usize).collect();
    for w in objs.windows(2) {
        assert_eq!(w[1], w[0] + 5 * PAGE_SIZE, "best fit carves the arena in order");
    }
    // Free the middle one, then the outer ones: all three runs and the arena's rest merge.
    assert_eq!(collect(&heap, &mut cache, &[objs[0], objs[2]]), 1);
    assert_eq!(collect(&heap, &mut cache, &[]), 2);
    // Only a merged run can hold 15 pages at the first object's address.
    let big = cache.alloc(15 * PAGE_SIZE).unwrap().as_ptr() as usize;
    assert_eq!(big, objs[0]);
}

#[test]
fn scavenge_returns_pages_free_for_one_interval_and_rss_falls() {
    let heap = heap();
    let mut cache = heap.new_cache();
    let len = 4 << 20;
    let p = cache.alloc(len).unwrap().as_ptr();
    // SAFETY: `len` bytes at p are ours.
    unsafe { std::ptr::write_bytes(p, 1, len) };
    let addr = p as usize;
    assert_eq!(resident_pages(addr, len), len / 4096);
    assert_eq!(heap.scavenge(), 0, "nothing in use is released");
    assert_eq!(collect(&heap, &mut cache, &[]), 1);
    assert_eq!(heap.scavenge(), 0, "a run freed in this interval stays");
    assert_eq!(resident_pages(addr, len), len / 4096);
    assert_eq!(heap.scavenge(), len);
    assert_eq!(resident_pages(addr, len), 0);
    let s = heap.stats();
    assert_eq!(s.released_bytes, s.free_bytes);
    // Released memory comes back zeroed.
    let q = cache.alloc(len).unwrap().as_ptr();
    assert_eq!(q, p);
    // SAFETY: as above.
    assert!(unsafe { std::slice::from_raw_parts(q, len) }.iter().all(|&b| b == 0));
}

#[test]
fn scavenge_all_releases_at_once() {
    let heap = heap();
    let mut cache = heap.new_cache();
    for _ in 0..1000 {
        cache.alloc(64).unwrap();
    }
    collect(&heap, &mut cache, &[]);
    assert!(heap.scavenge_all() >= PAGE_SIZE);
    let s = heap.stats();
    assert_eq!(s.released_bytes, s.free_bytes);
}

#[test]
fn poison_fills_freed_objects() {
    let heap = Heap::new(HeapConfig { poison: true, ..HeapConfig::default() }).unwrap();
    let mut cache = heap.new_cache();
    let a = cache.alloc(48).unwrap().as_ptr();
    let b = cache.alloc(100_000).unwrap().as_ptr();
    // SAFETY: the objects are ours; fresh objects are zeroed even in poison mode.
    unsafe {
        assert!(std::slice::from_raw_parts(a, 48).iter().all(|&x| x == 0));
        std::ptr::write_bytes(a, 7, 48);
    }
    let keep = cache.alloc(48).unwrap().as_ptr() as usize;
    assert_eq!(collect(&heap, &mut cache, &[keep, b as usize]), 1);
    // SAFETY: the slot is freed but its span is still mapped (it holds `keep`).
    assert!(unsafe { std::slice::from_raw_parts(a, 48) }.iter().all(|&x| x == POISON));
    // The slot is handed out again, zeroed.
    assert_eq!(cache.alloc(48).unwrap().as_ptr(), a);
}

#[test]
#[should_panic(expected = "was written at offset 5 after it was freed")]
fn poison_catches_a_write_after_free() {
    let heap = Heap::new(HeapConfig { poison: true, ..HeapConfig::default() }).unwrap();
    let mut cache = heap.new_cache();
    let a = cache.alloc(48).unwrap().as_ptr();
    let keep = cache.alloc(48).unwrap().as_ptr() as usize;
    collect(&heap, &mut cache, &[keep]);
    // SAFETY: deliberately a write to a freed slot, inside a still-mapped span.
    unsafe { *a.add(5) = 1 };
    let _ = cache.alloc(48);
}

#[test]
fn caches_on_many_threads_never_hand_out_the_same_memory() {
    let heap = heap();
    let results: Vec<Vec<(usize, usize, u8)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u8)
            .map(|t| {
                let heap = heap.clone();
                s.spawn(move || {
                    let mut cache = heap.new_cache();
                    (0..3000usize)
                        .map(|i| {
                            let size = 1 + (i * 37 + t as usize * 11) % 3000;
                            let p = cache.alloc(size).unwrap().as_ptr();
                            // SAFETY: `size` bytes at p are ours.
                            unsafe { std::ptr::write_bytes(p, t + 1, size) };
                            (p as usize, size, t + 1)
                        })
                        .collect()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<_> = results.into_iter().flatten().collect();
    all.sort();
    for w in all.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "{w:?} overlap");
    }
    for &(p, size, t) in &all {
        // SAFETY: still allocated; the threads are done writing.
        let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, size) };
        assert!(bytes.iter().all(|&b| b == t));
    }
    assert_eq!(heap.stats().live_objects, 4 * 3000);
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(usize),
    /// Make the live object at this index (mod the count) unreachable.
    Drop(usize),
    /// Mark the reachable objects and sweep.
    Collect,
    Scavenge {
        all: bool,
    },
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![
        6 => 0usize..=256,
        3 => 257usize..=MAX_SMALL,
        1 => MAX_SMALL + 1..=300_000,
    ];
    prop_oneof![
        10 => size.prop_map(Op::Alloc),
        6 => any::<usize>().prop_map(Op::Drop),
        2 => Just(Op::Collect),
        1 => any::<bool>().prop_map(|all| Op::Scavenge { all }),
        1 => Just(Op::Flush),
    ]
}

#[derive(Clone, Copy, Debug)]
struct Obj {
    addr: usize,
    size: usize,
    slot: usize,
    tag: u8,
}

fn check_bytes(o: &Obj) {
    let n = o.size.min(64);
    // SAFETY: the object is allocated (the model says so) and `n` <= its size.
    let head = unsafe { std::slice::from_raw_parts(o.addr as *const u8, n) };
    assert!(head.iter().all(|&b| b == o.tag), "object {o:?} was overwritten");
    // SAFETY: as above.
    let tail = unsafe { std::slice::from_raw_parts((o.addr + o.size - n) as *const u8, n) };
    assert!(tail.iter().all(|&b| b == o.tag), "object {o:?} was overwritten");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn heap_matches_a_model_of_live_objects(
        ops in proptest::collection::vec(op(), 1..120),
        poison in any::<bool>(),
    ) {
        let heap = Heap::new(HeapConfig { poison, ..HeapConfig::default() }).unwrap();
        let mut cache = heap.new_cache();
        let mut live: Vec<Obj> = Vec::new();
        let mut dead: Vec<Obj> = Vec::new();
        let mut tag = 0u8;
        for op in ops {
            match op {
                Op::Alloc(size) => {
                    let addr = cache.alloc(size).unwrap().as_ptr() as usize;
                    let span = heap.find_span(addr).unwrap();
                    let slot = span.elem_size();
                    let size = size.max(1);
                    prop_assert!(slot >= size);
                    tag = tag.wrapping_add(1).max(1);
                    let o = Obj { addr, size, slot, tag };
                    // Fresh memory is zeroed.
                    let zero = Obj { tag: 0, ..o };
                    check_bytes(&zero);
                    // SAFETY: `size` bytes at addr were just allocated to us.
                    unsafe { std::ptr::write_bytes(addr as *mut u8, tag, size) };
                    live.push(o);
                }
                Op::Drop(i) => {
                    if !live.is_empty() {
                        let o = live.swap_remove(i % live.len());
                        dead.push(o);
                    }
                }
                Op::Collect => {
                    let keep: Vec<usize> = live.iter().map(|o| o.addr).collect();
                    let freed = collect(&heap, &mut cache, &keep);
                    prop_assert_eq!(freed, dead.len());
                    for o in dead.drain(..) {
                        prop_assert_eq!(heap.object_start(o.addr), None);
                    }
                    let s = heap.stats();
                    prop_assert_eq!(s.live_objects, live.len() as u64);
                    prop_assert_eq!(s.live_bytes, live.iter().map(|o| o.slot as u64).sum::<u64>());
                    prop_assert_eq!(s.total_allocs - s.total_frees, s.live_objects);
                }
                Op::Scavenge { all } => {
                    if all { heap.scavenge_all() } else { heap.scavenge() };
                    let s = heap.stats();
                    if all {
                        prop_assert_eq!(s.released_bytes, s.free_bytes);
                    }
                }
                Op::Flush => cache.flush(),
            }
            // No two allocated objects (reachable or not yet swept) overlap.
            let mut by_addr = BTreeMap::new();
            for o in live.iter().chain(&dead) {
                prop_assert!(by_addr.insert(o.addr, o.slot).is_none(), "{:#x} twice", o.addr);
            }
            let mut end = 0;
            for (&a, &slot) in &by_addr {
                prop_assert!(a >= end, "object at {:#x} overlaps the one before", a);
                end = a + slot;
            }
            // Every live object is found from any interior address and is intact.
            for o in &live {
                for a in [o.addr, o.addr + o.size / 2, o.addr + o.size - 1, o.addr + o.slot - 1] {
                    prop_assert_eq!(heap.object_start(a), Some(o.addr));
                }
                check_bytes(o);
            }
            let s = heap.stats();
            prop_assert_eq!(s.in_use_bytes + s.free_bytes, s.mapped_bytes);
            prop_assert!(s.released_bytes <= s.free_bytes);
            let live_bytes: usize = live.iter().chain(&dead).map(|o| o.slot).sum();
            prop_assert!(live_bytes <= s.in_use_bytes);
        }
        // Everything dropped and collected: all pages go back to the page heap, and the
        // memory is reused rather than mapped again.
        let mapped = heap.stats().mapped_bytes;
        live.clear();
        collect(&heap, &mut cache, &[]);
        let s = heap.stats();
        prop_assert_eq!(s.in_use_bytes, 0);
        prop_assert_eq!(s.live_objects, 0);
        for _ in 0..100 {
            cache.alloc(1000).unwrap();
        }
        prop_assert_eq!(heap.stats().mapped_bytes, mapped.max(ARENA_SIZE));
    }
}

#[test]
fn the_division_by_multiplication_is_exact_for_every_class_and_offset() {
    let heap = heap();
    let mut cache = heap.new_cache();
    for (class, &c) in CLASSES.iter().enumerate().skip(1) {
        let p = cache.alloc(c.size).unwrap().as_ptr() as usize;
        let span = heap.find_span(p).unwrap();
        for off in 0..c.pages * PAGE_SIZE {
            assert_eq!(span.div(off), off / c.size, "class {class} size {} offset {off}", c.size);
        }
    }
}

/// The exact counts of a model workload: `(size, keep)` allocations on two caches.
struct CountModel {
    by_class: [u64; crate::sizeclass::NUM_CLASSES],
    bytes: u64,
    frees_by_class: [u64; crate::sizeclass::NUM_CLASSES],
    freed_bytes: u64,
}

impl CountModel {
    fn slot(size: usize) -> (usize, u64) {
        match class_of(size) {
            Some(c) => (c, CLASSES[c].size as u64),
            None => (0, size.next_multiple_of(8) as u64),
        }
    }

    fn alloc(&mut self, size: usize) {
        let (c, b) = Self::slot(size);
        self.by_class[c] += 1;
        self.bytes += b;
    }

    fn free(&mut self, size: usize) {
        let (c, b) = Self::slot(size);
        self.frees_by_class[c] += 1;
        self.freed_bytes += b;
    }

    fn check(&self, heap: &Heap, when: &str) {
        let got = heap.alloc_counts();
        assert_eq!(got.objects_by_class, self.by_class, "{when}: objects by class");
        assert_eq!(got.bytes, self.bytes, "{when}: bytes");
        assert_eq!(got.frees_by_class, self.frees_by_class, "{when}: frees by class");
        assert_eq!(got.freed_bytes, self.freed_bytes, "{when}: freed bytes");
        let s = heap.stats();
        assert_eq!(s.total_allocs, self.by_class.iter().sum::<u64>(), "{when}: stats allocs");
        assert_eq!(s.total_frees, self.frees_by_class.iter().sum::<u64>(), "{when}: stats frees");
        assert_eq!(s.live_bytes, self.bytes - self.freed_bytes, "{when}: stats live bytes");
    }
}

#[test]
fn allocation_counts_are_exact_with_caches_not_flushed() {
    let heap = heap();
    let mut model = CountModel {
        by_class: [0; crate::sizeclass::NUM_CLASSES],
        bytes: 0,
        frees_by_class: [0; crate::sizeclass::NUM_CLASSES],
        freed_bytes: 0,
    };
    let (mut a, mut b) = (heap.new_cache(), heap.new_cache());
    let sizes = [8, 16, 24, 40, 100, 512, 4000, 33_000, 70_000];
    let mut objects = Vec::new();
    for round in 0..3 {
        // 20,000 small pushes, as Pebble's vector test did, on two caches, plus large ones.
        for i in 0..20_000usize {
            let size = sizes[i % sizes.len()];
            if size > MAX_SMALL && i % 97 != 0 {
                continue;
            }
            let cache = if i % 3 == 0 { &mut b } else { &mut a };
            let p = cache.alloc(size).unwrap().as_ptr() as usize;
            model.alloc(size);
            objects.push((p, size, i % 4 == 0));
            if i % 5000 == 0 {
                model.check(&heap, &format!("round {round}, allocation {i}"));
            }
        }
        model.check(&heap, &format!("round {round}, before the collection"));
        // A collection keeps every fourth object; the rest are freed by the sweep.
        a.flush();
        let keep: Vec<usize> =
            objects.iter().filter(|o| o.2).map(|o| heap.object_start(o.0).unwrap()).collect();
        for (_, size, kept) in &objects {
            if !kept {
                model.free(*size);
            }
        }
        collect(&heap, &mut b, &keep);
        model.check(&heap, &format!("round {round}, after the collection"));
        objects.retain(|o| o.2);
        for o in &mut objects {
            o.2 = false;
        }
        // The survivors die in the next round's collection (they are not kept again).
    }
    // A dropped cache's counts stay counted.
    drop(a);
    model.check(&heap, "after a cache was dropped");
}

#[test]
fn a_reader_of_the_counts_sees_them_grow_and_end_exact() {
    let heap = heap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (heap, stop) = (heap.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = 0;
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = heap.alloc_counts().objects();
                assert!(n >= last, "allocations went down: {last} then {n}");
                last = n;
                reads += 1;
            }
            reads
        })
    };
    let mut cache = heap.new_cache();
    for i in 0..200_000usize {
        cache.alloc(8 + (i % 64) * 8).unwrap();
    }
    assert_eq!(heap.alloc_counts().objects(), 200_000);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}
