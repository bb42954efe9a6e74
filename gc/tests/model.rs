//! Reference-model state-machine test of the collector: random sequences of heap operations
//! (allocations of records, arrays and byte arrays; stores, loads, copies, drops; raw words
//! and bytes; immediates; globals; values in flight on a channel; goroutines that take values
//! and exit or keep them; collections; and the same through branded sections, on a goroutine
//! of their own) run against the real heap and against a plain model
//! of the object graph (`support/model.rs`, shared with the `heap_ops` fuzz target).
//!
//! After every op every object the model can reach is checked word by word and byte by byte,
//! and each error the heap returns must be the one the model predicts. After every
//! `collect()` the heap must hold exactly the model's reachable objects. The heap runs with
//! checkmark and poison on and a small heap goal, so collections also start by themselves,
//! in the concurrent mode and in the stop-the-world mode.
//!
//! The state machine is written by hand on plain proptest rather than with
//! `proptest-state-machine`: the same op interpreter must also run from the fuzz target's
//! bytes, and ops are written to be meaningful in any state (indices taken modulo what
//! exists), so generation needs no model state and shrinking stays plain `Vec` shrinking.

mod support;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use safepoint_gc::Gc;
use safepoint_sched::Runtime;
use support::model::{self, MAX_BYTES, Op, SecOp};

fn op() -> impl Strategy<Value = Op> {
    let slot = || any::<u8>();
    let srcs = || vec(any::<u8>(), 0..=model::MAX_HANDED);
    prop_oneof![
        4 => (slot(), any::<u8>()).prop_map(|(dst, rec)| Op::Alloc { dst, rec }),
        2 => (slot(), any::<bool>(), 0u8..12).prop_map(|(dst, tagged, len)| Op::AllocArray { dst, tagged, len }),
        2 => (slot(), prop_oneof![9 => 0u16..64, 1 => 0..=MAX_BYTES as u16], any::<u8>())
            .prop_map(|(dst, len, seed)| Op::AllocBytes { dst, len, seed }),
        5 => (slot(), any::<u8>(), slot()).prop_map(|(obj, field, src)| Op::Store { obj, field, src }),
        3 => (slot(), slot(), any::<u8>()).prop_map(|(dst, obj, field)| Op::Load { dst, obj, field }),
        2 => (slot(), slot()).prop_map(|(dst, src)| Op::Copy { dst, src }),
        2 => slot().prop_map(|dst| Op::Clear { dst }),
        1 => (slot(), prop_oneof![-1000i64..1000, any::<i64>()]).prop_map(|(dst, v)| Op::SetInt { dst, v }),
        1 => slot().prop_map(|src| Op::ReadInt { src }),
        1 => (slot(), any::<u8>(), any::<u64>()).prop_map(|(obj, field, v)| Op::WriteWord { obj, field, v }),
        1 => (slot(), any::<u8>()).prop_map(|(obj, field)| Op::ReadWord { obj, field }),
        1 => (slot(), any::<u16>(), 0u8..16, any::<u8>())
            .prop_map(|(obj, offset, len, seed)| Op::WriteBytes { obj, offset, len, seed }),
        1 => (any::<u8>(), slot()).prop_map(|(g, src)| Op::StoreGlobal { g, src }),
        1 => (slot(), any::<u8>()).prop_map(|(dst, g)| Op::LoadGlobal { dst, g }),
        1 => slot().prop_map(|src| Op::Send { src }),
        1 => slot().prop_map(|dst| Op::Recv { dst }),
        1 => (srcs(), any::<bool>(), any::<bool>(), proptest::option::of(any::<u8>()))
            .prop_map(|(srcs, take, collect, global)| Op::SpawnExit { srcs, take, collect, global }),
        1 => (srcs(), any::<bool>(), proptest::option::of(any::<u8>()))
            .prop_map(|(srcs, take, global)| Op::SpawnHold { srcs, take, global }),
        1 => any::<u8>().prop_map(|h| Op::Release { h }),
        2 => Just(Op::Collect),
        2 => (slot(), slot()).prop_map(|(dst, src)| Op::Weak { dst, src }),
        2 => (slot(), slot()).prop_map(|(dst, w)| Op::Deref { dst, w }),
        1 => slot().prop_map(|obj| Op::AddCleanup { obj }),
        1 => (slot(), 0u8..24).prop_map(|(at, len)| Op::EphChain { at, len }),
        6 => sec_op().prop_map(Op::Section),
    ]
}

