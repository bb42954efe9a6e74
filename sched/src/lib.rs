//! # safepoint-sched: goroutines on a preemptible M:N scheduler
//!
//! The vocabulary is Go's. A **G** is a goroutine: a native stack (from `safepoint-arch`), a
//! saved register context and one atomic status word. An **M** is an OS thread; its own thread
//! stack is *g0*, where the scheduling loop and every operation that must not run on a goroutine
//! stack run. A **P** is the right to run goroutines: a local run queue (a crossbeam `Worker`
//! plus a one-slot `runnext`), a cache of dead Gs with their stacks; `procs` of them exist and
//! an M needs one to run a goroutine. Dead Gs past a P's cache go to the runtime's list, which
//! keeps the stacks of at most `stack_cache` of them ([`Builder::stack_cache`]) and unmaps the
//! rest, so a burst of goroutines does not keep its stacks for the runtime's life.
//!
//! ## Scheduling
//!
//! An M loops on g0: find a runnable G (its P's `runnext`, then its local queue, the global
//! queue every 61st tick and whenever the local one is empty, then — spinning — the other Ps'
//! queues), switch to it, and when it switches back do what it asked (`runtime::After`: put it
//! back on a queue, park it, free it). Everything a goroutine asks of the scheduler happens on
//! g0 *after* the switch, when the goroutine's registers are saved: nobody can resume a
//! goroutine whose context is still being written (Go's `mcall`).
//!
//! An M that finds nothing spins for a bounded time (20 µs) looking, then gives its P back and
//! parks on its note. Making a goroutine runnable wakes an M only if a P is idle and nobody is
//! spinning; the last spinner to find work wakes another. The two sides check each other with
//! sequentially consistent fences so that work is never left queued with every M asleep. On
//! these machines a futex wake costs tens of microseconds, so the spinning keeps hand-offs in
//! user space when both sides are busy; an idle runtime still uses no CPU.
//!
//! ## The status word
//!
//! See [`status`]: every transition is a CAS; the `SCAN` bit on top of a state gives whoever
//! set it the goroutine's stacks; a park generation in the high half makes wake-up tokens
//! ([`GoroutineRef`]) single-use. Only a goroutine moves itself out of Running.
//!
//! ## Safepoints and preemption
//!
//! 1. A preemption request sets `g.preempt` and poisons the guard word of the goroutine's
//!    managed stack, which every synchronous safepoint checks: every frame push and every
//!    poll ([`poll`], or `ManagedStack::poll` in an interpreter's loop). A failed check enters
//!    the managed stack's slow path, which tells a real overflow (grow the stack, with the
//!    goroutine in `CopyStack`) from a request (the scheduler's hook: yield or park).
//! 2. The slow path keeps the request if the M is in a runtime critical section
//!    (`m.locks > 0`) or the goroutine is in a [`no_preempt`] section, and whatever ends that
//!    section re-arms the guard from `g.preempt`: requests are never lost.
//! 3. [`stop_the_world`] sets `gcwaiting`, asks every running P to stop and re-asks every
//!    100 µs until all have; idle Ps and Ps in blocking calls are stopped by CAS on their
//!    status. One stop (or ragged barrier) at a time, through a goroutine-aware semaphore.
//! 4. [`suspend_g`] drives one goroutine to a safepoint and returns holding its `SCAN` bit: a
//!    running goroutine is asked with `preempt_stop`, parks itself in `Preempted`, and the
//!    suspender CASes `Preempted -> Waiting` to take the duty of readying it again.
//! 5. [`for_each_p`] runs a function on every P at that P's next safepoint without stopping
//!    the world: the caller handles idle and blocked Ps; running Ps run it themselves before
//!    they schedule again, go idle or enter a blocking call. A stop and a barrier take the
//!    idle list once, when they begin, so whoever puts a P idle looks at their flags first,
//!    under the scheduler lock; their retries take any P found idle since, as a defence.
//! 6. *Asynchronous preemption* (Go 1.14's, adapted; `preempt.rs`, and the signal and the
//!    trampoline in `safepoint_arch::preempt`). A request of 3, 4 or 5 that has gone unanswered
//!    for 10 µs is followed by `SIGURG` to the goroutine's M (at once for a goroutine that needed
//!    it last time; again every 50 µs while unanswered; at most one pending per M). If the
//!    handler finds the goroutine at an async-safe point — on its own stack, in user code, the M
//!    in no runtime critical section (`m.locks`, a runtime lock: `m.rtlocks`), not in a
//!    [`no_preempt`] section, with stack to spare, and someone still waiting — the goroutine
//!    calls, through a trampoline that saves every register, the *hold*: it moves itself to
//!    `AsyncPreempted` and its P to `Held`, and its M waits on a note, running nothing else.
//!    To the requesters that is a goroutine stopped at a safepoint: a stopper moves a Held P to
//!    GcStop and counts it (`start_the_world` gives it back to its M), a ragged barrier borrows
//!    it the same way to run the function for it, a suspender claims `AsyncPreempted|SCAN`
//!    ([`Suspended::async_stopped`]: the innermost managed frame must then be scanned
//!    conservatively). When nothing needs it held it takes its goroutine and P back and resumes
//!    at the interrupted instruction. It never switches goroutines there: an arbitrary
//!    instruction of Rust code may be inside malloc, a thread-local borrow or a std lock, and
//!    another goroutine on that thread would corrupt it. So time slices (sysmon's 10 ms rule)
//!    still end only at synchronous safepoints, and sysmon never signals: a goroutine that never
//!    polls keeps its P until it ends. `SAFEPOINT_DEBUG=asyncpreemptoff=1` (or
//!    [`Builder::async_preempt`]) turns the signal off.
//!
//!    The requester must not, while it holds goroutines stopped, take a lock that user code may
//!    hold (a std mutex, stdout's lock): a goroutine held in place keeps whatever it held. The
//!    handler declines inside the C library, so malloc's and stdio's own locks are never held.
//!    The runtime allocates while it holds goroutines (a stop's work, a scan), so the global
//!    allocator's lock must never be held either: a program that sets a `#[global_allocator]`
//!    (jemalloc, mimalloc) wraps it in [`PreemptSafe`], inside whose calls the handler
//!    declines; and where `malloc` itself is not the C library's (AddressSanitizer, an
//!    allocator linked in or preloaded, a static C library) the runtime does not hold
//!    goroutines in place at all and says so once, as if `asyncpreemptoff=1` were set.
//!    A goroutine held inside a Rust-level OS lock (`std::sync::Mutex`, standard error's
//!    lock) can still hold up a *stop*: another goroutine blocked in the kernel on that lock
//!    keeps its P Running and never answers. A stop that cannot finish within a millisecond
//!    therefore gives its held goroutines back and exempts their Ms from the signal for a
//!    while, so that they leave their critical sections and stop at a synchronous safepoint
//!    (see "A stop that cannot finish" at [`stop_the_world`]): a deadlock becomes latency.
//!
//! sysmon, a thread with no P, retakes Ps from goroutines stuck in blocking calls, asks
//! goroutines that have run over 10 ms to yield, and moves the goroutines queued on a P held in
//! place for over a millisecond to the global queue (a hold runs nothing else, and it may be
//! waiting for a suspender queued behind it: see `sysmon::unstrand`).
//!
//! ## Goroutine synchronisation
//!
//! Go's vocabulary, parking goroutines (or sleeping threads outside the runtime), never
//! spinning OS threads: [`Chan`] (buffered or not, close, direct hand-off), [`Select`] (uniform
//! among ready cases, default, timeout), [`Mutex`] with Go's starvation mode, [`RwLock`],
//! [`Cond`], [`Once`], [`WaitGroup`], and timers ([`sleep`], [`Timer`], [`Ticker`], [`after`])
//! on per-P heaps run by the scheduler loop, by spinning Ms, by a *timed sleeper* M while the
//! runtime is idle (so it sleeps exactly until the next deadline) and by sysmon as a backstop.
//! Every primitive queues waiters under a short lock that the park callback releases after
//! storing the wake-up token (see `wait.rs`). When every goroutine is blocked on them and no
//! timer is pending, a thread waiting in [`Runtime::block_on`] gets "all goroutines are asleep -
//! deadlock!" ([`Builder::deadlock_detection`]).
//!
//! ## Thread identity: what Rust code in a goroutine may and must not do
//!
//! A goroutine may continue on another OS thread after any safepoint: a yield, a park (join,
//! semaphore, channel), a blocking call, a [`poll`]. Across a safepoint it must not hold a
//! `thread_local!` borrow, a `std::sync` lock guard, or anything else tied to the OS thread
//! (the compiler caches thread-local addresses within a function, so even re-reading one is
//! wrong if the read was hoisted). Use [`GoroutineLocal`] for per-goroutine state and the
//! runtime's goroutine-aware primitives for locking. Wrap unavoidable thread-bound sections in
//! [`no_preempt`]: inside one, preemption waits and any explicit switch panics with a
//! description instead of silently migrating. The runtime's own functions read the current M
//! through a never-inlined accessor for the same reason.
//!
//! What Rust code in a goroutine *may* do between two safepoints, exactly:
//!
//! * take an OS lock (`std::sync::Mutex`, `RwLock`, standard output's and error's locks, so
//!   `println!` and `eprintln!`) for a critical section that reaches no safepoint, and
//!   release it before the next one. Another goroutine waiting for that lock blocks its
//!   thread meanwhile. A stop of the world that the lock holds up finishes anyway (see above);
//!   the critical section's length is added to its latency;
//! * make short system calls and call C code; a call that may block for long goes in
//!   [`blocking`], so that its P is handed to another thread;
//! * loop without polling: the preemption signal stops it for the collector and stops of the
//!   world, though its time slice ends only at its next synchronous safepoint.
//!
//! It must not hold an OS lock across a safepoint (it may resume on another thread while
//! another goroutine on this one waits for the lock: a deadlock no runtime can undo), nor wait
//! in the kernel for something only another goroutine can do (an OS channel's `recv`, a
//! `std::sync::Condvar`) outside [`blocking`].
//!
//! ## Messages, the execution trace, scheduling latency
//!
//! What the runtime prints (the collector's `gctrace` lines, `schedtrace` lines, warnings,
//! panics of goroutines nobody joins, fatal errors and the watchdog's report) goes through one
//! sink, standard error by default, which an embedder may replace ([`set_message_sink`]). The
//! default writes each message with a single `write(2)`, taking no Rust lock, because messages
//! come from stoppers with the world stopped and from sysmon, where waiting on standard
//! error's lock (held, perhaps, by a goroutine a stop holds in place) would deadlock.
//!
//! With [`Builder::trace`] (`SAFEPOINT_TRACE=FILE`) each P records, in a buffer only its M
//! writes, a span per stint of a goroutine on it (ended by a switch, or by a blocking call
//! that hands the P on), and the collector adds its phases, stack scans and assists; stops of
//! the world are recorded with their reason. The file (Chrome trace-event JSON) is written at
//! the runtime's drop or [`Runtime::stop_trace`]. Off, a switch pays a load and a branch.
//!
//! One schedule in eight marks the goroutine it runs to be timed on its next wait in a run
//! queue (`G::track_latency`): whoever readies it stamps the time, and the P that runs it
//! next adds the wait to its histogram ([`RuntimeHandle::sched_latencies`]).
//!
//! ## Shutdown
//!
//! Dropping a [`Runtime`] gives back everything: threads, stacks, and what the goroutines
//! captured. It runs in two phases.
//!
//! 1. **Draining.** Spawns are refused, and every live goroutine is *unwound* with the
//!    [`RuntimeShutdown`] payload at its next safepoint: a poll or frame push (shutdown
//!    keeps asking running goroutines to reach one), a yield, the start or end of a blocking
//!    call, a park. Every park is ended: those whose callback leaves only a token somewhere
//!    ([`park`] with any reason, [`Sema`], a join, [`sleep`]: a stale token is refused by its
//!    generation, and while the runtime drains its wake-up is ignored); channel sends and
//!    receives, [`Cond`] waits and [`Mutex`] locks, which unlink their queue node under the
//!    primitive's lock before they unwind (if a waker took the node first, the operation
//!    completed and returns normally; a mutex waiter also takes itself off the lock word's
//!    waiter count); a [`Select`], which locks its channels and races the wakers for its
//!    `done` flag (if it wins, no case fired: it unlinks its nodes and unwinds); and
//!    [`RwLock`] readers and writers and [`WaitGroup`] waiters, whose counters count each
//!    waiter and owe it a wake-up: the waiter leaves a *ghost* in its semaphore's count, the
//!    wake-up owed to it goes to the ghost, and whoever gives it completes the operation for
//!    it (a read-unlock, a write-unlock, nothing for a WaitGroup), so the lock and the group
//!    stay usable (`mutex.rs` explains it). A goroutine held by [`suspend_g`] unwinds once its
//!    suspender lets it go (a suspender that is a goroutine lets go when it unwinds). A
//!    goroutine that never started has its closure dropped without running it.
//!    The Ms keep scheduling meanwhile, so unwinding code runs as goroutine code always does
//!    (it may lock, send, stop the world), and a collection under way ends or unwinds with
//!    its driver.
//! 2. **Exit**, once two looks in a row find every goroutine ended or parked where shutdown
//!    leaves it: the Ms leave their loops, every thread is joined, every G is retired (its
//!    stack unmapped) into the process-wide pool.
//!
//! Why unwind rather than drop a goroutine's state without running it further: a goroutine
//! that has started keeps its captures in frames on its stack, and only unwinding can drop
//! them; not dropping them leaks, and a leaked `Gc` clone keeps a heap's whole reservation
//! (issue 25: about 890 runtimes with heaps exhausted the address space). Unwinding runs user
//! `Drop` code at shutdown, but only at safepoints, where the goroutine may run any code
//! anyway: never at an arbitrary instruction (a goroutine held by the preemption signal is let
//! go first and unwinds at its next synchronous safepoint). The unwind is sent once: a
//! goroutine that catches it, or blocks again while it unwinds, is left where it blocks.
//!
//! What is abandoned instead (its stack kept mapped when parked, its captures leaked): a
//! goroutine that blocks again after its unwind (it was sent the unwind once, and caught it or
//! waits in its `Drop` code); one inside a [`no_preempt`] section or a runtime critical
//! section that never ends; one held by a [`suspend_g`] of a thread outside the runtime that
//! never resumes it. A
//! goroutine that never reaches a safepoint (a loop that does not poll), one that catches the
//! unwind and loops on, or a blocking call that never returns cannot be stopped: no thread can
//! be made to leave code that never yields. The drop does not wait for it for ever: after
//! five seconds of draining and five more for the threads to exit, it returns, leaving the
//! threads still running such goroutines, and the runtime's memory with them (leaked, with
//! what those goroutines hold), and says so in a line through the message sink. A goroutine of
//! theirs that reaches a safepoint later unwinds, and its thread exits. A drain that reaches
//! its bound says so as well (how many goroutines it abandons), even when every thread then
//! exits: the goroutines still parked then keep their stacks and captures.
//!
//! Dropping the last handle from inside one of the runtime's own goroutines cannot wait for
//! that goroutine's M to exit: the shutdown runs on a thread of its own, and the dropping
//! goroutine gets a described panic (unless it is already unwinding).
//!
//! ## Rejected designs
//!
//! * One OS thread per goroutine: no M:N, no cheap spawn, no control of preemption.
//! * A global run queue under one lock: the common case (spawn, ready, yield) must touch only
//!   the P's own queue.
//! * Asynchronous switching at arbitrary instructions: an arbitrary point of Rust code may be
//!   inside malloc or hold a thread-local borrow; goroutines switch only at synchronous points,
//!   and asynchronous preemption holds a goroutine in place instead.
//! * Handing a held goroutine's P to another M (as for a blocking call), so that its other
//!   goroutines run meanwhile: the goroutine would have to wait for a P when released, on its
//!   own thread, and holds are short (a scan, a stop); its queue can be stolen anyway.
//! * Signalling at once, as Go does: a goroutine that polls answers within a microsecond or
//!   two, and a signal costs its thread a kernel round trip. The runtime waits 10 µs, except for
//!   a goroutine that needed the signal last time.
//! * Shutdown that abandons every goroutine where it stands (what this runtime did first, and
//!   what a Go program's exit does): the process lives on after a runtime here, and what the
//!   goroutines captured leaked with their stacks, heaps included.
//! * Reference-counted Gs: every park/ready would pay two atomic RMWs. Gs are type-stable
//!   instead (never freed, recycled) and guarded by the status word's generation.
//! * Go's placement of a preempted goroutine on the global queue: with hand-offs through
//!   `runnext` ending their time slice in the local queue, the global queue is served far less
//!   often, and a preempted goroutine would wait behind many slices; it goes to the back of the
//!   local queue (stealable) instead.
//! * Stealing another P's `runnext` at once: the goroutine there was just readied by the one
//!   running on that P, which usually blocks right after and runs it; a thief waits 3 µs first,
//!   as Go's does, so channel hand-off pairs stay on one CPU.

