//! Workloads of the `stress` tool, one module per subsystem.
//!
//! Every workload prints one readable line and then, last, one JSON line with its figures, so a
//! person reads the first and a script (see `peers/compare`) parses the second.

pub mod gc;
pub mod gc_compiled;
pub mod gc_section;
pub mod gpause;
pub mod plot;
pub mod refchan;
pub mod report;
pub mod sched;
pub mod soak;
pub mod stackmap;
pub mod sync;
pub mod weak;
