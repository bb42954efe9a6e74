//! The one place the scheduler's protocol atomics come from.
//!
//! Under `--cfg loom` they are loom's model-checked atomics, so the status-word and barrier
//! protocols in [`crate::status`] are checked by `cargo test --cfg loom` (`loom_*` tests) with the
//! very code the runtime runs; otherwise they are `core`'s.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(loom)]
pub(crate) fn spin_hint() {
    loom::thread::yield_now();
}

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(not(loom))]
#[inline]
pub(crate) fn spin_hint() {
    safepoint_arch::cpu_relax();
}
