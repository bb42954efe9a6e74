//! Allocation drives collection: goroutines that do nothing but allocate (no poll, no scope
//! push, no channel operation) with a small live heap must still see cycles start, the heap
//! stay near the pacer's goal, and other goroutines keep running.
//!
//! Everything is judged by events: each allocator stops once enough cycles have completed and
//! a prober goroutine (which yields in a loop) has made progress, or after a fixed number of
//! allocations (many times the goal's worth) if that never happens, and the assertions then
//! say which it was. Nothing measures time; a watchdog fails a hung test after two minutes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use safepoint_gc::{Gc, Mutator, RawMutator, TypeDesc, TypeId, WordKind};
use safepoint_sched::Runtime;

/// The heap's floor goal, and so its goal: the live heap is a few objects.
const MIN_HEAP: usize = 4 << 20;
/// Cycles each allocator waits to see completed (counted from its start).
const CYCLES: u64 = 6;
/// Prober steps each allocator waits to see (counted from its start).
const PROBES: u64 = 50;
/// Allocations after which an allocator gives up waiting for the events above: about 96
/// goals' worth of 32-byte objects.
const MAX_ALLOCS: u64 = (96 * MIN_HEAP / 32) as u64;
/// Allocations between two looks at the heap's size.
const SAMPLE: u64 = 1024;

/// Runs `f` on a thread; fails if it has not returned within two minutes.
fn must_finish<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(120)).expect("the test hung")
}

/// What the allocators saw.
#[derive(Default)]
struct Seen {
    /// The largest heap (bytes in allocated objects) sampled.
    peak: AtomicUsize,
    /// The largest goal sampled.
    goal: AtomicUsize,
    /// Allocators that stopped at `MAX_ALLOCS` without seeing the events.
    gave_up: AtomicUsize,
}

impl Seen {
    fn sample(&self, gc: &Gc) {
        let s = gc.stats();
        self.peak.fetch_max(s.heap.live_bytes as usize, Ordering::Relaxed);
        self.goal.fetch_max(s.goal_bytes.max(gc.config().min_heap), Ordering::Relaxed);
    }
}

fn pair(gc: &Gc) -> TypeId {
    gc.types()
        .register(TypeDesc::Record {
            name: "pair".into(),
            words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
        })
        .unwrap()
}

/// Whether an allocator that started at `cycles0` and `probes0` has seen what it waits for.
fn done(gc: &Gc, cycles0: u64, probes: &AtomicU64, probes0: u64) -> bool {
    gc.cycles() >= cycles0 + CYCLES && probes.load(Ordering::Relaxed) >= probes0 + PROBES
}

/// `goroutines` allocators on `procs` Ps, through the checked mutator (`raw`: false) or the
/// raw one, with checkmark or not, and a prober goroutine; concurrent marking.
fn only_allocating(procs: usize, goroutines: usize, checkmark: bool, raw: bool) {
    allocating_with(procs, goroutines, checkmark, raw, false)
}