#![cfg_attr(loom, allow(dead_code, unused_imports))]

mod allgs;
mod g;
mod join;
mod local;
#[cfg(all(test, loom))]
mod loom_models;
mod preempt;
mod proc;
mod runtime;
mod shim;
pub mod status;
mod stw;
mod sync;
mod sysmon;
mod trace;
mod watchdog;
// Goroutine synchronisation (issue 4).
mod chan;
mod cond;
mod deadlock;
mod embed;
pub mod env;
mod mutex;
mod select;
mod timer;
mod wait;

use std::sync::Arc;

pub use join::{JoinError, JoinHandle};
pub use local::GoroutineLocal;
// The sink lives in the bottom crate, so that every crate reports through it; the scheduler's
// documentation and embedders know it from here.
pub use proc::{
    NoPreempt, blocking, goroutine_id, no_preempt, poll, with_managed_stack, yield_now,
};
pub use safepoint_arch::preempt::PreemptSafe;
pub use safepoint_arch::{MessageSink, message, set_message_sink};
pub use safepoint_stackmap as stackmap;
pub use stw::{Goroutine, Suspended, WorldStop, for_each_p, resume_g, stop_the_world, suspend_g};
pub use sync::Sema;
pub use trace::Track as TraceTrack;
pub use watchdog::WatchdogCheck;
// Goroutine synchronisation (issue 4).
pub use chan::{Chan, Iter, RecvError, TryRecvError, TrySendError};
pub use cond::{Cond, Once, WaitGroup};
pub use deadlock::{DEADLOCK, DeadlockReport, DeadlockedGoroutine};
pub use embed::{
    Pinned, RuntimeHandle, StackRefused, in_no_preempt, pinned, set_system, set_urgent,
    walk_own_managed_stack, with_managed_stack_of, with_running_managed_stack_of,
};
pub use mutex::{
    Mutex, MutexGuard, RawMutex, RawRwLock, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
pub use select::Select;
pub use timer::{Ticker, Timer, after, sleep, sleep_until};

use g::GPtr;
use runtime::Sched;
use shim::Ordering;

/// Prints a fatal runtime error with the current goroutine's context, then aborts the process.
/// For broken runtime invariants only; bad input from an embedder gets an error or a panic.
#[macro_export]
#[doc(hidden)]
macro_rules! throw {
    ($($arg:tt)*) => {
        $crate::fatal(format_args!($($arg)*))
    };
}

#[doc(hidden)]
#[cold]
pub fn fatal(msg: core::fmt::Arguments<'_>) -> ! {
    let g = runtime::current_g();
    let m = runtime::current_m();
    let wher = match (m, g) {
        (Some(m), Some(g)) => format!(
            "on goroutine {} ({}), M{}, P{:?}",
            g::goid(g),
            g.status.load(),
            m.id,
            m.p().map(|p| p.id)
        ),
        (Some(m), None) => format!("on g0 of M{}", m.id),
        _ => "off the runtime's threads".to_string(),
    };
    message(format_args!("fatal error: {msg}\n  {wher}"));
    std::process::abort()
}

/// The `schedtrace` interval from the knob's value: milliseconds, 0 or unparsable for none.
fn schedtrace_knob(v: Option<&str>) -> Option<std::time::Duration> {
    v?.parse::<u64>().ok().filter(|&ms| ms > 0).map(std::time::Duration::from_millis)
}

#[cfg(all(test, not(loom)))]
mod knob_tests {
    use super::schedtrace_knob;
    use crate::env::DebugVars;

    #[test]
    fn schedtrace_reads_milliseconds() {
        use std::time::Duration;
        let at = |list: &str| schedtrace_knob(DebugVars::parse(list).get("schedtrace"));
        assert_eq!(at("schedtrace=1000"), Some(Duration::from_secs(1)));
        assert_eq!(at("gctrace=1,schedtrace=5"), Some(Duration::from_millis(5)));
        assert_eq!(at("schedtrace"), Some(Duration::from_millis(1)));
        assert_eq!(at("schedtrace=0"), None);
        assert_eq!(at("schedtrace=soon"), None);
        assert_eq!(at("gctrace=1"), None);
    }
}

/// Errors from the runtime's API.
///
/// [`Error::Stack`] wraps the error of the stack layer, which [`source`] gives:
///
/// ```
/// use std::error::Error as _;
/// use safepoint_sched::{Error, Runtime};
///
/// let e = Runtime::builder().stack_size(100).build().unwrap_err();
/// assert!(matches!(e, Error::Stack(safepoint_arch::stack::StackError::BadSize(100))));
/// assert_eq!(e.source().unwrap().to_string(), e.to_string());
/// assert!(Runtime::builder().procs(0).build().unwrap_err().source().is_none());
/// ```
///
/// [`source`]: std::error::Error::source
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A goroutine stack could not be had (bad size or the kernel refused); the error is also
    /// the [`source`](std::error::Error::source).
    Stack(safepoint_arch::stack::StackError),
    /// A configuration value is out of range.
    Config(String),
    /// The runtime is shutting down.
    Shutdown,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Stack(e) => write!(f, "{e}"),
            Error::Config(s) => write!(f, "bad runtime configuration: {s}"),
            Error::Shutdown => write!(f, "the runtime is shutting down"),
        }
    }
}

