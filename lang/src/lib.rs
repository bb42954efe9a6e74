//! # Pebble: a small language on safepoint
//!
//! Pebble exists to prove safepoint's embedding API on a real interpreter. It has integers
//! (immediate: no allocation), floats, strings, vectors, maps, closures, recursion,
//! goroutines (`go f(x)`), channels of any value (send, receive, close, `select`, `for v in
//! ch`) and `print`. It is run by the `pebble` binary (`pebble run FILE`; with no
//! command, a REPL on standard input: [`repl`]).
//!
//! Operators are Go's, with Go's precedence: arithmetic, comparisons, `and`/`or`/`not`, and
//! on integers the bitwise `& | ^` and shifts `<< >>` (an integer operation that loses bits is
//! a runtime error). A statement ends at the end of its line, as Go's semicolon insertion has
//! it: a line may break after an operator or a comma, not before. The builtins: `print`,
//! `write` (no separators, no newline), `format(f, args...)` (Go's verbs: [`mod@format`]), `len`,
//! `cap` (a channel's capacity), `push`, `pop`, `vec`, `keys`, `has`, `delete(m, k)` (whether
//! `k` was there), `str`, `int`, `float`,
//! `type`, `sqrt`, `chan`, `close`, `sleep` (milliseconds), `yield`, `exit(status)` (from any
//! goroutine, as Go's `os.Exit`), `error(msg)`, `gc`, `cycles`, `args`; for strings `ord`,
//! `chr`, `find` (a byte offset, or -1), `split`, `join`, `bytes`, `from_bytes`, and
//! `float("2.5")`; `sort(v)` sorts a vector of numbers or of strings in place, `sort(v, less)`
//! by a comparator (a stable merge sort, written in Pebble in the compiler's prelude).
//! `s[i]` is a string's byte `i`; `x[a:b]` (either bound may be left out) is a new string or
//! vector holding that part of `x` (a copy: vectors do not share storage). `memstats()` is a
//! map of the collector's figures (named as Go's `runtime.MemStats` names them);
//! `read_line()` (nil at the end of input), `read_file(path)` and `write_file(path, s)` do I/O
//! in a blocking call, which hands the goroutine's P to others while it waits. `weak(x)` is a
//! weak handle to the object `x` (the collector's, [`safepoint_gc::Pin::weak`]) and
//! `deref(w)` its object, or nil once a collection has found the object unreachable.
//!
//! `weakmap()` is a weak-keyed map (Lua's weak-keyed tables, JavaScript's `WeakMap`): an entry
//! lives only while its key is reachable from elsewhere, and its value is kept alive only by
//! that, so a value that references its own key (or a chain of entries whose values reach
//! other entries' keys) keeps nothing alive that the keys do not. It is used as a map is
//! (`wm[k]`, `wm[k] = v`, `has`, `delete`, `len`, `keys`, `for k in wm`), and shows only the
//! entries whose keys are alive: once a collection has found a key unreachable, its entry is
//! gone from every goroutine's view. Keys are objects compared by identity: vectors, maps,
//! weak-keyed maps, functions, channels, weak handles. Any other key (an int, a bool, nil, a
//! float, and also a string, which Pebble compares by value, so that identity would surprise)
//! is a runtime error in every operation, reads included, as a misuse rather than a miss.
//! Each entry is an ephemeron record of the collector (the key's weak handle and the value:
//! the `safepoint_gc::weak` module's "Ephemerons"), so the collector finds the entries whose
//! keys became reachable through other entries' values in its ephemeron rounds, concurrently.
//! The table is hashed on the key's identity, its word (the heap does not move objects), and
//! a probe compares an entry's key by the word its weak handle names, without reading the key
//! out (which would keep it alive for a cycle in progress); a dead entry's
//! slot is reused by the next insertion that passes it, and a full table is rebuilt from its
//! live entries. `len`, `keys` and iteration visit every slot (O(capacity)). A key gets a
//! weak handle when it is first stored; looking one up makes none.
//!
//! Closures capture variables, not values: a variable that a function literal captures and
//! that anything assigns lives in a box (a one-word heap object) that the declaring frame and
//! every closure share; other captures are copies. A `for` loop's variable is a new variable
//! each iteration, as in Go 1.22. `v, ok = <-ch` (and `let v, ok = <-ch`, and `case v, ok =
//! <-ch` in a `select`) receives with `ok` false once the channel is closed and drained.
//!
//! `try { ... } catch e { ... }` contains errors: a runtime error in the block, or in any
//! function it calls on the same goroutine (stack overflow and running out of memory
//! included), unwinds the frames above the block's and runs the handler with the message in
//! `e` (a string). The liveness analysis treats the handler as a successor of every
//! instruction of the block, so what the handler uses stays in the stack maps of every
//! safepoint the error may come from. `break`, `continue` and `return` leave the block as
//! usual. A goroutine's uncaught error still ends the program, as a Go panic does.
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
//!   live values there. The frames are *sealed* function frames: the collector scans the
//!   registers the current map calls live, each as a tagged value, and clears the others,
//!   so a wrong map (a live register called dead) makes the register read as nil (the
//!   collector clears dead registers to Pebble's nil, [`safepoint_gc::GcBuilder::dead_slot_word`]),
//!   never as an object the collector freed. So the collector scans interpreter
//!   frames precisely, and no value
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
//! A syntax or compile error (an unknown name, a wrong argument count to a known function)
//! prints `file:line:col: message` and exits 1. A
//! runtime error (a type error, division by zero, an index out of range, `error(msg)`,
//! sending on a closed channel, out of memory) prints `file:line:col: runtime error: message`
//! and the goroutine's traceback, taken from its managed stack and the stack maps' line
//! tables, and exits 2. So does a deadlock (every goroutine asleep).
//!
//! ## Limits, plainly
//!
//! A function has at most 255 registers. A top-level variable that no named function
//! names, declared once and named nowhere before its declaration, is a register of the
//! top-level code (up to 64 of them; a REPL's are all globals): it reads and writes faster
//! than a global and behaves the same (its value stays reachable to the end, as a global's
//! does). A channel's Rust side (its buffer and wait queues) lives in a table of the program
//! ([`chans`]), indexed by the integer id its record holds (no raw pointer in the heap), and
//! is removed by a collector cleanup once its record is found unreachable, and its bytes are reported to the pacer meanwhile
//! ([`safepoint_gc::External`]), so making channels starts cycles as allocating does: a
//! million channels made in a loop peak at about 40 MB of resident memory, ten million at
//! about 65 MB (`lang/scripts/chan_churn.pb`). Cleanups run on the collector's cleanup
//! goroutine, so a program that makes channels faster than it runs them holds more.
//!
//! The heap goal's floor is 1 MiB ([`MIN_HEAP`]; `--min-heap-kb`), not the collector's
//! default of 4 MiB: a script's live data is often a few hundred kilobytes, and its peak then
//! follows it.

