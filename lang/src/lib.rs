//! # Pebble: a small language on safepoint
//!
//! Pebble exists to prove safepoint's embedding API on a real interpreter. It has integers
//! (immediate: no allocation), floats, strings, vectors, maps, closures, recursion,
//! goroutines (`go f(x)`), channels of any value (send, receive, close, `select`, `for v in
//! ch`) and `print`. It is run by the `pebble` binary (`pebble run FILE`).
//!
//! Operators are Go's, with Go's precedence: arithmetic, comparisons, `and`/`or`/`not`, and
//! on integers the bitwise `& | ^` and shifts `<< >>` (an integer operation that loses bits is
//! a runtime error). A statement ends at the end of its line, as Go's semicolon insertion has
//! it: a line may break after an operator or a comma, not before. The builtins: `print`,
//! `write` (no separators, no newline), `format(f, args...)` (Go's verbs: [`mod@format`]), `len`,
//! `cap` (a channel's capacity), `push`, `pop`, `vec`, `keys`, `has`, `str`, `int`, `float`,
//! `type`, `sqrt`, `chan`, `close`, `sleep` (milliseconds), `yield`, `exit(status)` (from any
//! goroutine, as Go's `os.Exit`), `error(msg)`, `gc`, `cycles`, `args`; for strings `ord`,
//! `chr`, `find` (a byte offset, or -1), `split`, `join`, `bytes`, `from_bytes`, and
//! `float("2.5")`; `sort(v)` sorts a vector of numbers or of strings in place (no comparator
//! yet). `s[i]` is a string's byte `i`; `x[a:b]` (either bound may be left out) is a new
//! string or vector holding that part of `x` (a copy: vectors do not share storage).
//!
//! ```text
//! fn fib(n) { if n < 2 { return n } return fib(n - 1) + fib(n - 2) }
//! let ch = chan()
//! go fn() { ch <- fib(20) }()
//! print("fib(20) =", <-ch)
//! ```
//!
//! ## How it sits on the runtime
//!
//! * **Goroutines are safepoint goroutines.** `go f(x)` is a [`safepoint_sched::go`]; the
//!   scheduler multiplexes them on its Ps, preempts them at loop back-edges and calls, and
//!   parks them on channel operations ([`safepoint_sched::Chan`], [`safepoint_sched::Select`]).
//! * **Frames are managed-stack frames.** A Pebble call pushes a frame of the callee's
//!   registers on the goroutine's managed stack; the compiler ([`compiler`]) registers each
//!   function with the stack-map registry, and its liveness analysis gives every safepoint
//!   (calls, allocations, back-edges, channel operations) exactly the registers that hold
//!   live values there. So the collector scans interpreter frames precisely, and no value
//!   is held anywhere it cannot see: registers (slots), object fields, the constants and
//!   globals arrays (rooted in [`safepoint_gc::Global`]s), and values in flight on a channel
//!   (each rooted in a `Global` while in flight).
//! * **The heap is safepoint's.** Values are words in the collector's tagged encoding
//!   ([`value`]); objects are allocated from the goroutine's P cache through the trusted
//!   [`safepoint_gc::RawMutator`] path, fields are written through its write barrier, and the
//!   interpreter runs in pinned sections between safepoints (the private `vm` module).
//!
//! ## Errors
//!
//! A syntax or compile error (an unknown name, a wrong argument count to a known function,
//! an assignment to a captured variable) prints `file:line:col: message` and exits 1. A
//! runtime error (a type error, division by zero, an index out of range, `error(msg)`,
//! sending on a closed channel, out of memory) prints `file:line:col: runtime error: message`
//! and the goroutine's traceback, taken from its managed stack and the stack maps' line
//! tables, and exits 2. So does a deadlock (every goroutine asleep).
//!
//! ## Limits, plainly
//!
//! Captured variables are copies (assigning to one inside the closure is a compile error).
//! A function has at most 255 registers. A channel's Rust side is never freed: the heap has
//! no finalizers yet, so a program that makes channels without bound leaks about a hundred
//! bytes per channel.

pub mod ast;
pub mod bytecode;
pub mod compiler;
pub mod error;
pub mod format;
pub mod lexer;
pub mod parser;
pub mod value;
mod vm;

use std::sync::Arc;

use safepoint_gc::Gc;
use safepoint_sched::Runtime;
use safepoint_stackmap::Registry;

pub use error::Error;

/// A position in the source: line and column, from 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column (in characters), from 1.
    pub col: u32,
}

/// How to run a program.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Options {
    /// Ps (0: `SAFEPOINT_MAXPROCS` if set, else one per CPU).
    pub procs: usize,
    /// Print the collector's statistics to standard error at the end.
    pub stats: bool,
    /// The program's arguments (`args()` in the program).
    pub args: Vec<String>,
    /// The heap's hard limit in bytes (0: none): past it an allocation is a runtime error.
    pub max_heap: usize,
    /// The managed stack's limit per goroutine in bytes (0: the runtime's default, 1 GiB).
    pub max_stack: usize,
}

