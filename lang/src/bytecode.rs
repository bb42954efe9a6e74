//! The instruction set and compiled program.
//!
//! A function's frame is its registers, which are the slots of its managed-stack frame:
//! parameters first, then captured values (for a closure), then locals and temporaries.
//! Every instruction that can reach a safepoint carries `sp`, the first of two safepoint
//! indices whose stack maps the compiler emitted: `sp` describes the registers before the
//! instruction writes its result (what a call, a channel operation or a collection for memory
//! sees), `sp + 1` after it (what the collector sees when an allocation's slow path is paid
//! for once the instruction is done). Safepoint 0 is the function's entry.

#![forbid(unsafe_code)]

use safepoint_stackmap::FuncId;

use crate::Pos;

/// A register (frame slot) number.
pub type Reg = u8;

/// One instruction.
#[derive(Clone, Copy, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Op {
    /// `a = b`
    Move { a: Reg, b: Reg },
    /// `a = v` (a small integer)
    Int { a: Reg, v: i32 },
    /// `a = constant k`
    Const { a: Reg, k: u16 },
    /// `a = nil / true / false` (the word)
    Imm { a: Reg, w: u8 },
    /// `a = global g`
    GetGlobal { a: Reg, g: u16 },
    /// `global g = a`
    SetGlobal { g: u16, a: Reg },
    /// `a = b op c` for the operators without an instruction of their own (`%`, the bitwise
    /// operators and shifts). Arithmetic may allocate: a boxed float, a string concatenation.
    Arith { op: ArithOp, a: Reg, b: Reg, c: Reg, sp: u16 },
    /// `a = b + c` (numbers, or strings concatenated). The four operators floats take have
    /// an instruction each, as `Arith` with its operator fixed (see [`Op::arith`]), so that
    /// the interpreter dispatches once, on the instruction.
    Add { a: Reg, b: Reg, c: Reg, sp: u16 },
    /// `a = b - c`
    Sub { a: Reg, b: Reg, c: Reg, sp: u16 },
    /// `a = b * c`
    Mul { a: Reg, b: Reg, c: Reg, sp: u16 },
    /// `a = b / c`
    Div { a: Reg, b: Reg, c: Reg, sp: u16 },
    /// `a = b + v`
    AddI { a: Reg, b: Reg, v: i16, sp: u16 },
    /// `a = b op constant k`, or `a = constant k op b` if `kl`; the constant is an immediate
    /// (an integer or a float without allocation: see [`Program::imm`]). For the operators
    /// without an instruction of their own, as in `Arith`.
    ArithK { op: ArithOp, a: Reg, b: Reg, k: u16, kl: bool, sp: u16 },
    /// `ArithK` with `+` (see [`Op::arith_k`]).
    AddK { a: Reg, b: Reg, k: u16, kl: bool, sp: u16 },
    /// `ArithK` with `-`.
    SubK { a: Reg, b: Reg, k: u16, kl: bool, sp: u16 },
    /// `ArithK` with `*`.
    MulK { a: Reg, b: Reg, k: u16, kl: bool, sp: u16 },
    /// `ArithK` with `/`.
    DivK { a: Reg, b: Reg, k: u16, kl: bool, sp: u16 },
    /// `a = b cmp c`
    Cmp { op: CmpOp, a: Reg, b: Reg, c: Reg },
    /// `a = -b`
    Neg { a: Reg, b: Reg, sp: u16 },
    /// `a = not b`
    Not { a: Reg, b: Reg },
    /// Jump to `t`.
    Jmp { t: u32 },
    /// Jump to `t` if `a` is false or nil.
    JmpF { a: Reg, t: u32 },
    /// Jump to `t` if `a` is true (not false, not nil).
    JmpT { a: Reg, t: u32 },
    /// Jump to `t` unless `b < c` (a fused compare and branch; one instruction per operator,
    /// made by [`Op::cmp_jmp_f`], so that the interpreter dispatches once).
    LtJmpF { b: Reg, c: Reg, t: u32 },
    /// Jump to `t` unless `b <= c`.
    LeJmpF { b: Reg, c: Reg, t: u32 },
    /// Jump to `t` unless `b == c`.
    EqJmpF { b: Reg, c: Reg, t: u32 },
    /// Jump to `t` unless `b != c`.
    NeJmpF { b: Reg, c: Reg, t: u32 },
    /// Jump to `t` unless `b < constant k` (`constant k < b` if `kl`), an immediate as in
    /// `ArithK` (made by [`Op::cmp_jmp_fk`]).
    LtJmpFK { b: Reg, k: u16, kl: bool, t: u32 },
    /// `LtJmpFK` with `<=`.
    LeJmpFK { b: Reg, k: u16, kl: bool, t: u32 },
    /// `LtJmpFK` with `==`.
    EqJmpFK { b: Reg, k: u16, kl: bool, t: u32 },
    /// `LtJmpFK` with `!=`.
    NeJmpFK { b: Reg, k: u16, kl: bool, t: u32 },
    /// A loop's back-edge: poll for preemption at safepoint `sp`, then jump to `t`.
    Loop { t: u32, sp: u16 },
    /// The back-edge of `for x in a..b`: `i = i + 1`; if `i < end`, poll (at `sp + 1`) and
    /// jump to `t`. (Integers in one step; other numbers through the slow add, at `sp`.)
    ForLoop { i: Reg, end: Reg, t: u32, sp: u16 },
    /// `a = f(f+1 .. f+1+n)` where register `f` holds a closure.
    Call { a: Reg, f: Reg, n: u8, sp: u16 },
    /// `a = function p(base .. base+n)`, a top-level function called directly.
    CallG { a: Reg, p: u16, base: Reg, n: u8, sp: u16 },
    /// Return `a`.
    Ret { a: Reg },
    /// `a = [base .. base+n]`
    NewVec { a: Reg, base: Reg, n: u8, sp: u16 },
    /// `a = {}` with room for `n` entries.
    NewMap { a: Reg, n: u8, sp: u16 },
    /// `a = b[c]`
    Index { a: Reg, b: Reg, c: Reg },
    /// `a[b] = c` (a map insert may allocate)
    SetIndex { a: Reg, b: Reg, c: Reg, sp: u16 },
    /// `a = closure of function p capturing base .. base+n`
    Closure { a: Reg, p: u16, base: Reg, n: u8, sp: u16 },
    /// `go f(f+1 .. f+1+n)` where register `f` holds a closure.
    Go { f: Reg, n: u8, sp: u16 },
    /// `a = builtin id(base .. base+n)`
    Builtin { a: Reg, id: Builtin, base: Reg, n: u8, sp: u16 },
    /// `ch <- v`
    Send { ch: Reg, v: Reg, sp: u16 },
    /// `a = <-ch` (nil once closed and drained)
    Recv { a: Reg, ch: Reg, sp: u16 },
    /// `a, ok = <-ch`: `ok` is false once the channel is closed and drained
    RecvOk { a: Reg, ok: Reg, ch: Reg, sp: u16 },
    /// `a = a new box holding b` (a captured variable that is assigned: closures share it)
    NewBox { a: Reg, b: Reg, sp: u16 },
    /// `a = the value in box b`
    GetBox { a: Reg, b: Reg },
    /// `the value in box a = b`
    SetBox { a: Reg, b: Reg },
    /// Enter a `try` block: a runtime error until the matching `EndTry` (in this frame or a
    /// callee) unwinds to `t`, with the message in `e`; `sp` (and `sp + 1`, once `e` is
    /// written) is the handler's safepoint.
    Try { t: u32, e: Reg, sp: u16 },
    /// Leave `n` `try` blocks of this frame (their end, or a `break`/`continue` out of them).
    EndTry { n: u8 },
    /// `a = index of the select case that ran` (table `sel` of the function)
    Select { a: Reg, sel: u16, sp: u16 },
    /// Loop over `obj`: `x = next element`, jump to `t` when done; `it` holds the position.
    IterNext { x: Reg, it: Reg, obj: Reg, t: u32, sp: u16 },
}

