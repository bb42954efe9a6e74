//! The Benchmarks Game's binary-trees on the managed heap: `cargo run --release -p
//! safepoint-gc --example binary_trees -- 16` (add `SAFEPOINT_DEBUG=gctrace=1` to watch the
//! collector). The stress tool's `binary-trees` workload is the measured version.

use safepoint_gc::{Gc, Mutator, Slot, TypeDesc, TypeId, WordKind};
use safepoint_sched::Runtime;

fn bottom_up(m: &mut Mutator, node: TypeId, d: u32, dst: Slot) {
    m.alloc(dst, node).unwrap();
    if d > 0 {
        m.scope(|m, [l, r]| {
            bottom_up(m, node, d - 1, l);
            bottom_up(m, node, d - 1, r);
            m.store(dst, 0, l).unwrap();
            m.store(dst, 1, r).unwrap();
        });
    }
}

fn check(m: &mut Mutator, t: Slot) -> u64 {
    m.scope(|m, [l, r]| {
        m.load(l, t, 0).unwrap();
        if m.is_null(l).unwrap() {
            return 1;
        }
        m.load(r, t, 1).unwrap();
        1 + check(m, l) + check(m, r)
    })
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let rt = Runtime::builder().build().unwrap();
    let gc = Gc::new(&rt).unwrap();
    let node = gc
        .types()
        .register(TypeDesc::Record { name: "node".into(), words: vec![WordKind::Ref; 2] })
        .unwrap();
    let t0 = std::time::Instant::now();
    let g = gc.clone();
    rt.block_on(move || {
        let min = 4;
        let max = n.max(min + 2);
        let mut m = Mutator::new(&g).unwrap();
        m.scope(|m, [t]| {
            bottom_up(m, node, max + 1, t);
            println!("stretch tree of depth {}\t check: {}", max + 1, check(m, t));
        });
        let handles: Vec<_> = (min..=max)
            .step_by(2)
            .map(|d| {
                let g = g.clone();
                safepoint_sched::go(move || {
                    let mut m = Mutator::new(&g).unwrap();
                    let iters = 1u64 << (max - d + min);
                    let mut chk = 0;
                    m.scope(|m, [t]| {
                        for _ in 0..iters {
                            bottom_up(m, node, d, t);
                            chk += check(m, t);
                        }
                    });
                    format!("{iters}\t trees of depth {d}\t check: {chk}")
                })
            })
            .collect();
        m.scope(|m, [long]| {
            bottom_up(m, node, max, long);
            for h in handles {
                println!("{}", h.join().unwrap());
            }
            println!("long lived tree of depth {max}\t check: {}", check(m, long));
        });
    });
    let s = gc.stats();
    eprintln!(
        "{:.0} ms, {} cycles, p99 pause {:?}, max pause {:?}",
        t0.elapsed().as_secs_f64() * 1e3,
        s.cycles,
        s.pause_percentile(99.0),
        s.pause_percentile(100.0)
    );
}
