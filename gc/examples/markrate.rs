//! Mark throughput of one worker: `cargo run --release -p safepoint-gc --example markrate --
//! 256 [chain|tree|ordered] [COLLECTIONS]` makes 256 MB worth of 32-byte objects (two
//! reference words and a raw word: as the first type registered they live in typed spans,
//! without a header, 24 bytes each, so 192 MB live) at shuffled places, links them, then
//! times the marking of a collection with the world stopped and one P (the pause of a
//! `gcstoptheworld` cycle: roots, marking, termination), and prints one JSON line:
//! `mark_ms` and `mb_per_s` by the wall clock, `cpu_ms` and `cpu_mb_per_s` by the process's
//! CPU time across the collection (which leaves out time spent descheduled, so it is the
//! figure to compare on a busy machine). With `COLLECTIONS` (default 1), that many collections are
//! timed and the medians printed.
//!
//! * `chain` (the default): one linked list whose links follow a shuffled order. Each step of
//!   marking is a load that depends on the one before, to a random place: the rate is bound
//!   by the machine's memory latency, and no prefetching can overlap one object's miss with
//!   the next.
//! * `tree`: a binary tree over the same shuffled nodes (node `k` of the order links nodes
//!   `2k + 1` and `2k + 2`). Every step is still a miss to a random place, but many objects
//!   are known before they are needed, so a marker that prefetches can overlap their misses.
//! * `ordered`: the same tree over the nodes in allocation order (node `k` of the allocation
//!   links nodes `2k + 1` and `2k + 2`: the heap is laid out level by level). Addresses are
//!   predictable and close together near the root, so the rate says how much of marking is
//!   the marker's own work per object rather than waiting for memory.

use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
use safepoint_sched::Runtime;

/// Elements per holder array (8 MiB each, well under the largest object).
const CHUNK: usize = 1 << 20;

fn main() {
    let mb: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let shape = std::env::args().nth(2).unwrap_or_else(|| "chain".into());
    let runs: usize = std::env::args().nth(3).and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let (tree, shuffled) = match shape.as_str() {
        "chain" => (false, true),
        "tree" => (true, true),
        "ordered" => (true, false),
        other => {
            eprintln!("markrate: unknown shape {other:?} (chain, tree or ordered)");
            std::process::exit(2);
        }
    };
    let rt = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder().stop_the_world(true).build(&rt).unwrap();
    let node = gc
        .types()
        .register(TypeDesc::Record {
            name: "node".into(),
            words: vec![WordKind::Ref, WordKind::Ref, WordKind::Raw],
        })
        .unwrap();
    let arr = gc.types().register(TypeDesc::RefArray { name: "objects".into() }).unwrap();
    let n = (mb << 20) / 32;
    let g = gc.clone();
    let (pause, cpu) = rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        m.scope(|m, [all, chunk, a, b]| {
            // Allocate every node (held by chunked arrays), then link them in a shuffled
            // order and drop the arrays: only the links from the first node keep them alive.
            m.alloc_array(all, arr, n.div_ceil(CHUNK)).unwrap();
            for c in 0..n.div_ceil(CHUNK) {
                m.alloc_array(chunk, arr, CHUNK.min(n - c * CHUNK)).unwrap();
                m.store(all, c, chunk).unwrap();
                for i in 0..CHUNK.min(n - c * CHUNK) {
                    m.alloc(a, node).unwrap();
                    m.store(chunk, i, a).unwrap();
                }
                m.poll();
            }
            let mut order: Vec<usize> = (0..n).collect();
            let mut x = 0x9E3779B97F4A7C15u64;
            for i in (1..n).rev().filter(|_| shuffled) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let get = |m: &mut Mutator, dst, i: usize| {
                m.load(chunk, all, i / CHUNK).unwrap();
                m.load(dst, chunk, i % CHUNK).unwrap();
            };
            for k in 0..n {
                let kids = if tree { [2 * k + 1, 2 * k + 2] } else { [k + 1, n] };
                get(m, a, order[k]);
                for (field, kid) in kids.into_iter().enumerate() {
                    if kid < n {
                        get(m, b, order[kid]);
                        m.store(a, field, b).unwrap();
                    }
                }
            }
            get(m, a, order[0]);
            m.clear(all).unwrap();
            m.clear(chunk).unwrap();
            m.clear(b).unwrap();
            m.collect(); // frees the arrays; the nodes stay
            let times: Vec<(f64, f64)> = (0..runs)
                .map(|_| {
                    let before = g.stats().total_pause;
                    let cpu = process_cpu();
                    m.collect();
                    ((g.stats().total_pause - before).as_secs_f64(), process_cpu() - cpu)
                })
                .collect();
            (
                median(times.iter().map(|t| t.0).collect()),
                median(times.iter().map(|t| t.1).collect()),
            )
        })
    });
    let live = gc.stats().live_bytes;
    println!(
        "{{\"workload\":\"markrate\",\"args\":\"{mb} {shape}\",\"live_mb\":{:.1},\"mark_ms\":{:.2},\"mb_per_s\":{:.1},\"cpu_ms\":{:.2},\"cpu_mb_per_s\":{:.1}}}",
        live as f64 / 1048576.0,
        pause * 1e3,
        live as f64 / 1048576.0 / pause,
        cpu * 1e3,
        live as f64 / 1048576.0 / cpu
    );
}

/// The median of `v` (not empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time of the whole process, in seconds. With one P, a stop-the-world collection marks
/// on one thread while the others sleep, so the difference across `collect` is the CPU the
/// collection took, time spent descheduled (other processes on a busy machine) left out.
/// (Not the calling thread's clock: the goroutine may resume on another thread after the
/// collection.)
fn process_cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
