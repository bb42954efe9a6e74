//! # safepoint-sched
