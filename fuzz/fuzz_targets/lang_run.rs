//! Generated Pebble programs, run with the collector's checks on: an input is a recipe for a
//! program from a small grammar (variables, arithmetic on ints, floats and strings, vectors,
//! maps, closures that assign what they capture, bounded loops and recursion, `try`/`catch`,
//! goroutines, channels and `select`, `sort` with a comparator, forced collections), which a
//! child process runs under `gccheckmark=1,gcpoison=1` with a small heap and stack limit.
//!
//! A runtime error, a compile error or a deadlock report is a fine outcome; a crash is not:
//! the child must exit with status 0, 1 or 2 within its time (no signal, no abort, no hang),
//! its standard error must hold no Rust panic and no fatal error but the deadlock's, and a
//! status of 2 must come with a runtime error or the deadlock line.
//!
//! The child is this binary again (with `PEBBLE_FUZZ_CHILD` naming the program), so that what
//! runs is the instrumented build and the program cannot take the fuzzer down with it. The
//! price: libFuzzer sees the coverage of the generator, not of the child's run, so it steers
//! toward varied programs rather than toward new paths in the runtime.
#![no_main]

use std::fmt::Write as _;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// How long one program may run before it counts as a hang: generous, as the child runs
/// instrumented, with checkmark and poison, on a machine that may be busy (the programs take
/// well under a second each).
const LIMIT: Duration = Duration::from_secs(60);

fuzz_target!(
    init: {
        if let Ok(path) = std::env::var("PEBBLE_FUZZ_CHILD") {
            let src = std::fs::read_to_string(&path).expect("the program");
            let mut opts = safepoint_lang::Options::default();
            opts.procs = 2;
            opts.max_heap = 64 << 20;
            opts.max_stack = 256 << 10;
            std::process::exit(safepoint_lang::run("gen.pb", &src, &opts));
        }
    },
    |data: &[u8]| {
        let mut g = Gen { u: Unstructured::new(data), out: String::new(), vars: 0, fns: 0, depth: 0 };
        if g.program().is_err() && g.out.is_empty() {
            return;
        }
        check(&g.out);
    }
);

/// Runs `src` in a child and judges how it ended.
fn check(src: &str) {
    let path = std::env::temp_dir().join(format!("pebble-fuzz-{}.pb", std::process::id()));
    std::fs::write(&path, src).expect("a temporary file");
    let mut child = Command::new(std::env::current_exe().expect("this binary"))
        .env("PEBBLE_FUZZ_CHILD", &path)
        .env("SAFEPOINT_DEBUG", "gccheckmark=1,gcpoison=1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the child starts");
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the program ran for over {LIMIT:?} (a hang):\n{src}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let err = reader.join().expect("the reader");
    let deadlock = err.contains("all goroutines are asleep");
    match status.code() {
        Some(0 | 1) => {}
        Some(2) => assert!(
            err.contains("runtime error") || deadlock,
            "status 2 without a runtime error:\n{err}\n--- program:\n{src}"
        ),
        _ => panic!("the program ended with {status:?}:\n{err}\n--- program:\n{src}"),
    }
    assert!(!err.contains("panicked at"), "a Rust panic:\n{err}\n--- program:\n{src}");
    assert!(
        !err.contains("fatal error") || deadlock,
        "a fatal error:\n{err}\n--- program:\n{src}"
    );
}

/// The program generator: each choice takes a byte or two of the input.
struct Gen<'a> {
    u: Unstructured<'a>,
    out: String,
    /// Variables `v0 .. vars` are declared (every one at the top level, so every block
    /// and closure may name them).
    vars: usize,
    /// Functions `f0 .. fns`, each `fK(n, a)`.
    fns: usize,
    depth: usize,
}