/// [`Error::Stack`] gives the stack layer's error as its source (its message is also this
/// error's, so that printing an `Error` alone still says why).
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Stack(e) => Some(e),
            _ => None,
        }
    }
}

/// Runtime configuration; see [`Builder`] for the defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Number of Ps.
    pub procs: usize,
    /// Usable native stack size of each goroutine, bytes.
    pub stack_size: usize,
    /// How many unused stacks the runtime keeps mapped for reuse: a dead goroutine's G keeps
    /// its stack for the next spawn; past this many (and the few each P keeps at hand), a dead
    /// G gives its stack back to the OS.
    pub stack_cache: usize,
    /// Whether sysmon runs (time slices, retaking blocked Ps).
    pub sysmon: bool,
    /// Managed stacks: size limit (a goroutine exceeding it panics) and validation mode.
    pub managed_stack: safepoint_stackmap::StackConfig,
    /// Whether a deadlock of every goroutine makes `block_on` (and outside joins) panic with
    /// "all goroutines are asleep - deadlock!" (issue 4; see [`DEADLOCK`]).
    pub deadlock_detection: bool,
    /// The embedder's function registry, if it gives one: goroutine panics and goroutine dumps
    /// then carry tracebacks of the managed stacks.
    pub registry: Option<Arc<safepoint_stackmap::Registry>>,
    /// The watchdog (`SAFEPOINT_DEBUG=schedcheck=1`): a runnable goroutine left on a queue for
    /// a second while a P idles, a stop, barrier or suspension waiting a second, or a
    /// registered check failing aborts the process with a report of every queue, P, M and
    /// goroutine, instead of hanging.
    pub schedcheck: bool,
    /// Print a `schedtrace` line (as Go's `GODEBUG=schedtrace=MS`) this often, from sysmon,
    /// through the message sink ([`set_message_sink`]); `None`: never. See
    /// [`Builder::schedtrace`].
    pub schedtrace: Option<std::time::Duration>,
    /// Record an execution trace and write it to this file when the runtime is dropped
    /// (`SAFEPOINT_TRACE=FILE`); see [`Builder::trace`].
    pub trace: Option<std::path::PathBuf>,
}

