//! # safepoint-gc: the collector
//!
//! Not built yet: the heap, the embedding API and the collector come with the heap issue
//! (stop-the-world marking) and the concurrent-collection issue. This crate exists so the
//! workspace has its final shape and the dependency direction `sched <- gc <- safepoint` is fixed
//! from the start.
