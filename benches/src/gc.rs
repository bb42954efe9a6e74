//! GC workloads: `binary-trees N`, `gcbench`, `churn G`. Their twins are in
//! `peers/go/gc.go` and `peers/boehm/stress-boehm.c`; each workload here does the same work as
//! its twins (the same node shapes, the same trees in the same order, the same goroutines),
//! written against the collector's checked [`Mutator`] API. Their compiled-code twins (frames
//! with registered stack maps, the trusted `RawMutator` path, as a compiler or an interpreter
//! embeds the collector) are in [`crate::gc_compiled`], named `…-compiled`; binary-trees' twin
//! on the safe branded sections is [`crate::gc_section`], `binary-trees-section`.
//!
//! ## The workloads
//!
//! * `binary-trees N`: the Benchmarks Game program. Nodes are records `{left, right}` (two
//!   reference words, no payload). A stretch tree of depth `max(6, N) + 1` is built, checked
//!   (nodes counted) and dropped; a long-lived tree of depth `max(6, N)` is built and kept;
//!   then one goroutine per depth `d = 4, 6, ..., max(6, N)` builds and checks
//!   `2^(max - d + 4)` trees of depth `d`, one after another; their lines are printed in depth
//!   order, then the long-lived tree's. The output lines are the canonical ones, byte for
//!   byte.
//! * `gcbench`: Boehm's GCBench shape, single-threaded. Nodes are records
//!   `{left, right, i|j}` (two references and one raw word for the two unused ints: 24 bytes
//!   of body as in Go and C). A stretch tree of depth 18 built bottom-up and dropped; a
//!   long-lived tree of depth 16 built top-down and an array of 500,000 doubles (a byte array,
//!   never scanned, as C's `GC_MALLOC_ATOMIC`; first half set to `1/i`) kept to the end; then
//!   for depth 4, 6, ..., 16: [`gb_num_iters`] trees built top-down and as many built
//!   bottom-up, each dropped at once. Exits 1 if the long-lived data is lost.
//! * `churn G`: 64 long-lived trees of depth 14 reachable from a
//!   [`Global`](safepoint::gc::Global) (a reference array) throughout; then G goroutines at
//!   once, each building 200 trees of depth 8 one after another, summing each and dropping
//!   it. Nodes are records `{left, right, value}` (value a raw word); a tree of depth `d`
//!   has `d + 1` levels, a leaf holds 1, a node of height `h >= 1` holds `h`, so
//!   `sum(h) = h + 2 sum(h - 1)` ([`ch_sum_formula`]; 758 for depth 8) and
//!   `check = G * 200 * 758`. The long-lived trees are verified at the end, not counted.
//!
//! Every workload builds its own [`Runtime`] (one P per available CPU) and [`Gc`] (with
//! [`Gc::new`], so `SAFEPOINT_DEBUG` knobs apply), then prints, last, a JSON line with
//! `wall_ms` (the workload in process, runtime and collector already up, as the peers time
//! it), `peak_rss_kb` (`VmHWM`: the process's peak, so within `stress all` it
//! includes earlier workloads), `gc_cycles`, and `p99_pause_us` / `max_pause_us` over the
//! recorded pauses of the run ([`Gc::pauses_since`], one per cycle, from the stop request to the
//! start of the restart, as Go counts its mark termination's: with concurrent marking, the default, the short mark-termination stop; with
//! `SAFEPOINT_DEBUG=gcstoptheworld=1`, the whole marking).
//!
//! ## How trees are held
//!
//! A managed reference never lives in a Rust variable: every tree function takes the
//! [`Slot`] to build into or to read from, and each level of recursion that needs slots of
//! its own opens a [`Mutator::scope`] (one handle frame on the managed stack), so depth 22
//! needs 22 small frames. Leaves need none: building one is an allocation into the caller's
//! slot, and the walks peek at a child's left field to count a leaf without descending.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use safepoint::gc::{Gc, GcError, GcStats, Mutator, Slot, TypeDesc, TypeId, WordKind};
use safepoint::sched::{Runtime, go};

use crate::report::{Value, arg_num, emit, percentile};

