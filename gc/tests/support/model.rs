//! A reference model of the managed heap, shared by the state-machine test
//! (`gc/tests/model.rs`) and the `heap_ops` fuzz target (`fuzz/fuzz_targets/heap_ops.rs`, which
//! includes this file with `#[path]`).
//!
//! The model keeps its own object graph: objects with their own ids, types and contents, the
//! values of the mutator's slots, of a few globals, of a channel of values in flight, and of
//! goroutines that hold values. [`Runner::apply`] performs one [`Op`] on the real heap and on
//! the model, and checks that the real operation succeeded or failed exactly as the model
//! predicts. [`Runner::verify`] then walks everything the model says is reachable and
//! compares it with the heap: type, length, every word and byte, and which object each
//! reference names (objects do not move, so the model remembers each object's address).
//! After a [`Op::Collect`] the heap must hold exactly the model's reachable objects.
//!
//! Ops name slots, fields and globals by small numbers taken modulo what exists, so every
//! decoded op is meaningful; ops that would block (a receive on an empty channel) or exceed
//! the model's bounds are skipped.
//!
//! ## Weak handles, weak fields and cleanups
//!
//! On a heap whose collections never start by themselves (`gc_percent` off: every cycle is
//! one the ops ask for, so the model knows when marking happens), the runner also makes weak
//! handles, reads them, stores into weak fields (the record type `model.weak`) and attaches
//! cleanups; on other heaps those ops are skipped. The model keeps the heap's table of weak
//! cells (target to cell) and the cleanups by target. Between collections an object reachable
//! only through weak handles can still be read (and made strong again), so the walk after
//! each op follows handles and weak fields to their targets. A collection keeps exactly what
//! is strongly reachable from the roots and from the table's cells; each cell of a freed
//! object reads nil from then on and leaves the table (and dies at the next collection unless
//! referenced); each cleanup of a freed object must have run exactly once, on the cleanup
//! goroutine, soon after; no other cleanup may run. Ephemeron entries (the record type
//! `model.eph`: a weak key, an ephemeron value) keep their values exactly while their keys
//! are reachable (the model's collection iterates to the fixed point, chains included); a
//! value reads null once its key is gone.
//!
//! ## Sections
//!
//! [`Op::Section`] ops run through branded sections ([`SectionMutator`]) on a goroutine of
//! their own, the *section goroutine*, which the main goroutine's checked mutator cannot
//! share (one mutator per goroutine). The main goroutine sends the values an op needs over a
//! channel; the section goroutine receives them into its section frame's slots (inside a
//! section when one is there, [`Section::try_recv`], or waiting between sections,
//! [`SectionMutator::recv`]), runs the op in one section (its frame read and written through
//! the slot accessors and the register view, [`Section::regs`]; allocations, word stores
//! and loads checked against a shape, sometimes a shape of another type, raw words, bytes,
//! weak handles, globals, the pending channel), sends its result back the same two ways, and
//! clears its frame before it answers, so between ops it holds nothing. The model predicts
//! every result and every error, as for the checked ops; sections then meet the same checks
//! after every op and every collection, in both collector modes.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use safepoint_gc::{
    Gc, GcError, Global, Mutator, RefChan, SectionMutator, Shape, Slot, TypeDesc, TypeId, Value,
    WordKind,
};
use safepoint_sched::{Chan, JoinHandle};

/// Slots of the main goroutine the ops name.
pub const SLOTS: usize = 8;
/// Globals the ops name.
pub const GLOBALS: usize = 3;
/// Most values in flight on the pending channel.
pub const MAX_PENDING: usize = 6;
/// Most goroutines holding values at once.
pub const MAX_HOLDERS: usize = 3;
/// Most values handed to one spawned goroutine.
pub const MAX_HANDED: usize = 4;
/// Longest byte array an op allocates.
pub const MAX_BYTES: usize = 40_000;

/// The record types: name and word kinds.
pub const RECORDS: &[(&str, &[WordKind])] = &[
    ("model.pair", &[WordKind::Ref, WordKind::Ref]),
    ("model.mixed", &[WordKind::Ref, WordKind::Tagged, WordKind::Raw]),
    ("model.raws", &[WordKind::Raw, WordKind::Raw]),
    (
        "model.wide",
        &[
            WordKind::Tagged,
            WordKind::Ref,
            WordKind::Raw,
            WordKind::Tagged,
            WordKind::Ref,
            WordKind::Raw,
            WordKind::Tagged,
        ],
    ),
    // The last two: only on heaps that model weak handles (see the module documentation).
    ("model.weak", &[WordKind::Weak, WordKind::Ref, WordKind::Raw]),
    ("model.eph", &[WordKind::Weak, WordKind::Ephemeron, WordKind::Raw]),
];

/// Record types (at the end of [`RECORDS`]) used only on heaps that model weak handles.
const WEAK_RECORDS: usize = 2;

/// One operation. Numbers naming slots, globals, fields or goroutines are taken modulo what
/// exists.
#[derive(Clone, Debug)]
pub enum Op {
    /// Allocate record type `RECORDS[rec]` into slot `dst`.
    Alloc { dst: u8, rec: u8 },
    /// Allocate an array of references (or of tagged values) of `len` elements.
    AllocArray { dst: u8, tagged: bool, len: u8 },
    /// Allocate a byte array of `len` bytes filled with a pattern from `seed`.
    AllocBytes { dst: u8, len: u16, seed: u8 },
    /// Store slot `src` into field `field` of the object in slot `obj`.
    Store { obj: u8, field: u8, src: u8 },
    /// Load field `field` of the object in slot `obj` into slot `dst`.
    Load { dst: u8, obj: u8, field: u8 },
    /// Copy slot `src` to slot `dst`.
    Copy { dst: u8, src: u8 },
    /// Set slot `dst` to null (drop what it held).
    Clear { dst: u8 },
    /// Store the immediate `v` in slot `dst` (out of range values must be refused).
    SetInt { dst: u8, v: i64 },
    /// Read the immediate in slot `src`.
    ReadInt { src: u8 },
    /// Write raw word `field` of the object in slot `obj`.
    WriteWord { obj: u8, field: u8, v: u64 },
    /// Read raw word `field` of the object in slot `obj`.
    ReadWord { obj: u8, field: u8 },
    /// Write `len` pattern bytes at `offset` into the byte array in slot `obj`.
    WriteBytes { obj: u8, offset: u16, len: u8, seed: u8 },
    /// Store slot `src` into global `g`.
    StoreGlobal { g: u8, src: u8 },
    /// Load global `g` into slot `dst`.
    LoadGlobal { dst: u8, g: u8 },
    /// Send slot `src` on the pending channel (stays in flight until a `Recv`).
    Send { src: u8 },
    /// Receive the oldest value in flight into slot `dst`.
    Recv { dst: u8 },
    /// Spawn a goroutine that receives the values of slots `srcs` over a channel, collects if
    /// `collect`, stores the first into global `global` (if any) and exits; the main goroutine
    /// clears `srcs` first if `take`.
    SpawnExit { srcs: Vec<u8>, take: bool, collect: bool, global: Option<u8> },
    /// Spawn a goroutine that receives the values of slots `srcs` (and loads global `global`,
    /// if any) and keeps them until released; clears `srcs` in the main goroutine if `take`.
    SpawnHold { srcs: Vec<u8>, take: bool, global: Option<u8> },
    /// Release holder `h`: it drops its values and exits.
    Release { h: u8 },
    /// A full collection, then: the heap holds exactly the model's reachable objects.
    Collect,
    /// Put a weak handle to the object in slot `src` into slot `dst`.
    Weak { dst: u8, src: u8 },
    /// Read the weak handle in slot `w` into slot `dst`.
    Deref { dst: u8, w: u8 },
    /// Attach a cleanup to the object in slot `obj`.
    AddCleanup { obj: u8 },
    /// Build, from primitive ops on slots `at ..= at + 4` (mod [`SLOTS`]), a table (an array
    /// of references) of `len` ephemeron entries, made last to first, whose value `i`
    /// references key `i + 1`, and keep key 0 in slot `at + 4`: Lua's ephemeron chain, where
    /// the marking must reach a fixed point.
    EphChain { at: u8, len: u8 },
    /// An op through a section, on the section goroutine (see "Sections").
    Section(SecOp),
}

/// An op through a branded section. A `shape` byte picks the shape the access names: that of
/// the object's own type, or (when it is a multiple of 4) one of another type.
#[derive(Clone, Debug)]
pub enum SecOp {
    /// Allocate record type `RECORDS[rec]` into slot `dst` (the next slot if `dst` is `src`),
    /// its word 0 initialised from slot `src` if `init` (`alloc_init`).
    Alloc { dst: u8, rec: u8, src: u8, init: bool },
    /// Allocate an array of references (or tagged values) of `len` elements.
    Array { dst: u8, tagged: bool, len: u8 },
    /// Allocate a byte array of `len` pattern bytes (`alloc_bytes`, from a shape of length 0).
    Bytes { dst: u8, len: u16, seed: u8 },
    /// Store slot `src` into word `field` of the object in slot `obj`.
    Store { obj: u8, field: u8, src: u8, shape: u8 },
    /// Load word `field` of the object in slot `obj` into slot `dst`.
    Load { dst: u8, obj: u8, field: u8, shape: u8 },
    /// Write raw word `field` of the object in slot `obj`.
    WriteWord { obj: u8, field: u8, v: u64, shape: u8 },
    /// Write `len` pattern bytes at `offset` into the byte array in slot `obj`, and read the
    /// whole array back.
    WriteBytes { obj: u8, offset: u16, len: u8, seed: u8, shape: u8 },
    /// Put the weak handle of the object in slot `src` into slot `dst`.
    Weak { dst: u8, src: u8 },
    /// Read the weak handle in slot `w` into slot `dst`.
    Deref { dst: u8, w: u8 },
    /// Send slot `src` on the pending channel.
    Send { src: u8 },
    /// Receive the oldest value in flight into slot `dst`.
    Recv { dst: u8 },
    /// Store slot `src` into global `g`.
    StoreGlobal { g: u8, src: u8 },
    /// Load global `g` into slot `dst`.
    LoadGlobal { dst: u8, g: u8 },
}

