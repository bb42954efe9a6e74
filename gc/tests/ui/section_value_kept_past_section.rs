// A reference branded by a section cannot be kept in a variable that outlives the section:
// after the section, nothing keeps its object from being freed.
use safepoint_gc::{SectionMutator, Shape};

fn misuse(m: &SectionMutator, shape: &Shape) {
    let mut kept = None;
    m.enter(|s| {
        kept = Some(s.alloc(shape).unwrap());
    })
    .unwrap();
    m.enter(|s| {
        let _ = s.get(kept.unwrap(), shape, 0);
    })
    .unwrap();
}

fn main() {}
