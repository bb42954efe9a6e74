//! The compiler: syntax tree to register bytecode, with a liveness analysis per function that
//! gives every safepoint exactly the registers live across it, registered as the function's
//! stack maps.
//!
//! Registers are allocated as a stack: locals when declared, temporaries above them for the
//! length of a statement. Liveness is the textbook backward data flow over the instructions
//! (live-in = uses ∪ (live-out − defs)), iterated to a fixed point over the jumps. A safepoint
//! inside an instruction sees the registers live out of it minus the ones it is about to
//! write, plus the ones it reads (`sp`); once the instruction is done, the ones live out of
//! it plus what it wrote and read (`sp + 1`; see [`crate::bytecode`]). A register outside a
//! map may hold a stale reference: the collector never looks at it, and no instruction reads
//! it before writing it.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};

use safepoint_stackmap::{FuncDesc, Registry};

use crate::Pos;
use crate::ast::*;
use crate::bytecode::*;
use crate::error::Error;
use crate::value;

type R<T> = Result<T, Error>;

/// Compiles `src` (named `file` in messages), registering each function's stack maps in `reg`.
/// The prelude is compiled with it, so `reg` must not hold another program's prelude: compile
/// each program into a registry of its own, or further chunks with a [`Session`].
///
/// # Errors
/// The first syntax or compile error (an unknown name, a wrong argument count for a known
/// function, a function too large).
///
/// ```
/// use safepoint_stackmap::Registry;
/// let reg = Registry::new();
/// let prog = safepoint_lang::compiler::compile("f.pb", "fn sq(x) { return x * x }\nprint(sq(4))", &reg).unwrap();
/// assert!(prog.protos.iter().any(|p| p.name == "sq"));
/// assert_eq!(prog.main(), prog.protos.len() - 1); // the top-level code is last
/// // Every function's stack maps are in the registry.
/// assert!(prog.protos.iter().all(|p| reg.get(p.func).is_some()));
/// let reg = Registry::new(); // a registry holds one program's functions (and the prelude's)
/// let e = safepoint_lang::compiler::compile("g.pb", "print(y)", &reg).unwrap_err();
/// assert_eq!(e.render("g.pb"), "g.pb:1:7: unknown name y");
/// ```
pub fn compile(file: &str, src: &str, reg: &Registry) -> R<Program> {
    let mut s = Session::new(reg)?;
    s.whole = true;
    s.compile(file, src, reg, false)
}

/// What the chunks compiled so far have declared (functions, globals, constants): one
/// program grown chunk by chunk, as the REPL does. Each chunk's top-level code is a function
/// of its own; the [`Program`] of a chunk holds every function and constant of the chunks
/// before it, so code compiled earlier keeps running (its function and constant indices
/// stay), and its globals are the same globals.
pub struct Session {
    protos: Vec<Option<Proto>>,
    consts: Vec<Const>,
    const_idx: HashMap<String, u16>,
    fns: HashMap<String, (u16, usize)>,
    globals: HashMap<String, u16>,
    /// The prelude's functions (the first ones).
    prelude: usize,
    /// Chunks compiled with `echo` (the REPL's), tried or done: the suffix `@N` of the names
    /// their functions are registered under (the registry wants every name once, and a
    /// chunk that failed has registered some).
    chunks: usize,
    /// The chunk is the whole program (not a REPL's): a top-level variable that no function
    /// names may live in a register of the top-level code instead of a global (see
    /// [`Compiler::chunk`]).
    whole: bool,
}

impl Session {
    /// A session holding the prelude, its functions registered in `reg`.
    ///
    /// # Errors
    /// None in practice: the prelude compiles.
    /// ```
    /// use safepoint_lang::compiler::Session;
    /// let reg = safepoint_stackmap::Registry::new();
    /// let s = Session::new(&reg).unwrap();
    /// // The prelude's functions are registered already.
    /// assert!(reg.len() > 0);
    /// drop(s);
    /// ```
    pub fn new(reg: &Registry) -> R<Session> {
        let mut c = Compiler {
            reg,
            protos: Vec::new(),
            consts: Vec::new(),
            const_idx: HashMap::new(),
            fns: HashMap::new(),
            globals: HashMap::new(),
            prelude: false,
            suffix: String::new(),
        };
        // The prelude's functions come first, under names no program can write; they see
        // only their own locals and the builtins (a program's `let vec = ...` must not change
        // them).
        let prelude = crate::parser::parse(&crate::lexer::lex(PRELUDE)?)?;
        let mut pdefs = Vec::new();
        for s in prelude {
            let StmtKind::Fn(d) = s.kind else { unreachable!("the prelude declares functions") };
            c.fns.insert(format!("${}", d.name), (c.protos.len() as u16, d.params.len()));
            c.protos.push(None);
            pdefs.push(d);
        }
        c.prelude = true;
        for (i, d) in pdefs.iter().enumerate() {
            let p = c.function(d, &[], false)?;
            c.protos[i] = Some(p);
        }
        Ok(Session {
            prelude: c.protos.len(),
            protos: c.protos,
            consts: c.consts,
            const_idx: c.const_idx,
            fns: c.fns,
            globals: c.globals,
            chunks: 0,
            whole: false,
        })
    }

    /// Compiles the next chunk `src` (named `file` in messages); with `echo` (the REPL's), a
    /// chunk that is one expression prints its value unless it is nil, and the chunk's
    /// functions are named `NAME@N` for the `N`th such chunk. A chunk that does not
    /// compile leaves the session as it was (what it registered in `reg` stays unused).
    ///
    /// # Errors
    /// As [`compile`].
    /// ```
    /// use safepoint_lang::compiler::Session;
    /// let reg = safepoint_stackmap::Registry::new();
    /// let mut s = Session::new(&reg).unwrap();
    /// s.compile("<1>", "let x = 1", &reg, true).unwrap();
    /// // A later chunk sees what an earlier one declared.
    /// let p = s.compile("<2>", "x + 1", &reg, true).unwrap();
    /// assert!(p.protos.len() > p.prelude);
    /// // A chunk that does not compile leaves the session as it was.
    /// assert!(s.compile("<3>", "let = 2", &reg, true).is_err());
    /// s.compile("<4>", "print(x)", &reg, true).unwrap();
    /// ```
    pub fn compile(&mut self, file: &str, src: &str, reg: &Registry, echo: bool) -> R<Program> {
        let tokens = crate::lexer::lex(src)?;
        let mut stmts = crate::parser::parse(&tokens)?;
        if echo && let [Stmt { kind: StmtKind::Expr(e), pos }] = stmts.as_slice() {
            stmts = echoed(e.clone(), *pos);
        }
        let mut c = Compiler {
            reg,
            protos: self.protos.clone(),
            consts: self.consts.clone(),
            const_idx: self.const_idx.clone(),
            fns: self.fns.clone(),
            globals: self.globals.clone(),
            prelude: false,
            suffix: String::new(),
        };
        if echo {
            self.chunks += 1;
            c.suffix = format!("@{}", self.chunks);
        }
        let prog = c.chunk(file, stmts, self.prelude, self.whole)?;
        self.protos = c.protos;
        self.consts = c.consts;
        self.const_idx = c.const_idx;
        self.fns = c.fns;
        self.globals = c.globals;
        Ok(prog)
    }
}

/// `e` as statements that print its value unless it is nil.
fn echoed(e: Expr, pos: Pos) -> Vec<Stmt> {
    let at = |kind| Expr { kind, pos };
    let v = || at(ExprKind::Name("$echo".into()));
    let print = at(ExprKind::Call(Box::new(at(ExprKind::Name("print".into()))), vec![v()]));
    let test = at(ExprKind::Bin(BinOp::Ne, Box::new(v()), Box::new(at(ExprKind::Nil))));
    vec![
        Stmt { kind: StmtKind::Let("$echo".into(), e), pos },
        Stmt {
            kind: StmtKind::If(test, vec![Stmt { kind: StmtKind::Expr(print), pos }], vec![]),
            pos,
        },
    ]
}

impl Compiler<'_> {
    /// Compiles a chunk's statements: its functions and globals first (so that code may name
    /// them before their declaration), then its top-level code.
    ///
    /// In a `whole` program, a top-level `let` whose name no named function mentions, that
    /// is the only `let` of its name at the top level, and whose name no top-level code
    /// mentions before it (its own initializer included) makes a local of the top-level code
    /// instead of a global: a register, as Lua's `local` at a chunk's top is. Nothing can
    /// tell the difference (only the top-level code and the function literals in it can name
    /// it, after its declaration, and literals capture it as any local), and a register costs
    /// a load where a global costs a load of the globals array and a write barrier.
    fn chunk(&mut self, file: &str, stmts: Vec<Stmt>, prelude: usize, whole: bool) -> R<Program> {
        let c = self;
        let first = c.protos.len();
        let mut fdefs = Vec::new();
        let locals = if whole { top_level_locals(&stmts) } else { HashSet::new() };
        for s in &stmts {
            match &s.kind {
                StmtKind::Fn(d) => {
                    if c.fns.contains_key(&d.name) || Builtin::find(&d.name).is_some() {
                        return Err(Error::at(
                            d.pos,
                            format!("function {} is already defined", d.name),
                        ));
                    }
                    let i = (first + fdefs.len()) as u16;
                    c.fns.insert(d.name.clone(), (i, d.params.len()));
                    c.protos.push(None);
                    fdefs.push(d.clone());
                }
                StmtKind::Let(n, _) => {
                    if c.fns.contains_key(n) {
                        return Err(Error::at(s.pos, format!("{n} is a function")));
                    }
                    if locals.contains(n) {
                        continue;
                    }
                    let g = c.globals.len() as u16;
                    c.globals.entry(n.clone()).or_insert(g);
                }
                _ => {}
            }
        }
        if c.protos.len() > u16::MAX as usize {
            return Err(Error::at(Pos::default(), "too many functions"));
        }
        for (i, d) in fdefs.iter().enumerate() {
            let p = c.function(d, &[], false)?;
            c.protos[first + i] = Some(p);
        }
        let main = FnDef {
            name: "<main>".into(),
            params: Vec::new(),
            body: stmts,
            pos: Pos { line: 1, col: 1 },
        };
        let p = c.function(&main, &[], true)?;
        c.protos.push(Some(p));
        Ok(Program {
            file: file.to_owned(),
            protos: c.protos.iter().map(|p| p.clone().expect("every function compiled")).collect(),
            consts: c.consts.clone(),
            globals: c.globals.len(),
            prelude,
        })
    }
}

