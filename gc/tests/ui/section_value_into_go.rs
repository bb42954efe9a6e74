// A branded reference cannot move into another goroutine: `go` wants a `'static`, `Send`
// closure, and a section's values are neither (the compiler reports the first bound).
use safepoint_gc::{SectionMutator, Shape};

fn misuse(m: &SectionMutator, shape: &Shape) {
    m.enter(|s| {
        let r = s.alloc(shape).unwrap();
        safepoint_sched::go(move || {
            std::hint::black_box(r);
        });
    })
    .unwrap();
}

fn main() {}
