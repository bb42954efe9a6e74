//! Arbitrary function descriptions into one registry: every one is either stored exactly as
//! described or refused with an error and nothing stored. Never a crash.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use safepoint_stackmap::bitvec::prelude::*;
use safepoint_stackmap::{BitmapKind, FuncDesc, Registry};

#[derive(Arbitrary, Debug)]
enum Map {
    /// A bitmap of `len` bits with the given bits set (indices taken modulo 2 * len + 1, so
    /// some fall past the end and are dropped: the length is what is checked).
    Bits { len: u8, ones: Vec<u8> },
    /// A list of slot indices.
    Slots(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Desc {
    name: u8,
    slots: u16,
    args: u8,
    safepoints: u8,
    maps: Vec<(u8, bool, Map)>,
    lines: Vec<(u8, u32)>,
}

fuzz_target!(|descs: Vec<Desc>| {
    let reg = Registry::new();
    for d in descs.into_iter().take(64) {
        let name = if d.name == 0 { String::new() } else { format!("f{}", d.name % 32) };
        let slots = d.slots as usize % 300;
        let mut desc =
            FuncDesc::new(name.clone(), slots, d.args as usize, d.safepoints as usize % 8);
        // The plain model of what should be stored, if the description is valid.
        let mut want: Vec<[Option<Vec<usize>>; 2]> = vec![[None, None]; d.safepoints as usize % 8];
        for (sp, tagged, m) in &d.maps {
            let sp = *sp as usize % 10;
            let mut set: Vec<usize> = match m {
                Map::Bits { len, ones } => {
                    let len = *len as usize;
                    let mut bv: BitVec = BitVec::repeat(false, len);
                    for &o in ones {
                        let o = o as usize % (2 * len + 1);
                        if o < len {
                            bv.set(o, true);
                        }
                    }
                    desc = if *tagged { desc.tagged(sp, &bv) } else { desc.refs(sp, &bv) };
                    bv.iter_ones().collect()
                }
                Map::Slots(v) => {
                    let v: Vec<usize> = v.iter().map(|&s| s as usize).collect();
                    desc = if *tagged { desc.tagged_at(sp, &v) } else { desc.refs_at(sp, &v) };
                    v
                }
            };
            set.sort_unstable();
            set.dedup();
            if let Some(w) = want.get_mut(sp) {
                w[*tagged as usize].get_or_insert(set);
            }
        }
        for &(sp, line) in &d.lines {
            desc = desc.line(sp as usize % 10, line);
        }
        let before = reg.len();
        match reg.register(desc) {
            Err(e) => {
                assert_eq!(reg.len(), before, "refused, yet stored: {e}");
                assert!(!e.to_string().is_empty());
            }
            Ok(id) => {
                assert_eq!(reg.len(), before + 1);
                assert!(!name.is_empty() && (d.args as usize) <= slots);
                let f = reg.get(id).expect("stored");
                assert_eq!(reg.find(&name), Some(id));
                assert_eq!(f.frame_slots(), slots);
                assert_eq!(f.safepoints(), want.len());
                for (sp, [r, t]) in want.iter().enumerate() {
                    let r = r.clone().unwrap_or_default();
                    let t = t.clone().unwrap_or_default();
                    assert!(r.iter().all(|s| !t.contains(s)), "overlap accepted");
                    assert_eq!(f.live_slots(sp, BitmapKind::Refs).unwrap(), r);
                    assert_eq!(f.live_slots(sp, BitmapKind::Tagged).unwrap(), t);
                    assert_eq!(
                        f.bitmap(sp, BitmapKind::Refs).unwrap().iter_ones().collect::<Vec<_>>(),
                        r
                    );
                }
                for &(sp, line) in &d.lines {
                    assert_eq!(f.line(sp as usize % 10), Some(line));
                }
            }
        }
    }
});