struct Compiler<'r> {
    reg: &'r Registry,
    protos: Vec<Option<Proto>>,
    consts: Vec<Const>,
    const_idx: HashMap<String, u16>,
    /// Top-level functions: index and parameter count.
    fns: HashMap<String, (u16, usize)>,
    globals: HashMap<String, u16>,
    /// Compiling the prelude: names resolve to locals and builtins only.
    prelude: bool,
    /// Appended to the name each function is registered under (see [`Session`]).
    suffix: String,
}

/// Functions written in Pebble that builtins call: `sort(v, less)` is `$sort`. Their frames
/// show in tracebacks as `<prelude>`.
const PRELUDE: &str = r#"
fn sort(v, less) {
    if type(v) != "vector" { error("sort of " + type(v) + ": not a vector") }
    if type(less) != "function" { error("sort's comparator is " + type(less) + ", not a function") }
    let n = len(v)
    let src = v[:]
    let dst = vec(n)
    let width = 1
    while width < n {
        let i = 0
        while i < n {
            let mid = i + width
            if mid > n { mid = n }
            let hi = mid + width
            if hi > n { hi = n }
            let a = i
            let b = mid
            for k in i..hi {
                if a < mid and (b >= hi or not less(src[b], src[a])) {
                    dst[k] = src[a]
                    a = a + 1
                } else {
                    dst[k] = src[b]
                    b = b + 1
                }
            }
            i = hi
        }
        let t = src
        src = dst
        dst = t
        width = width * 2
    }
    for k in 0..n { v[k] = src[k] }
    return nil
}
"#;

/// The file name of the prelude's functions, in tracebacks.
pub const PRELUDE_FILE: &str = "<prelude>";

#[derive(Clone)]
struct Local {
    name: String,
    reg: Reg,
    /// A captured value of a closure (a copy, or the shared box if `boxed`).
    captured: bool,
    /// The register holds a box: a variable that a closure captures and someone assigns.
    boxed: bool,
}

struct LoopCx {
    breaks: Vec<usize>,
    continues: Vec<usize>,
    /// `try` blocks open where the loop starts (a `break` leaves the ones opened since).
    tries: usize,
}

struct Func {
    code: Vec<Op>,
    pos: Vec<Pos>,
    sels: Vec<SelTable>,
    scopes: Vec<Vec<Local>>,
    next: usize,
    max: usize,
    loops: Vec<LoopCx>,
    /// Source position of each safepoint index.
    sp_pos: Vec<Pos>,
    /// The top-level code: `let` outside any block makes a global, or a kept register (see
    /// [`Compiler::chunk`]).
    top: bool,
    at: Pos,
    /// Names of variables that need a box: captured by a function literal inside this one and
    /// assigned somewhere (by name, so a shadowed name may box a variable that needs none).
    boxed: HashSet<String>,
    /// `try` blocks open at the current instruction.
    tries: usize,
    /// The top-level code's variables in registers, each with the first instruction after
    /// its declaration: from there on its register is live, as a global would be (a value
    /// a top-level variable holds stays reachable while the program runs, for weak handles
    /// and weak maps to see).
    kept: Vec<(Reg, usize)>,
    /// Each `try` block: its body's instructions, its handler, the handler's message register.
    regions: Vec<TryRegion>,
}

/// A `try` block's extent for the liveness analysis: an error at any instruction in
/// `start..end` may continue at `handler` (with `e` written).
#[derive(Clone, Copy)]
struct TryRegion {
    start: usize,
    end: usize,
    handler: usize,
    e: Reg,
}

enum Name {
    /// A local's register, whether it is a capture, and whether it holds a box.
    Local(Reg, bool, bool),
    Global(u16),
    Fn(u16, usize),
    Builtin(Builtin, u8, u8),
}

impl Compiler<'_> {
    fn konst(&mut self, c: Const) -> R<u16> {
        let key = format!("{c:?}");
        if let Some(&i) = self.const_idx.get(&key) {
            return Ok(i);
        }
        let i = self.consts.len();
        if i > u16::MAX as usize {
            return Err(Error::at(Pos::default(), "too many constants"));
        }
        self.consts.push(c);
        self.const_idx.insert(key, i as u16);
        Ok(i as u16)
    }

    /// Compiles one function; `captures` are its captured names, each with whether it is a
    /// box (registers after the parameters).
    fn function(&mut self, d: &FnDef, captures: &[(String, bool)], top: bool) -> R<Proto> {
        let mut assigned = HashSet::new();
        let mut in_lambdas = HashSet::new();
        for s in &d.body {
            boxing_stmt(s, &mut assigned, &mut in_lambdas);
        }
        let boxed = assigned.intersection(&in_lambdas).cloned().collect();
        let mut f = Func {
            code: Vec::new(),
            pos: Vec::new(),
            sels: Vec::new(),
            scopes: vec![Vec::new()],
            next: 0,
            max: 0,
            loops: Vec::new(),
            sp_pos: vec![d.pos],
            top,
            at: d.pos,
            boxed,
            tries: 0,
            regions: Vec::new(),
            kept: Vec::new(),
        };
        let mut params = Vec::new();
        for _ in &d.params {
            params.push(f.alloc(d.pos)?);
        }
        for (n, boxed) in captures {
            let r = f.alloc(d.pos)?;
            f.scopes[0].push(Local { name: n.clone(), reg: r, captured: true, boxed: *boxed });
        }
        let inputs = f.next;
        let mut cx = Cx { c: self, f };
        for (p, r) in d.params.iter().zip(params) {
            cx.declare(p, r, d.pos);
        }
        cx.block_body(&d.body)?;
        let end = cx.f.code.last().map(|_| cx.f.at).unwrap_or(d.pos);
        let r = cx.f.alloc(end)?;
        cx.emit(Op::Imm { a: r, w: value::NIL as u8 }, end);
        cx.emit(Op::Ret { a: r }, end);
        let f = cx.f;
        let regs = f.max.max(1);
        let maps = liveness(&f.code, regs, &f.sels, &f.regions, &f.kept);
        #[cfg(test)]
        let maps = wrong_maps::apply(&d.name, maps);
        let nsp = f.sp_pos.len();
        if nsp > u16::MAX as usize {
            return Err(Error::at(d.pos, format!("function {} is too large", d.name)));
        }
        let mut desc =
            FuncDesc::new(format!("{}{}", d.name, self.suffix), regs, d.params.len(), nsp)
                .tagged_at(0, &(0..inputs).collect::<Vec<_>>());
        for (sp, regs) in maps {
            desc = desc.tagged_at(sp, &regs);
        }
        for (sp, p) in f.sp_pos.iter().enumerate() {
            desc = desc.line(sp, p.line);
        }
        let func = self
            .reg
            .register(desc)
            .map_err(|e| Error::at(d.pos, format!("cannot register {}: {e}", d.name)))?;
        Ok(Proto {
            name: format!("{}{}", d.name, self.suffix),
            params: d.params.len() as u8,
            captures: captures.len() as u8,
            regs: regs as u8,
            code: f.code,
            pos: f.pos,
            sels: f.sels,
            func,
        })
    }
}

impl Func {
    fn alloc(&mut self, at: Pos) -> R<Reg> {
        let r = self.next;
        if r >= 255 {
            return Err(Error::at(at, "function needs more than 255 registers"));
        }
        self.next += 1;
        self.max = self.max.max(self.next);
        Ok(r as Reg)
    }

    fn lookup(&self, n: &str) -> Option<&Local> {
        self.scopes.iter().rev().flat_map(|s| s.iter().rev()).find(|l| l.name == n)
    }
}

struct Cx<'a, 'r> {
    c: &'a mut Compiler<'r>,
    f: Func,
}

impl Cx<'_, '_> {
    fn emit(&mut self, op: Op, at: Pos) -> usize {
        self.f.code.push(op);
        self.f.pos.push(at);
        self.f.at = at;
        self.f.code.len() - 1
    }

    /// Two fresh safepoint indices (before and after) for an instruction at `at`.
    fn sp(&mut self, at: Pos) -> u16 {
        let sp = self.f.sp_pos.len();
        self.f.sp_pos.push(at);
        self.f.sp_pos.push(at);
        sp as u16
    }

    fn here(&self) -> u32 {
        self.f.code.len() as u32
    }

