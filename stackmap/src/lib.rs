//! # safepoint-stackmap: managed stacks with precise stack maps
//!
//! (Being built: see issue "Managed stacks with precise stack maps".)
