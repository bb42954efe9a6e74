//! Arbitrary sequences of heap operations (decoded by hand from the input bytes) against the
//! reference model of `gc/tests/support/model.rs`, the same interpreter the state-machine
//! test runs: every reachable object intact after every op, every error the one the model
//! predicts, exactly the reachable objects live after each collection. One runtime and one
//! heap for the whole run (a heap's arenas are not returned until the process ends); each
//! input starts and must end with an empty heap.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use safepoint_gc::Gc;
use safepoint_sched::Runtime;

#[path = "../../gc/tests/support/model.rs"]
#[allow(dead_code, missing_docs)]
mod model;

fn setup() -> &'static (Runtime, Gc) {
    static RT: OnceLock<(Runtime, Gc)> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = Runtime::builder().procs(2).build().expect("runtime");
        let gc = Gc::builder()
            .checkmark(true)
            .poison(true)
            .min_heap(128 << 10)
            .ignore_env()
            .build(&rt)
            .expect("gc");
        (rt, gc)
    })
}

fuzz_target!(|data: &[u8]| {
    let ops = model::decode(data);
    let (rt, gc) = setup();
    let gc = gc.clone();
    rt.block_on(move || model::run(&gc, &ops));
});
