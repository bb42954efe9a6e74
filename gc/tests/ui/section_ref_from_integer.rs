// A reference cannot be made from an integer: `Ref` and `Value` have private fields and no
// constructor that takes a word.
use std::marker::PhantomData;

use safepoint_gc::Ref;

fn forge<'s>() -> Ref<'s> {
    Ref { bits: 0x1000, _brand: PhantomData }
}

fn main() {
    let _ = forge();
}
