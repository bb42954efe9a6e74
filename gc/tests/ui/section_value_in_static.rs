// A branded value cannot be stored in a `static` (here a thread-local one, which asks for no
// `Sync`): it would need the section's lifetime to be `'static`.
use std::cell::Cell;

use safepoint_gc::{SectionMutator, Value};

thread_local! {
    static KEPT: Cell<Option<Value<'static>>> = const { Cell::new(None) };
}

fn misuse(m: &SectionMutator) {
    m.enter(|s| {
        let v = s.int(1).unwrap();
        KEPT.with(|k| k.set(Some(v)));
    })
    .unwrap();
}

fn main() {}
