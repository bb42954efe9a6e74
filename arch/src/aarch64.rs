//! Context switch and asynchronous preemption for aarch64 Linux (AAPCS64).
//!
//! A suspended execution is its stack pointer. Everything else it needs lies on its stack, in
//! the 176-byte frame that the `switch` call which suspended it pushed:
//!
//! ```text
//!  suspended stack (inside switch)          fresh stack (Context::new_on_stack)
//!
//!  | caller's frames      |                 top -> +----------------------+ <- sp when entry
//!  +----------------------+ <- sp at the call      | padding              |    is called
//!  | padding              |  +168                  | fpcr = 0 (default)   |  +160
//!  | fpcr                 |  +160                  | d8 .. d15 = 0        |  +96
//!  | d14 d15              |  +144                  | x30 = trampoline     |  +88 "returned" into
//!  | d12 d13              |  +128                  | x29 = 0              |  +80 ends fp walks
//!  | d10 d11              |  +112                  | x21 .. x28 = 0       |  +16
//!  | d8 d9                |  +96                   | x20 = entry data     |  +8
//!  | x29 x30 (fp, lr)     |  +80                   | x19 = entry fn       |  +0
//!  | x27 x28              |  +64                   +----------------------+ <- Context.sp
//!  | x25 x26              |  +48
//!  | x23 x24              |  +32
//!  | x21 x22              |  +16
//!  | x19 x20              |  +0
//!  +----------------------+ <- Context.sp
//! ```
//!
//! A running execution has no `Context`: its registers are live. `switch(from, to, arg)` stores
//! the callee-saved registers (x19–x28, the frame pointer x29, the link register x30 that holds
//! its return address, the low halves d8–d15 of v8–v15) and FPCR (its rounding mode and flush
//! controls are callee-saved too) below its stack pointer, writes the stack pointer to `*from`,
//! loads `to.sp`, loads the other side's registers and returns through the other side's x30.
//! The other side's own `switch` call then returns `arg`. A fresh stack instead "returns" into
//! the trampoline, which calls `entry(data, arg)` with sp at `top`; `entry` must never return (a
//! goroutine ends by switching away for good). The stack pointer is 16-byte aligned at every
//! step, as the architecture requires of any sp-relative access. x18 is an ordinary
//! caller-saved register on Linux and is not kept.
//!
//! Not handled: pointer authentication and branch target identification. Rust does not enable
//! them for `aarch64-unknown-linux-gnu` by default; a build with `-Z branch-protection` would need
//! `bti c` landing pads here and signed return addresses in fresh frames.

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

/// FPCR at process start: round to nearest, no flush to zero, default NaN off, no traps.
const DEFAULT_FPCR: usize = 0;

/// Bytes of the frame `switch` pushes (22 words, a multiple of 16).
const SWITCH_FRAME: usize = 176;

