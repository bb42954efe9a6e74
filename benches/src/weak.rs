//! `weak N E`: weak references and ephemerons.
//!
//! * **Read cost, marking off.** A holder object with two fields naming one target: a
//!   reference field, and a weak field (its handle). `N` reads of the target through the weak
//!   field (load the field, read the handle) against `N` loads of the reference field, each
//!   loop starting from the holder and summing what it read, as user code that keeps a strong
//!   or a weak reference in an object does; on the trusted path (one pinned section, as
//!   compiled code reads) and on the checked [`Mutator`] path. The two trusted loops
//!   alternate in 20 rounds and each keeps its fastest round (a round another process
//!   interrupted is not counted). Printed per operation, with the ratio of a weak read to a
//!   field load (the goal: within 2x on the trusted path).
//! * **An ephemeron table of `E` chained entries.** Entry `i` is a record `{key (weak), value
//!   (ephemeron), raw}` whose value references key `i + 1`; only key 0 is held, so every value
//!   lives only through the chain, and the entries are made in reverse order (the worst order
//!   for a marking that passes over them one link at a time). The same graph with a plain
//!   tagged word instead of the ephemeron word is the baseline. Each is collected three times
//!   (`Gc::collect`); printed: the best cycle's clock time for each, their difference (the
//!   extra marking the ephemerons cost), the ephemeron rounds of the last cycle and the time
//!   the best cycle's rounds took (gctrace's figure), and the longest stop of each (which
//!   must not grow with `E`: the rounds run concurrently).
//!
//! Like the other GC workloads it runs on its own [`Runtime`] and [`Gc`] (with
//! `SAFEPOINT_DEBUG` knobs), and ends with one JSON line.

use std::time::{Duration, Instant};

use safepoint::gc::{Gc, Mutator, Pin, RawMutator, Shape, TypeDesc, WordKind};
use safepoint::sched::Runtime;

use crate::report::{Value, arg_num, emit};

/// Runs `weak N E`.
pub fn run(args: &[String]) {
    let n = arg_num(args, 0, 20_000_000) as usize;
    let e = arg_num(args, 1, 1_000_000) as usize;
    let rt = Runtime::new().expect("runtime");
    let gc = Gc::new(&rt).expect("gc");
    let (raw_load, raw_weak, m_load, m_weak) = read_costs(&rt, &gc, n);
    println!(
        "weak reads, marking off: trusted path {raw_load:.2} ns per field load, {raw_weak:.2} ns \
         per handle read ({:.2}x); checked path {m_load:.1} ns per load, {m_weak:.1} ns per \
         deref ({:.2}x)",
        raw_weak / raw_load,
        m_weak / m_load
    );
    let eph = table(&rt, &gc, e, true);
    let strong = table(&rt, &gc, e, false);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "ephemeron table of {e} chained entries: cycle {:.1} ms (plain values {:.1} ms, extra \
         {:.1} ms), {} ephemeron rounds in {:.1} ms (best cycle), longest stop {:.0} us \
         (plain {:.0} us)",
        ms(eph.cycle),
        ms(strong.cycle),
        ms(eph.cycle.saturating_sub(strong.cycle)),
        eph.rounds,
        ms(eph.round_time),
        us(eph.stop),
        us(strong.stop)
    );
    emit(
        "weak",
        &args.join(" "),
        &[
            ("raw_load_ns", Value::Float(raw_load)),
            ("raw_weak_ns", Value::Float(raw_weak)),
            ("raw_ratio", Value::Float(raw_weak / raw_load)),
            ("checked_load_ns", Value::Float(m_load)),
            ("checked_deref_ns", Value::Float(m_weak)),
            ("eph_cycle_ms", Value::Float(ms(eph.cycle))),
            ("plain_cycle_ms", Value::Float(ms(strong.cycle))),
            ("eph_extra_ms", Value::Float(ms(eph.cycle.saturating_sub(strong.cycle)))),
            ("eph_rounds", Value::Int(eph.rounds as i64)),
            ("eph_round_ms", Value::Float(ms(eph.round_time))),
            ("eph_max_stop_us", Value::Float(us(eph.stop))),
            ("plain_max_stop_us", Value::Float(us(strong.stop))),
        ],
    );
}

