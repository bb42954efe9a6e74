//! The guard-page handler, tested in child processes.
//!
//! Every scenario here ends the process that runs it, so each test re-executes this test binary
//! with `--exact <its own name>` and an environment variable naming the scenario. In the child,
//! the same test function sees the variable and runs the scenario instead of spawning; in the
//! parent, it checks how the child died and what it wrote to stderr. This works the same under
//! `cargo test` (one process, many test threads) and `cargo nextest run` (one process per test),
//! because the child only ever runs the one test it was started for.
//!
//! The child prints `child: <name>` first, so a parent whose child ran no test (a misspelt
//! name) fails with a clear message instead of a confusing exit status.

use std::hint::black_box;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use safepoint_arch::signal::{StackInfo, ensure_altstack, install, set_current};
use safepoint_arch::stack::{PAGE_SIZE, Stack};
use safepoint_arch::{Context, switch};

/// Names the scenario a child process must run.
const CHILD_VAR: &str = "SAFEPOINT_ARCH_GUARD_PAGE_CHILD";

/// Exit code of a child whose scenario returned, which none should.
const SCENARIO_RETURNED: i32 = 97;

/// In the parent: runs test `name` in a child process and returns its output.
/// In that child: runs `scenario` (which must not return) and exits.
fn run_in_child(name: &str, scenario: fn()) -> Output {
    if std::env::var_os(CHILD_VAR).is_some_and(|v| v == name) {
        quiet_crash();
        eprintln!("child: {name}");
        scenario();
        eprintln!("child: scenario returned");
        std::process::exit(SCENARIO_RETURNED);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, name)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("cannot re-execute the test binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("child: {name}")),
        "the child did not run test {name:?}; status {:?}\nstdout:\n{}\nstderr:\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
    );
    out
}

/// CPU seconds after which a child is stopped by SIGXCPU. A healthy child uses milliseconds;
/// a broken handler can spin in a loop of re-executed faults, and this turns that hang into a
/// failure. CPU time, not wall time: a loaded machine does not trip it.
const CHILD_CPU_SECONDS: libc::rlim_t = 10;

/// Prepares a child for crashing on purpose: no core files, and a CPU-time bound.
fn quiet_crash() {
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit reads a valid rlimit; lowering our own limit is always allowed.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
    let cpu = libc::rlimit { rlim_cur: CHILD_CPU_SECONDS, rlim_max: 2 * CHILD_CPU_SECONDS };
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_CPU, &cpu) };
    // SAFETY: PR_SET_DUMPABLE 0 only stops core dumps (including piped ones) of this process.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that the child was killed by `sig`.
fn assert_killed_by(out: &Output, sig: i32) {
    assert_eq!(
        out.status.signal(),
        Some(sig),
        "expected death by signal {sig}, got {:?}{}\nstderr:\n{}",
        out.status,
        spin_hint(out),
        stderr_of(out)
    );
}

/// Asserts that the child exited with `code`.
fn assert_exit_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit code {code}, got {:?}{}\nstderr:\n{}",
        out.status,
        spin_hint(out),
        stderr_of(out)
    );
}

/// A note for a child stopped by its CPU limit.
fn spin_hint(out: &Output) -> &'static str {
    match out.status.signal() {
        Some(libc::SIGXCPU | libc::SIGKILL) => " (CPU limit: the child spun, a fault loop?)",
        _ => "",
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario building blocks (run only in children).

/// Recurses without bound, with a real frame at every level.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 256];
    frame[0] = depth as u8;
    // The frame escapes, so it must exist in memory at every level.
    black_box(&mut frame);
    if black_box(depth) == u64::MAX {
        return u64::from(frame[1]);
    }
    // Not a tail call: the addition needs this frame after the call returns.
    recurse(depth + 1) + u64::from(frame[2])
}

/// Goroutine entry: overflows its stack.
unsafe extern "C" fn overflow_entry(_data: usize, _arg: usize) -> ! {
    let depth = recurse(0);
    eprintln!("child: recursion ended at depth {depth}");
    std::process::exit(SCENARIO_RETURNED)
}