/// Runs a goroutine's entry and turns a runtime error into the process's end, as a Go panic
/// does: the message and traceback on standard error, exit status 2.
pub(crate) fn run_goroutine(sh: Arc<vm::Shared>, entry: vm::Entry) {
    if let Err((e, tb)) = vm::Thread::run(sh.clone(), entry) {
        sh.flush();
        eprintln!("{}\n\n{tb}", e.msg);
        std::process::exit(2);
    }
}

/// A managed stack past its limit panics in the push that needed room; the interpreter
/// catches that panic and reports a stack overflow with the program's traceback. The default
/// panic hook would first print the Rust panic (and a Rust backtrace): keep it for every other
/// panic, which is a bug.
fn quiet_stack_overflow_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.contains("managed stack exceeds") {
                default(info);
            }
        }));
    });
}

/// A deadlock as Go prints one: the fatal line, then each of the program's goroutines (the
/// collector's own are left out) with what it waits on and its traceback, a frame a line pair
/// as in a runtime error's.
fn deadlock_report(d: &safepoint_sched::DeadlockReport, file: &str) -> String {
    let mut out = format!("fatal error: {}", safepoint_sched::DEADLOCK);
    for g in &d.goroutines {
        out.push_str(&format!("\n\ngoroutine {} [{}]:", g.id, g.wait_reason));
        let Some(tb) = &g.traceback else { continue };
        for (i, f) in tb.frames.iter().chain(tb.tail.iter()).enumerate() {
            match f.line {
                Some(l) => out.push_str(&format!("\n  {}\n        {file}:{l}", f.name)),
                None => out.push_str(&format!("\n  {}", f.name)),
            }
            if i + 1 == tb.frames.len() && tb.elided > 0 {
                out.push_str(&format!("\n  ...{} frames elided...", tb.elided));
            }
        }
    }
    out
}

/// Compiles and runs `src` (named `file` in messages). Returns the process exit status: 0,
/// 1 for a compile error, 2 for a runtime error or a deadlock (the message is printed on
/// standard error). Goroutines still running when the top-level code ends are abandoned, as
/// in Go; the runtime is left to the process's exit.
///
/// ```
/// let mut opts = safepoint_lang::Options::default();
/// opts.procs = 2;
/// let src = "let ch = chan()\ngo fn() { ch <- 6 * 7 }()\nprint(<-ch)";
/// assert_eq!(safepoint_lang::run("answer.pb", src, &opts), 0); // prints 42
/// assert_eq!(safepoint_lang::run("bad.pb", "let = 1", &opts), 1); // a compile error
/// ```
pub fn run(file: &str, src: &str, opts: &Options) -> i32 {
    quiet_stack_overflow_panics();
    let reg = Arc::new(Registry::new());
    let prog = match compiler::compile(file, src, &reg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}", e.render(file));
            return 1;
        }
    };
    let procs = if opts.procs == 0 {
        safepoint_sched::env::maxprocs()
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
    } else {
        opts.procs
    };
    let mut b = Runtime::builder().procs(procs).registry(reg.clone());
    if opts.max_stack > 0 {
        b = b.managed_stack_limit(opts.max_stack);
    }
    let rt = match b.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("safepoint: cannot start the runtime: {e}");
            return 2;
        }
    };
    let mut b = Gc::builder().tag_rule(value::RULE);
    if opts.max_heap > 0 {
        b = b.hard_limit(opts.max_heap);
    }
    let gc = match b.build(&rt) {
        Ok(gc) => gc,
        Err(e) => {
            eprintln!("safepoint: cannot start the collector: {e}");
            return 2;
        }
    };
    let sh = match vm::Shared::new(prog, gc.clone(), reg, opts.args.clone()) {
        Ok(sh) => Arc::new(sh),
        Err(e) => {
            eprintln!("safepoint: {e}");
            return 2;
        }
    };
    let sh2 = sh.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on_or_deadlock(move || {
            if let Err(m) = vm::init_heap(&sh2) {
                return Err((m, String::new()));
            }
            vm::Thread::run(sh2, vm::Entry::Main).map_err(|(e, tb)| (e.msg, tb))
        })
    }));
    sh.flush();
    let code = match r {
        Ok(Ok(Ok(()))) => 0,
        Ok(Ok(Err((msg, tb)))) => {
            eprintln!("{msg}\n\n{tb}");
            2
        }
        Ok(Err(deadlock)) => {
            eprintln!("{}", deadlock_report(&deadlock, &sh.prog.file));
            2
        }
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a goroutine panicked".into());
            eprintln!("fatal error: {msg}");
            2
        }
    };
    if opts.stats {
        let s = gc.stats();
        eprintln!(
            "gc: {} cycles, {} objects allocated, heap in use {} KiB, p99 pause {:?}, max pause {:?}",
            s.cycles,
            s.heap.total_allocs,
            s.heap.in_use_bytes / 1024,
            s.pause_percentile(99.0),
            s.pause_percentile(100.0)
        );
    }
    // Goroutines may still be running or blocked: the process ends without waiting for them.
    std::mem::forget(rt);
    code
}