/// Nanoseconds per field load and per handle read, trusted path then checked path.
fn read_costs(rt: &Runtime, gc: &Gc, n: usize) -> (f64, f64, f64, f64) {
    let ty = gc
        .types()
        .register(TypeDesc::Record {
            name: "weak.obj".into(),
            words: vec![WordKind::Ref, WordKind::Raw],
        })
        .expect("type");
    // The holder: word 0 a reference to the target, word 1 a weak field naming it.
    let holder = gc
        .types()
        .register(TypeDesc::Record {
            name: "weak.holder".into(),
            words: vec![WordKind::Ref, WordKind::Weak],
        })
        .expect("type");
    let shape = Shape::new(gc, ty, 0).expect("shape");
    let hshape = Shape::new(gc, holder, 0).expect("shape");
    let g = gc.clone();
    rt.block_on(move || {
        let mut raw = RawMutator::new(&g).expect("raw mutator");
        let (load, weak) = raw
            .enter(|p| {
                let (a, _) = p.alloc(hshape).expect("alloc");
                let (b, _) = p.alloc(shape).expect("alloc");
                let rule = p.tag_rule();
                // SAFETY: `a` and `b` are objects of this section; word 0 is a reference.
                unsafe { p.init_link(a, 0, WordKind::Ref, b & !rule.mask) };
                // SAFETY: as above.
                let (w, _) = unsafe { p.weak(b) }.expect("weak");
                // SAFETY: `a`'s word 1 is a weak word, `w` a handle made in this section.
                unsafe { p.init_link(a, 1, WordKind::Weak, w & !rule.mask) };
                // The loops alternate in ROUNDS rounds and each keeps its fastest: on a shared
                // machine, a round that another process interrupted is not the one counted.
                let k = (n / ROUNDS).max(1);
                let (mut load, mut weak) = (Duration::MAX, Duration::MAX);
                for _ in 0..ROUNDS {
                    let t = Instant::now();
                    // SAFETY: `a` is live (this section allocated it), its words as described.
                    std::hint::black_box(unsafe { field_loads(p, a, k) });
                    load = load.min(t.elapsed());
                    let t = Instant::now();
                    // SAFETY: as above.
                    std::hint::black_box(unsafe { weak_reads(p, a, k) });
                    weak = weak.min(t.elapsed());
                }
                (load * ROUNDS as u32, weak * ROUNDS as u32)
            })
            .expect("enter");
        drop(raw);
        let per = |d: Duration, k: usize| d.as_secs_f64() * 1e9 / k as f64;
        let k = (n / 10).max(1);
        let mut m = Mutator::new(&g).expect("mutator");
        let (mload, mweak) = m.scope(|m, [a, b, got]| {
            m.alloc(a, holder).expect("alloc");
            m.alloc(b, ty).expect("alloc");
            m.store(a, 0, b).expect("store");
            // A store into a weak field stores the object's handle.
            m.store(a, 1, b).expect("store");
            let t = Instant::now();
            for _ in 0..k {
                m.load(got, a, 0).expect("load");
            }
            let load = t.elapsed();
            let t = Instant::now();
            for _ in 0..k {
                // A load of a weak field reads the handle: the object, or null.
                m.load(got, a, 1).expect("load");
            }
            (load, t.elapsed())
        });
        (per(load, n), per(weak, n), per(mload, k), per(mweak, k))
    })
}

/// The rounds of the read-cost loops.
const ROUNDS: usize = 20;

/// `n` loads of the holder `a`'s reference field, summed. Each loop is a function of its own,
/// so that the compiler treats the two alike (registers, unrolling).
///
/// # Safety
/// `a` is a live holder (word 0 a reference).
#[inline(never)]
unsafe fn field_loads(p: &mut Pin<'_>, a: usize, n: usize) -> usize {
    let mut sum = 0usize;
    for _ in 0..n {
        // SAFETY: per the contract.
        sum = sum.wrapping_add(unsafe { p.word(std::hint::black_box(a), 0) });
    }
    sum
}

