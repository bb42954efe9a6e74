//! `gpause G`: what a collection costs per goroutine, and whether its pauses grow with them.
//! Its Go twin is `gpause` in `peers/go/gc.go`.
//!
//! G goroutines each build a tree of depth 3 (15 nodes `{left, right}`, held in a slot of
//! their managed stack) and park receiving on one channel; one more goroutine builds,
//! counts and drops trees of depth 6 (127 nodes) in a loop. When all G are parked, the main
//! goroutine forces 50 collections ([`Gc::collect`], which returns once the cycle and its
//! sweep are done), one after another, timing each; then the channel is closed and every
//! parked goroutine checks its tree. Every stack is scanned once per cycle, so the cycle's
//! time grows with G; the pauses should not (no stack is scanned inside a stop).
//!
//! Figures: `cycle_ms`, the median of the 50 collections' wall times; `cycle_us_per_g`, that
//! over G, in microseconds; `p50_pause_us`, `p99_pause_us`, `max_pause_us` over every pause
//! recorded while the 50 ran (cycles the churner started included); `gc_cycles`, how many
//! cycles that was. Default procs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use safepoint::gc::{Gc, Mutator, Slot, TypeDesc, TypeId, WordKind};
use safepoint::sched::{Chan, Runtime, go, sleep};

use crate::report::{arg_num, emit, percentile};

/// Forced collections.
const CYCLES: usize = 50;
/// Depth of each parked goroutine's tree.
const PARKED_DEPTH: u32 = 3;
/// Depth of the churner's trees.
const CHURN_DEPTH: u32 = 6;

/// Builds a perfect tree of depth `d` (a leaf is depth 0) into `dst`.
fn build(m: &mut Mutator, ty: TypeId, d: u32, dst: Slot) {
    m.alloc(dst, ty).expect("alloc");
    if d > 0 {
        m.scope(|m, [l, r]| {
            build(m, ty, d - 1, l);
            build(m, ty, d - 1, r);
            m.store(dst, 0, l).expect("store");
            m.store(dst, 1, r).expect("store");
        });
    }
}

/// The nodes of the tree in `t`.
fn count(m: &mut Mutator, t: Slot) -> u64 {
    m.scope(|m, [l, r]| {
        m.load(l, t, 0).expect("load");
        if m.is_null(l).expect("slot") {
            return 1;
        }
        m.load(r, t, 1).expect("load");
        1 + count(m, l) + count(m, r)
    })
}

fn nodes(d: u32) -> u64 {
    (1 << (d + 1)) - 1
}

/// Runs `gpause G`.
pub fn run(args: &[String]) {
    let n = arg_num(args, 0, 10_000) as usize;
    let rt = Runtime::new().expect("runtime");
    let gc = Gc::new(&rt).unwrap_or_else(|e| panic!("gc: {e}"));
    let ty = gc
        .types()
        .register(TypeDesc::Record {
            name: "node".into(),
            words: vec![WordKind::Ref, WordKind::Ref],
        })
        .expect("type");
    let g = gc.clone();
    let (mut times, mut pauses, cycles) = rt.block_on(move || {
        let park = Chan::<()>::unbuffered();
        let ready = Arc::new(AtomicUsize::new(0));
        let bad = Arc::new(AtomicUsize::new(0));
        let mut hs = Vec::with_capacity(n);
        for _ in 0..n {
            let (g, park, ready, bad) = (g.clone(), park.clone(), ready.clone(), bad.clone());
            hs.push(go(move || {
                let mut m = Mutator::new(&g).expect("mutator");
                m.scope(|m, [t]| {
                    build(m, ty, PARKED_DEPTH, t);
                    ready.fetch_add(1, Ordering::Relaxed);
                    let _ = park.recv();
                    if count(m, t) != nodes(PARKED_DEPTH) {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }));
        }
        while ready.load(Ordering::Relaxed) < n {
            sleep(Duration::from_millis(1));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let churner = {
            let (g, stop) = (g.clone(), stop.clone());
            go(move || {
                let mut m = Mutator::new(&g).expect("mutator");
                let mut trees = 0u64;
                m.scope(|m, [t]| {
                    while !stop.load(Ordering::Relaxed) {
                        build(m, ty, CHURN_DEPTH, t);
                        assert_eq!(count(m, t), nodes(CHURN_DEPTH), "gpause: churned tree");
                        m.clear(t).expect("clear");
                        trees += 1;
                    }
                });
                trees
            })
        };
        let s = g.stats();
        let mut times = Vec::with_capacity(CYCLES);
        for _ in 0..CYCLES {
            let t = Instant::now();
            g.collect();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let pauses: Vec<f64> =
            g.pauses_since(s.pause_count).iter().map(|d| d.as_secs_f64() * 1e6).collect();
        let cycles = g.cycles() - s.cycles;
        stop.store(true, Ordering::Relaxed);
        churner.join().expect("churner");
        park.close();
        for h in hs {
            h.join().expect("parked goroutine");
        }
        assert_eq!(bad.load(Ordering::Relaxed), 0, "gpause: a parked goroutine's tree changed");
        (times, pauses, cycles)
    });
    let cycle_ms = percentile(&mut times, 50.0);
    emit(
        "gpause",
        &n.to_string(),
        &[
            ("cycle_ms", cycle_ms.into()),
            ("cycle_us_per_g", (cycle_ms * 1e3 / n.max(1) as f64).into()),
            ("p50_pause_us", percentile(&mut pauses, 50.0).into()),
            ("p99_pause_us", percentile(&mut pauses, 99.0).into()),
            ("max_pause_us", percentile(&mut pauses, 100.0).into()),
            ("gc_cycles", cycles.into()),
        ],
    );
}
