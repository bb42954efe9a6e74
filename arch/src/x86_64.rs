//! Context switch for x86_64 (System V ABI).
//!
//! A suspended execution is its stack pointer. Everything else it needs lies on its stack, below
//! the return address of the `switch` call that suspended it:
//!
//! ```text
//!  suspended stack (inside switch)        fresh stack (Context::new_on_stack)
//!
//!  | caller's frames      |               top -> +----------------------+
//!  +----------------------+                      | 0 (padding)          |
//!  | return into caller   |                      | 0 (fake return addr) |  <- rsp when entry is called
//!  | rbp                  |                      | trampoline           |  <- "returned" into
//!  | rbx                  |                      | rbp = 0              |
//!  | r12                  |                      | rbx = entry fn       |
//!  | r13                  |                      | r12 = entry data     |
//!  | r14                  |                      | r13 = 0              |
//!  | r15                  |                      | r14 = 0              |
//!  | fpcw:16 mxcsr:32     |                      | r15 = 0              |
//!  +----------------------+ <- Context.sp        | fpcw | mxcsr (dflt) |
//!                                                +----------------------+ <- Context.sp
//! ```
//!
//! A running execution has no `Context`: its registers are live. `switch(from, to, arg)` pushes
//! the callee-saved registers and the two callee-saved control words (MXCSR and the x87 control
//! word, which the ABI says a callee must preserve), writes the stack pointer to `*from`, loads
//! `to.sp`, and pops the other side's registers. The other side's own `switch` call then returns
//! `arg`. A fresh stack instead "returns" into the trampoline, which calls
//! `entry(data, arg)`; `entry` must never return (a goroutine ends by switching away for good).

use core::arch::naked_asm;

/// A goroutine entry function: receives the `data` word given to [`Context::new_on_stack`] and
/// the `arg` of the first [`switch`] into it. It must never return.
pub type EntryFn = unsafe extern "C" fn(data: usize, arg: usize) -> !;

/// The saved state of a suspended execution: its stack pointer.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Context {
    /// Stack pointer of the suspended side; 0 while it runs (or before it ever ran).
    pub sp: usize,
}

/// MXCSR at process start (all exceptions masked, round to nearest) in the low half, and the
/// x87 control word (extended precision, all exceptions masked) in the high half.
const DEFAULT_CONTROL_WORDS: usize = 0x1F80 | (0x037F << 32);

impl Context {
    /// Lays out a fresh stack whose top (exclusive, highest address) is `top`, so that the first
    /// [`switch`] into the returned context calls `entry(data, arg)` on that stack.
    ///
    /// # Safety
    /// `top` must be 16-byte aligned and the 80 bytes below it writable; the memory between the
    /// stack's low end and `top` must stay valid, and be used by nothing else, for as long as the
    /// execution that starts on it may run or be resumed.
    pub unsafe fn new_on_stack(top: usize, entry: EntryFn, data: usize) -> Context {
        debug_assert_eq!(top % 16, 0, "stack top must be 16-byte aligned");
        let words: [usize; 10] = [
            DEFAULT_CONTROL_WORDS,
            0, // r15
            0, // r14
            0, // r13
            data,
            entry as *const () as usize,
            0, // rbp: ends frame-pointer walks
            trampoline as *const () as usize,
            0, // fake return address of the entry frame
            0, // padding, keeps the entry call 16-byte aligned
        ];
        let sp = top - core::mem::size_of_val(&words);
        // SAFETY: the caller guarantees the 80 bytes below `top` are writable and unused; `sp`
        // is 16-aligned because `top` is and the array is 80 bytes (a multiple of 8, and the
        // words are written unaligned-safe anyway).
        unsafe { core::ptr::write(sp as *mut [usize; 10], words) };
        Context { sp }
    }
}