/// `n` reads of the object named by the holder `a`'s weak field (`Pin::weak_word`: load the
/// field, read the handle), summed as plain addresses, as [`field_loads`] sums them.
///
/// # Safety
/// `a` is a live holder (word 1 a weak field holding a handle).
#[inline(never)]
unsafe fn weak_reads(p: &mut Pin<'_>, a: usize, n: usize) -> usize {
    let mask = p.tag_rule().mask;
    let mut sum = 0usize;
    for _ in 0..n {
        // SAFETY: per the contract.
        sum = sum.wrapping_add(unsafe { p.weak_word(std::hint::black_box(a), 1) } & !mask);
    }
    sum
}

/// One table's figures.
struct TableRun {
    /// The best of three full cycles' clock time.
    cycle: Duration,
    /// The last cycle's ephemeron rounds.
    rounds: usize,
    /// The time the best cycle's ephemeron rounds took (`WeakStats::ephemeron_time`).
    round_time: Duration,
    /// The longest stop of those cycles.
    stop: Duration,
}

/// Builds the chained table of `e` entries (ephemeron values, or plain tagged ones), holds
/// key 0, collects three times, checks the chain, and drops it all.
fn table(rt: &Runtime, gc: &Gc, e: usize, ephemeron: bool) -> TableRun {
    let kind = if ephemeron { WordKind::Ephemeron } else { WordKind::Tagged };
    let name = if ephemeron { "weak.entry" } else { "weak.plain" };
    let entry = gc
        .types()
        .register(TypeDesc::Record {
            name: name.into(),
            words: vec![WordKind::Weak, kind, WordKind::Raw],
        })
        .expect("type");
    let node = gc.types().lookup("weak.obj").expect("registered by read_costs");
    let refs = gc.types().lookup("weak.refs").unwrap_or_else(|| {
        gc.types().register(TypeDesc::RefArray { name: "weak.refs".into() }).expect("type")
    });
    let g = gc.clone();
    rt.block_on(move || {
        let mut m = Mutator::new(&g).expect("mutator");
        m.scope(|m, [tab, keys, en, k, v, first]| {
            m.alloc_array(tab, refs, e).expect("table");
            m.alloc_array(keys, refs, e + 1).expect("keys");
            for i in 0..=e {
                m.alloc(k, node).expect("key");
                m.store(keys, i, k).expect("store");
            }
            for i in (0..e).rev() {
                m.alloc(en, entry).expect("entry");
                m.load(k, keys, i).expect("load");
                m.store(en, 0, k).expect("key");
                m.alloc(v, node).expect("value");
                m.load(k, keys, i + 1).expect("load");
                m.store(v, 0, k).expect("link");
                m.store(en, 1, v).expect("value");
                m.write_word(en, 2, i as u64).expect("raw");
                m.store(tab, i, en).expect("store");
            }
            m.load(first, keys, 0).expect("load");
            m.clear(keys).expect("clear");
            m.clear(k).expect("clear");
            m.clear(v).expect("clear");
            m.clear(en).expect("clear");
            let (mut best, mut round_time) = (Duration::MAX, Duration::ZERO);
            let before = g.stats().pauses.len();
            for _ in 0..3 {
                let t = Instant::now();
                m.collect();
                let d = t.elapsed();
                if d < best {
                    best = d;
                    round_time = g.weak_stats().ephemeron_time;
                }
            }
            let rounds = g.weak_stats().ephemeron_rounds;
            let stats = g.stats();
            let stop = stats.pauses[before.min(stats.pauses.len())..]
                .iter()
                .copied()
                .max()
                .unwrap_or_default();
            // The chain is intact: the last entry's value is there.
            m.load(en, tab, e - 1).expect("load");
            m.load(v, en, 1).expect("value");
            assert!(!m.is_null(v).expect("is_null"), "the chain lost its last value");
            for s in [tab, en, v, first] {
                m.clear(s).expect("clear");
            }
            m.collect();
            TableRun { cycle: best, rounds, round_time, stop }
        })
    })
}
