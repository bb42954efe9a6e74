//! A process whose address space is limited (`ulimit -v`) still gets a working heap: the
//! reservation for typed spans shrinks to what the limit allows (256 GiB is asked for by
//! default), and records are still allocated, typed or not. Alone in its own test binary,
//! since the limit is the whole process's.

#[path = "support/list.rs"]
mod list;

use safepoint_gc::{Gc, TypeDesc, WordKind};
use safepoint_sched::Runtime;

/// The process's mapped address space now, in bytes (`VmSize`).
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn a_heap_works_under_an_address_space_limit_far_below_its_typed_reservation() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    // Room for the heap's tables, a smaller typed reservation, and what the test allocates.
    let limit = vm_size() + (2 << 30);
    let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
    // SAFETY: setrlimit reads the struct we pass; lowering a limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
    let gc = Gc::builder().checkmark(true).ignore_env().build(&rt).expect("a heap under the limit");
    let pair = gc
        .types()
        .register(TypeDesc::Record {
            name: "pair".into(),
            words: vec![WordKind::Ref, WordKind::Raw],
        })
        .unwrap();
    let (sum, live) = list::build_collect_sum(&rt, &gc, pair, 100_000, 1);
    assert_eq!(sum, 100_000 * 99_999 / 2);
    // Typed (no header): 16 bytes a pair.
    assert_eq!(live, 100_000 * 16);
}
