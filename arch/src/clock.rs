//! Monotonic clock and spin helpers.

/// Nanoseconds on the monotonic clock (`CLOCK_MONOTONIC`, served by the vDSO: no system call).
///
/// Only differences between two readings mean anything.
///
/// ```
/// let t0 = safepoint_arch::nanotime();
/// std::thread::sleep(std::time::Duration::from_millis(1));
/// assert!(safepoint_arch::nanotime() - t0 >= 1_000_000);
/// ```
#[inline]
pub fn nanotime() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Tells the processor that this is a spin-wait loop: it saves power and lets a sibling
/// hardware thread run. Call it once per iteration of a busy wait.
///
/// `pause` on x86_64. On aarch64 the standard library emits `isb`, not `yield`: on the cores
/// Linux servers run (Neoverse, Graviton) `yield` is a no-op that returns at once, so a spin
/// loop built on it hammers the contended line, while `isb` stalls for tens of cycles, which is
/// closer to what `pause` does.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// let flag = AtomicBool::new(true);
/// while !flag.load(Ordering::Relaxed) {
///     safepoint_arch::cpu_relax(); // a spin loop's pause
/// }
/// ```
#[inline]
pub fn cpu_relax() {
    core::hint::spin_loop();
}

/// Gives the rest of this thread's time slice to another runnable thread (`sched_yield`).
///
/// ```
/// let t0 = safepoint_arch::nanotime();
/// safepoint_arch::os_yield(); // lets another thread of this CPU run
/// assert!(safepoint_arch::nanotime() >= t0);
/// ```
pub fn os_yield() {
    // SAFETY: sched_yield takes no arguments and cannot fail in a way that matters here.
    unsafe {
        libc::sched_yield();
    }
}