/// Suspends the running execution into `*from` and resumes the one saved in `*to`, which sees
/// its own `switch` call return `arg` (or, if fresh, has its entry called with `arg`).
///
/// Returns, later, the `arg` of whichever `switch` resumes this side.
///
/// # Safety
/// `to` must hold a context saved by `switch` or made by [`Context::new_on_stack`] that has
/// not been resumed since, whose stack is still valid and not in use by any other thread; `from`
/// must be valid for a write and stay valid until this side is resumed. Nothing on the
/// suspended stack may be touched by anyone else until it is resumed.
#[unsafe(naked)]
pub unsafe extern "C" fn switch(from: *mut Context, to: *const Context, arg: usize) -> usize {
    naked_asm!(
        // Save the callee-saved registers of this side on its own stack.
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        // MXCSR and the x87 control word are callee-saved too.
        "sub rsp, 8",
        "stmxcsr [rsp]",
        "fnstcw [rsp + 4]",
        // Publish where this side stopped, then move to the other stack.
        "mov [rdi], rsp",
        "mov rsp, [rsi]",
        // Restore the other side in the reverse order.
        "ldmxcsr [rsp]",
        "fldcw [rsp + 4]",
        "add rsp, 8",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        // The other side's `switch` returns `arg`; a fresh stack's trampoline reads it from rax.
        "mov rax, rdx",
        "ret",
    )
}

/// First code run on a fresh stack: calls `entry(data, arg)` (entry in rbx, data in r12, arg in
/// rax), with rsp 16-byte aligned at the call as the ABI requires.
#[unsafe(naked)]
unsafe extern "C" fn trampoline() -> ! {
    naked_asm!(
        "mov rdi, r12",
        "mov rsi, rax",
        "call rbx",
        // entry never returns; trap if it does.
        "ud2",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        static MAIN: Cell<*mut Context> = const { Cell::new(core::ptr::null_mut()) };
        static CO: Cell<*mut Context> = const { Cell::new(core::ptr::null_mut()) };
    }

    unsafe extern "C" fn counter(data: usize, arg: usize) -> ! {
        let sum = data as *mut u64;
        let mut next = arg;
        loop {
            // SAFETY: the test keeps `sum` alive while the coroutine can run.
            unsafe { *sum += next as u64 };
            // Leave this side with MXCSR rounding toward zero: the other side must not see it.
            set_mxcsr(DEFAULT_CONTROL_WORDS as u32 | 0x6000);
            // SAFETY: both contexts are owned by this thread and valid for the test.
            next = unsafe { switch(CO.get(), MAIN.get(), 7) };
            assert_eq!(get_mxcsr(), DEFAULT_CONTROL_WORDS as u32 | 0x6000);
        }
    }

    fn get_mxcsr() -> u32 {
        let mut v: u32 = 0;
        // SAFETY: stmxcsr writes 4 bytes to a valid local.
        unsafe { core::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack)) };
        v
    }

    fn set_mxcsr(v: u32) {
        // SAFETY: ldmxcsr reads 4 bytes from a valid local; the value only changes rounding.
        unsafe { core::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack)) };
    }

    #[test]
    fn ping_pong_with_values() {
        let mut stack = vec![0u8; 64 * 1024];
        let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
        let mut sum: u64 = 0;
        let mut main = Context::default();
        // SAFETY: `stack` outlives every switch into the coroutine below.
        let mut co = unsafe { Context::new_on_stack(top, counter, &mut sum as *mut u64 as usize) };
        MAIN.set(&mut main);
        CO.set(&mut co);
        for i in 1..=100usize {
            // SAFETY: `co` was made by new_on_stack or saved by the coroutine's last switch.
            let got = unsafe { switch(&mut main, &co, i) };
            assert_eq!(got, 7);
            assert_eq!(get_mxcsr() & 0x6000, 0, "rounding mode leaked across the switch");
        }
        assert_eq!(sum, (1..=100u64).sum::<u64>());
    }

    #[test]
    fn fresh_stack_is_aligned_for_sse() {
        unsafe extern "C" fn aligned(_: usize, _: usize) -> ! {
            // A 16-aligned local forces the compiler to rely on the ABI alignment.
            #[repr(align(16))]
            struct A([u8; 16]);
            let a = A([1; 16]);
            let addr = &a as *const A as usize;
            assert_eq!(std::hint::black_box(&a).0[15], 1);
            assert_eq!(addr % 16, 0);
            // SAFETY: both contexts are owned by this thread and valid for the test.
            unsafe { switch(CO.get(), MAIN.get(), 1) };
            unreachable!()
        }
        let mut stack = vec![0u8; 64 * 1024];
        let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
        let mut main = Context::default();
        // SAFETY: `stack` outlives the coroutine, which is never resumed after its one switch.
        let mut co = unsafe { Context::new_on_stack(top, aligned, 0) };
        MAIN.set(&mut main);
        CO.set(&mut co);
        // SAFETY: `co` is fresh.
        assert_eq!(unsafe { switch(&mut main, &co, 0) }, 1);
    }
}
