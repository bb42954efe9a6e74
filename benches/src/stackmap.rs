//! Managed-stack workloads: frames, walk.
//!
//! * `frames N`: N times, push a 4-slot frame, set its safepoint, pop it (on top of one base
//!   frame, as a call from an interpreter loop would) -> `ns_per_op`.
//! * `walk DEPTH`: a stack DEPTH frames deep, of four functions in turn (8 slots each, 3 to 6
//!   live references and 0 to 1 tagged slot per frame, an interpreter's typical mix), walked
//!   repeatedly by a visitor that loads every live slot as a marker would -> `ns_per_slot`
//!   (per live slot yielded, references and tagged together) and `ns_per_frame`.
//!
//! Each figure is the median of several timed rounds; validation is off (the release
//! default), so the walker runs with its cheap bounds checks only.

use std::hint::black_box;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use safepoint::stackmap::{FuncDesc, FuncId, ManagedStack, Registry, StackConfig, Visitor};

use crate::report::{arg_num, emit, percentile};

/// Runs managed-stack workload `w`.
pub fn run(w: &str, args: &[String]) {
    match w {
        "frames" => frames(args),
        "walk" => walk(args),
        _ => eprintln!("{w}: not a managed-stack workload"),
    }
}

const ROUNDS: usize = 7;

fn frames(args: &[String]) {
    let n = arg_num(args, 0, 10_000_000).max(1);
    let reg = Registry::new();
    let base = reg.register(FuncDesc::new("main", 8, 0, 2).refs_at(1, &[0, 1])).expect("valid");
    let f = reg
        .register(FuncDesc::new("callee", 4, 1, 2).refs_at(0, &[0]).refs_at(1, &[0, 2]))
        .expect("valid");
    let ms = ManagedStack::new(1, StackConfig::default().validate(false));
    ms.push(base);
    ms.set_safepoint(1);
    // Opaque to the optimiser (an interpreter loads both from its function object), but
    // loaded once: a `black_box` per iteration would add a store-to-load round trip that an
    // interpreter does not pay.
    let (f, sp) = black_box((f, 1u32));
    let mut per = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..n {
            ms.push(f);
            ms.set_safepoint(sp);
            ms.pop();
        }
        per.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    let args = n.to_string();
    let p50 = percentile(&mut per, 50.0);
    let min = percentile(&mut per, 0.0);
    emit("frames", &args, &[("ns_per_op", p50.into()), ("min_ns_per_op", min.into())]);
}

/// Sums every live slot, as a marker loads each one.
struct Sum(usize, usize);

impl Visitor for Sum {
    #[inline(always)]
    fn reference(&mut self, _slot: usize, word: &safepoint::stackmap::SlotWord) {
        self.0 = self.0.wrapping_add(word.load(Relaxed));
        self.1 += 1;
    }
    #[inline(always)]
    fn tagged(&mut self, _slot: usize, word: &safepoint::stackmap::SlotWord) {
        self.0 = self.0.wrapping_add(word.load(Relaxed) & 1);
        self.1 += 1;
    }
}

fn walk(args: &[String]) {
    let depth = arg_num(args, 0, 10_000).max(1) as usize;
    let reg = Registry::new();
    // Four functions of 8 slots; the frames stand at safepoint 1.
    let shapes: [(&[usize], &[usize]); 4] = [
        (&[0, 1, 2, 5], &[7]),
        (&[0, 2, 3, 4, 6, 7], &[]),
        (&[1, 3, 5], &[6]),
        (&[0, 1, 2, 3, 4], &[]),
    ];
    let funcs: Vec<FuncId> = shapes
        .iter()
        .enumerate()
        .map(|(i, (refs, tagged))| {
            reg.register(
                FuncDesc::new(format!("f{i}"), 8, 2, 2)
                    .refs_at(0, &[0, 1])
                    .refs_at(1, refs)
                    .tagged_at(1, tagged),
            )
            .expect("valid")
        })
        .collect();
    let mut ms = ManagedStack::new(1, StackConfig::default().validate(false));
    for d in 0..depth {
        ms.push(funcs[d % funcs.len()]);
        for s in 0..8 {
            // SAFETY: no collector scans this stack: only the benchmark's walks read it.
            unsafe { ms.set(s, (d * 8 + s) * 16) };
        }
        ms.set_safepoint(1);
    }
    let mut v = Sum(0, 0);
    ms.walk(&reg, &mut v);
    let live = v.1;
    // Enough walks per round for a measurable time (~5e7 slots).
    let reps = (50_000_000 / live).max(1);
    let mut per_slot = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..reps {
            let mut v = Sum(0, 0);
            ms.walk(&reg, &mut v);
            black_box(v.0);
        }
        per_slot.push(t.elapsed().as_nanos() as f64 / (reps * live) as f64);
    }
    let p50 = percentile(&mut per_slot, 50.0);
    let min = percentile(&mut per_slot, 0.0);
    emit(
        "walk",
        &depth.to_string(),
        &[
            ("ns_per_slot", p50.into()),
            ("min_ns_per_slot", min.into()),
            ("ns_per_frame", (p50 * live as f64 / depth as f64).into()),
            ("live_slots", live.into()),
        ],
    );
}
