// A section cannot return a branded reference: the closure must work for every section
// lifetime, so its result type cannot name one.
use safepoint_gc::{SectionMutator, Shape};

fn misuse(m: &SectionMutator, shape: &Shape) {
    let r = m.enter(|s| s.alloc(shape).unwrap()).unwrap();
    let _ = r;
}

fn main() {}