impl Context {
    /// Lays out a fresh stack whose top (exclusive, highest address) is `top`, so that the first
    /// [`switch`] into the returned context calls `entry(data, arg)` on that stack.
    ///
    /// # Safety
    /// `top` must be 16-byte aligned and the 176 bytes below it writable; the memory between the
    /// stack's low end and `top` must stay valid, and be used by nothing else, for as long as the
    /// execution that starts on it may run or be resumed.
    ///
    /// ```
    /// use safepoint_arch::stack::Stack;
    /// use safepoint_arch::{Context, switch};
    ///
    /// // A coroutine that doubles what it is given, on a stack of its own.
    /// struct Pair {
    ///     main: Context,
    ///     coro: Context,
    /// }
    /// unsafe extern "C" fn doubler(data: usize, mut x: usize) -> ! {
    ///     let p = data as *mut Pair;
    ///     loop {
    ///         // SAFETY: `main` was saved by the switch that resumed us and is resumed once; the
    ///         // `Pair` outlives every switch.
    ///         x = unsafe { switch(&raw mut (*p).coro, &raw const (*p).main, x * 2) };
    ///     }
    /// }
    /// let stack = Stack::new(64 * 1024).unwrap();
    /// let p = Box::into_raw(Box::new(Pair { main: Context { sp: 0 }, coro: Context { sp: 0 } }));
    /// // SAFETY: the stack's top is 16-byte aligned, and the stack and the `Pair` stay valid while
    /// // the coroutine runs; each context is resumed once per save.
    /// unsafe {
    ///     (*p).coro = Context::new_on_stack(stack.top(), doubler, p as usize);
    ///     assert_eq!(switch(&raw mut (*p).main, &raw const (*p).coro, 21), 42);
    ///     assert_eq!(switch(&raw mut (*p).main, &raw const (*p).coro, 5), 10);
    ///     // Left suspended for good: nothing resumes it again, so its stack may go.
    ///     drop(Box::from_raw(p));
    /// }
    /// ```
    pub unsafe fn new_on_stack(top: usize, entry: EntryFn, data: usize) -> Context {
        debug_assert_eq!(top % 16, 0, "stack top must be 16-byte aligned");
        let mut words = [0usize; SWITCH_FRAME / 8];
        words[0] = entry as *const () as usize; // x19
        words[1] = data; // x20
        words[10] = 0; // x29: ends frame-pointer walks
        words[11] = trampoline as *const () as usize; // x30: where switch's `ret` goes
        words[20] = DEFAULT_FPCR;
        let sp = top - SWITCH_FRAME;
        // SAFETY: the caller guarantees the 176 bytes below `top` are writable and unused; `sp`
        // is 16-aligned because `top` is and the frame is 176 bytes.
        unsafe { core::ptr::write(sp as *mut [usize; SWITCH_FRAME / 8], words) };
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
///
/// ```
/// use safepoint_arch::stack::Stack;
/// use safepoint_arch::{Context, switch};
///
/// // A coroutine that doubles what it is given, on a stack of its own.
/// struct Pair {
///     main: Context,
///     coro: Context,
/// }
/// unsafe extern "C" fn doubler(data: usize, mut x: usize) -> ! {
///     let p = data as *mut Pair;
///     loop {
///         // SAFETY: `main` was saved by the switch that resumed us and is resumed once; the
///         // `Pair` outlives every switch.
///         x = unsafe { switch(&raw mut (*p).coro, &raw const (*p).main, x * 2) };
///     }
/// }
/// let stack = Stack::new(64 * 1024).unwrap();
/// let p = Box::into_raw(Box::new(Pair { main: Context { sp: 0 }, coro: Context { sp: 0 } }));
/// // SAFETY: the stack's top is 16-byte aligned, and the stack and the `Pair` stay valid while
/// // the coroutine runs; each context is resumed once per save.
/// unsafe {
///     (*p).coro = Context::new_on_stack(stack.top(), doubler, p as usize);
///     assert_eq!(switch(&raw mut (*p).main, &raw const (*p).coro, 21), 42);
///     assert_eq!(switch(&raw mut (*p).main, &raw const (*p).coro, 5), 10);
///     // Left suspended for good: nothing resumes it again, so its stack may go.
///     drop(Box::from_raw(p));
/// }
/// ```
#[unsafe(naked)]
// The end label is global on purpose (the preemption handler checks the pc against it);
// compilers up to 1.89 deny the lint in naked functions too (rust-version is 1.88).
#[allow(named_asm_labels)]
pub unsafe extern "C" fn switch(from: *mut Context, to: *const Context, arg: usize) -> usize {
    naked_asm!(
        // Save the callee-saved registers of this side on its own stack (x0 = from, x1 = to,
        // x2 = arg; x9 and x10 are caller-saved scratch).
        "sub sp, sp, #176",
        "stp x19, x20, [sp, #0]",
        "stp x21, x22, [sp, #16]",
        "stp x23, x24, [sp, #32]",
        "stp x25, x26, [sp, #48]",
        "stp x27, x28, [sp, #64]",
        "stp x29, x30, [sp, #80]",
        "stp d8, d9, [sp, #96]",
        "stp d10, d11, [sp, #112]",
        "stp d12, d13, [sp, #128]",
        "stp d14, d15, [sp, #144]",
        // FPCR (rounding mode, flush-to-zero) is callee-saved too.
        "mrs x9, fpcr",
        "str x9, [sp, #160]",
        // Publish where this side stopped, then move to the other stack.
        "mov x9, sp",
        "str x9, [x0]",
        "ldr x9, [x1]",
        "mov sp, x9",
        // The other side's FPCR, written only when it differs: a write to FPCR can be slow, and
        // nearly every switch finds the same value (NZCV is caller-saved, so `cmp` may clobber).
        "ldr x9, [sp, #160]",
        "mrs x10, fpcr",
        "cmp x9, x10",
        "b.eq 2f",
        "msr fpcr, x9",
        "2:",
        // Restore the other side's registers in the reverse order.
        "ldp d14, d15, [sp, #144]",
        "ldp d12, d13, [sp, #128]",
        "ldp d10, d11, [sp, #112]",
        "ldp d8, d9, [sp, #96]",
        "ldp x29, x30, [sp, #80]",
        "ldp x27, x28, [sp, #64]",
        "ldp x25, x26, [sp, #48]",
        "ldp x23, x24, [sp, #32]",
        "ldp x21, x22, [sp, #16]",
        "ldp x19, x20, [sp, #0]",
        "add sp, sp, #176",
        // The other side's `switch` returns `arg`; a fresh stack's trampoline reads it from x0.
        "mov x0, x2",
        "ret",
        // The end of the switch code, so that the preemption handler can tell an interrupted
        // switch (half on one stack, half on the other) and decline it.
        ".globl __safepoint_switch_end",
        ".hidden __safepoint_switch_end",
        "__safepoint_switch_end:",
        "udf #0",
    )
}

/// First code run on a fresh stack: calls `entry(data, arg)` (entry in x19, data in x20, arg in
/// x0), with sp at the stack's top, 16-byte aligned.
#[unsafe(naked)]
unsafe extern "C" fn trampoline() -> ! {
    naked_asm!(
        // Arguments in ABI order: x0 = data, x1 = arg.
        "mov x1, x0",
        "mov x0, x20",
        "blr x19",
        // entry never returns; trap if it does.
        "udf #0",
    )
}

// ---- Asynchronous preemption ----------------------------------------------------------------
//
// On x86_64 the trampoline saves every register itself and returns to the interrupted
// instruction with `ret`, which takes its target from the stack. aarch64 has no such
// instruction: every indirect branch (`br`, `blr`, `ret`) takes its target from a general
// register, so code that has restored all 31 of them cannot jump anywhere else. Only the
// kernel can load every register and pc at once, with `rt_sigreturn`. So the handler copies the
// signal frame the kernel built, whose `ucontext_t` holds every register of the interrupted
// code, onto the goroutine's stack, and points the interrupted context at the trampoline with sp
// at the copy. The trampoline calls the hold and then issues `rt_sigreturn` on the copy, which
// resumes the interrupted instruction with every register as it was:
//
// ```text
//  goroutine stack while held
//
//  | interrupted frames    |
//  +-----------------------+ <- interrupted sp (16-aligned: sp-relative accesses require it)
//  | 0..15 bytes unused    |    the copy is 16-byte aligned, as rt_sigreturn requires
//  +-----------------------+
//  | ucontext_t (4560 B)   |    copy of the kernel's: uc_stack, uc_sigmask, and in uc_mcontext
//  |   __reserved records  |      x0-x30, sp, pc, pstate (NZCV) and records: fpsimd_context
//  |   pstate, pc, sp      |      (v0-v31, FPSR, FPCR), and SVE/SME/others when the kernel
//  |   x0 .. x30           |      wrote them
//  | siginfo (128 B)       |    not read by rt_sigreturn; zeroed
//  +-----------------------+ <- sp at the trampoline's entry; x19 keeps it across the hold
//  | hold_entry's frames   |    the scheduler's hold: waits on the M's note, switches nothing
// ```
//
// The copy is taken verbatim, so whatever state the kernel saves (SVE's longer vectors and
// predicates, SME's TPIDR2, the permission overlay) comes back too. Two things cannot be carried
// and make the handler decline (`Decline::UnsupportedContext`): an `extra_context` record, which
// points at state outside the 4 KiB `__reserved` area (very long SVE vectors, SME's ZA array),
// and an enabled guarded control stack, whose `rt_sigreturn` wants a token the kernel pushed for
// the original delivery.
//
// There is no red zone on aarch64 (code never stores below sp), so the copy starts right below
// the interrupted stack pointer.

/// Bytes of the kernel's `struct siginfo` at the start of an arm64 signal frame.
const SIGINFO_BYTES: usize = 128;

/// Bytes of the signal frame the handler copies: the siginfo and the `ucontext_t`.
const SIGFRAME_BYTES: usize = SIGINFO_BYTES + core::mem::size_of::<libc::ucontext_t>();

/// Bytes of `uc_mcontext.__reserved`, where the kernel writes its records.
const RESERVED_BYTES: usize = 4096;

/// Offset of `__reserved` in the kernel's `struct sigcontext`: it is the last field, 16-aligned.
/// (libc's `mcontext_t` declares it unaligned, at 280; the kernel's is at 288, which the
/// struct's total size, 16-aligned, still gives.)
const RESERVED_OFFSET: usize = core::mem::size_of::<libc::mcontext_t>() - RESERVED_BYTES;

const _: () = assert!(RESERVED_OFFSET == 288, "the kernel's sigcontext puts __reserved at 288");
const _: () = assert!(SIGFRAME_BYTES.is_multiple_of(16));

/// Record magics of `uc_mcontext.__reserved` (the kernel's `asm/sigcontext.h`).
const FPSIMD_MAGIC: u32 = 0x4650_8001;
const EXTRA_MAGIC: u32 = 0x4558_5401;
const GCS_MAGIC: u32 = 0x4743_5300;

/// `__NR_rt_sigreturn` on arm64 (the generic system call table).
const NR_RT_SIGRETURN: usize = 139;

/// Nothing to detect: the saved state's size is the kernel's `ucontext_t`, fixed at build time.
/// (x86_64 sizes its XSAVE area here.)
pub(crate) fn detect_save_area() {}

/// Bytes the trampoline takes below the interrupted stack pointer before it calls the hold: the
/// signal frame's copy and up to 15 bytes of alignment.
pub(crate) fn trampoline_frame_bytes() -> usize {
    SIGFRAME_BYTES + 16
}

unsafe extern "C" {
    /// End of `switch`'s code (a label in its asm).
    static __safepoint_switch_end: u8;
    /// End of `async_trampoline`'s code (a label in its asm).
    static __safepoint_async_trampoline_end: u8;
}

/// The code ranges `[start, end)` in which an interrupted thread is inside the runtime's own
/// assembly: a context switch (its registers are half on one stack, half on the other) or the
/// preemption trampoline itself. The handler declines there.
pub(crate) fn runtime_asm_ranges() -> [(usize, usize); 2] {
    [
        (switch as *const () as usize, (&raw const __safepoint_switch_end) as usize),
        (
            async_trampoline as *const () as usize,
            (&raw const __safepoint_async_trampoline_end) as usize,
        ),
    ]
}

/// The interrupted program counter and stack pointer of a signal context.
///
/// # Safety
/// `uc` must point to the `ucontext_t` of a signal being handled on this thread.
pub(crate) unsafe fn interrupted_pc_sp(uc: *const libc::ucontext_t) -> (usize, usize) {
    // SAFETY: per the contract, `uc` is a valid ucontext for this delivery.
    let m = unsafe { &(*uc).uc_mcontext };
    (m.pc as usize, m.sp as usize)
}

/// Whether the signal context can be carried onto the goroutine's stack and resumed with
/// `rt_sigreturn` from there: its records are well formed, include the FP/SIMD state, and have
/// no `extra_context` and no enabled guarded control stack (see the drawing's notes above).
///
/// # Safety
/// `uc` must point to the `ucontext_t` of a signal being handled on this thread.
pub(crate) unsafe fn context_movable(uc: *const libc::ucontext_t) -> bool {
    // SAFETY: per the contract `uc` is a valid ucontext; only the field's address is taken.
    let base = unsafe { &raw const (*uc).uc_mcontext } as usize + RESERVED_OFFSET;
    // Each record starts with a 32-bit magic and a 32-bit size (header included, a multiple of
    // 16); a zero magic ends the list.
    let read_u32 = |at: usize| {
        // SAFETY: callers below keep `at + 4` within the 4096-byte __reserved area of the
        // kernel's frame, which is readable.
        unsafe { (at as *const u32).read_unaligned() }
    };
    let mut off = 0;
    let mut fpsimd = false;
    while off + 8 <= RESERVED_BYTES {
        let magic = read_u32(base + off);
        let size = read_u32(base + off + 4) as usize;
        if magic == 0 {
            return fpsimd;
        }
        if size < 8 || !size.is_multiple_of(16) || off + size > RESERVED_BYTES {
            return false;
        }
        match magic {
            FPSIMD_MAGIC => fpsimd = true,
            EXTRA_MAGIC => return false,
            // struct gcs_context { head, u64 gcspr, u64 features_enabled, u64 reserved }:
            // bit 0 of features_enabled is PR_SHADOW_STACK_ENABLE.
            GCS_MAGIC if size >= 24 && read_u32(base + off + 16) & 1 != 0 => return false,
            _ => {}
        }
        off += size;
    }
    false
}

/// Edits a signal context so that, when the handler returns, the interrupted code runs
/// `async_trampoline` on a copy of its own signal frame (see the drawing above).
///
/// # Safety
/// `uc` must point to the `ucontext_t` of a signal being handled on this thread for which
/// [`context_movable`] said yes, whose interrupted stack pointer lies in a stack with at least
/// [`trampoline_frame_bytes`] plus the hold's own needs writable below it, that nothing else
/// uses while this thread runs.
pub(crate) unsafe fn redirect_to_trampoline(uc: *mut libc::ucontext_t) {
    // SAFETY: per the contract, `uc` is a valid, writable ucontext for this delivery.
    let m = unsafe { &mut (*uc).uc_mcontext };
    let frame = (m.sp as usize - SIGFRAME_BYTES) & !15;
    let copy = frame + SIGINFO_BYTES;
    // SAFETY: [frame, frame + SIGFRAME_BYTES) lies below the interrupted stack pointer, in the
    // part of the goroutine's stack the caller guarantees is writable and unused; the source is
    // the kernel's ucontext, which does not overlap it (it is on the alternate signal stack).
    unsafe {
        core::ptr::write_bytes(frame as *mut u8, 0, SIGINFO_BYTES);
        core::ptr::copy_nonoverlapping(
            uc as *const u8,
            copy as *mut u8,
            core::mem::size_of::<libc::ucontext_t>(),
        );
    }
    m.sp = frame as u64;
    m.pc = async_trampoline as *const () as usize as u64;
}

/// Called by the trampoline on the goroutine's stack: runs the hold installed by
/// [`crate::preempt::install`].
extern "C" fn hold_entry() {
    #[cfg(debug_assertions)]
    scribble_registers();
    crate::preempt::run_hold();
}

/// Debug builds: overwrite every vector register (all 128 bits), the flags and FPSR's
/// cumulative exception bits, so that a resume that failed to restore something is caught by the
/// tests that check registers across holds, whatever the hold itself happens to use.
#[cfg(debug_assertions)]
fn scribble_registers() {
    // SAFETY: only caller-saved state is written (all of v0-v31 may be clobbered: only the low
    // halves of v8-v15 are callee-saved, and the compiler saves those around a clobber), NZCV
    // and FPSR; every register written is declared.
    unsafe {
        core::arch::asm!(
            // All ones in v0, copied to the rest.
            "movi v0.2d, #0xffffffffffffffff",
            "mov v1.16b, v0.16b", "mov v2.16b, v0.16b", "mov v3.16b, v0.16b",
            "mov v4.16b, v0.16b", "mov v5.16b, v0.16b", "mov v6.16b, v0.16b",
            "mov v7.16b, v0.16b", "mov v8.16b, v0.16b", "mov v9.16b, v0.16b",
            "mov v10.16b, v0.16b", "mov v11.16b, v0.16b", "mov v12.16b, v0.16b",
            "mov v13.16b, v0.16b", "mov v14.16b, v0.16b", "mov v15.16b, v0.16b",
            "mov v16.16b, v0.16b", "mov v17.16b, v0.16b", "mov v18.16b, v0.16b",
            "mov v19.16b, v0.16b", "mov v20.16b, v0.16b", "mov v21.16b, v0.16b",
            "mov v22.16b, v0.16b", "mov v23.16b, v0.16b", "mov v24.16b, v0.16b",
            "mov v25.16b, v0.16b", "mov v26.16b, v0.16b", "mov v27.16b, v0.16b",
            "mov v28.16b, v0.16b", "mov v29.16b, v0.16b", "mov v30.16b, v0.16b",
            "mov v31.16b, v0.16b",
            // N, Z, C and V all set; FPSR's cumulative flags (IOC..IXC, IDC, QC) all set.
            "mov {t}, #0xf0000000",
            "msr nzcv, {t}",
            "mov {t}, #0x9f",
            "orr {t}, {t}, #0x8000000",
            "msr fpsr, {t}",
            t = out(reg) _,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _,
            out("v6") _, out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _, out("v16") _,
            out("v17") _, out("v18") _, out("v19") _, out("v20") _, out("v21") _,
            out("v22") _, out("v23") _, out("v24") _, out("v25") _, out("v26") _,
            out("v27") _, out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nomem, nostack),
        )
    };
}

/// Calls the hold on a copy of the interrupted signal frame, then resumes the interrupted code
/// with `rt_sigreturn` on that copy. Entered only through [`redirect_to_trampoline`].
#[unsafe(naked)]
// The end label is global on purpose (the preemption handler checks the pc against it);
// compilers up to 1.89 deny the lint in naked functions too (rust-version is 1.88).
#[allow(named_asm_labels)]
unsafe extern "C" fn async_trampoline() {
    naked_asm!(
        // sp = the copied signal frame, 16-aligned. x19 (callee-saved) remembers it across the
        // call; the interrupted x19 is in the copy.
        "mov x19, sp",
        // Hold the goroutine here.
        "bl {hold}",
        // rt_sigreturn reads the frame at sp and loads every register, pc, sp, NZCV, the FP/SIMD
        // state and the signal mask from it: the interrupted instruction runs next.
        "mov sp, x19",
        "mov x8, #{nr}",
        "svc #0",
        // rt_sigreturn does not return; trap if it does.
        "udf #0",
        ".globl __safepoint_async_trampoline_end",
        ".hidden __safepoint_async_trampoline_end",
        "__safepoint_async_trampoline_end:",
        "udf #0",
        hold = sym hold_entry,
        nr = const NR_RT_SIGRETURN,
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

    /// FPCR's RMode field set to "toward zero".
    const ROUND_TOWARD_ZERO: u64 = 0b11 << 22;

    fn get_fpcr() -> u64 {
        let v: u64;
        // SAFETY: reading FPCR has no side effect.
        unsafe { core::arch::asm!("mrs {}, fpcr", out(reg) v, options(nomem, nostack)) };
        v
    }

    fn set_fpcr(v: u64) {
        // SAFETY: writing the rounding mode only changes how later float operations round.
        unsafe { core::arch::asm!("msr fpcr, {}", in(reg) v, options(nomem, nostack)) };
    }

    unsafe extern "C" fn counter(data: usize, arg: usize) -> ! {
        let sum = data as *mut u64;
        let mut next = arg;
        loop {
            // SAFETY: the test keeps `sum` alive while the coroutine can run.
            unsafe { *sum += next as u64 };
            // Leave this side rounding toward zero: the other side must not see it.
            set_fpcr(ROUND_TOWARD_ZERO);
            // SAFETY: both contexts are owned by this thread and valid for the test.
            next = unsafe { switch(CO.get(), MAIN.get(), 7) };
            assert_eq!(get_fpcr(), ROUND_TOWARD_ZERO, "this side's FPCR was not restored");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot run it: it switches stacks in assembly")]
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
            assert_eq!(get_fpcr() & ROUND_TOWARD_ZERO, 0, "rounding mode leaked across the switch");
        }
        assert_eq!(sum, (1..=100u64).sum::<u64>());
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot run it: it switches stacks in assembly")]
    fn callee_saved_registers_survive_a_switch() {
        unsafe extern "C" fn clobber(_: usize, _: usize) -> ! {
            loop {
                // Every callee-saved register the switch must keep gets garbage on this side.
                // SAFETY: the registers written are declared clobbered (x19 and x29 cannot be
                // named: they are left alone), and the compiler saves and restores them.
                unsafe {
                    core::arch::asm!(
                        "mov x20, #1", "mov x21, #2", "mov x22, #3", "mov x23, #4",
                        "mov x24, #5", "mov x25, #6", "mov x26, #7", "mov x27, #8",
                        "mov x28, #9",
                        "movi v8.2d, #0", "movi v9.2d, #0", "movi v10.2d, #0",
                        "movi v11.2d, #0", "movi v12.2d, #0", "movi v13.2d, #0",
                        "movi v14.2d, #0", "movi v15.2d, #0",
                        out("x20") _, out("x21") _, out("x22") _, out("x23") _, out("x24") _,
                        out("x25") _, out("x26") _, out("x27") _, out("x28") _,
                        out("v8") _, out("v9") _, out("v10") _, out("v11") _, out("v12") _,
                        out("v13") _, out("v14") _, out("v15") _,
                        options(nomem, nostack),
                    )
                };
                // SAFETY: both contexts are owned by this thread and valid for the test.
                unsafe { switch(CO.get(), MAIN.get(), 0) };
            }
        }
        let mut stack = vec![0u8; 64 * 1024];
        let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
        let mut main = Context::default();
        // SAFETY: `stack` outlives every switch into the coroutine below.
        let mut co = unsafe { Context::new_on_stack(top, clobber, 0) };
        MAIN.set(&mut main);
        CO.set(&mut co);
        let (mut ints, mut floats) = ([0u64; 9], [0f64; 8]);
        // Values live in callee-saved registers across the switch, then stored for the check.
        // SAFETY: `co` is fresh; the asm only moves values between the declared registers, uses
        // 16 bytes of stack below sp (kept aligned), and calls `switch` with its ABI (x0-x2 in,
        // every caller-saved register declared clobbered by `clobber_abi`).
        unsafe {
            core::arch::asm!(
                "mov x20, #11", "mov x21, #12", "mov x22, #13", "mov x23, #14",
                "mov x24, #15", "mov x25, #16", "mov x26, #17", "mov x27, #18",
                "mov x28, #19",
                "fmov d8, #1.0", "fmov d9, #2.0", "fmov d10, #3.0", "fmov d11, #4.0",
                "fmov d12, #5.0", "fmov d13, #6.0", "fmov d14, #7.0", "fmov d15, #8.0",
                // The output pointers may sit in caller-saved registers: keep them on the stack
                // across the call.
                "stp {i}, {d}, [sp, #-16]!",
                "blr {f}",
                "ldp x9, x10, [sp], #16",
                "stp x20, x21, [x9, #0]", "stp x22, x23, [x9, #16]",
                "stp x24, x25, [x9, #32]", "stp x26, x27, [x9, #48]",
                "str x28, [x9, #64]",
                "stp d8, d9, [x10, #0]", "stp d10, d11, [x10, #16]",
                "stp d12, d13, [x10, #32]", "stp d14, d15, [x10, #48]",
                f = in(reg) switch as *const () as usize,
                i = in(reg) ints.as_mut_ptr(),
                d = in(reg) floats.as_mut_ptr(),
                in("x0") &mut main as *mut Context,
                in("x1") &co as *const Context,
                in("x2") 0usize,
                out("x20") _, out("x21") _, out("x22") _, out("x23") _, out("x24") _,
                out("x25") _, out("x26") _, out("x27") _, out("x28") _,
                out("v8") _, out("v9") _, out("v10") _, out("v11") _, out("v12") _,
                out("v13") _, out("v14") _, out("v15") _,
                clobber_abi("C"),
            )
        };
        assert_eq!(ints, [11, 12, 13, 14, 15, 16, 17, 18, 19]);
        assert_eq!(floats, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot run it: it switches stacks in assembly")]
    fn fresh_stack_is_aligned() {
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

    #[test]
    fn sigframe_layout_matches_the_kernel() {
        // struct ucontext: uc_flags, uc_link, uc_stack (24), uc_sigmask padded to 128 bytes,
        // then the 16-aligned sigcontext (288 + 4096).
        assert_eq!(core::mem::offset_of!(libc::ucontext_t, uc_mcontext), 176);
        assert_eq!(core::mem::size_of::<libc::ucontext_t>(), 176 + 288 + 4096);
        assert_eq!(SIGFRAME_BYTES, 128 + 4560);
    }
}
