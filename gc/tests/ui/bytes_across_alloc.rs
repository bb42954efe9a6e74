// A byte-array view held across an allocation: the allocation may collect and free what the
// view shows.
use safepoint_gc::{Mutator, TypeId};

fn misuse(m: &mut Mutator, t: TypeId) {
    m.scope(|m, [b, other]| {
        let view = m.bytes(b).unwrap();
        m.alloc(other, t).unwrap();
        assert_eq!(view.len(), 3);
    });
}

fn main() {}