/// Builds a [`Runtime`].
///
/// | setting | default |
/// |---|---|
/// | `procs` | `SAFEPOINT_MAXPROCS` if set, else the number of CPUs this process may use |
/// | `stack_size` | 256 KiB (virtual; committed as touched) |
/// | `stack_cache` | 4096 stacks |
/// | `sysmon` | on |
/// | `managed_stack_limit` | 1 GiB |
/// | `deadlock_detection` | on |
/// | `async_preempt` | on, unless `SAFEPOINT_DEBUG` has `asyncpreemptoff=1` |
/// | `schedcheck` | off, unless `SAFEPOINT_DEBUG` has `schedcheck=1` |
///
/// `SAFEPOINT_DEBUG` and `SAFEPOINT_MAXPROCS` are read when the builder is made (see
/// [`env`](mod@env)): `SAFEPOINT_DEBUG` is a comma-separated list of `key=value` debugging
/// knobs shared with the collector (a bare `key` is `key=1`; an unknown key is reported once
/// through the message sink). The scheduler's:
///
/// | key | meaning |
/// |---|---|
/// | `asyncpreemptoff=1` | never send the preemption signal: a goroutine that does not poll cannot be stopped |
/// | `schedcheck=1` | the watchdog: abort with a report of every queue, P, M and goroutine instead of hanging ([`Builder::schedcheck`]) |
/// | `schedtrace=MS` | every `MS` milliseconds, print a line of the scheduler's state ([`Builder::schedtrace`]) |
#[derive(Debug, Clone)]
pub struct Builder {
    config: Config,
    error: Option<String>,
    /// Asynchronous preemption (default on; `SAFEPOINT_DEBUG=asyncpreemptoff=1` turns it off).
    async_preempt: bool,
}

impl Default for Builder {
    fn default() -> Builder {
        let debug = env::DebugVars::from_env();
        Builder {
            config: Config {
                procs: env::maxprocs().unwrap_or_else(|| {
                    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
                }),
                stack_size: safepoint_arch::stack::DEFAULT_STACK_SIZE,
                stack_cache: 4096,
                sysmon: true,
                managed_stack: safepoint_stackmap::StackConfig::default(),
                deadlock_detection: true,
                registry: None,
                schedcheck: debug.flag("schedcheck") == Some(true),
                schedtrace: schedtrace_knob(debug.get("schedtrace")),
                trace: std::env::var_os("SAFEPOINT_TRACE")
                    .filter(|v| !v.is_empty())
                    .map(std::path::PathBuf::from),
            },
            error: None,
            async_preempt: debug.flag("asyncpreemptoff") != Some(true),
        }
    }
}

impl Builder {
    /// Number of Ps (1..=1024).
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(3).build().unwrap();
    /// assert_eq!(rt.procs(), 3);
    /// assert!(safepoint_sched::Runtime::builder().procs(0).build().is_err());
    /// ```
    pub fn procs(mut self, n: usize) -> Builder {
        self.config.procs = n;
        self
    }
    /// Usable native stack size per goroutine, bytes (at least 16 KiB).
    ///
    /// ```
    /// use safepoint_sched::Runtime;
    /// let rt = Runtime::builder().procs(1).stack_size(1 << 20).build().unwrap();
    /// // 1 MiB of native stack for each goroutine: room for deep recursion with big frames.
    /// fn depth(d: usize) -> usize {
    ///     let a = std::hint::black_box([1u8; 1024]);
    ///     if d == 0 { 0 } else { depth(d - 1) + a[0] as usize }
    /// }
    /// assert_eq!(rt.block_on(|| depth(300)), 300);
    /// assert!(Runtime::builder().stack_size(1024).build().is_err()); // under 16 KiB
    /// ```
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.config.stack_size = bytes;
        self
    }
    /// How many unused stacks to keep for reuse (see [`Config::stack_cache`]): after a burst
    /// of goroutines ends, the stacks past this many (and the up to 64 each P keeps at hand)
    /// are unmapped.
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(1).stack_cache(16).build().unwrap();
    /// for _ in 0..64 {
    ///     rt.spawn(|| ()).unwrap().join().unwrap(); // stacks come back to the cache
    /// }
    /// ```
    pub fn stack_cache(mut self, n: usize) -> Builder {
        self.config.stack_cache = n;
        self
    }
    /// Whether to run sysmon (off only for experiments: no time slices, no retaking of Ps from
    /// blocking calls).
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(1).sysmon(false).build().unwrap();
    /// assert_eq!(rt.block_on(|| 2 + 2), 4);
    /// ```
    pub fn sysmon(mut self, on: bool) -> Builder {
        self.config.sysmon = on;
        self
    }
    /// Whether to detect deadlocks (default on): when every goroutine is parked on a runtime
    /// primitive (channel, select, mutex, rwlock, cond, WaitGroup, join) and no timer is
    /// pending, a thread waiting in [`Runtime::block_on`] or [`JoinHandle::join`] panics with
    /// "all goroutines are asleep - deadlock!" and a line per goroutine saying what it waits
    /// on, instead of hanging. Turn it off if threads outside the runtime wake goroutines
    /// through these primitives (send on their channels, unlock their mutexes...): detection
    /// cannot see such threads coming.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime};
    /// let rt = Runtime::builder().procs(1).deadlock_detection(true).build().unwrap();
    /// let ch = Chan::<u8>::new(0);
    /// let r = rt.block_on_or_deadlock(move || ch.recv()); // nobody will ever send
    /// assert!(r.is_err());
    /// ```
    pub fn deadlock_detection(mut self, on: bool) -> Builder {
        self.config.deadlock_detection = on;
        self
    }
    /// Whether to preempt asynchronously (default on): a preemption request for a stop, a
    /// suspension or a ragged barrier that a goroutine does not answer at a synchronous
    /// safepoint within a few microseconds is followed by a signal to its thread, which holds
    /// the goroutine in place where it is (see the crate docs). Off, a goroutine in a loop that
    /// never polls holds up every stop forever. `SAFEPOINT_DEBUG=asyncpreemptoff=1` sets the
    /// default to off.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use safepoint_sched::{Runtime, go, stop_the_world};
    /// let rt = Runtime::builder().procs(2).async_preempt(true).build().unwrap();
    /// rt.block_on(|| {
    ///     let stop = Arc::new(AtomicBool::new(false));
    ///     let s = stop.clone();
    ///     // A loop with no safepoint at all: only the preemption signal can stop it.
    ///     let spinner = go(move || while !s.load(Ordering::Relaxed) { std::hint::spin_loop() });
    ///     let w = stop_the_world("example");
    ///     w.start();
    ///     stop.store(true, Ordering::Relaxed);
    ///     spinner.join().unwrap();
    /// });
    /// ```
    pub fn async_preempt(mut self, on: bool) -> Builder {
        self.async_preempt = on;
        self
    }
    /// Whether to run the watchdog (default off; `SAFEPOINT_DEBUG=schedcheck=1` sets the
    /// default to on). It turns a hang into a described failure: sysmon aborts the process with
    /// a report of every queue, every P and M and every goroutine's status when a runnable
    /// goroutine has waited on a queue for a second while a P was idle, or a check registered
    /// with [`RuntimeHandle::add_watchdog_check`] reports a problem (the collector's: a cycle
    /// stuck in one phase for 10 s); a stop of the world, a ragged barrier or a [`suspend_g`]
    /// called from a goroutine aborts the same way once it has waited a second. For tests and
    /// soaks: the bounds are far above what a healthy runtime shows, even on a loaded machine.
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(1).schedcheck(true).build().unwrap();
    /// assert!(rt.handle().schedcheck());
    /// ```
    pub fn schedcheck(mut self, on: bool) -> Builder {
        self.config.schedcheck = on;
        self
    }
    /// Prints a line of the scheduler's state every `every` (`None`: never, the default;
    /// `SAFEPOINT_DEBUG=schedtrace=MS` sets the default to `MS` milliseconds), as Go's
    /// `GODEBUG=schedtrace=MS` does, from sysmon, through the message sink
    /// ([`set_message_sink`]; standard error by default):
    ///
    /// ```text
    /// SCHED 1004ms: gomaxprocs=2 idleprocs=0 threads=5 spinningthreads=0 idlethreads=2 runqueue=0 [0 1]
    /// ```
    ///
    /// The time since the runtime started; the Ps, and how many are idle; the OS threads
    /// running goroutines (Ms), how many look for work and how many sleep; the goroutines on
    /// the global queue (and the urgent one), then on each P's queue. Needs sysmon (the
    /// default); an interval under a millisecond is raised to one.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use safepoint_sched::{Runtime, set_message_sink};
    /// let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    /// let l = lines.clone();
    /// set_message_sink(Some(Box::new(move |m: &str| l.lock().unwrap().push(m.to_string()))));
    /// let every = Some(Duration::from_millis(1));
    /// let rt = Runtime::builder().procs(1).schedtrace(every).build().unwrap();
    /// while !lines.lock().unwrap().iter().any(|m| m.starts_with("SCHED ")) {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// drop(rt);
    /// set_message_sink(None);
    /// ```
    pub fn schedtrace(mut self, every: Option<std::time::Duration>) -> Builder {
        self.config.schedtrace = every;
        self
    }
    /// Records an execution trace and writes it to `file` when the runtime is dropped (`None`:
    /// no trace, the default unless `SAFEPOINT_TRACE=FILE` is set): every P's goroutine run
    /// spans, the collector's phases, stack scans and assists, and the stops of the world, as
    /// Chrome trace-event JSON, which Perfetto (ui.perfetto.dev) and `chrome://tracing` open.
    /// One track per P, one for the collector's phases, one for the stops. Recording appends
    /// to per-P buffers without a lock; off, it costs a predictable branch per goroutine
    /// switch. A failure to write the file is reported through the message sink.
    ///
    /// ```
    /// use safepoint_sched::Runtime;
    /// let file = std::env::temp_dir().join(format!("example-trace-{}.json", std::process::id()));
    /// let rt = Runtime::builder().procs(1).trace(Some(file.clone())).build().unwrap();
    /// rt.block_on(|| ());
    /// drop(rt); // writes the file
    /// let json = std::fs::read_to_string(&file).unwrap();
    /// assert!(json.starts_with("{\"traceEvents\":["));
    /// std::fs::remove_file(file).unwrap();
    /// ```
    pub fn trace(mut self, file: Option<std::path::PathBuf>) -> Builder {
        self.config.trace = file;
        self
    }
    /// The function registry of the managed stacks: with it, a goroutine's panic (on its join
    /// handle, or printed) and `Runtime::dump_goroutines` include managed-stack tracebacks.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::{Runtime, stackmap::Registry};
    /// let reg = Arc::new(Registry::new());
    /// let rt = Runtime::builder().procs(1).registry(reg.clone()).build().unwrap();
    /// assert!(Arc::ptr_eq(rt.handle().registry().unwrap(), &reg));
    /// ```
    pub fn registry(mut self, reg: Arc<safepoint_stackmap::Registry>) -> Builder {
        self.config.registry = Some(reg);
        self
    }

    /// Size limit of each goroutine's managed stack, bytes (default 1 GiB): a goroutine that
    /// grows past it panics with "goroutine N: managed stack exceeds LIMIT".
    ///
    /// ```
    /// use safepoint_sched::{Runtime, stackmap::{FuncDesc, Registry}, with_managed_stack};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 1000, 0, 1)).unwrap();
    /// let rt = Runtime::builder().procs(1).managed_stack_limit(64 * 1024).build().unwrap();
    /// // 8 KiB frames: the ninth push passes 64 KiB and panics in that goroutine.
    /// let deep = move || with_managed_stack(|ms| (0..100).for_each(|_| ms.push(f)));
    /// let r = rt.spawn(deep).unwrap();
    /// let e = r.join().unwrap_err();
    /// assert!(e.message().unwrap().contains("managed stack exceeds"), "{e}");
    /// ```
    pub fn managed_stack_limit(mut self, bytes: usize) -> Builder {
        if bytes > safepoint_stackmap::StackConfig::MAX_LIMIT {
            self.error = Some(format!(
                "managed stack limit {bytes} is over the maximum of {} bytes",
                safepoint_stackmap::StackConfig::MAX_LIMIT
            ));
        } else {
            self.config.managed_stack = self.config.managed_stack.limit_bytes(bytes);
        }
        self
    }
    /// The configuration as built so far, for unit tests that make a `Sched` of their own.
    #[cfg(test)]
    pub(crate) fn config_for_tests(self) -> Config {
        self.config
    }

    /// Starts the runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for a setting out of range, [`Error::Stack`] if the first goroutine
    /// stacks cannot be mapped.
    ///
    /// ```
    /// use safepoint_sched::{Error, Runtime};
    ///
    /// let rt = Runtime::builder().procs(2).stack_size(64 * 1024).build()?;
    /// assert_eq!(rt.procs(), 2);
    /// // A bad setting is an error, not a panic.
    /// assert!(matches!(Runtime::builder().procs(0).build(), Err(Error::Config(_))));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn build(self) -> Result<Runtime, Error> {
        if let Some(e) = self.error {
            return Err(Error::Config(e));
        }
        let c = self.config;
        if c.procs == 0 || c.procs > 1024 {
            return Err(Error::Config(format!("procs must be 1..=1024, got {}", c.procs)));
        }
        let sched = Sched::new(c, self.async_preempt)?;
        let sysmon = if sched.config.sysmon {
            let s = sched.clone();
            Some(
                std::thread::Builder::new()
                    .name("safepoint-sysmon".into())
                    .spawn(move || sysmon::run(s))
                    .map_err(|e| Error::Config(format!("cannot start sysmon: {e}")))?,
            )
        } else {
            None
        };
        Ok(Runtime { sched, sysmon })
    }
}

