//! A compiled-code embedding: the code's frames live on the goroutine's managed stack and are
//! described by stack maps registered with the runtime (what a compiler emits), and the heap
//! is reached through the trusted `RawMutator` path in short pinned sections. The collector
//! scans the frames precisely: a slot is a root only at the safepoints whose map names it.
//! Runs in well under a second.
//!
//!     cargo run -p safepoint-gc --example compiled

use std::sync::Arc;

use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
use safepoint_sched::{Runtime, with_managed_stack};
use safepoint_stackmap::{FuncDesc, Registry};

/// Cells in the list.
const N: usize = 20_000;

// The frame of `build_and_sum`: slot 0 `list`, slot 1 `scratch`.
const LIST: usize = 0;
const SCRATCH: usize = 1;
// Its safepoints: 0 on entry (nothing live), 1 in the loop (`list` live; `scratch` is dead
// there, so whatever it holds is not a root).
const SP_ENTRY: u32 = 0;
const SP_LOOP: u32 = 1;

// The cell's words: the value (raw: never scanned) and the next cell (a reference).
const VALUE: usize = 0;
const NEXT: usize = 1;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // What a compiler registers once per function: slots, arguments, safepoints, and the
    // reference slots live at each safepoint.
    let reg = Arc::new(Registry::new());
    let func =
        reg.register(FuncDesc::new("build_and_sum", 2, 0, 2).refs_at(SP_LOOP as usize, &[LIST]))?;
    // The runtime gets the registry: the collector walks frames with it, and goroutine
    // panics carry tracebacks of the managed frames.
    let rt = Runtime::builder().procs(2).registry(reg).build()?;
    let gc = Gc::new(&rt)?;
    let cell = gc.types().register(TypeDesc::Record {
        name: "cell".into(),
        words: vec![WordKind::Raw, WordKind::Ref],
    })?;

    let g = gc.clone();
    let sum = rt.block_on(move || -> Result<usize, safepoint_gc::GcError> {
        let mut raw = RawMutator::new(&g)?;
        // The shape (size and header) is computed once: allocation looks nothing up.
        let shape = raw.shape(cell, 0)?;
        // The call: push the frame (a safepoint: the stack may grow or the goroutine stop).
        with_managed_stack(|ms| {
            ms.push(func);
            ms.set_safepoint(SP_ENTRY);
        });
        for i in 1..=N {
            // One "instruction" per pinned section: nothing can stop the goroutine inside, so
            // `c` and `head` may sit in Rust variables (registers) until it ends.
            let slow = raw.enter(|p| {
                let ms = p.stack();
                let (c, slow) = p.alloc(shape).expect("allocation");
                let head = ms.get(LIST);
                // SAFETY: `c` was allocated in this section and has two body words; `head`
                // is null or a live cell, read from a slot the map keeps alive.
                unsafe {
                    p.init_word(c, VALUE, WordKind::Raw, i);
                    p.init_word(c, NEXT, WordKind::Ref, head);
                }
                // SAFETY: `c` is a live cell of this heap (allocated in this section), and
                // both are reference slots of the top frame.
                unsafe {
                    ms.set(LIST, c);
                    ms.set(SCRATCH, c); // dead at SP_LOOP: not a root, whatever it holds
                }
                // Before leaving the section, say which map describes the frame now.
                ms.set_safepoint(SP_LOOP);
                slow
            })?;
            if slow {
                // The allocation's slow path owes a safepoint (pacing, assists, stops).
                raw.after_slow_alloc();
            }
            if i % 5_000 == 0 {
                // A full cycle at a safepoint: the list survives through slot 0 alone.
                g.collect();
            }
        }
        let sum = raw.enter(|p| {
            let mut c = p.stack().get(LIST);
            let mut sum = 0;
            while c != 0 {
                // SAFETY: `c` is a live cell (reached from a root in this section).
                unsafe {
                    sum += p.word(c, VALUE);
                    c = p.word(c, NEXT);
                }
            }
            sum
        })?;
        with_managed_stack(|ms| ms.pop()); // the return
        Ok(sum)
    })?;
    println!("sum of {N} cells after {} collections: {sum}", gc.cycles());
    assert_eq!(sum, N * (N + 1) / 2);
    Ok(())
}
