//! Arbitrary function tables and frame operations on a managed stack, checked against a plain
//! model after every walk: the walker yields exactly the live slots, tracebacks and checks
//! agree, growth and shrinking keep every slot. Operations the model says are invalid (they
//! would panic the goroutine by design) are skipped. Never a crash.

#![no_main]

use std::sync::atomic::Ordering::Relaxed;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use safepoint_stackmap::{Frame, FuncDesc, FuncId, ManagedStack, Registry, StackConfig, Visitor};

#[derive(Arbitrary, Debug)]
struct Func {
    slots: u8,
    /// Per safepoint, per slot: 0 dead, 1 reference, 2 tagged (others dead).
    kinds: Vec<Vec<u8>>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Push(u8),
    PushArgs(u8, Vec<usize>),
    PushHandles(u8),
    Pop,
    SetSafepoint(u32),
    Set(u8, usize),
    Poll,
    Shrink,
    Walk,
    Release,
}

#[derive(Arbitrary, Debug)]
struct Input {
    funcs: Vec<Func>,
    ops: Vec<Op>,
    small_limit: bool,
    validate: bool,
}

struct MFrame {
    func: Option<usize>,
    sp: usize,
    slots: Vec<usize>,
}

#[derive(Default)]
struct Yield(Vec<(usize, usize, usize, bool)>, usize);

impl Visitor for Yield {
    fn frame(&mut self, f: &Frame) {
        self.1 = f.depth;
    }
    fn reference(&mut self, slot: usize, w: &safepoint_stackmap::SlotWord) {
        self.0.push((self.1, slot, w.load(Relaxed), false));
    }
    fn tagged(&mut self, slot: usize, w: &safepoint_stackmap::SlotWord) {
        self.0.push((self.1, slot, w.load(Relaxed), true));
    }
}

fuzz_target!(|inp: Input| {
    // The table: each function's kinds padded or cut to its frame, at least one safepoint.
    let funcs: Vec<(usize, Vec<Vec<u8>>)> = inp
        .funcs
        .into_iter()
        .take(8)
        .map(|f| {
            let n = f.slots as usize % 70;
            let mut kinds: Vec<Vec<u8>> = f.kinds.into_iter().take(6).collect();
            if kinds.is_empty() {
                kinds.push(vec![]);
            }
            for k in &mut kinds {
                k.resize(n, 0);
            }
            (n, kinds)
        })
        .collect();
    if funcs.is_empty() {
        return;
    }
    let reg = Registry::new();
    let ids: Vec<FuncId> = funcs
        .iter()
        .enumerate()
        .map(|(i, (n, kinds))| {
            let mut d = FuncDesc::new(format!("f{i}"), *n, 0, kinds.len());
            for (sp, k) in kinds.iter().enumerate() {
                let of = |want| (0..*n).filter(|&s| k[s] == want).collect::<Vec<_>>();
                d = d.refs_at(sp, &of(1)).tagged_at(sp, &of(2));
            }
            reg.register(d).expect("valid by construction")
        })
        .collect();
    let limit = if inp.small_limit { 1500 } else { 1 << 30 };
    let mut ms =
        ManagedStack::new(1, StackConfig::default().limit_bytes(limit).validate(inp.validate));
    let mut model: Vec<MFrame> = vec![];
    let words = |m: &Vec<MFrame>| m.iter().map(|f| f.slots.len() + 2).sum::<usize>();
    for op in inp.ops.into_iter().take(2000) {
        match op {
            Op::Push(f) | Op::PushArgs(f, _) => {
                let f = f as usize % funcs.len();
                let n = funcs[f].0;
                if (words(&model) + n + 2) * 8 > limit {
                    continue;
                }
                let args: Vec<usize> = match op {
                    Op::PushArgs(_, a) => a.into_iter().take(n).collect(),
                    _ => vec![],
                };
                // SAFETY: no collector scans this stack: only the target's walks read it.
                unsafe { ms.push_with_args(ids[f], &args) };
                let mut slots = vec![0; n];
                slots[..args.len()].copy_from_slice(&args);
                model.push(MFrame { func: Some(f), sp: 0, slots });
            }
            Op::PushHandles(n) => {
                let n = n as usize % 20;
                if (words(&model) + n + 2) * 8 <= limit {
                    ms.push_handles(n);
                    model.push(MFrame { func: None, sp: 0, slots: vec![0; n] });
                }
            }
            Op::Pop => {
                if let Some(top) = model.pop() {
                    let got: Vec<usize> = (0..top.slots.len()).map(|i| ms.get(i)).collect();
                    assert_eq!(got, top.slots);
                    ms.pop();
                }
            }
            Op::SetSafepoint(sp) => {
                if let Some(top) = model.last_mut() {
                    let count = top.func.map_or(1, |f| funcs[f].1.len());
                    top.sp = sp as usize % count;
                    ms.set_safepoint(top.sp as u32);
                }
            }
            Op::Set(s, v) => {
                if let Some(top) = model.last_mut()
                    && !top.slots.is_empty()
                {
                    let s = s as usize % top.slots.len();
                    top.slots[s] = v;
                    // SAFETY: as for the push above.
                    unsafe { ms.set(s, v) };
                }
            }
            Op::Poll => ms.poll(),
            Op::Shrink => {
                ms.shrink();
            }
            Op::Release => {
                if model.is_empty() {
                    ms.release();
                    assert_eq!(ms.capacity_words(), 0);
                }
            }
            Op::Walk => {
                let mut y = Yield::default();
                ms.walk(&reg, &mut y);
                let mut want = vec![];
                for (depth, fr) in model.iter().rev().enumerate() {
                    match fr.func {
                        None => want.extend(
                            fr.slots.iter().enumerate().map(|(i, &v)| (depth, i, v, false)),
                        ),
                        Some(f) => {
                            for k in [1u8, 2] {
                                for (i, &kind) in funcs[f].1[fr.sp].iter().enumerate() {
                                    if kind == k {
                                        want.push((depth, i, fr.slots[i], k == 2));
                                    }
                                }
                            }
                        }
                    }
                }
                assert_eq!(y.0, want);
                assert_eq!(ms.check(&reg), Ok(model.len()));
                assert_eq!(ms.traceback(&reg).depth(), model.len());
            }
        }
        assert_eq!(ms.used_words(), words(&model));
        assert!(ms.capacity_words() * 8 <= limit);
    }
});