impl Op {
    /// `a = b op c`: the operator's own instruction if it has one, else `Arith`.
    /// ```
    /// use safepoint_lang::bytecode::{ArithOp, Op};
    /// assert!(matches!(Op::arith(ArithOp::Add, 0, 1, 2, 0), Op::Add { a: 0, b: 1, c: 2, sp: 0 }));
    /// // An operator without an instruction of its own goes through `Arith`.
    /// assert!(matches!(Op::arith(ArithOp::Mod, 0, 1, 2, 0), Op::Arith { op: ArithOp::Mod, .. }));
    /// ```
    pub fn arith(op: ArithOp, a: Reg, b: Reg, c: Reg, sp: u16) -> Op {
        match op {
            ArithOp::Add => Op::Add { a, b, c, sp },
            ArithOp::Sub => Op::Sub { a, b, c, sp },
            ArithOp::Mul => Op::Mul { a, b, c, sp },
            ArithOp::Div => Op::Div { a, b, c, sp },
            _ => Op::Arith { op, a, b, c, sp },
        }
    }

    /// `a = b op constant k` (`constant k op b` if `kl`): the operator's own instruction if
    /// it has one, else `ArithK`.
    /// ```
    /// use safepoint_lang::bytecode::{ArithOp, Op};
    /// assert!(matches!(Op::arith_k(ArithOp::Mul, 0, 1, 5, true, 0), Op::MulK { k: 5, kl: true, .. }));
    /// assert!(matches!(Op::arith_k(ArithOp::Shl, 0, 1, 5, false, 0), Op::ArithK { .. }));
    /// ```
    pub fn arith_k(op: ArithOp, a: Reg, b: Reg, k: u16, kl: bool, sp: u16) -> Op {
        match op {
            ArithOp::Add => Op::AddK { a, b, k, kl, sp },
            ArithOp::Sub => Op::SubK { a, b, k, kl, sp },
            ArithOp::Mul => Op::MulK { a, b, k, kl, sp },
            ArithOp::Div => Op::DivK { a, b, k, kl, sp },
            _ => Op::ArithK { op, a, b, k, kl, sp },
        }
    }
}

