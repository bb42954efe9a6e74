// A slot names a word of its goroutine's managed stack: it cannot be sent to another.
use safepoint_gc::{Gc, Mutator};

fn misuse(m: &mut Mutator, gc: Gc) {
    m.scope(|_, [s]| {
        safepoint_sched::go(move || {
            let mut other = Mutator::new(&gc).unwrap();
            other.clear(s).unwrap();
        });
    });
}

fn main() {}
