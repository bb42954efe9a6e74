//! Unit tests of the managed stack, the walker and the hooks, with access to the crate's
//! internals (to corrupt a stack on purpose).

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Once};

use crate::stack::MIN_WORDS;
use crate::*;

/// Everything a walk yields, in order.
#[derive(Default, Debug, PartialEq, Eq)]
struct Seen {
    frames: Vec<Frame>,
    /// (depth, slot, value)
    refs: Vec<(usize, usize, usize)>,
    tagged: Vec<(usize, usize, usize)>,
    depth: usize,
}

impl Visitor for Seen {
    fn frame(&mut self, f: &Frame) {
        self.depth = f.depth;
        self.frames.push(*f);
    }
    fn reference(&mut self, slot: usize, word: &crate::SlotWord) {
        self.refs.push((self.depth, slot, word.load(Relaxed)));
    }
    fn tagged(&mut self, slot: usize, word: &crate::SlotWord) {
        self.tagged.push((self.depth, slot, word.load(Relaxed)));
    }
}

fn seen(ms: &mut ManagedStack, reg: &Registry) -> Seen {
    let mut s = Seen::default();
    ms.walk(reg, &mut s);
    s
}

fn config() -> StackConfig {
    StackConfig::default().validate(true)
}

fn panic_message(r: Result<(), Box<dyn std::any::Any + Send>>) -> String {
    let e = r.expect_err("expected a panic");
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

// ---- hooks: one process-wide set, dispatching to per-thread test closures ----

thread_local! {
    static ON_PREEMPT: RefCell<Option<Box<dyn FnMut()>>> = const { RefCell::new(None) };
    static CALLS: Cell<[usize; 3]> = const { Cell::new([0; 3]) };
}

fn bump(i: usize) {
    CALLS.with(|c| {
        let mut v = c.get();
        v[i] += 1;
        c.set(v)
    });
}

fn install_hooks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        set_hooks(Hooks {
            preempt: || {
                bump(0);
                // Taken out while it runs, so that it may push (re-entering the hook).
                let f = ON_PREEMPT.with(|f| f.borrow_mut().take());
                if let Some(mut f) = f {
                    f();
                    ON_PREEMPT.with(|slot| {
                        slot.borrow_mut().get_or_insert(f);
                    });
                }
            },
            copy_begin: || bump(1),
            copy_end: || bump(2),
        })
        .expect("only this test module sets hooks");
    });
    CALLS.with(|c| c.set([0; 3]));
    ON_PREEMPT.with(|f| *f.borrow_mut() = None);
}

fn calls() -> [usize; 3] {
    CALLS.with(|c| c.get())
}

/// A pointer another thread may use under the `_stopped` contract.
#[derive(Clone, Copy)]
struct Stopped(*const ManagedStack);
// SAFETY: used only while the owner is inside the preempt hook, i.e. stopped.
unsafe impl Send for Stopped {}

// ---- basics ----

#[test]
fn try_push_takes_only_the_fast_path_and_the_slot_pointer_follows_the_top() {
    install_hooks();
    let reg = Registry::new();
    let f = reg.register(FuncDesc::new("f", 3, 0, 1)).unwrap();
    let ms = ManagedStack::new(1, config());
    assert!(ms.top_slots_ptr().is_null());
    // No buffer yet: the fast path has no room, so nothing is pushed and no hook ran.
    assert!(!ms.try_push(f));
    assert!(ms.is_empty());
    ms.push(f);
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    unsafe { ms.set(1, 7) };
    let p = ms.top_slots_ptr();
    // SAFETY: the top frame has 3 slots and nothing moved the buffer since.
    assert_eq!(unsafe { &*p.add(1) }.load(Relaxed), 7);
    assert!(ms.try_push(f));
    assert_eq!(ms.depth(), 2);
    let q = ms.top_slots_ptr();
    assert_eq!(q as usize - p as usize, 5 * 8, "the new frame starts past the old one's header");
    // SAFETY: as above, for the new top frame.
    unsafe { &*q.add(2) }.store(9, Relaxed);
    assert_eq!(ms.get(2), 9);
    // A pending request sends the caller to the slow path instead of being lost.
    ms.guard().poison();
    assert!(!ms.try_push(f));
    assert_eq!((ms.depth(), calls()[0]), (2, 0));
    ms.push(f);
    assert_eq!(calls()[0], 1, "the slow push ran the preempt hook");
    ms.guard().unpoison();
    // Filling the buffer: try_push refuses at the edge, push grows.
    while ms.try_push(f) {}
    let cap = ms.capacity_words();
    assert!(ms.used_words() + 5 > cap);
    ms.push(f);
    assert!(ms.capacity_words() > cap);
    assert_eq!(ms.top_slots_ptr(), ms.top_slots_ptr());
    ms.pop();
    assert_eq!(ms.get(0), 0);
}

#[test]
fn empty_stack_has_no_buffer() {
    let ms = ManagedStack::new(1, config());
    assert_eq!((ms.capacity_words(), ms.used_words(), ms.depth()), (0, 0, 0));
    assert!(ms.is_empty());
    assert_eq!(ms.guard().limit_words(), 0);
}