    fn patch(&mut self, at: usize, t: u32) {
        match &mut self.f.code[at] {
            Op::Jmp { t: x } | Op::JmpF { t: x, .. } | Op::JmpT { t: x, .. } => *x = t,
            Op::Loop { t: x, .. } | Op::IterNext { t: x, .. } => *x = t,
            Op::ForLoop { t: x, .. } => *x = t,
            op => match op.cmp_jmp_target() {
                Some(x) => *x = t,
                None => unreachable!("patching {op:?}"),
            },
        }
    }

    fn resolve(&self, n: &str, at: Pos) -> R<Name> {
        if let Some(l) = self.f.lookup(n) {
            return Ok(Name::Local(l.reg, l.captured, l.boxed));
        }
        if self.c.prelude {
            if let Some((b, lo, hi)) = Builtin::find(n) {
                return Ok(Name::Builtin(b, lo, hi));
            }
            return Err(Error::at(at, format!("the prelude names {n}")));
        }
        if let Some(&(p, k)) = self.c.fns.get(n) {
            return Ok(Name::Fn(p, k));
        }
        if let Some(&g) = self.c.globals.get(n) {
            return Ok(Name::Global(g));
        }
        if let Some((b, lo, hi)) = Builtin::find(n) {
            return Ok(Name::Builtin(b, lo, hi));
        }
        Err(Error::at(at, format!("unknown name {n}")))
    }

    /// Makes register `r` (holding the variable's first value) the local `name` of the
    /// innermost scope; a variable that needs a box gets it here, holding that value.
    fn declare(&mut self, name: &str, r: Reg, at: Pos) {
        let boxed = self.f.boxed.contains(name);
        if boxed {
            let sp = self.sp(at);
            self.emit(Op::NewBox { a: r, b: r, sp }, at);
        }
        self.f.scopes.last_mut().expect("a scope").push(Local {
            name: name.to_owned(),
            reg: r,
            captured: false,
            boxed,
        });
    }

    fn block(&mut self, b: &[Stmt]) -> R<()> {
        let mark = self.f.next;
        self.f.scopes.push(Vec::new());
        let r = self.block_body(b);
        self.f.scopes.pop();
        self.f.next = mark;
        r
    }

