//! Deterministic trees for the stress and in-flight tests: node `seed` of depth `d` holds an
//! immediate, a byte array and (for `d > 0`) two children; a checksum computed by walking
//! the heap must equal the one computed from the seed alone.

#![allow(dead_code)]

use safepoint_gc::{Gc, Mutator, Slot, TypeDesc, TypeId, WordKind};

/// The node and leaf-bytes types.
#[derive(Clone, Copy, Debug)]
pub struct TreeTypes {
    pub node: TypeId,
    pub bytes: TypeId,
    pub pair: TypeId,
}

/// Registers the tree types in `gc`.
pub fn types(gc: &Gc) -> TreeTypes {
    let t = gc.types();
    TreeTypes {
        node: t
            .register(TypeDesc::Record {
                name: "tree.node".into(),
                words: vec![WordKind::Ref, WordKind::Ref, WordKind::Tagged, WordKind::Ref],
            })
            .unwrap(),
        bytes: t.register(TypeDesc::ByteArray { name: "tree.bytes".into() }).unwrap(),
        pair: t
            .register(TypeDesc::Record {
                name: "tree.pair".into(),
                words: vec![WordKind::Ref, WordKind::Tagged],
            })
            .unwrap(),
    }
}

fn value(seed: u64) -> i64 {
    (seed % 1000) as i64
}

fn leaf_bytes(seed: u64) -> Vec<u8> {
    (0..seed % 24).map(|i| seed.wrapping_add(i) as u8).collect()
}

/// The seeds of the children of node `seed`.
pub fn children(seed: u64) -> (u64, u64) {
    (seed.wrapping_mul(2).wrapping_add(1), seed.wrapping_mul(2).wrapping_add(2))
}

/// The checksum of tree `(seed, d)`, from the seed alone.
pub fn expected(seed: u64, d: u32) -> i64 {
    let own = value(seed) + leaf_bytes(seed).iter().map(|&b| i64::from(b)).sum::<i64>();
    if d == 0 {
        return own;
    }
    let (l, r) = children(seed);
    own + expected(l, d - 1) + expected(r, d - 1)
}

/// Builds tree `(seed, d)` into `dst`.
pub fn build(m: &mut Mutator, t: TreeTypes, seed: u64, d: u32, dst: Slot) {
    m.scope(|m, [l, r, v]| {
        m.alloc(dst, t.node).unwrap();
        m.set_int(v, value(seed)).unwrap();
        m.store(dst, 2, v).unwrap();
        m.alloc_bytes(v, t.bytes, &leaf_bytes(seed)).unwrap();
        m.store(dst, 3, v).unwrap();
        if d > 0 {
            let (ls, rs) = children(seed);
            build(m, t, ls, d - 1, l);
            m.store(dst, 0, l).unwrap();
            build(m, t, rs, d - 1, r);
            m.store(dst, 1, r).unwrap();
        }
    })
}

/// The checksum of the tree in `t`, walking the heap; panics on a malformed node.
pub fn checksum(m: &mut Mutator, ty: TreeTypes, t: Slot) -> i64 {
    assert_eq!(m.type_of(t), Ok(ty.node), "not a tree node");
    m.scope(|m, [l, r, v]| {
        m.load(v, t, 2).unwrap();
        let mut s = m.int(v).unwrap();
        m.load(v, t, 3).unwrap();
        s += m.bytes(v).unwrap().to_vec().iter().map(|&b| i64::from(b)).sum::<i64>();
        m.load(l, t, 0).unwrap();
        m.load(r, t, 1).unwrap();
        if !m.is_null(l).unwrap() {
            s += checksum(m, ty, l) + checksum(m, ty, r);
        } else {
            assert!(m.is_null(r).unwrap(), "a node with one child");
        }
        s
    })
}