/// Decodes ops from fuzzer bytes (by hand, so the test crate needs no `arbitrary`).
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut r = Reader { data, pos: 0 };
    let mut ops = Vec::new();
    while r.pos < r.data.len() && ops.len() < 200 {
        let code = r.u8();
        if code >= 250 {
            ops.push(Op::Section(decode_section(&mut r)));
            continue;
        }
        let op = match code % 25 {
            0 | 1 => Op::Alloc { dst: r.u8(), rec: r.u8() },
            2 => Op::AllocArray { dst: r.u8(), tagged: r.u8() & 1 == 1, len: r.u8() },
            3 => {
                let dst = r.u8();
                let wide = r.u8();
                let len = if wide & 0x80 != 0 { r.u16() } else { u16::from(wide & 0x7f) };
                Op::AllocBytes { dst, len, seed: r.u8() }
            }
            4 | 5 => Op::Store { obj: r.u8(), field: r.u8(), src: r.u8() },
            6 => Op::Load { dst: r.u8(), obj: r.u8(), field: r.u8() },
            7 => Op::Copy { dst: r.u8(), src: r.u8() },
            8 => Op::Clear { dst: r.u8() },
            9 => Op::SetInt { dst: r.u8(), v: r.u64() as i64 },
            10 => Op::ReadInt { src: r.u8() },
            11 => Op::WriteWord { obj: r.u8(), field: r.u8(), v: r.u64() },
            12 => Op::ReadWord { obj: r.u8(), field: r.u8() },
            13 => Op::WriteBytes { obj: r.u8(), offset: r.u16(), len: r.u8(), seed: r.u8() },
            14 => Op::StoreGlobal { g: r.u8(), src: r.u8() },
            15 => Op::LoadGlobal { dst: r.u8(), g: r.u8() },
            16 => Op::Send { src: r.u8() },
            17 => Op::Recv { dst: r.u8() },
            18 => {
                let flags = r.u8();
                let n = r.u8() as usize % (MAX_HANDED + 1);
                let srcs = (0..n).map(|_| r.u8()).collect();
                let g = r.u8();
                let global = (flags & 4 != 0).then_some(g);
                if flags & 8 != 0 {
                    Op::SpawnHold { srcs, take: flags & 1 != 0, global }
                } else {
                    Op::SpawnExit { srcs, take: flags & 1 != 0, collect: flags & 2 != 0, global }
                }
            }
            19 => Op::Release { h: r.u8() },
            21 => Op::Weak { dst: r.u8(), src: r.u8() },
            22 => Op::Deref { dst: r.u8(), w: r.u8() },
            23 => Op::AddCleanup { obj: r.u8() },
            24 => Op::EphChain { at: r.u8(), len: r.u8() },
            _ => Op::Collect,
        };
        ops.push(op);
    }
    ops
}

/// Decodes a section op (after an op byte of 250 or more).
fn decode_section(r: &mut Reader<'_>) -> SecOp {
    match r.u8() % 13 {
        0 => SecOp::Alloc { dst: r.u8(), rec: r.u8(), src: r.u8(), init: r.u8() & 1 == 1 },
        1 => SecOp::Array { dst: r.u8(), tagged: r.u8() & 1 == 1, len: r.u8() },
        2 => SecOp::Bytes { dst: r.u8(), len: r.u16(), seed: r.u8() },
        3 => SecOp::Store { obj: r.u8(), field: r.u8(), src: r.u8(), shape: r.u8() },
        4 => SecOp::Load { dst: r.u8(), obj: r.u8(), field: r.u8(), shape: r.u8() },
        5 => SecOp::WriteWord { obj: r.u8(), field: r.u8(), v: r.u64(), shape: r.u8() },
        6 => SecOp::WriteBytes {
            obj: r.u8(),
            offset: r.u16(),
            len: r.u8(),
            seed: r.u8(),
            shape: r.u8(),
        },
        7 => SecOp::Weak { dst: r.u8(), src: r.u8() },
        8 => SecOp::Deref { dst: r.u8(), w: r.u8() },
        9 => SecOp::Send { src: r.u8() },
        10 => SecOp::Recv { dst: r.u8() },
        11 => SecOp::StoreGlobal { g: r.u8(), src: r.u8() },
        _ => SecOp::LoadGlobal { dst: r.u8(), g: r.u8() },
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |a, i| a | (u64::from(self.u8()) << (8 * i)))
    }
}

/// The byte pattern of a byte-array op.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)) ^ (i >> 8) as u8).collect()
}

/// A value as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MVal {
    /// Null (the zero word).
    Null,
    /// An immediate integer.
    Int(i64),
    /// A reference to model object `id`.
    Obj(u32),
}

/// A model object's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MType {
    Rec(usize),
    RefArr,
    TagArr,
    Bytes,
    /// A weak handle (the heap's cell): one raw word, the target's address or 0.
    Cell,
}

/// One word of a model object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MWord {
    Val(MVal),
    Raw(u64),
}

#[derive(Clone, Debug)]
struct MObj {
    ty: MType,
    words: Vec<MWord>,
    bytes: Vec<u8>,
    /// The real object's address (objects never move).
    addr: usize,
    /// For a cell: its target, until a collection frees it.
    target: Option<u32>,
}

impl MObj {
    fn len(&self) -> usize {
        match self.ty {
            MType::Bytes => self.bytes.len(),
            MType::Cell => 1,
            _ => self.words.len(),
        }
    }
    fn kind(&self, i: usize) -> Result<WordKind, &'static str> {
        match self.ty {
            MType::Bytes => Err("WrongKind"),
            MType::Rec(r) => RECORDS[r].1.get(i).copied().ok_or("OutOfBounds"),
            MType::RefArr if i < self.words.len() => Ok(WordKind::Ref),
            MType::TagArr if i < self.words.len() => Ok(WordKind::Tagged),
            MType::Cell if i == 0 => Ok(WordKind::Raw),
            _ => Err("OutOfBounds"),
        }
    }
}

/// The model's whole state.
#[derive(Clone, Debug, Default)]
struct Model {
    objs: HashMap<u32, MObj>,
    next: u32,
    slots: Vec<MVal>,
    globals: Vec<MVal>,
    pending: VecDeque<MVal>,
    holders: Vec<Vec<MVal>>,
    /// The heap's weak cells by target.
    cells: HashMap<u32, u32>,
    /// Cleanups not yet due: id to target.
    cleanups: HashMap<u32, u32>,
    next_cleanup: u32,
    /// Cleanups whose targets a collection freed: each must run exactly once.
    due: HashSet<u32>,
}

impl Model {
    fn obj(&self, v: MVal) -> Result<(u32, &MObj), &'static str> {
        match v {
            MVal::Obj(id) => Ok((id, &self.objs[&id])),
            _ => Err("NotAReference"),
        }
    }

    fn roots(&self) -> impl Iterator<Item = MVal> + '_ {
        self.slots
            .iter()
            .chain(&self.globals)
            .chain(&self.pending)
            .chain(self.holders.iter().flatten())
            .copied()
    }

    /// The objects the mutator can reach: from the roots through reference and tagged
    /// fields, and through weak handles and weak fields to their targets (not to the cells
    /// in weak fields, which loads never return).
    fn observable(&self) -> HashSet<u32> {
        let mut seen: HashSet<u32> = HashSet::new();
        let mut stack: Vec<u32> = self
            .roots()
            .filter_map(|v| if let MVal::Obj(id) = v { Some(id) } else { None })
            .collect();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let ob = &self.objs[&id];
            if let Some(t) = ob.target {
                stack.push(t);
            }
            for (i, w) in ob.words.iter().enumerate() {
                if let MWord::Val(MVal::Obj(c)) = *w {
                    match ob.kind(i) {
                        Ok(WordKind::Weak) => stack.extend(self.objs[&c].target),
                        Ok(WordKind::Ephemeron) => {
                            if self.eph_value(ob, i) != MVal::Null {
                                stack.push(c);
                            }
                        }
                        _ => stack.push(c),
                    }
                }
            }
        }
        seen
    }

    /// What a load of ephemeron word `i` of `ob` reads: the value while the record's key
    /// (word 0) is unset or its cell's target is there, else null.
    fn eph_value(&self, ob: &MObj, i: usize) -> MVal {
        let MWord::Val(v) = ob.words[i] else { unreachable!("an ephemeron word holds a value") };
        match ob.words[0] {
            MWord::Val(MVal::Obj(c)) if self.objs[&c].target.is_none() => MVal::Null,
            _ => v,
        }
    }

    /// The key an ephemeron word of `ob` waits for: `None` if it is unset (the value is
    /// held strongly), `Some(None)` if gone, `Some(Some(t))` for target `t`.
    fn eph_key(&self, ob: &MObj) -> Option<Option<u32>> {
        match ob.words[0] {
            MWord::Val(MVal::Obj(c)) => Some(self.objs[&c].target),
            _ => None,
        }
    }

    /// A collection, with `extra` roots besides the model's (values held by a goroutine the
    /// model does not track): keeps what is strongly reachable from the roots and the
    /// table's cells, clears and unlists the cells of what it frees, and makes their
    /// cleanups due. Returns the number of objects left.
    fn collect(&mut self, extra: &[MVal]) -> usize {
        let mut seen: HashSet<u32> = HashSet::new();
        let mut stack: Vec<u32> = self
            .roots()
            .chain(extra.iter().copied())
            .filter_map(|v| if let MVal::Obj(id) = v { Some(id) } else { None })
            .chain(self.cells.values().copied())
            .collect();
        // Ephemeron values by the key they wait for.
        let mut waiting: HashMap<u32, Vec<u32>> = HashMap::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            stack.extend(waiting.remove(&id).unwrap_or_default());
            let ob = &self.objs[&id];
            for (i, w) in ob.words.iter().enumerate() {
                if let MWord::Val(MVal::Obj(c)) = *w {
                    if ob.kind(i) == Ok(WordKind::Ephemeron) {
                        match self.eph_key(ob) {
                            Some(None) => {}
                            Some(Some(t)) if !seen.contains(&t) => {
                                waiting.entry(t).or_default().push(c)
                            }
                            _ => stack.push(c),
                        }
                    } else {
                        stack.push(c);
                    }
                }
            }
        }
        self.objs.retain(|id, _| seen.contains(id));
        let dead: Vec<u32> = self.cells.keys().copied().filter(|t| !seen.contains(t)).collect();
        for t in dead {
            let c = self.cells.remove(&t).expect("listed");
            self.objs.get_mut(&c).expect("a listed cell is marked").target = None;
        }
        let due: Vec<u32> =
            self.cleanups.iter().filter(|(_, t)| !seen.contains(t)).map(|(&id, _)| id).collect();
        for id in due {
            self.cleanups.remove(&id);
            self.due.insert(id);
        }
        self.objs.len()
    }
}

