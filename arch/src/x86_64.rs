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
        // The end of the switch code, so that the preemption handler can tell an interrupted
        // switch (half on one stack, half on the other) and decline it.
        ".globl __safepoint_switch_end",
        ".hidden __safepoint_switch_end",
        "__safepoint_switch_end:",
        "ud2",
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

// ---- Asynchronous preemption ----------------------------------------------------------------
//
// The preemption signal's handler (see `crate::preempt`) makes the interrupted goroutine call
// `async_trampoline` as if the interrupted instruction had called it, by editing the signal
// context: it moves the stack pointer below the red zone, pushes the interrupted pc there as a
// return address and points pc at the trampoline. When the handler returns, the kernel restores
// every register from the (edited) context and the goroutine runs the trampoline:
//
// ```text
//  goroutine stack while held
//
//  | interrupted frames    |
//  +-----------------------+ <- interrupted rsp (any alignment)
//  | red zone, 128 bytes   |    untouched: the interrupted code may keep data there
//  +-----------------------+
//  | interrupted pc        |    pushed by the handler; `ret 128` pops it and skips the red zone
//  | rflags                |
//  | rax rbx rcx rdx       |
//  | rsi rdi rbp           |
//  | r8 ... r15            |    <- rbx (frame pointer of the trampoline, callee-saved)
//  +-----------------------+
//  | padding to 64 bytes   |
//  | XSAVE area (or FXSAVE)|    x87, MXCSR, xmm/ymm/zmm, opmasks
//  +-----------------------+ <- rsp at `call hold_entry` (64- or 16-byte aligned)
//  | hold_entry's frames   |    the scheduler's hold: waits on the M's note, switches nothing
// ```
//
// On return from the hold everything is restored in the reverse order and `ret 128` resumes the
// interrupted instruction with every register, the flags and the stack pointer as they were.

/// Bytes below the stack pointer that System V code may use without moving it: the handler
/// must leave them alone.
pub const RED_ZONE: usize = 128;

/// State components the trampoline saves with XSAVE: x87 (0), SSE (1), AVX (2) and AVX-512's
/// opmask, ZMM_Hi256 and Hi16_ZMM (5, 6, 7). AMX tile data (17, 18) is left out: a thread must
/// ask the kernel before it may use tiles, and the runtime never does.
const XSAVE_MASK: u32 = 0b1110_0111;

/// Size of the XSAVE area for `XSAVE_MASK & XCR0`, rounded up to 64; 0 means the processor or OS
/// lacks XSAVE and the trampoline uses FXSAVE (512 bytes). Written once by [`detect_save_area`]
/// before the preemption handler is installed (the `sigaction` call orders it before any
/// delivery); read by the trampoline with a plain load.
static SAVE_AREA: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Words the trampoline pushes before its save area: the interrupted pc, rflags and 15
/// general-purpose registers.
const SAVED_WORDS: usize = 17;

/// Reads CPUID and XCR0 to size the XSAVE area, and records it for the trampoline. Idempotent.
pub(crate) fn detect_save_area() {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 processor.
    let leaf1 = unsafe { __cpuid(1) };
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    if !osxsave {
        return;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: OSXSAVE says the OS enabled XSAVE, so XGETBV with ecx = 0 (XCR0) is allowed.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags))
    };
    let _ = hi; // components above bit 31 are not in XSAVE_MASK
    let rfbm = lo & XSAVE_MASK;
    // AVX usable: the CPU has it (CPUID.1:ECX bit 28) and the OS saves ymm state (XCR0 bit 2).
    HAS_AVX.store(
        leaf1.ecx & (1 << 28) != 0 && lo & 0b110 == 0b110,
        core::sync::atomic::Ordering::Relaxed,
    );
    // Legacy region (512) plus the XSAVE header (64); each extended component i lies at the
    // offset CPUID.(0xD, i).EBX with size EAX.
    let mut size = 576u32;
    for i in 2..32 {
        if rfbm & (1 << i) != 0 {
            #[allow(unused_unsafe)]
            // SAFETY: leaf 0xD exists when OSXSAVE is set.
            let r = unsafe { __cpuid_count(0xD, i) };
            size = size.max(r.ebx + r.eax);
        }
    }
    SAVE_AREA.store(size.next_multiple_of(64), core::sync::atomic::Ordering::Relaxed);
}

