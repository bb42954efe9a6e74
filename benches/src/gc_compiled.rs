//! The GC workloads written as compiled code would run them: every function that holds
//! references has a managed-stack frame described by stack maps registered with the runtime
//! (as a compiler emits them), references are read and written through the collector's
//! trusted [`RawMutator`] path in short pinned sections, and an allocation's slow path is
//! paid for at the next safepoint. This is how an interpreter or a compiler embeds the
//! collector (Pebble, in `lang/`, works the same way), and it is the fair twin of the Go
//! peer, whose compiler does the same. The [`Mutator`](safepoint::gc::Mutator) versions in
//! [`crate::gc`] measure the checked API instead (`binary-trees-checked` and so on).
//!
//! The workloads, their shapes and their outputs are those of [`crate::gc`]; only how the
//! program holds its references differs. Each comes in two granularities:
//!
//! * **Per call** (`binary-trees-compiled`, `gcbench-compiled`, `churn-compiled`): what a
//!   compiler targeting safepoint emits. Every call of `build`, `walk` and `populate`, leaves
//!   included, pushes a managed-stack frame (the push is the call's safepoint: it polls for
//!   preemption and stops), runs its heap code in a pinned section of its own, and pays an
//!   allocation's slow path at its next safepoint; a loop polls at every back-edge.
//! * **Batched** (the same names with `-batched`): a subtree of at most [`BUILD_DEPTH`]
//!   levels is built or grown, and one of at most [`PIN_DEPTH`] levels walked, in one pinned
//!   section, its references held in locals with no frame and no poll; above that, every
//!   level is a function with a frame. Faster, and not what compiled code does: kept to show
//!   what batching buys, labelled as such.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use safepoint::gc::{Gc, Pin, RawMutator, Shape, TypeDesc, TypeId, WordKind};
use safepoint::sched::{Runtime, go};
use safepoint::stackmap::{FuncDesc, FuncId, ManagedStack, Registry};

use crate::gc::{
    CHURN_LONG_DEPTH, CHURN_LONG_TREES, CHURN_TREE_DEPTH, CHURN_TREES, GB_ARRAY_SIZE,
    GB_LONG_LIVED_DEPTH, GB_MAX_DEPTH, GB_MIN_DEPTH, GB_STRETCH_DEPTH, GcRun, Meter,
    ch_sum_formula, churn_verdict, gb_num_iters,
};

const LEFT: usize = 0;
const RIGHT: usize = 1;
const VALUE: usize = 2;

/// Subtrees at most this deep are walked in one pinned section (at most 2^11 nodes).
pub const PIN_DEPTH: u32 = 10;

/// Subtrees at most this deep are built or grown in one pinned section (at most 2^7 nodes):
/// fewer than are walked, as building takes longer per node (allocation, refills, assists).
/// With 10 levels, as walked, binary-trees 21's p99 pause rose to 247 µs.
pub const BUILD_DEPTH: u32 = 6;

/// The functions' stack maps.
#[derive(Clone, Copy)]
struct Funcs {
    /// A caller's frame with one slot: safepoint 0 nothing, 1 the slot.
    root: FuncId,
    /// `build`: slots `[l, r]`; safepoint 0 nothing live, 1 `l`, 2 `l` and `r`.
    build: FuncId,
    /// `walk`: slot `[t]` (its argument) live throughout.
    walk: FuncId,
    /// `populate`: slots `[n, l, r]`; safepoint 0 `n`, 1 all three.
    populate: FuncId,
}

fn registry() -> (Arc<Registry>, Funcs) {
    let reg = Arc::new(Registry::new());
    let r = |d: FuncDesc| reg.register(d).unwrap_or_else(|e| panic!("register: {e}"));
    let f = Funcs {
        root: r(FuncDesc::new("root", 1, 0, 2).refs_at(1, &[0])),
        build: r(FuncDesc::new("build", 2, 0, 3).refs_at(1, &[0]).refs_at(2, &[0, 1])),
        walk: r(FuncDesc::new("walk", 1, 1, 1).refs_at(0, &[0])),
        populate: r(FuncDesc::new("populate", 3, 1, 2).refs_at(0, &[0]).refs_at(1, &[0, 1, 2])),
    };
    (reg, f)
}