/// The variant name of an error, to compare with the model's prediction.
pub fn err_name(e: &GcError) -> &'static str {
    match e {
        GcError::Alloc(_) => "Alloc",
        GcError::Type(_) => "Type",
        GcError::WrongRuntime => "WrongRuntime",
        GcError::Runtime(_) => "Runtime",
        GcError::NoP => "NoP",
        GcError::StaleSlot => "StaleSlot",
        GcError::NotAReference { .. } => "NotAReference",
        GcError::NotAnInteger { .. } => "NotAnInteger",
        GcError::IntegerOutOfRange { .. } => "IntegerOutOfRange",
        GcError::OutOfBounds { .. } => "OutOfBounds",
        GcError::WrongKind { .. } => "WrongKind",
        GcError::WrongHeap => "WrongHeap",
        GcError::MutatorActive => "MutatorActive",
        GcError::Closed => "Closed",
        GcError::NestedSection => "NestedSection",
        GcError::NoFrame => "NoFrame",
        GcError::SlotOutOfFrame { .. } => "SlotOutOfFrame",
        GcError::UnknownFunction { .. } => "UnknownFunction",
    }
}

/// The types the ops use, registered once per heap (looked up if already there).
#[derive(Clone, Debug)]
pub struct Types {
    recs: Vec<TypeId>,
    ref_arr: TypeId,
    tag_arr: TypeId,
    bytes: TypeId,
}

fn register(gc: &Gc, desc: TypeDesc) -> TypeId {
    match gc.types().register(desc) {
        Ok(id) => id,
        Err(safepoint_gc::TypeError::DuplicateName { existing, .. }) => existing,
        Err(e) => panic!("registering a model type: {e}"),
    }
}

impl Types {
    /// Registers (or finds) the model's types in `gc`.
    pub fn new(gc: &Gc) -> Types {
        Types {
            recs: RECORDS
                .iter()
                .map(|(n, w)| {
                    register(gc, TypeDesc::Record { name: (*n).into(), words: w.to_vec() })
                })
                .collect(),
            ref_arr: register(gc, TypeDesc::RefArray { name: "model.refs".into() }),
            tag_arr: register(gc, TypeDesc::TaggedArray { name: "model.tagged".into() }),
            bytes: register(gc, TypeDesc::ByteArray { name: "model.bytes".into() }),
        }
    }

    /// The shape of each model type (arrays' of length 0: any length will do).
    fn shapes(&self, gc: &Gc) -> Vec<(MType, Shape)> {
        let mut types: Vec<MType> = (0..RECORDS.len()).map(MType::Rec).collect();
        types.extend([MType::RefArr, MType::TagArr, MType::Bytes]);
        types.into_iter().map(|t| (t, Shape::new(gc, self.id(t), 0).expect("a shape"))).collect()
    }

    fn id(&self, t: MType) -> TypeId {
        match t {
            MType::Rec(r) => self.recs[r],
            MType::RefArr => self.ref_arr,
            MType::TagArr => self.tag_arr,
            MType::Bytes => self.bytes,
            MType::Cell => unreachable!("the cells' type is looked up by name"),
        }
    }
}

enum HoldCmd {
    Show,
    Exit,
}

/// A goroutine keeping values in its slots.
struct Holder {
    cmd: Arc<Chan<HoldCmd>>,
    back: RefChan,
    join: Option<JoinHandle<()>>,
}

impl Drop for Holder {
    fn drop(&mut self) {
        // If the runner unwinds, the goroutine must not wait for a command forever.
        self.cmd.close();
    }
}

/// The real heap and the model side by side. Runs on a goroutine of the heap's runtime.
pub struct Runner<'a> {
    gc: Gc,
    m: &'a mut Mutator,
    slots: &'a [Slot],
    types: Types,
    globals: Vec<Arc<Global>>,
    pending: RefChan,
    holders: Vec<Holder>,
    model: Model,
    /// Collections run by `Collect` ops.
    pub collections: usize,
    /// Weak handles, weak fields and cleanups are modelled (the heap never collects by
    /// itself).
    weak: bool,
    /// The ids of the cleanups that have run, in order.
    ran: Arc<std::sync::Mutex<Vec<u32>>>,
    /// The section goroutine, started by the first section op.
    sec: Option<SecWorker>,
    /// The shapes section ops name: each model type's (length 0 for arrays).
    shapes: Vec<(MType, Shape)>,
    /// Section ops so far (every third one waits between sections instead of trying inside
    /// one).
    sec_ops: usize,
}

/// Runs `ops` on a fresh mutator of the running goroutine, verifying after each one, and
/// leaves nothing reachable behind (a last collection must find the heap empty of the
/// model's objects).
///
/// # Panics
/// At the first difference between the heap and the model, with the op's index.
pub fn run(gc: &Gc, ops: &[Op]) -> usize {
    let types = Types::new(gc);
    let shapes = types.shapes(gc);
    let mut m = Mutator::new(gc).expect("a mutator for the model");
    m.collect();
    let base = gc.stats().heap.live_objects;
    assert_eq!(base, 0, "the heap is not empty before the run");
    let collections = m.scope_n(SLOTS, |m, slots| {
        let mut r = Runner {
            gc: gc.clone(),
            globals: (0..GLOBALS).map(|_| Arc::new(Global::new(gc))).collect(),
            pending: RefChan::new(gc, MAX_PENDING),
            m,
            slots,
            types,
            holders: Vec::new(),
            model: Model {
                slots: vec![MVal::Null; SLOTS],
                globals: vec![MVal::Null; GLOBALS],
                ..Model::default()
            },
            collections: 0,
            weak: gc.config().gc_percent == u32::MAX,
            ran: Arc::new(std::sync::Mutex::new(Vec::new())),
            sec: None,
            shapes,
            sec_ops: 0,
        };
        for (i, op) in ops.iter().enumerate() {
            r.apply(op).unwrap_or_else(|e| panic!("op {i} {op:?}: {e}"));
            r.verify().unwrap_or_else(|e| panic!("after op {i} {op:?}: {e}"));
        }
        r.finish();
        r.collections
    });
    drop(m);
    collections
}

fn fits_immediate(v: i64) -> bool {
    (v << 1) >> 1 == v
}

