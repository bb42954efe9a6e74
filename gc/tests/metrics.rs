//! The metrics (`safepoint_gc::metrics`): exact allocation counts with caches not flushed,
//! values consistent with the collector's and scheduler's statistics, and reads every
//! millisecond that do not hold a workload up, goroutines by state against a known arrangement,
//! and assist time from goroutines that allocate while the collector marks.

mod height;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use height::{build, check, expected, node_type};
use safepoint_gc::metrics::{self, Kind, Sample, Value};
use safepoint_gc::{Gc, Mutator};
use safepoint_sched::Runtime;

fn u64_of(s: &Sample) -> u64 {
    match s.value {
        Value::U64(v) => v,
        ref v => panic!("{}: not an integer: {v:?}", s.name),
    }
}

fn read_u64(gc: &Gc, names: &[&str]) -> Vec<u64> {
    let mut samples: Vec<Sample> = names.iter().map(|n| Sample::new(*n)).collect();
    metrics::read(gc, &mut samples);
    samples.iter().map(u64_of).collect()
}

const COUNTS: [&str; 5] = [
    "/gc/heap/allocs:objects",
    "/gc/heap/allocs:bytes",
    "/gc/heap/frees:objects",
    "/gc/heap/frees:bytes",
    "/gc/heap/objects:objects",
];

#[test]
fn allocation_counts_equal_the_model_with_caches_not_flushed() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    // A heap floor far above the workload: no cycle starts by itself, so no cache is flushed.
    let gc = Gc::builder().min_heap(1 << 30).build(&rt).unwrap();
    let ty = node_type(&gc);
    let g = gc.clone();
    rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        // Nodes are 3 words: the 24-byte class.
        let nodes = |d: u32| (1u64 << (d + 1)) - 1;
        m.scope(|m, [keep, tmp]| {
            let before = read_u64(&g, &COUNTS);
            build(m, ty, 10, keep);
            build(m, ty, 12, tmp);
            let after = read_u64(&g, &COUNTS);
            let n = nodes(10) + nodes(12);
            assert_eq!(after[0] - before[0], n, "allocated objects");
            assert_eq!(after[1] - before[1], n * 24, "allocated bytes");
            assert_eq!(after[2], before[2], "nothing freed yet");
            assert_eq!(after[4] - before[4], n, "live objects");
            let stats = g.stats();
            assert_eq!(stats.heap.total_allocs, after[0], "HeapStats agrees with the metric");
            assert_eq!(stats.cycles, 0, "a cycle ran (and flushed the caches)");
            // The by-size histogram counts them in the 24-byte bucket.
            let mut by_size = [Sample::new("/gc/heap/objects-by-size:objects")];
            metrics::read(&g, &mut by_size);
            let Value::Histogram(h) = &by_size[0].value else { panic!("not a histogram") };
            let b = h.boundaries.iter().position(|&x| x > 24.0).unwrap() - 1;
            assert!(h.boundaries[b] <= 24.0);
            assert!(h.counts[b] >= n, "24-byte bucket {} < {n}", h.counts[b]);
            assert_eq!(h.counts.iter().sum::<u64>(), after[4]);
            // A collection frees the second tree (dropped from its slot) and keeps the first;
            // then more allocation, not flushed, is counted exactly too.
            m.clear(tmp).unwrap();
            m.collect();
            let collected = read_u64(&g, &COUNTS);
            assert_eq!(collected[2] - before[2], nodes(12), "freed objects");
            assert_eq!(collected[3] - before[3], nodes(12) * 24, "freed bytes");
            assert_eq!(check(m, keep), expected(10));
            build(m, ty, 8, tmp);
            let more = read_u64(&g, &COUNTS);
            assert_eq!(more[0] - collected[0], nodes(8), "allocated after the collection");
            assert_eq!(more[2], collected[2]);
            assert_eq!(more[4], more[0] - more[2]);
        });
    });
}