// Every module but the interpreter forbids `unsafe` itself; the interpreter (`vm`) still
// uses the trusted `RawMutator` path and allows it, until it runs on branded sections.
#![deny(unsafe_code)]

pub mod ast;
pub mod bytecode;
pub mod chans;
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
    /// The heap goal's floor in bytes (0: [`MIN_HEAP`]).
    pub min_heap: usize,
    /// Verify every marking and poison freed memory, as `SAFEPOINT_DEBUG=gccheckmark=1,
    /// gcpoison=1` does (a use of a freed object is then a described fatal error).
    pub check_heap: bool,
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
fn deadlock_report(d: &safepoint_sched::DeadlockReport, prog: &bytecode::Program) -> String {
    let mut out = format!("fatal error: {}", safepoint_sched::DEADLOCK);
    for g in &d.goroutines {
        out.push_str(&format!("\n\ngoroutine {} [{}]:", g.id, g.wait_reason));
        let Some(tb) = &g.traceback else { continue };
        for (i, f) in tb.frames.iter().chain(tb.tail.iter()).enumerate() {
            match f.line {
                Some(l) => {
                    let file = prog.file_of(f.func);
                    out.push_str(&format!("\n  {}\n        {file}:{l}", f.name))
                }
                None => out.push_str(&format!("\n  {}", f.name)),
            }
            if i + 1 == tb.frames.len() && tb.elided > 0 {
                out.push_str(&format!("\n  ...{} frames elided...", tb.elided));
            }
        }
    }
    out
}

