// A byte-array view held across a collection.
use safepoint_gc::Mutator;

fn misuse(m: &mut Mutator) {
    m.scope(|m, [b]| {
        let view = m.bytes(b).unwrap();
        m.clear(b).unwrap();
        m.collect();
        let _ = view.get(0);
    });
}

fn main() {}