/// A goroutine runtime. Dropping it shuts it down and gives back everything its goroutines
/// held: every live goroutine is unwound with the [`RuntimeShutdown`] payload at its next
/// safepoint (a poll or frame push, a yield, a park, the start or end of a blocking call), so
/// the destructors of what it captured run; a goroutine that never started has its closure
/// dropped without running it; then every M exits, every thread is joined and every stack is
/// freed. See "Shutdown" in the crate docs for what cannot be unwound (and is abandoned
/// instead).
///
/// Dropping the last handle from inside one of the runtime's own goroutines (an
/// `Arc<Runtime>` captured by a goroutine) cannot wait for that goroutine's own M to exit: it
/// is a described panic of that goroutine, and the shutdown runs to its end on a thread of its
/// own.
pub struct Runtime {
    sched: Arc<Sched>,
    sysmon: Option<std::thread::JoinHandle<()>>,
}

impl core::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Runtime(procs {})", self.sched.procs)
    }
}

/// A snapshot of the runtime's counters.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Stats {
    /// Goroutines spawned and not yet exited.
    pub goroutines: usize,
    /// Gs allocated (live, dead and cached).
    pub gs: usize,
    /// OS threads running goroutines (Ms).
    pub ms: usize,
    /// Ps.
    pub procs: usize,
    /// Idle Ps now.
    pub idle_procs: usize,
    /// Goroutines queued now: on the global queue, the urgent queue and every P's queue
    /// (`runnext` included).
    pub queued: usize,
    /// Preemption signals sent (asynchronous preemption; at most one pending per M).
    pub preempt_signals: u64,
    /// Goroutines the signal held in place (asynchronous preemptions taken).
    pub async_preemptions: u64,
    /// Signals the handler declined: the thread was on g0 or a signal stack, in the runtime's
    /// assembly or the C library, short of stack, in a runtime critical section or a
    /// `no_preempt` section, or the request had been answered meanwhile.
    pub async_declined: u64,
    /// Goroutines that a stop of the world gave back from an asynchronous hold because it could
    /// not finish while holding them (one of them may hold an OS lock that a running P's
    /// thread waits for in the kernel; see [`stop_the_world`]).
    pub stop_givebacks: u64,
    /// Times sysmon moved the goroutines queued on a P to the global queue because the P's
    /// thread had held its goroutine in place (the preemption signal's hold) for over a
    /// millisecond: they would otherwise wait for the hold to end, and the hold may be waiting
    /// for one of them (a suspender that asked and was queued there).
    pub held_queue_handoffs: u64,
    /// Times sysmon found a timer 10 ms overdue with every P idle and woke an M to run it:
    /// the backstop of the M that sleeps until the next deadline (see the timer module). Each
    /// is a timer that fired late; on a machine with cores to spare it stays 0.
    pub timer_backstops: u64,
}