/// Runs GC workload `w` (`binary-trees`, `gcbench`, `churn`).
pub fn run(w: &str, args: &[String]) {
    let args_str = args.join(" ");
    match w {
        "binary-trees" => {
            let (lines, r) = binary_trees(arg_num(args, 0, 21) as u32);
            for l in &lines {
                println!("{l}");
            }
            emit("binary-trees", &args_str, &r.fields());
        }
        "gcbench" => match gcbench() {
            Ok(r) => emit("gcbench", &args_str, &r.fields()),
            Err(e) => fail(&e),
        },
        "churn" => match churn(arg_num(args, 0, 1000)) {
            Ok((check, r)) => {
                let mut f = r.fields();
                f.push(("check", Value::Int(check)));
                emit("churn", &args_str, &f);
            }
            Err(e) => fail(&e),
        },
        // The compiled twins per call, and (`-batched`) with small subtrees in one section.
        w @ ("binary-trees-compiled" | "binary-trees-compiled-batched") => {
            let batch = w.ends_with("-batched");
            let (lines, r) = crate::gc_compiled::binary_trees(arg_num(args, 0, 21) as u32, batch);
            for l in &lines {
                println!("{l}");
            }
            emit(w, &args_str, &r.fields());
        }
        // The compiled twin per call on the safe branded sections.
        "binary-trees-section" => {
            let (lines, r) = crate::gc_section::binary_trees(arg_num(args, 0, 21) as u32);
            for l in &lines {
                println!("{l}");
            }
            emit(w, &args_str, &r.fields());
        }
        w @ ("gcbench-compiled" | "gcbench-compiled-batched") => {
            match crate::gc_compiled::gcbench(w.ends_with("-batched")) {
                Ok(r) => emit(w, &args_str, &r.fields()),
                Err(e) => fail(&e),
            }
        }
        w @ ("churn-compiled" | "churn-compiled-batched") => {
            match crate::gc_compiled::churn(arg_num(args, 0, 1000), w.ends_with("-batched")) {
                Ok((check, r)) => {
                    let mut f = r.fields();
                    f.push(("check", Value::Int(check)));
                    emit(w, &args_str, &f);
                }
                Err(e) => fail(&e),
            }
        }
        _ => unreachable!("dispatched by stress"),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(1);
}

// ---- measuring ----------------------------------------------------------------------------

/// The common figures of a GC workload.
#[derive(Clone, Debug)]
pub struct GcRun {
    /// Wall time of the workload, in process, in milliseconds.
    pub wall_ms: f64,
    /// Peak resident set of the process (`VmHWM`), KiB.
    pub peak_rss_kb: i64,
    /// Collection cycles completed during the workload.
    pub gc_cycles: u64,
    /// 99th percentile of the workload's pauses, microseconds (nearest rank).
    pub p99_pause_us: f64,
    /// Longest pause of the workload, microseconds.
    pub max_pause_us: f64,
}

impl GcRun {
    /// The JSON fields, in the peers' order.
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("wall_ms", self.wall_ms.into()),
            ("peak_rss_kb", Value::Int(self.peak_rss_kb)),
            ("gc_cycles", self.gc_cycles.into()),
            ("p99_pause_us", self.p99_pause_us.into()),
            ("max_pause_us", self.max_pause_us.into()),
        ]
    }
}

/// A workload's starting point: the clock and the collector's counters.
pub(crate) struct Meter {
    t0: Instant,
    cycles: u64,
    pauses: u64,
    /// With `--plot DIR`: the heap's sampler (see `crate::plot`).
    sampler: Option<crate::plot::Sampler>,
}

impl Meter {
    pub(crate) fn start(gc: &Gc) -> Meter {
        let s = gc.stats();
        let sampler = crate::plot::start(gc);
        Meter { t0: Instant::now(), cycles: s.cycles, pauses: s.pause_count, sampler }
    }

    pub(crate) fn finish(self, gc: &Gc) -> GcRun {
        let wall_ms = self.t0.elapsed().as_secs_f64() * 1e3;
        let s: GcStats = gc.stats();
        let pauses = gc.pauses_since(self.pauses);
        let mut us: Vec<f64> = pauses.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        if let Some(sampler) = self.sampler {
            crate::plot::finish(sampler, &pauses);
        }
        GcRun {
            wall_ms,
            peak_rss_kb: peak_rss_kb(),
            gc_cycles: s.cycles - self.cycles,
            p99_pause_us: percentile(&mut us, 99.0),
            max_pause_us: percentile(&mut us, 100.0),
        }
    }
}

