//! Mark throughput of one worker: `cargo run --release -p safepoint-gc --example markrate --
//! 256` builds 256 MB of small linked objects whose links follow a shuffled order (so each
//! step of marking is a dependent load to a random place), then times the marking of a
//! collection with the world stopped and one P. The stress tool's `markrate` is the measured
//! version.

use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
use safepoint_sched::Runtime;

fn main() {
    let mb: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let rt = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder().stop_the_world(true).build(&rt).unwrap();
    let node = gc
        .types()
        .register(TypeDesc::Record {
            name: "link".into(),
            words: vec![WordKind::Ref, WordKind::Raw, WordKind::Raw],
        })
        .unwrap();
    let arr = gc.types().register(TypeDesc::RefArray { name: "objects".into() }).unwrap();
    let n = (mb << 20) / 32;
    let g = gc.clone();
    let pause = rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        m.scope(|m, [all, a, b]| {
            // Allocate every node (held by an array), then link them in a shuffled order
            // and drop the array: only the chain from the first node keeps them alive.
            let chunk = 1 << 20;
            m.alloc_array(all, arr, n).unwrap();
            for i in 0..n {
                m.alloc(a, node).unwrap();
                m.store(all, i, a).unwrap();
                if i % chunk == 0 {
                    m.poll();
                }
            }
            let mut order: Vec<usize> = (0..n).collect();
            let mut x = 0x9E3779B97F4A7C15u64;
            for i in (1..n).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for w in order.windows(2) {
                m.load(a, all, w[0]).unwrap();
                m.load(b, all, w[1]).unwrap();
                m.store(a, 0, b).unwrap();
            }
            m.load(a, all, order[0]).unwrap();
            m.clear(all).unwrap();
            m.clear(b).unwrap();
            m.collect(); // frees the array; the chain stays
            let before = g.stats().total_pause;
            m.collect();
            g.stats().total_pause - before
        })
    });
    let live = gc.stats().live_bytes;
    println!(
        "{{\"workload\":\"markrate\",\"args\":\"{mb}\",\"live_mb\":{:.1},\"mark_ms\":{:.2},\"mb_per_s\":{:.1}}}",
        live as f64 / 1048576.0,
        pause.as_secs_f64() * 1e3,
        live as f64 / 1048576.0 / pause.as_secs_f64()
    );
}
