//! Named metrics of the heap, the collector and the scheduler, read in one call: the model is
//! Go's `runtime/metrics`.
//!
//! Every metric has a name of the form `/path/to/it:unit` (the unit after the colon), a kind
//! (an integer, a float, or a histogram) and a description ([`all`] lists them). A program
//! makes the [`Sample`]s it wants once, then calls [`read`] as often as it likes:
//!
//! ```
//! use safepoint_gc::metrics::{self, Sample, Value};
//! # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
//! # let gc = safepoint_gc::Gc::new(&rt).unwrap();
//! let mut samples = [
//!     Sample::new("/gc/heap/allocs:objects"),
//!     Sample::new("/gc/pauses:seconds"),
//! ];
//! metrics::read(&gc, &mut samples);
//! let Value::U64(allocs) = samples[0].value else { panic!("not a counter") };
//! let Value::Histogram(pauses) = &samples[1].value else { panic!("not a histogram") };
//! assert_eq!(pauses.boundaries.len(), pauses.counts.len() + 1);
//! # let _ = allocs;
//! ```
//!
//! ## Cost
//!
//! [`read`] stops nothing and, once each histogram sample has its buckets (the first read
//! sizes them; later reads fill them in place), allocates nothing: it is meant to be called
//! as often as every millisecond by a monitoring thread or goroutine. What it costs:
//!
//! * the allocation counts ([`crate::Heap::alloc_counts`]): one short lock (the registry of
//!   the per-P caches, taken otherwise only when a cache is made or dropped) and a few hundred
//!   loads per P. They are exact: what each P's cache allocated since it last counted is read
//!   from the allocation bits of the words it is taking slots from;
//! * the collector's figures (live, goal, pauses): the short lock the collector takes once per
//!   cycle to record them, taken without preemption (as [`crate::Gc::stats`] takes it);
//! * the scheduler's: a load per P and per counter.
//!
//! Values are read one after another, not at one instant: counts that two metrics both
//! reflect (allocations and frees, say) can disagree by what happened between their reads.
//! Frees are read after allocations, so frees never exceed allocations.
//!
//! ## The scheduling latency
//!
//! `/sched/latencies:seconds` counts the time goroutines waited from becoming runnable to
//! running. As Go does, it times a sample: each time a P starts running a goroutine, one
//! schedule in eight marks that goroutine to be timed on its next wait, so that the cost is
//! a load and a predictable branch on the rest.

use std::sync::atomic::Ordering;

use crate::Gc;
use crate::sizeclass::{CLASSES, NUM_CLASSES};

/// The kind of a metric's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// An unsigned integer ([`Value::U64`]).
    U64,
    /// A float ([`Value::F64`]).
    F64,
    /// A histogram ([`Value::Histogram`]).
    Histogram,
}

/// One metric: its name, kind and meaning.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Description {
    /// The name, `/path:unit`.
    pub name: &'static str,
    /// What it measures.
    pub description: &'static str,
    /// The kind of its value.
    pub kind: Kind,
    /// Whether it only grows (a count since the collector started).
    pub cumulative: bool,
}

/// A histogram: `counts[i]` values fell in `boundaries[i] ..< boundaries[i + 1]` (so there is
/// one boundary more than counts; the last may be infinite).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Counts by bucket.
    pub counts: Vec<u64>,
    /// The buckets' bounds, in the metric's unit.
    pub boundaries: &'static [f64],
}

/// A metric's value.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// The sample names no metric (or was not read yet).
    #[default]
    Bad,
    /// An unsigned integer.
    U64(u64),
    /// A float.
    F64(f64),
    /// A histogram.
    Histogram(Histogram),
}

/// A metric's name and, after [`read`], its value.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The metric's name (see [`all`]).
    pub name: String,
    /// Its value at the last [`read`]; [`Value::Bad`] for an unknown name.
    pub value: Value,
}