/// Runs `entry(data)` as a goroutine on `stack` described by `info`, as the scheduler would:
/// set_current before the switch in, and (if it ever came back) null after.
fn run_goroutine(stack: &Stack, info: &StackInfo, entry: safepoint_arch::EntryFn, data: usize) {
    let mut g0 = Context::default();
    // SAFETY: the stack is fresh, owned by this scenario and outlives the goroutine (the
    // scenario ends the process before `stack` is dropped).
    let g = unsafe { Context::new_on_stack(stack.top(), entry, data) };
    // SAFETY: `info` is borrowed for this whole function, longer than it stays current.
    unsafe { set_current(info) };
    // SAFETY: `g` is fresh; `g0` lives on this frame until the goroutine switches back.
    unsafe { switch(&mut g0, &g, 0) };
    // SAFETY: null is always allowed.
    unsafe { set_current(std::ptr::null()) };
}

/// Maps one inaccessible page and returns its address.
fn prot_none_page() -> usize {
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE_SIZE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p as usize
}

/// Writes to `addr`, which faults.
fn poke(addr: usize) {
    // SAFETY: deliberately not sound: `addr` is inaccessible and the write must fault, which is
    // what the scenario tests. A volatile write cannot be optimised away.
    unsafe { std::ptr::write_volatile(addr as *mut u64, 1) };
}

/// Sets `sig` back to SIG_DFL, as in a process where std's runtime did not install its handler
/// (a library loaded by a C host).
fn reset_to_default(sig: i32) {
    // SAFETY: all-zero is SIG_DFL with an empty mask and no flags.
    let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `dfl` is a valid action.
    let rc = unsafe { libc::sigaction(sig, &dfl, std::ptr::null_mut()) };
    assert_eq!(rc, 0);
}

/// Installs `action` as the current action for SIGSEGV.
fn set_segv_action(handler: usize, flags: i32) {
    // SAFETY: all-zero is a valid sigaction to fill in.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = flags;
    // SAFETY: `act` is valid and `handler` has the signature `flags` promises (callers' duty).
    let rc = unsafe { libc::sigaction(libc::SIGSEGV, &act, std::ptr::null_mut()) };
    assert_eq!(rc, 0);
}

/// Writes `msg` to stderr with a raw write (usable inside a signal handler).
fn raw_eprint(msg: &[u8]) {
    // SAFETY: `msg` is valid for reads of its length.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// Where the scenarios with a previous handler fault.
static FAULT_ADDR: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------------------------
// Goroutine guard hits: our message, then SIGABRT.

#[test]
fn goroutine_guard_hit_aborts_with_message() {
    let out = run_in_child("goroutine_guard_hit_aborts_with_message", || {
        install();
        let stack = Stack::new(64 * 1024).unwrap();
        let info = StackInfo::for_stack(&stack, 42);
        run_goroutine(&stack, &info, overflow_entry, 0);
    });
    assert_killed_by(&out, libc::SIGABRT);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("goroutine 42: native stack overflow (stack limit 65536 bytes)\n"),
        "stderr:\n{stderr}"
    );
    assert!(!stderr.contains("has overflowed its stack"), "std claimed it:\n{stderr}");
}

#[test]
fn goroutine_guard_hit_on_a_thread_without_altstack() {
    // A thread std did not start (as a C host's would be) has no alternate signal stack; only
    // ensure_altstack lets the handler run at all when the goroutine stack is exhausted.
    extern "C" fn thread_main(_: *mut libc::c_void) -> *mut libc::c_void {
        let mut ss: libc::stack_t = empty_stack_t();
        // SAFETY: a query writes only into `ss`.
        unsafe { libc::sigaltstack(std::ptr::null(), &mut ss) };
        if ss.ss_flags & libc::SS_DISABLE == 0 {
            eprintln!("child: foreign thread unexpectedly has an alternate stack");
            std::process::exit(SCENARIO_RETURNED);
        }
        ensure_altstack();
        let stack = Stack::new(64 * 1024).unwrap();
        let info = StackInfo::for_stack(&stack, 7);
        run_goroutine(&stack, &info, overflow_entry, 0);
        std::ptr::null_mut()
    }
    fn empty_stack_t() -> libc::stack_t {
        libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: 0, ss_size: 0 }
    }
    let out = run_in_child("goroutine_guard_hit_on_a_thread_without_altstack", || {
        install();
        let mut t: libc::pthread_t = 0;
        // SAFETY: `thread_main` has the pthread start signature and ignores its argument.
        let rc = unsafe {
            libc::pthread_create(&mut t, std::ptr::null(), thread_main, std::ptr::null_mut())
        };
        assert_eq!(rc, 0);
        // SAFETY: `t` was created joinable just above.
        unsafe { libc::pthread_join(t, std::ptr::null_mut()) };
    });
    assert_killed_by(&out, libc::SIGABRT);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("goroutine 7: native stack overflow (stack limit 65536 bytes)\n"),
        "stderr:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Faults that are not goroutine guard hits: chained, so they die as they would without us.