/// The heap goal's floor: the collector's default is Go's 4 MiB, which a script whose live data
/// is a few hundred kilobytes fills with garbage before its first cycle (peak RSS twice
/// Lua's on such programs). At 1 MiB such a program runs a few more cycles, each short (its
/// live heap is small), and its peak follows its live data sooner; a large live heap is paced
/// by `gc_percent` as before.
pub const MIN_HEAP: usize = 1 << 20;

/// The runtime and heap a program runs on; a message and exit status 2 if they cannot start.
fn start(opts: &Options, reg: &Arc<Registry>) -> Result<(Runtime, Gc), i32> {
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
    let rt = b.build().map_err(|e| {
        eprintln!("safepoint: cannot start the runtime: {e}");
        2
    })?;
    let floor = if opts.min_heap > 0 { opts.min_heap } else { MIN_HEAP };
    // A register a wrong stack map called dead is cleared by the collector: to nil, so the
    // program sees a nil there (0 would read as the integer 0).
    let mut b = Gc::builder().tag_rule(value::RULE).dead_slot_word(value::NIL).min_heap(floor);
    if opts.check_heap {
        b = b.checkmark(true).poison(true);
    }
    if opts.max_heap > 0 {
        b = b.hard_limit(opts.max_heap);
    }
    let gc = b.build(&rt).map_err(|e| {
        eprintln!("safepoint: cannot start the collector: {e}");
        2
    })?;
    Ok((rt, gc))
}

/// Globals a REPL session may declare: its globals array has this many words from the start,
/// so that goroutines of earlier chunks and later chunks share it without a copy.
pub const REPL_GLOBALS: usize = 4096;

/// Whether `src` has no bracket left open (outside strings and comments): a REPL chunk that
/// is complete.
fn complete(src: &str) -> bool {
    let mut depth = 0i32;
    let mut cs = src.chars().peekable();
    while let Some(c) = cs.next() {
        match c {
            '"' => {
                while let Some(c) = cs.next() {
                    match c {
                        '\\' => {
                            cs.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '/' if cs.peek() == Some(&'/') => {
                for c in cs.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    depth <= 0
}

/// The read-eval-print loop, on standard input: each chunk (a line, or the lines up to the
/// one that closes every bracket) is compiled and run as it comes, on one runtime and heap;
/// functions, globals and goroutines of earlier chunks stay. A chunk that is one expression
/// prints its value (unless nil). A compile error or a runtime error of the chunk's top-level
/// code is printed and the session goes on; a runtime error in a goroutine still ends the
/// process, as in a program. The prompt is printed only when standard input is a terminal.
/// Returns 0 at the end of input. [`repl_lines`] is the same loop over lines given to it
/// (whose example runs; this one would wait for standard input).
///
/// ```no_run
/// let opts = safepoint_lang::Options::default();
/// std::process::exit(safepoint_lang::repl(&opts)); // what `pebble` with no command does
/// ```
pub fn repl(opts: &Options) -> i32 {
    use std::io::{BufRead, IsTerminal};
    // Standard input is locked a line at a time: a chunk's program may read it too.
    let lines = std::iter::from_fn(|| {
        let mut line = String::new();
        match std::io::stdin().lock().read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        }
    });
    repl_lines(opts, lines, std::io::stdin().is_terminal())
}

/// The read-eval-print loop of [`repl`] over `lines` (each with or without its `\n`), asked
/// for one at a time, after the prompt when `prompt` is set. Returns 0 when `lines` ends, as
/// `repl` does at the end of input.
///
/// ```
/// let opts = safepoint_lang::Options::default();
/// let chunks = ["let x = 6\n", "fn times(a) {\n", "  return a * x\n", "}\n", "times(7)\n"];
/// // Prints 42: the last chunk is an expression, and sees the earlier chunks' names.
/// assert_eq!(safepoint_lang::repl_lines(&opts, chunks.map(String::from), false), 0);
/// ```
pub fn repl_lines(opts: &Options, lines: impl IntoIterator<Item = String>, prompt: bool) -> i32 {
    use std::io::Write;
    quiet_stack_overflow_panics();
    let reg = Arc::new(Registry::new());
    let mut session = match compiler::Session::new(&reg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}", e.render("<prelude>"));
            return 1;
        }
    };
    let (rt, gc) = match start(opts, &reg) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut lines = lines.into_iter();
    let mut sh: Option<Arc<vm::Shared>> = None;
    let mut chunk = String::new();
    loop {
        if prompt {
            print!("{}", if chunk.is_empty() { "> " } else { ". " });
            let _ = std::io::stdout().flush();
        }
        let Some(line) = lines.next() else { break };
        chunk.push_str(&line);
        if !line.ends_with('\n') {
            chunk.push('\n');
        }
        if !complete(&chunk) {
            continue;
        }
        let src = std::mem::take(&mut chunk);
        if src.trim().is_empty() {
            continue;
        }
        let prog = match session.compile("<stdin>", &src, &reg, true) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{}", e.render("<stdin>"));
                continue;
            }
        };
        if prog.globals > REPL_GLOBALS {
            eprintln!("the REPL holds at most {REPL_GLOBALS} globals");
            break;
        }
        let next = match &sh {
            Some(s) => Arc::new(s.next(prog)),
            None => match vm::Shared::new(prog, gc.clone(), reg.clone(), opts.args.clone()) {
                Ok(mut s) => {
                    s.globals_cap = REPL_GLOBALS;
                    Arc::new(s)
                }
                Err(e) => {
                    eprintln!("safepoint: {e}");
                    return 2;
                }
            },
        };
        let run = next.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on_or_deadlock(move || {
                if let Err(m) = vm::init_heap(&run) {
                    return Err((m, String::new()));
                }
                vm::Thread::run(run, vm::Entry::Main).map_err(|(e, tb)| (e.msg, tb))
            })
        }));
        next.flush();
        match r {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err((msg, tb)))) => eprintln!("{msg}\n\n{tb}"),
            Ok(Err(deadlock)) => eprintln!("{}", deadlock_report(&deadlock, &next.prog)),
            Err(_) => eprintln!("fatal error: the chunk's goroutine panicked"),
        }
        sh = Some(next);
    }
    if let Some(s) = &sh {
        s.flush();
    }
    // The execution trace, if one was asked for, is written now: the runtime is not dropped.
    rt.stop_trace();
    // As after a program: goroutines still running are left to the process's exit.
    std::mem::forget(rt);
    0
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
    let (rt, gc) = match start(opts, &reg) {
        Ok(x) => x,
        Err(code) => return code,
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
            eprintln!("{}", deadlock_report(&deadlock, &sh.prog));
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
    // The execution trace (SAFEPOINT_TRACE=FILE), if on, is written before the runtime is left.
    rt.stop_trace();
    // Goroutines may still be running or blocked: the process ends without waiting for them.
    std::mem::forget(rt);
    code
}