/// Peak resident set size of this process in KiB: `VmHWM` of `/proc/self/status` (as the
/// peers read it).
///
/// Not getrusage's `ru_maxrss`: Linux carries a process's peak across `exec`, so a program
/// started by a large parent (the comparison scripts are Python) reports the parent's size as
/// its own until it outgrows it. `VmHWM` is this address space's own peak.
fn peak_rss_kb() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The runtime and collector of one workload.
fn setup() -> (Runtime, Gc) {
    let rt = Runtime::new().expect("runtime");
    let gc = Gc::new(&rt).unwrap_or_else(|e| panic!("gc: {e}"));
    (rt, gc)
}

fn record(gc: &Gc, name: &str, words: Vec<WordKind>) -> TypeId {
    gc.types()
        .register(TypeDesc::Record { name: name.into(), words })
        .unwrap_or_else(|e| panic!("register {name}: {e}"))
}

/// A mutator operation that cannot fail in these workloads (slots are live, types fixed).
#[track_caller]
fn ok<T>(r: Result<T, GcError>) -> T {
    r.unwrap_or_else(|e| panic!("gc workload: {e}"))
}

fn mutator(gc: &Gc) -> Mutator {
    ok(Mutator::new(gc))
}

// ---- binary-trees -------------------------------------------------------------------------

/// Field indices of every node type here.
const LEFT: usize = 0;
const RIGHT: usize = 1;
/// The raw word of `gb.node` and `ch.node`.
const VALUE: usize = 2;

/// Builds a perfect tree of `{left, right}` nodes of depth `d` into `dst` (children first, as
/// Go's `&btNode{btBottomUp(d-1), btBottomUp(d-1)}`).
fn bt_build(m: &mut Mutator, ty: TypeId, d: u32, dst: Slot) {
    if d == 0 {
        return ok(m.alloc(dst, ty));
    }
    m.scope(|m, [l, r]| {
        bt_build(m, ty, d - 1, l);
        bt_build(m, ty, d - 1, r);
        ok(m.alloc(dst, ty));
        ok(m.store(dst, LEFT, l));
        ok(m.store(dst, RIGHT, r));
    })
}

/// Counts the nodes of the tree in `t`.
fn bt_check(m: &mut Mutator, t: Slot) -> i64 {
    m.scope(|m, [c, g]| {
        let mut n = 1;
        for i in [LEFT, RIGHT] {
            ok(m.load(c, t, i));
            if ok(m.is_null(c)) {
                return 1; // `t` is a leaf
            }
            ok(m.load(g, c, LEFT));
            n += if ok(m.is_null(g)) { 1 } else { bt_check(m, c) };
        }
        n
    })
}

/// `binary-trees n`: the canonical output lines and the figures.
pub fn binary_trees(n: u32) -> (Vec<String>, GcRun) {
    let (rt, gc) = setup();
    let ty = record(&gc, "bt.node", vec![WordKind::Ref, WordKind::Ref]);
    rt.block_on(move || {
        let meter = Meter::start(&gc);
        const MIN_DEPTH: u32 = 4;
        let max_depth = (MIN_DEPTH + 2).max(n);
        let stretch = max_depth + 1;
        let mut m = mutator(&gc);
        let mut lines = Vec::new();
        m.scope(|m, [t]| {
            bt_build(m, ty, stretch, t);
            lines.push(format!("stretch tree of depth {stretch}\t check: {}", bt_check(m, t)));
        });
        m.scope(|m, [long]| {
            bt_build(m, ty, max_depth, long);
            let workers: Vec<_> = (MIN_DEPTH..=max_depth)
                .step_by(2)
                .map(|d| {
                    let gc = gc.clone();
                    go(move || {
                        let mut m = mutator(&gc);
                        let iters = 1u64 << (max_depth - d + MIN_DEPTH);
                        let mut chk = 0;
                        m.scope(|m, [t]| {
                            for _ in 0..iters {
                                bt_build(m, ty, d, t);
                                chk += bt_check(m, t);
                            }
                        });
                        format!("{iters}\t trees of depth {d}\t check: {chk}")
                    })
                })
                .collect();
            for w in workers {
                lines.push(w.join().expect("binary-trees worker"));
            }
            lines.push(format!(
                "long lived tree of depth {max_depth}\t check: {}",
                bt_check(m, long)
            ));
        });
        drop(m);
        (lines, meter.finish(&gc))
    })
}

