// A branded reference cannot be pushed into a `Vec` declared outside the section.
use safepoint_gc::{SectionMutator, Shape};

fn misuse(m: &SectionMutator, shape: &Shape) {
    let mut kept = Vec::new();
    m.enter(|s| {
        kept.push(s.alloc(shape).unwrap());
    })
    .unwrap();
    drop(kept);
}

fn main() {}
