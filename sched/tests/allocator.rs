//! A global allocator of the program's own, with a lock, under stops of the world: found by the
//! `lang_run` fuzz target, whose child runs under AddressSanitizer. The preemption signal held a
//! goroutine in place inside the sanitizer's `malloc` while it held the allocator's lock; the
//! collector, with the world stopped, allocated and waited for that lock for ever. The handler
//! declined only inside the C library, and an allocator linked into the program is not there.
//!
//! This binary's allocator is such an allocator (a spin lock around the system's, held for a
//! few microseconds per call so that the signal lands inside it often), wrapped in
//! [`PreemptSafe`] as the crate's docs ask: goroutines allocate in loops without polling while
//! another goroutine stops the world in a loop and allocates inside every stop. Judged by
//! events: every stop completes and every worker finishes its rounds.

use safepoint_sched::{PreemptSafe, Runtime, go, stop_the_world};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The system allocator behind a spin lock that each call holds for a little while.
struct Locked {
    busy: AtomicBool,
}

impl Locked {
    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        // Acquire pairs with the Release below: the previous holder's work is done.
        while self.busy.swap(true, Ordering::Acquire) {
            std::hint::spin_loop();
        }
        // Hold the lock a little longer than the system's allocator alone would, so that the
        // signal lands inside often (but not so long that the workers are mostly in here).
        for _ in 0..20 {
            std::hint::spin_loop();
        }
        let r = f();
        self.busy.store(false, Ordering::Release);
        r
    }
}

// SAFETY: every method forwards to System under the lock, which changes nothing it returns.
unsafe impl GlobalAlloc for Locked {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        self.with(|| unsafe { System.alloc(l) })
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract, forwarded.
        self.with(|| unsafe { System.dealloc(p, l) })
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        self.with(|| unsafe { System.realloc(p, l, n) })
    }
}

#[global_allocator]
static ALLOC: PreemptSafe<Locked> = PreemptSafe(Locked { busy: AtomicBool::new(false) });

/// How long the scenario may take before it counts as hung (well under a second when idle).
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn goroutines_held_by_the_signal_never_hold_the_allocator() {
    let rt = Arc::new(Runtime::builder().procs(3).schedcheck(true).build().unwrap());
    // The result, and whether it is in: no channel, whose wait allocates and frees.
    let result = Arc::new((AtomicBool::new(false), AtomicU64::new(0)));
    let (r2, res) = (rt.clone(), result.clone());
    std::thread::spawn(move || {
        let out = r2.block_on(|| {
            let done = Arc::new(AtomicBool::new(false));
            let workers: Vec<_> = (0..3)
                .map(|i| {
                    go(move || {
                        // No poll in the loop: only the signal can stop these goroutines.
                        let mut sum = 0u64;
                        for n in 0..20_000u64 {
                            let mut v: Vec<u64> = Vec::with_capacity(4 + (n as usize + i) % 60);
                            // Some work outside the allocator too, as real code has.
                            for k in 0..v.capacity() as u64 {
                                v.push(k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ sum);
                            }
                            sum = sum.wrapping_add(
                                std::hint::black_box(v)
                                    .iter()
                                    .fold(0, |a: u64, &x| a.wrapping_add(x)),
                            );
                        }
                        sum
                    })
                })
                .collect();
            let stops = Arc::new(AtomicU64::new(0));
            let stopper = {
                let (done, stops) = (done.clone(), stops.clone());
                go(move || {
                    while !done.load(Ordering::Relaxed) {
                        let w = stop_the_world("allocating stop");
                        // What a collector does with the world stopped: allocate.
                        let v: Vec<u8> = Vec::with_capacity(256);
                        std::hint::black_box(v);
                        drop(w);
                        stops.fetch_add(1, Ordering::Relaxed);
                        // Give the workers their Ps back before the next stop.
                        safepoint_sched::yield_now();
                    }
                })
            };
            for w in workers {
                w.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
            stopper.join().unwrap();
            stops.load(Ordering::Relaxed)
        });
        res.1.store(out, Ordering::Relaxed);
        // Release pairs with the Acquire below.
        res.0.store(true, Ordering::Release);
    });
    let start = std::time::Instant::now();
    while !result.0.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(5));
        if start.elapsed() > DEADLINE {
            // A goroutine may be holding the allocator's lock: nothing here may allocate (a
            // dump, a panic's payload), so say it with a plain write and abort.
            use std::io::Write;
            use std::os::fd::FromRawFd;
            // SAFETY: fd 2 is open for the whole test; the File is forgotten, never closed.
            let mut err = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(2) });
            let _ = err.write_all(b"no progress within the deadline: a stop waits for a lock\n");
            std::process::abort();
        }
    }
    assert!(result.1.load(Ordering::Relaxed) > 0, "no stop completed");
    // The workers never poll, so every stop needed the signal: this checks the handler's
    // decisions, not a run in which nobody was interrupted.
    let stats = rt.stats();
    assert!(stats.preempt_signals > 0, "{stats:?}");
}
