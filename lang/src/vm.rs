//! The interpreter: one per goroutine, running the bytecode on the goroutine's managed stack.
//!
//! Each goroutine runs its instructions in pinned sections of its [`RawMutator`] and leaves a
//! section only at a safepoint: a back-edge that finds a preemption request, a call whose
//! frame does not fit the stack's current buffer, an allocation whose slow path must be paid
//! for, a channel operation, `go`, printing, sleeping, or a collection for memory. Before it
//! leaves, it records the frame's safepoint, whose stack map (from the compiler's liveness
//! analysis) names exactly the registers holding live values (its frames are sealed: the
//! collector clears the registers that map calls dead). Inside a section it keeps
//! references in Rust variables freely: nothing can stop it there.

// The trusted `RawMutator` path: each `unsafe` block below says why it is sound.
#![allow(unsafe_code)]

use std::fmt::Write as _;
use std::io::{BufRead as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use safepoint_gc::{Gc, GcError, Global, Pin, RawMutator, Shape, TypeDesc, TypeId, WordKind};
use safepoint_sched::{Chan, Select};
use safepoint_stackmap::{FuncId, Registry};

use crate::bytecode::*;
use crate::value::{
    NIL, as_int, boolean, flo, flo_value, int, int_fits, is_flo, is_int, is_ref, truthy,
};

/// A value in flight on a channel: an immediate as is, a reference rooted in a global.
pub(crate) enum Msg {
    Imm(usize),
    Ref(Global),
}

/// The Rust side of a channel object, in [`Shared::chans`].
type ChanBox = Chan<Msg>;

/// The language's heap types.
#[derive(Clone)]
pub(crate) struct Types {
    pub str: TypeId,
    pub float: TypeId,
    pub vec: TypeId,
    pub arr: TypeId,
    pub map: TypeId,
    pub closure: TypeId,
    pub chan: TypeId,
    /// A variable that closures share: one tagged word.
    pub boxed: TypeId,
    /// The collector's weak handles (`weak(x)`): registered here with the collector's own
    /// description, so that the collector finds it.
    pub weak: TypeId,
    /// A weak-keyed map (`weakmap()`): see [`wm_probe`].
    pub weakmap: TypeId,
    weakmap_shape: Shape,
    /// One entry of a weak-keyed map: an ephemeron (its key's weak handle, its value).
    wm_entry_shape: Shape,
    float_shape: Shape,
    vec_shape: Shape,
    /// Shapes of arrays of 0 to `SMALL_ARRAYS - 1` elements.
    arr_shapes: Vec<Shape>,
    /// Shapes of strings of 0 to `SMALL_STRINGS - 1` bytes (a shape is a type lookup
    /// otherwise, which cost more than the rest of a short string's making).
    str_shapes: Vec<Shape>,
    map_shape: Shape,
    chan_shape: Shape,
    box_shape: Shape,
}

impl Types {
    fn register(gc: &Gc) -> Result<Types, GcError> {
        let t = gc.types();
        let rec = |name: &str, words: Vec<WordKind>| {
            t.register(TypeDesc::Record { name: name.into(), words })
        };
        let tagged = WordKind::Tagged;
        let str = t.register(TypeDesc::ByteArray { name: "string".into() })?;
        let float = rec("float", vec![WordKind::Raw])?;
        let vec = rec("vector", vec![tagged, tagged])?;
        let arr = t.register(TypeDesc::TaggedArray { name: "array".into() })?;
        // count, keys, values, and each key's hash (an int): a probe compares hashes first.
        let map = rec("map", vec![tagged, tagged, tagged, tagged])?;
        let closure = t.register(TypeDesc::TaggedArray { name: "closure".into() })?;
        // The channel's id in `Shared::chans`, an int.
        let chan = rec("chan", vec![tagged])?;
        let boxed = rec("box", vec![tagged])?;
        let weak = rec(safepoint_gc::WEAK_TYPE_NAME, vec![WordKind::Raw])?;
        // slots used (live, dead or deleted entries), and the entries array.
        let weakmap = rec("weakmap", vec![tagged, tagged])?;
        // The key's weak handle and the value, kept only while the key is reachable.
        let wm_entry = rec("weakmap.entry", vec![WordKind::Weak, WordKind::Ephemeron])?;
        Ok(Types {
            weak,
            weakmap,
            weakmap_shape: Shape::new(gc, weakmap, 0)?,
            wm_entry_shape: Shape::new(gc, wm_entry, 0)?,
            box_shape: Shape::new(gc, boxed, 0)?,
            boxed,
            float_shape: Shape::new(gc, float, 0)?,
            vec_shape: Shape::new(gc, vec, 0)?,
            arr_shapes: (0..SMALL_ARRAYS)
                .map(|n| Shape::new(gc, arr, n))
                .collect::<Result<_, _>>()?,
            str_shapes: (0..SMALL_STRINGS)
                .map(|n| Shape::new(gc, str, n))
                .collect::<Result<_, _>>()?,
            map_shape: Shape::new(gc, map, 0)?,
            chan_shape: Shape::new(gc, chan, 0)?,
            str,
            float,
            vec,
            arr,
            map,
            closure,
            chan,
        })
    }
}

/// Arrays shorter than this have their shapes computed once.
const SMALL_ARRAYS: usize = 64;
/// Strings shorter than this have their shapes computed once.
const SMALL_STRINGS: usize = 128;

impl Types {
    /// The shape of an array of `n` elements.
    #[inline]
    fn arr(&self, pin: &Pin<'_>, n: usize) -> Result<Shape, String> {
        match self.arr_shapes.get(n) {
            Some(&s) => Ok(s),
            None => pin.shape(self.arr, n).map_err(|e| e.to_string()),
        }
    }

    /// The shape of a string of `n` bytes.
    #[inline]
    fn str(&self, pin: &Pin<'_>, n: usize) -> Result<Shape, String> {
        match self.str_shapes.get(n) {
            Some(&s) => Ok(s),
            None => pin.shape(self.str, n).map_err(|e| e.to_string()),
        }
    }
}

/// What every goroutine of one program run shares.
pub(crate) struct Shared {
    pub prog: Program,
    pub gc: Gc,
    pub reg: Arc<Registry>,
    pub types: Types,
    /// The constants, a tagged array (set by the main goroutine before anything runs).
    pub consts: Global,
    /// Each constant's word if it is an immediate ([`Program::imm`]), else [`NOT_IMM`]: read
    /// without touching the heap.
    pub kwords: Vec<usize>,
    /// The global variables, a tagged array of `globals_cap` words (shared by the chunks of
    /// a REPL session).
    pub globals: Arc<Global>,
    /// The globals array's length: the program's globals, or the REPL's fixed room.
    pub globals_cap: usize,
    /// The program's arguments (`args()`).
    pub args: Vec<String>,
    /// Standard output, shared by all goroutines (a goroutine-aware lock).
    pub out: Arc<safepoint_sched::Mutex<std::io::BufWriter<std::io::Stdout>>>,
    /// Where channels report the memory of their Rust side, so that the collector paces it.
    pub ext: safepoint_gc::External,
    /// The Rust sides of channel records, by the id each record holds (see [`chan_of`]).
    pub chans: Arc<crate::chans::Table<ChanBox>>,
}

impl Shared {
    pub(crate) fn new(
        prog: Program,
        gc: Gc,
        reg: Arc<Registry>,
        args: Vec<String>,
    ) -> Result<Shared, GcError> {
        Ok(Shared {
            args,
            types: Types::register(&gc)?,
            consts: Global::new(&gc),
            kwords: kwords(&prog),
            globals: Arc::new(Global::new(&gc)),
            globals_cap: prog.globals,
            out: Arc::new(safepoint_sched::Mutex::new(std::io::BufWriter::new(std::io::stdout()))),
            ext: gc.external(),
            chans: Arc::new(crate::chans::Table::new()),
            prog,
            gc,
            reg,
        })
    }

    /// What the next chunk of a REPL session shares: this one's heap, types, globals and
    /// output, with `prog` (which extends this one's program) and its own constants.
    pub(crate) fn next(&self, prog: Program) -> Shared {
        Shared {
            args: self.args.clone(),
            types: self.types.clone(),
            consts: Global::new(&self.gc),
            kwords: kwords(&prog),
            globals: self.globals.clone(),
            globals_cap: self.globals_cap,
            out: self.out.clone(),
            ext: self.ext.clone(),
            chans: self.chans.clone(),
            prog,
            gc: self.gc.clone(),
            reg: self.reg.clone(),
        }
    }

    /// Writes `s` to standard output.
    pub(crate) fn write_out(&self, s: &str) {
        let mut o = self.out.lock();
        let _ = o.write_all(s.as_bytes());
    }

    /// Flushes standard output.
    pub(crate) fn flush(&self) {
        let _ = self.out.lock().flush();
    }
}

/// The word in [`Shared::kwords`] of a constant that is not an immediate (a reference tag
/// with no address: never a value).
const NOT_IMM: usize = 1;

fn kwords(prog: &Program) -> Vec<usize> {
    prog.consts.iter().map(|c| Program::imm(c).unwrap_or(NOT_IMM)).collect()
}

/// A goroutine's interpreter frame: the Rust side of one managed-stack frame.
#[derive(Clone, Copy, Debug)]
struct Frame {
    proto: u32,
    /// The next instruction (saved while a callee runs or the section is left).
    pc: u32,
    /// The caller's register that receives the result.
    ret: Reg,
}

/// A runtime error: where (the instruction) and what.
pub(crate) struct RtError {
    pub msg: String,
}

/// Why a pinned section ended.
enum Exit {
    /// The entry frame returned.
    Done,
    /// A back-edge found a preemption request.
    Poll,
    /// A call's frame needs the slow push path (growth, or a request pending).
    Grow(FuncId),
    /// An allocation took its slow path: pay for it.
    Slow,
    /// An allocation failed at the hard limit: collect, then retry the instruction.
    Oom,
    /// Work to do outside the section (it may block).
    Block(Block),
    /// A runtime error at the current instruction.
    Error(String),
}

enum Block {
    Send(Arc<ChanBox>, Msg),
    Recv {
        ch: Arc<ChanBox>,
        dst: Reg,
        ok: Option<Reg>,
    },
    IterRecv {
        ch: Arc<ChanBox>,
        x: Reg,
        t: u32,
    },
    Select {
        /// Each case's channel and message; `None` for a case on a nil channel, which is never
        /// ready (as in Go).
        sel: Vec<Option<(Arc<ChanBox>, Option<Msg>)>>,
        default: bool,
        a: Reg,
        /// Each case's value and ok registers.
        dsts: Vec<(Option<Reg>, Option<Reg>)>,
    },
    /// Read standard input's next line (`None`) or a file, into `dst` (safepoint `sp`).
    Read {
        file: Option<String>,
        dst: Reg,
        sp: u16,
    },
    WriteFile(String, Vec<u8>),
    /// The collector's figures (read outside: they take the heap's locks), into `dst`.
    Memstats {
        dst: Reg,
        sp: u16,
    },
    Go(Vec<Global>),
    Print(String),
    Sleep(i64),
    Gc,
    Yield,
    Exit(i32),
}

/// Work the next section starts with: a result that arrived while outside.
enum Pending {
    None,
    Value {
        dst: Reg,
        msg: Option<Msg>,
        ok: Option<Reg>,
    },
    Jump(u32),
    Select {
        a: Reg,
        idx: usize,
        dst: Option<Reg>,
        ok: Option<Reg>,
        msg: Option<Msg>,
    },
    /// Bytes read (nil at the end of input) for `dst`, a string made at safepoint `sp`.
    Bytes {
        dst: Reg,
        bytes: Option<Vec<u8>>,
        sp: u16,
    },
    /// `memstats()`'s map of these figures for `dst`, made at safepoint `sp`.
    Stats {
        dst: Reg,
        fields: Vec<(&'static str, u64)>,
        sp: u16,
    },
    /// A `try`'s handler starts: its message register `e` gets `msg` (at safepoint `sp`).
    Caught {
        e: Reg,
        msg: String,
        sp: u16,
    },
}

/// An open `try` block.
#[derive(Clone, Copy)]
struct Handler {
    /// The number of frames when it opened (its frame is the last of them).
    depth: usize,
    /// The handler's first instruction.
    target: u32,
    /// The message register.
    e: Reg,
    /// The handler's safepoint (see [`Op::Try`]).
    sp: u16,
}

/// One goroutine's interpreter.
pub(crate) struct Thread {
    sh: Arc<Shared>,
    raw: RawMutator,
    st: State,
}

struct State {
    frames: Vec<Frame>,
    pending: Pending,
    /// Whether an allocation's slow path is still owed.
    owe: bool,
    /// Retries of the current instruction after a collection for memory.
    oom_retry: bool,
    /// Open `try` blocks, innermost last.
    handlers: Vec<Handler>,
}

/// How a goroutine starts.
pub(crate) enum Entry {
    /// The top-level code.
    Main,
    /// A closure (global 0) called with arguments (the rest).
    Call(Vec<Global>),
}

impl Thread {
    /// Runs `entry` to completion on the running goroutine.
    pub(crate) fn run(sh: Arc<Shared>, entry: Entry) -> Result<(), (RtError, String)> {
        let raw = RawMutator::new(&sh.gc).expect("a fresh goroutine of the program's runtime");
        let mut t = Thread {
            sh,
            raw,
            st: State {
                frames: Vec::new(),
                pending: Pending::None,
                owe: false,
                oom_retry: false,
                handlers: Vec::new(),
            },
        };
        t.start(entry).map_err(|e| (e, String::new()))?;
        t.main_loop()
    }

    fn start(&mut self, entry: Entry) -> Result<(), RtError> {
        let sh = self.sh.clone();
        match entry {
            Entry::Main => {
                let p = sh.prog.main();
                push_slow(sh.prog.protos[p].func);
                self.st.frames.push(Frame { proto: p as u32, pc: 0, ret: 0 });
                Ok(())
            }
            Entry::Call(gs) => {
                // The closure and its arguments stay rooted in their globals until they are
                // copied into the new frame, inside one section.
                let clo = self
                    .raw
                    .enter(|pin| pin.global(&gs[0]).expect("our heap"))
                    .map_err(|e| RtError { msg: e.to_string() })?;
                let (p, _) = self
                    .raw
                    .enter(|pin| closure_proto(&sh, pin, clo))
                    .map_err(|e| RtError { msg: e.to_string() })?
                    .map_err(|msg| RtError { msg })?;
                let proto = &sh.prog.protos[p];
                if proto.params as usize != gs.len() - 1 {
                    return Err(RtError {
                        msg: format!(
                            "{} takes {} arguments, given {}",
                            proto.name,
                            proto.params,
                            gs.len() - 1
                        ),
                    });
                }
                push_slow(proto.func);
                self.st.frames.push(Frame { proto: p as u32, pc: 0, ret: 0 });
                self.raw
                    .enter(|pin| {
                        let regs = pin.stack().top_slots_ptr();
                        let clo = pin.global(&gs[0]).expect("our heap");
                        for (i, g) in gs[1..].iter().enumerate() {
                            let v = pin.global(g).expect("our heap");
                            // SAFETY: the frame just pushed has `regs >= params` slots, and
                            // nothing moved the buffer since `top_slots_ptr`.
                            unsafe { slot(regs, i) }.store(v, Relaxed);
                        }
                        copy_captures(pin, regs, clo, proto);
                    })
                    .map_err(|e| RtError { msg: e.to_string() })?;
                drop(gs);
                Ok(())
            }
        }
    }

    fn main_loop(&mut self) -> Result<(), (RtError, String)> {
        loop {
            let sh = &*self.sh;
            let st = &mut self.st;
            let exit = self.raw.enter(|pin| exec(sh, st, pin));
            let exit = match exit {
                Ok(e) => e,
                Err(e) => Exit::Error(e.to_string()),
            };
            match exit {
                Exit::Done => return Ok(()),
                Exit::Poll => with_stack(|ms| ms.poll()),
                Exit::Grow(f) => {
                    // The slow push: grows the stack (or stops here for a request). Past the
                    // limit it panics, which is the program's stack overflow.
                    let r = not_shutdown(std::panic::catch_unwind(|| {
                        with_stack(|ms| {
                            ms.push(f);
                            ms.pop();
                        })
                    }));
                    if let Err(p) = r {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .unwrap_or_else(|| "managed stack exhausted".into());
                        self.catch(format!("stack overflow ({msg})"))?;
                    }
                }
                Exit::Slow => self.raw.after_slow_alloc(),
                Exit::Oom => {
                    if self.st.oom_retry {
                        self.st.oom_retry = false;
                        self.catch("out of memory: the heap is at its hard limit".into())?;
                        continue;
                    }
                    self.st.oom_retry = true;
                    self.raw.collect_for_memory();
                }
                Exit::Block(b) => {
                    if let Err(m) = self.block(b) {
                        // The instruction's pc was saved past it.
                        if let Some(f) = self.st.frames.last_mut() {
                            f.pc = f.pc.saturating_sub(1);
                        }
                        self.catch(m)?;
                    }
                }
                Exit::Error(m) => self.catch(m)?,
            }
        }
    }

    /// Unwinds to the innermost open `try` block with the message `msg`, or, with none open,
    /// gives the runtime error at the current instruction.
    fn catch(&mut self, msg: String) -> Result<(), (RtError, String)> {
        let Some(h) = self.st.handlers.pop() else {
            return Err(self.error(msg));
        };
        let n = self.st.frames.len() - h.depth;
        // One section: no stack scan sees a frame popped but the handler's map not yet set.
        // The handler's frame was at a safepoint of its `try` block, whose maps hold what the
        // handler needs; its own map names exactly that.
        let r = self.raw.enter(|pin| {
            let ms = pin.stack();
            for _ in 0..n {
                ms.pop();
            }
            ms.set_safepoint(h.sp as u32);
        });
        if let Err(e) = r {
            return Err(self.error(e.to_string()));
        }
        self.st.frames.truncate(h.depth);
        self.st.frames.last_mut().expect("the handler's frame").pc = h.target;
        self.st.pending = Pending::Caught { e: h.e, msg, sp: h.sp };
        Ok(())
    }

    /// Does the blocking part of an instruction outside the section.
    fn block(&mut self, b: Block) -> Result<(), String> {
        match b {
            Block::Send(ch, msg) => {
                if ch.is_closed() {
                    return Err("send on closed channel".into());
                }
                let r =
                    not_shutdown(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        ch.send(msg)
                    })));
                r.map_err(|_| "send on closed channel".to_string())?;
            }
            Block::Recv { ch, dst, ok } => {
                self.st.pending = Pending::Value { dst, msg: ch.recv().ok(), ok };
            }
            Block::IterRecv { ch, x, t } => {
                self.st.pending = match ch.recv() {
                    Ok(m) => Pending::Value { dst: x, msg: Some(m), ok: None },
                    Err(_) => Pending::Jump(t),
                };
            }
            Block::Select { sel, default, a, dsts } => {
                let n = sel.len();
                // The channels stay here while the select borrows them; the messages move in.
                let (chans, msgs): (Vec<_>, Vec<_>) = sel.into_iter().map(Option::unzip).unzip();
                let mut s: Select<'_, (usize, Option<Msg>)> = Select::new();
                for (i, (ch, m)) in chans.iter().zip(msgs).enumerate() {
                    s = match (ch, m.flatten()) {
                        (None, _) => s,
                        (Some(ch), Some(m)) => s.send(ch, m, move || (i, None)),
                        (Some(ch), None) => s.recv(ch, move |r| (i, r.ok())),
                    };
                }
                if default {
                    s = s.default(move || (n, None));
                }
                let r =
                    not_shutdown(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        s.wait()
                    })));
                let (idx, msg) = r.map_err(|_| "send on closed channel".to_string())?;
                let (dst, ok) = dsts.get(idx).copied().unwrap_or((None, None));
                self.st.pending = Pending::Select { a, idx, dst, ok, msg };
            }
            Block::Go(gs) => {
                let sh = self.sh.clone();
                safepoint_sched::go(move || crate::run_goroutine(sh, Entry::Call(gs)));
            }
            Block::Print(s) => self.sh.write_out(&s),
            Block::Read { file, dst, sp } => {
                // Reads wait in the kernel: the P goes to other goroutines meanwhile.
                let bytes = safepoint_sched::blocking(|| match &file {
                    None => {
                        let mut line = Vec::new();
                        let n = std::io::stdin().lock().read_until(b'\n', &mut line);
                        match n {
                            Ok(0) => Ok(None),
                            Ok(_) => {
                                if line.last() == Some(&b'\n') {
                                    line.pop();
                                    if line.last() == Some(&b'\r') {
                                        line.pop();
                                    }
                                }
                                Ok(Some(line))
                            }
                            Err(e) => Err(format!("read_line: {e}")),
                        }
                    }
                    Some(path) => std::fs::read(path)
                        .map(Some)
                        .map_err(|e| format!("read_file({path:?}): {e}")),
                })?;
                self.st.pending = Pending::Bytes { dst, bytes, sp };
            }
            Block::Memstats { dst, sp } => {
                // As Go's runtime.MemStats names them, where they match.
                let s = self.sh.gc.stats();
                let h = &s.heap;
                let fields = vec![
                    ("num_gc", s.cycles),
                    ("heap_live", s.live_bytes as u64),
                    ("next_gc", s.goal_bytes as u64),
                    ("heap_alloc", h.live_bytes),
                    ("heap_objects", h.live_objects),
                    ("mallocs", h.total_allocs),
                    ("frees", h.total_frees),
                    ("heap_sys", h.mapped_bytes as u64),
                    ("heap_inuse", h.in_use_bytes as u64),
                    ("heap_idle", h.free_bytes as u64),
                    ("heap_released", h.released_bytes as u64),
                    ("pause_total_ns", s.total_pause.as_nanos() as u64),
                ];
                self.st.pending = Pending::Stats { dst, fields, sp };
            }
            Block::WriteFile(path, data) => {
                safepoint_sched::blocking(|| std::fs::write(&path, &data))
                    .map_err(|e| format!("write_file({path:?}): {e}"))?;
            }
            Block::Sleep(ms) => safepoint_sched::sleep(Duration::from_millis(ms.max(0) as u64)),
            Block::Gc => self.sh.gc.collect(),
            Block::Yield => safepoint_sched::yield_now(),
            Block::Exit(code) => {
                // As Go's os.Exit: the process ends now, from whichever goroutine; what was
                // printed goes out first.
                self.sh.flush();
                std::process::exit(code);
            }
        }
        Ok(())
    }

    /// The message and traceback of a runtime error at the current instruction.
    fn error(&self, msg: String) -> (RtError, String) {
        let prog = &self.sh.prog;
        let where_ = self.st.frames.last().map(|f| {
            let p = &prog.protos[f.proto as usize];
            (p.pos[(f.pc as usize).min(p.pos.len() - 1)], prog.file_of(Some(p.func)))
        });
        let (pos, file) = where_.unwrap_or((Default::default(), &prog.file));
        let mut tb = String::new();
        let goid = safepoint_sched::goroutine_id().unwrap_or(0);
        let _ = writeln!(tb, "goroutine {goid} [running]:");
        // The traceback is the managed stack's, from the stack maps' line tables: the top
        // frame's line is the failing instruction's (its recorded safepoint may be older).
        let trace = with_stack(|ms| ms.traceback(&self.sh.reg));
        for (i, f) in trace.frames.iter().chain(trace.tail.iter()).enumerate() {
            let line = if i == 0 { Some(pos.line) } else { f.line };
            match line {
                Some(l) => {
                    let _ = writeln!(tb, "  {}\n        {}:{l}", f.name, prog.file_of(f.func));
                }
                None => {
                    let _ = writeln!(tb, "  {}", f.name);
                }
            }
            if i + 1 == trace.frames.len() && trace.elided > 0 {
                let _ = writeln!(tb, "  ...{} frames elided...", trace.elided);
            }
        }
        if let Some(e) = &trace.error {
            let _ = writeln!(tb, "  (the managed stack is corrupted here: {e})");
        }
        (RtError { msg: format!("{file}:{}:{}: runtime error: {msg}", pos.line, pos.col) }, tb)
    }
}