#[test]
fn metric_values_agree_with_the_statistics_and_every_listed_metric_reads() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder().min_heap(1 << 20).build(&rt).unwrap();
    let ty = node_type(&gc);
    let g = gc.clone();
    rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        m.scope(|m, [t]| {
            for _ in 0..20 {
                build(m, ty, 10, t);
            }
        });
        m.collect();
        m.collect();
    });
    // Goroutines that wait in run queues, for the latency histogram.
    rt.block_on(|| {
        let hs: Vec<_> = (0..16)
            .map(|_| safepoint_sched::go(|| (0..200).for_each(|_| safepoint_sched::yield_now())))
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    let mut samples: Vec<Sample> = metrics::all().iter().map(|d| Sample::new(d.name)).collect();
    samples.push(Sample::new("/no/such:metric"));
    // A cycle the workload triggered may still run in the background: compare with statistics
    // read before and after the metrics that agree with each other.
    let (stats, goroutines) = (0..1000)
        .find_map(|_| {
            let (s1, g1) = (gc.stats(), rt.stats().goroutines);
            metrics::read(&gc, &mut samples);
            let (s2, g2) = (gc.stats(), rt.stats().goroutines);
            let same = s1.cycles == s2.cycles
                && s1.heap == s2.heap
                && s1.pause_count == s2.pause_count
                && s1.live_bytes == s2.live_bytes
                && g1 == g2;
            if !same {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            same.then_some((s2, g2))
        })
        .expect("the statistics never held still for a read");
    let get = |name: &str| &samples.iter().find(|s| s.name == name).unwrap().value;
    for (d, s) in metrics::all().iter().zip(&samples) {
        let ok = match (&s.value, d.kind) {
            (Value::U64(_), Kind::U64) | (Value::F64(_), Kind::F64) => true,
            (Value::Histogram(h), Kind::Histogram) => h.boundaries.len() == h.counts.len() + 1,
            _ => false,
        };
        assert!(ok, "{}: {:?} is not a {:?}", d.name, s.value, d.kind);
        assert!(d.name.starts_with('/') && d.name.contains(':') && !d.description.is_empty());
    }
    assert_eq!(*get("/no/such:metric"), Value::Bad);
    assert_eq!(*get("/gc/cycles/total:gc-cycles"), Value::U64(stats.cycles));
    assert!(stats.cycles >= 2);
    assert_eq!(*get("/gc/heap/allocs:objects"), Value::U64(stats.heap.total_allocs));
    assert_eq!(*get("/gc/heap/frees:objects"), Value::U64(stats.heap.total_frees));
    assert_eq!(*get("/gc/heap/live:bytes"), Value::U64(stats.live_bytes as u64));
    assert_eq!(*get("/gc/pauses/total:seconds"), Value::F64(stats.total_pause.as_secs_f64()));
    let Value::Histogram(p) = get("/gc/pauses:seconds") else { unreachable!() };
    assert_eq!(p.counts, stats.pause_histogram.to_vec());
    assert_eq!(p.counts.iter().sum::<u64>(), stats.pause_count);
    assert_eq!(stats.pause_count, stats.cycles);
    assert_eq!(*get("/sched/gomaxprocs:threads"), Value::U64(2));
    assert_eq!(*get("/sched/goroutines:goroutines"), Value::U64(goroutines as u64));
    let Value::Histogram(l) = get("/sched/latencies:seconds") else { unreachable!() };
    // 16 goroutines yielding 200 times each on 2 Ps: thousands of waits, one in eight timed.
    assert!(l.counts.iter().sum::<u64>() >= 100, "latencies: {:?}", l.counts);
    let Value::F64(marking) = get("/cpu/classes/gc/mark/dedicated:cpu-seconds") else {
        unreachable!()
    };
    assert!(*marking > 0.0, "two Ps have a dedicated worker, which marked");
    // The pause history on request.
    // (A cycle may have ended since: later pauses may follow.)
    assert!(gc.pauses_since(0).len() as u64 >= stats.pause_count);
    assert_eq!(gc.pauses_since(stats.pause_count - 1)[0], *stats.pauses.last().unwrap());
    assert!(gc.pauses_since(u64::MAX).is_empty());
}

#[test]
fn a_reader_every_millisecond_does_not_hold_up_the_workload() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder().min_heap(1 << 20).build(&rt).unwrap();
    let ty = node_type(&gc);
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // A reader thread outside the runtime, and one goroutine inside it.
    let outside = {
        let (gc, progress, stop) = (gc.clone(), progress.clone(), stop.clone());
        std::thread::spawn(move || reader(&gc, &progress, &stop))
    };
    let inside = {
        let (gc, progress, stop) = (gc.clone(), progress.clone(), stop.clone());
        rt.spawn(move || reader(&gc, &progress, &stop)).unwrap()
    };
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (gc, progress) = (gc.clone(), progress.clone());
            rt.spawn(move || {
                let mut m = Mutator::new(&gc).unwrap();
                m.scope(|m, [t]| {
                    for _ in 0..60 {
                        build(m, ty, 9, t);
                        assert_eq!(check(m, t), expected(9));
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                });
            })
            .unwrap()
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (a, b) = (outside.join().unwrap(), inside.join().unwrap());
    assert_eq!(progress.load(Ordering::Relaxed), 240);
    // Each reader read while the workload progressed, and saw counts only grow.
    for (who, (reads, saw_progress)) in [("thread", a), ("goroutine", b)] {
        assert!(
            reads > 0 && saw_progress,
            "{who} reader: {reads} reads, progress seen {saw_progress}"
        );
    }
    assert!(gc.cycles() > 0);
}

/// Reads every metric about every millisecond until `stop`; returns the reads made and whether
/// the workload's progress moved between two of them. Checks that cumulative counts never go
/// down and frees never pass allocations.
fn reader(gc: &Gc, progress: &AtomicU64, stop: &AtomicBool) -> (u64, bool) {
    let mut samples: Vec<Sample> = metrics::all().iter().map(|d| Sample::new(d.name)).collect();
    let (mut reads, mut last, mut moved) = (0u64, vec![0u64; samples.len()], false);
    let mut seen = progress.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "the workload did not finish in 120 s");
        metrics::read(gc, &mut samples);
        reads += 1;
        for ((d, s), l) in metrics::all().iter().zip(&samples).zip(&mut last) {
            if let (true, Value::U64(v)) = (d.cumulative, &s.value) {
                assert!(*v >= *l, "{} went down: {l} then {v}", d.name);
                *l = *v;
            }
        }
        let (a, f) = (u64_of(&samples[1]), u64_of(&samples[3]));
        assert!(f <= a, "frees {f} passed allocations {a}");
        let p = progress.load(Ordering::Relaxed);
        moved |= p != seen && reads > 1;
        seen = p;
        if safepoint_sched::goroutine_id().is_some() {
            safepoint_sched::sleep(Duration::from_millis(1));
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    (reads, moved)
}

/// Goroutines by state, against a known arrangement on one P: 50 parked on a channel
/// (waiting), one spinning without a safepoint (running: nothing can take its P, since a time
/// slice ends only at a safepoint), and 10 spawned behind it (runnable).
#[test]
fn goroutines_by_state_count_a_known_arrangement() {
    use safepoint_sched::Chan;
    let rt = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder().min_heap(1 << 20).build(&rt).unwrap();
    let names = [
        "/sched/goroutines:goroutines",
        "/sched/goroutines/running:goroutines",
        "/sched/goroutines/runnable:goroutines",
        "/sched/goroutines/waiting:goroutines",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    // The runtime's own goroutines (the collector's), parked once it has started.
    let base = loop {
        let got = read_u64(&gc, &names);
        if got[1..3] == [0, 0] && got[0] == got[3] {
            break got[0];
        }
        assert!(Instant::now() < deadline, "the runtime never settled: {got:?}");
        std::thread::sleep(Duration::from_millis(1));
    };
    let ch: Chan<u64> = Chan::new(0);
    let parked = Arc::new(AtomicU64::new(0));
    let parkers: Vec<_> = (0..50)
        .map(|_| {
            let (ch, parked) = (ch.clone(), parked.clone());
            rt.spawn(move || {
                parked.fetch_add(1, Ordering::SeqCst);
                ch.recv().unwrap()
            })
            .unwrap()
        })
        .collect();
    while parked.load(Ordering::SeqCst) < 50 {
        assert!(Instant::now() < deadline, "the parkers did not run");
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let spinner = {
        let (s, r) = (started.clone(), release.clone());
        rt.spawn(move || {
            s.store(true, Ordering::SeqCst);
            // No safepoint until released (a guard of 60 s turns a test bug into a failure).
            let t0 = Instant::now();
            while !r.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(60) {
                std::hint::spin_loop();
            }
        })
        .unwrap()
    };
    while !started.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the spinner did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    let queued: Vec<_> = (0..10).map(|_| rt.spawn(|| ()).unwrap()).collect();
    // The values are racy snapshots: a parker that counted itself may not have parked yet, so
    // read until the arrangement has settled (it then holds until the spinner is released).
    let (mut got, want) = (Vec::new(), [base + 61, 1, 10, base + 50]);
    while got != want {
        assert!(Instant::now() < deadline, "goroutines by state read {got:?}, not {want:?}");
        got = read_u64(&gc, &names);
        std::thread::sleep(Duration::from_millis(1));
    }
    release.store(true, Ordering::SeqCst);
    spinner.join().unwrap();
    for q in queued {
        q.join().unwrap();
    }
    for i in 0..50 {
        rt.block_on({
            let ch = ch.clone();
            move || ch.send(i)
        });
    }
    let sum: u64 = parkers.into_iter().map(|p| p.join().unwrap()).sum();
    assert_eq!(sum, (0..50).sum());
    // Each exits a moment after its joiner is woken: read until all have.
    while read_u64(&gc, &names[..1]) != [base] {
        assert!(Instant::now() < deadline, "goroutines left: {:?}", read_u64(&gc, &names));
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Assists: a goroutine that allocates on one P while the collector marks pays for its
/// allocation by marking, and the time shows in the assist CPU metric.
#[test]
fn assist_cpu_counts_marking_by_allocating_goroutines() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::builder().min_heap(1 << 20).build(&rt).unwrap();
    let ty = node_type(&gc);
    let g = gc.clone();
    rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        m.scope(|m, [keep, t]| {
            build(m, ty, 14, keep);
            for _ in 0..100 {
                build(m, ty, 10, t);
            }
            assert_eq!(check(m, keep), expected(14));
        });
    });
    let mut s = [Sample::new("/cpu/classes/gc/mark/assist:cpu-seconds")];
    metrics::read(&gc, &mut s);
    let Value::F64(assist) = s[0].value else { panic!("{:?}", s[0].value) };
    assert!(gc.cycles() >= 5, "{} cycles", gc.cycles());
    assert!(assist > 0.0, "no assist time over {} cycles", gc.cycles());
}