/// Every frame size from 0 to 9 slots (the rounds of four, the pair and the single store of a
/// push, alone and together), over words a popped frame left dirty: the new frame's slots are
/// zero, and the caller's slots and header are untouched.
#[test]
fn push_zeroes_every_small_size_exactly() {
    let reg = Registry::new();
    let dirty = reg.register(FuncDesc::new("dirty", 12, 0, 1)).unwrap();
    let caller = reg.register(FuncDesc::new("caller", 1, 0, 2)).unwrap();
    let ms = ManagedStack::new(1, config());
    ms.push(caller);
    // SAFETY: no collector scans this stack: only the test reads it.
    unsafe { ms.set(0, 7) };
    ms.set_safepoint(1);
    for n in 0..=9usize {
        ms.push(dirty);
        for i in 0..12 {
            // SAFETY: as above.
            unsafe { ms.set(i, 0xdead) };
        }
        ms.pop();
        let f = reg.register(FuncDesc::new(format!("f{n}"), n, 0, 1)).unwrap();
        ms.push(f);
        assert_eq!(ms.frame_slots(), n);
        assert!((0..n).all(|i| ms.get(i) == 0), "a frame of {n} slots not zeroed");
        ms.pop();
        assert_eq!((ms.get(0), ms.top_frame_info()), (7, (Some(caller.index()), 1)));
    }
}

#[test]
fn push_zeroes_and_pop_restores() {
    let reg = Registry::new();
    let f = reg.register(FuncDesc::new("f", 3, 0, 2)).unwrap();
    let g = reg.register(FuncDesc::new("g", 2, 0, 1)).unwrap();
    let ms = ManagedStack::new(1, config());
    ms.push(f);
    assert_eq!(ms.capacity_words(), MIN_WORDS);
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    unsafe { ms.set(0, 10) };
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    unsafe { ms.set(2, 12) };
    ms.set_safepoint(1);
    ms.push(g);
    assert_eq!((ms.get(0), ms.get(1), ms.frame_slots()), (0, 0, 2));
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    unsafe { ms.set(0, 99) };
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    unsafe { ms.set(1, 98) };
    assert_eq!(ms.depth(), 2);
    assert_eq!(ms.used_words(), 2 + 3 + 2 + 2);
    ms.pop();
    assert_eq!((ms.get(0), ms.get(1), ms.get(2)), (10, 0, 12));
    assert_eq!(ms.top_frame_info(), (Some(f.index()), 1));
    // The popped frame's words are zeroed again by the next push.
    ms.push(g);
    assert_eq!((ms.get(0), ms.get(1)), (0, 0));
    ms.pop();
    ms.pop();
    assert!(ms.is_empty());
    assert_eq!(ms.used_words(), 0);
}

#[test]
fn push_with_args_fills_the_first_slots() {
    let reg = Registry::new();
    let f = reg.register(FuncDesc::new("f", 4, 2, 1)).unwrap();
    let ms = ManagedStack::new(1, config());
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    unsafe { ms.push_with_args(f, &[7, 8]) };
    assert_eq!((0..4).map(|i| ms.get(i)).collect::<Vec<_>>(), [7, 8, 0, 0]);
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    let m =
        panic_message(catch_unwind(AssertUnwindSafe(|| unsafe { ms.push_with_args(f, &[1; 5]) })));
    assert_eq!(m, "goroutine 1: 5 arguments pushed into a frame of 4 slots");
    assert_eq!(ms.depth(), 1);
}

#[test]
fn owner_misuse_panics_with_the_goroutine_id() {
    let reg = Registry::new();
    let f = reg.register(FuncDesc::new("f", 2, 0, 3)).unwrap();
    let ms = ManagedStack::new(42, config());
    let m = |r| panic_message(r);
    assert_eq!(
        m(catch_unwind(AssertUnwindSafe(|| ms.pop()))),
        "goroutine 42: pop on an empty managed stack"
    );
    assert_eq!(
        m(catch_unwind(AssertUnwindSafe(|| ms.set_safepoint(0)))),
        "goroutine 42: set_safepoint on an empty managed stack"
    );
    assert_eq!(
        m(catch_unwind(AssertUnwindSafe(|| {
            ms.get(0);
        }))),
        "goroutine 42: slot access on an empty managed stack"
    );
    ms.push(f);
    assert_eq!(
        m(catch_unwind(AssertUnwindSafe(|| ms.set_safepoint(3)))),
        "goroutine 42: safepoint 3 out of range: the top frame has safepoints 0..3"
    );
    assert_eq!(
        // SAFETY: no collector scans this stack: only the test's own walks read it.
        m(catch_unwind(AssertUnwindSafe(|| unsafe { ms.set(2, 1) }))),
        "goroutine 42: slot 2 out of range: the top frame has 2 slots"
    );
    ms.set_id(43);
    assert_eq!(
        m(catch_unwind(AssertUnwindSafe(|| {
            ms.get(5);
        }))),
        "goroutine 43: slot 5 out of range: the top frame has 2 slots"
    );
    assert_eq!(
        m(catch_unwind(AssertUnwindSafe(|| ms.push_handles(MAX_FRAME_SLOTS + 1)))),
        "goroutine 43: handle frame of 1048577 slots is larger than the maximum of 1048576"
    );
    // Nothing changed.
    assert_eq!((ms.depth(), ms.top_frame_info()), (1, (Some(0), 0)));
}