impl Runtime {
    /// A runtime with the default configuration.
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::new()?;
    /// assert_eq!(rt.block_on(|| 6 * 7), 42);
    /// # Ok::<(), safepoint_sched::Error>(())
    /// ```
    pub fn new() -> Result<Runtime, Error> {
        Builder::default().build()
    }

    /// A builder with the defaults.
    ///
    /// ```
    /// use safepoint_sched::Runtime;
    /// let rt = Runtime::builder().procs(2).build().unwrap();
    /// assert_eq!(rt.procs(), 2);
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Number of Ps.
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(4).build().unwrap();
    /// assert_eq!(rt.procs(), 4);
    /// ```
    pub fn procs(&self) -> usize {
        self.sched.procs
    }

    /// A handle naming this runtime (for a collector that must know which goroutines are its).
    ///
    /// ```
    /// use safepoint_sched::Runtime;
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// let h = rt.handle();
    /// assert!(!h.is_current()); // this thread is not one of its goroutines
    /// assert!(rt.block_on(move || h.is_current()));
    /// ```
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle::new(self.sched.clone())
    }

    /// Spawns a goroutine from any thread.
    ///
    /// ```
    /// use safepoint_sched::Runtime;
    ///
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// // From a thread outside the runtime; the handle joins from anywhere.
    /// let h = rt.spawn(|| (1..=10).sum::<u32>()).unwrap();
    /// assert_eq!(h.join().unwrap(), 55);
    /// ```
    pub fn spawn<T, F>(&self, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        spawn_on(&self.sched, f)
    }

    /// Runs `f` as a goroutine and waits (blocking this thread) for its result; a panic in it
    /// is resumed here. If every goroutine deadlocks (see [`Builder::deadlock_detection`]),
    /// panics with a message starting "all goroutines are asleep - deadlock!".
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime, go};
    ///
    /// let rt = Runtime::builder().procs(2).build().unwrap();
    /// let n = rt.block_on(|| {
    ///     let ch = Chan::new(0);
    ///     let tx = ch.clone();
    ///     go(move || tx.send(21));
    ///     ch.recv().unwrap() * 2
    /// });
    /// assert_eq!(n, 42);
    /// ```
    pub fn block_on<T, F>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let h = self.spawn(f).unwrap_or_else(|e| panic!("block_on: {e}"));
        match h.join() {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// [`Runtime::block_on`], returning a deadlock of every goroutine as an error instead of
    /// panicking with it: an embedder reports it in its own words (Pebble prints each
    /// goroutine's script traceback). A panic of `f` still resumes on the caller.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime};
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// assert_eq!(rt.block_on_or_deadlock(|| 7).unwrap(), 7);
    /// let ch = Chan::<u8>::new(0);
    /// let report = rt.block_on_or_deadlock(move || ch.recv()).unwrap_err();
    /// let text = report.to_string();
    /// assert!(text.starts_with("all goroutines are asleep - deadlock!"), "{text}");
    /// ```
    pub fn block_on_or_deadlock<T, F>(&self, f: F) -> Result<T, DeadlockReport>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let h = self.spawn(f).unwrap_or_else(|e| panic!("block_on: {e}"));
        match h.join_or_deadlock()? {
            Ok(v) => Ok(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Ends the execution trace ([`Builder::trace`]) now and writes its file, rather than when
    /// the runtime is dropped: for a program that leaves its runtime to the process's exit.
    /// Nothing is recorded after it. Does nothing if the trace is off or already written.
    ///
    /// Stops the world for as long as it takes to collect every P's buffer (the file is
    /// written after the restart). Runs a goroutine for it: call it from outside the runtime
    /// or from a goroutine, as [`Runtime::block_on`].
    ///
    /// ```
    /// use safepoint_sched::Runtime;
    /// let file = std::env::temp_dir().join(format!("stop-trace-{}.json", std::process::id()));
    /// let rt = Runtime::builder().procs(1).trace(Some(file.clone())).build().unwrap();
    /// rt.block_on(|| ());
    /// rt.stop_trace(); // written now, though the runtime lives on
    /// assert!(std::fs::read_to_string(&file).unwrap().contains("traceEvents"));
    /// std::fs::remove_file(file).unwrap();
    /// ```
    pub fn stop_trace(&self) {
        if self.sched.trace.is_none() {
            return;
        }
        let sched = self.sched.clone();
        let taken = self.block_on(move || {
            let stop = stop_the_world("trace stop");
            // SAFETY: every P is stopped and this goroutine's M owns its own: no other M
            // writes a P's trace buffer until the restart.
            let mut ps: Vec<_> = sched.ps.iter().map(|p| unsafe { p.trace.get() }).collect();
            let t = sched.trace.as_ref().expect("checked above");
            let taken = t.take(&mut ps);
            drop(ps);
            drop(stop);
            taken
        });
        if let (Some(t), Some(taken)) = (&self.sched.trace, taken) {
            t.write(taken);
        }
    }

    /// Counters.
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(2).build().unwrap();
    /// rt.block_on(|| ());
    /// let s = rt.stats();
    /// assert_eq!(s.procs, 2);
    /// ```
    pub fn stats(&self) -> Stats {
        let s = &self.sched;
        let (gs, ms) = s.counts();
        Stats {
            goroutines: s.ngoroutines.load(Ordering::Relaxed),
            gs,
            ms,
            procs: s.procs,
            idle_procs: s.npidle.load(Ordering::Relaxed),
            queued: runtime::queued(s),
            preempt_signals: s.preempt_signals.load(Ordering::Relaxed),
            async_preemptions: s.async_preemptions.load(Ordering::Relaxed),
            async_declined: s.async_declined.load(Ordering::Relaxed),
            stop_givebacks: s.stuck_givebacks.load(Ordering::Relaxed),
            held_queue_handoffs: s.unstranded.load(Ordering::Relaxed),
            timer_backstops: s.timers.backstops.load(Ordering::Relaxed),
        }
    }

    /// Every goroutine that is not dead, as `goroutine N [status, wait reason]` lines, after a
    /// first line counting every run queue: `queued: global N, urgent N, P0 N, P1 N, ...`.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime};
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// let ch = Chan::<u8>::new(0);
    /// let rx = ch.clone();
    /// let h = rt.spawn(move || rx.recv()).unwrap();
    /// while ch.waiting() != (0, 1) {
    ///     std::thread::yield_now();
    /// }
    /// let dump = rt.dump_goroutines();
    /// assert!(dump.starts_with("queued: global "), "{dump}");
    /// assert!(dump.contains(&format!("goroutine {} [", h.id())), "{dump}");
    /// ch.close();
    /// h.join().unwrap().unwrap_err();
    /// ```
    pub fn dump_goroutines(&self) -> String {
        let gs = self.sched.all_gs();
        let s = &self.sched;
        let mut out = format!("queued: global {}, urgent {}", s.global.len(), s.urgent.len());
        for p in s.ps.iter() {
            out.push_str(&format!(", P{} {}", p.id, p.runq_len()));
        }
        out.push('\n');
        for g in gs {
            let g = g.get();
            let w = g.status.load();
            if matches!(w.base(), Some(status::Status::Dead) | Some(status::Status::Idle)) {
                continue;
            }
            let why =
                g::WAIT_REASONS.get(g.wait_reason.load(Ordering::Relaxed)).copied().unwrap_or("");
            out.push_str(&format!(
                "goroutine {} [{}{}{}]\n",
                g::goid(g),
                w,
                if why.is_empty() { "" } else { ", " },
                why
            ));
            // A goroutine that is not running is held for an instant to read its managed stack;
            // a running one is not stopped for a dump.
            if let Some(reg) = &self.sched.config.registry
                && let Some(held) = stw::try_hold(g)
                && let Some(tb) = held.traceback(reg)
                && tb.depth() > 0
            {
                out.push_str(&tb.to_string());
            }
        }
        out
    }

    /// Every goroutine that is not dead (for [`suspend_g`]-based scans).
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime};
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// let ch = Chan::<u8>::new(0);
    /// let rx = ch.clone();
    /// let h = rt.spawn(move || rx.recv()).unwrap();
    /// assert!(rt.goroutines().iter().any(|g| g.id() == h.id()));
    /// ch.close();
    /// h.join().unwrap().unwrap_err();
    /// ```
    pub fn goroutines(&self) -> Vec<Goroutine> {
        let gs = self.sched.all_gs();
        gs.into_iter()
            .filter(|g| {
                !matches!(
                    g.get().status.load().base(),
                    Some(status::Status::Dead) | Some(status::Status::Idle)
                )
            })
            .map(|g| Goroutine { g })
            .collect()
    }

    fn shutdown(&mut self) {
        shutdown(&self.sched, self.sysmon.take());
    }
}

/// The payload a goroutine is unwound with when its runtime shuts down (see [`Runtime`]): a
/// [`JoinHandle::join`] of such a goroutine returns it as the error's
/// [`JoinError::into_panic`]. It is raised with `std::panic::resume_unwind`, so no panic
/// message is printed. Code that catches it should let the goroutine end: it is not sent
/// twice, so a goroutine that blocks again after it is abandoned where it blocks, and one that
/// runs on holds the drop until it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeShutdown {
    /// The id of the unwound goroutine.
    pub goroutine: u64,
}