#[cfg(test)]
mod tests {
    /// A REPL chunk ends where every bracket outside strings and comments is closed.
    #[test]
    fn a_chunk_is_complete_when_its_brackets_close() {
        for (src, want) in [
            ("print(1)\n", true),
            ("fn f(a) {\n", false),
            ("fn f(a) {\n  return a\n}\n", true),
            ("let s = \"{(\"\n", true),
            ("let s = \"\\\"{\"\n", true),
            ("let v = [1, // ]\n", false),
            ("let v = [1, // ]\n2]\n", true),
            ("}\n", true),
        ] {
            assert_eq!(super::complete(src), want, "{src:?}");
        }
    }

    /// A deliberately wrong stack map: `victim`'s register 0 (its vector `v`) left out of
    /// every map, as a compiler bug would leave it. The collection in `gc()` frees the vector
    /// and clears the register, which then reads nil (Pebble's nil, not the word 0, which
    /// is the integer 0), never the freed vector, under checkmark and poison. With the right
    /// maps the vector survives.
    #[test]
    fn a_register_a_wrong_map_calls_dead_reads_nil() {
        let src = "fn victim() {\n  let v = [1, 2, 3]\n  gc()\n  return v\n}\nlet r = victim()\n";
        let opts = super::Options { procs: 1, check_heap: true, ..Default::default() };
        let right = format!("{src}if r == nil {{ error(\"lost\") }}\n");
        assert_eq!(super::run("right.pb", &right, &opts), 0, "the right maps keep the vector");
        crate::compiler::wrong_maps::drop_register(Some(("victim", 0)));
        let wrong = format!("{src}if r != nil {{ error(format(\"read %v\", r)) }}\n");
        let code = super::run("wrong.pb", &wrong, &opts);
        crate::compiler::wrong_maps::drop_register(None);
        assert_eq!(code, 0, "the register the wrong map called dead reads nil");
    }
}
