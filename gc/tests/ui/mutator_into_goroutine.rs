// A mutator is bound to its goroutine: it cannot be moved into another.
use safepoint_gc::Mutator;

fn misuse(mut m: Mutator) {
    safepoint_sched::go(move || {
        m.collect();
    });
}

fn main() {}