/// Runs `f` with the running goroutine's managed stack.
fn with_stack<R>(f: impl FnOnce(&safepoint_stackmap::ManagedStack) -> R) -> R {
    let id = safepoint_sched::goroutine_id().expect("on a goroutine");
    safepoint_sched::with_managed_stack_of(id, f).expect("on a goroutine")
}

/// Pushes a sealed frame for `f` outside a section (the slow path may grow the stack or stop
/// here). Sealed: the collector scans the slots `f`'s current map calls live, each as a
/// tagged value, and clears the others, so a register a wrong map called dead reads as a
/// cleared word, never a freed object.
fn push_slow(f: FuncId) {
    // SAFETY: the interpreter writes a frame's slots only with values of the heap's tagged
    // encoding (every register holds one), and pops the frames it pushes.
    with_stack(|ms| unsafe { ms.push_sealed(f) });
}

/// Slot `i` of a frame whose slot 0 is `regs`.
///
/// # Safety
/// `regs` is a frame's slot 0 from `top_slots_ptr`, the buffer has not moved since, and `i`
/// is below the frame's slot count.
#[inline(always)]
unsafe fn slot<'a>(regs: *const AtomicUsize, i: usize) -> &'a AtomicUsize {
    // SAFETY: per the contract.
    unsafe { &*regs.add(i) }
}

/// The proto and arity of closure value `clo`, or a message.
#[inline(always)]
fn closure_proto(sh: &Shared, pin: &Pin<'_>, clo: usize) -> Result<(usize, usize), String> {
    if !is_ref(clo) {
        return Err(not_callable(sh, pin, clo));
    }
    // SAFETY: `clo` is a reference from a register or a global: a live object.
    let h = unsafe { pin.header(clo) };
    if h.type_id() != sh.types.closure {
        return Err(not_callable(sh, pin, clo));
    }
    // SAFETY: a closure has at least its function word.
    let p = as_int(unsafe { pin.word(clo, 0) }) as usize;
    Ok((p, sh.prog.protos[p].params as usize))
}

/// The message for a call of `v`, which is not a function.
#[cold]
#[inline(never)]
fn not_callable(sh: &Shared, pin: &Pin<'_>, v: usize) -> String {
    format!("cannot call {}", type_name(sh, pin, v))
}

/// Copies a closure's captured values into the registers after its parameters.
fn copy_captures(pin: &Pin<'_>, regs: *const AtomicUsize, clo: usize, proto: &Proto) {
    for i in 0..proto.captures as usize {
        // SAFETY: a closure of `proto` has `1 + captures` words; the frame has
        // `params + captures` slots at least, and `regs` is its fresh slot 0.
        unsafe {
            let v = pin.word(clo, 1 + i);
            slot(regs, proto.params as usize + i).store(v, Relaxed);
        }
    }
}

