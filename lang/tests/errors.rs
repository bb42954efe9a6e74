//! Errors in scripts: compile errors with file:line:col, runtime errors with a traceback
//! from the stack maps, in the top-level code and in goroutines; deadlock; stack overflow;
//! out of memory.

use std::io::Write;
use std::process::Output;

fn run_src(src: &str, extra: &[&str]) -> (i32, String, String) {
    let mut f = tempfile(src);
    f.flush().unwrap();
    let path = f.path.clone();
    // Options go before FILE: what follows it is the program's.
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(["run".to_string(), path.clone()]);
    let out: Output = std::process::Command::new(env!("CARGO_BIN_EXE_safepoint"))
        .args(&args)
        .env_remove("SAFEPOINT_DEBUG")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path, "t.pb");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), stderr)
}

struct Temp {
    path: String,
    file: std::fs::File,
}

impl Write for Temp {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.file.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn tempfile(src: &str) -> Temp {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir()
        .join(format!("pebble-{}-{}.pb", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
        .to_string_lossy()
        .into_owned();
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(src.as_bytes()).unwrap();
    Temp { path, file }
}

#[test]
fn syntax_errors_name_file_line_and_column() {
    let (code, _, err) = run_src("let x = 1\nlet y = (2 +\n", &[]);
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "t.pb:3:1: expected an expression, found end of file");
    let (code, _, err) = run_src("print(\"unterminated)\n", &[]);
    assert_eq!((code, err.trim()), (1, "t.pb:1:7: unterminated string"));
    let (code, _, err) = run_src("let a = 1 $ 2", &[]);
    assert_eq!((code, err.trim()), (1, "t.pb:1:11: unexpected character '$'"));
}

#[test]
fn compile_errors_name_file_line_and_column() {
    let (code, _, err) = run_src("fn f() {\n  return y\n}\n", &[]);
    assert_eq!((code, err.trim()), (1, "t.pb:2:10: unknown name y"));
    let (code, _, err) = run_src("fn f(a) { return a }\nprint(f(1, 2))\n", &[]);
    assert_eq!((code, err.trim()), (1, "t.pb:2:8: f takes 1 arguments, given 2"));
    let (code, _, err) = run_src("let a, b = 5\n", &[]);
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "t.pb:1:12: a `let` of two names takes a receive: `let v, ok = <-ch`");
    let (code, _, err) = run_src("let a = 1\na, 2 = <-c\n", &[]);
    assert_eq!((code, err.trim()), (1, "t.pb:2:4: cannot assign to this"));
    let (code, _, err) = run_src("try { }\n", &[]);
    assert_eq!((code, err.trim()), (1, "t.pb:2:1: expected 'catch', found end of file"));
    let (code, _, err) = run_src("break\n", &[]);
    assert_eq!((code, err.trim()), (1, "t.pb:1:1: break or continue outside a loop"));
}

#[test]
fn division_by_zero_prints_the_position_and_a_traceback() {
    let src = "fn inner(a, b) {\n  return a / b\n}\nfn outer(x) {\n  return inner(x, 0) + 1\n}\nprint(outer(7))\n";
    let (code, out, err) = run_src(src, &[]);
    assert_eq!(code, 2);
    assert_eq!(out, "");
    let want = "t.pb:2:12: runtime error: division by zero\n\n\
                goroutine 1 [running]:\n  inner\n        t.pb:2\n  outer\n        t.pb:5\n  <main>\n        t.pb:7\n";
    let got: String = err.lines().map(|l| format!("{l}\n")).collect::<String>();
    // The goroutine number is the runtime's; the rest is exact.
    let got = got.replacen(&goroutine_line(&got), "goroutine 1 [running]:", 1);
    assert_eq!(got.trim_end(), want.trim_end());
}

fn goroutine_line(s: &str) -> String {
    s.lines().find(|l| l.starts_with("goroutine ")).unwrap_or("").to_string()
}

#[test]
fn type_errors_and_bad_indexes_are_runtime_errors() {
    for (src, msg) in [
        ("print(1 + \"a\")", "t.pb:1:9: runtime error: cannot apply + to int and string"),
        ("let v = [1, 2]\nprint(v[2])", "t.pb:2:8: runtime error: index 2 out of range (length 2)"),
        ("let x = 3\nx()", "t.pb:2:2: runtime error: cannot call int"),
        ("let m = {}\nm[nil] = 1", "t.pb:2:2: runtime error: nil map key"),
        ("print(1 < \"b\")", "t.pb:1:9: runtime error: cannot compare int and string"),
        ("let c = chan(1)\nclose(c)\nc <- 1", "t.pb:3:1: runtime error: send on closed channel"),
        ("error(\"boom\")", "t.pb:1:6: runtime error: boom"),
        (
            "let f = fn(a) { return a }\nf()",
            "t.pb:2:2: runtime error: fn@1:9 takes 1 arguments, given 0",
        ),
        ("print(2305843009213693951 + 1)", "t.pb:1:27: runtime error: integer overflow"),
    ] {
        let (code, _, err) = run_src(src, &[]);
        assert_eq!(code, 2, "{src}: {err}");
        assert_eq!(err.lines().next().unwrap_or(""), msg, "{src}");
    }
}

#[test]
fn a_runtime_error_in_a_goroutine_ends_the_program_with_its_traceback() {
    let src = "fn work(v) {\n  return v[10]\n}\nfn spawn(v) {\n  go work(v)\n}\nspawn([1])\nsleep(10000)\nprint(\"not reached\")\n";
    let (code, out, err) = run_src(src, &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(out, "");
    assert!(err.starts_with("t.pb:2:11: runtime error: index 10 out of range (length 1)"), "{err}");
    assert!(err.contains("  work\n        t.pb:2\n"), "{err}");
    // The goroutine's own stack: its entry is `work`, not the spawner's frames.
    assert!(!err.contains("spawn"), "{err}");
}

/// A deadlock prints what Go prints: the fatal line, then each of the program's goroutines
/// (not the collector's own) with what it waits on and its traceback; exit 2, and nothing
/// from Rust (no panic line, no backtrace even with `RUST_BACKTRACE=1`).
#[test]
fn deadlock_is_reported_as_go_reports_it() {
    let src = "let c = chan()\nfn w() {\n  <-c\n}\ngo w()\n<-c\n";
    let mut f = tempfile(src);
    f.flush().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_safepoint"))
        .args(["run", &f.path])
        .env_remove("SAFEPOINT_DEBUG")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the binary runs");
    let err = String::from_utf8_lossy(&out.stderr).replace(&f.path, "t.pb");
    assert_eq!(out.status.code(), Some(2), "{err}");
    let goroutines: Vec<&str> = err.split("\n\ngoroutine ").skip(1).collect();
    assert!(err.starts_with("fatal error: all goroutines are asleep - deadlock!\n\n"), "{err}");
    assert_eq!(goroutines.len(), 2, "{err}");
    assert!(goroutines[0].ends_with(" [chan receive]:\n  <main>\n        t.pb:6"), "{err}");
    assert!(goroutines[1].ends_with(" [chan receive]:\n  w\n        t.pb:3\n"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
}

#[test]
fn deep_recursion_grows_the_stack_and_unbounded_recursion_is_a_stack_overflow() {
    let (code, out, err) =
        run_src("fn d(n) { if n == 0 { return 0 } return 1 + d(n - 1) }\nprint(d(200000))\n", &[]);
    assert_eq!((code, out.as_str()), (0, "200000\n"), "{err}");
    let (code, _, err) =
        run_src("fn f(n) {\n  return f(n + 1) + 1\n}\nprint(f(0))\n", &["--max-stack-kb", "256"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("t.pb:2:11: runtime error: stack overflow (goroutine"), "{err}");
    assert!(err.contains("managed stack exceeds"), "{err}");
    assert!(err.contains("frames elided"), "a deep traceback is cut in the middle: {err}");
}

#[test]
fn out_of_memory_is_a_runtime_error_not_a_crash() {
    let src = "let keep = []\nwhile true {\n  push(keep, vec(1000, 1))\n}\n";
    let (code, _, err) = run_src(src, &["--max-heap-mb", "16"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("runtime error: out of memory"), "{err}");
}

#[test]
fn spinning_goroutines_do_not_stop_collections_or_the_program() {
    // The seed scenario (Go's TestPreemptionGC) in the language: goroutines spin in loops
    // that only poll at their back-edges while the top-level code forces 100 collections.
    let src = "let stop = false\nfor i in 0..4 {\n  go fn() {\n    let n = 0\n    while not stop { n = n + 1 }\n  }()\n}\nfor i in 0..100 { gc() }\nstop = true\nprint(\"done\", cycles() >= 100)\n";
    let (code, out, err) = run_src(src, &["--procs", "2"]);
    assert_eq!((code, out.as_str()), (0, "done true\n"), "{err}");
}

/// The command line: `--help` exits 0 with the usage on standard output; everything after
/// FILE is the program's, options included; `--` ends the options; `-` reads the program from
/// standard input; a usage error exits 2 with the usage.
#[test]
fn the_command_line_meets_conventions() {
    let bin = env!("CARGO_BIN_EXE_safepoint");
    let out = std::process::Command::new(bin).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("usage: safepoint"));
    let mut f = tempfile("print(args())\n");
    f.flush().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let p = f.path.as_str();
    assert_eq!(
        run(&["--procs", "1", "run", p, "x", "--procs", "2"]).1,
        "[\"x\", \"--procs\", \"2\"]\n"
    );
    assert_eq!(run(&["run", "--stats", "--", p, "--", "y"]).1, "[\"--\", \"y\"]\n");
    assert_eq!(run(&["run"]).0, Some(2));
    assert_eq!(run(&["--procs", "many", "run", p]).0, Some(2));
    assert_eq!(run(&["demo", "extra"]).0, Some(2));
    let mut child = std::process::Command::new(bin)
        .args(["run", "-", "a"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"print(\"stdin\", args())\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "stdin [\"a\"]\n");
}

/// `exit(code)` ends the program from any goroutine with that status, after what was printed;
/// a status outside 0..=255 is a runtime error.
#[test]
fn exit_from_a_goroutine_ends_the_program_with_its_status() {
    let src =
        "print(\"before\")\ngo fn() {\n  exit(3)\n}()\nsleep(10000)\nprint(\"not reached\")\n";
    let (code, out, err) = run_src(src, &[]);
    assert_eq!((code, out.as_str()), (3, "before\n"), "{err}");
    let (code, _, err) = run_src("exit(300)\n", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("runtime error: exit takes a status from 0 to 255"), "{err}");
    let (code, _, err) = run_src("print(1.5 & 1)\n", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("runtime error: cannot apply & to float and int"), "{err}");
    let (code, _, err) = run_src("print(format(\"%d\", \"x\"))\n", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("runtime error: format: %d of string x"), "{err}");
}

/// An error that no `try` catches ends the program as before, its traceback through the
/// prelude's `sort` naming the prelude; caught errors include stack overflow and running out
/// of memory.
#[test]
fn errors_in_try_blocks_are_caught_and_uncaught_ones_keep_their_traceback() {
    let src = "let v = [3, 1, 2]\nsort(v, fn(a, b) {\n  return a < nil\n})\n";
    let (code, _, err) = run_src(src, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("t.pb:3:12: runtime error: cannot compare int and nil"), "{err}");
    assert!(err.contains("  sort\n        <prelude>:"), "{err}");
    assert!(err.contains("  <main>\n        t.pb:2"), "{err}");

    let src = "fn f(n) {\n  return f(n + 1) + 1\n}\ntry { f(0) } catch e { print(find(e, \"stack overflow\") == 0) }\nprint(f(0) == 0 or true)\n";
    let (code, out, err) = run_src(src, &["--max-stack-kb", "256"]);
    assert_eq!((code, out.as_str()), (2, "true\n"), "{err}");
    assert!(err.starts_with("t.pb:2:11: runtime error: stack overflow"), "{err}");

    let src = "let keep = []\ntry {\n  while true { push(keep, vec(1000, 1)) }\n} catch e {\n  keep = []\n  print(e)\n}\ngc()\npush(keep, vec(1000, 1))\nprint(len(keep))\n";
    let (code, out, err) = run_src(src, &["--max-heap-mb", "16"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "out of memory: the heap is at its hard limit\n1\n"),
        "{err}"
    );
}

/// With no command, the binary is a REPL on standard input: chunks run as they come on one
/// heap (functions, globals and goroutines stay), an expression's value is printed, and a
/// compile or runtime error is reported without ending the session.
#[test]
fn the_repl_runs_chunks_as_they_come_and_survives_their_errors() {
    use std::io::Write as _;
    let input = "let x = 20\nx + 1\nfn f(a) {\n  return a * 2\n}\nf(x)\nlet c = chan(1)\n\
                 go fn() { c <- f(100) }()\n<-c\nbad(\n)\n1 / 0\nlet g = fn() { x = x * 10 }\n\
                 g()\ngc()\n[x, f(1), nil]\nnil\nprint(\"end\")\n";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_safepoint"))
        .env_remove("SAFEPOINT_DEBUG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "21\n40\n200\n[200, 2, nil]\nend\n", "{stderr}");
    assert!(stderr.starts_with("<stdin>:1:1: unknown name bad\n"), "{stderr}");
    assert!(stderr.contains("<stdin>:1:3: runtime error: division by zero"), "{stderr}");
}