/// As [`only_allocating`], with the collector's mode chosen (`stop_the_world`: marking inside
/// the stop, run by the allocation that crosses the trigger).
fn allocating_with(procs: usize, goroutines: usize, checkmark: bool, raw: bool, stw: bool) {
    must_finish(move || {
        let rt = Runtime::builder().procs(procs).build().unwrap();
        let gc = Gc::builder()
            .stop_the_world(stw)
            .checkmark(checkmark)
            .min_heap(MIN_HEAP)
            .gc_percent(100)
            .ignore_env()
            .build(&rt)
            .unwrap();
        let ty = pair(&gc);
        // For the report line only (cycles a second); nothing here is judged by time.
        let start = std::time::Instant::now();
        let cycles0 = gc.cycles();
        let seen = Arc::new(Seen::default());
        let probes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let prober = {
            let (probes, stop) = (probes.clone(), stop.clone());
            rt.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    probes.fetch_add(1, Ordering::Relaxed);
                    safepoint_sched::yield_now();
                }
            })
            .unwrap()
        };
        let allocators: Vec<_> = (0..goroutines)
            .map(|_| {
                let (gc, seen, probes) = (gc.clone(), seen.clone(), probes.clone());
                rt.spawn(move || {
                    if raw {
                        allocate_raw(&gc, ty, &seen, &probes)
                    } else {
                        allocate_checked(&gc, ty, &seen, &probes)
                    }
                })
                .unwrap()
            })
            .collect();
        for h in allocators {
            h.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        prober.join().unwrap();
        let (peak, goal) = (seen.peak.load(Ordering::Relaxed), seen.goal.load(Ordering::Relaxed));
        let mode = format!(
            "{procs} P, {goroutines} allocators, {}, checkmark {checkmark}, stop-the-world {stw}",
            if raw { "raw" } else { "checked" }
        );
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "{mode}: {} cycles ({:.1} a second), {} probes, peak heap {peak} bytes, goal {goal} \
             bytes (peak/goal {:.2})",
            gc.cycles(),
            (gc.cycles() - cycles0) as f64 / secs,
            probes.load(Ordering::Relaxed),
            peak as f64 / goal.max(1) as f64
        );
        assert_eq!(
            seen.gave_up.load(Ordering::Relaxed),
            0,
            "{mode}: {MAX_ALLOCS} allocations each without {CYCLES} cycles and {PROBES} prober \
             steps: {} cycles, {} probes, peak heap {peak} bytes",
            gc.cycles(),
            probes.load(Ordering::Relaxed)
        );
        assert!(
            peak <= 2 * goal,
            "{mode}: the heap reached {peak} bytes, more than twice the goal ({goal} bytes)"
        );
        // The goal itself stays near the floor: the live heap is a few objects, and what is
        // allocated black while marking is bounded by the pacer.
        assert!(goal <= 4 * MIN_HEAP, "{mode}: the goal grew to {goal} bytes");
    });
}

/// Allocates pairs into one slot, nothing else, until the events or `MAX_ALLOCS`.
fn allocate_checked(gc: &Gc, ty: TypeId, seen: &Seen, probes: &AtomicU64) {
    let mut m = Mutator::new(gc).unwrap();
    let (cycles0, probes0) = (gc.cycles(), probes.load(Ordering::Relaxed));
    m.scope(|m, [s]| {
        for i in 1..=MAX_ALLOCS {
            m.alloc(s, ty).unwrap();
            if i % SAMPLE == 0 {
                seen.sample(gc);
                if done(gc, cycles0, probes, probes0) {
                    return;
                }
            }
        }
        seen.gave_up.fetch_add(1, Ordering::Relaxed);
    });
}

/// The same through the raw path: each allocation in its own pinned section (the reference
/// is dropped at once, so every point between sections is a safepoint), paying
/// `after_slow_alloc` whenever an allocation answers "slow", as the contract asks.
fn allocate_raw(gc: &Gc, ty: TypeId, seen: &Seen, probes: &AtomicU64) {
    let mut raw = RawMutator::new(gc).unwrap();
    let shape = raw.shape(ty, 0).unwrap();
    let (cycles0, probes0) = (gc.cycles(), probes.load(Ordering::Relaxed));
    for i in 1..=MAX_ALLOCS {
        let slow = raw.enter(|p| p.alloc(shape).unwrap().1).unwrap();
        if slow {
            raw.after_slow_alloc();
        }
        if i % SAMPLE == 0 {
            seen.sample(gc);
            if done(gc, cycles0, probes, probes0) {
                return;
            }
        }
    }
    seen.gave_up.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn one_p_one_allocator() {
    only_allocating(1, 1, false, false);
}

#[test]
fn one_p_one_allocator_checkmark() {
    only_allocating(1, 1, true, false);
}

#[test]
fn two_ps_two_allocators() {
    only_allocating(2, 2, false, false);
}

#[test]
fn two_ps_two_allocators_checkmark() {
    only_allocating(2, 2, true, false);
}

#[test]
fn four_ps_four_allocators() {
    only_allocating(4, 4, false, false);
}

#[test]
fn four_ps_four_allocators_checkmark() {
    only_allocating(4, 4, true, false);
}

#[test]
fn one_p_raw_allocator() {
    only_allocating(1, 1, false, true);
}

#[test]
fn four_ps_raw_allocators_checkmark() {
    only_allocating(4, 4, true, true);
}

#[test]
fn one_p_one_allocator_stop_the_world() {
    allocating_with(1, 1, true, false, true);
}

#[test]
fn four_ps_four_allocators_stop_the_world() {
    allocating_with(4, 4, true, true, true);
}