/// A value's type name.
fn type_name(sh: &Shared, pin: &Pin<'_>, v: usize) -> &'static str {
    if is_int(v) {
        return "int";
    }
    if is_flo(v) {
        return "float";
    }
    match v {
        NIL => return "nil",
        crate::value::TRUE | crate::value::FALSE => return "bool",
        _ => {}
    }
    if !is_ref(v) {
        return "?";
    }
    // SAFETY: a reference from a register, field or global: a live object.
    let t = unsafe { pin.header(v) }.type_id();
    let ty = &sh.types;
    if t == ty.str {
        "string"
    } else if t == ty.float {
        "float"
    } else if t == ty.vec {
        "vector"
    } else if t == ty.map {
        "map"
    } else if t == ty.closure {
        "function"
    } else if t == ty.chan {
        "channel"
    } else if t == ty.boxed {
        "box"
    } else if t == ty.weak {
        "weak"
    } else if t == ty.weakmap {
        "weakmap"
    } else {
        "array"
    }
}

/// The main loop of a section: runs instructions until something needs the outside.
#[inline(never)]
fn exec(sh: &Shared, st: &mut State, pin: &mut Pin<'_>) -> Exit {
    let protos = &sh.prog.protos[..];
    let fr = *st.frames.last().expect("a frame");
    let mut proto = &protos[fr.proto as usize];
    let mut code = &proto.code[..];
    let mut pc = fr.pc as usize;
    let mut regs = pin.stack().top_slots_ptr();
    let kw = &sh.kwords[..];

    macro_rules! r {
        ($i:expr) => {
            // SAFETY: `regs` is the top frame's slot 0, refreshed after every push and pop
            // (nothing else moves the buffer inside a section), and the compiler emits
            // register numbers below the frame's size.
            unsafe { slot(regs, $i as usize) }.load(Relaxed)
        };
    }
    macro_rules! w {
        ($i:expr, $v:expr) => {{
            let v = $v;
            // SAFETY: as in `r!`.
            unsafe { slot(regs, $i as usize) }.store(v, Relaxed)
        }};
    }
    macro_rules! save {
        () => {
            st.frames.last_mut().expect("a frame").pc = pc as u32
        };
    }
    // Leaves the section at the current instruction (for errors and retries).
    macro_rules! leave_here {
        ($exit:expr) => {{
            pc -= 1;
            save!();
            return $exit;
        }};
    }
    macro_rules! fail {
        ($($t:tt)*) => {{ leave_here!(Exit::Error(format!($($t)*))) }};
    }
    macro_rules! sp_before {
        ($sp:expr) => {
            pin.stack().set_safepoint($sp as u32)
        };
    }
    // Allocates, or leaves to collect for memory and retry the instruction.
    macro_rules! alloc {
        ($shape:expr, $sp:expr) => {
            match pin.alloc($shape) {
                Ok((v, slow)) => {
                    st.owe |= slow;
                    v
                }
                Err(_) => {
                    sp_before!($sp);
                    leave_here!(Exit::Oom)
                }
            }
        };
    }
    // After an allocating instruction: pay for a slow path at the "after" safepoint.
    macro_rules! settle {
        ($sp:expr) => {
            st.oom_retry = false;
            if st.owe {
                st.owe = false;
                pin.stack().set_safepoint($sp as u32 + 1);
                save!();
                return Exit::Slow;
            }
        };
    }
    macro_rules! tryv {
        ($e:expr, $sp:expr) => {
            match $e {
                Ok(v) => {
                    st.owe |= OWE.with(|o| o.replace(false));
                    v
                }
                Err(Fault::Oom) => {
                    OWE.with(|o| o.set(false));
                    sp_before!($sp);
                    leave_here!(Exit::Oom)
                }
                Err(Fault::Msg(m)) => {
                    OWE.with(|o| o.set(false));
                    leave_here!(Exit::Error(m))
                }
            }
        };
    }

    // Pushes `callee`'s frame with the caller at safepoint `sp` (or leaves for the slow push)
    // and copies the `n` arguments from the caller's registers from `from`; the new frame's
    // slot 0.
    macro_rules! push_frame {
        ($callee:expr, $sp:expr, $from:expr, $n:expr) => {{
            sp_before!($sp);
            let ms = pin.stack();
            // SAFETY: as in `push_slow`.
            if !unsafe { ms.try_push_sealed($callee.func) } {
                leave_here!(Exit::Grow($callee.func));
            }
            let new = ms.top_slots_ptr();
            for i in 0..$n as usize {
                // SAFETY: `new` is the fresh top frame (at least `n` slots: the arity was
                // checked); `regs` is the caller's frame, still in place (a fast push does not
                // move the buffer).
                unsafe { slot(new, i).store(slot(regs, $from + i).load(Relaxed), Relaxed) };
            }
            new
        }};
    }
    // Switches to the callee's frame, whose result goes to the caller's register `a`.
    macro_rules! enter {
        ($callee:expr, $p:expr, $a:expr, $new:expr) => {
            save!();
            st.frames.push(Frame { proto: $p as u32, pc: 0, ret: $a });
            proto = $callee;
            code = &proto.code[..];
            pc = 0;
            regs = $new;
        };
    }

    // `a = x op y`: integers and immediate floats inline, the rest in `arith_slow`.
    macro_rules! arith {
        ($op:expr, $a:expr, $x:expr, $y:expr, $sp:expr) => {{
            let (op, a, x, y, sp) = ($op, $a, $x, $y, $sp);
            if is_int(x | y) {
                let (xi, yi) = (x as i64, y as i64);
                let res = match op {
                    ArithOp::Add => xi.checked_add(yi),
                    ArithOp::Sub => xi.checked_sub(yi),
                    ArithOp::Mul => (xi >> 2).checked_mul(yi),
                    // Tagged ints are `v << 2`: and, or and xor of two are the tagged
                    // result as they stand.
                    ArithOp::BitAnd => Some(xi & yi),
                    ArithOp::BitOr => Some(xi | yi),
                    ArithOp::BitXor => Some(xi ^ yi),
                    ArithOp::Shl | ArithOp::Shr => match shift(op, xi >> 2, yi >> 2) {
                        Ok(v) => int_fits(v).then_some(v << 2),
                        Err(m) => fail!("{m}"),
                    },
                    ArithOp::Div | ArithOp::Mod => {
                        if yi == 0 {
                            fail!(
                                "{} by zero",
                                if op == ArithOp::Div { "division" } else { "modulo" }
                            );
                        }
                        let (p, q) = (xi >> 2, yi >> 2);
                        let v =
                            if op == ArithOp::Div { p.wrapping_div(q) } else { p.wrapping_rem(q) };
                        int_fits(v).then_some(v << 2)
                    }
                };
                match res {
                    Some(v) => w!(a, v as usize),
                    None => fail!("integer overflow"),
                }
            } else if is_flo(x & y)
                && let Some(v) = flo_arith(op, flo_value(x), flo_value(y)).and_then(flo)
            {
                // Two immediate floats and an immediate result: no allocation.
                w!(a, v);
            } else if let (Some(fx), Some(fy)) = (num_imm(x), num_imm(y))
                && let Some(v) = flo_arith(op, fx, fy).and_then(flo)
            {
                // An integer and an immediate float, and an immediate result: as above.
                w!(a, v);
            } else {
                let res = tryv!(arith_slow(sh, pin, op, x, y), sp);
                w!(a, res);
                settle!(sp);
            }
        }};
    }

    // `x op y`: integers and immediate floats inline, the rest in `compare`.
    macro_rules! cmp {
        ($op:expr, $x:expr, $y:expr) => {{
            let (op, x, y) = ($op, $x, $y);
            if is_int(x | y) {
                cmp_int(op, x, y)
            } else if is_flo(x & y) {
                cmp_flo(op, flo_value(x), flo_value(y))
            } else {
                match compare(sh, pin, op, x, y) {
                    Ok(v) => v,
                    Err(m) => fail!("{m}"),
                }
            }
        }};
    }

    // Jump to `t` unless `x op y`.
    macro_rules! cmp_jmp {
        ($op:expr, $x:expr, $y:expr, $t:expr) => {{
            let (op, x, y, t) = ($op, $x, $y, $t);
            let res = cmp!(op, x, y);
            if !res {
                pc = t as usize;
            }
        }};
    }

    // A result that arrived while we were outside.
    match std::mem::replace(&mut st.pending, Pending::None) {
        Pending::None => {}
        Pending::Value { dst, msg, ok } => {
            if let Some(o) = ok {
                w!(o, boolean(msg.is_some()));
            }
            let v = msg_value(pin, msg);
            w!(dst, v);
        }
        Pending::Jump(t) => pc = t as usize,
        Pending::Select { a, idx, dst, ok, msg } => {
            if let Some(o) = ok {
                w!(o, boolean(msg.is_some()));
            }
            if let Some(d) = dst {
                let v = msg_value(pin, msg);
                w!(d, v);
            }
            w!(a, int(idx as i64));
        }
        Pending::Bytes { dst, bytes: None, .. } => w!(dst, NIL),
        Pending::Bytes { dst, bytes: Some(b), sp } => match new_str(sh, pin, &b) {
            Ok(v) => {
                st.owe |= OWE.with(|o| o.replace(false));
                w!(dst, v);
                settle!(sp);
            }
            Err(f) => {
                OWE.with(|o| o.set(false));
                if let Fault::Msg(m) = f {
                    return Exit::Error(m);
                }
                st.pending = Pending::Bytes { dst, bytes: Some(b), sp };
                sp_before!(sp);
                return Exit::Oom;
            }
        },
        Pending::Stats { dst, fields, sp } => match stats_map(sh, pin, &fields) {
            Ok(v) => {
                st.owe |= OWE.with(|o| o.replace(false));
                w!(dst, v);
                settle!(sp);
            }
            Err(f) => {
                OWE.with(|o| o.set(false));
                if let Fault::Msg(m) = f {
                    return Exit::Error(m);
                }
                st.pending = Pending::Stats { dst, fields, sp };
                sp_before!(sp);
                return Exit::Oom;
            }
        },
        Pending::Caught { e, msg, sp } => match new_str(sh, pin, msg.as_bytes()) {
            Ok(v) => {
                st.owe |= OWE.with(|o| o.replace(false));
                w!(e, v);
                settle!(sp);
            }
            Err(f) => {
                OWE.with(|o| o.set(false));
                if let Fault::Msg(m) = f {
                    return Exit::Error(m);
                }
                st.pending = Pending::Caught { e, msg, sp };
                sp_before!(sp);
                return Exit::Oom;
            }
        },
    }

    loop {
        // Checked: the compiler ends every function with `Ret` and jumps only to instructions
        // of the same function, so `pc` stays below the code's length, and the check is a
        // compare the branch predictor never sees fail.
        let op = code[pc];
        pc += 1;
        match op {
            Op::Move { a, b } => w!(a, r!(b)),
            Op::Int { a, v } => w!(a, int(v as i64)),
            Op::Imm { a, w } => w!(a, w as usize),
            Op::Const { a, k } if kw[k as usize] != NOT_IMM => w!(a, kw[k as usize]),
            Op::Const { a, k } => {
                let arr = pin.global(&sh.consts).expect("our heap");
                // SAFETY: the constants array has one word per constant.
                w!(a, unsafe { pin.word(arr, k as usize) });
            }
            Op::GetGlobal { a, g } => {
                let arr = pin.global(&sh.globals).expect("our heap");
                // SAFETY: the globals array has one word per global.
                w!(a, unsafe { pin.word(arr, g as usize) });
            }
            Op::SetGlobal { g, a } => {
                let arr = pin.global(&sh.globals).expect("our heap");
                let v = r!(a);
                // SAFETY: as above; a register holds a value of the heap's encoding.
                unsafe { pin.set_word(arr, g as usize, WordKind::Tagged, v) };
            }
            Op::AddI { a, b, v, sp } => {
                let x = r!(b);
                if is_int(x) {
                    match (x as i64).checked_add((v as i64) << 2) {
                        Some(s) => w!(a, s as usize),
                        None => fail!("integer overflow"),
                    }
                } else {
                    let y = int(v as i64);
                    let res = tryv!(arith_slow(sh, pin, ArithOp::Add, x, y), sp);
                    w!(a, res);
                    settle!(sp);
                }
            }
            // The four operators floats take are instructions of their own, so that the
            // operator is a constant in each arm (no second dispatch on it per instruction).
            Op::Add { a, b, c, sp } => {
                let (x, y) = (r!(b), r!(c));
                arith!(ArithOp::Add, a, x, y, sp);
            }
            Op::Sub { a, b, c, sp } => {
                let (x, y) = (r!(b), r!(c));
                arith!(ArithOp::Sub, a, x, y, sp);
            }
            Op::Mul { a, b, c, sp } => {
                let (x, y) = (r!(b), r!(c));
                arith!(ArithOp::Mul, a, x, y, sp);
            }
            Op::Div { a, b, c, sp } => {
                let (x, y) = (r!(b), r!(c));
                arith!(ArithOp::Div, a, x, y, sp);
            }
            Op::Arith { op, a, b, c, sp } => {
                let (x, y) = (r!(b), r!(c));
                arith!(op, a, x, y, sp);
            }
            Op::AddK { a, b, k, kl, sp } => {
                let (x, y) = if kl { (kw[k as usize], r!(b)) } else { (r!(b), kw[k as usize]) };
                arith!(ArithOp::Add, a, x, y, sp);
            }
            Op::SubK { a, b, k, kl, sp } => {
                let (x, y) = if kl { (kw[k as usize], r!(b)) } else { (r!(b), kw[k as usize]) };
                arith!(ArithOp::Sub, a, x, y, sp);
            }
            Op::MulK { a, b, k, kl, sp } => {
                let (x, y) = if kl { (kw[k as usize], r!(b)) } else { (r!(b), kw[k as usize]) };
                arith!(ArithOp::Mul, a, x, y, sp);
            }
            Op::DivK { a, b, k, kl, sp } => {
                let (x, y) = if kl { (kw[k as usize], r!(b)) } else { (r!(b), kw[k as usize]) };
                arith!(ArithOp::Div, a, x, y, sp);
            }
            Op::ArithK { op, a, b, k, kl, sp } => {
                let (x, y) = if kl { (kw[k as usize], r!(b)) } else { (r!(b), kw[k as usize]) };
                arith!(op, a, x, y, sp);
            }
            Op::Cmp { op, a, b, c } => {
                let (x, y) = (r!(b), r!(c));
                let res = cmp!(op, x, y);
                w!(a, boolean(res));
            }
            // Each comparison operator is an instruction of its own (see `Op::cmp_jmp_f`).
            Op::LtJmpF { b, c, t } => cmp_jmp!(CmpOp::Lt, r!(b), r!(c), t),
            Op::LeJmpF { b, c, t } => cmp_jmp!(CmpOp::Le, r!(b), r!(c), t),
            Op::EqJmpF { b, c, t } => cmp_jmp!(CmpOp::Eq, r!(b), r!(c), t),
            Op::NeJmpF { b, c, t } => cmp_jmp!(CmpOp::Ne, r!(b), r!(c), t),
            Op::LtJmpFK { b, k, kl, t } => {
                let (x, y) = if kl { (kw[k as usize], r!(b)) } else { (r!(b), kw[k as usize]) };
                cmp_jmp!(CmpOp::Lt, x, y, t)
            }
            Op::LeJmpFK { b, k, kl, t } => {
                let (x, y) = if kl { (kw[k as usize], r!(b)) } else { (r!(b), kw[k as usize]) };
                cmp_jmp!(CmpOp::Le, x, y, t)
            }
            Op::EqJmpFK { b, k, kl, t } => {
                let (x, y) = if kl { (kw[k as usize], r!(b)) } else { (r!(b), kw[k as usize]) };
                cmp_jmp!(CmpOp::Eq, x, y, t)
            }
            Op::NeJmpFK { b, k, kl, t } => {
                let (x, y) = if kl { (kw[k as usize], r!(b)) } else { (r!(b), kw[k as usize]) };
                cmp_jmp!(CmpOp::Ne, x, y, t)
            }
            Op::Neg { a, b, sp } => {
                let x = r!(b);
                if is_int(x) {
                    match (x as i64).checked_neg() {
                        Some(v) => w!(a, v as usize),
                        None => fail!("integer overflow"),
                    }
                } else {
                    let res = tryv!(arith_slow(sh, pin, ArithOp::Sub, int(0), x), sp);
                    w!(a, res);
                    settle!(sp);
                }
            }
            Op::Not { a, b } => w!(a, boolean(!truthy(r!(b)))),
            Op::Jmp { t } => pc = t as usize,
            Op::JmpF { a, t } => {
                if !truthy(r!(a)) {
                    pc = t as usize;
                }
            }
            Op::JmpT { a, t } => {
                if truthy(r!(a)) {
                    pc = t as usize;
                }
            }
            Op::Loop { t, sp } => {
                pc = t as usize;
                if pin.stack().guard().is_poisoned() {
                    sp_before!(sp);
                    save!();
                    return Exit::Poll;
                }
            }
            Op::ForLoop { i, end, t, sp } => {
                let (x, e) = (r!(i), r!(end));
                let go = if is_int(x | e) {
                    // `x < e` held when the body began and neither register changed since,
                    // so `x + 1` fits.
                    let nx = x as i64 + (1 << 2);
                    w!(i, nx as usize);
                    nx < e as i64
                } else {
                    let nx = tryv!(arith_slow(sh, pin, ArithOp::Add, x, int(1)), sp);
                    w!(i, nx);
                    let go = match compare(sh, pin, CmpOp::Lt, nx, e) {
                        Ok(v) => v,
                        Err(m) => fail!("{m}"),
                    };
                    if go {
                        pc = t as usize;
                    }
                    settle!(sp);
                    go
                };
                if go {
                    pc = t as usize;
                    if pin.stack().guard().is_poisoned() {
                        sp_before!(sp + 1);
                        save!();
                        return Exit::Poll;
                    }
                }
            }
            Op::CallG { a, p, base, n, sp } => {
                let callee = &protos[p as usize];
                let new = push_frame!(callee, sp, base as usize, n);
                enter!(callee, p, a, new);
            }
            Op::Call { a, f, n, sp } => {
                let clo = r!(f);
                let (p, params) = match closure_proto(sh, pin, clo) {
                    Ok(x) => x,
                    Err(m) => fail!("{m}"),
                };
                if params != n as usize {
                    fail!("{} takes {params} arguments, given {n}", protos[p].name);
                }
                let callee = &protos[p];
                let new = push_frame!(callee, sp, f as usize + 1, n);
                copy_captures(pin, new, clo, callee);
                enter!(callee, p, a, new);
            }
            Op::Ret { a } => {
                let v = r!(a);
                // The `try` blocks this frame left open end with it.
                while st.handlers.last().is_some_and(|h| h.depth == st.frames.len()) {
                    st.handlers.pop();
                }
                let ms = pin.stack();
                ms.pop();
                let done = st.frames.pop().expect("the returning frame");
                let Some(&caller) = st.frames.last() else {
                    return Exit::Done;
                };
                proto = &protos[caller.proto as usize];
                code = &proto.code[..];
                pc = caller.pc as usize;
                regs = ms.top_slots_ptr();
                w!(done.ret, v);
            }
            Op::NewVec { a, base, n, sp } => {
                let items = if n == 0 {
                    NIL
                } else {
                    let shape = match sh.types.arr(pin, n as usize) {
                        Ok(s) => s,
                        Err(e) => fail!("{e}"),
                    };
                    alloc!(shape, sp)
                };
                let v = alloc!(sh.types.vec_shape, sp);
                for i in 0..n as usize {
                    let x = r!(base as usize + i);
                    // SAFETY: `items` is a fresh array of `n` tagged words; registers hold
                    // values of the heap's encoding.
                    unsafe { pin.set_word(items, i, WordKind::Tagged, x) };
                }
                // SAFETY: `v` is a fresh vector record (two tagged words).
                unsafe {
                    pin.set_word(v, 0, WordKind::Tagged, int(n as i64));
                    pin.set_word(v, 1, WordKind::Tagged, items);
                }
                w!(a, v);
                settle!(sp);
            }
            Op::NewMap { a, n, sp } => {
                let cap = (n as usize * 2).next_power_of_two().max(8);
                let m = tryv!(new_map(sh, pin, cap), sp);
                w!(a, m);
                settle!(sp);
            }
            Op::Index { a, b, c } => {
                let (o, k) = (r!(b), r!(c));
                // A vector's element in range: inline. (A negative index is a huge `usize`.)
                if is_ref(o)
                    && is_int(k)
                    && tid(pin, o) == sh.types.vec
                    && let (len, items) = vec_parts(pin, o)
                    && (as_int(k) as usize) < len
                    && let Some(v) = arr_get(pin, items, as_int(k) as usize)
                {
                    w!(a, v);
                    continue;
                }
                match index(sh, pin, o, k) {
                    Ok(v) => w!(a, v),
                    Err(m) => fail!("{m}"),
                }
            }
            Op::SetIndex { a, b, c, sp } => {
                let (o, k, v) = (r!(a), r!(b), r!(c));
                if is_ref(o)
                    && is_int(k)
                    && tid(pin, o) == sh.types.vec
                    && let (len, items) = vec_parts(pin, o)
                    && (as_int(k) as usize) < len
                    && (as_int(k) as usize) < arr_len(pin, items)
                {
                    // SAFETY: `items` is the vector's array, the index below its own length;
                    // `v` is a register's value of the heap's encoding.
                    unsafe { pin.set_word(items, as_int(k) as usize, WordKind::Tagged, v) };
                    continue;
                }
                tryv!(set_index(sh, pin, o, k, v), sp);
                settle!(sp);
            }
            Op::Closure { a, p, base, n, sp } => {
                let shape = match pin.shape(sh.types.closure, 1 + n as usize) {
                    Ok(s) => s,
                    Err(e) => fail!("{e}"),
                };
                let c = alloc!(shape, sp);
                // SAFETY: a fresh closure of `1 + n` tagged words.
                unsafe { pin.set_word(c, 0, WordKind::Tagged, int(p as i64)) };
                for i in 0..n as usize {
                    let x = r!(base as usize + i);
                    // SAFETY: as above; registers hold values of the heap's encoding.
                    unsafe { pin.set_word(c, 1 + i, WordKind::Tagged, x) };
                }
                w!(a, c);
                settle!(sp);
            }
            Op::Go { f, n, sp } => {
                let clo = r!(f);
                let (p, params) = match closure_proto(sh, pin, clo) {
                    Ok(x) => x,
                    Err(m) => fail!("go: {m}"),
                };
                if params != n as usize {
                    fail!("{} takes {params} arguments, given {n}", protos[p].name);
                }
                let gs = (0..=n as usize)
                    .map(|i| pin.new_global(r!(f as usize + i)).expect("registers hold values"))
                    .collect();
                sp_before!(sp + 1);
                save!();
                return Exit::Block(Block::Go(gs));
            }
            Op::Builtin { a, id, base, n, sp } => {
                let arg = |i: usize| r!(base as usize + i);
                // `push` onto a vector with room: inline (as `vec_push` does it, without the
                // growth).
                if id == Builtin::Push
                    && let v = arg(0)
                    && is_ref(v)
                    && tid(pin, v) == sh.types.vec
                    && let (len, items) = vec_parts(pin, v)
                    && len < arr_len(pin, items)
                {
                    // SAFETY: `items` is the vector's array, `len` below its length, and `v`
                    // a vector record (two tagged words); registers hold values of the
                    // heap's encoding.
                    unsafe {
                        pin.set_word(items, len, WordKind::Tagged, arg(1));
                        pin.set_word(v, 0, WordKind::Tagged, int(len as i64 + 1));
                    }
                    w!(a, NIL);
                    continue;
                }
                let res = match id {
                    Builtin::Print | Builtin::Write => {
                        // print: separated by spaces, a newline at the end; write: neither.
                        let print = id == Builtin::Print;
                        let mut s = String::new();
                        for i in 0..n as usize {
                            if i > 0 && print {
                                s.push(' ');
                            }
                            show(sh, pin, arg(i), &mut s, 0, false);
                        }
                        if print {
                            s.push('\n');
                        }
                        w!(a, NIL);
                        sp_before!(sp + 1);
                        save!();
                        return Exit::Block(Block::Print(s));
                    }
                    Builtin::Sleep => {
                        let ms = arg(0);
                        if !is_int(ms) {
                            fail!("sleep takes milliseconds (an int)");
                        }
                        w!(a, NIL);
                        sp_before!(sp + 1);
                        save!();
                        return Exit::Block(Block::Sleep(as_int(ms)));
                    }
                    Builtin::Gc => {
                        w!(a, NIL);
                        sp_before!(sp + 1);
                        save!();
                        return Exit::Block(Block::Gc);
                    }
                    Builtin::Memstats => {
                        sp_before!(sp);
                        save!();
                        return Exit::Block(Block::Memstats { dst: a, sp });
                    }
                    Builtin::ReadLine | Builtin::ReadFile => {
                        let file = if id == Builtin::ReadFile {
                            match str_bytes(sh, pin, arg(0)) {
                                Some(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                                None => fail!(
                                    "read_file takes a path, not {}",
                                    type_name(sh, pin, arg(0))
                                ),
                            }
                        } else {
                            None
                        };
                        sp_before!(sp);
                        save!();
                        return Exit::Block(Block::Read { file, dst: a, sp });
                    }
                    Builtin::WriteFile => {
                        let Some(path) = str_bytes(sh, pin, arg(0)) else {
                            fail!("write_file takes a path, not {}", type_name(sh, pin, arg(0)));
                        };
                        let Some(data) = str_bytes(sh, pin, arg(1)) else {
                            fail!("write_file writes a string, not {}", type_name(sh, pin, arg(1)));
                        };
                        w!(a, NIL);
                        sp_before!(sp + 1);
                        save!();
                        let path = String::from_utf8_lossy(&path).into_owned();
                        return Exit::Block(Block::WriteFile(path, data));
                    }
                    Builtin::Yield => {
                        w!(a, NIL);
                        sp_before!(sp + 1);
                        save!();
                        return Exit::Block(Block::Yield);
                    }
                    Builtin::Exit => {
                        let code = if n == 0 { int(0) } else { arg(0) };
                        if !is_int(code) || !(0..=255).contains(&as_int(code)) {
                            fail!("exit takes a status from 0 to 255");
                        }
                        sp_before!(sp + 1);
                        save!();
                        return Exit::Block(Block::Exit(as_int(code) as i32));
                    }
                    Builtin::Error => {
                        let mut s = String::new();
                        show(sh, pin, arg(0), &mut s, 0, false);
                        fail!("{s}");
                    }
                    _ => tryv!(builtin(sh, pin, id, base, n, regs), sp),
                };
                w!(a, res);
                settle!(sp);
            }
            Op::Send { ch, v, sp } => {
                let c = match chan_of(sh, pin, r!(ch)) {
                    Ok(c) => c,
                    Err(m) => fail!("{m}"),
                };
                let msg = to_msg(pin, r!(v));
                sp_before!(sp + 1);
                save!();
                return Exit::Block(Block::Send(c, msg));
            }
            Op::Recv { a, ch, sp } => {
                let c = match chan_of(sh, pin, r!(ch)) {
                    Ok(c) => c,
                    Err(m) => fail!("{m}"),
                };
                sp_before!(sp);
                save!();
                return Exit::Block(Block::Recv { ch: c, dst: a, ok: None });
            }
            Op::RecvOk { a, ok, ch, sp } => {
                let c = match chan_of(sh, pin, r!(ch)) {
                    Ok(c) => c,
                    Err(m) => fail!("{m}"),
                };
                sp_before!(sp);
                save!();
                return Exit::Block(Block::Recv { ch: c, dst: a, ok: Some(ok) });
            }
            Op::NewBox { a, b, sp } => {
                let x = r!(b);
                let bx = alloc!(sh.types.box_shape, sp);
                // SAFETY: a fresh box record (one tagged word); registers hold values of the
                // heap's encoding.
                unsafe { pin.set_word(bx, 0, WordKind::Tagged, x) };
                w!(a, bx);
                settle!(sp);
            }
            Op::GetBox { a, b } => {
                let bx = r!(b);
                // SAFETY: the compiler gives a boxed variable's register only to box
                // instructions, and it holds a box from `NewBox` on.
                w!(a, unsafe { pin.word(bx, 0) });
            }
            Op::SetBox { a, b } => {
                let (bx, x) = (r!(a), r!(b));
                // SAFETY: as in `GetBox`; a register holds a value of the heap's encoding.
                unsafe { pin.set_word(bx, 0, WordKind::Tagged, x) };
            }
            Op::Try { t, e, sp } => {
                st.handlers.push(Handler { depth: st.frames.len(), target: t, e, sp });
            }
            Op::EndTry { n } => {
                let k = st.handlers.len() - n as usize;
                st.handlers.truncate(k);
            }
            Op::Select { a, sel, sp } => {
                let table = &proto.sels[sel as usize];
                let mut cases = Vec::with_capacity(table.cases.len());
                let mut dsts = Vec::with_capacity(table.cases.len());
                for c in &table.cases {
                    let (ch, send, dst) = match *c {
                        SelCase::Recv { ch, dst, ok } => (ch, None, (dst, ok)),
                        SelCase::Send { ch, v } => (ch, Some(v), (None, None)),
                    };
                    dsts.push(dst);
                    // A nil channel's case is never ready (Go's rule, for turning a case off).
                    if r!(ch) == NIL {
                        cases.push(None);
                        continue;
                    }
                    let c = match chan_of(sh, pin, r!(ch)) {
                        Ok(c) => c,
                        Err(m) => fail!("select: {m}"),
                    };
                    cases.push(Some((c, send.map(|v| to_msg(pin, r!(v))))));
                }
                sp_before!(sp);
                save!();
                return Exit::Block(Block::Select { sel: cases, default: table.default, a, dsts });
            }
            Op::IterNext { x, it, obj, t, sp } => {
                let o = r!(obj);
                let i = as_int(r!(it)) as usize;
                match iter_next(sh, pin, o, i) {
                    Ok(Step::Item(v, next)) => {
                        w!(x, v);
                        w!(it, int(next as i64));
                    }
                    Ok(Step::Done) => pc = t as usize,
                    Ok(Step::Chan(c)) => {
                        sp_before!(sp);
                        save!();
                        return Exit::Block(Block::IterRecv { ch: c, x, t });
                    }
                    Err(m) => fail!("{m}"),
                }
            }
        }
    }
}

/// Why an operation outside the fast paths failed.
enum Fault {
    /// The heap is at its hard limit.
    Oom,
    /// A runtime error.
    Msg(String),
}

impl From<String> for Fault {
    fn from(m: String) -> Fault {
        Fault::Msg(m)
    }
}

type F<T> = Result<T, Fault>;

fn alloc_in(pin: &mut Pin<'_>, shape: Shape, owe: &mut bool) -> F<usize> {
    match pin.alloc(shape) {
        Ok((v, slow)) => {
            *owe |= slow;
            Ok(v)
        }
        Err(GcError::Alloc(_)) => Err(Fault::Oom),
        Err(e) => Err(Fault::Msg(e.to_string())),
    }
}

thread_local! {
    /// Whether an allocation inside a helper took its slow path: read and cleared by the
    /// instruction (a goroutine's section never spans threads, so a thread-local is exact).
    static OWE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn alloc_h(pin: &mut Pin<'_>, shape: Shape) -> F<usize> {
    let mut owe = false;
    let r = alloc_in(pin, shape, &mut owe);
    if owe {
        OWE.with(|o| o.set(true));
    }
    r
}

fn new_float(sh: &Shared, pin: &mut Pin<'_>, f: f64) -> F<usize> {
    if let Some(w) = flo(f) {
        return Ok(w);
    }
    let v = alloc_h(pin, sh.types.float_shape)?;
    // SAFETY: a fresh float record: one raw word.
    unsafe { pin.set_word(v, 0, WordKind::Raw, f.to_bits() as usize) };
    Ok(v)
}

fn new_str(sh: &Shared, pin: &mut Pin<'_>, s: &[u8]) -> F<usize> {
    let (ptr, len) = (s.as_ptr(), s.len());
    // SAFETY: `s` is a Rust slice, alive for the call.
    unsafe { new_str_of(sh, pin, &[(ptr, len)]) }
}

/// A new string of the bytes at `parts`, one after the other.
///
/// # Safety
/// Each part is `len` readable bytes that stay in place while the string is made: a Rust
/// buffer, or the bytes of a string object of this section (nothing is freed while pinned,
/// and a string's bytes are never written once it is made: see [`str_view`]).
unsafe fn new_str_of(sh: &Shared, pin: &mut Pin<'_>, parts: &[(*const u8, usize)]) -> F<usize> {
    let len = parts.iter().map(|p| p.1).sum();
    let shape = sh.types.str(pin, len)?;
    let v = alloc_h(pin, shape)?;
    // SAFETY: a fresh byte array of `len` bytes.
    let cells = unsafe { pin.bytes(v) };
    debug_assert_eq!(cells.len(), len);
    let mut at = cells.as_ptr() as *mut u8;
    for &(p, n) in parts {
        // SAFETY: `AtomicU8` has `u8`'s layout and its cells allow writes through a shared
        // reference; the object is this section's, not yet stored anywhere, so nothing else
        // reads or writes its bytes while they are copied; the parts are readable (the
        // contract) and are not this fresh object; `at + n` stays inside its `len` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(p, at, n);
            at = at.add(n);
        }
    }
    Ok(v)
}

fn new_map(sh: &Shared, pin: &mut Pin<'_>, cap: usize) -> F<usize> {
    let arr = sh.types.arr(pin, cap)?;
    let keys = alloc_h(pin, arr)?;
    let vals = alloc_h(pin, arr)?;
    let hashes = alloc_h(pin, arr)?;
    let m = alloc_h(pin, sh.types.map_shape)?;
    // SAFETY: fresh objects: `cap` tagged words each (a fresh word is 0, the int 0), and a
    // map record of four.
    unsafe {
        for i in 0..cap {
            pin.set_word(keys, i, WordKind::Tagged, NIL);
        }
        pin.set_word(m, 0, WordKind::Tagged, int(0));
        pin.set_word(m, 1, WordKind::Tagged, keys);
        pin.set_word(m, 2, WordKind::Tagged, vals);
        pin.set_word(m, 3, WordKind::Tagged, hashes);
    }
    Ok(m)
}

/// The type id of a reference.
#[inline]
fn tid(pin: &Pin<'_>, v: usize) -> TypeId {
    // SAFETY: callers pass references read from registers, fields or globals: live objects.
    unsafe { pin.header(v) }.type_id()
}

fn float_of(sh: &Shared, pin: &Pin<'_>, v: usize) -> Option<f64> {
    if is_int(v) {
        Some(as_int(v) as f64)
    } else if is_flo(v) {
        Some(flo_value(v))
    } else if is_ref(v) && tid(pin, v) == sh.types.float {
        // SAFETY: a float record has one raw word.
        Some(f64::from_bits(unsafe { pin.word(v, 0) } as u64))
    } else {
        None
    }
}

/// A string's bytes where they are (no copy), or `None` for another value.
///
/// A string's bytes are written once, by [`new_str`], before its reference leaves the
/// section that made it, and never again; so reading them as plain bytes races with no
/// write, and a slice compares, hashes and copies as bytes do (a byte at a time through
/// atomics, it did not vectorize).
#[inline(always)]
fn str_view<'p>(sh: &Shared, pin: &'p Pin<'_>, v: usize) -> Option<&'p [u8]> {
    if !is_ref(v) {
        return None;
    }
    // SAFETY: a reference from a register, field or global: a live object.
    let h = unsafe { pin.header(v) };
    if h.type_id() == sh.types.str {
        // SAFETY: a string is a byte array, live while the section runs; `h` is its header.
        let cells = unsafe { pin.bytes_of(v, h) };
        // SAFETY: `AtomicU8` has `u8`'s size, alignment and bit validity; nothing writes a
        // string's bytes once it is made (above), so no write races with these reads.
        Some(unsafe { std::slice::from_raw_parts(cells.as_ptr() as *const u8, cells.len()) })
    } else {
        None
    }
}

fn str_bytes(sh: &Shared, pin: &Pin<'_>, v: usize) -> Option<Vec<u8>> {
    str_view(sh, pin, v).map(<[u8]>::to_vec)
}

fn arith_slow(sh: &Shared, pin: &mut Pin<'_>, op: ArithOp, x: usize, y: usize) -> F<usize> {
    if op == ArithOp::Add
        && let (Some(a), Some(b)) = (str_view(sh, pin, x), str_view(sh, pin, y))
    {
        let parts = [(a.as_ptr(), a.len()), (b.as_ptr(), b.len())];
        // SAFETY: both are the bytes of strings of this section, which stay in place.
        return unsafe { new_str_of(sh, pin, &parts) };
    }
    let floats = (float_of(sh, pin, x), float_of(sh, pin, y));
    let v = match (op, floats) {
        (ArithOp::Add, (Some(a), Some(b))) => a + b,
        (ArithOp::Sub, (Some(a), Some(b))) => a - b,
        (ArithOp::Mul, (Some(a), Some(b))) => a * b,
        (ArithOp::Div, (Some(a), Some(b))) => a / b,
        (ArithOp::Mod, (Some(a), Some(b))) => a % b,
        // The bitwise operators and shifts take integers only (the fast path's case).
        _ => {
            return Err(Fault::Msg(format!(
                "cannot apply {} to {} and {}",
                op.symbol(),
                type_name(sh, pin, x),
                type_name(sh, pin, y)
            )));
        }
    };
    new_float(sh, pin, v)
}

/// An immediate float's value, or an integer's as a float (as `arith_slow` takes them).
#[inline(always)]
fn num_imm(w: usize) -> Option<f64> {
    if is_flo(w) {
        Some(flo_value(w))
    } else if is_int(w) {
        Some(as_int(w) as f64)
    } else {
        None
    }
}

/// `a op b` on two floats, for the operators that take floats.
#[inline(always)]
fn flo_arith(op: ArithOp, a: f64, b: f64) -> Option<f64> {
    match op {
        ArithOp::Add => Some(a + b),
        ArithOp::Sub => Some(a - b),
        ArithOp::Mul => Some(a * b),
        ArithOp::Div => Some(a / b),
        ArithOp::Mod => Some(a % b),
        _ => None,
    }
}

/// `a op b` on two floats (IEEE: a NaN compares false, and unequal).
#[inline(always)]
fn cmp_flo(op: CmpOp, a: f64, b: f64) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
    }
}