impl Op {
    /// Jump to `t` unless `b op c`: the operator's instruction.
    /// ```
    /// use safepoint_lang::bytecode::{CmpOp, Op};
    /// assert!(matches!(Op::cmp_jmp_f(CmpOp::Lt, 1, 2, 9), Op::LtJmpF { b: 1, c: 2, t: 9 }));
    /// ```
    pub fn cmp_jmp_f(op: CmpOp, b: Reg, c: Reg, t: u32) -> Op {
        match op {
            CmpOp::Lt => Op::LtJmpF { b, c, t },
            CmpOp::Le => Op::LeJmpF { b, c, t },
            CmpOp::Eq => Op::EqJmpF { b, c, t },
            CmpOp::Ne => Op::NeJmpF { b, c, t },
        }
    }

    /// Jump to `t` unless `b op constant k` (`constant k op b` if `kl`): the operator's
    /// instruction.
    /// ```
    /// use safepoint_lang::bytecode::{CmpOp, Op};
    /// assert!(matches!(Op::cmp_jmp_fk(CmpOp::Ne, 1, 3, false, 9), Op::NeJmpFK { k: 3, t: 9, .. }));
    /// ```
    pub fn cmp_jmp_fk(op: CmpOp, b: Reg, k: u16, kl: bool, t: u32) -> Op {
        match op {
            CmpOp::Lt => Op::LtJmpFK { b, k, kl, t },
            CmpOp::Le => Op::LeJmpFK { b, k, kl, t },
            CmpOp::Eq => Op::EqJmpFK { b, k, kl, t },
            CmpOp::Ne => Op::NeJmpFK { b, k, kl, t },
        }
    }

    /// The jump target of a conditional compare-and-branch, to patch.
    /// ```
    /// use safepoint_lang::bytecode::{ArithOp, CmpOp, Op};
    /// let mut j = Op::cmp_jmp_f(CmpOp::Le, 1, 2, 0);
    /// *j.cmp_jmp_target().unwrap() = 42; // patched once the target is known
    /// assert!(matches!(j, Op::LeJmpF { t: 42, .. }));
    /// assert!(Op::arith(ArithOp::Add, 0, 1, 2, 0).cmp_jmp_target().is_none());
    /// ```
    pub fn cmp_jmp_target(&mut self) -> Option<&mut u32> {
        match self {
            Op::LtJmpF { t, .. }
            | Op::LeJmpF { t, .. }
            | Op::EqJmpF { t, .. }
            | Op::NeJmpF { t, .. }
            | Op::LtJmpFK { t, .. }
            | Op::LeJmpFK { t, .. }
            | Op::EqJmpFK { t, .. }
            | Op::NeJmpFK { t, .. } => Some(t),
            _ => None,
        }
    }
}

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    BitAnd,
    BitOr,
    BitXor,
    Shl,
    Shr,
}