impl Runner<'_> {
    fn slot(&self, i: u8) -> (Slot, usize) {
        let i = i as usize % SLOTS;
        (self.slots[i], i)
    }

    /// A field index for the object in model slot `obj`: sometimes one past the end.
    fn field(&self, obj: usize, f: u8) -> usize {
        match self.model.slots[obj] {
            MVal::Obj(id) => f as usize % (self.model.objs[&id].len() + 2),
            _ => f as usize % 4,
        }
    }

    fn compare<T: std::fmt::Debug + PartialEq>(
        what: &str,
        want: Result<T, &'static str>,
        got: Result<T, GcError>,
    ) -> Result<(), String> {
        let got_n = got.as_ref().map_err(err_name);
        let same = match (&want, &got_n) {
            (Ok(a), Ok(b)) => a == *b,
            (Err(a), Err(b)) => a == b,
            _ => false,
        };
        if same { Ok(()) } else { Err(format!("{what}: model says {want:?}, heap says {got:?}")) }
    }

    /// What a weak read of the model slot `wv` gives: the cell's object (or `None` once it
    /// is gone), or the error of a read of anything else.
    fn want_deref(&self, wv: usize) -> Result<Option<u32>, &'static str> {
        match self.model.slots[wv] {
            MVal::Obj(c) if self.model.objs[&c].ty == MType::Cell => Ok(self.model.objs[&c].target),
            MVal::Obj(_) => Err("WrongKind"),
            _ => Err("NotAReference"),
        }
    }

    /// Puts model object `t`'s weak handle in model slot `d`: its cell, made on first use.
    fn weak_into(&mut self, d: usize, t: u32) {
        let c = match self.model.cells.get(&t).copied() {
            Some(c) => c,
            None => {
                self.alloc_into(d, MType::Cell, Vec::new(), Vec::new());
                let MVal::Obj(c) = self.model.slots[d] else { unreachable!() };
                self.model.objs.get_mut(&c).unwrap().target = Some(t);
                self.model.cells.insert(t, c);
                c
            }
        };
        self.model.slots[d] = MVal::Obj(c);
    }

    fn alloc_into(&mut self, dst: usize, ty: MType, words: Vec<MWord>, bytes: Vec<u8>) {
        let addr = self.m.word(self.slots[dst]).expect("fresh object's word");
        let id = self.model.next;
        self.model.next += 1;
        self.model.objs.insert(id, MObj { ty, words, bytes, addr, target: None });
        self.model.slots[dst] = MVal::Obj(id);
    }

    /// Performs `op` on the heap and the model.
    pub fn apply(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Alloc { dst, rec } => {
                let (s, d) = self.slot(dst);
                let kinds = if self.weak { RECORDS.len() } else { RECORDS.len() - WEAK_RECORDS };
                let r = rec as usize % kinds;
                self.m.alloc(s, self.types.recs[r]).map_err(|e| format!("alloc: {e}"))?;
                let words =
                    RECORDS[r]
                        .1
                        .iter()
                        .map(|k| {
                            if *k == WordKind::Raw { MWord::Raw(0) } else { MWord::Val(MVal::Null) }
                        })
                        .collect();
                self.alloc_into(d, MType::Rec(r), words, Vec::new());
            }
            Op::AllocArray { dst, tagged, len } => {
                let (s, d) = self.slot(dst);
                let len = len as usize % 40;
                let t = if tagged { MType::TagArr } else { MType::RefArr };
                self.m
                    .alloc_array(s, self.types.id(t), len)
                    .map_err(|e| format!("alloc_array: {e}"))?;
                self.alloc_into(d, t, vec![MWord::Val(MVal::Null); len], Vec::new());
            }
            Op::AllocBytes { dst, len, seed } => {
                let (s, d) = self.slot(dst);
                let data = pattern(seed, len as usize % (MAX_BYTES + 1));
                self.m
                    .alloc_bytes(s, self.types.bytes, &data)
                    .map_err(|e| format!("alloc_bytes: {e}"))?;
                self.alloc_into(d, MType::Bytes, Vec::new(), data);
            }
            Op::Store { obj, field, src } => {
                let ((os, o), (ss, sv)) = (self.slot(obj), self.slot(src));
                let i = self.field(o, field);
                let v = self.model.slots[sv];
                let want = self.model.obj(self.model.slots[o]).and_then(|(id, ob)| {
                    match (ob.kind(i)?, v) {
                        (WordKind::Raw, _) => Err("WrongKind"),
                        (WordKind::Ref | WordKind::Weak, MVal::Int(_)) => Err("NotAReference"),
                        (k, _) => Ok((id, k)),
                    }
                });
                let got = self.m.store(os, i, ss);
                Self::compare("store", want.map(|_| ()), got)?;
                if let Ok((id, k)) = want {
                    self.stored(id, k, i, v, ss)?;
                }
            }
            Op::Load { dst, obj, field } => {
                let ((ds, d), (os, o)) = (self.slot(dst), self.slot(obj));
                let i = self.field(o, field);
                let want =
                    self.model.obj(self.model.slots[o]).and_then(|(_, ob)| match ob.kind(i)? {
                        WordKind::Raw => Err("WrongKind"),
                        k => match ob.words[i] {
                            MWord::Val(MVal::Obj(c)) if k == WordKind::Weak => {
                                Ok(self.model.objs[&c].target.map_or(MVal::Null, MVal::Obj))
                            }
                            MWord::Val(_) if k == WordKind::Ephemeron => {
                                Ok(self.model.eph_value(ob, i))
                            }
                            MWord::Val(v) => Ok(v),
                            MWord::Raw(_) => unreachable!("a raw word in a value field"),
                        },
                    });
                let got = self.m.load(ds, os, i);
                Self::compare("load", want.map(|_| ()), got)?;
                if let Ok(v) = want {
                    self.model.slots[d] = v;
                }
            }
            Op::Copy { dst, src } => {
                let ((ds, d), (ss, sv)) = (self.slot(dst), self.slot(src));
                self.m.copy(ds, ss).map_err(|e| format!("copy: {e}"))?;
                self.model.slots[d] = self.model.slots[sv];
            }
            Op::Clear { dst } => {
                let (s, d) = self.slot(dst);
                self.m.clear(s).map_err(|e| format!("clear: {e}"))?;
                self.model.slots[d] = MVal::Null;
            }
            Op::SetInt { dst, v } => {
                let (s, d) = self.slot(dst);
                let want = if fits_immediate(v) { Ok(()) } else { Err("IntegerOutOfRange") };
                Self::compare("set_int", want, self.m.set_int(s, v))?;
                if want.is_ok() {
                    self.model.slots[d] = MVal::Int(v);
                }
            }
            Op::ReadInt { src } => {
                let (s, sv) = self.slot(src);
                let want = match self.model.slots[sv] {
                    MVal::Int(i) => Ok(i),
                    _ => Err("NotAnInteger"),
                };
                Self::compare("int", want, self.m.int(s))?;
            }
            Op::WriteWord { obj, field, v } => {
                let (os, o) = self.slot(obj);
                let i = self.field(o, field);
                let want =
                    self.model.obj(self.model.slots[o]).and_then(|(id, ob)| match ob.kind(i) {
                        // A handle's word is the collector's: refused, whatever the index.
                        _ if ob.ty == MType::Cell => Err("WrongKind"),
                        Ok(WordKind::Raw) => Ok(id),
                        Ok(_) => Err("WrongKind"),
                        Err(e) => Err(e),
                    });
                Self::compare("write_word", want.map(|_| ()), self.m.write_word(os, i, v))?;
                if let Ok(id) = want {
                    self.model.objs.get_mut(&id).unwrap().words[i] = MWord::Raw(v);
                }
            }
            Op::ReadWord { obj, field } => {
                let (os, o) = self.slot(obj);
                let i = self.field(o, field);
                let want =
                    self.model.obj(self.model.slots[o]).and_then(|(_, ob)| match ob.kind(i)? {
                        // A handle's word: its target's plain address, or 0 once cleared.
                        WordKind::Raw if ob.ty == MType::Cell => Ok(ob.target.map_or(0, |t| {
                            (self.model.objs[&t].addr & !self.gc.config().tag_rule.mask) as u64
                        })),
                        WordKind::Raw => match ob.words[i] {
                            MWord::Raw(v) => Ok(v),
                            MWord::Val(_) => unreachable!("a value in a raw field"),
                        },
                        _ => Err("WrongKind"),
                    });
                Self::compare("read_word", want, self.m.read_word(os, i))?;
            }
            Op::WriteBytes { obj, offset, len, seed } => {
                let (os, o) = self.slot(obj);
                let data = pattern(seed, len as usize);
                // Sometimes past the end.
                let offset = match self.model.slots[o] {
                    MVal::Obj(id) => offset as usize % (self.model.objs[&id].len() + 8),
                    _ => offset as usize,
                };
                let want = self.model.obj(self.model.slots[o]).and_then(|(id, ob)| {
                    if ob.ty != MType::Bytes {
                        Err("WrongKind")
                    } else if offset + data.len() > ob.bytes.len() {
                        Err("OutOfBounds")
                    } else {
                        Ok(id)
                    }
                });
                Self::compare(
                    "write_bytes",
                    want.map(|_| ()),
                    self.m.write_bytes(os, offset, &data),
                )?;
                if let Ok(id) = want {
                    self.model.objs.get_mut(&id).unwrap().bytes[offset..offset + data.len()]
                        .copy_from_slice(&data);
                }
            }
            Op::StoreGlobal { g, src } => {
                let g = g as usize % GLOBALS;
                let (s, sv) = self.slot(src);
                self.m
                    .store_global(&self.globals[g], s)
                    .map_err(|e| format!("store_global: {e}"))?;
                self.model.globals[g] = self.model.slots[sv];
            }
            Op::LoadGlobal { dst, g } => {
                let g = g as usize % GLOBALS;
                let (s, d) = self.slot(dst);
                self.m.load_global(s, &self.globals[g]).map_err(|e| format!("load_global: {e}"))?;
                self.model.slots[d] = self.model.globals[g];
            }
            Op::Send { src } => {
                if self.model.pending.len() < MAX_PENDING {
                    let (s, sv) = self.slot(src);
                    self.m.send(&self.pending, s).map_err(|e| format!("send: {e}"))?;
                    self.model.pending.push_back(self.model.slots[sv]);
                }
            }
            Op::Recv { dst } => {
                if let Some(v) = self.model.pending.pop_front() {
                    let (s, d) = self.slot(dst);
                    let got = self.m.recv(&self.pending, s).map_err(|e| format!("recv: {e}"))?;
                    if !got {
                        return Err("recv: the channel says closed".into());
                    }
                    self.model.slots[d] = v;
                }
            }
            Op::SpawnExit { ref srcs, take, collect, global } => {
                let srcs: Vec<(Slot, usize)> =
                    srcs.iter().take(MAX_HANDED).map(|&s| self.slot(s)).collect();
                let ch = self.hand_over(&srcs)?;
                let vals: Vec<MVal> = srcs.iter().map(|&(_, i)| self.model.slots[i]).collect();
                if take {
                    self.take(&srcs)?;
                }
                let g = global.map(|g| g as usize % GLOBALS);
                let gl = g.map(|g| self.globals[g].clone());
                let gc = self.gc.clone();
                let n = srcs.len();
                let h = safepoint_sched::go(move || {
                    let mut m = Mutator::new(&gc).expect("a mutator in the child");
                    m.scope_n(n.max(1), |m, s| {
                        for &slot in &s[..n] {
                            assert!(m.recv(&ch, slot).expect("child recv"), "channel closed");
                        }
                        if collect {
                            m.collect();
                        }
                        if let Some(gl) = &gl {
                            m.store_global(gl, s[0]).expect("child store_global");
                        }
                    });
                });
                h.join().map_err(|e| format!("child goroutine panicked: {:?}", e.message()))?;
                if collect && self.weak {
                    // The child's collection ran with its values as roots.
                    self.model.collect(&vals);
                    self.check_cleanups()?;
                }
                if let Some(g) = g {
                    self.model.globals[g] = vals.first().copied().unwrap_or(MVal::Null);
                }
            }
            Op::SpawnHold { ref srcs, take, global } => {
                if self.holders.len() >= MAX_HOLDERS {
                    return Ok(());
                }
                let srcs: Vec<(Slot, usize)> =
                    srcs.iter().take(MAX_HANDED).map(|&s| self.slot(s)).collect();
                let ch = self.hand_over(&srcs)?;
                let mut vals: Vec<MVal> = srcs.iter().map(|&(_, i)| self.model.slots[i]).collect();
                if take {
                    self.take(&srcs)?;
                }
                let g = global.map(|g| g as usize % GLOBALS);
                let gl = g.map(|g| self.globals[g].clone());
                if let Some(g) = g {
                    vals.push(self.model.globals[g]);
                }
                let gc = self.gc.clone();
                let n = srcs.len();
                let cmd: Arc<Chan<HoldCmd>> = Arc::new(Chan::new(1));
                let ready: Arc<Chan<()>> = Arc::new(Chan::new(1));
                let back = RefChan::new(&self.gc, vals.len().max(1));
                let (cmd2, ready2, back2) = (cmd.clone(), ready.clone(), back.clone());
                let join = safepoint_sched::go(move || {
                    let mut m = Mutator::new(&gc).expect("a mutator in the holder");
                    m.scope_n(n + 1, |m, s| {
                        for &slot in &s[..n] {
                            assert!(m.recv(&ch, slot).expect("holder recv"), "channel closed");
                        }
                        let mut held = n;
                        if let Some(gl) = &gl {
                            m.load_global(s[n], gl).expect("holder load_global");
                            held += 1;
                        }
                        ready2.send(());
                        while let Ok(c) = cmd2.recv() {
                            match c {
                                HoldCmd::Show => {
                                    for &slot in &s[..held] {
                                        m.send(&back2, slot).expect("holder send");
                                    }
                                }
                                HoldCmd::Exit => return,
                            }
                        }
                    });
                });
                ready.recv().map_err(|_| "the holder died before it was ready".to_string())?;
                self.holders.push(Holder { cmd, back, join: Some(join) });
                self.model.holders.push(vals);
            }
            Op::Release { h } => {
                if !self.holders.is_empty() {
                    let h = h as usize % self.holders.len();
                    let mut holder = self.holders.remove(h);
                    self.model.holders.remove(h);
                    holder.cmd.send(HoldCmd::Exit);
                    let j = holder.join.take().expect("a holder is joined once");
                    j.join().map_err(|e| format!("holder panicked: {:?}", e.message()))?;
                }
            }
            Op::Collect => {
                self.m.collect();
                self.collections += 1;
                if self.weak {
                    let want = self.model.collect(&[]) as u64;
                    let got = self.gc.stats().heap.live_objects;
                    if got != want {
                        return Err(format!(
                            "after collect(): {got} live objects in the heap, {want} in the model"
                        ));
                    }
                    let handles = self.gc.weak_stats().handles;
                    if handles != self.model.cells.len() {
                        return Err(format!(
                            "after collect(): {handles} weak handles listed, the model has {}",
                            self.model.cells.len()
                        ));
                    }
                    self.check_cleanups()?;
                } else {
                    // Without weak handles, what the model can reach is what is reachable.
                    let want = self.model.observable();
                    self.model.objs.retain(|id, _| want.contains(id));
                    let got = self.gc.stats().heap.live_objects;
                    if got != want.len() as u64 {
                        return Err(format!(
                            "after collect(): {got} live objects in the heap, {} reachable in \
                             the model",
                            want.len()
                        ));
                    }
                }
            }
            Op::Weak { dst, src } => {
                if !self.weak {
                    return Ok(());
                }
                let ((ds, d), (ss, sv)) = (self.slot(dst), self.slot(src));
                let want = match self.model.slots[sv] {
                    MVal::Obj(t) => Ok(t),
                    _ => Err("NotAReference"),
                };
                Self::compare("weak", want.map(|_| ()), self.m.weak(ds, ss))?;
                if let Ok(t) = want {
                    self.weak_into(d, t);
                }
            }
            Op::Deref { dst, w } => {
                if !self.weak {
                    return Ok(());
                }
                let ((ds, d), (ws, wv)) = (self.slot(dst), self.slot(w));
                let want = self.want_deref(wv);
                let got = self.m.deref(ds, ws);
                Self::compare("deref", want.map(|t| t.is_some()), got)?;
                if let Ok(t) = want {
                    self.model.slots[d] = t.map_or(MVal::Null, MVal::Obj);
                }
            }
            Op::EphChain { at, len } => {
                if !self.weak {
                    return Ok(());
                }
                let s = |k: u8| at.wrapping_add(k);
                let (table, key, value, entry, next) = (s(0), s(1), s(2), s(3), s(4));
                let n = len % 24;
                let (pair, eph) = (0u8, (RECORDS.len() - 1) as u8);
                let mut ops = vec![
                    Op::AllocArray { dst: table, tagged: false, len: n },
                    Op::Clear { dst: next },
                ];
                for i in (0..n).rev() {
                    ops.extend([
                        Op::Alloc { dst: key, rec: pair },
                        Op::Alloc { dst: value, rec: pair },
                        Op::Store { obj: value, field: 0, src: next },
                        Op::Alloc { dst: entry, rec: eph },
                        Op::Store { obj: entry, field: 0, src: key },
                        Op::Store { obj: entry, field: 1, src: value },
                        Op::Store { obj: table, field: i, src: entry },
                        Op::Copy { dst: next, src: key },
                    ]);
                }
                ops.extend([
                    Op::Clear { dst: key },
                    Op::Clear { dst: value },
                    Op::Clear { dst: entry },
                ]);
                for op in &ops {
                    self.apply(op)?;
                }
            }
            Op::Section(ref sop) => self.apply_section(sop)?,
            Op::AddCleanup { obj } => {
                if !self.weak {
                    return Ok(());
                }
                let (os, o) = self.slot(obj);
                let want = match self.model.slots[o] {
                    MVal::Obj(t) => Ok(t),
                    _ => Err("NotAReference"),
                };
                let id = self.model.next_cleanup;
                let ran = self.ran.clone();
                let got = self.m.add_cleanup(os, move || ran.lock().unwrap().push(id));
                Self::compare("add_cleanup", want.map(|_| ()), got.map(drop))?;
                if let Ok(t) = want {
                    self.model.next_cleanup += 1;
                    self.model.cleanups.insert(id, t);
                }
            }
        }
        Ok(())
    }

    /// The model's side of a store of `v` (from slot `src`) into word `i` (of kind `k`) of
    /// object `id`, which the heap accepted.
    fn stored(&mut self, id: u32, k: WordKind, i: usize, v: MVal, src: Slot) -> Result<(), String> {
        // A new key into an ephemeron whose old key is gone clears its values.
        let ob = &self.model.objs[&id];
        if k == WordKind::Weak
            && i == 0
            && matches!(ob.ty, MType::Rec(r) if RECORDS[r].1.contains(&WordKind::Ephemeron))
            && self.model.eph_key(ob) == Some(None)
        {
            let ob = self.model.objs.get_mut(&id).unwrap();
            for j in 0..ob.words.len() {
                if ob.kind(j) == Ok(WordKind::Ephemeron) {
                    ob.words[j] = MWord::Val(MVal::Null);
                }
            }
        }
        let v = match (k, v) {
            // A weak field holds the target's cell.
            (WordKind::Weak, MVal::Obj(t)) => MVal::Obj(self.cell_for(t, src)?),
            _ => v,
        };
        self.model.objs.get_mut(&id).unwrap().words[i] = MWord::Val(v);
        Ok(())
    }

    /// The cell of model object `t`: the model's, or the heap's new one (read back through a
    /// scratch handle, the slot of the op having been written already).
    fn cell_for(&mut self, t: u32, src: Slot) -> Result<u32, String> {
        if let Some(&c) = self.model.cells.get(&t) {
            return Ok(c);
        }
        // The store made the cell: `weak` on the store's source finds it.
        let addr = self.m.scope(|m, [w]| -> Result<usize, String> {
            m.weak(w, src).map_err(|e| format!("weak: {e}"))?;
            m.word(w).map_err(|e| format!("word: {e}"))
        })?;
        let c = self.model.next;
        self.model.next += 1;
        self.model.objs.insert(
            c,
            MObj { ty: MType::Cell, words: Vec::new(), bytes: Vec::new(), addr, target: Some(t) },
        );
        self.model.cells.insert(t, c);
        Ok(c)
    }

    /// The cleanups that have run are exactly the due ones, each once: waits (10 s at most)
    /// for the cleanup goroutine to run the due ones.
    fn check_cleanups(&self) -> Result<(), String> {
        let t = std::time::Instant::now();
        loop {
            let ran = self.ran.lock().unwrap().clone();
            let set: HashSet<u32> = ran.iter().copied().collect();
            if set.len() != ran.len() {
                return Err(format!("a cleanup ran twice: {ran:?}"));
            }
            if let Some(x) = set.iter().find(|x| !self.model.due.contains(x)) {
                return Err(format!("cleanup {x} ran, but its object is not freed"));
            }
            if set.len() == self.model.due.len() {
                return Ok(());
            }
            if t.elapsed() > std::time::Duration::from_secs(10) {
                return Err(format!(
                    "cleanups {:?} are due and have not run",
                    self.model.due.difference(&set).collect::<Vec<_>>()
                ));
            }
            safepoint_sched::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Sends the values of `srcs` on a fresh channel with room for all of them.
    fn hand_over(&mut self, srcs: &[(Slot, usize)]) -> Result<RefChan, String> {
        let ch = RefChan::new(&self.gc, srcs.len().max(1));
        for &(s, _) in srcs {
            self.m.send(&ch, s).map_err(|e| format!("send to child: {e}"))?;
        }
        Ok(ch)
    }

    fn take(&mut self, srcs: &[(Slot, usize)]) -> Result<(), String> {
        for &(s, i) in srcs {
            self.m.clear(s).map_err(|e| format!("clear: {e}"))?;
            self.model.slots[i] = MVal::Null;
        }
        Ok(())
    }

    /// Walks everything the model says is reachable and compares it with the heap.
    pub fn verify(&mut self) -> Result<(), String> {
        let observable = self.model.observable();
        if !self.weak {
            // Nothing unobservable can come back: forget it.
            self.model.objs.retain(|id, _| observable.contains(id));
        }
        let n = observable.len() + 1;
        let (m, slots, globals, pending, holders, model, types) = (
            &mut *self.m,
            self.slots,
            &self.globals,
            &self.pending,
            &self.holders,
            &self.model,
            &self.types,
        );
        let extra = GLOBALS + MAX_PENDING + MAX_HOLDERS * (MAX_HANDED + 1);
        m.scope_n(n + extra, |m, s| {
            let (obj_slots, rest) = s.split_at(n);
            let mut roots: Vec<(Slot, MVal, String)> = Vec::new();
            for (i, &sl) in slots.iter().enumerate() {
                roots.push((sl, model.slots[i], format!("slot {i}")));
            }
            // Roots outside the main goroutine's slots are fetched into scratch slots.
            let mut k = 0;
            for (g, gl) in globals.iter().enumerate() {
                m.load_global(rest[k], gl).map_err(|e| format!("load_global: {e}"))?;
                roots.push((rest[k], model.globals[g], format!("global {g}")));
                k += 1;
            }
            // Rotate the pending channel once: receive every value, send it back in order.
            let start = k;
            for (i, v) in model.pending.iter().enumerate() {
                if !m.recv(pending, rest[k]).map_err(|e| format!("recv: {e}"))? {
                    return Err("pending channel closed".into());
                }
                roots.push((rest[k], *v, format!("value {i} in flight")));
                k += 1;
            }
            for &sl in &rest[start..k] {
                m.send(pending, sl).map_err(|e| format!("send: {e}"))?;
            }
            for (h, (holder, vals)) in holders.iter().zip(&model.holders).enumerate() {
                holder.cmd.send(HoldCmd::Show);
                for (i, v) in vals.iter().enumerate() {
                    if !m.recv(&holder.back, rest[k]).map_err(|e| format!("recv: {e}"))? {
                        return Err(format!("holder {h} closed its channel"));
                    }
                    roots.push((rest[k], *v, format!("holder {h} value {i}")));
                    k += 1;
                }
            }
            walk(m, model, types, obj_slots, rest[k], &roots, observable.len())
        })
    }

    /// Releases every holder, drains the channel, clears every root, collects, and checks
    /// that the heap is empty.
    fn finish(&mut self) {
        if let Some(mut w) = self.sec.take() {
            w.jobs.close();
            if let Some(j) = w.join.take() {
                j.join()
                    .unwrap_or_else(|e| panic!("section goroutine panicked: {:?}", e.message()));
            }
        }
        for mut h in std::mem::take(&mut self.holders) {
            h.cmd.send(HoldCmd::Exit);
            if let Some(j) = h.join.take() {
                j.join().unwrap_or_else(|e| panic!("holder panicked: {:?}", e.message()));
            }
        }
        self.model.holders.clear();
        self.pending.close();
        let tmp = self.slots[0];
        while self.m.recv(&self.pending, tmp).expect("drain") {}
        self.model.pending.clear();
        for &s in self.slots {
            self.m.clear(s).expect("clear");
        }
        self.model.slots.iter_mut().for_each(|v| *v = MVal::Null);
        for (g, gl) in self.globals.iter().enumerate() {
            self.m.store_global(gl, self.slots[0]).expect("store_global");
            self.model.globals[g] = MVal::Null;
        }
        self.m.collect();
        self.m.collect();
        if self.weak {
            self.model.collect(&[]);
            self.model.collect(&[]);
            // A handle to a handle lives while its target is listed: a chain of them goes one
            // link per collection.
            let mut rounds = 0;
            while !self.model.objs.is_empty() {
                rounds += 1;
                assert!(rounds < 100, "the model's heap does not empty");
                self.m.collect();
                self.model.collect(&[]);
            }
            self.check_cleanups().unwrap_or_else(|e| panic!("at the end: {e}"));
            assert!(self.model.cleanups.is_empty() && self.model.cells.is_empty());
        }
        let live = self.gc.stats().heap.live_objects;
        assert_eq!(live, 0, "objects left alive with every root cleared");
    }
}

/// Compares the value in slot `s` with the model's `v`.
fn check_val(
    m: &Mutator,
    model: &Model,
    s: Slot,
    v: MVal,
    what: &dyn Fn() -> String,
) -> Result<(), String> {
    let w = m.word(s).map_err(|e| format!("{}: {e}", what()))?;
    let ok = match v {
        MVal::Null => w == 0,
        MVal::Int(i) => m.int(s) == Ok(i),
        MVal::Obj(id) => w == model.objs[&id].addr,
    };
    if ok { Ok(()) } else { Err(format!("{}: holds {w:#x}, model says {v:?}", what())) }
}

/// Checks the roots' values and every object reachable from them, breadth first: each object
/// is copied into a slot of its own in `obj_slots`; `tmp` takes loaded fields.
fn walk(
    m: &mut Mutator,
    model: &Model,
    types: &Types,
    obj_slots: &[Slot],
    tmp: Slot,
    roots: &[(Slot, MVal, String)],
    observable: usize,
) -> Result<(), String> {
    let mut at: HashMap<u32, Slot> = HashMap::new();
    let mut queue: VecDeque<u32> = VecDeque::new();
    for (s, v, what) in roots {
        check_val(m, model, *s, *v, &|| what.clone())?;
        if let MVal::Obj(id) = *v {
            enqueue(m, &mut at, &mut queue, obj_slots, id, *s)?;
        }
    }
    let mut checked = 0;
    while let Some(id) = queue.pop_front() {
        checked += 1;
        let s = at[&id];
        let ob = &model.objs[&id];
        let e = |what: String| format!("object {id} ({:?} at {:#x}): {what}", ob.ty, ob.addr);
        let ty = m.type_of(s).map_err(|x| e(format!("type_of: {x}")))?;
        if ob.ty == MType::Cell {
            if m.gc().types().lookup(safepoint_gc::WEAK_TYPE_NAME) != Some(ty) {
                return Err(e(format!("type {ty:?}, expected the weak handles' type")));
            }
            if !m.is_weak(s).map_err(|x| e(format!("is_weak: {x}")))? {
                return Err(e("not a weak handle".into()));
            }
            let want = ob.target.map_or(0, |t| model.objs[&t].addr);
            let got = m.read_word(s, 0).map_err(|x| e(format!("read_word: {x}")))?;
            // The word holds the plain address; the model's is the slot value (tagged).
            let rule = m.gc().config().tag_rule;
            if got as usize != want & !rule.mask {
                return Err(e(format!("cell word {got:#x}, expected {want:#x}")));
            }
            let alive = m.deref(tmp, s).map_err(|x| e(format!("deref: {x}")))?;
            let v = ob.target.map_or(MVal::Null, MVal::Obj);
            if alive != ob.target.is_some() {
                return Err(e(format!("deref says {alive}, model says {v:?}")));
            }
            check_val(m, model, tmp, v, &|| e("deref".into()))?;
            if let MVal::Obj(c) = v {
                enqueue(m, &mut at, &mut queue, obj_slots, c, tmp)?;
            }
            continue;
        }
        if ty != types.id(ob.ty) {
            return Err(e(format!("type {ty:?}, expected {:?}", types.id(ob.ty))));
        }
        let len = m.len(s).map_err(|x| e(format!("len: {x}")))?;
        if len != ob.len() {
            return Err(e(format!("length {len}, expected {}", ob.len())));
        }
        if ob.ty == MType::Bytes {
            let b = m.bytes(s).map_err(|x| e(format!("bytes: {x}")))?;
            if !b.eq_bytes(&ob.bytes) {
                let got = b.to_vec();
                let i = got.iter().zip(&ob.bytes).position(|(a, b)| a != b).unwrap_or(0);
                return Err(e(format!("byte {i} is {:#x}, expected {:#x}", got[i], ob.bytes[i])));
            }
            continue;
        }
        for (i, w) in ob.words.iter().enumerate() {
            match *w {
                MWord::Raw(v) => {
                    let got = m.read_word(s, i).map_err(|x| e(format!("read_word {i}: {x}")))?;
                    if got != v {
                        return Err(e(format!("raw word {i} is {got:#x}, expected {v:#x}")));
                    }
                }
                MWord::Val(v) => {
                    m.load(tmp, s, i).map_err(|x| e(format!("load {i}: {x}")))?;
                    // A weak field loads its cell's target.
                    let v = match v {
                        MVal::Obj(c) if ob.kind(i) == Ok(WordKind::Weak) => {
                            model.objs[&c].target.map_or(MVal::Null, MVal::Obj)
                        }
                        _ if ob.kind(i) == Ok(WordKind::Ephemeron) => model.eph_value(ob, i),
                        v => v,
                    };
                    check_val(m, model, tmp, v, &|| e(format!("field {i}")))?;
                    if let MVal::Obj(c) = v {
                        enqueue(m, &mut at, &mut queue, obj_slots, c, tmp)?;
                    }
                }
            }
        }
    }
    if checked != observable {
        return Err(format!("walked {checked} objects, the model can reach {observable}"));
    }
    Ok(())
}

/// Gives object `id` (whose reference is in `from`) a slot of its own and queues it, unless
/// already seen.
fn enqueue(
    m: &mut Mutator,
    at: &mut HashMap<u32, Slot>,
    queue: &mut VecDeque<u32>,
    obj_slots: &[Slot],
    id: u32,
    from: Slot,
) -> Result<(), String> {
    if !at.contains_key(&id) {
        let s = obj_slots[at.len()];
        m.copy(s, from).map_err(|e| format!("copy: {e}"))?;
        at.insert(id, s);
        queue.push_back(id);
    }
    Ok(())
}

// ---- sections ----

/// What the section goroutine does for one op, on the values it receives into slots 0 and 1
/// of its frame; a value it gives back is in slot 2.
enum Work {
    Alloc { shape: Shape, init: bool },
    AllocBytes { shape: Shape, data: Vec<u8> },
    Store { shape: Shape, field: usize },
    Load { shape: Shape, field: usize },
    WriteWord { shape: Shape, field: usize, v: u64 },
    WriteBytes { shape: Shape, offset: usize, data: Vec<u8> },
    Weak,
    Deref,
    Send,
    Recv,
    StoreGlobal(Arc<Global>),
    LoadGlobal(Arc<Global>),
}

impl Work {
    /// The values it receives.
    fn inputs(&self) -> usize {
        match self {
            Work::Alloc { init: true, .. } | Work::Load { .. } | Work::WriteWord { .. } => 1,
            Work::WriteBytes { .. } | Work::Weak | Work::Deref | Work::Send => 1,
            Work::StoreGlobal(_) => 1,
            Work::Store { .. } => 2,
            _ => 0,
        }
    }

    /// Whether it gives a value back when it succeeds.
    fn gives(&self) -> bool {
        matches!(
            self,
            Work::Alloc { .. }
                | Work::AllocBytes { .. }
                | Work::Load { .. }
                | Work::Weak
                | Work::Deref
                | Work::Recv
                | Work::LoadGlobal(_)
        )
    }
}

/// One op for the section goroutine; `wait`: pass values by the waiting operations between
/// sections, not by the ones inside.
struct Job {
    work: Work,
    wait: bool,
}

/// The section goroutine's answer: the op's result, whether a value follows on its channel,
/// and the bytes it read (`WriteBytes`).
struct Done {
    r: Result<(), GcError>,
    value: bool,
    bytes: Vec<u8>,
}

/// The section goroutine and its channels.
struct SecWorker {
    jobs: Arc<Chan<Job>>,
    done: Arc<Chan<Done>>,
    /// Values for it, and from it.
    to: RefChan,
    from: RefChan,
    join: Option<JoinHandle<()>>,
}

impl Drop for SecWorker {
    fn drop(&mut self) {
        // If the runner unwinds, the goroutine must not wait for a job forever. (Only this
        // goroutine closes it.)
        if !self.jobs.is_closed() {
            self.jobs.close();
        }
    }
}

/// Closes the answers' channel when the section goroutine ends, by return or panic, so the
/// main goroutine never waits for an answer that cannot come.
struct CloseOnDrop(Arc<Chan<Done>>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A value the section goroutine names but that is no reference.
fn no_ref() -> GcError {
    GcError::NotAReference { found: 0 }
}

/// The section goroutine: one section mutator, one frame of three slots, cleared after
/// every op.
fn section_goroutine(
    gc: Gc,
    jobs: Arc<Chan<Job>>,
    done: Arc<Chan<Done>>,
    to: RefChan,
    from: RefChan,
    pending: RefChan,
) {
    let _close = CloseOnDrop(done.clone());
    let mut m = SectionMutator::new(&gc).expect("a section mutator");
    m.push_frame(3).expect("the section goroutine's frame");
    while let Ok(job) = jobs.recv() {
        for i in 0..job.work.inputs() {
            take(&mut m, &to, i, job.wait);
        }
        let (r, bytes) = perform(&mut m, &job.work, &pending, job.wait);
        let value = r.is_ok() && job.work.gives();
        if value {
            give(&mut m, &from, job.wait);
        }
        m.enter(|s| s.regs().and_then(|r| (0..3).try_for_each(|i| r.set(i, Value::nil()))))
            .and_then(|r| r)
            .expect("clear the frame");
        done.send(Done { r, value, bytes });
    }
    m.pop_frame().expect("pop the frame");
}

/// Receives a value into slot `i`: inside a section if one is there, else waiting.
fn take(m: &mut SectionMutator, ch: &RefChan, i: usize, wait: bool) {
    let got = !wait
        && m.enter(|s| match s.try_recv(ch).expect("try_recv") {
            Some(v) => s.set_slot(i, v).map(|()| true),
            None => Ok(false),
        })
        .and_then(|r| r)
        .expect("a section");
    if !got {
        assert!(m.recv(ch, i).expect("recv"), "the value channel closed");
    }
}

/// Sends the value in slot 2: inside a section if that needs no wait, else waiting.
fn give(m: &mut SectionMutator, ch: &RefChan, wait: bool) {
    let sent = !wait
        && m.enter(|s| {
            let v = s.slot(2)?;
            s.try_send(ch, v)
        })
        .and_then(|r| r)
        .expect("try_send");
    if !sent {
        m.send(ch, 2).expect("send");
    }
}

/// Runs `work` on the values in the frame's slots.
fn perform(
    m: &mut SectionMutator,
    work: &Work,
    pending: &RefChan,
    wait: bool,
) -> (Result<(), GcError>, Vec<u8>) {
    let mut bytes = Vec::new();
    let r = match work {
        Work::Alloc { shape, init } => m.enter(|s| {
            let r = if *init { s.alloc_init(shape, &[s.slot(0)?])? } else { s.alloc(shape)? };
            s.set_slot(2, r.value())
        }),
        Work::AllocBytes { shape, data } => m.enter(|s| {
            let r = s.alloc_bytes(shape, data)?;
            s.set_slot(2, r.value())
        }),
        Work::Store { shape, field } => m.enter(|s| {
            // Through the register view (`Load` uses the frame's slot accessors).
            let r = s.regs()?;
            let (o, v) = (r.get(0)?, r.get(1)?);
            let o = s.as_ref(o).ok_or_else(no_ref)?;
            s.set(o, shape, *field, v)
        }),
        Work::Load { shape, field } => m.enter(|s| {
            let o = s.as_ref(s.slot(0)?).ok_or_else(no_ref)?;
            let v = s.get(o, shape, *field)?;
            s.set_slot(2, v)
        }),
        Work::WriteWord { shape, field, v } => m.enter(|s| {
            let o = s.as_ref(s.slot(0)?).ok_or_else(no_ref)?;
            s.set_raw(o, shape, *field, *v)?;
            // Read back through the section too.
            assert_eq!(s.get_raw(o, shape, *field), Ok(*v));
            Ok(())
        }),
        Work::WriteBytes { shape, offset, data } => m.enter(|s| {
            let o = s.as_ref(s.slot(0)?).ok_or_else(no_ref)?;
            s.write_bytes(o, shape, *offset, data)?;
            bytes = s.bytes(o, shape)?.to_vec();
            Ok(())
        }),
        Work::Weak => m.enter(|s| {
            let o = s.as_ref(s.slot(0)?).ok_or_else(no_ref)?;
            let w = s.weak(o)?;
            s.set_slot(2, w.value())
        }),
        Work::Deref => m.enter(|s| {
            let w = s.as_ref(s.slot(0)?).ok_or_else(no_ref)?;
            let v = s.deref(w)?;
            s.set_slot(2, v)
        }),
        Work::Send => {
            let sent = !wait
                && m.enter(|s| {
                    let v = s.slot(0)?;
                    s.try_send(pending, v)
                })
                .and_then(|r| r)
                .expect("try_send");
            if sent { Ok(Ok(())) } else { Ok(m.send(pending, 0)) }
        }
        Work::Recv => {
            let got = !wait
                && m.enter(|s| match s.try_recv(pending)? {
                    Some(v) => s.set_slot(2, v).map(|()| true),
                    None => Ok(false),
                })
                .and_then(|r| r)
                .expect("try_recv");
            if got {
                Ok(Ok(()))
            } else {
                Ok(m.recv(pending, 2)
                    .and_then(|got| if got { Ok(()) } else { Err(GcError::Closed) }))
            }
        }
        Work::StoreGlobal(g) => m.enter(|s| {
            let v = s.slot(0)?;
            s.set_global(g, v)
        }),
        Work::LoadGlobal(g) => m.enter(|s| {
            let v = s.global(g)?;
            s.set_slot(2, v)
        }),
    };
    (r.and_then(|r| r), bytes)
}

impl Runner<'_> {
    /// Runs `work` on the section goroutine with the values of `inputs`; a value it gives
    /// back goes into `out`.
    fn sec_run(&mut self, work: Work, inputs: &[Slot], out: Slot) -> Result<Done, String> {
        if self.sec.is_none() {
            let jobs = Arc::new(Chan::new(1));
            let done = Arc::new(Chan::new(1));
            let (to, from) = (RefChan::new(&self.gc, 2), RefChan::new(&self.gc, 1));
            let (gc, j, d, t, f, p) = (
                self.gc.clone(),
                jobs.clone(),
                done.clone(),
                to.clone(),
                from.clone(),
                self.pending.clone(),
            );
            let join = safepoint_sched::go(move || section_goroutine(gc, j, d, t, f, p));
            self.sec = Some(SecWorker { jobs, done, to, from, join: Some(join) });
        }
        self.sec_ops += 1;
        let wait = self.sec_ops.is_multiple_of(3);
        let w = self.sec.as_ref().expect("started");
        for &s in inputs {
            self.m.send(&w.to, s).map_err(|e| format!("send to the section goroutine: {e}"))?;
        }
        w.jobs.send(Job { work, wait });
        let Ok(done) = w.done.recv() else {
            let mut w = self.sec.take().expect("started");
            let msg = match w.join.take().map(|j| j.join()) {
                Some(Err(e)) => format!("{:?}", e.message()),
                _ => "no message".into(),
            };
            return Err(format!("the section goroutine died: {msg}"));
        };
        if done.value && !self.m.recv(&w.from, out).map_err(|e| format!("recv: {e}"))? {
            return Err("the section goroutine's channel closed".into());
        }
        Ok(done)
    }

    /// The shape a section access to an object of type `ty` names (see [`SecOp`]), and
    /// whether it is the object's type's. A weak handle (or no object) gets another type's:
    /// no shape of the handles' type can be made.
    fn pick_shape(&self, ty: Option<MType>, pick: u8) -> (Shape, bool) {
        let n = self.shapes.len();
        match ty.and_then(|t| self.shapes.iter().position(|(u, _)| *u == t)) {
            Some(k) if !pick.is_multiple_of(4) => (self.shapes[k].1, true),
            Some(k) => (self.shapes[(k + 1 + (pick / 4) as usize % (n - 1)) % n].1, false),
            None => (self.shapes[pick as usize % n].1, false),
        }
    }

    /// A section access to word `i` of the object in model slot `o` through the shape
    /// `pick` chooses: the shape, and the object and the word's kind, or the error the
    /// section must return (before it looks at the value).
    fn sec_word(
        &self,
        o: usize,
        i: usize,
        pick: u8,
    ) -> (Shape, Result<(u32, WordKind), &'static str>) {
        match self.model.obj(self.model.slots[o]) {
            Err(e) => (self.shapes[0].1, Err(e)),
            Ok((id, ob)) => {
                let (shape, same) = self.pick_shape((ob.ty != MType::Cell).then_some(ob.ty), pick);
                let r = if !same || ob.ty == MType::Bytes {
                    Err("WrongKind")
                } else if i >= ob.len() {
                    Err("OutOfBounds")
                } else {
                    Ok((id, ob.kind(i).expect("in bounds")))
                };
                (shape, r)
            }
        }
    }

    /// Performs the section op `op` on the heap (on the section goroutine) and the model.
    fn apply_section(&mut self, op: &SecOp) -> Result<(), String> {
        match *op {
            SecOp::Alloc { dst, rec, src, init } => {
                let (ss, sv) = self.slot(src);
                // Not into the source's slot: the model finds a weak word's new handle through
                // the source (see `cell_for`), which must still be there.
                let dst = if dst as usize % SLOTS == sv { dst.wrapping_add(1) } else { dst };
                let (ds, d) = self.slot(dst);
                let kinds = if self.weak { RECORDS.len() } else { RECORDS.len() - WEAK_RECORDS };
                let r = rec as usize % kinds;
                let v = self.model.slots[sv];
                let k0 = RECORDS[r].1[0];
                let want = match (init, k0, v) {
                    (false, ..) => Ok(()),
                    (true, WordKind::Raw, _) => Err("WrongKind"),
                    (true, WordKind::Ref | WordKind::Weak, MVal::Int(_)) => Err("WrongKind"),
                    _ => Ok(()),
                };
                let shape = self.shapes[r].1;
                let inputs: &[Slot] = if init { &[ss] } else { &[] };
                let done = self.sec_run(Work::Alloc { shape, init }, inputs, ds)?;
                Self::compare("section alloc", want, done.r)?;
                if want.is_ok() {
                    let words = RECORDS[r]
                        .1
                        .iter()
                        .map(|k| {
                            if *k == WordKind::Raw { MWord::Raw(0) } else { MWord::Val(MVal::Null) }
                        })
                        .collect();
                    self.alloc_into(d, MType::Rec(r), words, Vec::new());
                    let MVal::Obj(id) = self.model.slots[d] else { unreachable!() };
                    if init {
                        self.stored(id, k0, 0, v, ss)?;
                    }
                }
            }
            SecOp::Array { dst, tagged, len } => {
                let (ds, d) = self.slot(dst);
                let len = len as usize % 40;
                let t = if tagged { MType::TagArr } else { MType::RefArr };
                let shape = Shape::new(&self.gc, self.types.id(t), len)
                    .map_err(|e| format!("shape: {e}"))?;
                let done = self.sec_run(Work::Alloc { shape, init: false }, &[], ds)?;
                Self::compare("section alloc (array)", Ok(()), done.r)?;
                self.alloc_into(d, t, vec![MWord::Val(MVal::Null); len], Vec::new());
            }
            SecOp::Bytes { dst, len, seed } => {
                let (ds, d) = self.slot(dst);
                let data = pattern(seed, len as usize % (MAX_BYTES + 1));
                let shape = self.shapes.iter().find(|(t, _)| *t == MType::Bytes).expect("bytes").1;
                let done = self.sec_run(Work::AllocBytes { shape, data: data.clone() }, &[], ds)?;
                Self::compare("section alloc_bytes", Ok(()), done.r)?;
                self.alloc_into(d, MType::Bytes, Vec::new(), data);
            }
            SecOp::Store { obj, field, src, shape } => {
                let ((os, o), (ss, sv)) = (self.slot(obj), self.slot(src));
                let i = self.field(o, field);
                let v = self.model.slots[sv];
                let (shape, at) = self.sec_word(o, i, shape);
                let want = at.and_then(|(id, k)| match (k, v) {
                    (WordKind::Raw, _) => Err("WrongKind"),
                    (WordKind::Ref | WordKind::Weak, MVal::Int(_)) => Err("WrongKind"),
                    _ => Ok((id, k)),
                });
                let done = self.sec_run(Work::Store { shape, field: i }, &[os, ss], os)?;
                Self::compare("section set", want.map(|_| ()), done.r)?;
                if let Ok((id, k)) = want {
                    self.stored(id, k, i, v, ss)?;
                }
            }
            SecOp::Load { dst, obj, field, shape } => {
                let ((ds, d), (os, o)) = (self.slot(dst), self.slot(obj));
                let i = self.field(o, field);
                let (shape, at) = self.sec_word(o, i, shape);
                let want = at.and_then(|(id, k)| {
                    let ob = &self.model.objs[&id];
                    match (k, ob.words[i]) {
                        (WordKind::Raw, _) => Err("WrongKind"),
                        (WordKind::Weak, MWord::Val(MVal::Obj(c))) => {
                            Ok(self.model.objs[&c].target.map_or(MVal::Null, MVal::Obj))
                        }
                        (WordKind::Ephemeron, _) => Ok(self.model.eph_value(ob, i)),
                        (_, MWord::Val(v)) => Ok(v),
                        (_, MWord::Raw(_)) => unreachable!("a raw word in a value field"),
                    }
                });
                let done = self.sec_run(Work::Load { shape, field: i }, &[os], ds)?;
                Self::compare("section get", want.map(|_| ()), done.r)?;
                if let Ok(v) = want {
                    self.model.slots[d] = v;
                }
            }
            SecOp::WriteWord { obj, field, v, shape } => {
                let (os, o) = self.slot(obj);
                let i = self.field(o, field);
                let (shape, at) = self.sec_word(o, i, shape);
                let want = at
                    .and_then(|(id, k)| if k == WordKind::Raw { Ok(id) } else { Err("WrongKind") });
                let done = self.sec_run(Work::WriteWord { shape, field: i, v }, &[os], os)?;
                Self::compare("section set_raw", want.map(|_| ()), done.r)?;
                if let Ok(id) = want {
                    self.model.objs.get_mut(&id).unwrap().words[i] = MWord::Raw(v);
                }
            }
            SecOp::WriteBytes { obj, offset, len, seed, shape } => {
                let (os, o) = self.slot(obj);
                let data = pattern(seed, len as usize);
                let offset = match self.model.slots[o] {
                    MVal::Obj(id) => offset as usize % (self.model.objs[&id].len() + 8),
                    _ => offset as usize,
                };
                // A byte array's shape, or (a multiple of 4) a record's.
                let (bytes_shape, wrong) = (!shape.is_multiple_of(4), self.shapes[0].1);
                let shape = if bytes_shape {
                    self.shapes.iter().find(|(t, _)| *t == MType::Bytes).expect("bytes").1
                } else {
                    wrong
                };
                let want = self.model.obj(self.model.slots[o]).and_then(|(id, ob)| {
                    if !bytes_shape || ob.ty != MType::Bytes {
                        Err("WrongKind")
                    } else if offset + data.len() > ob.bytes.len() {
                        Err("OutOfBounds")
                    } else {
                        Ok(id)
                    }
                });
                let work = Work::WriteBytes { shape, offset, data: data.clone() };
                let done = self.sec_run(work, &[os], os)?;
                Self::compare("section write_bytes", want.map(|_| ()), done.r)?;
                if let Ok(id) = want {
                    let ob = self.model.objs.get_mut(&id).unwrap();
                    ob.bytes[offset..offset + data.len()].copy_from_slice(&data);
                    if done.bytes != ob.bytes {
                        return Err(format!(
                            "section bytes: {} bytes read back, not the model's {}",
                            done.bytes.len(),
                            ob.bytes.len()
                        ));
                    }
                }
            }
            SecOp::Weak { dst, src } => {
                if !self.weak {
                    return Ok(());
                }
                let ((ds, d), (ss, sv)) = (self.slot(dst), self.slot(src));
                let want = match self.model.slots[sv] {
                    MVal::Obj(t) => Ok(t),
                    _ => Err("NotAReference"),
                };
                let done = self.sec_run(Work::Weak, &[ss], ds)?;
                Self::compare("section weak", want.map(|_| ()), done.r)?;
                if let Ok(t) = want {
                    self.weak_into(d, t);
                }
            }
            SecOp::Deref { dst, w } => {
                if !self.weak {
                    return Ok(());
                }
                let ((ds, d), (ws, wv)) = (self.slot(dst), self.slot(w));
                let want = self.want_deref(wv);
                let done = self.sec_run(Work::Deref, &[ws], ds)?;
                Self::compare("section deref", want.map(|_| ()), done.r)?;
                if let Ok(t) = want {
                    self.model.slots[d] = t.map_or(MVal::Null, MVal::Obj);
                }
            }
            SecOp::Send { src } => {
                if self.model.pending.len() < MAX_PENDING {
                    let (s, sv) = self.slot(src);
                    let done = self.sec_run(Work::Send, &[s], s)?;
                    Self::compare("section send", Ok(()), done.r)?;
                    self.model.pending.push_back(self.model.slots[sv]);
                }
            }
            SecOp::Recv { dst } => {
                if let Some(v) = self.model.pending.pop_front() {
                    let (s, d) = self.slot(dst);
                    let done = self.sec_run(Work::Recv, &[], s)?;
                    Self::compare("section recv", Ok(()), done.r)?;
                    self.model.slots[d] = v;
                }
            }
            SecOp::StoreGlobal { g, src } => {
                let g = g as usize % GLOBALS;
                let (s, sv) = self.slot(src);
                let done = self.sec_run(Work::StoreGlobal(self.globals[g].clone()), &[s], s)?;
                Self::compare("section set_global", Ok(()), done.r)?;
                self.model.globals[g] = self.model.slots[sv];
            }
            SecOp::LoadGlobal { dst, g } => {
                let g = g as usize % GLOBALS;
                let (s, d) = self.slot(dst);
                let done = self.sec_run(Work::LoadGlobal(self.globals[g].clone()), &[], s)?;
                Self::compare("section global", Ok(()), done.r)?;
                self.model.slots[d] = self.model.globals[g];
            }
        }
        Ok(())
    }
}