impl core::fmt::Display for RuntimeShutdown {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "goroutine {} unwound: its runtime shut down", self.goroutine)
    }
}

/// How often shutdown looks at the goroutines while they unwind (and asks the running ones to
/// reach a safepoint again).
const DRAIN_LOOK: std::time::Duration = std::time::Duration::from_micros(200);

/// How long shutdown waits for the goroutines to settle, and then for each M to exit, before
/// it leaves the rest running (see "Shutdown" in the crate docs): a goroutine that never
/// reaches a safepoint (a loop that never polls, a blocking call that never returns) cannot be
/// made to stop, and the drop must return anyway.
const DRAIN_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether every goroutine of `sched` has ended or is parked where shutdown leaves it (a park
/// shutdown cannot end, or one made after the goroutine was unwound).
fn settled(sched: &Sched) -> bool {
    let gs = sched.all_gs();
    gs.iter().all(|g| g_settled(g.get()))
}

/// Whether `g` has ended or is parked where shutdown leaves it (see [`settled`]).
fn g_settled(g: &g::G) -> bool {
    let w = g.status.load();
    match w.base() {
        Some(status::Status::Dead) | Some(status::Status::Idle) => true,
        Some(status::Status::Waiting) if !w.scanning() => {
            !g.cancellable.load(Ordering::Relaxed) || g.unwound.load(Ordering::Relaxed)
        }
        _ => false,
    }
}

/// Ends every park that shutdown may end (see `proc::park_cancellable`): the goroutine is made
/// runnable with `cancelled` set, and its parking primitive unlinks what it linked and unwinds.
fn cancel_parks(sched: &Sched) {
    let gs = sched.all_gs();
    for g in gs {
        let gr = g.get();
        let w = gr.status.load();
        if w.state != status::Status::Waiting as u32
            || !gr.cancellable.load(Ordering::Relaxed)
            || gr.unwound.load(Ordering::Relaxed)
        {
            continue;
        }
        // The generation read with the state: if the goroutine has resumed and parked again
        // since (where shutdown may not end the park, perhaps), the generation has moved on
        // and the CAS fails. So `cancellable` above was that of this very park.
        if gr.status.try_cas(
            status::Status::Waiting as u32,
            status::Status::Runnable as u32,
            Some(w.generation),
        ) == status::Cas::Ok
        {
            // Relaxed: the queue hand-off below publishes it to the goroutine.
            gr.cancelled.store(true, Ordering::Relaxed);
            sched.enqueue(g, false);
        }
    }
}

/// Shuts `sched` down (see [`Runtime`]): drains, then stops every M and frees every G.
fn shutdown(sched: &Arc<Sched>, sysmon: Option<std::thread::JoinHandle<()>>) {
    // Phase 1, draining. SeqCst: pairs with the loads in spawn (a goroutine spawned after we
    // set it was refused, so the G list we look at is complete but for refused spawns) and in
    // `proc::draining`.
    sched.draining.store(true, Ordering::SeqCst);
    // Two looks in a row must find everything settled: a look is not a snapshot (a goroutine
    // seen parked may be readied by one seen later, which then parks).
    let mut quiet = 0;
    let drain_start = std::time::Instant::now();
    // Whether some goroutine never settled within the bound: its M is then left running.
    let mut stuck = false;
    while quiet < 2 {
        // Running goroutines unwind at their next safepoint: ask them to reach one.
        sched.preemptall();
        cancel_parks(sched);
        if settled(sched) {
            quiet += 1;
        } else {
            quiet = 0;
            if drain_start.elapsed() >= DRAIN_BOUND {
                stuck = true;
                break;
            }
        }
        std::thread::sleep(DRAIN_LOOK);
    }
    if stuck {
        // Goroutines that had not unwound or settled within the bound are abandoned where
        // they are (parked ones keep their stacks mapped, and what they captured leaks): say
        // so, whether or not their threads then exit.
        let gs = sched.all_gs();
        let left: Vec<&g::G> = gs.iter().map(|g| g.get()).filter(|g| !g_settled(g)).collect();
        // The first few, with their states (where each was when the drain gave up on it).
        let mut which = String::new();
        for g in left.iter().take(8) {
            let why = g::WAIT_REASONS.get(g.wait_reason.load(Ordering::Relaxed)).copied();
            which += &format!("; goroutine {} ({}", g::goid(g), g.status.load());
            if let Some(why) = why.filter(|w| !w.is_empty()) {
                which += &format!(", {why}");
            }
            which += ")";
        }
        message(format_args!(
            "safepoint: a runtime was dropped with {} goroutine(s) that did not unwind within \
             {DRAIN_BOUND:?}; they are abandoned where they are, with what they hold{which}",
            left.len()
        ));
    }
    // Phase 2: the Ms leave their loops.
    {
        sched.shutdown.store(true, Ordering::SeqCst);
        sched.preemptall();
        sched.sysmon_note.wakeup();
        loop {
            {
                let mut l = sched.locked();
                for m in l.midle.drain(..) {
                    // SAFETY: idle Ms are owned by `allm`, alive until we clear it below.
                    unsafe { &*m }.park.wakeup();
                }
            }
            let threads =
                core::mem::take(&mut *sched.threads.lock().unwrap_or_else(|e| e.into_inner()));
            if threads.is_empty() {
                break;
            }
            let exit_start = std::time::Instant::now();
            let mut left = 0usize;
            for t in threads {
                // Keep asking running goroutines to reach a safepoint while we wait.
                while !t.is_finished() {
                    if stuck && exit_start.elapsed() >= DRAIN_BOUND {
                        break;
                    }
                    sched.preemptall();
                    {
                        let mut l = sched.locked();
                        for m in l.midle.drain(..) {
                            // SAFETY: as above.
                            unsafe { &*m }.park.wakeup();
                        }
                    }
                    std::thread::park_timeout(std::time::Duration::from_micros(200));
                }
                if t.is_finished() {
                    let _ = t.join();
                } else {
                    // Detached: it runs a goroutine that never reaches a safepoint.
                    left += 1;
                }
            }
            if left > 0 {
                // The runtime stays alive for the threads left running: they read its Ps, Ms
                // and Gs, and a goroutine of theirs that reaches a safepoint later finds the
                // runtime shut down and is abandoned there, its M exiting. What such
                // goroutines hold (their stacks, their captures) is leaked with it.
                message(format_args!(
                    "safepoint: a runtime was dropped with {left} thread(s) running goroutines \
                     that never reached a safepoint within {DRAIN_BOUND:?} (a loop that does not \
                     poll, or a blocking call that does not return); they are left running and \
                     the runtime's memory with them"
                ));
                core::mem::forget(sched.clone());
                if let Some(t) = sysmon {
                    let _ = t.join();
                }
                return;
            }
        }
        if let Some(t) = sysmon {
            let _ = t.join();
        }
        if let Some(t) = &sched.trace {
            // SAFETY: every M has exited: nobody else owns a P.
            let mut ps: Vec<_> = sched.ps.iter().map(|p| unsafe { p.trace.get() }).collect();
            if let Some(taken) = t.take(&mut ps) {
                t.write(taken);
            }
        }
        runtime::drain_queues(sched);
        let gs = sched.allgs.take();
        for g in gs {
            // SAFETY: every M has exited, so nothing runs on any G's stack and nobody else owns
            // them.
            unsafe { g.get().retire() };
        }
        sched.gfree.lock().unwrap_or_else(|e| e.into_inner()).clear();
        sched.allm.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let own = runtime::current_m()
            .filter(|m| core::ptr::eq(m.sched, Arc::as_ptr(&self.sched)))
            .and_then(|m| m.curg());
        let Some(g) = own else {
            self.shutdown();
            return;
        };
        // Inside one of our own goroutines: its M cannot wait for itself to exit. The shutdown
        // runs on a thread of its own; this goroutine unwinds (with this panic, or with the
        // unwind it is already in) and its M exits with the others.
        let id = g::goid(g);
        let sched = self.sched.clone();
        let sysmon = self.sysmon.take();
        let started = std::thread::Builder::new()
            .name("safepoint-shutdown".into())
            .spawn(move || shutdown(&sched, sysmon));
        if started.is_err() {
            // No thread to finish it: at least every goroutine unwinds. SeqCst: as in
            // `shutdown`.
            self.sched.draining.store(true, Ordering::SeqCst);
        }
        if !std::thread::panicking() {
            panic!(
                "goroutine {id}: the runtime was dropped inside one of its own goroutines; it \
                 cannot wait there for its own threads to exit, so it shuts down on a thread of \
                 its own (drop the last handle outside the runtime)"
            );
        }
    }
}

fn spawn_on<T, F>(sched: &Arc<Sched>, f: F) -> Result<JoinHandle<T>, Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let cell = join::Cell::new();
    let c2 = cell.clone();
    let body = g::Body::new(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            // Started after shutdown began: `f` is dropped without running.
            if let Some(g) = runtime::current_g() {
                proc::unwind_if_draining(g);
            }
            f()
        }));
        // A panic's managed-stack traceback, while the frames are still there.
        let traceback = if r.is_err() { proc::managed_traceback() } else { None };
        // Goroutine-locals go before the result is published: a joiner sees them dropped.
        proc::drop_current_locals();
        c2.complete(goroutine_id().unwrap_or(0), r, traceback);
    });
    let g = sched.spawn(body)?;
    let id = g::goid(g);
    Ok(JoinHandle::new(cell, id, Goroutine { g: GPtr::from(g) }))
}