    fn block_body(&mut self, b: &[Stmt]) -> R<()> {
        for s in b {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> R<()> {
        let mark = self.f.next;
        let at = s.pos;
        match &s.kind {
            StmtKind::Fn(_) => {} // compiled up front
            StmtKind::Let(n, e) => {
                if self.f.top && self.f.scopes.len() == 1 && self.c.globals.contains_key(n) {
                    let g = self.c.globals[n];
                    let r = self.operand(e)?;
                    self.emit(Op::SetGlobal { g, a: r }, at);
                } else {
                    let r = self.f.alloc(at)?;
                    self.expr_into(e, r)?;
                    self.f.next = r as usize + 1;
                    self.declare(n, r, at);
                    if self.f.top && self.f.scopes.len() == 1 {
                        // Straight-line code at the top: everything after this runs after it.
                        self.f.kept.push((r, self.f.code.len()));
                    }
                    return Ok(());
                }
            }
            StmtKind::Assign(target, e) => self.assign(target, e, at)?,
            StmtKind::Expr(e) => {
                let r = self.f.alloc(at)?;
                self.expr_into(e, r)?;
            }
            StmtKind::If(c, then, els) => {
                let jf = self.cond_jump(c)?;
                self.block(then)?;
                if els.is_empty() {
                    let h = self.here();
                    self.patch_all(jf, h);
                } else {
                    let j = self.emit(Op::Jmp { t: 0 }, at);
                    let h = self.here();
                    self.patch_all(jf, h);
                    self.block(els)?;
                    let h = self.here();
                    self.patch(j, h);
                }
            }
            StmtKind::While(c, body) => {
                let top = self.here();
                let jf = self.cond_jump(c)?;
                self.loop_body(body, None, top, at)?;
                let h = self.here();
                self.patch_all(jf, h);
                self.end_loop();
            }
            StmtKind::ForRange(x, a, b, body) => {
                let i = self.f.alloc(at)?;
                let end = self.f.alloc(at)?;
                self.expr_into(a, i)?;
                self.expr_into(b, end)?;
                // The test once before the loop; then one `ForLoop` per iteration steps,
                // tests, polls and jumps back.
                let jf = self.emit(Op::LtJmpF { b: i, c: end, t: 0 }, at);
                let top = self.here();
                self.f.scopes.push(Vec::new());
                // Each iteration's variable is a new one (Go 1.22's rule), a copy of the
                // counter, unless the body never assigns it (nor boxes a variable of its
                // name): then no one can tell it from the counter, which it is.
                let mut assigned = HashSet::new();
                body.iter().for_each(|s| boxing_stmt(s, &mut assigned, &mut HashSet::new()));
                if assigned.contains(x) || self.f.boxed.contains(x) {
                    let xr = self.f.alloc(at)?;
                    self.emit(Op::Move { a: xr, b: i }, at);
                    self.declare(x, xr, at);
                } else {
                    self.declare(x, i, at);
                }
                self.for_body(body, i, end, top, at)?;
                self.f.scopes.pop();
                let h = self.here();
                self.patch(jf, h);
                self.end_loop();
            }
            StmtKind::ForIn(x, e, body) => {
                let obj = self.f.alloc(at)?;
                self.expr_into(e, obj)?;
                let it = self.f.alloc(at)?;
                self.emit(Op::Int { a: it, v: 0 }, at);
                self.f.scopes.push(Vec::new());
                let xr = self.f.alloc(at)?;
                let top = self.here();
                let sp = self.sp(at);
                let jn = self.emit(Op::IterNext { x: xr, it, obj, t: 0, sp }, at);
                self.declare(x, xr, at);
                self.loop_body(body, None, top, at)?;
                self.f.scopes.pop();
                let h = self.here();
                self.patch(jn, h);
                self.end_loop();
            }
            StmtKind::Return(e) => {
                let r = match e {
                    Some(e) => self.operand(e)?,
                    None => {
                        let r = self.f.alloc(at)?;
                        self.emit(Op::Imm { a: r, w: value::NIL as u8 }, at);
                        r
                    }
                };
                self.emit(Op::Ret { a: r }, at);
            }
            StmtKind::Break | StmtKind::Continue => {
                let Some(l) = self.f.loops.last() else {
                    return Err(Error::at(at, "break or continue outside a loop"));
                };
                // Leave the `try` blocks opened inside the loop.
                let n = self.f.tries - l.tries;
                if n > 0 {
                    self.emit(Op::EndTry { n: n as u8 }, at);
                }
                let j = self.emit(Op::Jmp { t: 0 }, at);
                let l = self.f.loops.last_mut().expect("checked above");
                if matches!(s.kind, StmtKind::Break) {
                    l.breaks.push(j)
                } else {
                    l.continues.push(j)
                }
            }
            StmtKind::Go(f, args) => {
                let base = self.callee(f, at)?;
                self.args(args, at)?;
                let sp = self.sp(at);
                self.emit(Op::Go { f: base, n: args.len() as u8, sp }, at);
            }
            StmtKind::Send(ch, v) => {
                let ch = self.operand(ch)?;
                let v = self.operand(v)?;
                let sp = self.sp(at);
                self.emit(Op::Send { ch, v, sp }, at);
            }
            StmtKind::Select(cases, default) => self.select(cases, default.as_deref(), at)?,
            StmtKind::RecvOk(v, ok, ch, declare) => {
                let (rv, rok) = (self.f.alloc(at)?, self.f.alloc(at)?);
                let c = self.operand(ch)?;
                let sp = self.sp(at);
                self.emit(Op::RecvOk { a: rv, ok: rok, ch: c, sp }, at);
                if *declare {
                    self.f.next = rok as usize + 1;
                    for (t, r) in [(v, rv), (ok, rok)] {
                        let ExprKind::Name(n) = &t.kind else { unreachable!("the parser's") };
                        self.declare(n, r, at);
                    }
                    return Ok(());
                }
                self.assign_reg(v, rv, at)?;
                self.assign_reg(ok, rok, at)?;
            }
            StmtKind::Try(body, name, catch) => self.try_catch(body, name.as_deref(), catch, at)?,
        }
        self.f.next = mark;
        Ok(())
    }

    /// `try { body } catch name { catch }`.
    fn try_catch(&mut self, body: &[Stmt], name: Option<&str>, catch: &[Stmt], at: Pos) -> R<()> {
        if self.f.tries >= u8::MAX as usize {
            return Err(Error::at(at, "too many nested try blocks"));
        }
        let e = self.f.alloc(at)?;
        let sp = self.sp(at);
        let t = self.emit(Op::Try { t: 0, e, sp }, at);
        let start = self.here() as usize;
        self.f.tries += 1;
        self.block(body)?;
        self.f.tries -= 1;
        let end = self.here() as usize;
        self.emit(Op::EndTry { n: 1 }, at);
        let j = self.emit(Op::Jmp { t: 0 }, at);
        let handler = self.here();
        match &mut self.f.code[t] {
            Op::Try { t, .. } => *t = handler,
            _ => unreachable!("emitted above"),
        }
        self.f.regions.push(TryRegion { start, end, handler: handler as usize, e });
        self.f.scopes.push(Vec::new());
        if let Some(n) = name {
            self.declare(n, e, at);
        }
        let r = self.block(catch);
        self.f.scopes.pop();
        r?;
        let h = self.here();
        self.patch(j, h);
        Ok(())
    }

    fn select(&mut self, cases: &[Case], default: Option<&[Stmt]>, at: Pos) -> R<()> {
        let mut table = Vec::new();
        let mut vars = Vec::new();
        for c in cases {
            match c {
                Case::Recv(name, ok, ch, _) => {
                    let chr = self.f.alloc(at)?;
                    self.expr_into(ch, chr)?;
                    let dst = match name {
                        Some(_) => Some(self.f.alloc(at)?),
                        None => None,
                    };
                    let okr = match ok {
                        Some(_) => Some(self.f.alloc(at)?),
                        None => None,
                    };
                    vars.push((dst, okr));
                    table.push(SelCase::Recv { ch: chr, dst, ok: okr });
                }
                Case::Send(ch, v, _) => {
                    let chr = self.f.alloc(at)?;
                    self.expr_into(ch, chr)?;
                    let vr = self.f.alloc(at)?;
                    self.expr_into(v, vr)?;
                    vars.push((None, None));
                    table.push(SelCase::Send { ch: chr, v: vr });
                }
            }
        }
        let idx = self.f.alloc(at)?;
        let k = self.f.alloc(at)?;
        let sel = self.f.sels.len() as u16;
        self.f.sels.push(SelTable { cases: table, default: default.is_some() });
        let sp = self.sp(at);
        self.emit(Op::Select { a: idx, sel, sp }, at);
        let mut ends = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            self.emit(Op::Int { a: k, v: i as i32 }, at);
            let j = self.emit(Op::EqJmpF { b: idx, c: k, t: 0 }, at);
            let (name, ok, body) = match c {
                Case::Recv(n, ok, _, b) => (n.as_deref(), ok.as_deref(), b),
                Case::Send(_, _, b) => (None, None, b),
            };
            self.f.scopes.push(Vec::new());
            if let (Some(n), Some(r)) = (name, vars[i].0) {
                self.declare(n, r, at);
            }
            if let (Some(n), Some(r)) = (ok, vars[i].1) {
                self.declare(n, r, at);
            }
            self.block(body)?;
            self.f.scopes.pop();
            ends.push(self.emit(Op::Jmp { t: 0 }, at));
            let h = self.here();
            self.patch(j, h);
        }
        if let Some(d) = default {
            self.block(d)?;
        }
        let h = self.here();
        for e in ends {
            self.patch(e, h);
        }
        Ok(())
    }

    /// The body of a loop whose condition is at `top`; `step` runs before every back-edge
    /// (where `continue` goes).
    fn loop_body(&mut self, body: &[Stmt], step: Option<Op>, top: u32, at: Pos) -> R<()> {
        let tries = self.f.tries;
        self.f.loops.push(LoopCx { breaks: Vec::new(), continues: Vec::new(), tries });
        self.block(body)?;
        let cont = self.here();
        let l = self.f.loops.last_mut().expect("the loop");
        for j in std::mem::take(&mut l.continues) {
            self.patch(j, cont);
        }
        if let Some(op) = step {
            self.emit(op, at);
        }
        let sp = self.sp(at);
        self.emit(Op::Loop { t: top, sp }, at);
        Ok(())
    }

    /// The body of a `for x in a..b` loop starting at `top`, and its `ForLoop` back-edge
    /// (where `continue` goes).
    fn for_body(&mut self, body: &[Stmt], i: Reg, end: Reg, top: u32, at: Pos) -> R<()> {
        let tries = self.f.tries;
        self.f.loops.push(LoopCx { breaks: Vec::new(), continues: Vec::new(), tries });
        self.block(body)?;
        let cont = self.here();
        let l = self.f.loops.last_mut().expect("the loop");
        for j in std::mem::take(&mut l.continues) {
            self.patch(j, cont);
        }
        let sp = self.sp(at);
        self.emit(Op::ForLoop { i, end, t: top, sp }, at);
        Ok(())
    }

    fn end_loop(&mut self) {
        let l = self.f.loops.pop().expect("the loop");
        let h = self.here();
        for j in l.breaks {
            self.patch(j, h);
        }
    }

    /// Emits a jump taken when `c` is false; returns it for patching.
    /// The jumps (to be patched) taken when `c` is false; the code falls through when it is
    /// true. `and`, `or` and `not` become jumps rather than values, and a comparison a fused
    /// compare and branch, as a condition needs no boolean.
    fn cond_jump(&mut self, c: &Expr) -> R<Vec<usize>> {
        let mark = self.f.next;
        let j = match &c.kind {
            ExprKind::Bin(
                op @ (BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne),
                a,
                b,
            ) => {
                // A literal operand that is an immediate is read from the constants (the other
                // operand's evaluation is all the code runs, in source order either way).
                let (cop, x, _) = cmp_parts(*op, 0, 1);
                let swapped = x == 1;
                if let Some(k) = self.imm_const(b)? {
                    let r = self.operand(a)?;
                    let (b, kl) = (r, swapped);
                    vec![self.emit(Op::cmp_jmp_fk(cop, b, k, kl, 0), c.pos)]
                } else if let Some(k) = self.imm_const(a)? {
                    let r = self.operand(b)?;
                    let (b, kl) = (r, !swapped);
                    vec![self.emit(Op::cmp_jmp_fk(cop, b, k, kl, 0), c.pos)]
                } else {
                    let ra = self.operand(a)?;
                    let rb = self.operand(b)?;
                    let (op, x, y) = cmp_parts(*op, ra, rb);
                    vec![self.emit(Op::cmp_jmp_f(op, x, y, 0), c.pos)]
                }
            }
            ExprKind::Bool(true) => Vec::new(),
            ExprKind::Logic(true, a, b) => {
                let mut j = self.cond_jump(a)?;
                j.extend(self.cond_jump(b)?);
                j
            }
            ExprKind::Logic(false, a, b) => {
                let jt = self.true_jump(a)?;
                let j = self.cond_jump(b)?;
                let h = self.here();
                self.patch_all(jt, h);
                j
            }
            ExprKind::Not(a) => self.true_jump(a)?,
            _ => {
                let r = self.operand(c)?;
                vec![self.emit(Op::JmpF { a: r, t: 0 }, c.pos)]
            }
        };
        self.f.next = mark;
        Ok(j)
    }

    /// The jumps taken when `c` is true; the code falls through when it is false.
    fn true_jump(&mut self, c: &Expr) -> R<Vec<usize>> {
        let mark = self.f.next;
        let j = match &c.kind {
            ExprKind::Logic(false, a, b) => {
                let mut j = self.true_jump(a)?;
                j.extend(self.true_jump(b)?);
                j
            }
            ExprKind::Logic(true, a, b) => {
                let jf = self.cond_jump(a)?;
                let j = self.true_jump(b)?;
                let h = self.here();
                self.patch_all(jf, h);
                j
            }
            ExprKind::Not(a) => self.cond_jump(a)?,
            _ => {
                let r = self.operand(c)?;
                vec![self.emit(Op::JmpT { a: r, t: 0 }, c.pos)]
            }
        };
        self.f.next = mark;
        Ok(j)
    }

    fn patch_all(&mut self, js: Vec<usize>, t: u32) {
        for j in js {
            self.patch(j, t);
        }
    }

    fn assign(&mut self, target: &Expr, e: &Expr, at: Pos) -> R<()> {
        match &target.kind {
            ExprKind::Name(n) => match self.resolve(n, target.pos)? {
                Name::Local(r, _, true) => {
                    let t = self.operand(e)?;
                    self.emit(Op::SetBox { a: r, b: t }, at);
                }
                Name::Local(_, true, false) => {
                    unreachable!("a captured variable that is assigned is boxed")
                }
                Name::Local(r, false, false) => {
                    if matches!(e.kind, ExprKind::Logic(..)) {
                        let t = self.operand(e)?;
                        self.emit(Op::Move { a: r, b: t }, at);
                    } else {
                        self.expr_into(e, r)?;
                    }
                }
                Name::Global(g) => {
                    let r = self.operand(e)?;
                    self.emit(Op::SetGlobal { g, a: r }, at);
                }
                Name::Fn(..) | Name::Builtin(..) => {
                    return Err(Error::at(target.pos, format!("cannot assign to function {n}")));
                }
            },
            ExprKind::Index(o, k) => {
                let o = self.operand(o)?;
                let k = self.operand(k)?;
                let v = self.operand(e)?;
                let sp = self.sp(at);
                self.emit(Op::SetIndex { a: o, b: k, c: v, sp }, target.pos);
            }
            ExprKind::Field(o, name) => {
                let o = self.operand(o)?;
                let k = self.f.alloc(at)?;
                let kc = self.c.konst(Const::Str(name.clone()))?;
                self.emit(Op::Const { a: k, k: kc }, at);
                let v = self.operand(e)?;
                let sp = self.sp(at);
                self.emit(Op::SetIndex { a: o, b: k, c: v, sp }, target.pos);
            }
            _ => return Err(Error::at(target.pos, "cannot assign to this")),
        }
        Ok(())
    }

    /// Assigns register `v` to `target` (as `assign` does an expression).
    fn assign_reg(&mut self, target: &Expr, v: Reg, at: Pos) -> R<()> {
        match &target.kind {
            ExprKind::Name(n) => match self.resolve(n, target.pos)? {
                Name::Local(r, _, true) => {
                    self.emit(Op::SetBox { a: r, b: v }, at);
                }
                Name::Local(r, _, false) => {
                    self.emit(Op::Move { a: r, b: v }, at);
                }
                Name::Global(g) => {
                    self.emit(Op::SetGlobal { g, a: v }, at);
                }
                Name::Fn(..) | Name::Builtin(..) => {
                    return Err(Error::at(target.pos, format!("cannot assign to function {n}")));
                }
            },
            ExprKind::Index(o, k) => {
                let o = self.operand(o)?;
                let k = self.operand(k)?;
                let sp = self.sp(at);
                self.emit(Op::SetIndex { a: o, b: k, c: v, sp }, target.pos);
            }
            ExprKind::Field(o, name) => {
                let o = self.operand(o)?;
                let k = self.f.alloc(at)?;
                let kc = self.c.konst(Const::Str(name.clone()))?;
                self.emit(Op::Const { a: k, k: kc }, at);
                let sp = self.sp(at);
                self.emit(Op::SetIndex { a: o, b: k, c: v, sp }, target.pos);
            }
            _ => return Err(Error::at(target.pos, "cannot assign to this")),
        }
        Ok(())
    }

    /// A register holding `e`'s value: a local's own register, or a new temporary.
    /// The constant index of `e` if it is a literal whose value is an immediate (see
    /// [`Program::imm`]).
    fn imm_const(&mut self, e: &Expr) -> R<Option<u16>> {
        let c = match e.kind {
            ExprKind::Int(v) => Const::Int(v),
            ExprKind::Float(f) => Const::Float(f),
            _ => return Ok(None),
        };
        if Program::imm(&c).is_none() {
            return Ok(None);
        }
        Ok(Some(self.c.konst(c)?))
    }

    fn operand(&mut self, e: &Expr) -> R<Reg> {
        if let ExprKind::Name(n) = &e.kind
            && let Name::Local(r, _, false) = self.resolve(n, e.pos)?
        {
            return Ok(r);
        }
        let r = self.f.alloc(e.pos)?;
        self.expr_into(e, r)?;
        Ok(r)
    }

    /// Puts the callee of a call in a new register (the base of its arguments).
    fn callee(&mut self, f: &Expr, at: Pos) -> R<Reg> {
        let base = self.f.alloc(at)?;
        if let ExprKind::Name(n) = &f.kind
            && let Name::Builtin(..) = self.resolve(n, f.pos)?
        {
            return Err(Error::at(f.pos, format!("{n} is a builtin: call it directly")));
        }
        self.expr_into(f, base)?;
        Ok(base)
    }

    /// Evaluates `args` into consecutive new registers.
    fn args(&mut self, args: &[Expr], at: Pos) -> R<Reg> {
        if args.len() > 200 {
            return Err(Error::at(at, "too many arguments"));
        }
        let base = self.f.next as Reg;
        let regs: Vec<Reg> = (0..args.len()).map(|_| self.f.alloc(at)).collect::<R<_>>()?;
        for (a, r) in args.iter().zip(regs) {
            self.expr_into(a, r)?;
        }
        Ok(base)
    }

    fn expr_into(&mut self, e: &Expr, dst: Reg) -> R<()> {
        let mark = self.f.next;
        let at = e.pos;
        match &e.kind {
            ExprKind::Int(v) => {
                if let Ok(v) = i32::try_from(*v) {
                    self.emit(Op::Int { a: dst, v }, at);
                } else {
                    let k = self.c.konst(Const::Int(*v))?;
                    self.emit(Op::Const { a: dst, k }, at);
                }
            }
            ExprKind::Float(v) => {
                let k = self.c.konst(Const::Float(*v))?;
                self.emit(Op::Const { a: dst, k }, at);
            }
            ExprKind::Str(s) => {
                let k = self.c.konst(Const::Str(s.clone()))?;
                self.emit(Op::Const { a: dst, k }, at);
            }
            ExprKind::Bool(b) => {
                self.emit(Op::Imm { a: dst, w: value::boolean(*b) as u8 }, at);
            }
            ExprKind::Nil => {
                self.emit(Op::Imm { a: dst, w: value::NIL as u8 }, at);
            }
            ExprKind::Name(n) => match self.resolve(n, at)? {
                Name::Local(r, _, true) => {
                    self.emit(Op::GetBox { a: dst, b: r }, at);
                }
                Name::Local(r, _, false) => {
                    if r != dst {
                        self.emit(Op::Move { a: dst, b: r }, at);
                    }
                }
                Name::Global(g) => {
                    self.emit(Op::GetGlobal { a: dst, g }, at);
                }
                Name::Fn(p, _) => {
                    let k = self.c.konst(Const::Fn(p))?;
                    self.emit(Op::Const { a: dst, k }, at);
                }
                Name::Builtin(..) => {
                    return Err(Error::at(at, format!("{n} is a builtin: call it directly")));
                }
            },
            ExprKind::Bin(op, a, b) => {
                if matches!(op, BinOp::Add | BinOp::Sub)
                    && let ExprKind::Int(v) = b.kind
                    && let Ok(v) = i16::try_from(if *op == BinOp::Sub { -v } else { v })
                {
                    let ra = self.operand(a)?;
                    let sp = self.sp(at);
                    self.emit(Op::AddI { a: dst, b: ra, v, sp }, at);
                } else if let Some(op) = arith_op(*op)
                    && let Some((k, kl, x)) = match self.imm_const(b)? {
                        Some(k) => Some((k, false, a)),
                        None => self.imm_const(a)?.map(|k| (k, true, b)),
                    }
                {
                    let rb = self.operand(x)?;
                    let sp = self.sp(at);
                    self.emit(Op::arith_k(op, dst, rb, k, kl, sp), at);
                } else {
                    let ra = self.operand(a)?;
                    let rb = self.operand(b)?;
                    let arith = arith_op(*op);
                    if let Some(op) = arith {
                        let sp = self.sp(at);
                        self.emit(Op::arith(op, dst, ra, rb, sp), at);
                    } else {
                        let (op, b, c) = cmp_parts(*op, ra, rb);
                        self.emit(Op::Cmp { op, a: dst, b, c }, at);
                    }
                }
            }
            ExprKind::Logic(is_and, a, b) => {
                self.expr_into(a, dst)?;
                let j = if *is_and {
                    self.emit(Op::JmpF { a: dst, t: 0 }, at)
                } else {
                    self.emit(Op::JmpT { a: dst, t: 0 }, at)
                };
                self.expr_into(b, dst)?;
                let h = self.here();
                self.patch(j, h);
            }
            ExprKind::Neg(a) => {
                let r = self.operand(a)?;
                let sp = self.sp(at);
                self.emit(Op::Neg { a: dst, b: r, sp }, at);
            }
            ExprKind::Not(a) => {
                let r = self.operand(a)?;
                self.emit(Op::Not { a: dst, b: r }, at);
            }
            ExprKind::Call(f, args) => self.call(f, args, dst, at)?,
            ExprKind::Index(o, k) => {
                let o = self.operand(o)?;
                let k = self.operand(k)?;
                self.emit(Op::Index { a: dst, b: o, c: k }, at);
            }
            ExprKind::Field(o, name) => {
                let o = self.operand(o)?;
                let k = self.f.alloc(at)?;
                let kc = self.c.konst(Const::Str(name.clone()))?;
                self.emit(Op::Const { a: k, k: kc }, at);
                self.emit(Op::Index { a: dst, b: o, c: k }, at);
            }
            ExprKind::Vec(items) => {
                if items.len() <= 200 {
                    let base = self.args(items, at)?;
                    let sp = self.sp(at);
                    self.emit(Op::NewVec { a: dst, base, n: items.len() as u8, sp }, at);
                    self.f.next = mark;
                    return Ok(());
                }
                // The first items in one instruction, the rest pushed one at a time.
                let (head, rest) = items.split_at(200);
                let t = self.f.alloc(at)?;
                let base = self.args(head, at)?;
                let sp = self.sp(at);
                self.emit(Op::NewVec { a: t, base, n: head.len() as u8, sp }, at);
                self.f.next = t as usize + 1;
                for x in rest {
                    let m = self.f.next;
                    let b = self.f.alloc(at)?;
                    self.emit(Op::Move { a: b, b: t }, at);
                    let xr = self.f.alloc(at)?;
                    self.expr_into(x, xr)?;
                    let sp = self.sp(at);
                    self.emit(Op::Builtin { a: b, id: Builtin::Push, base: b, n: 2, sp }, at);
                    self.f.next = m;
                }
                self.emit(Op::Move { a: dst, b: t }, at);
            }
            ExprKind::Map(items) => {
                let t = self.f.alloc(at)?;
                let sp = self.sp(at);
                self.emit(Op::NewMap { a: t, n: items.len().min(255) as u8, sp }, at);
                for (k, v) in items {
                    let m = self.f.next;
                    let k = self.operand(k)?;
                    let v = self.operand(v)?;
                    let sp = self.sp(at);
                    self.emit(Op::SetIndex { a: t, b: k, c: v, sp }, at);
                    self.f.next = m;
                }
                self.emit(Op::Move { a: dst, b: t }, at);
            }
            ExprKind::Lambda(d) => {
                let caps = self.captures(d);
                if caps.len() > 200 {
                    return Err(Error::at(at, "a function captures at most 200 variables"));
                }
                let base = self.f.next as Reg;
                let mut boxes = Vec::new();
                for n in &caps {
                    let r = self.f.alloc(at)?;
                    let Some(l) = self.f.lookup(n) else { unreachable!("captures are locals") };
                    let (src, boxed) = (l.reg, l.boxed);
                    // A box is shared: the closure gets the box itself.
                    self.emit(Op::Move { a: r, b: src }, at);
                    boxes.push((n.clone(), boxed));
                }
                let p = self.c.function(d, &boxes, false)?;
                let pi = self.c.protos.len();
                if pi > u16::MAX as usize {
                    return Err(Error::at(at, "too many functions"));
                }
                self.c.protos.push(Some(p));
                let sp = self.sp(at);
                self.emit(Op::Closure { a: dst, p: pi as u16, base, n: caps.len() as u8, sp }, at);
            }
            ExprKind::Recv(ch) => {
                let ch = self.operand(ch)?;
                let sp = self.sp(at);
                self.emit(Op::Recv { a: dst, ch, sp }, at);
            }
        }
        self.f.next = mark;
        Ok(())
    }

    fn call(&mut self, f: &Expr, args: &[Expr], dst: Reg, at: Pos) -> R<()> {
        if let ExprKind::Name(n) = &f.kind {
            match self.resolve(n, f.pos)? {
                Name::Fn(p, k) => {
                    if k != args.len() {
                        return Err(Error::at(
                            at,
                            format!("{n} takes {k} arguments, given {}", args.len()),
                        ));
                    }
                    let base = self.args(args, at)?;
                    let sp = self.sp(at);
                    self.emit(Op::CallG { a: dst, p, base, n: args.len() as u8, sp }, at);
                    return Ok(());
                }
                Name::Builtin(b, lo, hi) => {
                    if args.len() < lo as usize || args.len() > hi as usize {
                        let want = if lo == hi { format!("{lo}") } else { format!("{lo} to {hi}") };
                        return Err(Error::at(
                            at,
                            format!("{n} takes {want} arguments, given {}", args.len()),
                        ));
                    }
                    let base = self.args(args, at)?;
                    let sp = self.sp(at);
                    if b == Builtin::Sort && args.len() == 2 {
                        // `sort(v, less)`: the prelude's merge sort, which calls `less`.
                        let p = self.c.fns["$sort"].0;
                        self.emit(Op::CallG { a: dst, p, base, n: 2, sp }, at);
                        return Ok(());
                    }
                    self.emit(Op::Builtin { a: dst, id: b, base, n: args.len() as u8, sp }, at);
                    return Ok(());
                }
                _ => {}
            }
        }
        let base = self.callee(f, at)?;
        self.args(args, at)?;
        let sp = self.sp(at);
        self.emit(Op::Call { a: dst, f: base, n: args.len() as u8, sp }, at);
        Ok(())
    }

    /// The names a function literal uses that are locals here (its captures), in order of
    /// first use.
    fn captures(&self, d: &FnDef) -> Vec<String> {
        let mut used = Vec::new();
        for s in &d.body {
            names_stmt(s, &mut used);
        }
        let mut out: Vec<String> = Vec::new();
        for n in used {
            if !d.params.contains(&n) && self.f.lookup(&n).is_some() && !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }
}

/// A comparison as one of the four kinds, operands swapped for `>` and `>=`.
/// The arithmetic operator of `op`, if it is one.
fn arith_op(op: BinOp) -> Option<ArithOp> {
    Some(match op {
        BinOp::Add => ArithOp::Add,
        BinOp::Sub => ArithOp::Sub,
        BinOp::Mul => ArithOp::Mul,
        BinOp::Div => ArithOp::Div,
        BinOp::Mod => ArithOp::Mod,
        BinOp::BitAnd => ArithOp::BitAnd,
        BinOp::BitOr => ArithOp::BitOr,
        BinOp::BitXor => ArithOp::BitXor,
        BinOp::Shl => ArithOp::Shl,
        BinOp::Shr => ArithOp::Shr,
        _ => return None,
    })
}

fn cmp_parts(op: BinOp, a: Reg, b: Reg) -> (CmpOp, Reg, Reg) {
    match op {
        BinOp::Eq => (CmpOp::Eq, a, b),
        BinOp::Ne => (CmpOp::Ne, a, b),
        BinOp::Lt => (CmpOp::Lt, a, b),
        BinOp::Le => (CmpOp::Le, a, b),
        BinOp::Gt => (CmpOp::Lt, b, a),
        BinOp::Ge => (CmpOp::Le, b, a),
        _ => unreachable!("not a comparison"),
    }
}

/// Gathers the names `s` assigns (anywhere, function literals included) and the names used
/// inside function literals: a variable in both needs a box.
fn boxing_stmt(s: &Stmt, assigned: &mut HashSet<String>, in_lambdas: &mut HashSet<String>) {
    let mut target = |t: &Expr| {
        if let ExprKind::Name(n) = &t.kind {
            assigned.insert(n.clone());
        }
    };
    match &s.kind {
        StmtKind::Assign(t, _) => target(t),
        StmtKind::RecvOk(v, ok, _, false) => {
            target(v);
            target(ok);
        }
        _ => {}
    }
    let mut lambdas = Vec::new();
    each_lambda_stmt(s, &mut lambdas);
    for d in lambdas {
        let mut used = Vec::new();
        for s in &d.body {
            names_stmt(s, &mut used);
            boxing_stmt(s, assigned, in_lambdas);
        }
        in_lambdas.extend(used);
    }
    // Statements nested in blocks.
    let mut inner = |b: &[Stmt]| b.iter().for_each(|s| boxing_stmt(s, assigned, in_lambdas));
    match &s.kind {
        StmtKind::If(_, a, b) | StmtKind::Try(a, _, b) => {
            inner(a);
            inner(b);
        }
        StmtKind::While(_, b) | StmtKind::ForIn(_, _, b) | StmtKind::ForRange(_, _, _, b) => {
            inner(b)
        }
        StmtKind::Select(cases, d) => {
            for c in cases {
                match c {
                    Case::Recv(_, _, _, b) | Case::Send(_, _, b) => inner(b),
                }
            }
            if let Some(d) = d {
                inner(d);
            }
        }
        _ => {}
    }
}

/// The top-level `let`s of a whole program that may be locals of its top-level code (see
/// [`Compiler::chunk`]): at most [`TOP_LOCALS`], so that the top-level code keeps registers
/// for its temporaries.
fn top_level_locals(stmts: &[Stmt]) -> HashSet<String> {
    let mut in_fns = Vec::new();
    let mut lets: HashMap<&str, usize> = HashMap::new();
    for s in stmts {
        match &s.kind {
            StmtKind::Fn(d) => d.body.iter().for_each(|s| names_stmt(s, &mut in_fns)),
            StmtKind::Let(n, _) => *lets.entry(n).or_default() += 1,
            _ => {}
        }
    }
    let in_fns: HashSet<String> = in_fns.into_iter().collect();
    let mut seen = HashSet::new();
    let mut out = HashSet::new();
    for s in stmts {
        let mut names = Vec::new();
        names_stmt(s, &mut names);
        seen.extend(names);
        if let StmtKind::Let(n, _) = &s.kind
            && lets[n.as_str()] == 1
            && !in_fns.contains(n)
            && !seen.contains(n)
            && out.len() < TOP_LOCALS
        {
            out.insert(n.clone());
        }
    }
    out
}

/// The most top-level variables a program keeps in registers (of 255: the rest stay for
/// the top-level code's temporaries and block variables, as before there were any).
const TOP_LOCALS: usize = 64;

/// The function literals in `s`'s own expressions (not in its nested blocks' statements,
/// and not nested in other literals).
fn each_lambda_stmt<'a>(s: &'a Stmt, out: &mut Vec<&'a FnDef>) {
    let mut exprs: Vec<&Expr> = Vec::new();
    match &s.kind {
        StmtKind::Let(_, e) | StmtKind::Expr(e) => exprs.push(e),
        StmtKind::Assign(a, b) | StmtKind::Send(a, b) => exprs.extend([a, b]),
        StmtKind::RecvOk(a, b, c, _) => exprs.extend([a, b, c]),
        StmtKind::If(c, _, _) | StmtKind::While(c, _) | StmtKind::ForIn(_, c, _) => exprs.push(c),
        StmtKind::ForRange(_, a, b, _) => exprs.extend([a, b]),
        StmtKind::Return(e) => exprs.extend(e),
        StmtKind::Go(f, args) => {
            exprs.push(f);
            exprs.extend(args);
        }
        StmtKind::Select(cases, _) => {
            for c in cases {
                match c {
                    Case::Recv(_, _, ch, _) => exprs.push(ch),
                    Case::Send(ch, v, _) => exprs.extend([ch, v]),
                }
            }
        }
        StmtKind::Try(..) | StmtKind::Break | StmtKind::Continue | StmtKind::Fn(_) => {}
    }
    for e in exprs {
        each_lambda_expr(e, out);
    }
}

fn each_lambda_expr<'a>(e: &'a Expr, out: &mut Vec<&'a FnDef>) {
    match &e.kind {
        ExprKind::Lambda(d) => out.push(d),
        ExprKind::Bin(_, a, b) | ExprKind::Logic(_, a, b) | ExprKind::Index(a, b) => {
            each_lambda_expr(a, out);
            each_lambda_expr(b, out);
        }
        ExprKind::Neg(a) | ExprKind::Not(a) | ExprKind::Field(a, _) | ExprKind::Recv(a) => {
            each_lambda_expr(a, out)
        }
        ExprKind::Call(f, args) => {
            each_lambda_expr(f, out);
            args.iter().for_each(|e| each_lambda_expr(e, out));
        }
        ExprKind::Vec(items) => items.iter().for_each(|e| each_lambda_expr(e, out)),
        ExprKind::Map(items) => items.iter().for_each(|(k, v)| {
            each_lambda_expr(k, out);
            each_lambda_expr(v, out);
        }),
        ExprKind::Int(_)
        | ExprKind::Float(_)
        | ExprKind::Str(_)
        | ExprKind::Bool(_)
        | ExprKind::Nil
        | ExprKind::Name(_) => {}
    }
}

