//! `weak N E`: weak references and ephemerons.
//!
//! * **Read cost, marking off.** One object and its weak handle; `N` reads of the handle
//!   against `N` loads of a reference field, on the trusted path (one pinned section, as
//!   compiled code reads) and on the checked [`Mutator`] path. Printed per operation, with
//!   the ratio of a handle read to a field load (the goal: within 2x on the trusted
//!   path).
//! * **An ephemeron table of `E` chained entries.** Entry `i` is a record `{key (weak), value
//!   (ephemeron), raw}` whose value references key `i + 1`; only key 0 is held, so every value
//!   lives only through the chain, and the entries are made in reverse order (the worst order
//!   for a marking that passes over them one link at a time). The same graph with a plain
//!   tagged word instead of the ephemeron word is the baseline. Each is collected three times
//!   (`Gc::collect`); printed: the best cycle's clock time for each, their difference (the
//!   extra marking the ephemerons cost), the ephemeron rounds of the last cycle, and the
//!   longest stop of each (which must not grow with `E`: the rounds run concurrently).
//!
//! Like the other GC workloads it runs on its own [`Runtime`] and [`Gc`] (with
//! `SAFEPOINT_DEBUG` knobs), and ends with one JSON line.

use std::time::{Duration, Instant};

use safepoint::gc::{Gc, Mutator, RawMutator, Shape, TypeDesc, WordKind};
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
         {:.1} ms), {} ephemeron rounds, longest stop {:.0} us (plain {:.0} us)",
        ms(eph.cycle),
        ms(strong.cycle),
        ms(eph.cycle.saturating_sub(strong.cycle)),
        eph.rounds,
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
    let shape = Shape::new(gc, ty, 0).expect("shape");
    let g = gc.clone();
    rt.block_on(move || {
        let mut raw = RawMutator::new(&g).expect("raw mutator");
        let (load, weak) = raw
            .enter(|p| {
                let (a, _) = p.alloc(shape).expect("alloc");
                let (b, _) = p.alloc(shape).expect("alloc");
                let mask = p.tag_rule().mask;
                // SAFETY: `a` and `b` are objects of this section; word 0 is a reference.
                unsafe { p.init_link(a, 0, WordKind::Ref, b & !mask) };
                // SAFETY: as above.
                let (w, _) = unsafe { p.weak(b) }.expect("weak");
                let t = Instant::now();
                let mut sum = 0usize;
                for _ in 0..n {
                    // SAFETY: as above.
                    sum = sum.wrapping_add(unsafe { p.word(std::hint::black_box(a), 0) });
                }
                let load = t.elapsed();
                let t = Instant::now();
                for _ in 0..n {
                    // SAFETY: `w` is a live handle (its object `b` is referenced by `a`).
                    sum = sum.wrapping_add(unsafe { p.deref(std::hint::black_box(w)) });
                }
                let weak = t.elapsed();
                std::hint::black_box(sum);
                (load, weak)
            })
            .expect("enter");
        drop(raw);
        let per = |d: Duration, k: usize| d.as_secs_f64() * 1e9 / k as f64;
        let k = (n / 10).max(1);
        let mut m = Mutator::new(&g).expect("mutator");
        let (mload, mweak) = m.scope(|m, [a, b, w, got]| {
            m.alloc(a, ty).expect("alloc");
            m.alloc(b, ty).expect("alloc");
            m.store(a, 0, b).expect("store");
            m.weak(w, b).expect("weak");
            let t = Instant::now();
            for _ in 0..k {
                m.load(got, a, 0).expect("load");
            }
            let load = t.elapsed();
            let t = Instant::now();
            for _ in 0..k {
                m.deref(got, w).expect("deref");
            }
            (load, t.elapsed())
        });
        (per(load, n), per(weak, n), per(mload, k), per(mweak, k))
    })
}

/// One table's figures.
struct TableRun {
    /// The best of three full cycles' clock time.
    cycle: Duration,
    /// The last cycle's ephemeron rounds.
    rounds: usize,
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
            let mut best = Duration::MAX;
            let before = g.stats().pauses.len();
            for _ in 0..3 {
                let t = Instant::now();
                m.collect();
                best = best.min(t.elapsed());
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
            TableRun { cycle: best, rounds, stop }
        })
    })
}
