//! # safepoint
//!
//! A concurrent, non-moving mark-sweep garbage collector that scans goroutine stacks precisely,
//! on its own preemptible M:N goroutine scheduler, for interpreters to embed.
//!
//! This facade re-exports the parts:
//! * [`arch`]: context switch, goroutine stacks, notes, signals, clocks;
//! * [`stackmap`]: managed stacks and their precise maps;
//! * [`sched`]: goroutines, Ms and Ps, preemption, stop-the-world, the ragged barrier;
//! * [`gc`]: the heap and the collector.

pub use safepoint_arch as arch;
pub use safepoint_gc as gc;
pub use safepoint_sched as sched;
pub use safepoint_stackmap as stackmap;