// ---- growth, shrinking, the limit ----

#[test]
fn growth_doubles_and_preserves_every_slot() {
    let reg = Registry::new();
    let f = reg.register(FuncDesc::new("f", 5, 0, 1).refs_at(0, &[0, 4])).unwrap();
    let mut ms = ManagedStack::new(1, config());
    let depth = if cfg!(miri) { 60 } else { 1000 };
    let mut caps = vec![];
    for d in 0..depth {
        ms.push(f);
        for i in 0..5 {
            // SAFETY: no collector scans this stack: only the test's own walks read it.
            unsafe { ms.set(i, d * 10 + i) };
        }
        if caps.last() != Some(&ms.capacity_words()) {
            caps.push(ms.capacity_words());
        }
    }
    assert!(caps.windows(2).all(|w| w[1] == 2 * w[0]), "{caps:?}");
    let s = seen(&mut ms, &reg);
    assert_eq!(s.refs.len(), 2 * depth);
    for (k, &(dep, slot, v)) in s.refs.iter().enumerate() {
        let d = depth - 1 - dep;
        assert_eq!((dep, slot, v), (k / 2, [0, 4][k % 2], d * 10 + [0, 4][k % 2]));
    }
    for d in (0..depth).rev() {
        assert_eq!(
            (0..5).map(|i| ms.get(i)).collect::<Vec<_>>(),
            (0..5).map(|i| d * 10 + i).collect::<Vec<_>>()
        );
        ms.pop();
    }
}

#[test]
fn a_large_frame_grows_past_doubling() {
    let reg = Registry::new();
    let f = reg.register(FuncDesc::new("big", 1000, 0, 1)).unwrap();
    let ms = ManagedStack::new(1, config());
    ms.push(f);
    assert_eq!(ms.capacity_words(), 1024);
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    unsafe { ms.set(999, 5) };
    assert_eq!(ms.get(999), 5);
}

#[test]
fn shrink_halves_when_under_a_quarter_and_keeps_slots() {
    let reg = Registry::new();
    let f = reg.register(FuncDesc::new("f", 30, 0, 1).refs_at(0, &[1, 29])).unwrap();
    let mut ms = ManagedStack::new(1, config());
    for d in 0..40 {
        ms.push(f);
        // SAFETY: no collector scans this stack: only the test's own walks read it.
        unsafe { ms.set(1, d) };
        // SAFETY: no collector scans this stack: only the test's own walks read it.
        unsafe { ms.set(29, 1000 + d) };
    }
    let cap = ms.capacity_words();
    assert_eq!(cap, 2048);
    assert!(!ms.shrink(), "1280 of 2048 words used");
    for _ in 0..26 {
        ms.pop();
    }
    // 14 frames, 448 words: under a quarter of 2048.
    assert!(ms.shrink());
    assert_eq!(ms.capacity_words(), 1024);
    assert!(!ms.shrink(), "448 of 1024 is not under a quarter");
    let s = seen(&mut ms, &reg);
    let expect: Vec<_> =
        (0..14).rev().flat_map(|d| [(13 - d, 1, d), (13 - d, 29, 1000 + d)]).collect();
    assert_eq!(s.refs, expect);
    while !ms.is_empty() {
        ms.pop();
    }
    while ms.shrink() {}
    assert_eq!(ms.capacity_words(), MIN_WORDS, "never below the first buffer");
}

#[test]
fn release_frees_and_the_next_push_allocates() {
    let reg = Registry::new();
    let f = reg.register(FuncDesc::new("f", 3, 0, 1)).unwrap();
    let ms = ManagedStack::new(1, config());
    ms.push(f);
    ms.guard().poison();
    ms.release();
    assert_eq!((ms.capacity_words(), ms.depth()), (0, 0));
    assert!(!ms.guard().is_poisoned(), "a reset clears the request");
    ms.push(f);
    assert_eq!(ms.capacity_words(), MIN_WORDS);
    ms.set_id(9);
    ms.reset();
    assert_eq!((ms.capacity_words(), ms.depth(), ms.id()), (MIN_WORDS, 0, 9));
}

#[test]
#[should_panic(expected = "goroutine 7: managed stack exceeds 4 KiB")]
fn exceeding_the_limit_panics() {
    let reg = Registry::new();
    let f = reg.register(FuncDesc::new("f", 100, 0, 1)).unwrap();
    let ms = ManagedStack::new(7, StackConfig::default().limit_bytes(4096));
    loop {
        ms.push(f);
    }
}