fn names_stmt(s: &Stmt, out: &mut Vec<String>) {
    match &s.kind {
        StmtKind::Let(_, e) | StmtKind::Expr(e) => names_expr(e, out),
        StmtKind::Assign(t, e) | StmtKind::Send(t, e) => {
            names_expr(t, out);
            names_expr(e, out);
        }
        StmtKind::RecvOk(v, ok, ch, _) => {
            names_expr(v, out);
            names_expr(ok, out);
            names_expr(ch, out);
        }
        StmtKind::Try(a, _, b) => a.iter().chain(b).for_each(|s| names_stmt(s, out)),
        StmtKind::If(c, a, b) => {
            names_expr(c, out);
            a.iter().chain(b).for_each(|s| names_stmt(s, out));
        }
        StmtKind::While(c, b) | StmtKind::ForIn(_, c, b) => {
            names_expr(c, out);
            b.iter().for_each(|s| names_stmt(s, out));
        }
        StmtKind::ForRange(_, a, b, body) => {
            names_expr(a, out);
            names_expr(b, out);
            body.iter().for_each(|s| names_stmt(s, out));
        }
        StmtKind::Return(e) => e.iter().for_each(|e| names_expr(e, out)),
        StmtKind::Go(f, args) => {
            names_expr(f, out);
            args.iter().for_each(|e| names_expr(e, out));
        }
        StmtKind::Select(cases, d) => {
            for c in cases {
                match c {
                    Case::Recv(_, _, ch, b) => {
                        names_expr(ch, out);
                        b.iter().for_each(|s| names_stmt(s, out));
                    }
                    Case::Send(ch, v, b) => {
                        names_expr(ch, out);
                        names_expr(v, out);
                        b.iter().for_each(|s| names_stmt(s, out));
                    }
                }
            }
            d.iter().flatten().for_each(|s| names_stmt(s, out));
        }
        StmtKind::Break | StmtKind::Continue | StmtKind::Fn(_) => {}
    }
}

