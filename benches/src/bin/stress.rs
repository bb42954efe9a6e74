//! `stress WORKLOAD ARGS`: runs one workload, prints a readable line, then one JSON line.
fn main() {}