#[test]
fn the_limit_panic_leaves_the_stack_usable() {
    let reg = Registry::new();
    let f = reg.register(FuncDesc::new("f", 10, 0, 1).refs_at(0, &[3])).unwrap();
    let mut ms = ManagedStack::new(3, StackConfig::default().limit_bytes(1000).validate(true));
    let mut pushed = 0;
    let m = panic_message(catch_unwind(AssertUnwindSafe(|| {
        loop {
            ms.push(f);
            // SAFETY: no collector scans this stack: only the test's own walks read it.
            unsafe { ms.set(3, 0xabc) };
            pushed += 1;
        }
    })));
    assert_eq!(m, "goroutine 3: managed stack exceeds 1000 bytes");
    // 1000 bytes = 125 words: ten frames of 12 words fit, the eleventh does not.
    assert_eq!((pushed, ms.depth(), ms.capacity_words()), (10, 10, 125));
    assert_eq!(seen(&mut ms, &reg).refs.len(), 10);
    ms.pop();
    ms.push(f);
    assert_eq!(ms.check(&reg), Ok(10));
}

#[test]
fn a_zero_limit_refuses_the_first_push() {
    let ms = ManagedStack::new(5, StackConfig::default().limit_bytes(0));
    let m = panic_message(catch_unwind(AssertUnwindSafe(|| ms.push_handles(0))));
    assert_eq!(m, "goroutine 5: managed stack exceeds 0 bytes");
    assert_eq!(ms.capacity_words(), 0);
}

#[test]
#[should_panic(expected = "over the maximum")]
fn a_limit_over_the_maximum_is_refused() {
    let _ = StackConfig::default().limit_bytes(StackConfig::MAX_LIMIT + 1);
}

#[test]
fn bytes_are_formatted_in_exact_units() {
    assert_eq!(format_bytes(1 << 30), "1 GiB");
    assert_eq!(format_bytes(3 << 20), "3 MiB");
    assert_eq!(format_bytes(4096), "4 KiB");
    assert_eq!(format_bytes(1536), "1536 bytes");
    assert_eq!(format_bytes(0), "0 bytes");
    assert_eq!(StackConfig::default().limit(), 1 << 30);
}

// ---- the walker ----

#[test]
fn walker_yields_live_slots_of_the_current_safepoint() {
    let reg = Registry::new();
    let f = reg
        .register(
            FuncDesc::new("f", 4, 1, 3)
                .refs_at(0, &[0])
                .refs_at(1, &[0, 2])
                .tagged_at(1, &[3])
                .tagged_at(2, &[1]),
        )
        .unwrap();
    let mut ms = ManagedStack::new(1, config());
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    unsafe { ms.push_with_args(f, &[100]) };
    for i in 1..4 {
        // SAFETY: no collector scans this stack: only the test's own walks read it.
        unsafe { ms.set(i, 100 + i) };
    }
    let s = seen(&mut ms, &reg);
    assert_eq!((s.refs, s.tagged), (vec![(0, 0, 100)], vec![]));
    ms.set_safepoint(1);
    ms.push_handles(2);
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    unsafe { ms.set(0, 7) };
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    unsafe { ms.set(1, 8) };
    ms.push(f);
    ms.set_safepoint(2);
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    unsafe { ms.set(1, 55) };
    let s = seen(&mut ms, &reg);
    assert_eq!(
        s.frames,
        [
            Frame { depth: 0, offset: 10, func: Some(f), safepoint: 2, slots: 4, sealed: false },
            Frame { depth: 1, offset: 6, func: None, safepoint: 0, slots: 2, sealed: false },
            Frame { depth: 2, offset: 0, func: Some(f), safepoint: 1, slots: 4, sealed: false },
        ]
    );
    assert_eq!(s.refs, [(1, 0, 7), (1, 1, 8), (2, 0, 100), (2, 2, 102)]);
    assert_eq!(s.tagged, [(0, 1, 55), (2, 3, 103)]);
}

#[test]
fn walk_of_an_empty_stack_yields_nothing() {
    let reg = Registry::new();
    let mut ms = ManagedStack::new(1, config());
    assert_eq!(seen(&mut ms, &reg), Seen::default());
    assert_eq!(ms.check(&reg), Ok(0));
}

/// Overwrites word `i` of the buffer: corruption on purpose.
fn poke(ms: &ManagedStack, i: usize, v: usize) {
    let buf = ms.buf.load(Relaxed);
    assert!(i < ms.used_words());
    // SAFETY: `i < top <= capacity`.
    unsafe { &*buf.add(i) }.store(v, Relaxed);
}

fn two_frames(reg: &Registry, validate: bool) -> ManagedStack {
    let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0]).line(1, 17)).unwrap();
    let ms = ManagedStack::new(11, StackConfig::default().validate(validate));
    ms.push(f);
    ms.set_safepoint(1);
    ms.push(f);
    ms
}

fn corrupted_walk(ms: &mut ManagedStack, reg: &Registry) -> String {
    panic_message(catch_unwind(AssertUnwindSafe(|| {
        seen(ms, reg);
    })))
}

