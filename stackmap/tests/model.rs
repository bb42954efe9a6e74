//! Model-based tests: random function tables and random frame operations, checked against a
//! plain model of the stack after every step.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering::Relaxed;

use proptest::prelude::*;
use safepoint_stackmap::*;

/// One function of a random table: per safepoint, per slot, 0 = dead, 1 = reference,
/// 2 = tagged.
#[derive(Clone, Debug)]
struct Spec {
    slots: usize,
    kinds: Vec<Vec<u8>>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (0usize..=70, 1usize..=4).prop_flat_map(|(slots, sps)| {
        prop::collection::vec(prop::collection::vec(0u8..3, slots), sps)
            .prop_map(move |kinds| Spec { slots, kinds })
    })
}

#[derive(Clone, Debug)]
enum Op {
    Push(usize),
    PushArgs(usize, usize),
    PushHandles(usize),
    Pop,
    SetSafepoint(u32),
    Set(usize, usize),
    Poll,
    Shrink,
    Walk,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<usize>().prop_map(Op::Push),
        1 => (any::<usize>(), 0usize..4).prop_map(|(f, n)| Op::PushArgs(f, n)),
        1 => (0usize..6).prop_map(Op::PushHandles),
        3 => Just(Op::Pop),
        3 => any::<u32>().prop_map(Op::SetSafepoint),
        4 => (any::<usize>(), any::<usize>()).prop_map(|(s, v)| Op::Set(s, v)),
        1 => Just(Op::Poll),
        1 => Just(Op::Shrink),
        2 => Just(Op::Walk),
    ]
}

/// A frame of the model: function (None for handles), safepoint, slot values.
#[derive(Clone, Debug)]
struct MFrame {
    func: Option<usize>,
    sp: u32,
    slots: Vec<usize>,
}

/// What a walk yields, in order: (depth, slot, value, is_tagged).
#[derive(Default)]
struct Yielded(Vec<(usize, usize, usize, bool)>, usize);

impl Visitor for Yielded {
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

fn expected(specs: &[Spec], model: &[MFrame]) -> Vec<(usize, usize, usize, bool)> {
    let mut out = vec![];
    for (depth, fr) in model.iter().rev().enumerate() {
        match fr.func {
            None => out.extend(fr.slots.iter().enumerate().map(|(i, &v)| (depth, i, v, false))),
            Some(f) => {
                let kinds = &specs[f].kinds[fr.sp as usize];
                for want in [1u8, 2] {
                    for (i, &k) in kinds.iter().enumerate() {
                        if k == want {
                            out.push((depth, i, fr.slots[i], want == 2));
                        }
                    }
                }
            }
        }
    }
    out
}

fn words(model: &[MFrame]) -> usize {
    model.iter().map(|f| 2 + f.slots.len()).sum()
}

fn check_walk(ms: &mut ManagedStack, reg: &Registry, specs: &[Spec], model: &[MFrame]) {
    let mut y = Yielded::default();
    ms.walk(reg, &mut y);
    assert_eq!(y.0, expected(specs, model));
    assert_eq!(ms.check(reg), Ok(model.len()));
    assert_eq!(ms.used_words(), words(model));
}

fn run(specs: Vec<Spec>, ops: Vec<Op>, small_limit: bool, validate: bool) {
    let reg = Registry::new();
    let ids: Vec<FuncId> = specs
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let mut d = FuncDesc::new(format!("f{n}"), s.slots, 0, s.kinds.len());
            for (sp, kinds) in s.kinds.iter().enumerate() {
                let of = |k| (0..s.slots).filter(|&i| kinds[i] == k).collect::<Vec<_>>();
                d = d.refs_at(sp, &of(1)).tagged_at(sp, &of(2)).line(sp, sp as u32 + 1);
            }
            reg.register(d).expect("a valid description")
        })
        .collect();
    let limit = if small_limit { 2048 } else { StackConfig::DEFAULT_LIMIT };
    let mut ms = ManagedStack::new(5, StackConfig::default().limit_bytes(limit).validate(validate));
    let mut model: Vec<MFrame> = vec![];
    let mut counter = 1usize;
    for op in ops {
        match op {
            Op::Push(f) | Op::PushArgs(f, _) => {
                let f = f % specs.len();
                let n = specs[f].slots;
                let nargs = match op {
                    Op::PushArgs(_, a) => a.min(n),
                    _ => 0,
                };
                let args: Vec<usize> = (0..nargs).map(|i| counter + i).collect();
                counter += nargs;
                let fits = (words(&model) + 2 + n) * 8 <= limit;
                // SAFETY: no collector scans this stack: only the model's walks read it.
                let r =
                    catch_unwind(AssertUnwindSafe(|| unsafe { ms.push_with_args(ids[f], &args) }));
                if fits {
                    r.expect("push within the limit");
                    let mut slots = vec![0; n];
                    slots[..nargs].copy_from_slice(&args);
                    model.push(MFrame { func: Some(f), sp: 0, slots });
                } else {
                    let e = r.expect_err("push past the limit");
                    assert_eq!(
                        e.downcast_ref::<String>().map(String::as_str),
                        Some("goroutine 5: managed stack exceeds 2 KiB")
                    );
                }
            }
            Op::PushHandles(n) => {
                if (words(&model) + 2 + n) * 8 <= limit {
                    ms.push_handles(n);
                    model.push(MFrame { func: None, sp: 0, slots: vec![0; n] });
                }
            }
            Op::Pop => {
                if let Some(top) = model.pop() {
                    // Every slot of the frame, live or not, survived growth and shrinking.
                    let got: Vec<usize> = (0..top.slots.len()).map(|i| ms.get(i)).collect();
                    assert_eq!(got, top.slots);
                    ms.pop();
                }
            }
            Op::SetSafepoint(sp) => {
                if let Some(top) = model.last_mut() {
                    let count = top.func.map_or(1, |f| specs[f].kinds.len()) as u32;
                    ms.set_safepoint(sp % count);
                    top.sp = sp % count;
                    assert_eq!(ms.top_frame_info().1, top.sp);
                }
            }
            Op::Set(s, v) => {
                if let Some(top) = model.last_mut()
                    && !top.slots.is_empty()
                {
                    let s = s % top.slots.len();
                    // SAFETY: no collector scans this stack: only the model's walks read it.
                    unsafe { ms.set(s, v) };
                    top.slots[s] = v;
                }
            }
            Op::Poll => ms.poll(),
            Op::Shrink => {
                let (cap, used) = (ms.capacity_words(), ms.used_words());
                let moved = ms.shrink();
                assert_eq!(moved, cap > 128 && used < cap / 4);
                if moved {
                    assert_eq!(ms.capacity_words(), (cap / 2).max(128));
                }
            }
            Op::Walk => check_walk(&mut ms, &reg, &specs, &model),
        }
        assert_eq!(ms.depth(), model.len());
        assert!(ms.capacity_words() * 8 <= limit);
    }
    check_walk(&mut ms, &reg, &specs, &model);
    // Tracebacks list every frame with its function and line.
    let t = ms.traceback(&reg);
    assert_eq!(t.depth(), model.len());
    for (tf, mf) in t.frames.iter().zip(model.iter().rev()) {
        match mf.func {
            Some(f) => {
                assert_eq!(tf.name, format!("f{f}"));
                assert_eq!((tf.safepoint, tf.line), (mf.sp, Some(mf.sp + 1)));
            }
            None => assert_eq!(tf.func, None),
        }
    }
    while let Some(top) = model.pop() {
        let got: Vec<usize> = (0..top.slots.len()).map(|i| ms.get(i)).collect();
        assert_eq!(got, top.slots);
        ms.pop();
    }
    assert!(ms.is_empty());
}

