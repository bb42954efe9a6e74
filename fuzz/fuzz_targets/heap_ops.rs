//! Arbitrary sequences of heap operations (decoded by hand from the input bytes) against the
//! reference model of `gc/tests/support/model.rs`, the same interpreter the state-machine
//! test runs: every reachable object intact after every op, every error the one the model
//! predicts, exactly the reachable objects live after each collection; the same ops through
//! branded sections (an op byte of 250 or more), on the model's section goroutine. Each input
//! runs twice, on a collector of each mode: concurrent marking (the default) and
//! stop-the-world marking (the debugging mode), both with checkmark and poison on. An input with weak-handle or
//! cleanup ops also runs on two more heaps, one of each mode, whose collections start only
//! when an op asks (the model knows when marking happens only there; the first two skip those
//! ops). One runtime and four heaps for the whole run (a heap's arenas are not returned until
//! the process ends); each input starts and must end with an empty heap.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use safepoint_gc::Gc;
use safepoint_sched::Runtime;

#[path = "../../gc/tests/support/model.rs"]
#[allow(dead_code, missing_docs)]
mod model;

/// The runtime, and a collector of each mode (concurrent, then stop-the-world), first with
/// triggered collections, then without.
fn setup() -> &'static (Runtime, [Gc; 4]) {
    static RT: OnceLock<(Runtime, [Gc; 4])> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = Runtime::builder().procs(2).build().expect("runtime");
        let gc = |stw: bool, weak: bool| {
            Gc::builder()
                .stop_the_world(stw)
                .gc_percent(if weak { u32::MAX } else { 100 })
                .checkmark(true)
                .poison(true)
                .min_heap(128 << 10)
                .ignore_env()
                .build(&rt)
                .expect("gc")
        };
        let gcs = [gc(false, false), gc(true, false), gc(false, true), gc(true, true)];
        (rt, gcs)
    })
}

fuzz_target!(|data: &[u8]| {
    let ops = model::decode(data);
    let (rt, gcs) = setup();
    let weak = ops.iter().any(|op| {
        matches!(
            op,
            model::Op::Weak { .. }
                | model::Op::Deref { .. }
                | model::Op::AddCleanup { .. }
                | model::Op::EphChain { .. }
                | model::Op::Section(model::SecOp::Weak { .. } | model::SecOp::Deref { .. })
        )
    });
    for gc in &gcs[..if weak { 4 } else { 2 }] {
        let (gc, ops) = (gc.clone(), ops.clone());
        rt.block_on(move || model::run(&gc, &ops));
    }
});