#[test]
fn fault_outside_goroutines_dies_with_sigsegv() {
    let out = run_in_child("fault_outside_goroutines_dies_with_sigsegv", || {
        install();
        let page = prot_none_page();
        // SAFETY: null is always allowed.
        unsafe { set_current(std::ptr::null()) };
        poke(page);
    });
    assert_killed_by(&out, libc::SIGSEGV);
    let stderr = stderr_of(&out);
    assert!(!stderr.contains("native stack overflow"), "stderr:\n{stderr}");
    assert!(!stderr.contains("has overflowed its stack"), "stderr:\n{stderr}");
}

#[test]
fn goroutine_touching_another_stacks_guard_dies_with_sigsegv() {
    // The address is a guard page, but not the current goroutine's: a stray pointer, not an
    // overflow of the goroutine that runs.
    unsafe extern "C" fn poke_entry(data: usize, _arg: usize) -> ! {
        poke(data);
        eprintln!("child: the poke did not fault");
        std::process::exit(SCENARIO_RETURNED)
    }
    let out = run_in_child("goroutine_touching_another_stacks_guard_dies_with_sigsegv", || {
        install();
        let mine = Stack::new(64 * 1024).unwrap();
        let other = Stack::new(64 * 1024).unwrap();
        let info = StackInfo::for_stack(&mine, 5);
        let (other_guard, _) = other.guard_range();
        run_goroutine(&mine, &info, poke_entry, other_guard);
    });
    assert_killed_by(&out, libc::SIGSEGV);
    assert!(!stderr_of(&out).contains("native stack overflow"), "stderr:\n{}", stderr_of(&out));
}

#[test]
fn fault_with_default_previous_action_dies_with_sigsegv() {
    // No std handler underneath: our handler must restore SIG_DFL itself.
    let out = run_in_child("fault_with_default_previous_action_dies_with_sigsegv", || {
        reset_to_default(libc::SIGSEGV);
        reset_to_default(libc::SIGBUS);
        install();
        poke(prot_none_page());
    });
    assert_killed_by(&out, libc::SIGSEGV);
    assert!(!stderr_of(&out).contains("native stack overflow"), "stderr:\n{}", stderr_of(&out));
}

#[test]
fn raised_sigsegv_with_default_previous_action_still_kills() {
    // A SIGSEGV sent by a process does not re-execute anything: returning from the handler
    // would let the process live on, unlike without our handler. It must be re-raised.
    let out = run_in_child("raised_sigsegv_with_default_previous_action_still_kills", || {
        reset_to_default(libc::SIGSEGV);
        install();
        // In a goroutine, so that the handler looks at the current stack (and must ignore the
        // meaningless si_addr of a sent signal).
        let stack = Stack::new(64 * 1024).unwrap();
        let info = StackInfo::for_stack(&stack, 3);
        // SAFETY: `info` lives until the end of this closure, past its time as current.
        unsafe { set_current(&info) };
        // SAFETY: raise is always safe to call.
        unsafe { libc::raise(libc::SIGSEGV) };
        // SAFETY: null is always allowed.
        unsafe { set_current(std::ptr::null()) };
    });
    assert_killed_by(&out, libc::SIGSEGV);
    assert!(!stderr_of(&out).contains("native stack overflow"), "stderr:\n{}", stderr_of(&out));
}

