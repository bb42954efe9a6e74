// A byte-array view held across a store (a store can reach a safepoint, and may drop the
// last reference to the array).
use safepoint_gc::Mutator;

fn misuse(m: &mut Mutator) {
    m.scope(|m, [obj, b]| {
        let view = m.bytes(b).unwrap();
        m.store(obj, 0, b).unwrap();
        let _ = view.to_vec();
    });
}

fn main() {}
