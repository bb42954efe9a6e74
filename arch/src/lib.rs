//! # safepoint-arch: the machinery under the scheduler
//!
//! Everything in safepoint that depends on the processor or the operating system lives here,
//! behind one surface, so that the scheduler and the collector above are written once.
//!
//! * **Context switch** ([`Context`], [`switch`], [`Context::new_on_stack`]). A goroutine is a
//!   stack plus a saved stack pointer. Switching saves the callee-saved registers of the running
//!   side on its own stack, stores its stack pointer, loads the other side's and pops its
//!   registers. Only callee-saved state is kept: a switch is an ordinary function call as far as
//!   the compiler is concerned, so caller-saved registers are already dead. A fresh stack is
//!   laid out so that the first switch into it "returns" into a trampoline that calls the
//!   goroutine's entry function. The per-target files (`x86_64.rs`, `aarch64.rs`) draw the layouts.
//! * **Goroutine stacks** ([`stack`]). mmap'd, lazily committed, with a guard page (of the
//!   running kernel's page size) at the low end, pooled so that spawning a goroutine does not
//!   call mmap on its fast path.
//! * **Fault signals** ([`signal`]). A SIGSEGV handler on an alternate signal stack recognises a hit
//!   on the current goroutine's guard page and dies with "goroutine N: native stack overflow"
//!   instead of a bare segmentation fault; any other fault goes to the handler that was there
//!   before.
//! * **Asynchronous preemption** ([`preempt`]). The scheduler stops a goroutine that never
//!   polls by sending its thread `SIGURG` (`tgkill`). The handler, on the alternate signal
//!   stack, checks that the thread is on a goroutine stack (not g0, not a signal stack), outside
//!   the context switch, the trampoline and the C library, with room below the stack pointer
//!   (and, on x86_64, below the red zone), then
//!   asks the scheduler's `decide` hook. If both agree it edits the signal context so that the
//!   goroutine "calls" a trampoline from the interrupted instruction: the trampoline saves every
//!   general-purpose register, the flags and the vector state (XSAVE sized by CPUID, or FXSAVE)
//!   on the goroutine's stack, calls the scheduler's `hold` hook, restores everything and
//!   returns to the interrupted instruction with the stack pointer as it was (`ret 128` skips
//!   the red zone it stepped over). On aarch64 the handler instead copies the kernel's signal
//!   frame (every general register, NZCV, v0-v31 with FPSR and FPCR) onto the goroutine's stack,
//!   and the trampoline calls `hold` and resumes with `rt_sigreturn` on that copy. Nothing
//!   switches stacks: the hold is an ordinary call on the same thread. `x86_64.rs` and
//!   `aarch64.rs` draw the held stack.
//! * **Notes** ([`Note`]). One-shot futex events for parking an M: sleep, sleep with a timeout,
//!   wake-up, clear. A wake-up with no sleeper makes no system call.
//! * **Clocks and spinning** ([`nanotime`], [`cpu_relax`], [`os_yield`]).
//! * **Messages** ([`message`], [`set_message_sink`]). The one place every crate above writes
//!   its diagnostics and fatal reports, standard error by default; here, at the bottom, so that
//!   the managed-stack walker reports a corrupted stack through the same sink as the scheduler
//!   and the collector. (The guard-page handler's "native stack overflow" alone writes to file
//!   descriptor 2 directly: it runs in a signal handler, where a sink that may allocate or lock
//!   cannot be called.)
//!
//! One file per target exports the same items: `x86_64.rs` and `aarch64.rs`, both for Linux.
//! The two differ in how a held goroutine resumes: x86_64's trampoline saves and restores every
//! register itself and returns with `ret`, while aarch64, which cannot branch without a register
//! to hold the target, copies the kernel's signal frame onto the goroutine's stack and resumes
//! through `rt_sigreturn` (see `aarch64.rs`). Everything else, and everything above this crate,
//! is the same on both.

#![cfg_attr(
    not(all(any(target_arch = "x86_64", target_arch = "aarch64"), target_os = "linux")),
    allow(unused)
)]

#[cfg(not(all(any(target_arch = "x86_64", target_arch = "aarch64"), target_os = "linux")))]
compile_error!("safepoint supports x86_64 and aarch64 Linux only; see arch/src/lib.rs");

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use x86_64 as imp;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
use aarch64 as imp;

pub use imp::{Context, EntryFn, switch};

mod clock;
mod message;
mod note;
pub mod preempt;
pub mod signal;
pub mod stack;

pub use clock::{cpu_relax, nanotime, os_yield};
pub use message::{MessageSink, message, set_message_sink};
pub use note::{Note, futex_wait, futex_wake};