/// Spawns a goroutine on the calling goroutine's runtime (Go's `go` statement).
///
/// Panics off a goroutine or if no stack can be had; [`try_go`] returns the error instead.
///
/// ```
/// use safepoint_sched::{Runtime, go};
///
/// let rt = Runtime::builder().procs(2).build().unwrap();
/// let total: u64 = rt.block_on(|| {
///     let hs: Vec<_> = (0..10u64).map(|i| go(move || i * i)).collect();
///     hs.into_iter().map(|h| h.join().unwrap()).sum()
/// });
/// assert_eq!(total, 285);
/// ```
pub fn go<T, F>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    try_go(f).unwrap_or_else(|e| panic!("go: {e}"))
}

/// Spawns a goroutine on the calling goroutine's runtime, or says why it cannot.
///
/// ```
/// use safepoint_sched::{Runtime, try_go};
/// let rt = Runtime::builder().procs(1).build().unwrap();
/// let v = rt.block_on(|| try_go(|| 5).unwrap().join().unwrap());
/// assert_eq!(v, 5);
/// ```
pub fn try_go<T, F>(f: F) -> Result<JoinHandle<T>, Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let m = runtime::current_m()
        .unwrap_or_else(|| panic!("go: not on a goroutine of a safepoint runtime"));
    // SAFETY: an M's Sched outlives the M; we clone the Arc through the owner of a live G.
    let g = m.curg().unwrap_or_else(|| panic!("go: not on a goroutine of a safepoint runtime"));
    let sched = g
        .owner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .expect("running goroutine without a runtime");
    spawn_on(&sched, f)
}

/// Why a goroutine is parked (shown in goroutine dumps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum WaitReason {
    /// Unspecified.
    Park = 1,
    /// Joining another goroutine.
    Join = 2,
    /// A semaphore.
    Sema = 3,
    /// A WaitGroup.
    WaitGroup = 4,
    /// Sleeping.
    Sleep = 6,
    /// A channel operation.
    Chan = 7,
    /// A select.
    Select = 8,
    /// A mutex.
    Mutex = 9,
    /// Sending on a channel (issue 4: the sync primitives' finer reasons, for deadlock dumps).
    ChanSend = 10,
    /// Receiving from a channel.
    ChanRecv = 11,
    /// A reader-writer lock.
    RwLock = 12,
    /// A condition variable.
    Cond = 13,
}

/// The single-use wake-up token of one park of one goroutine: [`GoroutineRef::ready`] makes
/// that goroutine runnable again. A token for an earlier park (or used twice) is refused with a
/// described panic: it cannot wake a later park by mistake.
#[derive(Debug)]
pub struct GoroutineRef {
    pub(crate) g: GPtr,
    pub(crate) generation: u32,
}

impl GoroutineRef {
    /// Makes the goroutine runnable.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use safepoint_sched::{GoroutineRef, Runtime, WaitReason, go, park, yield_now};
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let slot: Arc<Mutex<Option<GoroutineRef>>> = Arc::default();
    ///     let s = slot.clone();
    ///     let sleeper = go(move || {
    ///         park(WaitReason::Park, |token| {
    ///             *s.lock().unwrap() = Some(token); // where the waker finds it
    ///             true
    ///         });
    ///         "woken"
    ///     });
    ///     let token = loop {
    ///         if let Some(t) = slot.lock().unwrap().take() {
    ///             break t;
    ///         }
    ///         yield_now();
    ///     };
    ///     assert_eq!(token.id(), sleeper.id());
    ///     token.ready();
    ///     assert_eq!(sleeper.join().unwrap(), "woken");
    /// });
    /// ```
    pub fn ready(self) {
        proc::ready(self)
    }

    /// The parked goroutine's id.
    ///
    /// ```
    /// use safepoint_sched::{Runtime, WaitReason, goroutine_id, park};
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let me = goroutine_id().unwrap();
    ///     park(WaitReason::Park, |token| {
    ///         assert_eq!(token.id(), me);
    ///         false // cancel the park: continue at once
    ///     });
    /// });
    /// ```
    pub fn id(&self) -> u64 {
        g::goid(self.g.get())
    }
}

/// Parks the running goroutine. After the switch away, on the M's g0, `f` is called with the
/// goroutine's wake-up token: it stores it where a waker will find it (and returns true), or
/// returns false to cancel the park (the goroutine then continues at once).
///
/// `f` runs on another stack while the goroutine is held (it cannot be readied or scanned
/// until `f` returns), so `f` may borrow from the caller. `f` must not park, yield, or ready the
/// goroutine it is parking (return false instead): that would wait for itself.
///
/// When the runtime shuts down, the park may be ended without the token: the goroutine is
/// then unwound with [`RuntimeShutdown`] (see "Shutdown" in the crate docs); the token it gave
/// out is stale from then on, and readying it while the runtime shuts down does nothing.
///
/// Runs on: a goroutine (a described panic otherwise, or inside a `no_preempt` section).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use safepoint_sched::{GoroutineRef, Runtime, WaitReason, go, park, yield_now};
/// let rt = Runtime::builder().procs(2).build().unwrap();
/// rt.block_on(|| {
///     let waiter: Arc<Mutex<Option<GoroutineRef>>> = Arc::default();
///     let w = waiter.clone();
///     let h = go(move || {
///         park(WaitReason::Park, |t| {
///             *w.lock().unwrap() = Some(t);
///             true
///         });
///     });
///     loop {
///         if let Some(t) = waiter.lock().unwrap().take() {
///             t.ready();
///             break;
///         }
///         yield_now();
///     }
///     h.join().unwrap();
/// });
/// ```
pub fn park<F>(reason: WaitReason, f: F)
where
    F: FnOnce(GoroutineRef) -> bool,
{
    proc::park(reason as usize, f)
}