impl Sample {
    /// A sample of metric `name`, not yet read.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// use safepoint_gc::metrics::{self, Sample, Value};
    /// let gc = Gc::new(&rt).unwrap();
    /// let mut s = [Sample::new("/gc/cycles/total:gc-cycles"), Sample::new("/no/such:metric")];
    /// assert_eq!(s[0].value, Value::Bad); // until read
    /// gc.collect();
    /// metrics::read(&gc, &mut s);
    /// assert!(matches!(s[0].value, Value::U64(n) if n >= 1));
    /// assert_eq!(s[1].value, Value::Bad); // an unknown name
    /// ```
    pub fn new(name: impl Into<String>) -> Sample {
        Sample { name: name.into(), value: Value::Bad }
    }
}

const fn pow2_seconds() -> [f64; 33] {
    let mut b = [0.0; 33];
    let mut i = 1;
    let mut ns = 2.0;
    while i < 32 {
        b[i] = ns / 1e9;
        ns *= 2.0;
        i += 1;
    }
    b[32] = f64::INFINITY;
    b
}

/// Bounds of the pause and latency histograms: `[0, 2 ns, 4 ns, ..., 2^31 ns, inf)` in
/// seconds (bucket `i` of the collector's and the scheduler's histograms: `2^i ..< 2^(i+1)`
/// ns, bucket 0 also below 1 ns, the last also longer).
static POW2_SECONDS: [f64; 33] = pow2_seconds();

const fn size_bounds() -> [f64; NUM_CLASSES + 1] {
    // Bucket k < NUM_CLASSES - 1 is size class k + 1: sizes above the previous class's up to
    // its own; the last bucket is large objects (above 32 KiB).
    let mut b = [0.0; NUM_CLASSES + 1];
    let mut k = 1;
    while k < NUM_CLASSES {
        b[k] = CLASSES[k].size as f64 + 1.0;
        k += 1;
    }
    b[NUM_CLASSES] = f64::INFINITY;
    b
}

/// Bounds of the by-size histograms, in bytes: bucket `k` holds objects of size class `k + 1`
/// (`boundaries[k] ..< boundaries[k + 1]`, the bounds one past each class's largest size),
/// and the last bucket objects larger than any class (32 KiB).
static SIZE_BOUNDS: [f64; NUM_CLASSES + 1] = size_bounds();

macro_rules! metrics {
    ($( $name:literal, $kind:ident, $cum:literal, $desc:literal; )*) => {
        static ALL: &[Description] = &[
            $( Description { name: $name, description: $desc, kind: Kind::$kind, cumulative: $cum }, )*
        ];
    };
}

metrics! {
    "/gc/heap/allocs:bytes", U64, true,
        "Bytes of heap objects allocated (slot sizes), exact, what per-P caches hold included.";
    "/gc/heap/allocs:objects", U64, true,
        "Heap objects allocated, exact, what per-P caches hold included.";
    "/gc/heap/frees:bytes", U64, true, "Bytes of heap objects freed by sweeping (slot sizes).";
    "/gc/heap/frees:objects", U64, true, "Heap objects freed by sweeping.";
    "/gc/heap/objects:objects", U64, false,
        "Heap objects allocated and not yet freed (including unreachable ones not yet swept).";
    "/gc/heap/allocs-by-size:bytes", Histogram, true,
        "Heap objects allocated, by size class (bucket bounds in bytes; last bucket: large objects).";
    "/gc/heap/frees-by-size:bytes", Histogram, true,
        "Heap objects freed by sweeping, by size class (as allocs-by-size).";
    "/gc/heap/objects-by-size:objects", Histogram, false,
        "Heap objects allocated and not yet freed, by size class (as allocs-by-size).";
    "/gc/heap/live:bytes", U64, false, "Bytes the last cycle's marking found live.";
    "/gc/heap/goal:bytes", U64, false, "The heap goal the last cycle set.";
    "/gc/heap/external:bytes", U64, false,
        "Memory outside the heap that objects own, as reported through Gc::external.";
    "/gc/cycles/total:gc-cycles", U64, true, "Completed collection cycles.";
    "/gc/pauses:seconds", Histogram, true,
        "Stop-the-world pauses of the collector, one per cycle (bounds in seconds, powers of two of nanoseconds).";
    "/gc/pauses/total:seconds", F64, true, "Sum of the collector's pauses.";
    "/cpu/classes/gc/mark/assist:cpu-seconds", F64, true,
        "Time goroutines spent marking as assists (paying for their allocation).";
    "/cpu/classes/gc/mark/dedicated:cpu-seconds", F64, true,
        "Time dedicated mark workers spent marking.";
    "/cpu/classes/gc/mark/fractional:cpu-seconds", F64, true,
        "Time fractional mark workers spent marking.";
    "/cpu/classes/gc/pause:cpu-seconds", F64, true,
        "Pause time multiplied by the number of Ps (every P stands still), as Go counts it.";
    "/sched/gomaxprocs:threads", U64, false, "Ps: goroutines that can run at once.";
    "/sched/goroutines:goroutines", U64, false, "Goroutines spawned and not yet exited.";
    "/sched/goroutines/runnable:goroutines", U64, false,
        "Goroutines waiting in a run queue.";
    "/sched/goroutines/running:goroutines", U64, false,
        "Ps running goroutines (at most the live goroutines).";
    "/sched/goroutines/waiting:goroutines", U64, false,
        "Goroutines neither running nor runnable: parked, in a blocking call, or just made.";
    "/sched/latencies:seconds", Histogram, true,
        "Time sampled goroutines waited from runnable to running (one wait in about eight).";
}

