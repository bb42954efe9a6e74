// Each section's values carry their own brand: a reference of one section is refused in
// another (here a nested one, which would also fail at run time with `NestedSection`).
use safepoint_gc::{SectionMutator, Shape};

fn misuse(m: &SectionMutator, shape: &Shape) {
    m.enter(|outer| {
        let r = outer.alloc(shape).unwrap();
        m.enter(|inner| {
            let _ = inner.get(r, shape, 0);
        })
    })
    .unwrap()
    .unwrap();
}

fn main() {}