impl ArithOp {
    /// Its operator as written.
    /// ```
    /// use safepoint_lang::bytecode::ArithOp;
    /// assert_eq!(ArithOp::Mul.symbol(), "*");
    /// ```
    pub fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Mod => "%",
            ArithOp::BitAnd => "&",
            ArithOp::BitOr => "|",
            ArithOp::BitXor => "^",
            ArithOp::Shl => "<<",
            ArithOp::Shr => ">>",
        }
    }
}

/// Comparison operators (`>` and `>=` are compiled with swapped operands).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
}

/// The builtin functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Builtin {
    Print,
    Len,
    Push,
    Pop,
    Chan,
    Close,
    Str,
    Int,
    Float,
    Keys,
    Has,
    Vec,
    Type,
    Error,
    Gc,
    Sleep,
    Sqrt,
    Cycles,
    Args,
    Write,
    Format,
    Cap,
    Yield,
    Exit,
    Slice,
    Ord,
    Chr,
    Find,
    Split,
    Join,
    Bytes,
    FromBytes,
    Sort,
    Memstats,
    ReadLine,
    ReadFile,
    WriteFile,
    Weak,
    Deref,
    WeakMap,
    Delete,
}

impl Builtin {
    /// Every builtin with its name and allowed argument counts.
    pub const ALL: &[(&'static str, Builtin, u8, u8)] = &[
        ("print", Builtin::Print, 0, 255),
        ("len", Builtin::Len, 1, 1),
        ("push", Builtin::Push, 2, 2),
        ("pop", Builtin::Pop, 1, 1),
        ("chan", Builtin::Chan, 0, 1),
        ("close", Builtin::Close, 1, 1),
        ("str", Builtin::Str, 1, 1),
        ("int", Builtin::Int, 1, 1),
        ("float", Builtin::Float, 1, 1),
        ("keys", Builtin::Keys, 1, 1),
        ("has", Builtin::Has, 2, 2),
        ("vec", Builtin::Vec, 1, 2),
        ("type", Builtin::Type, 1, 1),
        ("error", Builtin::Error, 1, 1),
        ("gc", Builtin::Gc, 0, 0),
        ("sleep", Builtin::Sleep, 1, 1),
        ("sqrt", Builtin::Sqrt, 1, 1),
        ("cycles", Builtin::Cycles, 0, 0),
        ("args", Builtin::Args, 0, 0),
        ("write", Builtin::Write, 0, 255),
        ("format", Builtin::Format, 1, 255),
        ("cap", Builtin::Cap, 1, 1),
        ("yield", Builtin::Yield, 0, 0),
        ("exit", Builtin::Exit, 0, 1),
        // `x[a:b]` (the parser's; a name no program can write).
        ("$slice", Builtin::Slice, 3, 3),
        ("ord", Builtin::Ord, 1, 1),
        ("chr", Builtin::Chr, 1, 1),
        ("find", Builtin::Find, 2, 2),
        ("split", Builtin::Split, 2, 2),
        ("join", Builtin::Join, 2, 2),
        ("bytes", Builtin::Bytes, 1, 1),
        ("from_bytes", Builtin::FromBytes, 1, 1),
        // `sort(v, less)` is the prelude's `sort` (see the compiler).
        ("sort", Builtin::Sort, 1, 2),
        ("memstats", Builtin::Memstats, 0, 0),
        ("read_line", Builtin::ReadLine, 0, 0),
        ("read_file", Builtin::ReadFile, 1, 1),
        ("write_file", Builtin::WriteFile, 2, 2),
        ("weak", Builtin::Weak, 1, 1),
        ("deref", Builtin::Deref, 1, 1),
        ("weakmap", Builtin::WeakMap, 0, 0),
        ("delete", Builtin::Delete, 2, 2),
    ];

    /// The builtin called `name`.
    /// ```
    /// use safepoint_lang::bytecode::Builtin;
    /// let (b, min, max) = Builtin::find("len").unwrap();
    /// assert_eq!((b.name(), min, max), ("len", 1, 1)); // its argument counts
    /// assert!(Builtin::find("no_such_builtin").is_none());
    /// ```
    pub fn find(name: &str) -> Option<(Builtin, u8, u8)> {
        Builtin::ALL.iter().find(|b| b.0 == name).map(|b| (b.1, b.2, b.3))
    }

    /// Its name.
    /// ```
    /// use safepoint_lang::bytecode::Builtin;
    /// assert_eq!(Builtin::Print.name(), "print");
    /// ```
    pub fn name(self) -> &'static str {
        Builtin::ALL.iter().find(|b| b.1 == self).map(|b| b.0).unwrap_or("?")
    }
}

