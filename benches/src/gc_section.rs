//! `binary-trees-section N`: binary-trees written as compiled code would be written against
//! the collector's safe branded sections ([`SectionMutator`]): every call of the tree
//! builder and of the walk pushes a section frame (the push is the call's safepoint: it
//! polls for preemption and stops), runs its heap code in one section of its own (every
//! field access checked against the node's shape), and pays an allocation's slow path at the
//! section's end. It is the safe twin of `binary-trees-compiled` ([`crate::gc_compiled`],
//! the trusted `RawMutator` path, per call): same tree, same calls, same frames per call;
//! the differences are what safety costs: each slot and field access checks its frame or
//! the node's header, and the walk keeps a node's right child in its frame's slot while it
//! walks the left one (the raw twin passes both as values across the calls, which safe code
//! cannot: a value does not survive its section).

use safepoint::gc::{Gc, GcError, SectionMutator, Shape, TypeDesc, WordKind};
use safepoint::sched::{Runtime, go};

use crate::gc::{GcRun, Meter};

const LEFT: usize = 0;
const RIGHT: usize = 1;

/// Builds a tree of depth `d` into slot `dst` of the caller's frame: a frame `[l, r]`, the
/// children built into it, then one section that allocates the node and returns it.
fn build(m: &mut SectionMutator, node: &Shape, d: u32, dst: usize) {
    ok(m.push_frame(2), "push");
    if d > 0 {
        build(m, node, d - 1, LEFT);
        build(m, node, d - 1, RIGHT);
    }
    ok(
        m.enter(|s| {
            let n = if d > 0 {
                let [l, r] = ok(s.slots(), "slots");
                ok(s.alloc_init(node, &[l, r]), "alloc")
            } else {
                ok(s.alloc(node), "alloc")
            };
            ok(s.pop_frame(), "return");
            ok(s.set_slot(dst, n.value()), "set slot");
        }),
        "build",
    );
}

/// The value of an operation that succeeds in this program, or a panic naming it. Compiled
/// code branches to its runtime's error path the same way, where an operation fails: the
/// error travels no further than the call that made it (a `Result` carried out of a section
/// is a `GcError`'s size, copied at every layer, and costs more than the checks).
#[inline(always)]
fn ok<T>(r: Result<T, GcError>, what: &'static str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => failed(what, e),
    }
}

#[cold]
#[inline(never)]
fn failed(what: &str, e: GcError) -> ! {
    panic!("{what}: {e}")
}

/// Counts the nodes of the tree in slot 0 of the top frame (a `[t, r]` walk frame, or a root
/// frame whose slot 0 holds the tree). One section per call: it reads the node (both children
/// with one check of its header, as compiled code loads the fields it needs after one type
/// test: [`Section::fields`](safepoint::gc::Section::fields)), keeps its
/// right child in slot 1 and, when the push needs no safepoint, pushes the left child's
/// frame with the child as its argument (a call's fast path); otherwise the left child goes
/// into slot 0 (the node is needed no more) and the call takes the slow push outside.
fn walk(m: &mut SectionMutator, node: &Shape) -> i64 {
    enum Step {
        Leaf,
        Called,
        Slow,
    }
    let step = ok(
        m.enter(|s| {
            let t = s.as_ref(ok(s.slot(0), "slot")).expect("a node");
            let [l, r] = ok(s.fields(t, node, LEFT), "fields");
            if l.is_nil() {
                return Step::Leaf;
            }
            ok(s.set_slot(1, r), "set slot");
            if ok(s.push_frame_with(2, &[l]), "call") {
                return Step::Called;
            }
            ok(s.set_slot(0, l), "set slot");
            Step::Slow
        }),
        "walk",
    );
    let called = match step {
        Step::Leaf => return 1,
        Step::Called => true,
        Step::Slow => false,
    };
    if !called {
        ok(m.push_frame_args(2, &[0]), "call");
    }
    let mut n = 1 + walk(m, node);
    ok(m.pop_frame(), "return");
    ok(m.push_frame_args(2, &[1]), "call");
    n += walk(m, node);
    ok(m.pop_frame(), "return");
    n
}

/// Builds a tree of depth `d` into a fresh root frame, returns its walk, pops.
fn build_and_walk(m: &mut SectionMutator, node: &Shape, d: u32) -> i64 {
    ok(m.push_frame(2), "push");
    build(m, node, d, 0);
    let c = walk(m, node);
    ok(m.pop_frame(), "pop");
    c
}

/// `binary-trees n` through sections: the canonical lines and the figures.
pub fn binary_trees(n: u32) -> (Vec<String>, GcRun) {
    let rt = Runtime::builder().build().expect("runtime");
    let gc = Gc::new(&rt).unwrap_or_else(|e| panic!("gc: {e}"));
    let ty = gc
        .types()
        .register(TypeDesc::Record {
            name: "bt.node".into(),
            words: vec![WordKind::Ref, WordKind::Ref],
        })
        .unwrap_or_else(|e| panic!("register: {e}"));
    let node = Shape::new(&gc, ty, 0).unwrap_or_else(|e| panic!("shape: {e}"));
    rt.block_on(move || {
        let meter = Meter::start(&gc);
        const MIN_DEPTH: u32 = 4;
        let max_depth = (MIN_DEPTH + 2).max(n);
        let stretch = max_depth + 1;
        let mut m = SectionMutator::new(&gc).unwrap_or_else(|e| panic!("mutator: {e}"));
        let mut lines = Vec::new();
        let c = build_and_walk(&mut m, &node, stretch);
        lines.push(format!("stretch tree of depth {stretch}\t check: {c}"));
        m.push_frame(2).unwrap_or_else(|e| panic!("push: {e}"));
        build(&mut m, &node, max_depth, 0);
        let workers: Vec<_> = (MIN_DEPTH..=max_depth)
            .step_by(2)
            .map(|d| {
                let gc = gc.clone();
                go(move || {
                    let mut m = SectionMutator::new(&gc).unwrap_or_else(|e| panic!("mutator: {e}"));
                    let iters = 1u64 << (max_depth - d + MIN_DEPTH);
                    let chk: i64 = (0..iters).map(|_| build_and_walk(&mut m, &node, d)).sum();
                    format!("{iters}\t trees of depth {d}\t check: {chk}")
                })
            })
            .collect();
        for w in workers {
            lines.push(w.join().expect("binary-trees worker"));
        }
        let c = walk(&mut m, &node);
        lines.push(format!("long lived tree of depth {max_depth}\t check: {c}"));
        m.pop_frame().unwrap_or_else(|e| panic!("pop: {e}"));
        drop(m);
        (lines, meter.finish(&gc))
    })
}