/// `x << n` or `x >> n` on integers: a negative count is an error (as in Go); `>>` is
/// arithmetic, a count of 64 or more giving 0 or -1; `<<` that shifts out a bit differing from
/// the sign is an integer overflow, as every Pebble integer operation that loses bits is. The
/// caller checks that the result fits an integer.
fn shift(op: ArithOp, x: i64, n: i64) -> Result<i64, &'static str> {
    if n < 0 {
        return Err("negative shift count");
    }
    let n = n.min(64) as u32;
    Ok(match op {
        ArithOp::Shl => {
            if n >= 64 || (x << n) >> n != x {
                // Bits shifted out: an overflow unless only zeros (or ones) went.
                return if x == 0 { Ok(0) } else { Err("integer overflow") };
            }
            x << n
        }
        _ => {
            if n >= 64 {
                x >> 63
            } else {
                x >> n
            }
        }
    })
}

#[inline(always)]
fn cmp_int(op: CmpOp, x: usize, y: usize) -> bool {
    let (x, y) = (x as i64, y as i64);
    match op {
        CmpOp::Eq => x == y,
        CmpOp::Ne => x != y,
        CmpOp::Lt => x < y,
        CmpOp::Le => x <= y,
    }
}

/// The decimal digits of `v` (with its sign), written at the end of `buf`.
fn int_digits(v: i64, buf: &mut [u8; 24]) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