/// One case of a select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelCase {
    /// Receive from register `ch` into `dst` (if any).
    Recv {
        /// The channel.
        ch: Reg,
        /// Where the value goes.
        dst: Option<Reg>,
        /// Where whether it came from a send goes (`case v, ok = <-ch`).
        ok: Option<Reg>,
    },
    /// Send register `v` on register `ch`.
    Send {
        /// The channel.
        ch: Reg,
        /// The value.
        v: Reg,
    },
}

/// A select's cases.
#[derive(Clone, Debug, PartialEq)]
pub struct SelTable {
    /// The cases, in source order (the result is the index; `cases.len()` for the default).
    pub cases: Vec<SelCase>,
    /// Whether there is a default.
    pub default: bool,
}

/// A compiled function.
#[derive(Clone, Debug)]
pub struct Proto {
    /// Its name (in tracebacks).
    pub name: String,
    /// Parameters.
    pub params: u8,
    /// Captured values (registers `params .. params + captures`).
    pub captures: u8,
    /// Frame size.
    pub regs: u8,
    /// The code.
    pub code: Vec<Op>,
    /// Each instruction's source position.
    pub pos: Vec<Pos>,
    /// Select tables.
    pub sels: Vec<SelTable>,
    /// Its entry in the stack-map registry.
    pub func: FuncId,
}

/// A constant.
#[derive(Clone, Debug, PartialEq)]
pub enum Const {
    /// A string.
    Str(String),
    /// A float.
    Float(f64),
    /// An integer too large for an instruction's immediate.
    Int(i64),
    /// A top-level function, as a closure value.
    Fn(u16),
}

/// A compiled program.
#[derive(Debug)]
pub struct Program {
    /// The source file's name (in messages).
    pub file: String,
    /// Functions; the last is the top-level code.
    pub protos: Vec<Proto>,
    /// Constants.
    pub consts: Vec<Const>,
    /// Number of global variables.
    pub globals: usize,
    /// The first `prelude` functions are the prelude's (see the compiler).
    pub prelude: usize,
}

impl Program {
    /// The file a function's lines are in: the program's, or the prelude's.
    /// ```
    /// let reg = safepoint_stackmap::Registry::new();
    /// let prog = safepoint_lang::compiler::compile("f.pb", "print(1)", &reg).unwrap();
    /// let main = prog.protos[prog.main()].func;
    /// assert_eq!(prog.file_of(Some(main)), "f.pb");
    /// let first = prog.protos[0].func; // the prelude's functions come first
    /// assert_ne!(prog.file_of(Some(first)), "f.pb");
    /// ```
    pub fn file_of(&self, func: Option<FuncId>) -> &str {
        let prelude = self.protos[..self.prelude].iter().any(|p| Some(p.func) == func);
        if prelude { crate::compiler::PRELUDE_FILE } else { &self.file }
    }

    /// Each constant's word if it is an immediate (an integer, or a float that needs no
    /// allocation), else `None`: what `ArithK` and `LtJmpFK` (and the like) read, with no heap
    /// access.
    /// ```
    /// use safepoint_lang::bytecode::{Const, Program};
    /// use safepoint_lang::value::int;
    /// assert_eq!(Program::imm(&Const::Int(5)), Some(int(5)));
    /// assert_eq!(Program::imm(&Const::Int(i64::MAX)), None); // boxed: too wide for a word's tag
    /// ```
    pub fn imm(c: &Const) -> Option<usize> {
        match *c {
            Const::Int(v) if crate::value::int_fits(v) => Some(crate::value::int(v)),
            Const::Float(f) => crate::value::flo(f),
            _ => None,
        }
    }

    /// The top-level code.
    /// ```
    /// let reg = safepoint_stackmap::Registry::new();
    /// let prog = safepoint_lang::compiler::compile("f.pb", "print(1)", &reg).unwrap();
    /// assert_eq!(prog.main(), prog.protos.len() - 1);
    /// ```
    pub fn main(&self) -> usize {
        self.protos.len() - 1
    }
}