/// Every metric [`read`] knows.
///
/// ```
/// use safepoint_gc::metrics;
/// let names: Vec<&str> = metrics::all().iter().map(|d| d.name).collect();
/// assert!(names.contains(&"/gc/heap/allocs:objects"));
/// assert!(names.contains(&"/sched/latencies:seconds"));
/// ```
pub fn all() -> &'static [Description] {
    ALL
}

/// Fills `h` with `counts` (resized on the first use only) and `bounds`.
fn fill(v: &mut Value, bounds: &'static [f64], counts: impl ExactSizeIterator<Item = u64>) {
    if !matches!(v, Value::Histogram(h) if h.counts.len() == counts.len()) {
        *v = Value::Histogram(Histogram { counts: vec![0; counts.len()], boundaries: bounds });
    }
    let Value::Histogram(h) = v else { unreachable!() };
    h.boundaries = bounds;
    for (o, c) in h.counts.iter_mut().zip(counts) {
        *o = c;
    }
}

/// The by-size bucket order: classes 1.., then large objects (class 0).
fn by_size(a: &[u64; NUM_CLASSES]) -> impl ExactSizeIterator<Item = u64> + '_ {
    (1..NUM_CLASSES + 1).map(move |c| a[c % NUM_CLASSES])
}

/// Reads every sample's metric (an unknown name gives [`Value::Bad`]). Stops nothing; after the
/// first read of a histogram sample, allocates nothing (see the module's "Cost").
///
/// ```
/// use safepoint_gc::metrics::{self, Sample, Value};
/// use safepoint_gc::{Gc, Mutator, TypeDesc};
/// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
/// let gc = Gc::builder().min_heap(64 << 20).build(&rt).unwrap();
/// let t = gc.types().register(TypeDesc::RefArray { name: "v".into() }).unwrap();
/// let mut s = [Sample::new("/gc/heap/allocs:objects")];
/// metrics::read(&gc, &mut s);
/// let Value::U64(before) = s[0].value else { unreachable!() };
/// let g = gc.clone();
/// rt.block_on(move || {
///     let mut m = Mutator::new(&g).unwrap();
///     m.scope(|m, [a]| (0..100).for_each(|_| m.alloc_array(a, t, 2).unwrap()));
/// });
/// metrics::read(&gc, &mut s); // exact, though the allocation caches were not flushed
/// assert_eq!(s[0].value, Value::U64(before + 100));
/// ```
pub fn read(gc: &Gc, samples: &mut [Sample]) {
    let inner = &*gc.inner;
    let heap_wanted = samples.iter().any(|s| s.name.starts_with("/gc/heap/"));
    let counts = heap_wanted.then(|| crate::np(|| inner.heap.alloc_counts()));
    let (live, goal, hist, total_pause) = inner.collector_figures();
    let procs = inner.rt.procs();
    let c = &inner.conc;
    let secs = |ns: &std::sync::atomic::AtomicU64| {
        // Relaxed: counters.
        ns.load(Ordering::Relaxed) as f64 / 1e9
    };
    for s in samples.iter_mut() {
        let v = &mut s.value;
        let heap = counts.as_ref();
        match s.name.as_str() {
            "/gc/heap/allocs:bytes" => *v = Value::U64(heap.map_or(0, |h| h.bytes)),
            "/gc/heap/allocs:objects" => *v = Value::U64(heap.map_or(0, |h| h.objects())),
            "/gc/heap/frees:bytes" => *v = Value::U64(heap.map_or(0, |h| h.freed_bytes)),
            "/gc/heap/frees:objects" => *v = Value::U64(heap.map_or(0, |h| h.frees())),
            "/gc/heap/objects:objects" => {
                *v = Value::U64(heap.map_or(0, |h| h.objects().saturating_sub(h.frees())))
            }
            "/gc/heap/allocs-by-size:bytes" => {
                if let Some(h) = heap {
                    fill(v, &SIZE_BOUNDS, by_size(&h.objects_by_class));
                }
            }
            "/gc/heap/frees-by-size:bytes" => {
                if let Some(h) = heap {
                    fill(v, &SIZE_BOUNDS, by_size(&h.frees_by_class));
                }
            }
            "/gc/heap/objects-by-size:objects" => {
                if let Some(h) = heap {
                    let mut live = [0u64; NUM_CLASSES];
                    for (l, (a, f)) in
                        live.iter_mut().zip(h.objects_by_class.iter().zip(&h.frees_by_class))
                    {
                        *l = a.saturating_sub(*f);
                    }
                    fill(v, &SIZE_BOUNDS, by_size(&live));
                }
            }
            "/gc/heap/live:bytes" => *v = Value::U64(live as u64),
            "/gc/heap/goal:bytes" => *v = Value::U64(goal.max(inner.config.min_heap) as u64),
            "/gc/heap/external:bytes" => *v = Value::U64(inner.external.live()),
            // Relaxed: a counter.
            "/gc/cycles/total:gc-cycles" => *v = Value::U64(inner.cycles.load(Ordering::Relaxed)),
            "/gc/pauses:seconds" => fill(v, &POW2_SECONDS, hist.iter().copied()),
            "/gc/pauses/total:seconds" => *v = Value::F64(total_pause.as_secs_f64()),
            "/cpu/classes/gc/mark/assist:cpu-seconds" => *v = Value::F64(secs(&c.total_assist_ns)),
            "/cpu/classes/gc/mark/dedicated:cpu-seconds" => {
                *v = Value::F64(secs(&c.total_dedicated_ns))
            }
            "/cpu/classes/gc/mark/fractional:cpu-seconds" => {
                *v = Value::F64(secs(&c.total_fractional_ns))
            }
            "/cpu/classes/gc/pause:cpu-seconds" => {
                *v = Value::F64(total_pause.as_secs_f64() * procs as f64)
            }
            "/sched/gomaxprocs:threads" => *v = Value::U64(procs as u64),
            "/sched/goroutines:goroutines" => *v = Value::U64(inner.rt.goroutine_counts().0 as u64),
            "/sched/goroutines/runnable:goroutines" => {
                *v = Value::U64(inner.rt.goroutine_counts().1 as u64)
            }
            "/sched/goroutines/running:goroutines" => {
                let (live, _) = inner.rt.goroutine_counts();
                *v = Value::U64(procs.saturating_sub(inner.rt.idle_procs()).min(live) as u64)
            }
            "/sched/goroutines/waiting:goroutines" => {
                let (live, queued) = inner.rt.goroutine_counts();
                let running = procs.saturating_sub(inner.rt.idle_procs()).min(live);
                *v = Value::U64(live.saturating_sub(queued + running) as u64)
            }
            "/sched/latencies:seconds" => {
                let mut b = [0u64; 32];
                inner.rt.sched_latencies(&mut b);
                fill(v, &POW2_SECONDS, b.into_iter());
            }
            _ => *v = Value::Bad,
        }
    }
}