fn cases() -> u32 {
    if cfg!(miri) { 3 } else { 256 }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn walker_matches_the_model(
        specs in prop::collection::vec(spec(), 1..6),
        ops in prop::collection::vec(op(), 0..if cfg!(miri) { 40 } else { 400 }),
        small_limit in any::<bool>(),
        validate in any::<bool>(),
    ) {
        run(specs, ops, small_limit, validate);
    }

    /// Registration accepts a description exactly when a plain check says it is valid, and
    /// stores it as given.
    #[test]
    fn registration_matches_a_plain_check(
        descs in prop::collection::vec(
            (0usize..4, 0usize..6, 0usize..4, 0usize..3,
             prop::collection::vec((0usize..4, any::<bool>(), prop::collection::vec(0usize..7, 0..4)), 0..5)),
            1..8),
    ) {
        let reg = Registry::new();
        let mut names = std::collections::HashSet::new();
        for (name, slots, args, sps, maps) in descs {
            let name = if name == 0 { String::new() } else { format!("n{name}") };
            let mut d = FuncDesc::new(name.clone(), slots, args, sps);
            let mut seen = std::collections::HashSet::new();
            let mut ok = !name.is_empty() && args <= slots && sps > 0 && !names.contains(&name);
            let mut live = vec![[vec![false; slots], vec![false; slots]]; sps.max(1)];
            for (sp, tagged, ss) in &maps {
                d = if *tagged { d.tagged_at(*sp, ss) } else { d.refs_at(*sp, ss) };
                ok &= *sp < sps && ss.iter().all(|&s| s < slots) && seen.insert((*sp, *tagged));
                if ok {
                    for &s in ss {
                        live[*sp][*tagged as usize][s] = true;
                    }
                }
            }
            ok &= live.iter().all(|[r, t]| r.iter().zip(t).all(|(a, b)| !(a & b)));
            let r = reg.register(d);
            prop_assert_eq!(r.is_ok(), ok, "{:?}", r);
            if let Ok(id) = r {
                names.insert(name);
                let f = reg.get(id).unwrap();
                for (sp, [refs, tagged]) in live.iter().enumerate() {
                    let want = |v: &Vec<bool>| v.iter().enumerate().filter(|x| *x.1).map(|x| x.0).collect::<Vec<_>>();
                    prop_assert_eq!(f.live_slots(sp, BitmapKind::Refs).unwrap(), want(refs));
                    prop_assert_eq!(f.live_slots(sp, BitmapKind::Tagged).unwrap(), want(tagged));
                }
            }
        }
    }
}
