//! The environment as a runtime and a collector read it: `SAFEPOINT_MAXPROCS` sets the Ps of a
//! runtime built without a count, `SAFEPOINT_DEBUG`'s bare key turns a collector knob on, and
//! `SAFEPOINT_MEMLIMIT` is a soft limit the pacer honours: a heap under a small limit collects
//! more often than the same heap without one.
//!
//! One test in this file, so that setting the variables races with nothing else in the process.
//! (The parsers' own cases are unit tests of `safepoint_sched::env` and `gc/src/debug.rs`.)

use std::sync::mpsc;
use std::time::Duration;

use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
use safepoint_sched::Runtime;

/// The live heap: one byte array (never scanned, so marking it is quick).
const LIVE: usize = 6 << 20;
/// Allocated and dropped after it, in 32-byte records.
const GARBAGE: usize = 64 << 20;

/// Cycles completed while `GARBAGE` bytes of records are allocated and dropped beside `LIVE`
/// bytes kept live.
fn cycles_under(gc: &Gc, rt: &Runtime) -> u64 {
    let pair = gc
        .types()
        .register(TypeDesc::Record {
            name: "pair".into(),
            words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
        })
        .unwrap();
    let bytes = gc.types().register(TypeDesc::ByteArray { name: "bytes".into() }).unwrap();
    let g = gc.clone();
    rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        m.scope(|m, [live, tmp]| {
            m.alloc_array(live, bytes, LIVE).unwrap();
            m.collect();
            let c0 = g.cycles();
            for _ in 0..GARBAGE / 32 {
                m.alloc(tmp, pair).unwrap();
            }
            assert_eq!(m.len(live).unwrap(), LIVE);
            g.cycles() - c0
        })
    })
}

#[test]
fn maxprocs_memlimit_and_a_bare_debug_key_from_the_environment() {
    // SAFETY: this binary's only test sets them before it starts any runtime or thread of its
    // own, so no other thread reads or writes the environment meanwhile.
    unsafe {
        std::env::set_var("SAFEPOINT_MAXPROCS", "3");
        std::env::set_var("SAFEPOINT_MEMLIMIT", "8MiB");
        std::env::set_var("SAFEPOINT_DEBUG", "gcstoptheworld");
        std::env::remove_var("SAFEPOINT_GC");
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = Runtime::new().unwrap();
        assert_eq!(rt.handle().procs(), 3, "SAFEPOINT_MAXPROCS=3");
        assert_eq!(Runtime::builder().procs(1).build().unwrap().handle().procs(), 1);

        let limited = Gc::new(&rt).unwrap();
        assert_eq!(limited.config().memory_limit, 8 << 20, "SAFEPOINT_MEMLIMIT=8MiB");
        assert!(limited.config().stop_the_world, "a bare gcstoptheworld is gcstoptheworld=1");
        let with_limit = cycles_under(&limited, &rt);
        drop(limited);

        // The same heap and mode, the environment not read: no limit.
        let free = Gc::builder().ignore_env().stop_the_world(true).build(&rt).unwrap();
        assert_eq!(free.config().memory_limit, usize::MAX);
        let without = cycles_under(&free, &rt);
        let _ = tx.send((with_limit, without));
    });
    let (with_limit, without) =
        rx.recv_timeout(Duration::from_secs(240)).expect("the test hung (or panicked)");
    // Without the limit the goal is twice the live heap (12 MiB: 6 MiB of room a cycle); under
    // it, 8 MiB (2 MiB of room): about three times the cycles.
    eprintln!("cycles: {with_limit} under an 8 MiB limit, {without} without");
    assert!(without > 0);
    assert!(with_limit >= 2 * without, "{with_limit} cycles under the limit, {without} without");
}