#[test]
fn walker_catches_an_unknown_function_in_either_mode() {
    for validate in [false, true] {
        let reg = Registry::new();
        let mut ms = two_frames(&reg, validate);
        poke(&ms, 8, crate::stack::word0(9, 3));
        let m = corrupted_walk(&mut ms, &reg);
        assert!(
            m.starts_with(
                "goroutine 11: managed stack corrupted: frame 0 at word 8: function index"
            ),
            "{m}"
        );
        let e = ms.check(&reg).unwrap_err();
        assert_eq!((e.offset, e.depth), (8, 0));
        assert_eq!(e.reason, "function index 9 not in the registry (1 functions)");
    }
}

/// The corrupted-stack report (the dump the panic is too short for) goes through the message
/// sink an embedder sets, not straight to standard error.
#[test]
// The sink set is leaked by design (kept for the process's life), which Miri counts as a leak.
#[cfg_attr(miri, ignore)]
fn a_corrupted_stack_is_reported_through_the_message_sink() {
    use std::sync::{Arc, Mutex};
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let g = got.clone();
    safepoint_arch::set_message_sink(Some(Box::new(move |m: &str| {
        g.lock().unwrap().push(m.to_string())
    })));
    let reg = Registry::new();
    let mut ms = two_frames(&reg, false);
    poke(&ms, 8, crate::stack::word0(9, 3));
    let m = corrupted_walk(&mut ms, &reg);
    safepoint_arch::set_message_sink(None);
    assert!(m.contains("managed stack corrupted"), "{m}");
    // Other tests of this process may write meanwhile: find ours among what was caught.
    let got = got.lock().unwrap();
    let ours: Vec<&String> = got.iter().filter(|l| l.contains("goroutine 11: top")).collect();
    assert_eq!(ours.len(), 1, "{got:?}");
    assert!(
        ours[0].starts_with("fatal: managed stack corrupted: frame 0 at word 8"),
        "{}",
        ours[0]
    );
    assert!(ours[0].contains("words 0..") && ours[0].contains("<-"), "the dump: {}", ours[0]);
}

#[test]
fn walker_catches_a_bad_safepoint_size_or_handle() {
    use crate::stack::{HANDLE_BIT, word0, word1};
    // Two frames of "f" (3 slots): slots 0..3, header 3..5; slots 5..8, header 8..10.
    let cases: [(usize, usize, &str); 5] = [
        (9, word1(2, 2), "\"f\" at safepoint 2 of 2, but it has 2 safepoints"),
        (8, word0(0, 4), "\"f\" has 3 slots but its frame has 4"),
        (3, word0(0, 1), "\"f\" has 3 slots but its frame has 1"),
        (8, word0(0, 20), "frame of 20 slots reaches below word 0"),
        (
            8,
            word0(HANDLE_BIT | 4, 3),
            "handle frame with function field 0x80000004 at safepoint 0/2",
        ),
    ];
    for (i, v, reason) in cases {
        let reg = Registry::new();
        let mut ms = two_frames(&reg, true);
        poke(&ms, i, v);
        let e = ms.check(&reg).unwrap_err();
        assert_eq!(e.reason, reason, "poking word {i}");
        let m = corrupted_walk(&mut ms, &reg);
        assert!(m.starts_with("goroutine 11: managed stack corrupted: frame "), "{m}");
        // The traceback does not panic: it lists what it could and says what is wrong.
        let t = ms.traceback(&reg);
        assert_eq!(t.error.as_ref().map(|e| e.reason.as_str()), Some(reason));
        assert!(t.to_string().contains("<corrupted: "), "{t}");
    }
}

#[test]
fn a_funcid_from_another_registry_is_caught() {
    let r1 = Registry::new();
    let r2 = Registry::new();
    let f1 = r1.register(FuncDesc::new("f", 6, 0, 1)).unwrap();
    r2.register(FuncDesc::new("g", 2, 0, 1).refs_at(0, &[1])).unwrap();
    // Release mode (no validation): the cheap checks still catch it before any slot is read.
    let mut ms = ManagedStack::new(2, StackConfig::default().validate(false));
    ms.push(f1);
    let m = corrupted_walk(&mut ms, &r2);
    assert_eq!(
        m,
        "goroutine 2: managed stack corrupted: frame 0 at word 6: frame size differs from the function's"
    );
}

#[test]
fn dump_shows_the_words_of_the_bad_frame() {
    let reg = Registry::new();
    let ms = two_frames(&reg, true);
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    unsafe { ms.set(2, 0xdead) };
    let d = ms.dump(&reg, 8);
    assert!(d.starts_with("managed stack of goroutine 11: top 10, capacity 128 words"), "{d}");
    assert!(d.contains("[       8] 0x0000000300000000 <-"), "{d}");
    assert!(d.contains("[       7] 0x000000000000dead"), "{d}");
    assert!(d.contains("f at safepoint 1, line 17"), "{d}");
}

// ---- tracebacks ----