impl Gen<'_> {
    fn program(&mut self) -> Result<()> {
        // Functions first: bounded recursion on `n`.
        for _ in 0..self.u.int_in_range(0..=3)? {
            let k = self.fns;
            let _ = write!(self.out, "fn f{k}(n, a) {{\n  if n <= 0 {{ return a }}\n");
            self.depth = 1;
            let e = self.expr_in(&["n", "a"])?;
            let _ = write!(self.out, "  return f{k}(n - 1, {e})\n}}\n");
            self.fns += 1;
        }
        self.depth = 0;
        for _ in 0..3 {
            self.declare()?;
        }
        for _ in 0..self.u.int_in_range(1..=24)? {
            self.stmt()?;
        }
        Ok(())
    }

    fn declare(&mut self) -> Result<()> {
        let e = self.expr()?;
        let _ = writeln!(self.out, "let v{} = {e}", self.vars);
        self.vars += 1;
        Ok(())
    }

    fn var(&mut self) -> Result<String> {
        Ok(format!("v{}", self.u.choose_index(self.vars.max(1))?))
    }

    fn block(&mut self, max: u32) -> Result<()> {
        self.depth += 1;
        for _ in 0..self.u.int_in_range(0..=max)? {
            self.stmt()?;
        }
        self.depth -= 1;
        Ok(())
    }

    fn stmt(&mut self) -> Result<()> {
        let deep = self.depth >= 3;
        match self.u.int_in_range(0..=14)? {
            0 if self.depth == 0 => self.declare()?,
            1 | 0 => {
                let (v, e) = (self.var()?, self.expr()?);
                let _ = writeln!(self.out, "{v} = {e}");
            }
            2 if !deep => {
                let n = self.u.int_in_range(0..=12)?;
                let _ = writeln!(self.out, "for i{} in 0..{n} {{", self.depth);
                self.block(3)?;
                self.out.push_str("}\n");
            }
            3 if !deep => {
                let c = self.expr()?;
                let _ = writeln!(self.out, "if {c} {{");
                self.block(2)?;
                self.out.push_str("} else {\n");
                self.block(2)?;
                self.out.push_str("}\n");
            }
            4 if !deep => {
                self.out.push_str("try {\n");
                self.block(4)?;
                let _ = writeln!(self.out, "}} catch e{} {{", self.depth);
                if self.u.arbitrary()? {
                    let v = self.var()?;
                    let _ = writeln!(self.out, "{v} = e{}", self.depth);
                }
                self.block(1)?;
                self.out.push_str("}\n");
            }
            5 => self.out.push_str("gc()\n"),
            6 if !deep => {
                // A goroutine that shares the variables (they are globals or boxes).
                self.out.push_str("go fn() {\n");
                self.block(3)?;
                self.out.push_str("}()\n");
            }
            7 => {
                let (v, e) = (self.var()?, self.expr()?);
                let _ = writeln!(self.out, "push({v}, {e})");
            }
            8 => {
                let (v, k, e) = (self.var()?, self.expr()?, self.expr()?);
                let _ = writeln!(self.out, "{v}[{k}] = {e}");
            }
            9 => {
                // A channel operation that never blocks for good.
                let (v, e) = (self.var()?, self.expr()?);
                match self.u.int_in_range(0..=3)? {
                    0 => {
                        let _ = writeln!(self.out, "{v} = chan({})", self.u.int_in_range(0..=3)?);
                    }
                    1 => {
                        let _ = writeln!(self.out, "select {{\ncase {v} <- {e} {{ }}\ndefault {{ }}\n}}");
                    }
                    2 => {
                        let w = self.var()?;
                        let _ = writeln!(
                            self.out,
                            "select {{\ncase x, ok = <-{v} {{ {w} = [x, ok] }}\ndefault {{ }}\n}}"
                        );
                    }
                    _ => {
                        let _ = writeln!(self.out, "close({v})");
                    }
                }
            }
            10 => {
                let v = self.var()?;
                let cmp = ["a < b", "a > b", "len(str(a)) < len(str(b))"][self.u.choose_index(3)?];
                let _ = writeln!(self.out, "sort({v}, fn(a, b) {{ return {cmp} }})");
            }
            11 => {
                // A closure that assigns what it captures, called now and kept.
                let (v, w, e, a) = (self.var()?, self.var()?, self.expr()?, self.expr()?);
                let _ = writeln!(self.out, "{v} = fn(x) {{ {w} = {e}\n return x }}\n{v}({a})");
            }
            12 => {
                let e = self.expr()?;
                let _ = writeln!(self.out, "print({e})");
            }
            13 => {
                let e = self.expr()?;
                let _ = writeln!(self.out, "error({e})");
            }
            _ => {
                let (v, e) = (self.var()?, self.expr()?);
                let _ = writeln!(self.out, "{v} = [{v}, {e}]");
            }
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<String> {
        self.expr_in(&[])
    }

    /// An expression; `names` are locals it may also use.
    fn expr_in(&mut self, names: &[&str]) -> Result<String> {
        self.depth += 1;
        let leaf = self.depth > 4;
        let e = match self.u.int_in_range(0..=16)? {
            0 => format!("{}", self.u.int_in_range(-1000i64..=1000)?),
            1 => ["0.5", "2.5e3", "1e300", "-0.0", "3.25", "1e-300"][self.u.choose_index(6)?].into(),
            2 => ["\"\"", "\"ab\"", "\"hello\"", "\"é\""][self.u.choose_index(4)?].into(),
            3 => ["nil", "true", "false"][self.u.choose_index(3)?].into(),
            4 if !names.is_empty() => names[self.u.choose_index(names.len())?].into(),
            5 | 6 if !leaf => {
                let ops = ["+", "-", "*", "/", "%", "<", "==", "!=", "and", "or", "&", "<<"];
                let op = ops[self.u.choose_index(ops.len())?];
                format!("({} {op} {})", self.expr_in(names)?, self.expr_in(names)?)
            }
            7 if !leaf => format!("[{}, {}]", self.expr_in(names)?, self.expr_in(names)?),
            8 if !leaf => format!("{{k: {}, \"j\": {}}}", self.expr_in(names)?, self.expr_in(names)?),
            9 if !leaf => format!("{}[{}]", self.var()?, self.expr_in(names)?),
            10 if !leaf => format!("len({})", self.expr_in(names)?),
            11 if !leaf => format!("str({})", self.expr_in(names)?),
            12 if !leaf && self.fns > 0 => {
                let k = self.u.choose_index(self.fns)?;
                format!("f{k}({}, {})", self.u.int_in_range(0..=20)?, self.expr_in(names)?)
            }
            13 if !leaf => {
                format!("fn(x) {{ return {} }}({})", self.expr_in(&["x"])?, self.expr_in(names)?)
            }
            14 if !leaf => format!("{}({})", self.var()?, self.expr_in(names)?),
            15 if !leaf => format!("vec({}, {})", self.u.int_in_range(0..=40)?, self.expr_in(names)?),
            _ => self.var()?,
        };
        self.depth -= 1;
        Ok(e)
    }
}