fn names_expr(e: &Expr, out: &mut Vec<String>) {
    match &e.kind {
        ExprKind::Name(n) => out.push(n.clone()),
        ExprKind::Bin(_, a, b) | ExprKind::Logic(_, a, b) | ExprKind::Index(a, b) => {
            names_expr(a, out);
            names_expr(b, out);
        }
        ExprKind::Neg(a) | ExprKind::Not(a) | ExprKind::Field(a, _) | ExprKind::Recv(a) => {
            names_expr(a, out)
        }
        ExprKind::Call(f, args) => {
            names_expr(f, out);
            args.iter().for_each(|e| names_expr(e, out));
        }
        ExprKind::Vec(items) => items.iter().for_each(|e| names_expr(e, out)),
        ExprKind::Map(items) => items.iter().for_each(|(k, v)| {
            names_expr(k, out);
            names_expr(v, out);
        }),
        ExprKind::Lambda(d) => d.body.iter().for_each(|s| names_stmt(s, out)),
        ExprKind::Int(_)
        | ExprKind::Float(_)
        | ExprKind::Str(_)
        | ExprKind::Bool(_)
        | ExprKind::Nil => {}
    }
}

/// Register sets as four words (255 registers at most).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Set([u64; 4]);

impl Set {
    fn add(&mut self, r: Reg) {
        self.0[r as usize / 64] |= 1 << (r % 64);
    }
    fn range(&mut self, base: Reg, n: u8) {
        for r in base..base.saturating_add(n) {
            self.add(r);
        }
    }
    fn union(self, o: Set) -> Set {
        Set(std::array::from_fn(|i| self.0[i] | o.0[i]))
    }
    fn minus(self, o: Set) -> Set {
        Set(std::array::from_fn(|i| self.0[i] & !o.0[i]))
    }
    fn regs(self, limit: usize) -> Vec<usize> {
        (0..limit).filter(|&r| self.0[r / 64] >> (r % 64) & 1 == 1).collect()
    }
}

