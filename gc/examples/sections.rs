//! Safe compiled-style code: binary trees built and walked through branded sections
//! (`SectionMutator`). Each call of the builder pushes a section frame (its registers, roots
//! for the collector; the push is the call's safepoint), runs its heap code in one section,
//! and returns its node into the caller's frame. Inside a section, references are Rust values
//! branded with the section's lifetime, so the compiler refuses any that would outlive it;
//! every field access is checked against the node's shape (its header and word kinds); there
//! is no `unsafe` here. Four goroutines build trees at once while the collector runs. Runs in
//! about a second.
//!
//!     cargo run -p safepoint-gc --example sections

use safepoint_gc::{Gc, GcError, SectionMutator, Shape, TypeDesc, Value, WordKind};
use safepoint_sched::{Runtime, go};

// A node's words: its children (references; null in a leaf) and its depth (a tagged integer).
const LEFT: usize = 0;
const RIGHT: usize = 1;
const DEPTH: usize = 2;

/// Builds a tree of depth `d` into slot `dst` of the caller's frame.
fn build(m: &mut SectionMutator, node: &Shape, d: i64, dst: usize) -> Result<(), GcError> {
    // The call: a frame of two slots for the children (a safepoint: the goroutine may stop
    // here, and the collector scan its frames).
    m.push_frame(2)?;
    if d > 0 {
        build(m, node, d - 1, LEFT)?;
        build(m, node, d - 1, RIGHT)?;
    }
    // One section: allocate the node with its children and depth, return it.
    m.enter(|s| {
        let (l, r) = (s.slot(LEFT)?, s.slot(RIGHT)?);
        let n = s.alloc_init(node, &[l, r, s.int(d)?])?;
        s.pop_frame()?; // the return...
        s.set_slot(dst, n.value()) // ...into the caller's slot
    })?
}

/// The sum of the depths of the nodes of the tree in slot 0 of the top frame, walked in one
/// section (nothing can stop the goroutine inside one, so the walk needs no frames).
fn sum_depths(m: &SectionMutator, node: &Shape) -> Result<i64, GcError> {
    m.enter(|s| {
        let mut sum = 0;
        let mut todo = vec![s.slot(0)?]; // a Vec of branded values, inside the section
        while let Some(v) = todo.pop() {
            let Some(n) = s.as_ref(v) else { continue };
            sum += s.as_int(s.get(n, node, DEPTH)?).expect("a depth");
            todo.push(s.get(n, node, LEFT)?);
            todo.push(s.get(n, node, RIGHT)?);
        }
        Ok(sum)
    })?
}

/// The sum of the depths in a complete tree of depth `d`: `2^(d-k)` nodes of depth `k`.
fn expected(d: i64) -> i64 {
    (0..=d).map(|k| k << (d - k)).sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // No function registry is needed: section frames are all roots.
    let rt = Runtime::builder().procs(2).build()?;
    let gc = Gc::new(&rt)?;
    let ty = gc.types().register(TypeDesc::Record {
        name: "node".into(),
        words: vec![WordKind::Ref, WordKind::Ref, WordKind::Tagged],
    })?;
    // The shape (size, header, word kinds) is computed once; every access checks against it.
    let node = Shape::new(&gc, ty, 0)?;

    let g = gc.clone();
    let total = rt.block_on(move || -> Result<i64, GcError> {
        let mut m = SectionMutator::new(&g)?;
        // A long-lived tree, kept in a root frame's slot while the workers churn.
        m.push_frame(1)?;
        build(&mut m, &node, 14, 0)?;
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                go(move || -> Result<i64, GcError> {
                    let mut m = SectionMutator::new(&g)?;
                    m.push_frame(1)?;
                    let mut sum = 0;
                    for _ in 0..16 {
                        build(&mut m, &node, 10, 0)?;
                        sum += sum_depths(&m, &node)?;
                        m.poll(); // the loop's back-edge
                    }
                    m.pop_frame()?;
                    Ok(sum)
                })
            })
            .collect();
        let mut total = 0;
        for w in workers {
            total += w.join().expect("a worker")?;
        }
        g.collect(); // the long-lived tree survives through its slot alone
        total += sum_depths(&m, &node)?;
        m.enter(|s| s.set_slot(0, Value::nil()))??; // drop it
        m.pop_frame()?;
        Ok(total)
    })?;
    println!("sum of depths: {total} after {} collections", gc.cycles());
    assert_eq!(total, 4 * 16 * expected(10) + expected(14));
    Ok(())
}