#[test]
fn traceback_names_functions_safepoints_and_lines() {
    let reg = Registry::new();
    let main = reg.register(FuncDesc::new("main", 1, 0, 2).line(1, 3)).unwrap();
    let fib = reg.register(FuncDesc::new("fib", 2, 1, 2).line(1, 12)).unwrap();
    let ms = ManagedStack::new(7, config());
    ms.push(main);
    ms.set_safepoint(1);
    ms.push(fib);
    ms.set_safepoint(1);
    ms.push(fib);
    ms.push_handles(2);
    let t = ms.traceback(&reg);
    assert_eq!(t.goroutine, 7);
    assert_eq!(t.depth(), 4);
    assert_eq!(
        t.to_string(),
        "goroutine 7 managed stack (4 frames):\n    <native handles> (2 slots)\n    fib at safepoint 0\n    \
         fib at safepoint 1, line 12\n    main at safepoint 1, line 3\n"
    );
    assert_eq!(t.frames[1].func, Some(fib));
    assert_eq!(t.frames[3].offset, 0);
}

#[test]
fn deep_tracebacks_keep_both_ends() {
    let reg = Registry::new();
    let a = reg.register(FuncDesc::new("a", 0, 0, 1)).unwrap();
    let b = reg.register(FuncDesc::new("b", 0, 0, 1)).unwrap();
    let ms = ManagedStack::new(1, config());
    ms.push(b);
    for _ in 0..150 {
        ms.push(a);
    }
    let t = ms.traceback(&reg);
    assert_eq!((t.frames.len(), t.elided, t.tail.len(), t.depth()), (50, 51, 50, 151));
    assert_eq!(t.tail.last().unwrap().name, "b");
    assert!(t.to_string().contains("    ...51 frames elided...\n"));
}

// ---- hooks and the guard ----

#[test]
fn a_poisoned_guard_calls_preempt_on_push_and_poll() {
    install_hooks();
    let reg = Registry::new();
    let f = reg.register(FuncDesc::new("f", 1, 0, 1)).unwrap();
    let ms = ManagedStack::new(1, config());
    ms.push(f); // first push: allocation, not preemption
    assert_eq!(calls(), [0, 1, 1]);
    ms.poll();
    ms.push(f);
    assert_eq!(calls()[0], 0);
    ms.guard().poison();
    ms.poll();
    assert_eq!(calls()[0], 1);
    // The hook did not withdraw the request: the next push asks again, and still pushes.
    ms.push(f);
    assert_eq!((calls()[0], ms.depth()), (2, 3));
    // A hook that withdraws it.
    let g: *const StackGuard = ms.guard();
    ON_PREEMPT.with(|p| {
        *p.borrow_mut() = Some(Box::new(move || {
            // SAFETY: the guard lives in `ms`, which outlives every push of this test.
            unsafe { &*g }.unpoison()
        }))
    });
    ms.push(f);
    ms.push(f);
    ms.poll();
    assert_eq!((calls()[0], ms.depth(), ms.guard().is_poisoned()), (3, 5, false));
}

#[test]
fn growth_is_bracketed_by_copy_hooks_and_keeps_a_request() {
    install_hooks();
    let reg = Registry::new();
    let f = reg.register(FuncDesc::new("f", 100, 0, 1)).unwrap();
    let ms = ManagedStack::new(1, config());
    ms.push(f);
    ms.push(f);
    assert_eq!(calls(), [0, 2, 2]);
    ms.guard().poison();
    ms.push(f); // needs room and is asked to stop: preempt, then grow
    assert_eq!(calls(), [1, 3, 3]);
    assert!(ms.guard().is_poisoned(), "growth must not lose the request");
    assert_eq!(ms.capacity_words(), 512);
}

#[test]
fn a_collector_scans_and_shrinks_while_the_owner_is_in_the_hook() {
    install_hooks();
    let reg = Arc::new(Registry::new());
    let f = reg
        .register(
            FuncDesc::new("f", 6, 0, 2).refs_at(0, &[0]).refs_at(1, &[0, 5]).tagged_at(1, &[3]),
        )
        .unwrap();
    let ms = ManagedStack::new(9, config());
    let depth = if cfg!(miri) { 40 } else { 400 };
    for d in 0..depth {
        ms.push(f);
        // SAFETY: no collector scans this stack: only the test's own walks read it.
        unsafe { ms.set(0, d) };
        // SAFETY: no collector scans this stack: only the test's own walks read it.
        unsafe { ms.set(3, 2 * d + 1) };
        // SAFETY: no collector scans this stack: only the test's own walks read it.
        unsafe { ms.set(5, d + 1000) };
        ms.set_safepoint(1);
    }
    for _ in 0..depth - 5 {
        ms.pop();
    }
    let cap_before = ms.capacity_words();
    assert!(cap_before >= 4 * ms.used_words());
    let result: Arc<std::sync::Mutex<Option<(Seen, bool)>>> = Default::default();
    let (p, r2, res) = (Stopped(&ms), reg.clone(), result.clone());
    ON_PREEMPT.with(|slot| {
        *slot.borrow_mut() = Some(Box::new(move || {
            let p = p;
            let (r2, res) = (r2.clone(), res.clone());
            std::thread::scope(|s| {
                s.spawn(move || {
                    let p = p;
                    // SAFETY: the owner is inside the preempt hook, waiting for this thread.
                    let ms = unsafe { &*p.0 };
                    let mut seen = Seen::default();
                    // SAFETY: as above: the owner is stopped and this thread scans it alone.
                    let shrunk = unsafe {
                        ms.walk_stopped(&r2, &mut seen);
                        ms.shrink_stopped()
                    };
                    ms.guard().unpoison();
                    *res.lock().unwrap() = Some((seen, shrunk));
                });
            });
        }))
    });
    ms.guard().poison();
    ms.push(f); // stops in the hook; the scan happens there; then the push completes
    let (seen, shrunk) = result.lock().unwrap().take().expect("the collector ran");
    assert!(shrunk);
    assert_eq!(ms.capacity_words(), cap_before / 2);
    let expect_refs: Vec<_> =
        (0..5).rev().flat_map(|d| [(4 - d, 0, d), (4 - d, 5, d + 1000)]).collect();
    let expect_tagged: Vec<_> = (0..5).rev().map(|d| (4 - d, 3, 2 * d + 1)).collect();
    assert_eq!((seen.refs, seen.tagged), (expect_refs, expect_tagged));
    // The push landed in the new buffer, on top of intact frames.
    assert_eq!(ms.depth(), 6);
    assert_eq!(ms.check(&reg), Ok(6));
    ms.pop();
    assert_eq!((ms.get(0), ms.get(3), ms.get(5)), (4, 9, 1004));
}