/// Uses, defs, successors and safepoint of one instruction.
fn effects(op: &Op, i: usize, sels: &[SelTable]) -> (Set, Set, [Option<usize>; 2], Option<u16>) {
    let (mut u, mut d) = (Set::default(), Set::default());
    let next = Some(i + 1);
    let mut succ = [next, None];
    let mut sp = None;
    match *op {
        Op::Move { a, b } | Op::Not { a, b } => {
            d.add(a);
            u.add(b);
        }
        Op::Int { a, .. } | Op::Const { a, .. } | Op::Imm { a, .. } | Op::GetGlobal { a, .. } => {
            d.add(a)
        }
        Op::SetGlobal { a, .. } => u.add(a),
        Op::Arith { a, b, c, sp: s, .. }
        | Op::Add { a, b, c, sp: s }
        | Op::Sub { a, b, c, sp: s }
        | Op::Mul { a, b, c, sp: s }
        | Op::Div { a, b, c, sp: s } => {
            d.add(a);
            u.add(b);
            u.add(c);
            sp = Some(s);
        }
        Op::AddI { a, b, sp: s, .. }
        | Op::Neg { a, b, sp: s }
        | Op::ArithK { a, b, sp: s, .. }
        | Op::AddK { a, b, sp: s, .. }
        | Op::SubK { a, b, sp: s, .. }
        | Op::MulK { a, b, sp: s, .. }
        | Op::DivK { a, b, sp: s, .. } => {
            d.add(a);
            u.add(b);
            sp = Some(s);
        }
        Op::Cmp { a, b, c, .. } | Op::Index { a, b, c } => {
            d.add(a);
            u.add(b);
            u.add(c);
        }
        Op::Jmp { t } => succ = [Some(t as usize), None],
        Op::JmpF { a, t } | Op::JmpT { a, t } => {
            u.add(a);
            succ[1] = Some(t as usize);
        }
        Op::LtJmpF { b, c, t }
        | Op::LeJmpF { b, c, t }
        | Op::EqJmpF { b, c, t }
        | Op::NeJmpF { b, c, t } => {
            u.add(b);
            u.add(c);
            succ[1] = Some(t as usize);
        }
        Op::LtJmpFK { b, t, .. }
        | Op::LeJmpFK { b, t, .. }
        | Op::EqJmpFK { b, t, .. }
        | Op::NeJmpFK { b, t, .. } => {
            u.add(b);
            succ[1] = Some(t as usize);
        }
        Op::Loop { t, sp: s } => {
            succ = [Some(t as usize), None];
            sp = Some(s);
        }
        Op::ForLoop { i, end, t, sp: s } => {
            u.add(i);
            u.add(end);
            d.add(i);
            succ[1] = Some(t as usize);
            sp = Some(s);
        }
        Op::Call { a, f, n, sp: s } => {
            u.range(f, n + 1);
            d.add(a);
            sp = Some(s);
        }
        Op::CallG { a, base, n, sp: s, .. }
        | Op::NewVec { a, base, n, sp: s }
        | Op::Closure { a, base, n, sp: s, .. }
        | Op::Builtin { a, base, n, sp: s, .. } => {
            u.range(base, n);
            d.add(a);
            sp = Some(s);
        }
        Op::Ret { a } => {
            u.add(a);
            succ = [None, None];
        }
        Op::NewMap { a, sp: s, .. } => {
            d.add(a);
            sp = Some(s);
        }
        Op::SetIndex { a, b, c, sp: s } => {
            u.add(a);
            u.add(b);
            u.add(c);
            sp = Some(s);
        }
        Op::Go { f, n, sp: s } => {
            u.range(f, n + 1);
            sp = Some(s);
        }
        Op::Send { ch, v, sp: s } => {
            u.add(ch);
            u.add(v);
            sp = Some(s);
        }
        Op::Recv { a, ch, sp: s } => {
            u.add(ch);
            d.add(a);
            sp = Some(s);
        }
        Op::RecvOk { a, ok, ch, sp: s } => {
            u.add(ch);
            d.add(a);
            d.add(ok);
            sp = Some(s);
        }
        Op::NewBox { a, b, sp: s } => {
            u.add(b);
            d.add(a);
            sp = Some(s);
        }
        Op::GetBox { a, b } => {
            u.add(b);
            d.add(a);
        }
        Op::SetBox { a, b } => {
            u.add(a);
            u.add(b);
        }
        // Its safepoints are the handler's (see `liveness`).
        Op::Try { t, .. } => succ[1] = Some(t as usize),
        Op::EndTry { .. } => {}
        Op::Select { a, sel, sp: s } => {
            d.add(a);
            for c in &sels[sel as usize].cases {
                match *c {
                    SelCase::Recv { ch, dst, ok } => {
                        u.add(ch);
                        for r in [dst, ok].into_iter().flatten() {
                            d.add(r);
                        }
                    }
                    SelCase::Send { ch, v } => {
                        u.add(ch);
                        u.add(v);
                    }
                }
            }
            sp = Some(s);
        }
        Op::IterNext { x, it, obj, t, sp: s } => {
            u.add(it);
            u.add(obj);
            d.add(x);
            d.add(it);
            succ[1] = Some(t as usize);
            sp = Some(s);
        }
    }
    (u, d, succ, sp)
}