// ---- gcbench ------------------------------------------------------------------------------

pub(crate) const GB_STRETCH_DEPTH: u32 = 18;
pub(crate) const GB_LONG_LIVED_DEPTH: u32 = 16;
pub(crate) const GB_ARRAY_SIZE: usize = 500_000;
pub(crate) const GB_MIN_DEPTH: u32 = 4;
pub(crate) const GB_MAX_DEPTH: u32 = 16;

fn gb_tree_size(d: u32) -> u64 {
    (1 << (d + 1)) - 1
}

/// GCBench's iteration count: as many trees of depth `d` as make twice a stretch tree's nodes.
pub fn gb_num_iters(d: u32) -> u64 {
    2 * gb_tree_size(GB_STRETCH_DEPTH) / gb_tree_size(d)
}

/// Grows a tree of depth `d` top-down under the existing node in `n` (both children allocated
/// and linked, then each grown, as GCBench's `Populate`).
fn gb_populate(m: &mut Mutator, ty: TypeId, d: u32, n: Slot) {
    if d == 0 {
        return;
    }
    m.scope(|m, [l, r]| {
        ok(m.alloc(l, ty));
        ok(m.alloc(r, ty));
        ok(m.store(n, LEFT, l));
        ok(m.store(n, RIGHT, r));
        gb_populate(m, ty, d - 1, l);
        gb_populate(m, ty, d - 1, r);
    })
}

/// Builds a tree of depth `d` bottom-up into `dst` (GCBench's `MakeTree`).
fn gb_make_tree(m: &mut Mutator, ty: TypeId, d: u32, dst: Slot) {
    // The same shape as binary-trees' builder; the type has the extra raw word.
    bt_build(m, ty, d, dst)
}

/// `gcbench`: the figures, or what was lost.
pub fn gcbench() -> Result<GcRun, String> {
    let (rt, gc) = setup();
    let ty = record(&gc, "gb.node", vec![WordKind::Ref, WordKind::Ref, WordKind::Raw]);
    let doubles = gc
        .types()
        .register(TypeDesc::ByteArray { name: "gb.doubles".into() })
        .unwrap_or_else(|e| panic!("register gb.doubles: {e}"));
    rt.block_on(move || {
        let meter = Meter::start(&gc);
        let mut m = mutator(&gc);
        let intact = m.scope(|m, [temp, long, array, probe]| {
            gb_make_tree(m, ty, GB_STRETCH_DEPTH, temp);
            ok(m.clear(temp));

            ok(m.alloc(long, ty));
            gb_populate(m, ty, GB_LONG_LIVED_DEPTH, long);
            ok(m.alloc_array(array, doubles, GB_ARRAY_SIZE * 8));
            for i in 0..GB_ARRAY_SIZE / 2 {
                ok(m.write_bytes(array, i * 8, &(1.0 / i as f64).to_le_bytes()));
            }

            for d in (GB_MIN_DEPTH..=GB_MAX_DEPTH).step_by(2) {
                let iters = gb_num_iters(d);
                for _ in 0..iters {
                    ok(m.alloc(temp, ty));
                    gb_populate(m, ty, d, temp);
                    ok(m.clear(temp));
                }
                for _ in 0..iters {
                    gb_make_tree(m, ty, d, temp);
                    ok(m.clear(temp));
                }
            }

            ok(m.load(probe, long, LEFT));
            let bytes = ok(m.bytes(array));
            let mut x = [0u8; 8];
            for (k, b) in x.iter_mut().enumerate() {
                *b = bytes.get(1000 * 8 + k).unwrap_or(0);
            }
            !ok(m.is_null(probe)) && f64::from_le_bytes(x) == 1.0 / 1000.0
        });
        drop(m);
        let r = meter.finish(&gc);
        if intact { Ok(r) } else { Err("gcbench: failed (long-lived data lost)".into()) }
    })
}

// ---- churn --------------------------------------------------------------------------------

pub(crate) const CHURN_LONG_TREES: usize = 64;
pub(crate) const CHURN_LONG_DEPTH: u32 = 14;
pub(crate) const CHURN_TREES: u32 = 200;
pub(crate) const CHURN_TREE_DEPTH: u32 = 8;

/// The sum of a churn tree of depth `h`: `sum(0) = 1`, `sum(h) = h + 2 sum(h - 1)`.
pub fn ch_sum_formula(h: u32) -> i64 {
    (1..=h as i64).fold(1, |s, i| i + 2 * s)
}