fn setup() -> (Runtime, Gc, Funcs) {
    let (reg, f) = registry();
    let rt = Runtime::builder().registry(reg).build().expect("runtime");
    let gc = Gc::new(&rt).unwrap_or_else(|e| panic!("gc: {e}"));
    (rt, gc, f)
}

/// One goroutine's compiled-code context.
struct Cx {
    raw: RawMutator,
    f: Funcs,
    node: Shape,
    /// Whether nodes carry a value word.
    valued: bool,
    /// Build and walk small subtrees inside one section (the batched twins).
    batch: bool,
}

impl Cx {
    fn new(gc: &Gc, f: Funcs, ty: TypeId, valued: bool, batch: bool) -> Cx {
        let raw = RawMutator::new(gc).unwrap_or_else(|e| panic!("raw mutator: {e}"));
        let node = raw.shape(ty, 0).unwrap_or_else(|e| panic!("shape: {e}"));
        Cx { raw, f, node, valued, batch }
    }

    /// A pinned section.
    #[inline]
    fn pin<R>(&mut self, f: impl FnOnce(&mut Pin<'_>) -> R) -> R {
        self.raw.enter(f).unwrap_or_else(|e| panic!("pinned section: {e}"))
    }

    /// The goroutine's managed stack, outside a section (pushes there are safepoints).
    #[inline]
    fn stack<R>(&self, f: impl FnOnce(&ManagedStack) -> R) -> R {
        safepoint::sched::with_managed_stack(f)
    }

    /// Allocates a node in the section; `true` if the slow path is owed.
    #[inline]
    fn alloc(node: Shape, p: &mut Pin<'_>) -> (usize, bool) {
        p.alloc(node).unwrap_or_else(|e| panic!("allocation: {e}"))
    }

    /// Builds a tree of depth `d` (children first) into slot `dst` of the top frame, then
    /// moves that frame to safepoint `after` (whose map includes `dst`).
    fn build(&mut self, d: u32, dst: usize, after: u32) {
        let (node, valued) = (self.node, self.valued);
        if self.batch && d <= BUILD_DEPTH {
            let slow = self.pin(|p| {
                let mut slow = false;
                let n = build_pinned(p, node, valued, d, &mut slow);
                let ms = p.stack();
                // SAFETY: a live node of this heap (allocated here, or held by our frame), in a slot the frame's maps name a reference.
                unsafe { ms.set(dst, n) };
                ms.set_safepoint(after);
                slow
            });
            if slow {
                self.raw.after_slow_alloc();
            }
            return;
        }
        let build = self.f.build;
        self.stack(|ms| ms.push(build));
        if d > 0 {
            self.build(d - 1, 0, 1);
            self.build(d - 1, 1, 2);
        }
        let slow = self.pin(|p| {
            let ms = p.stack();
            let (n, slow) = Self::alloc(node, p);
            // SAFETY: a fresh node; `l` and `r` are live nodes from this frame's slots (a
            // leaf's children stay null).
            unsafe {
                if d > 0 {
                    let (l, r) = (ms.get(0), ms.get(1));
                    p.init_word(n, LEFT, WordKind::Ref, l);
                    p.init_word(n, RIGHT, WordKind::Ref, r);
                }
                if valued {
                    p.init_word(n, VALUE, WordKind::Raw, if d == 0 { 1 } else { d as usize });
                }
            }
            ms.pop();
            // SAFETY: a live node of this heap (allocated here, or held by our frame), in a slot the frame's maps name a reference.
            unsafe { ms.set(dst, n) };
            ms.set_safepoint(after);
            slow
        });
        if slow {
            self.raw.after_slow_alloc();
        }
    }

    /// Counts the nodes (or sums the values) of the tree of depth `d` in slot 0 of the top
    /// frame (a `walk` or `root` frame holding it live).
    fn walk(&mut self, d: u32) -> i64 {
        let valued = self.valued;
        if self.batch && d <= PIN_DEPTH {
            return self.pin(|p| {
                let t = p.stack().get(0);
                walk_pinned(p, t, valued)
            });
        }
        let (v, l, r) = self.pin(|p| {
            let t = p.stack().get(0);
            // SAFETY: `t` is a live node (slot 0 of our frame).
            unsafe {
                let v = if valued { p.word(t, VALUE) as i64 } else { 1 };
                (v, p.word(t, LEFT), p.word(t, RIGHT))
            }
        });
        if l == 0 {
            return v;
        }
        let walk = self.f.walk;
        let mut s = v;
        for c in [l, r] {
            // `c` stays reachable through the node in our slot 0 (trees are not changed while
            // walked), so it may cross the push, a safepoint.
            // SAFETY: a live node of this heap (allocated here, or held by our frame), in a slot the frame's maps name a reference.
            self.stack(|ms| unsafe { ms.push_with_args(walk, &[c]) });
            s += self.walk(d - 1);
            self.stack(|ms| ms.pop());
        }
        s
    }

    /// Grows a tree of depth `d` top-down under the node in slot 0 of the top frame (a
    /// `populate` frame): both children allocated and linked, then each grown.
    fn populate(&mut self, d: u32) {
        if d == 0 {
            return;
        }
        let node = self.node;
        if self.batch && d <= BUILD_DEPTH {
            let slow = self.pin(|p| {
                let mut slow = false;
                let n = p.stack().get(0);
                populate_pinned(p, node, n, d, false, &mut slow);
                slow
            });
            if slow {
                self.raw.after_slow_alloc();
            }
            return;
        }
        let slow = self.pin(|p| {
            let (l, s1) = Self::alloc(node, p);
            let (r, s2) = Self::alloc(node, p);
            let ms = p.stack();
            let n = ms.get(0);
            // SAFETY: `n` is a live node (our slot 0); `l` and `r` fresh ones.
            unsafe {
                p.set_word(n, LEFT, WordKind::Ref, l);
                p.set_word(n, RIGHT, WordKind::Ref, r);
            }
            // SAFETY: a live node of this heap (allocated here, or held by our frame), in a slot the frame's maps name a reference.
            unsafe { ms.set(1, l) };
            // SAFETY: a live node of this heap (allocated here, or held by our frame), in a slot the frame's maps name a reference.
            unsafe { ms.set(2, r) };
            ms.set_safepoint(1);
            s1 | s2
        });
        if slow {
            self.raw.after_slow_alloc();
        }
        let populate = self.f.populate;
        for i in [1, 2] {
            let c = self.stack(|ms| ms.get(i));
            // `c` is in our slot `i`, live at safepoint 1: it may cross the push.
            // SAFETY: a live node of this heap (allocated here, or held by our frame), in a slot the frame's maps name a reference.
            self.stack(|ms| unsafe { ms.push_with_args(populate, &[c]) });
            self.populate(d - 1);
            self.stack(|ms| ms.pop());
        }
    }

    /// Builds a tree of depth `d` into a fresh `root` frame, returns its walk, pops.
    fn build_and_walk(&mut self, d: u32) -> i64 {
        let root = self.f.root;
        self.stack(|ms| ms.push(root));
        self.build(d, 0, 1);
        let s = self.walk(d);
        self.stack(|ms| ms.pop());
        s
    }
}

/// A whole subtree of depth `d`, built bottom-up in one section (the nodes' references held
/// in registers and locals, as compiled code holds them between safepoints): its root. Sets
/// `slow` if an allocation took a slow path.
fn build_pinned(p: &mut Pin<'_>, node: Shape, valued: bool, d: u32, slow: &mut bool) -> usize {
    let (l, r) = if d == 0 {
        (0, 0)
    } else {
        (build_pinned(p, node, valued, d - 1, slow), build_pinned(p, node, valued, d - 1, slow))
    };
    let (n, s) = Cx::alloc(node, p);
    *slow |= s;
    // SAFETY: a fresh node; `l` and `r` are nodes allocated in this section.
    unsafe {
        if d > 0 {
            p.init_link(n, LEFT, WordKind::Ref, l);
            p.init_link(n, RIGHT, WordKind::Ref, r);
        }
        if valued {
            p.init_word(n, VALUE, WordKind::Raw, if d == 0 { 1 } else { d as usize });
        }
    }
    n
}

/// Grows a tree of depth `d` top-down under the node `n`, in one section. `fresh`: `n` was
/// allocated in this section (and its children words not stored yet).
fn populate_pinned(p: &mut Pin<'_>, node: Shape, n: usize, d: u32, fresh: bool, slow: &mut bool) {
    if d == 0 {
        return;
    }
    let (l, s1) = Cx::alloc(node, p);
    let (r, s2) = Cx::alloc(node, p);
    *slow |= s1 | s2;
    // SAFETY: `n` is a live node: the caller's slot, or (`fresh`) a node allocated in this
    // section whose children words are still null; `l` and `r` are fresh ones.
    unsafe {
        if fresh {
            p.init_link(n, LEFT, WordKind::Ref, l);
            p.init_link(n, RIGHT, WordKind::Ref, r);
        } else {
            p.set_word(n, LEFT, WordKind::Ref, l);
            p.set_word(n, RIGHT, WordKind::Ref, r);
        }
    }
    populate_pinned(p, node, l, d - 1, true, slow);
    populate_pinned(p, node, r, d - 1, true, slow);
}

/// The walk of a whole subtree, in one section.
fn walk_pinned(p: &Pin<'_>, t: usize, valued: bool) -> i64 {
    // SAFETY: `t` is a live node, reached from a slot through nodes nobody changes.
    let (v, l, r) = unsafe {
        (if valued { p.word(t, VALUE) as i64 } else { 1 }, p.word(t, LEFT), p.word(t, RIGHT))
    };
    if l == 0 { v } else { v + walk_pinned(p, l, valued) + walk_pinned(p, r, valued) }
}

fn record(gc: &Gc, name: &str, words: Vec<WordKind>) -> TypeId {
    gc.types()
        .register(TypeDesc::Record { name: name.into(), words })
        .unwrap_or_else(|e| panic!("register {name}: {e}"))
}

/// `binary-trees n` in compiled style: the canonical lines and the figures.
pub fn binary_trees(n: u32, batch: bool) -> (Vec<String>, GcRun) {
    let (rt, gc, f) = setup();
    let ty = record(&gc, "bt.node", vec![WordKind::Ref, WordKind::Ref]);
    rt.block_on(move || {
        let meter = Meter::start(&gc);
        const MIN_DEPTH: u32 = 4;
        let max_depth = (MIN_DEPTH + 2).max(n);
        let stretch = max_depth + 1;
        let mut cx = Cx::new(&gc, f, ty, false, batch);
        let mut lines = Vec::new();
        let c = cx.build_and_walk(stretch);
        lines.push(format!("stretch tree of depth {stretch}\t check: {c}"));
        cx.stack(|ms| ms.push(f.root));
        cx.build(max_depth, 0, 1);
        let workers: Vec<_> = (MIN_DEPTH..=max_depth)
            .step_by(2)
            .map(|d| {
                let gc = gc.clone();
                go(move || {
                    let mut cx = Cx::new(&gc, f, ty, false, batch);
                    let iters = 1u64 << (max_depth - d + MIN_DEPTH);
                    let chk: i64 = (0..iters).map(|_| cx.build_and_walk(d)).sum();
                    format!("{iters}\t trees of depth {d}\t check: {chk}")
                })
            })
            .collect();
        for w in workers {
            lines.push(w.join().expect("binary-trees worker"));
        }
        let c = cx.walk(max_depth);
        lines.push(format!("long lived tree of depth {max_depth}\t check: {c}"));
        cx.stack(|ms| ms.pop());
        drop(cx);
        (lines, meter.finish(&gc))
    })
}

/// `gcbench` in compiled style: the figures, or what was lost.
pub fn gcbench(batch: bool) -> Result<GcRun, String> {
    let (rt, gc, f) = setup();
    let ty = record(&gc, "gb.node", vec![WordKind::Ref, WordKind::Ref, WordKind::Raw]);
    let doubles = gc
        .types()
        .register(TypeDesc::ByteArray { name: "gb.doubles".into() })
        .unwrap_or_else(|e| panic!("register gb.doubles: {e}"));
    rt.block_on(move || {
        let meter = Meter::start(&gc);
        let mut cx = Cx::new(&gc, f, ty, false, batch);
        let node = cx.node;
        // Slot 0 of a `populate` frame holds the long-lived tree; the array lives in a
        // global (the frame has no slot for it).
        cx.stack(|ms| ms.push(f.root));
        cx.build(GB_STRETCH_DEPTH, 0, 1);
        cx.stack(|ms| ms.pop());

        cx.stack(|ms| ms.push(f.root));
        let slow = cx.pin(|p| {
            let (n, slow) = Cx::alloc(node, p);
            // SAFETY: a live node of this heap (allocated here, or held by our frame), in a slot the frame's maps name a reference.
            unsafe { p.stack().set(0, n) };
            p.stack().set_safepoint(1);
            slow
        });
        if slow {
            cx.raw.after_slow_alloc();
        }
        let long = cx.stack(|ms| ms.get(0));
        // SAFETY: a live node of this heap (allocated here, or held by our frame), in a slot the frame's maps name a reference.
        cx.stack(|ms| unsafe { ms.push_with_args(f.populate, &[long]) });
        cx.populate(GB_LONG_LIVED_DEPTH);
        cx.stack(|ms| ms.pop());
        let shape = cx.raw.shape(doubles, GB_ARRAY_SIZE * 8).expect("array shape");
        let array = cx.pin(|p| {
            let (a, _) = p.alloc(shape).expect("array");
            p.new_global(a).expect("a fresh array")
        });
        cx.raw.after_slow_alloc();
        // The fill loop: per call, it polls at every back-edge (a compiled loop's check of the
        // preemption flag) and leaves its section only when a stop or a time-slice end is
        // pending; batched, it runs in one section.
        let mut i = 0;
        while i < GB_ARRAY_SIZE / 2 {
            cx.pin(|p| {
                let a = p.global(&array).expect("our heap");
                // SAFETY: a live byte array of GB_ARRAY_SIZE doubles (our global).
                let bytes = unsafe { p.bytes(a) };
                while i < GB_ARRAY_SIZE / 2 {
                    for (k, b) in (1.0 / i as f64).to_le_bytes().into_iter().enumerate() {
                        bytes[i * 8 + k].store(b, Ordering::Relaxed);
                    }
                    i += 1;
                    if !batch && p.stack().guard().is_poisoned() {
                        break;
                    }
                }
            });
            cx.stack(|ms| ms.poll());
        }

        for d in (GB_MIN_DEPTH..=GB_MAX_DEPTH).step_by(2) {
            let iters = gb_num_iters(d);
            for _ in 0..iters {
                cx.stack(|ms| ms.push(f.populate));
                let slow = cx.pin(|p| {
                    let (n, slow) = Cx::alloc(node, p);
                    // SAFETY: a live node of this heap (allocated here, or held by our frame), in a slot the frame's maps name a reference.
                    unsafe { p.stack().set(0, n) };
                    slow
                });
                if slow {
                    cx.raw.after_slow_alloc();
                }
                cx.populate(d);
                cx.stack(|ms| ms.pop());
            }
            for _ in 0..iters {
                cx.stack(|ms| ms.push(f.root));
                cx.build(d, 0, 1);
                cx.stack(|ms| ms.pop());
            }
        }
        let intact = cx.pin(|p| {
            let long = p.stack().get(0);
            let a = p.global(&array).expect("our heap");
            // SAFETY: `long` is the live long-lived node (our root slot); `a` the array.
            let probe = unsafe { p.word(long, LEFT) };
            // SAFETY: as above.
            let bytes = unsafe { p.bytes(a) };
            let x: Vec<u8> = (0..8).map(|k| bytes[1000 * 8 + k].load(Ordering::Relaxed)).collect();
            probe != 0 && f64::from_le_bytes(x.try_into().expect("8 bytes")) == 1.0 / 1000.0
        });
        cx.stack(|ms| ms.pop());
        drop(cx);
        let r = meter.finish(&gc);
        if intact { Ok(r) } else { Err("gcbench: failed (long-lived data lost)".into()) }
    })
}

/// `churn g` in compiled style: the check and the figures, or what went wrong.
pub fn churn(g: u64, batch: bool) -> Result<(i64, GcRun), String> {
    let (rt, gc, f) = setup();
    let ty = record(&gc, "ch.node", vec![WordKind::Ref, WordKind::Ref, WordKind::Raw]);
    let set_ty = gc
        .types()
        .register(TypeDesc::RefArray { name: "ch.long".into() })
        .unwrap_or_else(|e| panic!("register ch.long: {e}"));
    rt.block_on(move || {
        let meter = Meter::start(&gc);
        let mut cx = Cx::new(&gc, f, ty, true, batch);
        let set_shape = cx.raw.shape(set_ty, CHURN_LONG_TREES).expect("set shape");
        let long = cx.pin(|p| {
            let (s, _) = p.alloc(set_shape).expect("set");
            p.new_global(s).expect("a fresh set")
        });
        cx.raw.after_slow_alloc();
        cx.stack(|ms| ms.push(f.root));
        for i in 0..CHURN_LONG_TREES {
            cx.build(CHURN_LONG_DEPTH, 0, 1);
            cx.pin(|p| {
                let set = p.global(&long).expect("our heap");
                let t = p.stack().get(0);
                // SAFETY: the set is a live reference array of CHURN_LONG_TREES; `t` a node.
                unsafe { p.set_word(set, i, WordKind::Ref, t) };
            });
        }
        cx.stack(|ms| ms.pop());
        let total = Arc::new(AtomicI64::new(0));
        let workers: Vec<_> = (0..g)
            .map(|_| {
                let (gc, total) = (gc.clone(), total.clone());
                go(move || {
                    let mut cx = Cx::new(&gc, f, ty, true, batch);
                    let s: i64 =
                        (0..CHURN_TREES).map(|_| cx.build_and_walk(CHURN_TREE_DEPTH)).sum();
                    // Relaxed: read after every worker is joined.
                    total.fetch_add(s, Ordering::Relaxed);
                })
            })
            .collect();
        for w in workers {
            w.join().expect("churn worker");
        }
        let want = ch_sum_formula(CHURN_LONG_DEPTH);
        let intact = (0..CHURN_LONG_TREES).all(|i| {
            let t = cx.pin(|p| {
                let set = p.global(&long).expect("our heap");
                // SAFETY: element `i` of the live set.
                unsafe { p.word(set, i) }
            });
            // `t` stays reachable through the set (a global) while it is walked.
            // SAFETY: a live node of this heap (allocated here, or held by our frame), in a slot the frame's maps name a reference.
            cx.stack(|ms| unsafe { ms.push_with_args(f.walk, &[t]) });
            let s = cx.walk(CHURN_LONG_DEPTH);
            cx.stack(|ms| ms.pop());
            s == want
        });
        drop(cx);
        let r = meter.finish(&gc);
        drop(long);
        // Relaxed: the joins ordered every worker's add before this.
        churn_verdict(intact, total.load(Ordering::Relaxed), g, r)
    })
}