/// The stack maps of a function's safepoints (1 and up; 0 is the entry, done by the caller).
///
/// An instruction inside a `try` block may fail before it writes anything and continue at the
/// handler: so what the handler needs (but the message register, which the unwinding writes)
/// is live out of it, and live across its safepoints even where the instruction writes it.
/// A `try`'s own two safepoints are its handler's, before and after the message is written.
fn liveness(
    code: &[Op],
    regs: usize,
    sels: &[SelTable],
    regions: &[TryRegion],
    kept: &[(Reg, usize)],
) -> Vec<(usize, Vec<usize>)> {
    let mut eff: Vec<_> = code.iter().enumerate().map(|(i, op)| effects(op, i, sels)).collect();
    // A kept register counts as read by every instruction from its first on.
    for &(r, from) in kept {
        for e in &mut eff[from..] {
            e.0.add(r);
        }
    }
    let mut live_in = vec![Set::default(); code.len() + 1];
    // What the handlers of the `try` blocks around instruction `i` need.
    let handlers = |live_in: &[Set], i: usize| {
        regions.iter().filter(|r| (r.start..r.end).contains(&i)).fold(Set::default(), |s, r| {
            let mut e = Set::default();
            e.add(r.e);
            s.union(live_in[r.handler].minus(e))
        })
    };
    let mut changed = true;
    while changed {
        changed = false;
        for i in (0..code.len()).rev() {
            let (u, d, succ, _) = eff[i];
            let out = succ.iter().flatten().fold(Set::default(), |s, &j| s.union(live_in[j]));
            let h = handlers(&live_in, i);
            let out = out.union(h);
            let inn = u.union(out.minus(d)).union(h);
            if inn != live_in[i] {
                live_in[i] = inn;
                changed = true;
            }
        }
    }
    let mut maps = Vec::new();
    for (i, &(u, d, succ, sp)) in eff.iter().enumerate() {
        if let Op::Try { t, e, sp } = code[i] {
            let mut er = Set::default();
            er.add(e);
            let h = live_in[t as usize];
            maps.push((sp as usize, h.minus(er).regs(regs)));
            maps.push((sp as usize + 1, h.union(er).regs(regs)));
            continue;
        }
        let Some(sp) = sp else { continue };
        let h = handlers(&live_in, i);
        let out = succ.iter().flatten().fold(Set::default(), |s, &j| s.union(live_in[j])).union(h);
        maps.push((sp as usize, out.minus(d).union(u).union(h).regs(regs)));
        maps.push((sp as usize + 1, out.union(d).union(u).regs(regs)));
    }
    maps
}

/// Deliberately wrong stack maps, for the tests that show what a wrong map costs: a
/// register of a named function left out of every map, as a compiler bug would leave it.
#[cfg(test)]
pub(crate) mod wrong_maps {
    use std::cell::RefCell;

    thread_local! {
        static DROP: RefCell<Option<(String, usize)>> = const { RefCell::new(None) };
    }

    /// Functions named `name` compiled on this thread from now on call register `reg` dead
    /// at every safepoint; `None` ends it.
    pub(crate) fn drop_register(which: Option<(&str, usize)>) {
        DROP.with(|d| *d.borrow_mut() = which.map(|(n, r)| (n.to_string(), r)));
    }

    pub(crate) fn apply(name: &str, maps: Vec<(usize, Vec<usize>)>) -> Vec<(usize, Vec<usize>)> {
        DROP.with(|d| match &*d.borrow() {
            Some((n, r)) if n == name => maps
                .into_iter()
                .map(|(sp, regs)| (sp, regs.into_iter().filter(|x| x != r).collect()))
                .collect(),
            _ => maps,
        })
    }
}

#[cfg(test)]
mod tests {
    use safepoint_stackmap::{BitmapKind, Registry};

    use super::*;

    fn maps(src: &str, func: &str) -> (Proto, Vec<Vec<usize>>) {
        let reg = Registry::new();
        let prog = compile("t.pb", src, &reg).expect("compiles");
        let p = prog.protos.iter().find(|p| p.name == func).expect("the function").clone();
        let info = reg.get(p.func).expect("registered");
        let all = (0..info.safepoints())
            .map(|sp| info.live_slots(sp, BitmapKind::Tagged).unwrap_or_default())
            .collect();
        (p, all)
    }

    fn sp_of(p: &Proto, pick: impl Fn(&Op) -> Option<u16>) -> usize {
        p.code.iter().find_map(pick).expect("the instruction") as usize
    }

    #[test]
    fn a_call_sees_exactly_the_registers_live_across_it() {
        let src = "fn g() { return 0 }\nfn f(a, b) {\n let x = [a]\n g()\n return x\n}\n";
        let (p, maps) = maps(src, "f");
        assert_eq!(maps[0], vec![0, 1], "entry: the parameters");
        let call = sp_of(&p, |op| match op {
            Op::CallG { sp, .. } => Some(*sp),
            _ => None,
        });
        // a and b are dead after the vector is built; x (register 2) is live across g().
        assert_eq!(maps[call], vec![2]);
        let new = sp_of(&p, |op| match op {
            Op::NewVec { sp, .. } => Some(*sp),
            _ => None,
        });
        // Before the vector is written: its element (a copy of a, in register 3) is read
        // after the allocation; x is not yet written. After: x and the element.
        assert_eq!(maps[new], vec![3]);
        assert_eq!(maps[new + 1], vec![2, 3]);
    }

    #[test]
    fn a_back_edge_keeps_what_the_loop_and_the_code_after_it_need() {
        let src = "fn h(v, dead) {\n let s = 0\n for i in 0..10 { s = s + i }\n return [s, v]\n}\n";
        let (p, maps) = maps(src, "h");
        let back = sp_of(&p, |op| match op {
            Op::ForLoop { sp, .. } => Some(*sp),
            _ => None,
        });
        // The poll's map (after the step).
        let live = &maps[back + 1];
        assert!(live.contains(&0), "v is used after the loop: {live:?}");
        assert!(!live.contains(&1), "dead is never used: {live:?}");
        assert!(live.contains(&2), "s: {live:?}");
    }

    #[test]
    fn a_receive_does_not_name_the_register_it_is_about_to_write() {
        let src = "fn r(c, keep) {\n let x = keep\n x = <-c\n return x\n}\n";
        let (p, maps) = maps(src, "r");
        let recv = sp_of(&p, |op| match op {
            Op::Recv { sp, .. } => Some(*sp),
            _ => None,
        });
        // While blocked: c is read; x's old value (keep's) is dead, and keep itself too.
        assert_eq!(maps[recv], vec![0]);
    }

    #[test]
    fn closures_capture_copies_and_take_them_as_registers_after_the_parameters() {
        let src =
            "fn outer(a) {\n let k = a + 1\n let f = fn(x) { return x + k }\n return f(1)\n}\n";
        let reg = Registry::new();
        let prog = compile("t.pb", src, &reg).expect("compiles");
        let lam = prog.protos.iter().find(|p| p.name.starts_with("fn@")).expect("the literal");
        assert_eq!((lam.params, lam.captures), (1, 1));
        let info = reg.get(lam.func).expect("registered");
        assert_eq!(info.live_slots(0, BitmapKind::Tagged).unwrap_or_default(), vec![0, 1]);
    }

    #[test]
    fn top_level_variables_no_function_names_are_registers() {
        let src = "print(c)\nlet a = 1\nfn g() { return b }\nlet b = 2\nlet c = 3\n\
                   let d = 4\nlet d = 5\nlet h = fn() { return a }\nprint(a, b, c, d, h())\n";
        let reg = Registry::new();
        let prog = compile("t.pb", src, &reg).expect("compiles");
        // b: a function names it; c: named before its `let`; d: two `let`s. a and h: locals.
        assert_eq!(prog.globals, 3);
        let main = &prog.protos[prog.main()];
        let sets = main.code.iter().filter(|op| matches!(op, Op::SetGlobal { .. })).count();
        assert_eq!(sets, 4, "{:?}", main.code);
    }

    #[test]
    fn a_for_variable_the_body_never_assigns_is_the_counter() {
        let moves = |src: &str| {
            let reg = Registry::new();
            let prog = compile("t.pb", src, &reg).expect("compiles");
            let f = prog.protos.iter().find(|p| p.name == "f").expect("f");
            let Some(&Op::ForLoop { i, .. }) =
                f.code.iter().find(|op| matches!(op, Op::ForLoop { .. }))
            else {
                panic!("no ForLoop in {:?}", f.code)
            };
            f.code.iter().filter(|op| matches!(op, Op::Move { b, .. } if *b == i)).count()
        };
        assert_eq!(moves("fn f(v) { for i in 0..3 { v[i] = 1 } }\n"), 0);
        assert_eq!(moves("fn f(v) { for i in 0..3 { i = i + 1 } }\n"), 1);
    }
}