/// `churn g`'s expected check: `g * 200 * sum(8)`.
pub fn churn_expected(g: u64) -> i64 {
    g as i64 * CHURN_TREES as i64 * ch_sum_formula(CHURN_TREE_DEPTH)
}

/// Builds a churn tree of depth `h` into `dst` (children first, then the node).
fn ch_build(m: &mut Mutator, ty: TypeId, h: u32, dst: Slot) {
    if h == 0 {
        ok(m.alloc(dst, ty));
        return ok(m.write_word(dst, VALUE, 1));
    }
    m.scope(|m, [l, r]| {
        ch_build(m, ty, h - 1, l);
        ch_build(m, ty, h - 1, r);
        ok(m.alloc(dst, ty));
        ok(m.store(dst, LEFT, l));
        ok(m.store(dst, RIGHT, r));
        ok(m.write_word(dst, VALUE, h as u64));
    })
}

/// The sum of the values of the tree in `t`.
fn ch_sum(m: &mut Mutator, t: Slot) -> i64 {
    let v = ok(m.read_word(t, VALUE)) as i64;
    m.scope(|m, [c, g]| {
        let mut s = v;
        for i in [LEFT, RIGHT] {
            ok(m.load(c, t, i));
            if ok(m.is_null(c)) {
                return v; // `t` is a leaf
            }
            ok(m.load(g, c, LEFT));
            s += if ok(m.is_null(g)) { ok(m.read_word(c, VALUE)) as i64 } else { ch_sum(m, c) };
        }
        s
    })
}

/// `churn g`: the check (the total of the G * 200 sums) and the figures, or what went wrong.
pub fn churn(g: u64) -> Result<(i64, GcRun), String> {
    let (rt, gc) = setup();
    let ty = record(&gc, "ch.node", vec![WordKind::Ref, WordKind::Ref, WordKind::Raw]);
    let set_ty = gc
        .types()
        .register(TypeDesc::RefArray { name: "ch.long".into() })
        .unwrap_or_else(|e| panic!("register ch.long: {e}"));
    rt.block_on(move || {
        let meter = Meter::start(&gc);
        let mut m = mutator(&gc);
        // The long-lived set, reachable from a global only while the goroutines run.
        let long = m.scope(|m, [set, t]| {
            ok(m.alloc_array(set, set_ty, CHURN_LONG_TREES));
            let long = ok(m.new_global(set));
            for i in 0..CHURN_LONG_TREES {
                ch_build(m, ty, CHURN_LONG_DEPTH, t);
                ok(m.store(set, i, t));
            }
            long
        });
        let total = Arc::new(AtomicI64::new(0));
        let workers: Vec<_> = (0..g)
            .map(|_| {
                let (gc, total) = (gc.clone(), total.clone());
                go(move || {
                    let mut m = mutator(&gc);
                    let s = m.scope(|m, [t]| {
                        (0..CHURN_TREES)
                            .map(|_| {
                                ch_build(m, ty, CHURN_TREE_DEPTH, t);
                                ch_sum(m, t)
                            })
                            .sum::<i64>()
                    });
                    // Relaxed: read after every worker is joined.
                    total.fetch_add(s, Ordering::Relaxed);
                })
            })
            .collect();
        for w in workers {
            w.join().expect("churn worker");
        }
        let want = ch_sum_formula(CHURN_LONG_DEPTH);
        let intact = m.scope(|m, [set, t]| {
            ok(m.load_global(set, &long));
            (0..CHURN_LONG_TREES).all(|i| {
                ok(m.load(t, set, i));
                ch_sum(m, t) == want
            })
        });
        drop(m);
        let r = meter.finish(&gc);
        drop(long);
        // Relaxed: the joins ordered every worker's add before this.
        churn_verdict(intact, total.load(Ordering::Relaxed), g, r)
    })
}

/// Churn's result: the check and the figures, or what went wrong.
pub(crate) fn churn_verdict(
    intact: bool,
    check: i64,
    g: u64,
    r: GcRun,
) -> Result<(i64, GcRun), String> {
    if !intact {
        Err("churn: long-lived tree corrupted".into())
    } else if check != churn_expected(g) {
        Err(format!("churn: wrong check {check}, want {}", churn_expected(g)))
    } else {
        Ok((check, r))
    }
}