/// Bytes of vector and x87 state the trampoline saves (the XSAVE area, or 512 for FXSAVE).
pub(crate) fn save_area_bytes() -> usize {
    match SAVE_AREA.load(core::sync::atomic::Ordering::Relaxed) {
        0 => 512,
        n => n as usize,
    }
}

/// Bytes the trampoline takes below the interrupted stack pointer before it calls the hold: the
/// red zone it skips, its saved registers, alignment and the save area.
pub(crate) fn trampoline_frame_bytes() -> usize {
    RED_ZONE + SAVED_WORDS * 8 + 64 + save_area_bytes()
}

unsafe extern "C" {
    /// End of `switch`'s code (a label in its asm).
    static __safepoint_switch_end: u8;
    /// End of `async_trampoline`'s code (a label in its asm).
    static __safepoint_async_trampoline_end: u8;
}

/// The code ranges `[start, end)` in which an interrupted thread is inside the runtime's own
/// assembly: a context switch (its registers are half on one stack, half on the other) or the
/// preemption trampoline itself (saving or restoring). The handler declines there.
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
    // SAFETY: per the contract.
    let g = unsafe { &(*uc).uc_mcontext.gregs };
    (g[libc::REG_RIP as usize] as usize, g[libc::REG_RSP as usize] as usize)
}

/// Whether the signal context can be carried into the trampoline: always on x86_64, whose
/// trampoline saves what the processor has itself (aarch64 has cases it must decline).
///
/// # Safety
/// `uc` must point to the `ucontext_t` of a signal being handled on this thread.
pub(crate) unsafe fn context_movable(_uc: *const libc::ucontext_t) -> bool {
    true
}

/// Edits a signal context so that, when the handler returns, the interrupted code calls
/// `async_trampoline` as if from the interrupted instruction (see the drawing above).
///
/// # Safety
/// `uc` must point to the `ucontext_t` of a signal being handled on this thread, whose
/// interrupted stack pointer lies in a stack with at least [`trampoline_frame_bytes`] plus the
/// hold's own needs writable below it, that nothing else uses while this thread runs.
pub(crate) unsafe fn redirect_to_trampoline(uc: *mut libc::ucontext_t) {
    // SAFETY: per the contract.
    let g = unsafe { &mut (*uc).uc_mcontext.gregs };
    let sp = g[libc::REG_RSP as usize] as usize;
    let pc = g[libc::REG_RIP as usize];
    let new_sp = sp - RED_ZONE - 8;
    // SAFETY: below the red zone of the interrupted stack, which the caller guarantees is
    // writable and unused; an unaligned write because the interrupted rsp may be anything.
    unsafe { (new_sp as *mut i64).write_unaligned(pc) };
    g[libc::REG_RSP as usize] = new_sp as i64;
    g[libc::REG_RIP as usize] = async_trampoline as *const () as usize as i64;
}

/// Called by the trampoline with every register saved: runs the hold installed by
/// [`crate::preempt::install`].
extern "C" fn hold_entry() {
    #[cfg(debug_assertions)]
    scribble_registers();
    crate::preempt::run_hold();
}

/// Whether the processor and OS support AVX (ymm registers). Set by [`detect_save_area`].
static HAS_AVX: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Debug builds: overwrite every vector register (whole ymm registers when AVX is on), the x87
/// control word's neighbours aside, and the carry flag, so that a trampoline that failed to save
/// something is caught by the tests that check registers across holds, whatever the hold itself
/// happens to use.
#[cfg(debug_assertions)]
fn scribble_registers() {
    if HAS_AVX.load(core::sync::atomic::Ordering::Relaxed) {
        // SAFETY: AVX is present (checked above); only caller-saved registers are written,
        // declared as clobbered.
        unsafe {
            core::arch::asm!(
                "vpcmpeqd xmm0, xmm0, xmm0",
                "vcmpeqps ymm0, ymm0, ymm0",
                "vmovaps ymm1, ymm0", "vmovaps ymm2, ymm0", "vmovaps ymm3, ymm0",
                "vmovaps ymm4, ymm0", "vmovaps ymm5, ymm0", "vmovaps ymm6, ymm0",
                "vmovaps ymm7, ymm0", "vmovaps ymm8, ymm0", "vmovaps ymm9, ymm0",
                "vmovaps ymm10, ymm0", "vmovaps ymm11, ymm0", "vmovaps ymm12, ymm0",
                "vmovaps ymm13, ymm0", "vmovaps ymm14, ymm0", "vmovaps ymm15, ymm0",
                "stc",
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _,
                out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _,
                out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _,
                out("xmm14") _, out("xmm15") _,
                options(nomem, nostack),
            )
        };
        // The upper halves stay dirty on purpose (no vzeroupper): the trampoline must restore
        // them. (The legacy-SSE code of the hold that follows may run slower for it; debug only.)
    } else {
        // SAFETY: SSE2 is baseline on x86_64; only caller-saved registers are written.
        unsafe {
            core::arch::asm!(
                "pcmpeqd xmm0, xmm0",
                "movaps xmm1, xmm0", "movaps xmm2, xmm0", "movaps xmm3, xmm0",
                "movaps xmm4, xmm0", "movaps xmm5, xmm0", "movaps xmm6, xmm0",
                "movaps xmm7, xmm0", "movaps xmm8, xmm0", "movaps xmm9, xmm0",
                "movaps xmm10, xmm0", "movaps xmm11, xmm0", "movaps xmm12, xmm0",
                "movaps xmm13, xmm0", "movaps xmm14, xmm0", "movaps xmm15, xmm0",
                "stc",
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _,
                out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _,
                out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _,
                out("xmm14") _, out("xmm15") _,
                options(nomem, nostack),
            )
        };
    }
}