#[test]
fn poison_from_another_thread_reaches_the_owner() {
    install_hooks();
    let ms = ManagedStack::new(1, config());
    ms.push_handles(1);
    let g = ms.guard();
    std::thread::scope(|s| {
        s.spawn(|| g.poison());
    });
    ms.poll();
    assert_eq!(calls()[0], 1);
}

#[test]
fn walks_run_while_the_registry_grows() {
    let reg = Registry::new();
    let f = reg.register(FuncDesc::new("f", 3, 0, 1).refs_at(0, &[2])).unwrap();
    let more = if cfg!(miri) { 140 } else { 2000 };
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..more {
                reg.register(FuncDesc::new(format!("g{i}"), i % 5, 0, 1)).unwrap();
            }
        });
        s.spawn(|| {
            let mut ms = ManagedStack::new(1, config());
            let mut depth = 0;
            while reg.len() < more + 1 {
                // Functions registered while this thread walks are pushed too.
                let n = reg.len();
                if n < 2 {
                    std::thread::yield_now();
                    continue;
                }
                let g = reg.by_index((n - 1) as u32).unwrap().id();
                ms.push(f);
                // SAFETY: no collector scans this stack: only the test's own walks read it.
                unsafe { ms.set(2, depth) };
                ms.push(g);
                depth += 1;
                let s = seen(&mut ms, &reg);
                assert_eq!(s.frames.len(), 2 * depth);
                assert_eq!(s.refs.len(), depth);
                assert_eq!(s.refs.last(), Some(&(2 * depth - 1, 2, 0)));
                std::thread::yield_now();
            }
        });
    });
}

/// A sealed function frame is walked by its function's maps like any function frame, reports
/// the slots its current safepoint calls dead (70 slots: two bitmap words), refuses safe
/// writes, and passes the stack check; the safepoint moves with `try_set_safepoint`.
#[test]
fn sealed_function_frames_report_their_dead_slots() {
    #[derive(Default)]
    struct Dead(Vec<(usize, usize)>, usize);
    impl Visitor for Dead {
        fn frame(&mut self, f: &Frame) {
            self.1 = f.depth;
        }
        fn reference(&mut self, _: usize, _: &crate::SlotWord) {}
        fn dead(&mut self, slot: usize, w: &crate::SlotWord) {
            self.0.push((self.1, slot));
            w.clear();
        }
    }
    let reg = Registry::new();
    let f = reg
        .register(
            FuncDesc::new("sealed", 70, 0, 2)
                .refs_at(0, &[0])
                .tagged_at(0, &[1, 66])
                .tagged_at(1, &[2, 69]),
        )
        .unwrap();
    let mut ms = ManagedStack::new(1, config());
    ms.push(f); // unsealed, below: no dead slots reported for it
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    unsafe { ms.push_sealed(f) };
    let (base, n) = ms.sealed_top().expect("a sealed top frame");
    assert_eq!((base, n), (72, 70));
    for i in 0..70 {
        // SAFETY: as above.
        unsafe { ms.set_at(base + i, 0x100 + i) };
    }
    assert_eq!(ms.check(&reg), Ok(2));
    let s = seen(&mut ms, &reg);
    assert!(s.frames[0].sealed && !s.frames[1].sealed);
    assert_eq!(s.frames[0].func, Some(f));
    assert_eq!(s.refs, vec![(0, 0, 0x100), (1, 0, 0)]);
    assert_eq!(s.tagged, vec![(0, 1, 0x101), (0, 66, 0x100 + 66), (1, 1, 0), (1, 66, 0)]);
    let mut d = Dead::default();
    ms.walk(&reg, &mut d);
    let want: Vec<(usize, usize)> = (2..70).filter(|&i| i != 66).map(|i| (0, i)).collect();
    assert_eq!(d.0, want);
    assert_eq!(
        (ms.get(0), ms.get(1), ms.get(2), ms.get(66), ms.get(69)),
        (0x100, 0x101, 0, 0x142, 0)
    );
    // Safepoint 1: other slots live, and out of range refused.
    assert_eq!(ms.try_set_safepoint(2), Err(2));
    assert_eq!(ms.try_set_safepoint(1), Ok(()));
    assert_eq!(ms.top_frame_info(), (Some(f.index()), 1));
    let mut d = Dead::default();
    ms.walk(&reg, &mut d);
    assert_eq!(d.0.len(), 68);
    assert_eq!((ms.get(0), ms.get(1), ms.get(66)), (0, 0, 0));
    // Safe writes are refused.
    let r = catch_unwind(AssertUnwindSafe(|| ms.set_checked(&reg, 3, 0)));
    assert!(panic_message(r).contains("sealed frame"));
    assert_eq!(ms.traceback(&reg).frames[0].name, "sealed");
    ms.pop();
    ms.pop();
    assert_eq!(ms.check(&reg), Ok(0));
}