/// An op through a branded section (see "Sections" in `support/model.rs`).
fn sec_op() -> impl Strategy<Value = SecOp> {
    let slot = || any::<u8>();
    prop_oneof![
        3 => (slot(), any::<u8>(), slot(), any::<bool>())
            .prop_map(|(dst, rec, src, init)| SecOp::Alloc { dst, rec, src, init }),
        1 => (slot(), any::<bool>(), 0u8..12).prop_map(|(dst, tagged, len)| SecOp::Array { dst, tagged, len }),
        1 => (slot(), 0u16..200, any::<u8>()).prop_map(|(dst, len, seed)| SecOp::Bytes { dst, len, seed }),
        4 => (slot(), any::<u8>(), slot(), any::<u8>())
            .prop_map(|(obj, field, src, shape)| SecOp::Store { obj, field, src, shape }),
        3 => (slot(), slot(), any::<u8>(), any::<u8>())
            .prop_map(|(dst, obj, field, shape)| SecOp::Load { dst, obj, field, shape }),
        1 => (slot(), any::<u8>(), any::<u64>(), any::<u8>())
            .prop_map(|(obj, field, v, shape)| SecOp::WriteWord { obj, field, v, shape }),
        1 => (slot(), any::<u16>(), 0u8..16, any::<u8>(), any::<u8>())
            .prop_map(|(obj, offset, len, seed, shape)| SecOp::WriteBytes { obj, offset, len, seed, shape }),
        1 => (slot(), slot()).prop_map(|(dst, src)| SecOp::Weak { dst, src }),
        1 => (slot(), slot()).prop_map(|(dst, w)| SecOp::Deref { dst, w }),
        1 => slot().prop_map(|src| SecOp::Send { src }),
        1 => slot().prop_map(|dst| SecOp::Recv { dst }),
        1 => (any::<u8>(), slot()).prop_map(|(g, src)| SecOp::StoreGlobal { g, src }),
        1 => (slot(), any::<u8>()).prop_map(|(dst, g)| SecOp::LoadGlobal { dst, g }),
    ]
}

#[test]
fn heap_matches_the_reference_model_concurrent() {
    check_model(false, false);
}

#[test]
fn heap_matches_the_reference_model_stop_the_world() {
    check_model(true, false);
}

/// With weak handles, weak fields and cleanups modelled: collections only when the ops ask.
#[test]
fn heap_with_weak_handles_matches_the_reference_model_concurrent() {
    check_model(false, true);
}

#[test]
fn heap_with_weak_handles_matches_the_reference_model_stop_the_world() {
    check_model(true, true);
}

