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
//!   goroutine's entry function. The per-target file (`x86_64.rs`) draws the layouts.
//! * **Goroutine stacks** ([`stack`]). mmap'd, lazily committed, with a guard page at the low
//!   end, pooled so that spawning a goroutine does not call mmap on its fast path.
//! * **Fault signals** ([`signal`]). A SIGSEGV handler on an alternate signal stack recognises a hit
//!   on the current goroutine's guard page and dies with "goroutine N: native stack overflow"
//!   instead of a bare segmentation fault; any other fault goes to the handler that was there
//!   before.
//! * **Asynchronous preemption** ([`preempt`]). The scheduler stops a goroutine that never
//!   polls by sending its thread `SIGURG` (`tgkill`). The handler, on the alternate signal
//!   stack, checks that the thread is on a goroutine stack (not g0, not a signal stack), outside
//!   the context switch, the trampoline and the C library, with room below the red zone, then
//!   asks the scheduler's `decide` hook. If both agree it edits the signal context so that the
//!   goroutine "calls" a trampoline from the interrupted instruction: the trampoline saves every
//!   general-purpose register, the flags and the vector state (XSAVE sized by CPUID, or FXSAVE)
//!   on the goroutine's stack, calls the scheduler's `hold` hook, restores everything and
//!   returns to the interrupted instruction with the stack pointer as it was (`ret 128` skips
//!   the red zone it stepped over). Nothing switches stacks: the hold is an ordinary call on the
//!   same thread. `x86_64.rs` draws the held stack.
//! * **Notes** ([`Note`]). One-shot futex events for parking an M: sleep, sleep with a timeout,
//!   wake-up, clear. A wake-up with no sleeper makes no system call.
//! * **Clocks and spinning** ([`nanotime`], [`cpu_relax`], [`os_yield`]).
//!
//! One file per target exports the same items; only x86_64 Linux exists today. An aarch64 file
//! would add its own `switch` and stack layout and nothing else in the workspace would change.

#![cfg_attr(not(all(target_arch = "x86_64", target_os = "linux")), allow(unused))]

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!("safepoint supports x86_64 Linux only for now; see arch/src/lib.rs");

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::{Context, EntryFn, switch};

mod clock;
mod note;
pub mod preempt;
pub mod signal;
pub mod stack;

pub use clock::{cpu_relax, nanotime, os_yield};
pub use note::{Note, futex_wait, futex_wake};