/// Saves every register of the interrupted goroutine, calls the hold, restores every register
/// and resumes the interrupted instruction. Entered only through [`redirect_to_trampoline`].
#[unsafe(naked)]
// The end label is global on purpose (the preemption handler checks the pc against it);
// compilers up to 1.89 deny the lint in naked functions too (rust-version is 1.88).
#[allow(named_asm_labels)]
unsafe extern "C" fn async_trampoline() {
    naked_asm!(
        // rsp = interrupted rsp - 136, [rsp] = interrupted pc. Flags first: nothing may change
        // them before they are saved.
        "pushfq",
        "push rax",
        "push rbx",
        "push rcx",
        "push rdx",
        "push rsi",
        "push rdi",
        "push rbp",
        "push r8",
        "push r9",
        "push r10",
        "push r11",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        // rbx (callee-saved) remembers this frame across the call.
        "mov rbx, rsp",
        // The ABI wants the direction flag clear at a call; the saved rflags keep the old one.
        "cld",
        "mov eax, dword ptr [rip + {area}]",
        "test eax, eax",
        "jz 2f",
        // XSAVE into a 64-byte aligned area whose header (bytes 512..576) starts zeroed:
        // XSAVE writes only part of it and XRSTOR faults on reserved bits.
        "sub rsp, rax",
        "and rsp, -64",
        "xor eax, eax",
        "mov qword ptr [rsp + 512], rax",
        "mov qword ptr [rsp + 520], rax",
        "mov qword ptr [rsp + 528], rax",
        "mov qword ptr [rsp + 536], rax",
        "mov qword ptr [rsp + 544], rax",
        "mov qword ptr [rsp + 552], rax",
        "mov qword ptr [rsp + 560], rax",
        "mov qword ptr [rsp + 568], rax",
        "mov eax, {mask}",
        "xor edx, edx",
        "xsave64 [rsp]",
        "jmp 3f",
        // No XSAVE: FXSAVE covers x87, MXCSR and xmm0-15.
        "2:",
        "sub rsp, 512",
        "and rsp, -16",
        "fxsave64 [rsp]",
        "3:",
        // Hold the goroutine here; rsp is 16-byte aligned at the call.
        "call {hold}",
        "mov eax, dword ptr [rip + {area}]",
        "test eax, eax",
        "jz 4f",
        "mov eax, {mask}",
        "xor edx, edx",
        "xrstor64 [rsp]",
        "jmp 5f",
        "4:",
        "fxrstor64 [rsp]",
        "5:",
        "mov rsp, rbx",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rbp",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "pop rbx",
        "pop rax",
        "popfq",
        // Pop the interrupted pc and skip the red zone: rsp is exactly as interrupted.
        "ret {red_zone}",
        ".globl __safepoint_async_trampoline_end",
        ".hidden __safepoint_async_trampoline_end",
        "__safepoint_async_trampoline_end:",
        "ud2",
        area = sym SAVE_AREA,
        mask = const XSAVE_MASK,
        hold = sym hold_entry,
        red_zone = const RED_ZONE,
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
            assert_eq!(get_mxcsr() & 0x6000, 0, "rounding mode leaked across the switch");
        }
        assert_eq!(sum, (1..=100u64).sum::<u64>());
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot run it: it switches stacks in assembly")]
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
