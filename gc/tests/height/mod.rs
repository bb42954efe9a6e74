//! Trees whose node at height h holds h, shared by the smoke and concurrent tests: a node is
//! `{left: Ref, right: Ref, value: Tagged}`.

#![allow(dead_code)]

use safepoint_gc::{Gc, Mutator, Slot, TypeDesc, TypeId, WordKind};

/// Registers the node type.
pub fn node_type(gc: &Gc) -> TypeId {
    gc.types()
        .register(TypeDesc::Record {
            name: "node".into(),
            words: vec![WordKind::Ref, WordKind::Ref, WordKind::Tagged],
        })
        .unwrap()
}

/// Builds a tree of depth `d` into `dst`.
pub fn build(m: &mut Mutator, ty: TypeId, d: u32, dst: Slot) {
    m.scope(|m, [l, r, v]| {
        m.alloc(dst, ty).unwrap();
        m.set_int(v, d as i64).unwrap();
        m.store(dst, 2, v).unwrap();
        if d > 0 {
            build(m, ty, d - 1, l);
            build(m, ty, d - 1, r);
            m.store(dst, 0, l).unwrap();
            m.store(dst, 1, r).unwrap();
        }
    })
}

/// The sum of the values of the tree in `t`.
pub fn check(m: &mut Mutator, t: Slot) -> i64 {
    m.scope(|m, [l, r, v]| {
        m.load(l, t, 0).unwrap();
        m.load(r, t, 1).unwrap();
        m.load(v, t, 2).unwrap();
        let mut s = m.int(v).unwrap();
        if !m.is_null(l).unwrap() {
            s += check(m, l) + check(m, r);
        }
        s
    })
}

/// What [`check`] returns for a tree of depth `d`.
pub fn expected(d: u32) -> i64 {
    if d == 0 { 0 } else { d as i64 + 2 * expected(d - 1) }
}