/// Hand-picked sequences of section ops, each on the four heaps (both modes, with and
/// without modelled weak handles), so that every kind of word, a shape of another type, a
/// weak handle, bytes, globals and the pending channel are reached through sections
/// whatever the random cases draw.
#[test]
fn section_ops_match_the_reference_model() {
    use SecOp as S;
    let sec = Op::Section;
    let (pair, weak, eph) = (0u8, 4u8, 5u8);
    let sequences: Vec<Vec<Op>> = vec![
        // A weak word: stored and loaded through sections, then its object collected.
        vec![
            sec(S::Alloc { dst: 0, rec: weak, src: 0, init: false }),
            sec(S::Alloc { dst: 1, rec: pair, src: 0, init: false }),
            sec(S::Store { obj: 0, field: 0, src: 1, shape: 1 }),
            sec(S::Load { dst: 2, obj: 0, field: 0, shape: 1 }),
            Op::Clear { dst: 1 },
            Op::Clear { dst: 2 },
            Op::Collect,
            sec(S::Load { dst: 2, obj: 0, field: 0, shape: 1 }),
            sec(S::Weak { dst: 3, src: 0 }),
            sec(S::Deref { dst: 4, w: 3 }),
            sec(S::Deref { dst: 4, w: 0 }),
        ],
        // An ephemeron made by alloc_init, its value referencing its key.
        vec![
            sec(S::Alloc { dst: 1, rec: pair, src: 0, init: false }),
            sec(S::Alloc { dst: 0, rec: eph, src: 1, init: true }),
            sec(S::Alloc { dst: 2, rec: pair, src: 1, init: true }),
            sec(S::Store { obj: 0, field: 1, src: 2, shape: 1 }),
            Op::Clear { dst: 2 },
            Op::Collect,
            sec(S::Load { dst: 3, obj: 0, field: 1, shape: 1 }),
            Op::Clear { dst: 1 },
            Op::Clear { dst: 3 },
            Op::Collect,
            sec(S::Load { dst: 3, obj: 0, field: 1, shape: 1 }),
            // A new key: the dead one's value stays gone.
            sec(S::Alloc { dst: 1, rec: pair, src: 0, init: false }),
            sec(S::Store { obj: 0, field: 0, src: 1, shape: 1 }),
            sec(S::Load { dst: 3, obj: 0, field: 1, shape: 1 }),
        ],
        // Every word kind of `model.mixed` and `model.wide`, with their shapes and others',
        // immediates into reference words, raw words, an index past the end.
        vec![
            sec(S::Alloc { dst: 0, rec: 1, src: 0, init: false }),
            sec(S::Alloc { dst: 1, rec: 3, src: 0, init: false }),
            Op::SetInt { dst: 2, v: -5 },
            sec(S::Store { obj: 0, field: 0, src: 2, shape: 1 }),
            sec(S::Store { obj: 0, field: 1, src: 2, shape: 1 }),
            sec(S::Store { obj: 0, field: 0, src: 1, shape: 2 }),
            sec(S::Store { obj: 0, field: 0, src: 1, shape: 4 }),
            sec(S::Store { obj: 1, field: 0, src: 0, shape: 1 }),
            sec(S::Load { dst: 3, obj: 0, field: 2, shape: 1 }),
            sec(S::Load { dst: 3, obj: 0, field: 3, shape: 1 }),
            sec(S::Load { dst: 3, obj: 1, field: 0, shape: 8 }),
            sec(S::WriteWord { obj: 0, field: 2, v: u64::MAX, shape: 1 }),
            sec(S::WriteWord { obj: 0, field: 1, v: 7, shape: 1 }),
            sec(S::Alloc { dst: 4, rec: 2, src: 2, init: true }),
            sec(S::Alloc { dst: 4, rec: pair, src: 2, init: true }),
            sec(S::Alloc { dst: 4, rec: 3, src: 2, init: true }),
            sec(S::Array { dst: 5, tagged: true, len: 3 }),
            sec(S::Store { obj: 5, field: 2, src: 2, shape: 1 }),
            sec(S::Array { dst: 6, tagged: false, len: 2 }),
            sec(S::Store { obj: 6, field: 1, src: 5, shape: 1 }),
            sec(S::Store { obj: 6, field: 1, src: 2, shape: 1 }),
            Op::Collect,
        ],
        // Bytes, globals and the pending channel, both ways between the two goroutines.
        vec![
            sec(S::Bytes { dst: 0, len: 10, seed: 3 }),
            sec(S::WriteBytes { obj: 0, offset: 2, len: 3, seed: 9, shape: 1 }),
            sec(S::WriteBytes { obj: 0, offset: 9, len: 3, seed: 9, shape: 1 }),
            sec(S::WriteBytes { obj: 0, offset: 0, len: 1, seed: 9, shape: 4 }),
            sec(S::Load { dst: 1, obj: 0, field: 0, shape: 1 }),
            sec(S::StoreGlobal { g: 1, src: 0 }),
            Op::Clear { dst: 0 },
            Op::Collect,
            sec(S::LoadGlobal { dst: 2, g: 1 }),
            sec(S::Send { src: 2 }),
            Op::Send { src: 2 },
            Op::Recv { dst: 3 },
            sec(S::Recv { dst: 4 }),
            sec(S::Send { src: 4 }),
            sec(S::Send { src: 4 }),
            sec(S::Recv { dst: 5 }),
            Op::Collect,
        ],
    ];
    let rt = Runtime::builder().procs(2).build().unwrap();
    for (stw, weak) in [(false, false), (true, false), (false, true), (true, true)] {
        let gc = Gc::builder()
            .stop_the_world(stw)
            .checkmark(true)
            .poison(true)
            .min_heap(128 << 10)
            .gc_percent(if weak { u32::MAX } else { 100 })
            .ignore_env()
            .build(&rt)
            .unwrap();
        for ops in &sequences {
            let (gc, ops) = (gc.clone(), ops.clone());
            rt.block_on(move || model::run(&gc, &ops));
        }
    }
}

fn check_model(stop_the_world: bool, weak: bool) {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(160);
    let mut runner = TestRunner::new(Config { cases, ..Config::default() });
    let total_collections = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&vec(op(), 1..64), |ops| {
        // A heap per case: cases do not see each other's objects.
        let gc = Gc::builder()
            .stop_the_world(stop_the_world)
            .checkmark(true)
            .poison(true)
            .min_heap(128 << 10)
            .gc_percent(if weak { u32::MAX } else { 100 })
            .ignore_env()
            .build(&rt)
            .map_err(|e| TestCaseError::fail(format!("build: {e}")))?;
        let g2 = gc.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(move || model::run(&g2, &ops))
        }));
        match r {
            Ok(n) => {
                total_collections.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(TestCaseError::fail(msg))
            }
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(total_collections.into_inner() > 0, "no case collected");
}