/// Where `sub` first occurs in `s` (0 for an empty `sub`).
fn find_bytes(s: &[u8], sub: &[u8]) -> Option<usize> {
    let Some((&first, rest)) = sub.split_first() else { return Some(0) };
    let last = s.len().checked_sub(sub.len())?;
    let mut i = 0;
    while i <= last {
        // The first byte by a scan, then the rest compared.
        i += s[i..=last].iter().position(|&b| b == first)?;
        if &s[i + 1..i + sub.len()] == rest {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// A string argument of builtin `what`, or an error naming it.
fn string_arg(sh: &Shared, pin: &Pin<'_>, v: usize, what: &str) -> Result<String, Fault> {
    match str_bytes(sh, pin, v) {
        Some(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        None => Err(format!("{what} takes strings, not {}", type_name(sh, pin, v)).into()),
    }
}

/// A value as an error message shows it.
fn describe(sh: &Shared, pin: &Pin<'_>, v: usize) -> String {
    let mut s = String::new();
    show(sh, pin, v, &mut s, 0, true);
    s
}

/// A value as `format` takes it.
fn format_arg(sh: &Shared, pin: &Pin<'_>, v: usize) -> crate::format::Arg {
    use crate::format::Arg;
    if is_int(v) {
        return Arg::Int(as_int(v));
    }
    if v == crate::value::TRUE || v == crate::value::FALSE {
        return Arg::Bool(v == crate::value::TRUE);
    }
    if let Some(f) = float_of(sh, pin, v) {
        return Arg::Float(f);
    }
    if let Some(b) = str_bytes(sh, pin, v) {
        return Arg::Str(String::from_utf8_lossy(&b).into_owned());
    }
    let mut s = String::new();
    show(sh, pin, v, &mut s, 0, false);
    Arg::Other(s)
}

/// nil, true or false: immediates that equal only themselves.
#[inline]
fn is_atom(w: usize) -> bool {
    w & 3 == 2
}

/// Equality: by value for numbers and strings, by identity otherwise.
fn equal(sh: &Shared, pin: &Pin<'_>, x: usize, y: usize) -> bool {
    if x == y {
        return true;
    }
    if is_atom(x) || is_atom(y) || (is_int(x) && is_int(y)) {
        return false;
    }
    if is_ref(x) && is_ref(y) {
        let (tx, ty) = (tid(pin, x), tid(pin, y));
        if tx == sh.types.str && ty == sh.types.str {
            return str_view(sh, pin, x) == str_view(sh, pin, y);
        }
        if tx != sh.types.float || ty != sh.types.float {
            return false;
        }
    }
    if let (Some(a), Some(b)) = (float_of(sh, pin, x), float_of(sh, pin, y)) {
        return a == b;
    }
    false
}

fn compare(sh: &Shared, pin: &Pin<'_>, op: CmpOp, x: usize, y: usize) -> Result<bool, String> {
    if matches!(op, CmpOp::Eq | CmpOp::Ne) {
        // nil and the booleans equal only themselves: no object to look at.
        if x == y || is_atom(x) || is_atom(y) {
            return Ok((x == y) == (op == CmpOp::Eq));
        }
    }
    match op {
        CmpOp::Eq => return Ok(equal(sh, pin, x, y)),
        CmpOp::Ne => return Ok(!equal(sh, pin, x, y)),
        _ => {}
    }
    let ord = if let (Some(a), Some(b)) = (float_of(sh, pin, x), float_of(sh, pin, y)) {
        a.partial_cmp(&b)
    } else if let (Some(a), Some(b)) = (str_view(sh, pin, x), str_view(sh, pin, y)) {
        Some(a.cmp(b))
    } else {
        return Err(format!(
            "cannot compare {} and {}",
            type_name(sh, pin, x),
            type_name(sh, pin, y)
        ));
    };
    Ok(match (op, ord) {
        (_, None) => false,
        (CmpOp::Lt, Some(o)) => o.is_lt(),
        (_, Some(o)) => o.is_le(),
    })
}

/// `r`, a caught panic of a runtime call that the interpreter turns into a program error,
/// unless it is the runtime's shutdown unwinding the goroutine: that one goes on unwinding
/// (the shutdown is not the program's error, and the goroutine must not run on).
fn not_shutdown<T>(r: std::thread::Result<T>) -> std::thread::Result<T> {
    match r {
        Err(p) if p.is::<safepoint_sched::RuntimeShutdown>() => std::panic::resume_unwind(p),
        r => r,
    }
}

/// The Rust side of the channel record `v`: the entry of [`Shared::chans`] whose id the
/// record holds (an int).
///
/// The entry is removed by the record's cleanup once the collector finds the record
/// unreachable; the caller holds the record in a register, so it is there. The `Arc` keeps
/// the channel for as long as the caller uses it (a wait outside the section, say), whatever
/// happens to the record meanwhile.
fn chan_of(sh: &Shared, pin: &Pin<'_>, v: usize) -> Result<Arc<ChanBox>, String> {
    if !is_ref(v) || tid(pin, v) != sh.types.chan {
        return Err(format!("not a channel: {}", type_name(sh, pin, v)));
    }
    // SAFETY: a channel record: one tagged word, its id.
    let id = unsafe { pin.word(v, 0) };
    usize::try_from(as_int(id))
        .ok()
        .and_then(|id| sh.chans.get(id))
        .ok_or_else(|| format!("a channel record names no channel (id word {id:#x})"))
}

fn to_msg(pin: &Pin<'_>, v: usize) -> Msg {
    if is_ref(v) {
        Msg::Ref(pin.new_global(v).expect("registers hold values"))
    } else {
        Msg::Imm(v)
    }
}

fn msg_value(pin: &Pin<'_>, m: Option<Msg>) -> usize {
    match m {
        None => NIL,
        Some(Msg::Imm(v)) => v,
        Some(Msg::Ref(g)) => pin.global(&g).expect("our heap"),
    }
}

/// The vector `v`'s length and items array.
fn vec_parts(pin: &Pin<'_>, v: usize) -> (usize, usize) {
    // SAFETY: callers checked that `v` is a vector record (two tagged words).
    unsafe { (as_int(pin.word(v, 0)) as usize, pin.word(v, 1)) }
}

/// Element `i` of array `a` (an array reference, or nil for none), or `None` past its end.
/// Bounds come from the array's own header: a vector or map that another goroutine changes
/// meanwhile (a race in the program) reads nil or misses, never past an object.
#[inline]
fn arr_get(pin: &Pin<'_>, a: usize, i: usize) -> Option<usize> {
    // SAFETY: `i` is checked against the array's own length.
    (i < arr_len(pin, a)).then(|| unsafe { pin.word(a, i) })
}

/// Sets element `i` of array `a` to `v` if `i` is inside it (see [`arr_get`]).
#[inline]
fn arr_set(pin: &mut Pin<'_>, a: usize, i: usize, v: usize) {
    if i < arr_len(pin, a) {
        // SAFETY: as in `arr_get`; `v` is a value of the heap's encoding.
        unsafe { pin.set_word(a, i, WordKind::Tagged, v) };
    }
}

fn arr_len(pin: &Pin<'_>, a: usize) -> usize {
    if a == NIL {
        0
    } else {
        // SAFETY: an array reference read from a vector or map record.
        unsafe { pin.header(a) }.len()
    }
}

/// FNV-1a's offset basis and prime.
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x100_0000_01b3;

/// FNV-1a over `bytes`, from `h`.
#[inline]
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// A map key's hash, given its bytes if it is a string (`ks`, from [`str_view`]): a string
/// hashes its bytes, a float equal to an integer hashes as that integer, anything else its
/// word.
#[inline]
fn hash_of(sh: &Shared, pin: &Pin<'_>, k: usize, ks: Option<&[u8]>) -> u64 {
    let h = if let Some(s) = ks {
        fnv(FNV_BASIS, s)
    } else if !is_int(k)
        && let Some(f) = float_of(sh, pin, k)
    {
        // Integral floats hash as the integer they equal.
        if f.fract() == 0.0 && f.abs() < (1u64 << 61) as f64 {
            fnv(FNV_BASIS, &(int(f as i64) as u64).to_le_bytes())
        } else {
            fnv(FNV_BASIS, &f.to_bits().to_le_bytes())
        }
    } else {
        fnv(FNV_BASIS, &(k as u64).to_le_bytes())
    };
    h ^ (h >> 29)
}

/// The slot of key `k` in map `m`: `Ok(i)` if present, `Err(Some(i))` the empty slot where
/// it would go, `Err(None)` if the table has no empty slot (possible only when goroutines
/// race on the map: then it grows).
fn map_find(sh: &Shared, pin: &Pin<'_>, m: usize, k: usize) -> Result<usize, Option<usize>> {
    map_probe(sh, pin, m, k).0
}

/// A key's hash as the int stored in a map's hashes array (its low bits pick the first slot).
#[inline]
fn hash_word(h: u64) -> usize {
    int((h & ((1 << 60) - 1)) as i64)
}

/// Finds `k` in map `m`: its slot, or the empty slot where it would go (`None` if the map is
/// full); and its hash word.
fn map_probe(
    sh: &Shared,
    pin: &Pin<'_>,
    m: usize,
    k: usize,
) -> (Result<usize, Option<usize>>, usize) {
    // SAFETY: `m` is a map record: count, keys, values, hashes.
    let (keys, hashes) = unsafe { (pin.word(m, 1), pin.word(m, 3)) };
    // Each array's own length bounds its reads (see `arr_get`); they are equal unless
    // goroutines race on the map.
    let (cap, hcap) = (arr_len(pin, keys), arr_len(pin, hashes));
    let mask = cap.wrapping_sub(1);
    // A string key's bytes are looked up once, for the hash and every comparison.
    let ks = str_view(sh, pin, k);
    let hw = hash_word(hash_of(sh, pin, k, ks));
    let mut i = as_int(hw) as usize & mask;
    for _ in 0..cap {
        // SAFETY: `i` is masked by `cap - 1`, so below the keys array's length (the loop
        // does not run when it is empty).
        let kk = unsafe { pin.word(keys, i) };
        if kk == NIL {
            return (Err(Some(i)), hw);
        }
        // SAFETY: `i` is below the hashes array's own length.
        if i < hcap && unsafe { pin.word(hashes, i) } == hw {
            let same = kk == k
                || match ks {
                    // A string equals only a string of the same bytes (as `equal` has it).
                    Some(s) => str_view(sh, pin, kk) == Some(s),
                    None => equal(sh, pin, kk, k),
                };
            if same {
                return (Ok(i), hw);
            }
        }
        i = (i + 1) & mask;
    }
    (Err(None), hw)
}

fn index(sh: &Shared, pin: &mut Pin<'_>, o: usize, k: usize) -> Result<usize, String> {
    if !is_ref(o) {
        return Err(format!("cannot index {}", type_name(sh, pin, o)));
    }
    let t = tid(pin, o);
    if t == sh.types.vec {
        let (len, items) = vec_parts(pin, o);
        if !is_int(k) {
            return Err(format!("vector index must be an int, not {}", type_name(sh, pin, k)));
        }
        let i = as_int(k);
        if i < 0 || i as usize >= len {
            return Err(format!("index {i} out of range (length {len})"));
        }
        Ok(arr_get(pin, items, i as usize).unwrap_or(NIL))
    } else if t == sh.types.map {
        if k == NIL {
            return Ok(NIL);
        }
        Ok(match map_find(sh, pin, o, k) {
            // SAFETY: `o` is a map record.
            Ok(i) => arr_get(pin, unsafe { pin.word(o, 2) }, i).unwrap_or(NIL),
            Err(_) => NIL,
        })
    } else if t == sh.types.weakmap {
        wm_get(sh, pin, o, k)
    } else if t == sh.types.str {
        // A byte, as Go's `s[i]`.
        let b = str_bytes(sh, pin, o).unwrap_or_default();
        if !is_int(k) {
            return Err(format!("string index must be an int, not {}", type_name(sh, pin, k)));
        }
        let i = as_int(k);
        match usize::try_from(i).ok().and_then(|i| b.get(i)) {
            Some(&c) => Ok(int(c as i64)),
            None => Err(format!("index {i} out of range (length {})", b.len())),
        }
    } else {
        Err(format!("cannot index {}", type_name(sh, pin, o)))
    }
}

fn set_index(sh: &Shared, pin: &mut Pin<'_>, o: usize, k: usize, v: usize) -> F<()> {
    if !is_ref(o) {
        return Err(format!("cannot index {}", type_name(sh, pin, o)).into());
    }
    let t = tid(pin, o);
    if t == sh.types.vec {
        let (len, items) = vec_parts(pin, o);
        if !is_int(k) {
            return Err(
                format!("vector index must be an int, not {}", type_name(sh, pin, k)).into()
            );
        }
        let i = as_int(k);
        if i < 0 || i as usize >= len {
            return Err(format!("index {i} out of range (length {len})").into());
        }
        arr_set(pin, items, i as usize, v);
        Ok(())
    } else if t == sh.types.map {
        map_set(sh, pin, o, k, v)
    } else if t == sh.types.weakmap {
        wm_set(sh, pin, o, k, v)
    } else {
        Err(format!("cannot assign into {}", type_name(sh, pin, o)).into())
    }
}

fn map_set(sh: &Shared, pin: &mut Pin<'_>, m: usize, k: usize, v: usize) -> F<()> {
    if k == NIL {
        return Err("nil map key".to_string().into());
    }
    let (found, hw) = map_probe(sh, pin, m, k);
    match found {
        Ok(i) => {
            // SAFETY: `m` is a map record.
            let vals = unsafe { pin.word(m, 2) };
            arr_set(pin, vals, i, v);
            Ok(())
        }
        Err(slot) => {
            // SAFETY: `m` is a map record.
            let (count, keys, vals, hashes) = unsafe {
                (
                    as_int(pin.word(m, 0)).max(0) as usize,
                    pin.word(m, 1),
                    pin.word(m, 2),
                    pin.word(m, 3),
                )
            };
            let cap = arr_len(pin, keys);
            let Some(i) = slot.filter(|_| (count + 1) * 4 <= cap * 3) else {
                map_grow(sh, pin, m, (cap * 2).max(8))?;
                return map_set(sh, pin, m, k, v);
            };
            arr_set(pin, keys, i, k);
            arr_set(pin, vals, i, v);
            arr_set(pin, hashes, i, hw);
            // SAFETY: `m`'s count word.
            unsafe { pin.set_word(m, 0, WordKind::Tagged, int(count as i64 + 1)) };
            Ok(())
        }
    }
}

fn map_grow(sh: &Shared, pin: &mut Pin<'_>, m: usize, cap: usize) -> F<()> {
    let fresh = new_map(sh, pin, cap)?;
    // SAFETY: `m` is a map record.
    let (keys, vals) = unsafe { (pin.word(m, 1), pin.word(m, 2)) };
    for i in 0..arr_len(pin, keys) {
        let k = arr_get(pin, keys, i).unwrap_or(NIL);
        if k != NIL {
            map_set(sh, pin, fresh, k, arr_get(pin, vals, i).unwrap_or(NIL))?;
        }
    }
    // SAFETY: both are map records; the fresh one's arrays move into `m`.
    unsafe {
        pin.set_word(m, 1, WordKind::Tagged, pin.word(fresh, 1));
        pin.set_word(m, 2, WordKind::Tagged, pin.word(fresh, 2));
        pin.set_word(m, 3, WordKind::Tagged, pin.word(fresh, 3));
    }
    Ok(())
}

/// Removes key `k` from map `m`; whether it was there. Linear probing, so the entries after
/// it in its run move back into the hole when their own first slot allows (no tombstones:
/// a later probe still finds every key).
fn map_delete(sh: &Shared, pin: &mut Pin<'_>, m: usize, k: usize) -> bool {
    if k == NIL {
        return false;
    }
    let Ok(mut hole) = map_find(sh, pin, m, k) else { return false };
    // SAFETY: `m` is a map record: count, keys, values, hashes.
    let (count, keys, vals, hashes) = unsafe {
        (as_int(pin.word(m, 0)).max(0) as usize, pin.word(m, 1), pin.word(m, 2), pin.word(m, 3))
    };
    let cap = arr_len(pin, keys);
    let mask = cap.wrapping_sub(1);
    let mut j = hole;
    for _ in 1..cap {
        j = (j + 1) & mask;
        let kk = arr_get(pin, keys, j).unwrap_or(NIL);
        if kk == NIL {
            break;
        }
        let home = as_int(arr_get(pin, hashes, j).unwrap_or(int(0))) as usize & mask;
        // The entry at `j` may fill the hole if its first slot is not strictly between the
        // hole and `j` (cyclically): its probe then passes the hole.
        if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
            let (v, h) = (arr_get(pin, vals, j).unwrap_or(NIL), arr_get(pin, hashes, j));
            arr_set(pin, keys, hole, kk);
            arr_set(pin, vals, hole, v);
            arr_set(pin, hashes, hole, h.unwrap_or(int(0)));
            hole = j;
        }
    }
    arr_set(pin, keys, hole, NIL);
    arr_set(pin, vals, hole, NIL);
    // SAFETY: `m`'s count word.
    unsafe { pin.set_word(m, 0, WordKind::Tagged, int(count.saturating_sub(1) as i64)) };
    true
}

// A weak-keyed map (`weakmap()`) is a record of two words: the number of slots used (by
// live entries, entries whose key died, and deleted ones) and an array of slots, each nil
// (never used), `false` (deleted) or an entry. An entry is an ephemeron record: the key's
// weak handle and the value, which the collector keeps alive only while the key is reachable
// from elsewhere (the `safepoint_gc::weak` module's "Ephemerons"). Keys are objects compared
// by identity: a key is hashed and compared by its word (a reference's word is its address
// with the reference tag, and the heap does not move objects), and an entry's key by the word
// its weak handle names, read without shading it (as the section API's `Section::weak_id`
// gives it), so a probe keeps none of the keys it passes alive. The slots
// are probed linearly from that hash; an entry whose key has died is skipped like a deleted
// slot and reused by the next insertion that passes it, and a table with no free slot left is
// rebuilt from its live entries (which drops the dead ones).

/// A deleted slot of a weak-keyed map.
const WM_DELETED: usize = crate::value::FALSE;

fn new_weakmap(sh: &Shared, pin: &mut Pin<'_>, cap: usize) -> F<usize> {
    let entries = wm_slots(sh, pin, cap)?;
    let m = alloc_h(pin, sh.types.weakmap_shape)?;
    // SAFETY: a fresh weakmap record of two tagged words.
    unsafe {
        pin.init_word(m, 0, WordKind::Tagged, int(0));
        pin.init_word(m, 1, WordKind::Tagged, entries);
    }
    Ok(m)
}

/// A fresh slots array of `cap` (a power of two) empty slots.
fn wm_slots(sh: &Shared, pin: &mut Pin<'_>, cap: usize) -> F<usize> {
    let arr = sh.types.arr(pin, cap)?;
    let entries = alloc_h(pin, arr)?;
    for i in 0..cap {
        // SAFETY: a fresh array of `cap` tagged words, none stored yet.
        unsafe { pin.init_word(entries, i, WordKind::Tagged, NIL) };
    }
    Ok(entries)
}

/// The key of a weak-keyed map as its word (its identity), or an error for a value that cannot be
/// one: keys are compared by identity, so only objects that have one qualify (strings and
/// floats are compared by value everywhere else, and an immediate is never collected).
fn wm_key(sh: &Shared, pin: &Pin<'_>, k: usize) -> Result<usize, String> {
    if !is_ref(k) || tid(pin, k) == sh.types.str || tid(pin, k) == sh.types.float {
        return Err(format!(
            "weakmap key must be an object (vector, map, function, channel...), not {}",
            type_name(sh, pin, k)
        ));
    }
    Ok(k)
}

/// The word of entry `e`'s key (a reference's word), as its handle names it: 0 once the key
/// has been freed. No shading: the callers only compare it with a key they hold or hash it.
///
/// A nonzero word equal to a key `k` the caller holds is `k` itself, not an older object
/// freed at the same address: the sweep that freed that object cleared its handle's word
/// before it freed the slot that `k` was then allocated in, and `k` reached the caller after
/// that.
fn wm_entry_key(pin: &Pin<'_>, e: usize) -> usize {
    // SAFETY: `e` is an entry record read from a weakmap's array: word 0 is the key's weak
    // handle (a plain address, set when the entry was made), which the entry keeps alive.
    let cell = unsafe { pin.word(e, 0) };
    if cell == 0 {
        return 0;
    }
    // SAFETY: a live weak handle, one raw word: its object's plain address, or 0.
    match unsafe { pin.word(cell | crate::value::RULE.ref_tag, 0) } {
        0 => 0,
        addr => addr | crate::value::RULE.ref_tag,
    }
}

/// The key of slot value `e` (nil, deleted, or an entry) if its key is alive, as a value
/// (shaded while marking, so it may be kept), read exactly as `deref` reads a handle.
fn wm_live_key(pin: &mut Pin<'_>, e: usize) -> Option<usize> {
    if !is_ref(e) {
        return None;
    }
    // SAFETY: an entry record: word 0 is its key's weak handle.
    let cell = unsafe { pin.word(e, 0) };
    if cell == 0 {
        return None;
    }
    // SAFETY: a live weak handle (the entry references it).
    match unsafe { pin.deref(cell | crate::value::RULE.ref_tag) } {
        0 => None,
        k => Some(k),
    }
}

/// The live keys of weak-keyed map `m`.
fn wm_live_keys(pin: &mut Pin<'_>, m: usize) -> Vec<usize> {
    // SAFETY: a weakmap record.
    let entries = unsafe { pin.word(m, 1) };
    (0..arr_len(pin, entries))
        .filter_map(|i| wm_live_key(pin, arr_get(pin, entries, i).unwrap_or(NIL)))
        .collect()
}

/// The hash of a key's word (objects are at least 8-byte aligned: the low bits are the tag).
fn wm_hash(key: usize) -> usize {
    let h = (key as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h ^ (h >> 32)) as usize
}

/// Where key `key` (its word) is in weak-keyed map `m`: `Ok(slot)`, or `Err` with the slot an
/// insertion would take (the first deleted or dead one on the probe, else the empty slot that
/// ends it; `None` if there is none) and whether that slot is empty (never used).
fn wm_probe(pin: &Pin<'_>, m: usize, key: usize) -> Result<usize, Option<(usize, bool)>> {
    // SAFETY: a weakmap record.
    let entries = unsafe { pin.word(m, 1) };
    let cap = arr_len(pin, entries);
    let mask = cap.wrapping_sub(1);
    let mut i = wm_hash(key) & mask;
    let mut reuse = None;
    for _ in 0..cap {
        let e = arr_get(pin, entries, i).unwrap_or(NIL);
        if e == NIL {
            return Err(Some(reuse.unwrap_or((i, true))));
        }
        if e == WM_DELETED {
            reuse.get_or_insert((i, false));
        } else {
            match wm_entry_key(pin, e) {
                k if k == key => return Ok(i),
                0 => {
                    reuse.get_or_insert((i, false));
                }
                _ => {}
            }
        }
        i = (i + 1) & mask;
    }
    Err(reuse)
}

/// The entry of key `k` in weak-keyed map `m`, if it has one.
fn wm_find(sh: &Shared, pin: &Pin<'_>, m: usize, k: usize) -> Result<Option<usize>, String> {
    let key = wm_key(sh, pin, k)?;
    Ok(wm_probe(pin, m, key).ok().map(|i| {
        // SAFETY: a weakmap record.
        let entries = unsafe { pin.word(m, 1) };
        arr_get(pin, entries, i).unwrap_or(NIL)
    }))
}

fn wm_get(sh: &Shared, pin: &mut Pin<'_>, m: usize, k: usize) -> Result<usize, String> {
    match wm_find(sh, pin, m, k)? {
        // SAFETY: an entry record, whose word 1 is its ephemeron value; its key (`k`) is
        // alive, so the value is there (shaded while marking, as a value read must be).
        Some(e) if is_ref(e) => Ok(unsafe { pin.ephemeron_value(e, 1) }),
        _ => Ok(NIL),
    }
}

fn wm_set(sh: &Shared, pin: &mut Pin<'_>, m: usize, k: usize, v: usize) -> F<()> {
    let key = wm_key(sh, pin, k)?;
    // SAFETY: a weakmap record.
    let (used, entries) = unsafe { (as_int(pin.word(m, 0)).max(0) as usize, pin.word(m, 1)) };
    let cap = arr_len(pin, entries);
    match wm_probe(pin, m, key) {
        Ok(i) => {
            let e = arr_get(pin, entries, i).unwrap_or(NIL);
            // SAFETY: an entry record (its key `k` is alive); `v` is a register's value.
            unsafe { pin.set_word(e, 1, WordKind::Ephemeron, v) };
            Ok(())
        }
        Err(Some((i, empty))) if !empty || (used + 1) * 4 <= cap * 3 => {
            // The key's handle first: it may allocate, as the entry does.
            // SAFETY: `k` is a reference from a register: a live object.
            let (cell, slow) = match unsafe { pin.weak(k) } {
                Ok(x) => x,
                Err(GcError::Alloc(_)) => return Err(Fault::Oom),
                Err(e) => return Err(Fault::Msg(e.to_string())),
            };
            if slow {
                OWE.with(|o| o.set(true));
            }
            let e = alloc_h(pin, sh.types.wm_entry_shape)?;
            // SAFETY: a fresh entry record: its weak word gets the key's handle (plain), its
            // ephemeron word the value.
            unsafe {
                pin.init_word(e, 0, WordKind::Weak, cell & !crate::value::RULE.mask);
                pin.init_word(e, 1, WordKind::Ephemeron, v);
            }
            arr_set(pin, entries, i, e);
            if empty {
                // SAFETY: `m`'s used-slots word.
                unsafe { pin.set_word(m, 0, WordKind::Tagged, int(used as i64 + 1)) };
            }
            Ok(())
        }
        Err(_) => {
            wm_rebuild(sh, pin, m)?;
            wm_set(sh, pin, m, k, v)
        }
    }
}

/// Rebuilds weak-keyed map `m` from its entries whose keys are alive, in a table at most
/// half full.
fn wm_rebuild(sh: &Shared, pin: &mut Pin<'_>, m: usize) -> F<()> {
    // SAFETY: a weakmap record.
    let old = unsafe { pin.word(m, 1) };
    let live: Vec<(usize, usize)> = (0..arr_len(pin, old))
        .filter_map(|i| {
            let e = arr_get(pin, old, i).unwrap_or(NIL);
            if !is_ref(e) {
                return None;
            }
            match wm_entry_key(pin, e) {
                0 => None,
                k => Some((k, e)),
            }
        })
        .collect();
    let cap = (live.len() * 2).next_power_of_two().max(8);
    let entries = wm_slots(sh, pin, cap)?;
    for (k, e) in &live {
        let mut i = wm_hash(*k) & (cap - 1);
        while arr_get(pin, entries, i) != Some(NIL) {
            i = (i + 1) & (cap - 1);
        }
        arr_set(pin, entries, i, *e);
    }
    // SAFETY: `m` is a weakmap record; the fresh one's array moves into it.
    unsafe {
        pin.set_word(m, 0, WordKind::Tagged, int(live.len() as i64));
        pin.set_word(m, 1, WordKind::Tagged, entries);
    }
    Ok(())
}

/// Removes key `k` from weak-keyed map `m`; whether it was there.
fn wm_delete(sh: &Shared, pin: &mut Pin<'_>, m: usize, k: usize) -> Result<bool, String> {
    let key = wm_key(sh, pin, k)?;
    let Ok(i) = wm_probe(pin, m, key) else { return Ok(false) };
    // SAFETY: a weakmap record.
    let entries = unsafe { pin.word(m, 1) };
    arr_set(pin, entries, i, WM_DELETED);
    Ok(true)
}

fn vec_push(sh: &Shared, pin: &mut Pin<'_>, v: usize, x: usize) -> F<()> {
    let (len, items) = vec_parts(pin, v);
    let cap = arr_len(pin, items);
    let items = if len >= cap {
        let ncap = (len * 2).max(4);
        let shape = sh.types.arr(pin, ncap)?;
        let fresh = alloc_h(pin, shape)?;
        for i in 0..len.min(cap) {
            let x = arr_get(pin, items, i).unwrap_or(NIL);
            arr_set(pin, fresh, i, x);
        }
        // SAFETY: `v` is a vector record.
        unsafe { pin.set_word(v, 1, WordKind::Tagged, fresh) };
        fresh
    } else {
        items
    };
    arr_set(pin, items, len, x);
    // SAFETY: `v` is a vector record.
    unsafe { pin.set_word(v, 0, WordKind::Tagged, int(len as i64 + 1)) };
    Ok(())
}

enum Step {
    Item(usize, usize),
    Done,
    Chan(Arc<ChanBox>),
}

fn iter_next(sh: &Shared, pin: &mut Pin<'_>, o: usize, i: usize) -> Result<Step, String> {
    if is_ref(o) {
        let t = tid(pin, o);
        if t == sh.types.vec {
            let (len, items) = vec_parts(pin, o);
            return Ok(match arr_get(pin, items, i).filter(|_| i < len) {
                Some(x) => Step::Item(x, i + 1),
                None => Step::Done,
            });
        }
        if t == sh.types.map {
            // SAFETY: a map record.
            let keys = unsafe { pin.word(o, 1) };
            let cap = arr_len(pin, keys);
            for j in i..cap {
                // SAFETY: `j < cap`.
                let k = unsafe { pin.word(keys, j) };
                if k != NIL {
                    return Ok(Step::Item(k, j + 1));
                }
            }
            return Ok(Step::Done);
        }
        if t == sh.types.chan {
            return chan_of(sh, pin, o).map(Step::Chan);
        }
        if t == sh.types.weakmap {
            // SAFETY: a weak-keyed map record.
            let entries = unsafe { pin.word(o, 1) };
            for j in i..arr_len(pin, entries) {
                if let Some(k) = wm_live_key(pin, arr_get(pin, entries, j).unwrap_or(NIL)) {
                    return Ok(Step::Item(k, j + 1));
                }
            }
            return Ok(Step::Done);
        }
    }
    Err(format!("cannot loop over {}", type_name(sh, pin, o)))
}

/// The longest text `print` and `str` make of one value, in bytes (then `...`).
const SHOW_MAX: usize = 1 << 20;

/// Formats `v` for `print` and `str` (strings bare at the top, quoted inside containers).
fn show(sh: &Shared, pin: &Pin<'_>, v: usize, out: &mut String, depth: usize, quoted: bool) {
    if is_int(v) {
        let _ = write!(out, "{}", as_int(v));
        return;
    }
    if is_flo(v) {
        return out.push_str(&crate::format::show_float(flo_value(v)));
    }
    match v {
        NIL => return out.push_str("nil"),
        crate::value::TRUE => return out.push_str("true"),
        crate::value::FALSE => return out.push_str("false"),
        _ => {}
    }
    // Nesting is cut at depth 8, and the whole text at SHOW_MAX bytes: a vector that holds
    // itself, or a small graph of shared vectors (`v = [v, v]` thirty times), would
    // otherwise print forever.
    if depth > 8 || out.len() >= SHOW_MAX {
        return out.push_str("...");
    }
    let t = tid(pin, v);
    let ty = &sh.types;
    if t == ty.str {
        let s = str_bytes(sh, pin, v).unwrap_or_default();
        let s = String::from_utf8_lossy(&s);
        if quoted {
            let _ = write!(out, "{s:?}");
        } else {
            out.push_str(&s);
        }
    } else if t == ty.float {
        out.push_str(&crate::format::show_float(float_of(sh, pin, v).unwrap_or(0.0)));
    } else if t == ty.vec {
        let (len, items) = vec_parts(pin, v);
        out.push('[');
        for i in 0..len {
            if i > 0 {
                out.push_str(", ");
            }
            show(sh, pin, arr_get(pin, items, i).unwrap_or(NIL), out, depth + 1, true);
        }
        out.push(']');
    } else if t == ty.map {
        // SAFETY: a map record.
        let (keys, vals) = unsafe { (pin.word(v, 1), pin.word(v, 2)) };
        out.push('{');
        let mut first = true;
        for i in 0..arr_len(pin, keys) {
            let (k, x) =
                (arr_get(pin, keys, i).unwrap_or(NIL), arr_get(pin, vals, i).unwrap_or(NIL));
            if k == NIL {
                continue;
            }
            if !first {
                out.push_str(", ");
            }
            first = false;
            show(sh, pin, k, out, depth + 1, true);
            out.push_str(": ");
            show(sh, pin, x, out, depth + 1, true);
        }
        out.push('}');
    } else if t == ty.closure {
        // SAFETY: a closure's first word is its function.
        let p = as_int(unsafe { pin.word(v, 0) }) as usize;
        let _ = write!(out, "<fn {}>", sh.prog.protos[p].name);
    } else if t == ty.chan {
        out.push_str("<chan>");
    } else if t == ty.weak {
        out.push_str("<weak>");
    } else if t == ty.weakmap {
        out.push_str("<weakmap>");
    } else {
        out.push_str("<?>");
    }
}

fn builtin(
    sh: &Shared,
    pin: &mut Pin<'_>,
    id: Builtin,
    base: Reg,
    n: u8,
    regs: *const AtomicUsize,
) -> F<usize> {
    // SAFETY: the caller's frame registers `base..base+n`, as in `exec`'s `r!`.
    let arg = |i: usize| unsafe { slot(regs, base as usize + i) }.load(Relaxed);
    let ty = &sh.types;
    let r = match id {
        Builtin::Len => {
            let v = arg(0);
            if !is_ref(v) {
                return Err(format!("len of {}", type_name(sh, pin, v)).into());
            }
            let t = tid(pin, v);
            if t == ty.vec {
                int(vec_parts(pin, v).0 as i64)
            } else if t == ty.str {
                // SAFETY: a string's header length is its byte count.
                int(unsafe { pin.header(v) }.len() as i64)
            } else if t == ty.map {
                // SAFETY: a map record's count word.
                unsafe { pin.word(v, 0) }
            } else if t == ty.chan {
                int(chan_of(sh, pin, v)?.len() as i64)
            } else if t == ty.weakmap {
                int(wm_live_keys(pin, v).len() as i64)
            } else {
                return Err(format!("len of {}", type_name(sh, pin, v)).into());
            }
        }
        Builtin::Push => {
            let v = arg(0);
            if !is_ref(v) || tid(pin, v) != ty.vec {
                return Err(format!("push onto {}", type_name(sh, pin, v)).into());
            }
            vec_push(sh, pin, v, arg(1))?;
            NIL
        }
        Builtin::Pop => {
            let v = arg(0);
            if !is_ref(v) || tid(pin, v) != ty.vec {
                return Err(format!("pop from {}", type_name(sh, pin, v)).into());
            }
            let (len, items) = vec_parts(pin, v);
            if len == 0 {
                return Err("pop from an empty vector".to_string().into());
            }
            let x = arr_get(pin, items, len - 1).unwrap_or(NIL);
            arr_set(pin, items, len - 1, NIL);
            // SAFETY: `v` is a vector record.
            unsafe { pin.set_word(v, 0, WordKind::Tagged, int(len as i64 - 1)) };
            x
        }
        Builtin::Chan => {
            let cap = if n == 0 { 0 } else { arg(0) };
            if !is_int(cap) || as_int(cap) < 0 {
                return Err("chan takes a capacity (an int, 0 or more)".to_string().into());
            }
            let c = alloc_h(pin, ty.chan_shape)?;
            let cap = as_int(cap) as usize;
            let chan: ChanBox = if cap == 0 { Chan::unbuffered() } else { Chan::new(cap) };
            let id = sh.chans.insert(chan);
            // Ids are table indexes, far below the int range.
            // SAFETY: a fresh channel record: one tagged word.
            unsafe { pin.init_word(c, 0, WordKind::Tagged, int(id as i64)) };
            // The Rust side is removed from the table by a cleanup once the record is found
            // unreachable (see `chan_of`). The cleanup holds only the table, the id and the
            // pacer's counts, nothing that reaches the record. Its bytes are reported to the
            // pacer meanwhile: the record is two words, so without them a heap goal of
            // channels (megabytes of Rust sides) would build up between cycles.
            let bytes = ChanBox::footprint(cap) + std::mem::size_of::<ChanBox>();
            sh.ext.add(bytes);
            let (ext, chans) = (sh.ext.clone(), sh.chans.clone());
            // SAFETY: `c` is a fresh, live object of this heap.
            unsafe {
                pin.add_cleanup(c, move || {
                    drop(chans.remove(id));
                    ext.sub(bytes);
                })
            };
            c
        }
        Builtin::Weak => {
            let v = arg(0);
            if !is_ref(v) {
                return Err(format!("weak of {}: not an object", type_name(sh, pin, v)).into());
            }
            // SAFETY: `v` is a reference from a register: a live object.
            match unsafe { pin.weak(v) } {
                Ok((w, slow)) => {
                    if slow {
                        OWE.with(|o| o.set(true));
                    }
                    w
                }
                Err(GcError::Alloc(_)) => return Err(Fault::Oom),
                Err(e) => return Err(Fault::Msg(e.to_string())),
            }
        }
        Builtin::WeakMap => new_weakmap(sh, pin, 8)?,
        Builtin::Delete => {
            let (m, k) = (arg(0), arg(1));
            if is_ref(m) && tid(pin, m) == ty.weakmap {
                boolean(wm_delete(sh, pin, m, k)?)
            } else if is_ref(m) && tid(pin, m) == ty.map {
                boolean(map_delete(sh, pin, m, k))
            } else {
                return Err(format!("delete from {}", type_name(sh, pin, m)).into());
            }
        }
        Builtin::Deref => {
            let w = arg(0);
            if !is_ref(w) || tid(pin, w) != ty.weak {
                return Err(format!("deref of {}: not a weak handle", type_name(sh, pin, w)).into());
            }
            // SAFETY: a live weak handle (checked above).
            match unsafe { pin.deref(w) } {
                0 => NIL,
                t => t,
            }
        }
        Builtin::Close => {
            let c = chan_of(sh, pin, arg(0))?;
            if c.is_closed() {
                return Err("close of closed channel".to_string().into());
            }
            c.close();
            NIL
        }
        Builtin::Str => {
            let v = arg(0);
            if is_ref(v) && tid(pin, v) == ty.str {
                v
            } else if is_int(v) {
                let mut buf = [0u8; 24];
                let d = int_digits(as_int(v), &mut buf);
                new_str(sh, pin, d)?
            } else {
                let mut s = String::new();
                show(sh, pin, v, &mut s, 0, false);
                new_str(sh, pin, s.as_bytes())?
            }
        }
        Builtin::Int => {
            let v = arg(0);
            if is_int(v) {
                v
            } else if let Some(f) = float_of(sh, pin, v) {
                let i = f.trunc();
                if !(i.is_finite() && int_fits(i as i64) && (i as i64) as f64 == i) {
                    return Err(format!("int of {f}: out of range").into());
                }
                int(i as i64)
            } else if let Some(Ok(i)) = str_view(sh, pin, v)
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(|t| t.trim().parse::<i64>())
                && int_fits(i)
            {
                // The common case, read in place; anything else takes the path below, which
                // also words the error.
                int(i)
            } else if let Some(s) = str_bytes(sh, pin, v) {
                let s = String::from_utf8_lossy(&s);
                match s.trim().parse::<i64>() {
                    Ok(i) if int_fits(i) => int(i),
                    _ => return Err(format!("int of {s:?}: not an integer").into()),
                }
            } else {
                return Err(format!("int of {}", type_name(sh, pin, v)).into());
            }
        }
        Builtin::Float => {
            let v = arg(0);
            match float_of(sh, pin, v) {
                Some(f) => new_float(sh, pin, f)?,
                None => match str_bytes(sh, pin, v) {
                    Some(b) => {
                        let s = String::from_utf8_lossy(&b);
                        match s.trim().parse::<f64>() {
                            Ok(f) => new_float(sh, pin, f)?,
                            Err(_) => return Err(format!("float of {s:?}: not a number").into()),
                        }
                    }
                    None => return Err(format!("float of {}", type_name(sh, pin, v)).into()),
                },
            }
        }
        Builtin::Keys => {
            let m = arg(0);
            if is_ref(m) && tid(pin, m) == ty.weakmap {
                let ks = wm_live_keys(pin, m);
                return new_vec(sh, pin, &ks);
            }
            if !is_ref(m) || tid(pin, m) != ty.map {
                return Err(format!("keys of {}", type_name(sh, pin, m)).into());
            }
            // Gather first: allocating the vector may not move anything (the heap does not
            // move), but keep the reads in one place.
            // SAFETY: a map record.
            let keys = unsafe { pin.word(m, 1) };
            let ks: Vec<usize> = (0..arr_len(pin, keys))
                // SAFETY: `i` below the keys array's length.
                .map(|i| unsafe { pin.word(keys, i) })
                .filter(|&k| k != NIL)
                .collect();
            new_vec(sh, pin, &ks)?
        }
        Builtin::Has => {
            let m = arg(0);
            if is_ref(m) && tid(pin, m) == ty.weakmap {
                return Ok(boolean(wm_find(sh, pin, m, arg(1))?.is_some()));
            }
            if !is_ref(m) || tid(pin, m) != ty.map {
                return Err(format!("has of {}", type_name(sh, pin, m)).into());
            }
            boolean(arg(1) != NIL && map_find(sh, pin, m, arg(1)).is_ok())
        }
        Builtin::Vec => {
            let len = arg(0);
            if !is_int(len) || as_int(len) < 0 || as_int(len) > 1 << 32 {
                return Err("vec takes a length (an int, 0 or more)".to_string().into());
            }
            let fill = if n > 1 { arg(1) } else { NIL };
            new_vec(sh, pin, &vec![fill; as_int(len) as usize])?
        }
        Builtin::Type => {
            let name = type_name(sh, pin, arg(0));
            new_str(sh, pin, name.as_bytes())?
        }
        Builtin::Sqrt => match float_of(sh, pin, arg(0)) {
            Some(f) => new_float(sh, pin, f.sqrt())?,
            None => return Err(format!("sqrt of {}", type_name(sh, pin, arg(0))).into()),
        },
        Builtin::Cycles => int(sh.gc.cycles() as i64),
        Builtin::Args => {
            let mut items = Vec::with_capacity(sh.args.len());
            for a in &sh.args {
                // Each string is kept in `items` only within this section: nothing can
                // free it before the vector holds it.
                items.push(new_str(sh, pin, a.as_bytes())?);
            }
            new_vec(sh, pin, &items)?
        }
        Builtin::Format => {
            let Some(f) = str_bytes(sh, pin, arg(0)) else {
                return Err(format!(
                    "format takes a format string, not {}",
                    type_name(sh, pin, arg(0))
                )
                .into());
            };
            let args: Vec<crate::format::Arg> =
                (1..n as usize).map(|i| format_arg(sh, pin, arg(i))).collect();
            let s = crate::format::format(&String::from_utf8_lossy(&f), &args)?;
            new_str(sh, pin, s.as_bytes())?
        }
        Builtin::Cap => {
            let c = chan_of(sh, pin, arg(0)).map_err(|_| {
                Fault::Msg(format!("cap of {} (a channel's capacity)", type_name(sh, pin, arg(0))))
            })?;
            int(c.cap() as i64)
        }
        Builtin::Slice => {
            let (o, lo, hi) = (arg(0), arg(1), arg(2));
            let (len, bytes) = match str_bytes(sh, pin, o) {
                Some(b) => (b.len(), Some(b)),
                None if is_ref(o) && tid(pin, o) == ty.vec => (vec_parts(pin, o).0, None),
                None => return Err(format!("cannot slice {}", type_name(sh, pin, o)).into()),
            };
            let bound = |v: usize, default: usize| -> Result<usize, Fault> {
                if v == NIL {
                    return Ok(default);
                }
                if !is_int(v) {
                    return Err(format!(
                        "slice bound must be an int, not {}",
                        type_name(sh, pin, v)
                    )
                    .into());
                }
                usize::try_from(as_int(v)).ok().filter(|&b| b <= len).ok_or_else(|| {
                    format!("slice bound {} out of range (length {len})", as_int(v)).into()
                })
            };
            let (a, b) = (bound(lo, 0)?, bound(hi, len)?);
            if a > b {
                return Err(format!("slice bounds {a}:{b} are inverted").into());
            }
            match bytes {
                Some(bytes) => new_str(sh, pin, &bytes[a..b])?,
                None => {
                    let items = vec_parts(pin, o).1;
                    let xs: Vec<usize> =
                        (a..b).map(|i| arr_get(pin, items, i).unwrap_or(NIL)).collect();
                    new_vec(sh, pin, &xs)?
                }
            }
        }
        Builtin::Ord => {
            let s = string_arg(sh, pin, arg(0), "ord")?;
            let mut cs = s.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) => int(c as i64),
                _ => return Err(format!("ord of {s:?}: not one character").into()),
            }
        }
        Builtin::Chr => {
            let v = arg(0);
            let c = (is_int(v))
                .then(|| u32::try_from(as_int(v)).ok().and_then(char::from_u32))
                .flatten()
                .ok_or_else(|| format!("chr of {}: not a code point", describe(sh, pin, v)))?;
            let mut buf = [0u8; 4];
            new_str(sh, pin, c.encode_utf8(&mut buf).as_bytes())?
        }
        Builtin::Find => {
            let s = str_view(sh, pin, arg(0));
            let sub = str_view(sh, pin, arg(1));
            let (Some(s), Some(sub)) = (s, sub) else {
                return Err("find takes two strings".to_string().into());
            };
            int(find_bytes(s, sub).map_or(-1, |i| i as i64))
        }
        Builtin::Split
            if let (Some(s), Some(sep)) =
                (str_view(sh, pin, arg(0)), str_view(sh, pin, arg(1)))
                && !sep.is_empty()
                && std::str::from_utf8(s).is_ok()
                && std::str::from_utf8(sep).is_ok() =>
        {
            // Valid UTF-8 split by a non-empty separator: where `str::split` cuts, found on
            // the bytes (UTF-8 is self-synchronising), and each part copied from the string
            // in place (its bytes stay put and unwritten while the section runs).
            let mut parts = Vec::new();
            let mut from = 0;
            while let Some(i) = find_bytes(&s[from..], sep) {
                parts.push((s[from..].as_ptr(), i));
                from += i + sep.len();
            }
            parts.push((s[from..].as_ptr(), s.len() - from));
            let mut vs = Vec::with_capacity(parts.len());
            for part in parts {
                // SAFETY: a part of a string of this section (see above).
                vs.push(unsafe { new_str_of(sh, pin, &[part]) }?);
            }
            new_vec(sh, pin, &vs)?
        }
        Builtin::Split => {
            let s = string_arg(sh, pin, arg(0), "split")?;
            let sep = string_arg(sh, pin, arg(1), "split")?;
            let parts: Vec<String> = if sep.is_empty() {
                s.chars().map(String::from).collect()
            } else {
                s.split(sep.as_str()).map(String::from).collect()
            };
            // The new strings are held in Rust only inside this pinned section: allocation
            // here never reaches a safepoint, and objects made while marking are black.
            let mut vs = Vec::with_capacity(parts.len());
            for p in &parts {
                vs.push(new_str(sh, pin, p.as_bytes())?);
            }
            new_vec(sh, pin, &vs)?
        }
        Builtin::Join => {
            let v = arg(0);
            if !is_ref(v) || tid(pin, v) != ty.vec {
                return Err(format!("join of {}: not a vector", type_name(sh, pin, v)).into());
            }
            let sep = str_bytes(sh, pin, arg(1)).ok_or_else(|| {
                format!("join's separator is {}, not a string", type_name(sh, pin, arg(1)))
            })?;
            let (len, items) = vec_parts(pin, v);
            // The parts where they are (strings of this section stay put and unwritten), then
            // one string made of them.
            let mut parts = Vec::with_capacity(2 * len);
            for i in 0..len {
                let x = arr_get(pin, items, i).unwrap_or(NIL);
                let b = str_view(sh, pin, x).ok_or_else(|| {
                    format!("join: element {i} is {}, not a string", type_name(sh, pin, x))
                })?;
                if i > 0 {
                    parts.push((sep.as_ptr(), sep.len()));
                }
                parts.push((b.as_ptr(), b.len()));
            }
            // SAFETY: `sep` is a Rust buffer and the rest are strings of this section.
            unsafe { new_str_of(sh, pin, &parts) }?
        }
        Builtin::Bytes => {
            let b = str_bytes(sh, pin, arg(0))
                .ok_or_else(|| format!("bytes of {}: not a string", type_name(sh, pin, arg(0))))?;
            let xs: Vec<usize> = b.iter().map(|&c| int(c as i64)).collect();
            new_vec(sh, pin, &xs)?
        }
        Builtin::FromBytes => {
            let v = arg(0);
            if !is_ref(v) || tid(pin, v) != ty.vec {
                return Err(format!("from_bytes of {}: not a vector", type_name(sh, pin, v)).into());
            }
            let (len, items) = vec_parts(pin, v);
            let mut out = Vec::with_capacity(len);
            for i in 0..len {
                let x = arr_get(pin, items, i).unwrap_or(NIL);
                match (is_int(x)).then(|| u8::try_from(as_int(x)).ok()).flatten() {
                    Some(b) => out.push(b),
                    None => {
                        return Err(
                            format!("from_bytes: element {i} is not a byte (0 to 255)").into()
                        );
                    }
                }
            }
            new_str(sh, pin, &out)?
        }
        Builtin::Sort => {
            let v = arg(0);
            if !is_ref(v) || tid(pin, v) != ty.vec {
                return Err(format!("sort of {}: not a vector", type_name(sh, pin, v)).into());
            }
            let (len, items) = vec_parts(pin, v);
            let mut xs: Vec<usize> =
                (0..len).map(|i| arr_get(pin, items, i).unwrap_or(NIL)).collect();
            // Check every pair the sort may compare up front: an order that fails halfway
            // would leave the vector half sorted.
            for w in xs.windows(2) {
                compare(sh, pin, CmpOp::Lt, w[0], w[1])?;
            }
            xs.sort_by(|&a, &b| {
                if compare(sh, pin, CmpOp::Lt, a, b).unwrap_or(false) {
                    std::cmp::Ordering::Less
                } else if compare(sh, pin, CmpOp::Lt, b, a).unwrap_or(false) {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            });
            for (i, &x) in xs.iter().enumerate() {
                arr_set(pin, items, i, x);
            }
            NIL
        }
        Builtin::Print
        | Builtin::Write
        | Builtin::ReadLine
        | Builtin::ReadFile
        | Builtin::WriteFile
        | Builtin::Memstats
        | Builtin::Sleep
        | Builtin::Gc
        | Builtin::Error
        | Builtin::Yield
        | Builtin::Exit => {
            unreachable!("handled by the interpreter loop")
        }
    };
    Ok(r)
}

/// A new map of `fields`, names to integers.
fn stats_map(sh: &Shared, pin: &mut Pin<'_>, fields: &[(&str, u64)]) -> F<usize> {
    let m = new_map(sh, pin, (fields.len() * 2).next_power_of_two())?;
    for &(k, v) in fields {
        // The key is held only in this section, until the map holds it.
        let k = new_str(sh, pin, k.as_bytes())?;
        set_index(sh, pin, m, k, int(v.min(1 << 60) as i64))?;
    }
    Ok(m)
}

/// A new vector holding `items` (values read in this section).
fn new_vec(sh: &Shared, pin: &mut Pin<'_>, items: &[usize]) -> F<usize> {
    let arr = if items.is_empty() {
        NIL
    } else {
        let shape = sh.types.arr(pin, items.len())?;
        let a = alloc_h(pin, shape)?;
        for (i, &x) in items.iter().enumerate() {
            // SAFETY: a fresh array of `items.len()` tagged words.
            unsafe { pin.set_word(a, i, WordKind::Tagged, x) };
        }
        a
    };
    let v = alloc_h(pin, sh.types.vec_shape)?;
    // SAFETY: a fresh vector record.
    unsafe {
        pin.set_word(v, 0, WordKind::Tagged, int(items.len() as i64));
        pin.set_word(v, 1, WordKind::Tagged, arr);
    }
    Ok(v)
}

/// Makes the constants array and the globals array (run once, on the main goroutine, before
/// the program starts).
pub(crate) fn init_heap(sh: &Shared) -> Result<(), String> {
    let mut raw = RawMutator::new(&sh.gc).map_err(|e| e.to_string())?;
    let n = sh.prog.consts.len();
    // Build inside one section: the arrays are rooted in their globals as soon as they exist,
    // and every element is written before the section ends.
    loop {
        let r = raw
            .enter(|pin| -> F<()> {
                let arr =
                    pin.shape(sh.types.arr, n.max(1)).map_err(|e| Fault::Msg(e.to_string()))?;
                let consts = alloc_h(pin, arr)?;
                pin.set_global(&sh.consts, consts).map_err(|e| Fault::Msg(e.to_string()))?;
                for (i, c) in sh.prog.consts.iter().enumerate() {
                    let v = match c {
                        Const::Str(s) => new_str(sh, pin, s.as_bytes())?,
                        Const::Float(f) => new_float(sh, pin, *f)?,
                        Const::Int(v) => int(*v),
                        Const::Fn(p) => {
                            let shape = pin
                                .shape(sh.types.closure, 1)
                                .map_err(|e| Fault::Msg(e.to_string()))?;
                            let c = alloc_h(pin, shape)?;
                            // SAFETY: a fresh closure of one word.
                            unsafe { pin.set_word(c, 0, WordKind::Tagged, int(*p as i64)) };
                            c
                        }
                    };
                    let consts = pin.global(&sh.consts).map_err(|e| Fault::Msg(e.to_string()))?;
                    // SAFETY: `i < n`, the array's length.
                    unsafe { pin.set_word(consts, i, WordKind::Tagged, v) };
                }
                // The globals array: made by the first chunk (a REPL's later chunks share it).
                if pin.global(&sh.globals).map_err(|e| Fault::Msg(e.to_string()))? == 0 {
                    let cap = sh.globals_cap.max(sh.prog.globals);
                    let garr = pin
                        .shape(sh.types.arr, cap.max(1))
                        .map_err(|e| Fault::Msg(e.to_string()))?;
                    let globals = alloc_h(pin, garr)?;
                    for i in 0..cap {
                        // SAFETY: a fresh array of `cap` words.
                        unsafe { pin.set_word(globals, i, WordKind::Tagged, NIL) };
                    }
                    pin.set_global(&sh.globals, globals).map_err(|e| Fault::Msg(e.to_string()))?;
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        OWE.with(|o| o.set(false));
        match r {
            Ok(()) => {
                raw.after_slow_alloc();
                return Ok(());
            }
            Err(Fault::Oom) => raw.collect_for_memory(),
            Err(Fault::Msg(m)) => return Err(m),
        }
    }
}