#[test]
fn siginfo_previous_handler_gets_the_same_arguments() {
    extern "C" fn previous(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel (through our chaining) passes this signal's siginfo.
        let addr = unsafe { (*info).si_addr() } as usize;
        let ok =
            sig == libc::SIGSEGV && !ctx.is_null() && addr == FAULT_ADDR.load(Ordering::Relaxed);
        raw_eprint(if ok { b"previous: arguments ok\n" } else { b"previous: bad arguments\n" });
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(if ok { 41 } else { 42 }) };
    }
    let out = run_in_child("siginfo_previous_handler_gets_the_same_arguments", || {
        let handler: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) = previous;
        set_segv_action(handler as usize, libc::SA_SIGINFO);
        install();
        let page = prot_none_page();
        FAULT_ADDR.store(page + 8, Ordering::Relaxed);
        poke(page + 8);
    });
    let stderr = stderr_of(&out);
    assert_exit_code(&out, 41);
    assert!(stderr.contains("previous: arguments ok"), "stderr:\n{stderr}");
}

#[test]
fn plain_previous_handler_is_called() {
    extern "C" fn previous(sig: i32) {
        raw_eprint(b"previous: plain handler\n");
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(if sig == libc::SIGSEGV { 43 } else { 44 }) };
    }
    let out = run_in_child("plain_previous_handler_is_called", || {
        let handler: extern "C" fn(i32) = previous;
        set_segv_action(handler as usize, 0);
        install();
        poke(prot_none_page());
    });
    let stderr = stderr_of(&out);
    assert_exit_code(&out, 43);
    assert!(stderr.contains("previous: plain handler"), "stderr:\n{stderr}");
}

#[test]
fn resethand_previous_handler_runs_once_then_default_kills() {
    // A crash reporter installed with SA_RESETHAND prints and returns, expecting the re-executed
    // fault to meet SIG_DFL. Chaining must reset the action as the kernel would have, or the
    // fault would loop through the reporter forever.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    extern "C" fn previous(_sig: i32) {
        if CALLS.fetch_add(1, Ordering::Relaxed) > 0 {
            raw_eprint(b"previous: called again\n");
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(45) };
        }
        raw_eprint(b"previous: reporting\n");
    }
    let out = run_in_child("resethand_previous_handler_runs_once_then_default_kills", || {
        let handler: extern "C" fn(i32) = previous;
        set_segv_action(handler as usize, libc::SA_RESETHAND);
        install();
        poke(prot_none_page());
    });
    assert_killed_by(&out, libc::SIGSEGV);
    assert!(stderr_of(&out).contains("previous: reporting"), "stderr:\n{}", stderr_of(&out));
}

// ---------------------------------------------------------------------------------------------
// Installing: from many threads at once, and on top of std's handler.

#[test]
fn concurrent_install_keeps_std_thread_overflow_message() {
    let out = run_in_child("concurrent_install_keeps_std_thread_overflow_message", || {
        let before = segv_handler();
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    barrier.wait();
                    install();
                });
            }
        });
        let after = segv_handler();
        assert_ne!(after, before, "install did not replace std's handler");
        install();
        assert_eq!(segv_handler(), after);
        // A plain std thread overflows its own stack: std's handler, reached through ours,
        // must still recognise it. Had install chained to itself, this would be a bare SIGSEGV.
        let t = std::thread::Builder::new()
            .name("deep".into())
            .stack_size(128 * 1024)
            .spawn(|| recurse(0))
            .unwrap();
        let _ = t.join();
    });
    assert_killed_by(&out, libc::SIGABRT);
    let stderr = stderr_of(&out);
    // std prints "thread 'deep' (<tid>) has overflowed its stack" (older versions: no tid).
    let line = stderr.lines().find(|l| l.starts_with("thread 'deep'"));
    assert!(line.is_some_and(|l| l.ends_with("has overflowed its stack")), "stderr:\n{stderr}");
    assert!(!stderr.contains("native stack overflow"), "stderr:\n{stderr}");
}

/// The current SIGSEGV handler address, and that it has the flags we install with.
fn segv_handler() -> usize {
    // SAFETY: all-zero is a valid sigaction for the kernel to overwrite.
    let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a query writes only into `cur`.
    let rc = unsafe { libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut cur) };
    assert_eq!(rc, 0);
    assert_eq!(
        cur.sa_flags & (libc::SA_SIGINFO | libc::SA_ONSTACK),
        libc::SA_SIGINFO | libc::SA_ONSTACK
    );
    cur.sa_sigaction
}
