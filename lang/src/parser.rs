//! The parser: tokens to a syntax tree, by recursive descent.

#![forbid(unsafe_code)]

use crate::Pos;
use crate::ast::*;
use crate::error::Error;
use crate::lexer::{Tok, Token};

/// Parses a whole program.
///
/// # Errors
/// The first syntax error, with its position.
///
/// ```
/// use safepoint_lang::{ast::StmtKind, lexer::lex, parser::parse};
/// let stmts = parse(&lex("let x = 1\nprint(x)").unwrap()).unwrap();
/// assert_eq!(stmts.len(), 2);
/// assert!(matches!(&stmts[0].kind, StmtKind::Let(name, _) if name == "x"));
/// let e = parse(&lex("let = 1").unwrap()).unwrap_err();
/// assert_eq!((e.pos.line, e.pos.col), (1, 5));
/// ```
pub fn parse(tokens: &[Token]) -> Result<Vec<Stmt>, Error> {
    let mut p = Parser { t: tokens, i: 0, lambdas: 0 };
    let mut out = Vec::new();
    while !p.at_eof() {
        out.push(p.stmt(true)?);
    }
    Ok(out)
}

struct Parser<'a> {
    t: &'a [Token],
    i: usize,
    lambdas: usize,
}

type R<T> = Result<T, Error>;

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.t[self.i].tok
    }
    fn pos(&self) -> Pos {
        self.t[self.i].pos
    }
    fn at_eof(&self) -> bool {
        matches!(self.peek(), Tok::Eof)
    }
    fn is(&self, s: &str) -> bool {
        matches!(self.peek(), Tok::Sym(x) if *x == s)
    }
    fn eat(&mut self, s: &str) -> bool {
        if self.is(s) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, s: &str) -> R<()> {
        if self.eat(s) { Ok(()) } else { Err(self.unexpected(&format!("'{s}'"))) }
    }
    fn unexpected(&self, wanted: &str) -> Error {
        let found = match self.peek() {
            Tok::Int(v) => format!("{v}"),
            Tok::Float(v) => format!("{v}"),
            Tok::Str(s) => format!("{s:?}"),
            Tok::Name(n) => format!("'{n}'"),
            Tok::Sym(s) => format!("'{s}'"),
            Tok::Eof => "end of file".into(),
        };
        Error::at(self.pos(), format!("expected {wanted}, found {found}"))
    }
    fn name(&mut self) -> R<String> {
        match self.peek().clone() {
            Tok::Name(n) => {
                self.i += 1;
                Ok(n)
            }
            _ => Err(self.unexpected("a name")),
        }
    }
    /// Whether the current token starts on the same line as the previous one ends.
    ///
    /// Statement ends follow Go's rule: a line break after a token that can end a statement (a
    /// name, a literal, `)`, `]`, `}`) ends it. So whatever continues an expression or a
    /// statement after such a token must stand on its line: a call's `(`, an index's `[`, a
    /// field's `.`, a binary operator, an assignment's `=` and a send's `<-`. A line break
    /// after an operator, `(`, `[` or `,` does not end anything: a long expression breaks
    /// after its operators. (`print("x")` then `<-c` on the next line is two statements, not
    /// the send `print("x") <- c`.)
    fn same_line(&self) -> bool {
        self.i > 0 && self.t[self.i - 1].pos.line == self.t[self.i].pos.line
    }

    /// Whether the current token is the symbol `s`, on the line of the token before it.
    fn is_here(&self, s: &str) -> bool {
        self.is(s) && self.same_line()
    }

    fn block(&mut self) -> R<Vec<Stmt>> {
        self.expect("{")?;
        let mut out = Vec::new();
        while !self.eat("}") {
            if self.at_eof() {
                return Err(self.unexpected("'}'"));
            }
            out.push(self.stmt(false)?);
        }
        Ok(out)
    }

    fn stmt(&mut self, top: bool) -> R<Stmt> {
        let pos = self.pos();
        while self.eat(";") {}
        let kind = if self.eat("let") {
            let n = self.name()?;
            if self.is_here(",") {
                // `let v, ok = <-ch`
                self.i += 1;
                let npos = self.pos();
                let ok = self.name()?;
                self.expect("=")?;
                let rpos = self.pos();
                self.expect("<-").map_err(|_| {
                    Error::at(rpos, "a `let` of two names takes a receive: `let v, ok = <-ch`")
                })?;
                let ch = self.expr()?;
                let name = |n: String, pos| Expr { kind: ExprKind::Name(n), pos };
                StmtKind::RecvOk(name(n, pos), name(ok, npos), ch, true)
            } else {
                self.expect("=")?;
                StmtKind::Let(n, self.expr()?)
            }
        } else if self.is("fn")
            && matches!(self.t.get(self.i + 1).map(|t| &t.tok), Some(Tok::Name(_)))
        {
            if !top {
                return Err(Error::at(
                    pos,
                    "named functions are declared at the top level (use `let f = fn(...) { }` here)",
                ));
            }
            self.i += 1;
            let name = self.name()?;
            StmtKind::Fn(Box::new(self.fn_rest(name, pos)?))
        } else if self.eat("if") {
            return self.if_rest(pos);
        } else if self.eat("while") {
            let c = self.expr()?;
            StmtKind::While(c, self.block()?)
        } else if self.eat("for") {
            let n = self.name()?;
            self.expect("in")?;
            let a = self.expr()?;
            if self.eat("..") {
                let b = self.expr()?;
                StmtKind::ForRange(n, a, b, self.block()?)
            } else {
                StmtKind::ForIn(n, a, self.block()?)
            }
        } else if self.eat("return") {
            let value = if self.is("}") || self.at_eof() || !self.same_line() {
                None
            } else {
                Some(self.expr()?)
            };
            StmtKind::Return(value)
        } else if self.eat("break") {
            StmtKind::Break
        } else if self.eat("continue") {
            StmtKind::Continue
        } else if self.eat("go") {
            let e = self.expr()?;
            match e.kind {
                ExprKind::Call(f, args) => StmtKind::Go(*f, args),
                _ => return Err(Error::at(e.pos, "`go` needs a call")),
            }
        } else if self.eat("select") {
            self.select_rest()?
        } else if self.eat("try") {
            let body = self.block()?;
            self.expect("catch")?;
            let name = if self.is("{") { None } else { Some(self.name()?) };
            StmtKind::Try(body, name, self.block()?)
        } else {
            let e = self.expr()?;
            if self.is_here(",") {
                // `v, ok = <-ch`
                self.i += 1;
                let ok = self.expr()?;
                self.expect("=")?;
                let rpos = self.pos();
                self.expect("<-").map_err(|_| {
                    Error::at(rpos, "an assignment to two targets takes a receive: `v, ok = <-ch`")
                })?;
                let ch = self.expr()?;
                for t in [&e, &ok] {
                    if !matches!(
                        t.kind,
                        ExprKind::Name(_) | ExprKind::Index(..) | ExprKind::Field(..)
                    ) {
                        return Err(Error::at(t.pos, "cannot assign to this"));
                    }
                }
                StmtKind::RecvOk(e, ok, ch, false)
            } else if self.is_here("=") {
                self.i += 1;
                if !matches!(e.kind, ExprKind::Name(_) | ExprKind::Index(..) | ExprKind::Field(..))
                {
                    return Err(Error::at(e.pos, "cannot assign to this"));
                }
                StmtKind::Assign(e, self.expr()?)
            } else if self.is_here("<-") {
                self.i += 1;
                StmtKind::Send(e, self.expr()?)
            } else {
                StmtKind::Expr(e)
            }
        };
        while self.eat(";") {}
        Ok(Stmt { kind, pos })
    }

    fn if_rest(&mut self, pos: Pos) -> R<Stmt> {
        let c = self.expr()?;
        let then = self.block()?;
        let els = if self.eat("else") {
            if self.is("if") {
                let p = self.pos();
                self.i += 1;
                vec![self.if_rest(p)?]
            } else {
                self.block()?
            }
        } else {
            Vec::new()
        };
        Ok(Stmt { kind: StmtKind::If(c, then, els), pos })
    }

    fn select_rest(&mut self) -> R<StmtKind> {
        self.expect("{")?;
        let (mut cases, mut default) = (Vec::new(), None);
        while !self.eat("}") {
            if self.eat("default") {
                if default.is_some() {
                    return Err(Error::at(self.pos(), "select has two defaults"));
                }
                default = Some(self.block()?);
                continue;
            }
            self.expect("case")?;
            let tok = |k: usize| self.t.get(self.i + k).map(|t| &t.tok);
            let named = matches!(self.peek(), Tok::Name(_))
                && (matches!(tok(1), Some(Tok::Sym("=")))
                    || matches!(
                        (tok(1), tok(2), tok(3)),
                        (Some(Tok::Sym(",")), Some(Tok::Name(_)), Some(Tok::Sym("=")))
                    ));
            if self.eat("<-") {
                let ch = self.expr()?;
                cases.push(Case::Recv(None, None, ch, self.block()?));
            } else if named {
                let n = self.name()?;
                let ok = if self.eat(",") { Some(self.name()?) } else { None };
                self.expect("=")?;
                self.expect("<-")?;
                let ch = self.expr()?;
                cases.push(Case::Recv(Some(n), ok, ch, self.block()?));
            } else {
                let ch = self.postfix()?;
                self.expect("<-")?;
                let v = self.expr()?;
                cases.push(Case::Send(ch, v, self.block()?));
            }
        }
        Ok(StmtKind::Select(cases, default))
    }

    fn fn_rest(&mut self, name: String, pos: Pos) -> R<FnDef> {
        self.expect("(")?;
        let mut params = Vec::new();
        while !self.eat(")") {
            let p = self.pos();
            let n = self.name()?;
            if params.contains(&n) {
                return Err(Error::at(p, format!("parameter {n} given twice")));
            }
            params.push(n);
            if !self.is(")") {
                self.expect(",")?;
            }
        }
        let body = self.block()?;
        Ok(FnDef { name, params, body, pos })
    }

    fn expr(&mut self) -> R<Expr> {
        self.or()
    }

    fn or(&mut self) -> R<Expr> {
        let mut a = self.and()?;
        while self.is_here("or") {
            let pos = self.pos();
            self.i += 1;
            let b = self.and()?;
            a = Expr { kind: ExprKind::Logic(false, Box::new(a), Box::new(b)), pos };
        }
        Ok(a)
    }

    fn and(&mut self) -> R<Expr> {
        let mut a = self.cmp()?;
        while self.is_here("and") {
            let pos = self.pos();
            self.i += 1;
            let b = self.cmp()?;
            a = Expr { kind: ExprKind::Logic(true, Box::new(a), Box::new(b)), pos };
        }
        Ok(a)
    }

    fn cmp(&mut self) -> R<Expr> {
        let a = self.add()?;
        if !self.same_line() {
            return Ok(a);
        }
        let op = match self.peek() {
            Tok::Sym("==") => BinOp::Eq,
            Tok::Sym("!=") => BinOp::Ne,
            Tok::Sym("<") => BinOp::Lt,
            Tok::Sym("<=") => BinOp::Le,
            Tok::Sym(">") => BinOp::Gt,
            Tok::Sym(">=") => BinOp::Ge,
            _ => return Ok(a),
        };
        let pos = self.pos();
        self.i += 1;
        let b = self.add()?;
        Ok(Expr { kind: ExprKind::Bin(op, Box::new(a), Box::new(b)), pos })
    }

    fn add(&mut self) -> R<Expr> {
        let mut a = self.mul()?;
        loop {
            if !self.same_line() {
                return Ok(a);
            }
            let op = match self.peek() {
                Tok::Sym("+") => BinOp::Add,
                Tok::Sym("-") => BinOp::Sub,
                Tok::Sym("|") => BinOp::BitOr,
                Tok::Sym("^") => BinOp::BitXor,
                _ => return Ok(a),
            };
            let pos = self.pos();
            self.i += 1;
            let b = self.mul()?;
            a = Expr { kind: ExprKind::Bin(op, Box::new(a), Box::new(b)), pos };
        }
    }

    fn mul(&mut self) -> R<Expr> {
        let mut a = self.unary()?;
        loop {
            if !self.same_line() {
                return Ok(a);
            }
            let op = match self.peek() {
                Tok::Sym("*") => BinOp::Mul,
                Tok::Sym("/") => BinOp::Div,
                Tok::Sym("%") => BinOp::Mod,
                Tok::Sym("&") => BinOp::BitAnd,
                Tok::Sym("<<") => BinOp::Shl,
                Tok::Sym(">>") => BinOp::Shr,
                _ => return Ok(a),
            };
            let pos = self.pos();
            self.i += 1;
            let b = self.unary()?;
            a = Expr { kind: ExprKind::Bin(op, Box::new(a), Box::new(b)), pos };
        }
    }

    fn unary(&mut self) -> R<Expr> {
        let pos = self.pos();
        if self.eat("-") {
            let e = self.unary()?;
            return Ok(match e.kind {
                ExprKind::Int(v) => Expr { kind: ExprKind::Int(-v), pos },
                ExprKind::Float(v) => Expr { kind: ExprKind::Float(-v), pos },
                _ => Expr { kind: ExprKind::Neg(Box::new(e)), pos },
            });
        }
        if self.eat("not") || self.eat("!") {
            let e = self.unary()?;
            return Ok(Expr { kind: ExprKind::Not(Box::new(e)), pos });
        }
        if self.eat("<-") {
            let e = self.unary()?;
            return Ok(Expr { kind: ExprKind::Recv(Box::new(e)), pos });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> R<Expr> {
        let mut e = self.primary()?;
        loop {
            let pos = self.pos();
            if self.is("(") && self.same_line() {
                self.i += 1;
                let args = self.list(")")?;
                e = Expr { kind: ExprKind::Call(Box::new(e), args), pos };
            } else if self.is("[") && self.same_line() {
                self.i += 1;
                // `x[i]`, or a slice `x[a:b]` with either bound left out.
                let lo = if self.is(":") { None } else { Some(self.expr()?) };
                if self.eat(":") {
                    let hi = if self.is("]") { None } else { Some(self.expr()?) };
                    self.expect("]")?;
                    let nil = || Expr { kind: ExprKind::Nil, pos };
                    let f = Expr { kind: ExprKind::Name("$slice".into()), pos };
                    let args = vec![e, lo.unwrap_or_else(nil), hi.unwrap_or_else(nil)];
                    e = Expr { kind: ExprKind::Call(Box::new(f), args), pos };
                    continue;
                }
                self.expect("]")?;
                let i = lo.expect("parsed above");
                e = Expr { kind: ExprKind::Index(Box::new(e), Box::new(i)), pos };
            } else if self.is_here(".") {
                self.i += 1;
                let n = self.name()?;
                e = Expr { kind: ExprKind::Field(Box::new(e), n), pos };
            } else {
                return Ok(e);
            }
        }
    }

    fn list(&mut self, end: &str) -> R<Vec<Expr>> {
        let mut out = Vec::new();
        while !self.eat(end) {
            out.push(self.expr()?);
            if !self.is(end) {
                self.expect(",")?;
            }
        }
        Ok(out)
    }

    fn primary(&mut self) -> R<Expr> {
        let pos = self.pos();
        let kind = match self.peek().clone() {
            Tok::Int(v) => ExprKind::Int(v),
            Tok::Float(v) => ExprKind::Float(v),
            Tok::Str(s) => ExprKind::Str(s),
            Tok::Name(n) => ExprKind::Name(n),
            Tok::Sym("true") => ExprKind::Bool(true),
            Tok::Sym("false") => ExprKind::Bool(false),
            Tok::Sym("nil") => ExprKind::Nil,
            Tok::Sym("(") => {
                self.i += 1;
                let e = self.expr()?;
                self.expect(")")?;
                return Ok(e);
            }
            Tok::Sym("[") => {
                self.i += 1;
                return Ok(Expr { kind: ExprKind::Vec(self.list("]")?), pos });
            }
            Tok::Sym("{") => {
                self.i += 1;
                let mut items = Vec::new();
                while !self.eat("}") {
                    let kpos = self.pos();
                    let k = match self.peek().clone() {
                        Tok::Name(n)
                            if matches!(
                                self.t.get(self.i + 1).map(|t| &t.tok),
                                Some(Tok::Sym(":"))
                            ) =>
                        {
                            self.i += 1;
                            Expr { kind: ExprKind::Str(n), pos: kpos }
                        }
                        _ => self.expr()?,
                    };
                    self.expect(":")?;
                    items.push((k, self.expr()?));
                    if !self.is("}") {
                        self.expect(",")?;
                    }
                }
                return Ok(Expr { kind: ExprKind::Map(items), pos });
            }
            Tok::Sym("fn") => {
                self.i += 1;
                self.lambdas += 1;
                let name = format!("fn@{}:{}", pos.line, pos.col);
                return Ok(Expr {
                    kind: ExprKind::Lambda(Box::new(self.fn_rest(name, pos)?)),
                    pos,
                });
            }
            _ => return Err(self.unexpected("an expression")),
        };
        self.i += 1;
        Ok(Expr { kind, pos })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::lex;

    fn parse_src(src: &str) -> Vec<Stmt> {
        parse(&lex(src).unwrap()).unwrap_or_else(|e| panic!("{src:?}: {e:?}"))
    }

    /// The statement's shape, for comparing a statement parsed alone and after another.
    fn shape(s: &Stmt) -> String {
        format!("{:?}", s.kind).chars().filter(|c| !c.is_ascii_digit()).collect()
    }

    /// Every statement that can end with an expression, each followed on the next line by
    /// every statement that can start with a token that also continues an expression (`<-`,
    /// `-`, `(`, `[`, `.` cannot start one): each pair is two statements, the same two as
    /// when parsed apart. (`print("x")` then `<-done` used to parse as a send.)
    #[test]
    fn a_line_break_ends_every_statement_before_every_statement() {
        let firsts = [
            "print(\"x\")",
            "<-done",
            "c <- 1",
            "x = 2",
            "let y = x + 1",
            "v[0] = 3",
            "m.k = 4",
            "x",
            "v[1]",
            "m.k",
            "go f(1)",
            "v, ok = <-c",
            "let v, ok = <-c",
            "try { f() } catch e { g(e) }",
            "f()",
            "x == 1",
            "x and y",
        ];
        let seconds =
            ["<-done", "-x", "print(1)", "x = 5", "c <- 6", "let z = 7", "f()", "x", "v, ok = <-c"];
        for a in firsts {
            for b in seconds {
                let both = parse_src(&format!("{a}\n{b}"));
                let (pa, pb) = (parse_src(a), parse_src(b));
                assert_eq!(both.len(), 2, "{a:?} then {b:?}: {both:?}");
                assert_eq!(shape(&both[0]), shape(&pa[0]), "{a:?} then {b:?}");
                assert_eq!(shape(&both[1]), shape(&pb[0]), "{a:?} then {b:?}");
            }
        }
    }

    /// A line break after an operator, `(`, `[`, `,` or `=` continues the statement.
    #[test]
    fn a_line_break_after_an_operator_continues_the_expression() {
        for src in [
            "x = 1 +\n 2",
            "x = f(1,\n 2)",
            "x =\n 3",
            "c <-\n 4",
            "x = a and\n b",
            "x = v[\n 0]",
            "x = a ==\n b",
        ] {
            assert_eq!(parse_src(src).len(), 1, "{src:?}");
        }
    }
}
