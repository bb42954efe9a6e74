//! The syntax tree.

#![forbid(unsafe_code)]

use crate::Pos;

/// An expression and where it starts.
#[derive(Clone, Debug)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it starts (for messages and line tables).
    pub pos: Pos,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `&` (integers)
    BitAnd,
    /// `|` (integers)
    BitOr,
    /// `^` (integers)
    BitXor,
    /// `<<` (integers; shifting out a bit that differs from the sign is an integer overflow)
    Shl,
    /// `>>` (integers, arithmetic: a count of 64 or more gives 0 or -1)
    Shr,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// Expression kinds.
#[derive(Clone, Debug)]
pub enum ExprKind {
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// A string literal.
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// `nil`.
    Nil,
    /// A name.
    Name(String),
    /// `a op b`.
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// `a and b` (true) / `a or b` (false): short-circuit.
    Logic(bool, Box<Expr>, Box<Expr>),
    /// `-a`.
    Neg(Box<Expr>),
    /// `not a` / `!a`.
    Not(Box<Expr>),
    /// `f(args)`.
    Call(Box<Expr>, Vec<Expr>),
    /// `a[i]`.
    Index(Box<Expr>, Box<Expr>),
    /// `a.name`: `a["name"]`.
    Field(Box<Expr>, String),
    /// `[a, b, ...]`.
    Vec(Vec<Expr>),
    /// `{k: v, ...}` (a bare name as key is a string).
    Map(Vec<(Expr, Expr)>),
    /// `fn(params) { body }`.
    Lambda(Box<FnDef>),
    /// `<-ch`.
    Recv(Box<Expr>),
}

/// A function literal or declaration.
#[derive(Clone, Debug)]
pub struct FnDef {
    /// Its name (`fn name(...)`), or a made-up one for a literal.
    pub name: String,
    /// Parameter names.
    pub params: Vec<String>,
    /// The body.
    pub body: Vec<Stmt>,
    /// Where it starts.
    pub pos: Pos,
}

/// A statement and where it starts.
#[derive(Clone, Debug)]
pub struct Stmt {
    /// What it is.
    pub kind: StmtKind,
    /// Where it starts.
    pub pos: Pos,
}

/// A select case.
#[derive(Clone, Debug)]
pub enum Case {
    /// `case v = <-ch { }` (with a name), `case v, ok = <-ch { }` (and whether the value
    /// came from a send, not a closed channel) or `case <-ch { }`.
    Recv(Option<String>, Option<String>, Expr, Vec<Stmt>),
    /// `case ch <- v { }`.
    Send(Expr, Expr, Vec<Stmt>),
}

/// Statement kinds.
#[derive(Clone, Debug)]
pub enum StmtKind {
    /// `let name = e`.
    Let(String, Expr),
    /// `target = e` (a name, an index or a field).
    Assign(Expr, Expr),
    /// An expression evaluated for its effect.
    Expr(Expr),
    /// `if c { } else { }`.
    If(Expr, Vec<Stmt>, Vec<Stmt>),
    /// `while c { }`.
    While(Expr, Vec<Stmt>),
    /// `for x in a..b { }`.
    ForRange(String, Expr, Expr, Vec<Stmt>),
    /// `for x in e { }` over a vector's elements, a map's keys or a channel's values.
    ForIn(String, Expr, Vec<Stmt>),
    /// `return e`.
    Return(Option<Expr>),
    /// `break`.
    Break,
    /// `continue`.
    Continue,
    /// `go f(args)`.
    Go(Expr, Vec<Expr>),
    /// `ch <- v`.
    Send(Expr, Expr),
    /// `select { case ... default { } }`.
    Select(Vec<Case>, Option<Vec<Stmt>>),
    /// `fn name(params) { }` at the top level.
    Fn(Box<FnDef>),
    /// `v, ok = <-ch` (targets as `Assign`'s), or `let v, ok = <-ch` (`true`): the value, and
    /// whether it came from a send (false once the channel is closed and drained).
    RecvOk(Expr, Expr, Expr, bool),
    /// `try { } catch e { }`: a runtime error in the first block (or anything it calls)
    /// unwinds to the second, with its message in `e` (if named).
    Try(Vec<Stmt>, Option<String>, Vec<Stmt>),
}