#[test]
fn sealed_handle_frames_are_walked_but_not_written_by_safe_code() {
    let reg = Registry::new();
    let mut ms = ManagedStack::new(1, config());
    ms.push_handles(1);
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    unsafe { ms.set(0, 0x10) };
    // SAFETY: the test owns the frame and writes only the values it checks below.
    let base = unsafe { ms.push_sealed_handles(3) };
    assert_eq!(base, 3);
    assert!(ms.is_sealed_frame_at(base, 3));
    assert!(!ms.is_sealed_frame_at(base, 2));
    assert!(!ms.is_sealed_frame_at(0, 1), "a plain handle frame is not sealed");
    // SAFETY: as above.
    unsafe { ms.set_at(base + 1, 0x20) };
    assert_eq!(ms.get_at(base + 1), 0x20);
    assert_eq!(ms.check(&reg), Ok(2));
    let s = seen(&mut ms, &reg);
    assert_eq!(s.refs, vec![(0, 0, 0), (0, 1, 0x20), (0, 2, 0), (1, 0, 0x10)]);
    // SAFETY: no collector scans this stack: only the test's own walks read it.
    let r = catch_unwind(AssertUnwindSafe(|| unsafe { ms.set(0, 0x30) }));
    assert!(panic_message(r).contains("sealed frame"));
    assert_eq!(ms.get_at(base), 0, "the refused write changed nothing");
    ms.pop();
    assert!(!ms.is_sealed_frame_at(base, 3), "popped");
    ms.push_handles(3);
    assert!(!ms.is_sealed_frame_at(base, 3), "a plain frame in its place is not it");
}

/// Issue 25: the safe slot writes refuse any word but null in a slot a collector would scan
/// (a reference or tagged slot at any safepoint of the frame's function, or any slot of a
/// handle frame), with a described panic, storing nothing; raw slots take anything.
#[test]
fn checked_slot_writes_refuse_words_in_scanned_slots() {
    let reg = Registry::new();
    let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0]).tagged_at(0, &[1])).unwrap();
    let ms = ManagedStack::new(4, config());
    ms.push(f);
    ms.set_checked(&reg, 2, 0xdead);
    ms.set_checked(&reg, 0, 0);
    assert_eq!(ms.get(2), 0xdead);
    for (slot, kind) in [(0, "reference"), (1, "tagged")] {
        let m = panic_message(catch_unwind(AssertUnwindSafe(|| ms.set_checked(&reg, slot, 0x50))));
        assert!(
            m.starts_with(&format!("goroutine 4: slot {slot} of the top frame set to 0x50")),
            "{m}"
        );
        assert!(m.contains(&format!("a {kind} slot")) && m.contains("only null"), "{m}");
        assert_eq!(ms.get(slot), 0, "nothing stored");
    }
    let m = panic_message(catch_unwind(AssertUnwindSafe(|| {
        ms.push_with_args_checked(&reg, f, &[0x50])
    })));
    assert!(m.contains("argument 0 of f is 0x50") && m.contains("reference slot"), "{m}");
    assert_eq!(ms.depth(), 1, "nothing pushed");
    ms.push_with_args_checked(&reg, f, &[0, 0, 7]);
    assert_eq!(ms.get(2), 7);
    ms.push_handles(1);
    let m = panic_message(catch_unwind(AssertUnwindSafe(|| ms.set_checked(&reg, 0, 0x50))));
    assert!(m.contains("handle frame's slot"), "{m}");
    ms.set_checked(&reg, 0, 0);
    // A function of another registry is refused, not guessed at.
    let other = Registry::new();
    let m =
        panic_message(catch_unwind(AssertUnwindSafe(|| ms.push_with_args_checked(&other, f, &[]))));
    assert!(m.contains("is not in the registry"), "{m}");
}
